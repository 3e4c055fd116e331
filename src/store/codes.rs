//! Storage for the code engine: challenges and send/verify rate limits live in Redis (or
//! memory); the per-identity failure budget, the courier outbox and audit events live in SQL,
//! so a Redis restart resets none of them.
use super::StoreResult;
use crate::domain::aal::Channel;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// One code challenge: the MAC of the current code and everything it is bound to. The code
/// itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub id: Uuid,
    pub identity_id: Uuid,
    /// Normalised address the code went to (E.164 phone or lower-cased email).
    pub address: String,
    pub channel: Channel,
    /// What the code is for: `login:<flow id>` or `verify:<caller's purpose>`.
    pub purpose: String,
    /// HMAC-SHA256 of the current code (32 bytes).
    pub mac: Vec<u8>,
    /// Submissions counted against the current code.
    pub attempts: u32,
    /// Codes sent for this challenge so far (1 after the first send).
    pub sends: u32,
    pub expires_at: DateTime<Utc>,
    pub resend_available_at: DateTime<Utc>,
    pub consumed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The code matched; the challenge is now consumed (exactly one caller ever sees this).
    Verified(Challenge),
    /// Wrong code; `attempts_left` more submissions are allowed for this code.
    Wrong {
        attempts_left: u32,
    },
    /// `max_attempts` were already used for this code; nothing was compared.
    TooManyAttempts,
    /// The code is past `expires_at` at `now`; nothing was compared.
    Expired,
    /// The challenge was already consumed.
    AlreadyUsed,
    NotFound,
}

/// Whose a challenge must be for [`ChallengeStore::attempt_owned`] to count an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub identity_id: Uuid,
    pub purpose: &'a str,
}

impl Owner<'_> {
    pub fn owns(&self, challenge: &Challenge) -> bool {
        challenge.identity_id == self.identity_id && challenge.purpose == self.purpose
    }
}

/// What [`ChallengeStore::attempt_owned`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedAttempt {
    /// The challenge is another identity's or for another purpose: nothing was counted or
    /// compared.
    NotOwned,
    /// A wrong code, counted; `address` is the challenge's (for the audit of the failure).
    Wrong { attempts_left: u32, address: String },
    /// Any other outcome of [`ChallengeStore::attempt`] (never `Wrong`).
    Done(AttemptOutcome),
}

/// How long a challenge is kept once a code has verified it, to answer a repeated submit with
/// "already used" rather than "not found" (both refuse it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptAfterUse {
    /// A flow's challenge. Once its flow has passed, the flow refuses a repeated submit before
    /// the challenge is read, so the challenge only answers a submit that raced the first one:
    /// kept at most this long, and an in-process store may drop it sooner to bound its memory.
    /// If the flow never passes (the session could not be upgraded after the code verified), a
    /// retry may then get "not found" where it would have got "already used".
    ForItsFlow(Duration),
    /// A challenge its caller answers for by itself (`CodeService`): kept this long. One that a
    /// remembered `SendCode` request points at keeps the whole time, since a retried send must
    /// find its first answer as long as the request is remembered; any other only answers a
    /// repeated verify, and an in-process store may drop it sooner, as for a flow's.
    ForItsCaller(Duration),
}

impl KeptAfterUse {
    pub fn at_most(self) -> Duration {
        match self {
            Self::ForItsFlow(kept) | Self::ForItsCaller(kept) => kept,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceOutcome {
    /// The new MAC is in place: attempts reset to 0, sends + 1, new expiry and cooldown.
    Replaced(Challenge),
    /// The resend cooldown has not passed; nothing changed.
    Cooldown {
        available_at: DateTime<Utc>,
    },
    AlreadyUsed,
    NotFound,
}

#[async_trait]
pub trait ChallengeStore: Send + Sync + 'static {
    /// Stores a new challenge; it disappears after `ttl`.
    async fn create_challenge(&self, challenge: &Challenge, ttl: Duration) -> StoreResult<()>;

    async fn get_challenge(&self, id: Uuid) -> StoreResult<Option<Challenge>>;

    /// Removes a challenge at once, whatever its state; removing one that is gone is no error.
    /// For a challenge stored for a send that was then refused: nobody holds its code, so it need
    /// not take memory until its TTL.
    async fn delete_challenge(&self, id: Uuid) -> StoreResult<()>;

    /// One atomic step: refuse when consumed, expired at `now`, or `attempts >= max_attempts`;
    /// otherwise count the attempt, compare every candidate with the stored MAC in constant
    /// time, and on a match mark the challenge consumed. Concurrent calls with the right code
    /// yield exactly one `Verified`. A consumed challenge is kept for at most
    /// `kept_after_use.at_most()` more (a nearer deadline stays): it only has to answer "already
    /// used" for a while.
    async fn attempt(
        &self,
        id: Uuid,
        candidates: &[[u8; 32]],
        now: DateTime<Utc>,
        max_attempts: u32,
        kept_after_use: KeptAfterUse,
    ) -> StoreResult<AttemptOutcome>;

    /// [`attempt`](Self::attempt) for a caller that has not read the challenge: a challenge that
    /// is not `owner`'s is answered with [`OwnedAttempt::NotOwned`] and left as it was, and a
    /// wrong code's answer carries the challenge's address. A store that can check the owner in the
    /// attempt's own step saves the read; an identity and purpose never change, so reading first
    /// is as good.
    async fn attempt_owned(
        &self,
        id: Uuid,
        owner: Owner<'_>,
        candidates: &[[u8; 32]],
        now: DateTime<Utc>,
        max_attempts: u32,
        kept_after_use: KeptAfterUse,
    ) -> StoreResult<OwnedAttempt> {
        let Some(challenge) = self.get_challenge(id).await? else {
            return Ok(OwnedAttempt::Done(AttemptOutcome::NotFound));
        };
        if !owner.owns(&challenge) {
            return Ok(OwnedAttempt::NotOwned);
        }
        let outcome = self
            .attempt(id, candidates, now, max_attempts, kept_after_use)
            .await?;
        Ok(match outcome {
            AttemptOutcome::Wrong { attempts_left } => OwnedAttempt::Wrong {
                attempts_left,
                address: challenge.address,
            },
            other => OwnedAttempt::Done(other),
        })
    }

    /// Resend: atomically replaces the MAC if the challenge is unconsumed and
    /// `now >= resend_available_at`; the old code stops working in the same step.
    async fn replace_code(
        &self,
        id: Uuid,
        mac: &[u8],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        resend_available_at: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<ReplaceOutcome>;

    /// Idempotency for senders: remembers `key → challenge_id` for `ttl` unless the key is
    /// already taken, in which case the first challenge id is returned and nothing changes.
    async fn remember_request(
        &self,
        key: &str,
        challenge_id: Uuid,
        ttl: Duration,
    ) -> StoreResult<Option<Uuid>>;

    /// Forgets a key remembered by `remember_request` (used when the send behind it failed).
    async fn forget_request(&self, key: &str) -> StoreResult<()>;
}

/// Fixed-window counters for send and verify limits.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one hit for `key` in the window of length `window` that contains `now`. Returns
    /// `Ok(count)` while the count is within `limit`, else `Err(retry_after)`: the time until
    /// the window ends.
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Result<u32, Duration>>;

    /// [`hit`](Self::hit) for each `(key, limit)` in turn, all in the same window, stopping at
    /// the first over its limit: `Err(retry_after)`, and the keys after it are not counted. A
    /// store may do it in one round trip.
    async fn hit_each(
        &self,
        limits: &[(&str, u32)],
        window: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Result<(), Duration>> {
        for &(key, limit) in limits {
            if let Err(retry_after) = self.hit(key, limit, window, now).await? {
                return Ok(Err(retry_after));
            }
        }
        Ok(Ok(()))
    }
}

/// Where an identity stands against its failure budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureState {
    /// Wrong codes counted in the current window.
    pub failures: u32,
    /// Set while the identity is locked out of code verification.
    pub locked_until: Option<DateTime<Utc>>,
    /// Whether anything is on record for the identity (failures, lockouts or their growth,
    /// current or not): what a success has to clear.
    pub recorded: bool,
}

/// The per-identity failure budget across all flows and challenges, kept in SQL.
#[async_trait]
pub trait FailureBudgetStore: Send + Sync + 'static {
    /// The identity's state at `now` (windows and lockouts that ended count as zero).
    async fn failure_state(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<FailureState>;

    /// Atomically counts one failure in the window `[start, start + window)` that is current at
    /// `now` (a new window starts when the old one ended). When the count reaches `budget` the
    /// identity is locked for `window × 2^(earlier lockouts)` (growing delay) and the count starts
    /// again. Returns the state after counting.
    async fn record_failure(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
        budget: u32,
        window: Duration,
    ) -> StoreResult<FailureState>;

    /// A success: clears failures, lockouts and their growth.
    async fn reset_failures(&self, identity_id: Uuid) -> StoreResult<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    Queued,
    Processing,
    Sent,
    Abandoned,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Processing => "processing",
            MessageStatus::Sent => "sent",
            MessageStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "queued" => Some(MessageStatus::Queued),
            "processing" => Some(MessageStatus::Processing),
            "sent" => Some(MessageStatus::Sent),
            "abandoned" => Some(MessageStatus::Abandoned),
            _ => None,
        }
    }
}

/// An outgoing message. Its template data (which holds the code) is sealed by the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: Uuid,
    pub channel: Channel,
    /// Normalised recipient address.
    pub recipient: String,
    /// Template type, for example `login_code`.
    pub template_type: String,
    /// Locale for rendering (`en` when none was asked for).
    pub locale: String,
    /// Sealed template data (XChaCha20-Poly1305, associated data = message id).
    pub sealed_data: Vec<u8>,
    pub identity_id: Option<Uuid>,
    pub status: MessageStatus,
    /// Delivery attempts made so far.
    pub send_count: u32,
    /// A message still undelivered after this instant is abandoned, never sent (its code died).
    pub not_after: Option<DateTime<Utc>>,
    /// When a worker may (re)try it.
    pub next_attempt_at: DateTime<Utc>,
    /// While `Processing`: when another worker may take it over (its worker died). A message can
    /// be queued already processing, handed straight to this process's courier.
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One try to hand a message to a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub message_id: Uuid,
    pub attempted_at: DateTime<Utc>,
    pub gateway: String,
    pub succeeded: bool,
    /// The gateway's error (never containing the message body).
    pub error: Option<String>,
    pub provider_message_id: Option<String>,
}

/// What a worker decided after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Sent,
    RetryAt(DateTime<Utc>),
    Abandoned,
}

/// An authentication event for the audit trail (security requirement L2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: Uuid,
    /// For example `code.sent`, `code.verified`, `code.failed`, `code.locked_out`,
    /// `code.rate_limited`, `session.aal_changed`.
    pub event: String,
    pub identity_id: Option<Uuid>,
    pub flow_id: Option<Uuid>,
    /// SHA-256 (hex) of the address, never the address itself.
    pub address_hash: Option<String>,
    pub client_ip: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Queues the message and records its audit event in one transaction.
    async fn enqueue(&self, message: &OutboxMessage, audit: &AuditEvent) -> StoreResult<()>;

    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()>;

    /// Claims up to `limit` messages that are queued and due at `now`, or processing with a
    /// lease that ran out (a worker died), marking them processing until `now + lease`.
    /// Concurrent workers never claim the same message (`FOR UPDATE SKIP LOCKED` on Postgres).
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxMessage>>;

    /// Records the attempt, bumps `send_count` and applies the result (sent, back to queued at
    /// the given time, or abandoned) in one transaction.
    async fn finish_attempt(
        &self,
        attempt: &DeliveryAttempt,
        result: AttemptResult,
    ) -> StoreResult<()> {
        self.finish_attempts(&[(attempt.clone(), result)]).await
    }

    /// `finish_attempt` for several messages (a courier round) in one transaction.
    async fn finish_attempts(
        &self,
        finished: &[(DeliveryAttempt, AttemptResult)],
    ) -> StoreResult<()>;

    /// Abandons a claimed or queued message without an attempt (for example its code expired).
    async fn abandon(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()>;

    async fn get_message(&self, id: Uuid) -> StoreResult<Option<OutboxMessage>>;

    async fn attempts(&self, id: Uuid) -> StoreResult<Vec<DeliveryAttempt>>;

    /// Messages newest first, optionally filtered, starting after `before` (a message id).
    async fn list_messages(
        &self,
        status: Option<MessageStatus>,
        recipient: Option<&str>,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>>;

    /// Audit events of an identity, oldest first (for tests and investigations).
    async fn audit_events(&self, identity_id: Uuid) -> StoreResult<Vec<AuditEvent>>;
}
