//! Storage traits the domain depends on, and their backends.
//!
//! Durable records (identities, credentials, sessions, the failure budget, the courier outbox and
//! audit events) live in a SQL database: Postgres in production, SQLite on the embedded default.
//! Short-lived records with a TTL (flows, code challenges and rate-limit windows) live in Redis,
//! or in process memory on the embedded default. Every trait has one conformance suite
//! (`tests/store_conformance.rs`) that runs against every backend.

use crate::domain::aal::Aal;
use crate::domain::identity::{CredentialKind, Identity};
use crate::domain::session::{AuthenticationMethod, Session};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

mod batch;
pub mod budget_cache;
pub mod codes;
pub mod config_versions;
pub mod memory;
pub mod postgres;
pub mod redis;
pub mod redis_codes;
pub mod session_cache;
pub mod sql_common;
pub mod sqlite;
mod sqlite_writes;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique identifier (email, phone, ...) is already used by another identity.
    #[error("identifier already taken ({kind}:{trait_name})")]
    IdentifierTaken {
        kind: &'static str,
        trait_name: String,
    },
    /// The backend could not be reached or timed out; the operation did not happen.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A row the operation needed stayed locked by another transaction for longer than the
    /// store waits for a lock; the operation did not happen. Unlike `Unavailable`, it is one
    /// write's own trouble: the writes batched with it are written again without it.
    #[error("store row locked elsewhere: {0}")]
    LockTimedOut(String),
    /// Anything else: a bug, corrupt data or an unexpected backend answer.
    #[error("store failure: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Identities with their credentials, identifiers and verifiable addresses.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// Inserts the identity, its identifiers and addresses, and its password hash if any, in one
    /// transaction. A duplicate identifier fails with `IdentifierTaken` and writes nothing.
    async fn insert_identity(
        &self,
        identity: &Identity,
        password_hash: Option<&str>,
    ) -> StoreResult<()>;

    /// Replaces traits, state, identifiers and verifiable addresses (as given) in one
    /// transaction; returns false when the identity does not exist. An address whose
    /// (channel, value) is still there keeps its stored id, and verification never goes
    /// backwards: it stays verified if either the stored or the given address is, and keeps the
    /// first known `verified_at`. Credentials are untouched. A taken identifier fails with
    /// `IdentifierTaken` and changes nothing.
    async fn update_identity(&self, identity: &Identity) -> StoreResult<bool>;

    async fn get_identity(&self, id: Uuid) -> StoreResult<Option<Identity>>;

    /// Looks an identity up by a normalised identifier of one credential kind.
    async fn find_by_identifier(
        &self,
        kind: CredentialKind,
        value: &str,
    ) -> StoreResult<Option<Identity>>;

    /// The argon2 PHC string of the identity's password, if it has one.
    async fn password_hash(&self, identity_id: Uuid) -> StoreResult<Option<String>>;

    /// Identities ordered by id (ids are UUIDv7, so this is creation order), starting after
    /// `after`, at most `limit`.
    async fn list_identities(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Identity>>;

    /// Deletes the identity with everything that hangs off it (credentials, addresses,
    /// sessions); returns false when it did not exist.
    async fn delete_identity(&self, id: Uuid) -> StoreResult<bool>;

    /// Marks one of the identity's addresses verified; returns false when no such address.
    async fn mark_address_verified(
        &self,
        identity_id: Uuid,
        value: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
}

/// The change a completed factor makes to a session.
#[derive(Debug, Clone)]
pub struct SessionUpgrade {
    /// The identity the session belongs to: its addresses are what `verified_address` names, and
    /// its cached answers (see `session_cache`) change with them.
    pub identity_id: Uuid,
    pub new_token_hash: Vec<u8>,
    pub aal: Aal,
    pub methods: Vec<AuthenticationMethod>,
    pub authenticated_at: DateTime<Utc>,
    /// The code address whose code earned the upgrade: marked verified (first time kept) in the
    /// same step, on the session's identity.
    pub verified_address: Option<String>,
    /// Recorded in the same step, in this order, exactly when the upgrade happens: an upgrade
    /// never happens unaudited, nor is one audited that did not happen. The step-up passes the
    /// code's `code.verified` and the session's `session.aal_changed`.
    pub audit: Vec<codes::AuditEvent>,
}

impl SessionUpgrade {
    /// `identity`, read before this upgrade, as the upgrade leaves it: its `verified_address`
    /// verified, at `authenticated_at` unless verified before.
    pub(crate) fn verified_in(&self, mut identity: Identity) -> Identity {
        let Some(value) = &self.verified_address else {
            return identity;
        };
        for address in identity
            .verifiable_addresses
            .iter_mut()
            .filter(|address| &address.value == value)
        {
            address.verified = true;
            address.verified_at = address.verified_at.or(Some(self.authenticated_at));
        }
        identity
    }

    /// Refuses an upgrade without audit events before anything is written.
    pub fn check_audited(&self) -> StoreResult<()> {
        if self.audit.is_empty() {
            return Err(StoreError::Internal(
                "a session upgrade must carry its audit events".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn insert_session(&self, session: &Session) -> StoreResult<()>;

    /// The session whose token hashes to `token_hash`, whether active or not.
    async fn find_by_token_hash(&self, token_hash: &[u8]) -> StoreResult<Option<Session>>;

    /// The session whose token hashes to `token_hash` (active or not) together with its
    /// identity, read together: the hot path of every authenticated call. `None` when there is
    /// no such session or its identity is gone.
    async fn find_with_identity(
        &self,
        token_hash: &[u8],
    ) -> StoreResult<Option<(Session, Identity)>>;

    async fn get_session(&self, id: Uuid) -> StoreResult<Option<Session>>;

    /// The identity's sessions, newest first; inactive ones (revoked or expired at `now`) only
    /// when asked for.
    async fn list_sessions(
        &self,
        identity_id: Uuid,
        include_inactive: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Session>>;

    /// Revokes one session; returns false when it did not exist or was already revoked.
    async fn revoke_session(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Revokes every unrevoked session of the identity; returns how many.
    async fn revoke_identity_sessions(
        &self,
        identity_id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<u32>;

    /// Atomically replaces the token and raises the AAL, but only while the session is unrevoked
    /// and still holds `expected_token_hash`: of several concurrent upgrades exactly one wins, and
    /// the old token stops working in the same step. The address verification and the audit
    /// event of `upgrade` are written in that step too, or not at all. Returns `None` when the
    /// guard failed (and then nothing was written), else the upgraded session with its identity
    /// as read in the same step or right after it.
    async fn upgrade_session(
        &self,
        id: Uuid,
        expected_token_hash: &[u8],
        upgrade: &SessionUpgrade,
    ) -> StoreResult<Option<Upgraded>>;

    /// The identity a token's session belongs to, if this store knows it without a read (a
    /// cache does): a hint that lets a read for that identity start early, never a proof that
    /// the token is good.
    fn known_identity(&self, token_hash: &[u8]) -> Option<Uuid> {
        let _ = token_hash;
        None
    }

    /// [`upgrade_session`](Self::upgrade_session) for a caller that holds the session's identity
    /// already (the session cache, from the old token's answer): a store may leave it unread,
    /// and `Upgraded::identity` is then `None`. Everything else is the same.
    async fn upgrade_session_without_identity(
        &self,
        id: Uuid,
        expected_token_hash: &[u8],
        upgrade: &SessionUpgrade,
    ) -> StoreResult<Option<Upgraded>> {
        self.upgrade_session(id, expected_token_hash, upgrade).await
    }

    /// [`upgrade_session`](Self::upgrade_session), then `after` once the upgrade has happened:
    /// a write that must follow it (not run when the guard failed or on an error). A store that
    /// announces the upgrade after it committed runs `after` alongside that announcement, so the
    /// two can share a round trip. Both are done when this returns.
    async fn upgrade_session_then<'a>(
        &'a self,
        id: Uuid,
        expected_token_hash: &'a [u8],
        upgrade: &'a SessionUpgrade,
        after: AfterUpgrade<'a>,
    ) -> StoreResult<Option<Upgraded>> {
        let upgraded = self
            .upgrade_session(id, expected_token_hash, upgrade)
            .await?;
        if upgraded.is_some() {
            after.await;
        }
        Ok(upgraded)
    }
}

/// What [`SessionStore::upgrade_session_then`] does after an upgrade.
pub type AfterUpgrade<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A session upgrade that happened (see [`SessionStore::upgrade_session`]): what a
/// [`SessionStore::find_with_identity`] of the new token would answer right after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Upgraded {
    pub session: Session,
    /// `None` when the identity was deleted meanwhile, was not read (asked for with
    /// [`SessionStore::upgrade_session_without_identity`], or the session cache held it
    /// already), or (SQLite, which reads it after the write) could not be read back.
    pub identity: Option<Identity>,
}

/// A flow as stored: an opaque document plus a revision for compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFlow {
    pub revision: u64,
    pub document: Vec<u8>,
}

/// Short-lived flow documents with a TTL. The domain owns the document format.
#[async_trait]
pub trait FlowStore: Send + Sync + 'static {
    /// Stores a new flow at revision 1; it disappears after `ttl`.
    async fn create_flow(&self, id: Uuid, document: &[u8], ttl: Duration) -> StoreResult<()>;

    async fn get_flow(&self, id: Uuid) -> StoreResult<Option<StoredFlow>>;

    /// Replaces the document if the stored revision is still `expected_revision`, bumping the
    /// revision and keeping the remaining TTL. Returns false when the flow changed or vanished
    /// meanwhile: of two concurrent writers exactly one wins.
    async fn replace_flow(
        &self,
        id: Uuid,
        expected_revision: u64,
        document: &[u8],
    ) -> StoreResult<bool>;

    /// Replaces the document as [`replace_flow`](Self::replace_flow) does, then keeps the flow
    /// for at most `keep_for` more; a deadline that is already nearer stays. A flow that has
    /// reached its end only has to answer a repeated or late request for a while, so it need
    /// not hold memory for the rest of its lifespan. An in-process store may drop it sooner to
    /// bound its memory.
    async fn finish_flow(
        &self,
        id: Uuid,
        expected_revision: u64,
        document: &[u8],
        keep_for: Duration,
    ) -> StoreResult<bool>;

    /// Removes the flow, if it is there. For a flow whose creation did not go ahead, so that
    /// nobody holds its id.
    async fn delete_flow(&self, id: Uuid) -> StoreResult<()>;
}

/// The backends a server runs on, chosen from the configuration.
#[derive(Clone)]
pub struct Stores {
    pub identities: Arc<dyn IdentityStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub flows: Arc<dyn FlowStore>,
    pub challenges: Arc<dyn codes::ChallengeStore>,
    pub limits: Arc<dyn codes::RateLimiter>,
    pub budget: Arc<dyn codes::FailureBudgetStore>,
    pub outbox: Arc<dyn codes::Outbox>,
    pub configs: Arc<dyn config_versions::ConfigVersionStore>,
}

/// The stores that live in Redis when it is configured, else in process.
type EphemeralStores = (
    Arc<dyn FlowStore>,
    Arc<dyn codes::ChallengeStore>,
    Arc<dyn codes::RateLimiter>,
    Arc<dyn session_cache::Versions>,
);

/// Opens the backends the configuration names: `dsn` picks Postgres or SQLite (the embedded
/// file when unset), `redis.url` picks Redis or the in-process store.
pub async fn open(config: &crate::config::Config) -> StoreResult<Stores> {
    let dsn = config.dsn.as_deref().unwrap_or(DEFAULT_SQLITE_DSN);
    let sql: Arc<dyn SqlStore> =
        if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
            Arc::new(postgres::PostgresStore::connect(dsn).await?)
        } else if dsn == "memory" || dsn.starts_with("sqlite:") {
            Arc::new(sqlite::SqliteStore::connect(dsn).await?)
        } else {
            // The DSN may hold a password, so only its scheme goes into the message.
            let scheme = dsn.split(':').next().unwrap_or_default();
            return Err(StoreError::Internal(format!(
                "unsupported dsn scheme {scheme:?}: expected postgres://, sqlite: or memory"
            )));
        };
    let (flows, challenges, limits, versions): EphemeralStores = match config.redis.url.as_deref() {
        Some(url) => {
            // One connection manager (it multiplexes) for flows, codes and session versions.
            let connection = redis::connect_manager(url).await?;
            let versions = Arc::new(session_cache::RedisVersions::new(
                connection.clone(),
                REDIS_KEY_PREFIX,
            ));
            let codes = Arc::new(redis_codes::RedisCodeStore::with_connection(
                connection.clone(),
                REDIS_KEY_PREFIX,
            ));
            (
                Arc::new(redis::RedisFlowStore::with_connection(
                    connection,
                    REDIS_KEY_PREFIX,
                )),
                codes.clone(),
                codes,
                versions,
            )
        }
        None => {
            let codes = Arc::new(memory::MemoryCodeStore::new());
            (
                Arc::new(memory::MemoryFlowStore::new()),
                codes.clone(),
                codes,
                Arc::new(session_cache::MemoryVersions::new()),
            )
        }
    };
    let budget = Arc::new(budget_cache::CachedBudget::new(
        sql.clone(),
        versions.clone(),
    ));
    let cached = Arc::new(session_cache::CachedSessions::new(sql.clone(), versions));
    Ok(Stores {
        identities: cached.clone(),
        sessions: cached,
        budget,
        outbox: sql.clone(),
        configs: sql,
        flows,
        challenges,
        limits,
    })
}

/// Everything the SQL database holds; each SQL backend implements all of it.
pub trait SqlStore:
    IdentityStore
    + SessionStore
    + codes::FailureBudgetStore
    + codes::Outbox
    + config_versions::ConfigVersionStore
{
}

impl<T> SqlStore for T where
    T: IdentityStore
        + SessionStore
        + codes::FailureBudgetStore
        + codes::Outbox
        + config_versions::ConfigVersionStore
{
}

/// Prefix of every key Twofold writes to Redis, so it can share a server with other software.
pub const REDIS_KEY_PREFIX: &str = "twofold:";

/// The embedded default: a SQLite file in the working directory, created on first start.
pub const DEFAULT_SQLITE_DSN: &str = "sqlite://twofold.sqlite?mode=rwc";

/// Names the SQL backend for logs without credentials or paths.
pub fn describe_dsn(dsn: Option<&str>) -> &'static str {
    match dsn {
        Some(dsn) if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") => {
            "postgres"
        }
        Some("memory") => "sqlite (in memory)",
        Some(_) => "sqlite",
        None => "sqlite (embedded default file)",
    }
}

/// Applies the SQL migrations of the configured database (connecting runs them) and nothing
/// else, so `twofold migrate` needs no Redis.
pub async fn migrate(config: &crate::config::Config) -> StoreResult<()> {
    let dsn = config.dsn.as_deref().unwrap_or(DEFAULT_SQLITE_DSN);
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        postgres::PostgresStore::connect(dsn).await?;
    } else {
        sqlite::SqliteStore::connect(dsn).await?;
    }
    Ok(())
}
