//! Pieces shared by the SQL backends: the one place sqlx errors become `StoreError`, plain row
//! structs each backend decodes into, and their conversion to domain types.
//!
//! Rows are decoded by the backend (Postgres and SQLite store timestamps and JSON differently)
//! into the structs below; everything after that is shared, so both backends validate stored
//! data the same way and a corrupt row is `StoreError::Internal`, never a panic.

use super::codes::{AttemptResult, FailureState, MessageStatus, OutboxMessage};
use super::{StoreError, StoreResult};
use crate::domain::aal::{Aal, Channel};
use crate::domain::identity::{
    CredentialKind, Identifier, Identity, IdentityState, VerifiableAddress,
};
use crate::domain::session::{AuthenticationMethod, Session};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

/// Postgres names the constraint; SQLite only names the columns in its message.
const IDENTIFIER_CONSTRAINT: &str = "identity_identifiers_kind_value_key";
const IDENTIFIER_SQLITE_MESSAGE: &str = "identity_identifiers.kind, identity_identifiers.value";

/// Postgres SQLSTATE classes meaning "the server is not (or no longer) there": connection
/// exception, insufficient resources, operator intervention (shutdown, cancel).
const PG_UNAVAILABLE_CLASSES: &[&str] = &["08", "53", "57"];
/// SQLite primary result codes 5 (BUSY) and 6 (LOCKED): the busy timeout ran out.
const SQLITE_UNAVAILABLE_CODES: &[i64] = &[5, 6];
/// Postgres's `lock_not_available`: a lock wait ran past `lock_timeout` (or `NOWAIT` found the
/// row locked).
const PG_LOCK_NOT_AVAILABLE: &str = "55P03";

/// Maps a sqlx error to the store's error. `context` names the operation; the text keeps the
/// database's primary message and SQLSTATE but never bound values (Postgres puts those in the
/// detail, which is left out).
pub(crate) fn map_error(context: &'static str, error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(format!("{context}: {error}")),
        sqlx::Error::Database(database) => {
            let code = database
                .code()
                .map(|code| code.into_owned())
                .unwrap_or_default();
            let message = format!("{context}: {} (code {code})", database.message());
            if code == PG_LOCK_NOT_AVAILABLE {
                StoreError::LockTimedOut(message)
            } else if is_unavailable_code(&code) {
                StoreError::Unavailable(message)
            } else {
                StoreError::Internal(message)
            }
        }
        sqlx::Error::Migrate(migrate) => map_migrate_error(*migrate),
        other => StoreError::Internal(format!("{context}: {other}")),
    }
}

/// Migrations run on connect, so a server that goes away meanwhile is `Unavailable` too.
pub(crate) fn map_migrate_error(error: sqlx::migrate::MigrateError) -> StoreError {
    match error {
        sqlx::migrate::MigrateError::Execute(inner)
        | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => {
            map_error("run migrations", inner)
        }
        other => StoreError::Internal(format!("run migrations: {other}")),
    }
}

fn is_unavailable_code(code: &str) -> bool {
    if let Ok(number) = code.parse::<i64>() {
        // SQLite extended codes carry the primary code in the low byte.
        return SQLITE_UNAVAILABLE_CODES.contains(&(number & 0xff));
    }
    PG_UNAVAILABLE_CLASSES
        .iter()
        .any(|class| code.starts_with(class))
}

/// True when the error is a violation of the unique identifier index (and not, say, a
/// duplicate primary key).
pub(crate) fn is_identifier_conflict(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(database) = error else {
        return false;
    };
    database.is_unique_violation()
        && (database.constraint() == Some(IDENTIFIER_CONSTRAINT)
            || database.message().contains(IDENTIFIER_SQLITE_MESSAGE))
}

/// Maps an error from inserting `identifier` to `IdentifierTaken` when it collided, else as
/// usual. Identifiers are inserted one statement each so the failing one is known exactly.
pub(crate) fn map_identifier_insert_error(
    identifier: &Identifier,
    error: sqlx::Error,
) -> StoreError {
    if is_identifier_conflict(&error) {
        StoreError::IdentifierTaken {
            kind: identifier.kind.as_str(),
            trait_name: identifier.trait_name.clone(),
        }
    } else {
        map_error("insert identifier", error)
    }
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt stored data: {what}"))
}

pub(crate) struct IdentityRow {
    pub id: Uuid,
    pub schema_id: String,
    pub traits: Value,
    pub state: String,
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) struct IdentifierRow {
    pub identity_id: Uuid,
    pub kind: String,
    pub value: String,
    pub trait_name: String,
    pub channel: Option<String>,
}

pub(crate) struct AddressRow {
    pub id: Uuid,
    pub identity_id: Uuid,
    pub value: String,
    pub channel: String,
    pub trait_name: String,
    pub verified: bool,
    pub verified_at: Option<DateTime<Utc>>,
}

pub(crate) struct SessionRow {
    pub id: Uuid,
    pub identity_id: Uuid,
    pub token_hash: Vec<u8>,
    pub aal: String,
    pub methods: Value,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub authenticated_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn parse_channel(text: &str) -> StoreResult<Channel> {
    Channel::parse(text).ok_or_else(|| corrupt("unknown channel"))
}

impl IdentifierRow {
    fn into_domain(self) -> StoreResult<Identifier> {
        Ok(Identifier {
            kind: CredentialKind::parse(&self.kind)
                .ok_or_else(|| corrupt("unknown identifier kind"))?,
            value: self.value,
            trait_name: self.trait_name,
            channel: self.channel.as_deref().map(parse_channel).transpose()?,
        })
    }
}

impl AddressRow {
    fn into_domain(self) -> StoreResult<VerifiableAddress> {
        Ok(VerifiableAddress {
            id: self.id,
            value: self.value,
            channel: parse_channel(&self.channel)?,
            trait_name: self.trait_name,
            verified: self.verified,
            verified_at: self.verified_at,
        })
    }
}

impl SessionRow {
    pub(crate) fn into_domain(self) -> StoreResult<Session> {
        let methods: Vec<AuthenticationMethod> =
            serde_json::from_value(self.methods).map_err(|_| corrupt("session methods"))?;
        Ok(Session {
            id: self.id,
            identity_id: self.identity_id,
            token_hash: self.token_hash,
            aal: Aal::parse(&self.aal).ok_or_else(|| corrupt("unknown aal"))?,
            methods,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            authenticated_at: self.authenticated_at,
            revoked_at: self.revoked_at,
        })
    }
}

/// Puts identities together from one query per table. Identifier and address rows must come
/// in position order; identities keep the order of `identities`.
pub(crate) fn assemble(
    identities: Vec<IdentityRow>,
    identifiers: Vec<IdentifierRow>,
    addresses: Vec<AddressRow>,
) -> StoreResult<Vec<Identity>> {
    let mut identifiers_by_identity: HashMap<Uuid, Vec<Identifier>> = HashMap::new();
    for row in identifiers {
        let identity_id = row.identity_id;
        identifiers_by_identity
            .entry(identity_id)
            .or_default()
            .push(row.into_domain()?);
    }
    let mut addresses_by_identity: HashMap<Uuid, Vec<VerifiableAddress>> = HashMap::new();
    for row in addresses {
        let identity_id = row.identity_id;
        addresses_by_identity
            .entry(identity_id)
            .or_default()
            .push(row.into_domain()?);
    }
    identities
        .into_iter()
        .map(|row| {
            Ok(Identity {
                id: row.id,
                schema_id: row.schema_id,
                traits: row.traits,
                state: IdentityState::parse(&row.state)
                    .ok_or_else(|| corrupt("unknown identity state"))?,
                identifiers: identifiers_by_identity.remove(&row.id).unwrap_or_default(),
                verifiable_addresses: addresses_by_identity.remove(&row.id).unwrap_or_default(),
                has_password: row.has_password,
                created_at: row.created_at,
                updated_at: row.updated_at,
            })
        })
        .collect()
}

/// What `update_identity` keeps of the stored addresses: for an address whose (channel, value)
/// is still there, its id and verification. Verification never goes backwards on update: the
/// result is verified when either the stored or the given address is, and the first known
/// verification time wins. Only `mark_address_verified` (or deleting the address) changes it.
pub(crate) struct StoredAddress {
    pub id: Uuid,
    pub channel: String,
    pub value: String,
    pub verified: bool,
    pub verified_at: Option<DateTime<Utc>>,
}

pub(crate) fn merge_addresses(
    given: &[VerifiableAddress],
    stored: &[StoredAddress],
) -> Vec<VerifiableAddress> {
    given
        .iter()
        .map(|address| {
            let kept = stored
                .iter()
                .find(|old| old.channel == address.channel.as_str() && old.value == address.value);
            match kept {
                Some(old) => VerifiableAddress {
                    id: old.id,
                    verified: old.verified || address.verified,
                    verified_at: if old.verified {
                        old.verified_at.or(address.verified_at)
                    } else {
                        address.verified_at.or(old.verified_at)
                    },
                    ..address.clone()
                },
                None => address.clone(),
            }
        })
        .collect()
}

/// Lockouts double up to this many times; past it the delay stays at `window × 2^16`.
const MAX_LOCKOUT_DOUBLINGS: u32 = 16;

/// An identity's row in `identity_code_failures`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailureRow {
    pub window_started_at: DateTime<Utc>,
    pub window_ends_at: DateTime<Utc>,
    pub failures: i64,
    pub lockouts: i64,
    pub locked_until: Option<DateTime<Utc>>,
}

impl FailureRow {
    /// The state at `now`: a window or lockout that ended counts as nothing.
    pub(crate) fn state_at(&self, now: DateTime<Utc>) -> StoreResult<FailureState> {
        let failures = if now < self.window_ends_at {
            u32::try_from(self.failures).map_err(|_| corrupt("failure count"))?
        } else {
            0
        };
        Ok(FailureState {
            failures,
            locked_until: self.locked_until.filter(|until| *until > now),
            recorded: true,
        })
    }
}

/// The row after counting one failure at `now`. Both SQL backends read the row under a write
/// lock, call this, and write the result back, so the budget rules live in one place.
pub(crate) fn count_failure(
    row: Option<FailureRow>,
    now: DateTime<Utc>,
    budget: u32,
    window: std::time::Duration,
) -> StoreResult<FailureRow> {
    let window = chrono::TimeDelta::from_std(window)
        .map_err(|_| StoreError::Internal("failure window out of range".into()))?;
    let window_ends_at = now
        .checked_add_signed(window)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut next = match row {
        // A replica whose clock lags a little still counts in the current window rather than
        // starting a fresh one (which would forgive the failures so far).
        Some(row) if now < row.window_ends_at => row,
        Some(row) => FailureRow {
            window_started_at: now,
            window_ends_at,
            failures: 0,
            ..row
        },
        None => FailureRow {
            window_started_at: now,
            window_ends_at,
            failures: 0,
            lockouts: 0,
            locked_until: None,
        },
    };
    next.failures += 1;
    if next.failures >= i64::from(budget.max(1)) {
        let doublings = u32::try_from(next.lockouts)
            .unwrap_or(u32::MAX)
            .min(MAX_LOCKOUT_DOUBLINGS);
        let delay = window
            .checked_mul(1 << doublings)
            .unwrap_or(chrono::TimeDelta::MAX);
        let until = now
            .checked_add_signed(delay)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        // A lockout never shortens one already running.
        next.locked_until = Some(
            next.locked_until
                .map_or(until, |current| current.max(until)),
        );
        next.lockouts += 1;
        next.failures = 0;
        next.window_started_at = now;
        next.window_ends_at = window_ends_at;
    }
    Ok(next)
}

/// A row of `courier_messages`, decoded by each backend.
pub(crate) struct MessageRow {
    pub id: Uuid,
    pub channel: String,
    pub recipient: String,
    pub template_type: String,
    pub locale: String,
    pub sealed_data: Vec<u8>,
    pub identity_id: Option<Uuid>,
    pub status: String,
    pub send_count: i64,
    pub not_after: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MessageRow {
    pub(crate) fn into_domain(self) -> StoreResult<OutboxMessage> {
        Ok(OutboxMessage {
            id: self.id,
            channel: parse_channel(&self.channel)?,
            recipient: self.recipient,
            template_type: self.template_type,
            locale: self.locale,
            sealed_data: self.sealed_data,
            identity_id: self.identity_id,
            status: MessageStatus::parse(&self.status)
                .ok_or_else(|| corrupt("unknown message status"))?,
            send_count: u32::try_from(self.send_count).map_err(|_| corrupt("send count"))?,
            not_after: self.not_after,
            next_attempt_at: self.next_attempt_at,
            lease_until: self.lease_until,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The status and next attempt time a finished attempt leaves a message in.
pub(crate) fn after_attempt(result: AttemptResult) -> (MessageStatus, Option<DateTime<Utc>>) {
    match result {
        AttemptResult::Sent => (MessageStatus::Sent, None),
        AttemptResult::RetryAt(at) => (MessageStatus::Queued, Some(at)),
        AttemptResult::Abandoned => (MessageStatus::Abandoned, None),
    }
}

/// A lease as a time span, saturating on absurd values.
pub(crate) fn lease_end(now: DateTime<Utc>, lease: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
