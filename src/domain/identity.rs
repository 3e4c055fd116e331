//! Identities as the domain sees them: traits that follow a schema, the identifiers derived from
//! them, and the addresses that can be verified or receive codes.
use super::aal::Channel;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// Which credential an identifier unlocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    Password,
    Code,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Password => "password",
            CredentialKind::Code => "code",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "password" => Some(CredentialKind::Password),
            "code" => Some(CredentialKind::Code),
            _ => None,
        }
    }
}

/// A normalised value (lower-cased email, E.164 phone) that identifies the identity for one kind
/// of credential. Unique per kind across all identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    pub kind: CredentialKind,
    pub value: String,
    /// Dotted path of the trait under `traits` the value came from (for example `phone`).
    pub trait_name: String,
    /// Set for code identifiers: where the code goes.
    pub channel: Option<Channel>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiableAddress {
    pub id: Uuid,
    pub value: String,
    pub channel: Channel,
    pub trait_name: String,
    pub verified: bool,
    pub verified_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityState {
    Active,
    Inactive,
}

impl IdentityState {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityState::Active => "active",
            IdentityState::Inactive => "inactive",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(IdentityState::Active),
            "inactive" => Some(IdentityState::Inactive),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// UUIDv7, so ids sort by creation time and serve as page cursors.
    pub id: Uuid,
    pub schema_id: String,
    pub traits: Value,
    pub state: IdentityState,
    pub identifiers: Vec<Identifier>,
    pub verifiable_addresses: Vec<VerifiableAddress>,
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Identity {
    /// Addresses the schema marks as code identifiers, in schema order.
    pub fn code_addresses(&self) -> impl Iterator<Item = &Identifier> {
        self.identifiers
            .iter()
            .filter(|identifier| identifier.kind == CredentialKind::Code)
    }

    pub fn has_code_address(&self) -> bool {
        self.code_addresses().next().is_some()
    }
}
