//! The code engine shared by login flows and `CodeService`: send a code to one of an identity's
//! code addresses, resend it, verify it. Storage keeps only a MAC of the code; delivery data is
//! sealed into the outbox; every decision is audited.
use super::Context;
use super::code::Code;
use super::courier_handoff;
use super::error::{DomainError, DomainResult, FieldViolation};
use super::identity::Identifier;
use super::mask::address_hash;
use crate::store::codes::{
    AttemptOutcome, AuditEvent, Challenge, FailureState, KeptAfterUse, MessageStatus,
    OutboxMessage, OwnedAttempt, Owner, ReplaceOutcome,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// Challenges outlive their code a little so a late submission reads "expired" (counted as
/// such) instead of "not found".
const CHALLENGE_GRACE: Duration = Duration::from_secs(300);
/// How long a challenge used in a login flow is kept: the passed flow refuses a repeated submit
/// before the challenge is read, so the challenge need not hold memory until its code would have
/// expired. Challenges of `CodeService` are kept for the rest of their life, bounded in number
/// on the embedded store except while a remembered `request_id` needs them: a retried
/// `SendCode` must find its first answer (see [`KeptAfterUse::ForItsCaller`]).
pub const FLOW_CHALLENGE_KEPT_AFTER_USE: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

/// Template data sealed into the outbox; the courier opens it at send time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeTemplateData {
    pub code: String,
    pub identity_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub expires_in_minutes: u64,
    pub purpose: String,
}

/// Which message a code goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeTemplate {
    /// A login step (AAL2 step-up or passwordless).
    LoginCode,
    /// A `CodeService` verification.
    VerificationCode,
}

impl CodeTemplate {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeTemplate::LoginCode => "login_code",
            CodeTemplate::VerificationCode => "verification_code",
        }
    }
}

pub struct SendRequest<'a> {
    /// Chosen by the caller so it can be remembered (idempotency) before anything is sent.
    pub challenge_id: Uuid,
    pub identity_id: Uuid,
    /// One of the identity's own code addresses; the caller resolved it, never typed it in.
    pub address: &'a Identifier,
    pub purpose: String,
    pub template: CodeTemplate,
    pub locale: String,
    pub flow_id: Option<Uuid>,
}

fn std_to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

pub(super) fn audit(
    event: &str,
    identity_id: Uuid,
    flow_id: Option<Uuid>,
    address: Option<&str>,
    now: DateTime<Utc>,
) -> AuditEvent {
    AuditEvent {
        id: Uuid::now_v7(),
        event: event.to_owned(),
        identity_id: Some(identity_id),
        flow_id,
        address_hash: address.map(address_hash),
        client_ip: None,
        occurred_at: now,
    }
}

/// Send limits per address and per identity (hourly windows). Over the limit nothing reaches
/// the outbox and the caller learns when to retry.
async fn check_send_limits(
    context: &Context,
    identity_id: Uuid,
    address: &str,
    flow_id: Option<Uuid>,
) -> DomainResult<()> {
    let settings = context.settings();
    let limits = &settings.config.selfservice.methods.code.config;
    let now = context.clock.now();
    let address_key = format!("send:address:{}", address_hash(address));
    let identity_key = format!("send:identity:{identity_id}");
    // The address first: a send it refuses does not count against the identity's other
    // addresses.
    let keys = [
        (address_key.as_str(), limits.sends_per_address_per_hour),
        (identity_key.as_str(), limits.sends_per_identity_per_hour),
    ];
    if let Err(retry_after) = context.stores.limits.hit_each(&keys, HOUR, now).await? {
        context
            .stores
            .outbox
            .record_audit(&audit(
                "code.rate_limited",
                identity_id,
                flow_id,
                Some(address),
                now,
            ))
            .await?;
        return Err(DomainError::RateLimited { retry_after });
    }
    Ok(())
}

async fn enqueue_code(
    context: &Context,
    challenge: &Challenge,
    code: &Code,
    template: CodeTemplate,
    locale: &str,
    flow_id: Option<Uuid>,
) -> DomainResult<()> {
    let settings = context.settings();
    let now = context.clock.now();
    let message_id = Uuid::now_v7();
    let data = CodeTemplateData {
        code: code.expose().to_owned(),
        identity_id: challenge.identity_id,
        expires_at: challenge.expires_at,
        expires_in_minutes: settings
            .config
            .selfservice
            .methods
            .code
            .config
            .lifespan
            .as_secs()
            .div_ceil(60),
        purpose: challenge.purpose.clone(),
    };
    let plaintext = serde_json::to_vec(&data)
        .map_err(|error| DomainError::Internal(format!("template data: {error}")))?;
    // Room with this process's worker is taken first, so the message can be written already
    // claimed: the worker then delivers it without claiming it from the outbox.
    let handoff = context.courier_handoff.reserve();
    let (status, lease_until) = match handoff {
        Some(_) => (
            MessageStatus::Processing,
            Some(courier_handoff::lease_end(now)),
        ),
        None => (MessageStatus::Queued, None),
    };
    let message = OutboxMessage {
        id: message_id,
        channel: challenge.channel,
        recipient: challenge.address.clone(),
        template_type: template.as_str().to_owned(),
        locale: if locale.is_empty() {
            "en".to_owned()
        } else {
            locale.to_owned()
        },
        sealed_data: settings.sealer().seal(&plaintext, message_id.as_bytes()),
        identity_id: Some(challenge.identity_id),
        status,
        send_count: 0,
        not_after: Some(challenge.expires_at),
        next_attempt_at: now,
        lease_until,
        created_at: now,
        updated_at: now,
    };
    let event = audit(
        "code.sent",
        challenge.identity_id,
        flow_id,
        Some(&challenge.address),
        now,
    );
    match handoff {
        Some(slot) => {
            courier_handoff::queue_and_hand_over(
                context.stores.outbox.clone(),
                slot,
                message,
                event,
            )
            .await?;
        }
        None => {
            context.stores.outbox.enqueue(&message, &event).await?;
            context.courier_wakeup.notify_one();
        }
    }
    tracing::info!(
        challenge_id = %challenge.id,
        identity_id = %challenge.identity_id,
        channel = challenge.channel.as_str(),
        template = template.as_str(),
        "code queued for delivery"
    );
    Ok(())
}

/// Creates a challenge with a fresh code and queues its delivery.
pub async fn send(context: &Context, request: SendRequest<'_>) -> DomainResult<Challenge> {
    send_with(context, request, |_| std::future::ready(Ok(()))).await
}

/// [`send`], and the write `alongside` makes for the challenge (the flow that points at it).
///
/// The challenge and that write are made while the send limits are counted, so the three share
/// one round trip, and the code is queued once all three have answered: nothing is queued for a
/// challenge that is not stored, or whose write alongside failed. A send the limits refuse (or
/// cannot count) deletes the challenge again; until then it exists, so a concurrent retry of a
/// `SendCode` with the same request id may be answered with it and later find it gone. A refused
/// send costs that write and the delete on top of the count (and the caller's undoing of what
/// `alongside` wrote). A challenge stored beside a write alongside that failed stays until its
/// TTL, its code never queued. `alongside` runs before the limits have answered: what it wrote,
/// and anything it changed on the caller's side, is the caller's to undo when this fails, as a
/// flow whose code was not sent must not be kept.
pub async fn send_with<F, Written>(
    context: &Context,
    request: SendRequest<'_>,
    alongside: F,
) -> DomainResult<Challenge>
where
    F: FnOnce(&Challenge) -> Written,
    Written: Future<Output = DomainResult<()>>,
{
    let channel = request
        .address
        .channel
        .ok_or_else(|| DomainError::Internal("code address without a channel".into()))?;
    let settings = context.settings();
    let code_config = &settings.config.selfservice.methods.code.config;
    let now = context.clock.now();
    let id = request.challenge_id;
    let code = Code::generate(code_config.length);
    let challenge = Challenge {
        id,
        identity_id: request.identity_id,
        address: request.address.value.clone(),
        channel,
        purpose: request.purpose,
        mac: settings.code_mac().sign(&id.to_string(), &code).to_vec(),
        attempts: 0,
        sends: 1,
        expires_at: now + std_to_chrono(code_config.lifespan),
        resend_available_at: now + std_to_chrono(code_config.resend_cooldown),
        consumed: false,
    };
    // A challenge whose send does not go ahead holds a code nobody has: it is removed again.
    let (limits, created, written) = tokio::join!(
        check_send_limits(
            context,
            request.identity_id,
            &request.address.value,
            request.flow_id,
        ),
        context
            .stores
            .challenges
            .create_challenge(&challenge, code_config.lifespan + CHALLENGE_GRACE),
        alongside(&challenge),
    );
    if let Err(not_sent) = limits {
        if created.is_ok()
            && let Err(error) = context.stores.challenges.delete_challenge(id).await
        {
            // It expires with its TTL all the same.
            tracing::warn!(error = %error, challenge_id = %id, "the challenge of a send that did not go ahead was not removed");
        }
        return Err(not_sent);
    }
    created?;
    written?;
    enqueue_code(
        context,
        &challenge,
        &code,
        request.template,
        &request.locale,
        request.flow_id,
    )
    .await?;
    Ok(challenge)
}

/// Replaces the challenge's code with a new one after the cooldown; the old code dies in the
/// same atomic step.
pub async fn resend(
    context: &Context,
    challenge_id: Uuid,
    template: CodeTemplate,
    locale: &str,
    flow_id: Option<Uuid>,
) -> DomainResult<Challenge> {
    let current = context
        .stores
        .challenges
        .get_challenge(challenge_id)
        .await?
        .ok_or(DomainError::ChallengeNotFound)?;
    let settings = context.settings();
    let code_config = &settings.config.selfservice.methods.code.config;
    let now = context.clock.now();
    if current.consumed {
        return Err(DomainError::FlowStateInvalid);
    }
    if now < current.resend_available_at {
        return Err(cooldown(current.resend_available_at, now));
    }
    check_send_limits(context, current.identity_id, &current.address, flow_id).await?;
    let code = Code::generate(code_config.length);
    let mac = settings.code_mac().sign(&challenge_id.to_string(), &code);
    let outcome = context
        .stores
        .challenges
        .replace_code(
            challenge_id,
            &mac,
            now,
            now + std_to_chrono(code_config.lifespan),
            now + std_to_chrono(code_config.resend_cooldown),
            code_config.lifespan + CHALLENGE_GRACE,
        )
        .await?;
    let challenge = match outcome {
        ReplaceOutcome::Replaced(challenge) => challenge,
        ReplaceOutcome::Cooldown { available_at } => return Err(cooldown(available_at, now)),
        ReplaceOutcome::AlreadyUsed => return Err(DomainError::FlowStateInvalid),
        ReplaceOutcome::NotFound => return Err(DomainError::ChallengeNotFound),
    };
    enqueue_code(context, &challenge, &code, template, locale, flow_id).await?;
    Ok(challenge)
}

/// The cooldown answer for a resend asked for at `now`.
pub(super) fn cooldown(available_at: DateTime<Utc>, now: DateTime<Utc>) -> DomainError {
    let wait = (available_at - now).to_std().unwrap_or_default();
    // Round up so a client that waits exactly this long is never refused again.
    DomainError::CodeResendCooldown {
        retry_after: Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
    }
}

/// Strict input check: exactly the configured number of ASCII digits. Anything else is
/// refused before it touches a challenge, so it never counts as a guess.
pub fn parse_code(context: &Context, input: &str) -> DomainResult<Code> {
    let length = context
        .settings()
        .config
        .selfservice
        .methods
        .code
        .config
        .length;
    Code::parse(input, length).ok_or_else(|| {
        DomainError::Validation(vec![FieldViolation::new(
            "code",
            format!("must be exactly {length} digits (0-9)"),
        )])
    })
}

/// A right code: the consumed challenge and its `code.verified` event, which the caller must
/// record, on its own ([`Verified::record`]) or inside the write the code earned, so that the
/// two commit together (one commit fewer on the step-up path).
#[must_use = "a verified code must be audited"]
pub struct Verified {
    pub challenge: Challenge,
    pub audit: AuditEvent,
}

impl Verified {
    pub async fn record(self, context: &Context) -> DomainResult<Challenge> {
        context.stores.outbox.record_audit(&self.audit).await?;
        Ok(self.challenge)
    }
}

/// An identity's failure budget read ahead of [`verify`], alongside the reads before it, so that
/// the verification itself is one round trip.
pub struct BudgetAhead {
    identity_id: Uuid,
    state: crate::store::StoreResult<FailureState>,
}

/// Reads `identity_id`'s failure budget for a [`verify`] to come.
pub async fn read_budget_ahead(context: &Context, identity_id: Uuid) -> BudgetAhead {
    BudgetAhead {
        identity_id,
        state: context
            .stores
            .budget
            .failure_state(identity_id, context.clock.now())
            .await,
    }
}

/// Verifies `code` against the challenge, which must belong to `owner` (its identity and
/// purpose). A locked identity gets the same answer for the right code as for a wrong one, and
/// its code is neither compared nor consumed. A wrong code and a locked identity's try are
/// audited here; a right code's event is in the answer. A challenge used for a flow (`flow_id`)
/// is kept at most [`FLOW_CHALLENGE_KEPT_AFTER_USE`] after. The budget is read here unless
/// `ahead` holds the owner's.
pub async fn verify(
    context: &Context,
    challenge_id: Uuid,
    owner: Owner<'_>,
    code: &Code,
    flow_id: Option<Uuid>,
    ahead: Option<BudgetAhead>,
) -> DomainResult<Verified> {
    let identity_id = owner.identity_id;
    let state = match ahead.filter(|ahead| ahead.identity_id == identity_id) {
        Some(ahead) => ahead.state,
        None => {
            context
                .stores
                .budget
                .failure_state(identity_id, context.clock.now())
                .await
        }
    };
    let state = match state {
        Ok(state) if state.locked_until.is_none() => state,
        // A lockout is audited with the challenge's address, and a challenge of another identity
        // or purpose is answered as a wrong code whatever else holds (a lockout, a budget that
        // could not be read): the challenge is read first, and its code is not compared.
        state => {
            let Some(challenge) = context
                .stores
                .challenges
                .get_challenge(challenge_id)
                .await?
            else {
                return Err(DomainError::ChallengeNotFound);
            };
            ensure_belongs(&challenge, owner)?;
            // A budget that could not be read refuses; a readable one here is a lockout.
            state?;
            return Err(refuse_locked(context, &challenge.address, identity_id, flow_id).await);
        }
    };
    // The owner is checked in the attempt's own step: the challenge need not be read before.
    attempt_owned(context, challenge_id, owner, state, code, flow_id).await
}

/// Checks `code` against the challenge, if it is `owner`'s, for an identity whose failure budget
/// stands at `state` (not locked).
async fn attempt_owned(
    context: &Context,
    challenge_id: Uuid,
    owner: Owner<'_>,
    state: FailureState,
    code: &Code,
    flow_id: Option<Uuid>,
) -> DomainResult<Verified> {
    let terms = AttemptTerms::new(context, challenge_id, code, flow_id);
    let outcome = context
        .stores
        .challenges
        .attempt_owned(
            challenge_id,
            owner,
            &terms.candidates,
            terms.now,
            terms.max_attempts,
            terms.kept_after_use,
        )
        .await?;
    settle(
        context,
        challenge_id,
        owner.identity_id,
        state,
        flow_id,
        outcome,
    )
    .await
}

/// A challenge of another identity or purpose is answered as a wrong code, whatever else holds
/// (a lockout, a budget that could not be read).
fn ensure_belongs(challenge: &Challenge, owner: Owner<'_>) -> DomainResult<()> {
    if !owner.owns(challenge) {
        return Err(DomainError::CodeInvalid);
    }
    Ok(())
}

/// [`verify`] for a challenge the caller has just read.
pub async fn verify_challenge(
    context: &Context,
    challenge: Challenge,
    owner: Owner<'_>,
    code: &Code,
    flow_id: Option<Uuid>,
) -> DomainResult<Verified> {
    ensure_belongs(&challenge, owner)?;
    let identity_id = owner.identity_id;
    let state = context
        .stores
        .budget
        .failure_state(identity_id, context.clock.now())
        .await?;
    if state.locked_until.is_some() {
        return Err(refuse_locked(context, &challenge.address, identity_id, flow_id).await);
    }
    attempt_owned(context, challenge.id, owner, state, code, flow_id).await
}

/// Audits a refusal for a locked identity; the answer is the same as for a wrong code, or the
/// audit's error.
async fn refuse_locked(
    context: &Context,
    address: &str,
    identity_id: Uuid,
    flow_id: Option<Uuid>,
) -> DomainError {
    let now = context.clock.now();
    let recorded = context
        .stores
        .outbox
        .record_audit(&audit(
            "code.locked_out",
            identity_id,
            flow_id,
            Some(address),
            now,
        ))
        .await;
    if let Err(error) = recorded {
        return error.into();
    }
    tracing::warn!(identity_id = %identity_id, "code verification refused: identity locked out");
    DomainError::CodeInvalid
}

/// What an attempt on a challenge is made with.
struct AttemptTerms {
    candidates: Vec<[u8; 32]>,
    now: DateTime<Utc>,
    max_attempts: u32,
    kept_after_use: KeptAfterUse,
}

impl AttemptTerms {
    fn new(context: &Context, challenge_id: Uuid, code: &Code, flow_id: Option<Uuid>) -> Self {
        let settings = context.settings();
        let code_config = &settings.config.selfservice.methods.code.config;
        Self {
            candidates: settings
                .code_mac()
                .candidates(&challenge_id.to_string(), code),
            now: context.clock.now(),
            max_attempts: code_config.max_submissions,
            kept_after_use: if flow_id.is_some() {
                KeptAfterUse::ForItsFlow(FLOW_CHALLENGE_KEPT_AFTER_USE)
            } else {
                KeptAfterUse::ForItsCaller(code_config.lifespan + CHALLENGE_GRACE)
            },
        }
    }
}

/// Answers an attempt made for an identity whose failure budget stood at `state`: a right code
/// is returned for its caller to audit, anything else is refused (a wrong one counted against
/// the budget and audited).
async fn settle(
    context: &Context,
    challenge_id: Uuid,
    identity_id: Uuid,
    state: FailureState,
    flow_id: Option<Uuid>,
    outcome: OwnedAttempt,
) -> DomainResult<Verified> {
    let settings = context.settings();
    let code_config = &settings.config.selfservice.methods.code.config;
    let now = context.clock.now();
    match outcome {
        OwnedAttempt::Done(AttemptOutcome::Verified(challenge)) => {
            if state.recorded {
                context.stores.budget.reset_failures(identity_id).await?;
            }
            tracing::info!(challenge_id = %challenge_id, identity_id = %identity_id, "code verified");
            Ok(Verified {
                audit: audit(
                    "code.verified",
                    identity_id,
                    flow_id,
                    Some(&challenge.address),
                    now,
                ),
                challenge,
            })
        }
        OwnedAttempt::Wrong { address, .. } => {
            let after = context
                .stores
                .budget
                .record_failure(
                    identity_id,
                    now,
                    code_config.identity_failure_budget,
                    code_config.failure_window,
                )
                .await?;
            let event = if after.locked_until.is_some() {
                "code.locked_out"
            } else {
                "code.failed"
            };
            context
                .stores
                .outbox
                .record_audit(&audit(event, identity_id, flow_id, Some(&address), now))
                .await?;
            tracing::info!(
                challenge_id = %challenge_id,
                identity_id = %identity_id,
                "wrong code submitted"
            );
            Err(DomainError::CodeInvalid)
        }
        OwnedAttempt::NotOwned => Err(DomainError::CodeInvalid),
        OwnedAttempt::Done(AttemptOutcome::TooManyAttempts) => {
            Err(DomainError::CodeSubmittedTooOften)
        }
        OwnedAttempt::Done(AttemptOutcome::Expired | AttemptOutcome::AlreadyUsed) => {
            Err(DomainError::CodeInvalid)
        }
        // A store that breaks `OwnedAttempt`'s contract: a wrong code it did not name the address
        // of could be neither counted nor audited as one.
        OwnedAttempt::Done(AttemptOutcome::Wrong { .. }) => Err(DomainError::Internal(
            "a challenge store answered a wrong code without its challenge".into(),
        )),
        OwnedAttempt::Done(AttemptOutcome::NotFound) => Err(DomainError::ChallengeNotFound),
    }
}
