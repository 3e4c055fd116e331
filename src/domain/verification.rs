//! `CodeService`'s domain: a backend asks for a code to one of an identity's registered
//! addresses for a purpose, then checks what the user typed. Same engine and limits as logins.
use super::Context;
use super::challenges::{self, CodeTemplate, SendRequest};
use super::error::{DomainError, DomainResult, FieldViolation};
use super::identities::{code_address_via, normalise_identifier};
use crate::store::codes::{Challenge, Owner};
use uuid::Uuid;

const MAX_PURPOSE_LENGTH: usize = 128;
const MAX_REQUEST_ID_LENGTH: usize = 128;

/// Where a code should go: a trait marked as a code identifier, or one of the identity's code
/// addresses. Never an address the caller made up.
pub enum Target<'a> {
    Via(&'a str),
    Address(&'a str),
}

pub struct SendCode<'a> {
    pub identity_id: Uuid,
    pub target: Option<Target<'a>>,
    pub purpose: &'a str,
    pub locale: &'a str,
    pub request_id: &'a str,
}

fn check_purpose(purpose: &str) -> DomainResult<()> {
    if purpose.trim().is_empty() {
        return Err(DomainError::Validation(vec![FieldViolation::new(
            "purpose",
            "is required",
        )]));
    }
    if purpose.len() > MAX_PURPOSE_LENGTH {
        return Err(DomainError::Validation(vec![FieldViolation::new(
            "purpose",
            format!("must be at most {MAX_PURPOSE_LENGTH} bytes"),
        )]));
    }
    Ok(())
}

fn stored_purpose(purpose: &str) -> String {
    format!("verify:{purpose}")
}

pub async fn send_code(context: &Context, request: SendCode<'_>) -> DomainResult<Challenge> {
    check_purpose(request.purpose)?;
    if request.request_id.len() > MAX_REQUEST_ID_LENGTH {
        return Err(DomainError::Validation(vec![FieldViolation::new(
            "request_id",
            format!("must be at most {MAX_REQUEST_ID_LENGTH} bytes"),
        )]));
    }
    let Some(target) = request.target else {
        return Err(DomainError::Validation(vec![FieldViolation::new(
            "target",
            "set either via or address",
        )]));
    };
    let identity = super::identities::get_identity(context, request.identity_id).await?;
    let settings = context.settings();
    let address = match target {
        Target::Via(via) => code_address_via(&settings, &identity, via)?,
        Target::Address(value) => {
            let value = normalise_identifier(value);
            identity
                .code_addresses()
                .find(|address| address.value == value)
                .cloned()
                .ok_or(DomainError::AddressNotAllowed)?
        }
    };

    let challenge_id = Uuid::new_v4();
    let idempotency_key = (!request.request_id.is_empty())
        .then(|| format!("codeservice:{}:{}", identity.id, request.request_id));
    if let Some(key) = &idempotency_key {
        let lifespan = settings.config.selfservice.methods.code.config.lifespan;
        if let Some(first) = context
            .stores
            .challenges
            .remember_request(key, challenge_id, lifespan)
            .await?
        {
            // A retry: answer with the first challenge and send nothing.
            return context
                .stores
                .challenges
                .get_challenge(first)
                .await?
                .ok_or(DomainError::ChallengeNotFound);
        }
    }
    let sent = challenges::send(
        context,
        SendRequest {
            challenge_id,
            identity_id: identity.id,
            address: &address,
            purpose: stored_purpose(request.purpose),
            template: CodeTemplate::VerificationCode,
            locale: request.locale.to_owned(),
            flow_id: None,
        },
    )
    .await;
    if sent.is_err()
        && let Some(key) = &idempotency_key
    {
        // Nothing went out: let the caller's retry try again instead of replaying a failure.
        let _ = context.stores.challenges.forget_request(key).await;
    }
    sent
}

pub async fn verify_code(
    context: &Context,
    challenge_id: Uuid,
    purpose: &str,
    input: &str,
) -> DomainResult<Challenge> {
    let code = challenges::parse_code(context, input)?;
    check_purpose(purpose)?;
    let challenge = context
        .stores
        .challenges
        .get_challenge(challenge_id)
        .await?
        .ok_or(DomainError::ChallengeNotFound)?;
    let purpose = stored_purpose(purpose);
    let owner = Owner {
        identity_id: challenge.identity_id,
        purpose: &purpose,
    };
    let verified = challenges::verify_challenge(context, challenge, owner, &code, None)
        .await?
        .record(context)
        .await?;
    context
        .stores
        .identities
        .mark_address_verified(verified.identity_id, &verified.address, context.clock.now())
        .await?;
    Ok(verified)
}
