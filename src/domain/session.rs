//! Sessions: who is signed in, with which factors, to which assurance level.
use super::aal::{Aal, Channel};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    Password,
    Code,
}

/// One completed factor. Kept as JSON in storage, so field names are part of the stored format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticationMethod {
    pub method: MethodKind,
    pub aal: Aal,
    pub completed_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// SHA-256 of the address a code went to, so a later step can tell "same address" apart
    /// (an email code does not count twice) without storing the address in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub identity_id: Uuid,
    /// SHA-256 of the bearer token; the token itself is never stored.
    pub token_hash: Vec<u8>,
    pub aal: Aal,
    pub methods: Vec<AuthenticationMethod>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub authenticated_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Session {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}
