//! Credentials in metadata: the caller's session token on the public listener, the admin API
//! key on the admin listener.
use super::error::status;
use crate::proto::v1::ErrorReason;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Status};

/// The session token from `authorization: Bearer <token>` or Kratos's `x-session-token`.
pub fn session_token(metadata: &MetadataMap) -> Option<String> {
    if let Some(value) = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        && let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
    {
        return Some(token.trim().to_owned());
    }
    metadata
        .get("x-session-token")
        .and_then(|value| value.to_str().ok())
        .map(|token| token.trim().to_owned())
}

/// Checks the admin API key (`authorization: Bearer <key>` or `x-twofold-api-key`) against every
/// configured key in constant time.
#[derive(Clone)]
pub struct AdminKeyCheck {
    keys: Arc<Vec<String>>,
}

impl AdminKeyCheck {
    pub fn new(keys: Vec<String>) -> Self {
        Self {
            keys: Arc::new(keys),
        }
    }

    fn presented(metadata: &MetadataMap) -> Option<String> {
        if let Some(key) = metadata
            .get("x-twofold-api-key")
            .and_then(|value| value.to_str().ok())
        {
            return Some(key.trim().to_owned());
        }
        session_token(metadata)
    }

    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(presented) = Self::presented(metadata).filter(|key| !key.is_empty()) else {
            return Err(status(
                Code::Unauthenticated,
                ErrorReason::AdminKeyRequired,
                "the admin api key is required",
                &[],
                None,
            ));
        };
        // Compare against every key without stopping early, so timing does not reveal which
        // configured key a guess came close to.
        let matched = self.keys.iter().fold(false, |found, key| {
            found | bool::from(key.as_bytes().ct_eq(presented.as_bytes()))
        });
        if matched {
            Ok(())
        } else {
            Err(status(
                Code::Unauthenticated,
                ErrorReason::AdminKeyInvalid,
                "the admin api key is invalid",
                &[],
                None,
            ))
        }
    }
}

impl tonic::service::Interceptor for AdminKeyCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}
