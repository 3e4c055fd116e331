//! The one place domain errors become gRPC statuses. Every status carries
//! `google.rpc.ErrorInfo{reason, domain: "twofold"}`; field problems add `BadRequest`, cooldowns
//! and limits add `RetryInfo`. Internal causes are logged here and never returned.
use crate::domain::{DomainError, FieldViolation};
use crate::proto::{ERROR_DOMAIN, v1::ErrorReason};
use crate::store::StoreError;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A status with `ErrorInfo` and, when given, field violations and a retry delay.
pub fn status(
    code: Code,
    reason: ErrorReason,
    message: impl Into<String>,
    violations: &[FieldViolation],
    retry_after: Option<Duration>,
) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(
        reason.reason(),
        ERROR_DOMAIN,
        HashMap::<String, String>::new(),
    );
    for violation in violations {
        details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
    }
    if let Some(delay) = retry_after {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, message, details)
}

/// A field problem found by the API layer while converting a request.
pub fn invalid_field(field: &str, description: &str) -> Status {
    status(
        Code::InvalidArgument,
        ErrorReason::ValidationFailed,
        format!("invalid request: {field} {description}"),
        &[FieldViolation::new(field, description)],
        None,
    )
}

pub fn not_implemented(what: &str) -> Status {
    status(
        Code::Unimplemented,
        ErrorReason::NotImplemented,
        format!("{what} is not available in this release"),
        &[],
        None,
    )
}

impl From<DomainError> for Status {
    fn from(error: DomainError) -> Self {
        let message = error.to_string();
        let simple = |code, reason| status(code, reason, message.clone(), &[], None);
        match error {
            DomainError::Validation(violations) => status(
                Code::InvalidArgument,
                ErrorReason::ValidationFailed,
                message,
                &violations,
                None,
            ),
            DomainError::TraitsInvalid(violations) => status(
                Code::InvalidArgument,
                ErrorReason::TraitsInvalid,
                message,
                &violations,
                None,
            ),
            DomainError::PasswordPolicy(violation) => status(
                Code::InvalidArgument,
                ErrorReason::PasswordPolicyViolation,
                message,
                &[violation],
                None,
            ),
            DomainError::IdentifierTaken { ref field } => status(
                Code::AlreadyExists,
                ErrorReason::IdentifierTaken,
                message.clone(),
                &[FieldViolation::new(
                    field.clone(),
                    "is already used by another identity",
                )],
                None,
            ),
            DomainError::SchemaNotFound(_) => simple(Code::NotFound, ErrorReason::SchemaNotFound),
            DomainError::IdentityNotFound => simple(Code::NotFound, ErrorReason::IdentityNotFound),
            DomainError::InvalidCredentials => {
                simple(Code::Unauthenticated, ErrorReason::InvalidCredentials)
            }
            DomainError::SessionInactive => {
                simple(Code::Unauthenticated, ErrorReason::SessionInactive)
            }
            DomainError::SessionAal1Required => {
                simple(Code::Unauthenticated, ErrorReason::SessionAal1Required)
            }
            DomainError::SessionAal2Required => {
                simple(Code::PermissionDenied, ErrorReason::SessionAal2Required)
            }
            DomainError::SessionAlreadyAvailable => simple(
                Code::FailedPrecondition,
                ErrorReason::SessionAlreadyAvailable,
            ),
            DomainError::SessionNotFound => simple(Code::NotFound, ErrorReason::SessionNotFound),
            DomainError::FlowNotFound => simple(Code::NotFound, ErrorReason::FlowNotFound),
            DomainError::FlowExpired => simple(Code::FailedPrecondition, ErrorReason::FlowExpired),
            DomainError::FlowStateInvalid => {
                simple(Code::FailedPrecondition, ErrorReason::FlowStateInvalid)
            }
            DomainError::FlowSessionMismatch => {
                simple(Code::PermissionDenied, ErrorReason::FlowSessionMismatch)
            }
            DomainError::MethodDisabled(_) => {
                simple(Code::FailedPrecondition, ErrorReason::MethodDisabled)
            }
            DomainError::CodeInvalid => simple(Code::InvalidArgument, ErrorReason::CodeInvalid),
            DomainError::CodeSubmittedTooOften => {
                simple(Code::ResourceExhausted, ErrorReason::CodeSubmittedTooOften)
            }
            DomainError::CodeResendCooldown { retry_after } => status(
                Code::ResourceExhausted,
                ErrorReason::CodeResendCooldown,
                message,
                &[],
                Some(retry_after),
            ),
            DomainError::RateLimited { retry_after } => status(
                Code::ResourceExhausted,
                ErrorReason::RateLimited,
                message,
                &[],
                Some(retry_after),
            ),
            DomainError::ViaTraitUnknown(ref name) => status(
                Code::InvalidArgument,
                ErrorReason::ViaTraitUnknown,
                message.clone(),
                &[FieldViolation::new(
                    "via",
                    format!("trait {name:?} is not a code identifier"),
                )],
                None,
            ),
            DomainError::ViaTraitEmpty(ref name) => status(
                Code::FailedPrecondition,
                ErrorReason::ViaTraitEmpty,
                message.clone(),
                &[FieldViolation::new(
                    "via",
                    format!("trait {name:?} has no value"),
                )],
                None,
            ),
            DomainError::AddressNotAllowed => {
                simple(Code::InvalidArgument, ErrorReason::AddressNotAllowed)
            }
            DomainError::ChallengeNotFound => {
                simple(Code::NotFound, ErrorReason::ChallengeNotFound)
            }
            DomainError::ConfigInvalid(violations) => status(
                Code::InvalidArgument,
                ErrorReason::ConfigInvalid,
                message,
                &violations,
                None,
            ),
            DomainError::ConfigVersionConflict => {
                simple(Code::Aborted, ErrorReason::ConfigVersionConflict)
            }
            DomainError::ConfigVersionNotFound => {
                simple(Code::NotFound, ErrorReason::ConfigVersionNotFound)
            }
            DomainError::MessageNotFound => simple(Code::NotFound, ErrorReason::MessageNotFound),
            DomainError::NotImplemented => not_implemented("this operation"),
            DomainError::Store(StoreError::Unavailable(cause)) => {
                tracing::error!(error = %cause, "storage unavailable");
                status(
                    Code::Unavailable,
                    ErrorReason::StoreUnavailable,
                    "storage is unavailable; nothing was changed",
                    &[],
                    None,
                )
            }
            DomainError::Store(StoreError::LockTimedOut(cause)) => {
                // Something else (an operator's open transaction, a stuck batch job) holds a row
                // this request needs; the store gave up waiting. Retrying is right, as for an
                // unavailable store, once that transaction ends.
                tracing::warn!(error = %cause, "a row stayed locked by another transaction");
                status(
                    Code::Unavailable,
                    ErrorReason::StoreUnavailable,
                    "a record this needs is locked by another operation; nothing was changed",
                    &[],
                    None,
                )
            }
            DomainError::Store(StoreError::IdentifierTaken { trait_name, .. }) => status(
                Code::AlreadyExists,
                ErrorReason::IdentifierTaken,
                "an identifier in the traits is already used by another identity",
                &[FieldViolation::new(
                    format!("traits.{trait_name}"),
                    "is already used by another identity",
                )],
                None,
            ),
            DomainError::Store(StoreError::Internal(cause)) | DomainError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                status(
                    Code::Internal,
                    ErrorReason::Internal,
                    "internal error",
                    &[],
                    None,
                )
            }
        }
    }
}
