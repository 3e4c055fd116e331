//! The domain's one error type. `crate::api::error` maps it to `tonic::Status` in one place.
use crate::store::StoreError;
use std::time::Duration;

/// One invalid request field, named by its path (for example `traits.phone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("invalid request")]
    Validation(Vec<FieldViolation>),
    #[error("traits do not match the identity schema")]
    TraitsInvalid(Vec<FieldViolation>),
    #[error("password refused by the password policy")]
    PasswordPolicy(FieldViolation),
    #[error("identity schema {0:?} is not configured")]
    SchemaNotFound(String),
    #[error("identity not found")]
    IdentityNotFound,
    #[error("an identifier in the traits is already used by another identity")]
    IdentifierTaken { field: String },
    #[error("the identifier or password is wrong")]
    InvalidCredentials,
    #[error("no active session")]
    SessionInactive,
    #[error("an aal1 session is required")]
    SessionAal1Required,
    #[error("an aal2 session is required")]
    SessionAal2Required,
    #[error("the session already has the requested assurance level")]
    SessionAlreadyAvailable,
    #[error("session not found")]
    SessionNotFound,
    #[error("flow not found")]
    FlowNotFound,
    #[error("flow expired")]
    FlowExpired,
    #[error("the flow does not accept this request in its current state")]
    FlowStateInvalid,
    #[error("the flow belongs to another session")]
    FlowSessionMismatch,
    #[error("the {0} method is disabled")]
    MethodDisabled(&'static str),
    #[error("the code is invalid or has already been used")]
    CodeInvalid,
    #[error("the code was submitted too often; request a new code")]
    CodeSubmittedTooOften,
    #[error("a new code can be requested later")]
    CodeResendCooldown { retry_after: Duration },
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    #[error("trait {0:?} is not a code identifier in the identity schema")]
    ViaTraitUnknown(String),
    #[error("trait {0:?} has no value")]
    ViaTraitEmpty(String),
    #[error("the address is not one of the identity's code addresses")]
    AddressNotAllowed,
    #[error("challenge not found")]
    ChallengeNotFound,
    #[error("the configuration is invalid")]
    ConfigInvalid(Vec<FieldViolation>),
    #[error("the configuration changed since it was read; read it again")]
    ConfigVersionConflict,
    #[error("configuration version not found")]
    ConfigVersionNotFound,
    #[error("message not found")]
    MessageNotFound,
    #[error("not implemented")]
    NotImplemented,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type DomainResult<T> = Result<T, DomainError>;
