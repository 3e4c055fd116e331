//! Postgres backend for identities, sessions, the failure budget and the courier outbox.
//!
//! Queries are checked at run time (`sqlx::query` + `bind`): there is no database at build time.
//! Writes that touch several rows run in one transaction; an identity and its children are read in
//! one statement (aggregated as JSON), so it is never assembled from two different versions and
//! costs one round trip.
use super::batch::{BatchWrite, Batcher};
use super::codes::{
    AttemptResult, AuditEvent, DeliveryAttempt, FailureBudgetStore, FailureState, MessageStatus,
    Outbox, OutboxMessage,
};
use super::config_versions::{ConfigSource, ConfigVersion, ConfigVersionStore};
use super::sql_common::corrupt;
use super::sql_common::{
    AddressRow, FailureRow, IdentifierRow, IdentityRow, MessageRow, SessionRow, StoredAddress,
    after_attempt, assemble, count_failure, lease_end, map_error, map_identifier_insert_error,
    map_migrate_error, merge_addresses,
};
use super::{IdentityStore, SessionStore, SessionUpgrade, StoreError, StoreResult, Upgraded};
use crate::domain::identity::{CredentialKind, Identifier, Identity, VerifiableAddress};
use crate::domain::session::Session;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, Postgres, Row, Transaction};
use std::time::Duration;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Enough for a replica on a small machine; Postgres defaults to 100 connections in total.
const MAX_CONNECTIONS: u32 = 16;
/// Past this the database is effectively unavailable; better to answer than to queue forever.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Batches of durable writes running at once; a freed one takes every write that waited.
/// Few, so that writes wait together under load, but more than one, so that under a heavy load
/// full batches run side by side, and, while a slot is free, a slow statement holds up the rest
/// for `batch::OVERDUE` at most.
const BATCHES_AT_ONCE: usize = 2;
/// Writes per batch at most over TCP. Eight already save seven commits in eight. Larger upgrade
/// batches took about 40 ms instead of 5 over TLS (not without it): a delayed-ACK stall, as sqlx
/// 0.9.0 no longer sets TCP_NODELAY (transact-rs/sqlx#4335). Measured in docs/performance.md.
const MOST_PER_BATCH_OVER_TCP: usize = 8;
/// Writes per batch at most over a Unix socket, which has no Nagle's algorithm to stall a large
/// statement. The cap matters after a hiccup (a slow WAL flush, a busy core): the writes that
/// piled up meanwhile go in one round of statements instead of several, each waiting for the
/// WAL's flush, so the calls caught in it wait less. At 70 % of the peak, with 32 instead of 8,
/// `SubmitLoginCode`'s p99 was lower in five of six interleaved runs (docs/performance.md,
/// "After the nineteenth pass").
const MOST_PER_BATCH_OVER_SOCKET: usize = 32;
const _: () = assert!(MOST_PER_BATCH_OVER_SOCKET > MOST_PER_BATCH_OVER_TCP);
/// How long a queued code waits for others to share its statement while codes come more often
/// than this. An enqueue is quick to run, so with nothing in flight most of them ran alone: at
/// 1,000 step-ups/s 0.54–0.76 enqueue statements per step-up, over half of all Postgres
/// statements. Waiting cut them to 0.23–0.26 and took 0.02–0.08 cores off Postgres
/// (docs/performance.md, "After the thirteenth pass"). The wait is on `CreateLoginFlow`'s
/// answer, up to 2 ms (3 with tokio's millisecond timers) and only at such rates; next to a
/// gateway's own delivery time it is nothing. Upgrades do not wait: `SubmitLoginCode` has the
/// longest answer of the step-up, and a scratch build where they did measured no cheaper. An
/// upgrade that comes meanwhile takes the lingering codes along in its own statement.
const ENQUEUE_LINGER: Duration = Duration::from_millis(2);
/// A connection idle longer than this is pinged before it is handed out, so one the server
/// dropped while idle (a restart, a proxy's idle cut) is replaced instead of failing a request.
/// One used more recently is handed out as it is: the pool's default pings every connection
/// first, a round trip to Postgres for each of the step-up's statements, which cost a tenth of
/// the step-ups per second (docs/performance.md). The price: right after a Postgres restart
/// under load, each connection used within the last second fails one request (up to
/// `MAX_CONNECTIONS`) before the pool's check on hand-back discards it.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);
/// A ping that gets no answer in this long ends the connection, so a silently dead one is
/// replaced within the same acquire instead of using up its whole timeout.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

macro_rules! identity_columns {
    () => {
        "i.id, i.schema_id, i.traits, i.state, i.created_at, i.updated_at, \
         EXISTS (SELECT 1 FROM identity_credentials c \
                 WHERE c.identity_id = i.id AND c.kind = 'password') AS has_password, \
         COALESCE((SELECT json_agg(json_build_object('kind', x.kind, 'value', x.value, \
                                                     'trait_name', x.trait_name, \
                                                     'channel', x.channel) ORDER BY x.position) \
                   FROM identity_identifiers x WHERE x.identity_id = i.id), '[]'::json) \
           AS identifiers, \
         COALESCE((SELECT json_agg(json_build_object('id', a.id, 'value', a.value, \
                                                     'channel', a.channel, \
                                                     'trait_name', a.trait_name, \
                                                     'verified', a.verified, \
                                                     'verified_at', a.verified_at) \
                                   ORDER BY a.position) \
                   FROM identity_verifiable_addresses a WHERE a.identity_id = i.id), '[]'::json) \
           AS addresses "
    };
}

/// An identity with its identifiers and addresses in one statement, so it is read from one
/// snapshot in one round trip (a statement sees one snapshot even outside a transaction).
macro_rules! identity_select {
    () => {
        concat!("SELECT ", identity_columns!(), "FROM identities i ")
    };
}

macro_rules! message_columns {
    () => {
        "id, channel, recipient, template_type, locale, sealed_data, identity_id, status, \
         send_count, not_after, next_attempt_at, lease_until, created_at, updated_at"
    };
}

macro_rules! session_select {
    () => {
        "SELECT id, identity_id, token_hash, aal, methods, issued_at, expires_at, \
         authenticated_at, revoked_at FROM sessions "
    };
}

#[derive(Clone)]
pub struct PostgresStore {
    pool: sqlx::PgPool,
    /// The courier's claims and attempt records: see [`COURIER_CONNECTIONS`].
    courier_pool: sqlx::PgPool,
    /// The queued codes and session upgrades: the step-up's durable writes.
    writes: Batcher<DurableWrites>,
}

/// Connections for the courier's rounds, whose commits do not wait for the WAL to reach the disk
/// (`synchronous_commit = off`). A Postgres crash may lose the last few hundred milliseconds of
/// them. A lost claim leaves its message as it was before (queued, or under an older lease), to
/// be claimed again in a later round; a lost attempt record leaves it claimed until its lease
/// runs out, and it is then delivered again, its count of sends short of that one (a message
/// may get one try more than its retries allow per such crash). Delivery is at least once
/// anyway, and the message itself was queued durably. About a quarter of the step-up's commits
/// are the courier's; each one that does not flush leaves the WAL's one flush at a time to the
/// writes a caller waits for (docs/performance.md).
const COURIER_CONNECTIONS: u32 = 2;

/// The courier pool's connection options: the store's own, with commits that do not wait for the
/// WAL's flush.
fn courier_connect_options(dsn: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(dsn
        .parse::<PgConnectOptions>()?
        .options([("synchronous_commit", "off")]))
}

/// A pool that pings a connection only when it has been idle (see [`PING_WHEN_IDLE_FOR`]).
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_WHEN_IDLE_FOR {
                    tokio::time::timeout(PING_TIMEOUT, connection.ping())
                        .await
                        .map_err(|_| {
                            sqlx::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "no answer to a ping",
                            ))
                        })??;
                }
                Ok(true)
            })
        })
}

/// How many writes a batch takes at most on connections made with `options`: more where sqlx
/// connects over a Unix socket, which it does for a socket folder or a host that is a path.
fn most_per_batch(options: &PgConnectOptions) -> usize {
    if options.get_socket().is_some() || options.get_host().starts_with('/') {
        MOST_PER_BATCH_OVER_SOCKET
    } else {
        MOST_PER_BATCH_OVER_TCP
    }
}

impl PostgresStore {
    /// Connects and runs the embedded migrations in `migrations/postgres`.
    pub async fn connect(dsn: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = dsn
            .parse()
            .map_err(|error| map_error("connect to postgres", error))?;
        let most = most_per_batch(&options);
        let pool = pool_options(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|error| map_error("connect to postgres", error))?;
        MIGRATOR.run(&pool).await.map_err(map_migrate_error)?;
        let courier_options = courier_connect_options(dsn)
            .map_err(|error| map_error("connect to postgres", error))?;
        // Connected now, not on first use: a server or pooler that refuses the start-up option
        // stops the process here instead of leaving every courier round failing.
        let courier_pool = pool_options(COURIER_CONNECTIONS)
            .connect_with(courier_options)
            .await
            .map_err(|error| map_error("connect the courier's pool to postgres", error))?;
        let writes = Batcher::new(
            DurableWrites { pool: pool.clone() },
            BATCHES_AT_ONCE,
            most,
            ENQUEUE_LINGER,
        );
        Ok(Self {
            pool,
            courier_pool,
            writes,
        })
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(|error| map_error("begin transaction", error))
    }
}

async fn commit(tx: Transaction<'static, Postgres>) -> StoreResult<()> {
    tx.commit()
        .await
        .map_err(|error| map_error("commit transaction", error))
}

/// Children of an identity as `identity_columns!` aggregates them.
#[derive(serde::Deserialize)]
struct IdentifierJson {
    kind: String,
    value: String,
    trait_name: String,
    channel: Option<String>,
}

#[derive(serde::Deserialize)]
struct AddressJson {
    id: Uuid,
    value: String,
    channel: String,
    trait_name: String,
    verified: bool,
    verified_at: Option<DateTime<Utc>>,
}

fn identity_row(row: &PgRow) -> Result<IdentityRow, sqlx::Error> {
    Ok(IdentityRow {
        id: row.try_get("id")?,
        schema_id: row.try_get("schema_id")?,
        traits: row.try_get::<Json<Value>, _>("traits")?.0,
        state: row.try_get("state")?,
        has_password: row.try_get("has_password")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Decodes one row of `identity_columns!` into a complete identity.
fn identity_from(row: &PgRow) -> StoreResult<Identity> {
    let decode = || -> Result<_, sqlx::Error> {
        let identity = identity_row(row)?;
        let identifiers = row
            .try_get::<Json<Vec<IdentifierJson>>, _>("identifiers")?
            .0;
        let addresses = row.try_get::<Json<Vec<AddressJson>>, _>("addresses")?.0;
        Ok((identity, identifiers, addresses))
    };
    let (identity, identifiers, addresses) =
        decode().map_err(|error| map_error("decode identity", error))?;
    let identity_id = identity.id;
    let identifiers = identifiers
        .into_iter()
        .map(|identifier| IdentifierRow {
            identity_id,
            kind: identifier.kind,
            value: identifier.value,
            trait_name: identifier.trait_name,
            channel: identifier.channel,
        })
        .collect();
    let addresses = addresses
        .into_iter()
        .map(|address| AddressRow {
            id: address.id,
            identity_id,
            value: address.value,
            channel: address.channel,
            trait_name: address.trait_name,
            verified: address.verified,
            verified_at: address.verified_at,
        })
        .collect();
    assemble(vec![identity], identifiers, addresses)?
        .pop()
        .ok_or_else(|| corrupt("identity row assembled into nothing"))
}

fn session_row(row: &PgRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: row.try_get("id")?,
        identity_id: row.try_get("identity_id")?,
        token_hash: row.try_get("token_hash")?,
        aal: row.try_get("aal")?,
        methods: row.try_get::<Json<Value>, _>("methods")?.0,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        authenticated_at: row.try_get("authenticated_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// The session half of `find_with_identity`'s row, whose `id` column is the identity's.
fn joined_session_row(row: &PgRow, identity_id: Uuid) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: row.try_get("session_id")?,
        identity_id,
        token_hash: row.try_get("token_hash")?,
        aal: row.try_get("aal")?,
        methods: row.try_get::<Json<Value>, _>("methods")?.0,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        authenticated_at: row.try_get("authenticated_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn decode_all<T>(
    rows: &[PgRow],
    decode: fn(&PgRow) -> Result<T, sqlx::Error>,
    context: &'static str,
) -> StoreResult<Vec<T>> {
    rows.iter()
        .map(|row| decode(row).map_err(|error| map_error(context, error)))
        .collect()
}

async fn insert_children(
    conn: &mut PgConnection,
    identity_id: Uuid,
    identifiers: &[Identifier],
    addresses: &[VerifiableAddress],
) -> StoreResult<()> {
    // One statement per identifier, so a collision names exactly the identifier that collided.
    for (position, identifier) in identifiers.iter().enumerate() {
        sqlx::query(
            "INSERT INTO identity_identifiers \
             (identity_id, position, kind, value, trait_name, channel) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(identity_id)
        .bind(position as i32)
        .bind(identifier.kind.as_str())
        .bind(&identifier.value)
        .bind(&identifier.trait_name)
        .bind(identifier.channel.map(|channel| channel.as_str()))
        .execute(&mut *conn)
        .await
        .map_err(|error| map_identifier_insert_error(identifier, error))?;
    }
    for (position, address) in addresses.iter().enumerate() {
        sqlx::query(
            "INSERT INTO identity_verifiable_addresses \
             (id, identity_id, position, value, channel, trait_name, verified, verified_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(address.id)
        .bind(identity_id)
        .bind(position as i32)
        .bind(&address.value)
        .bind(address.channel.as_str())
        .bind(&address.trait_name)
        .bind(address.verified)
        .bind(address.verified_at)
        .execute(&mut *conn)
        .await
        .map_err(|error| map_error("insert address", error))?;
    }
    Ok(())
}

#[async_trait]
impl IdentityStore for PostgresStore {
    async fn insert_identity(
        &self,
        identity: &Identity,
        password_hash: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO identities (id, schema_id, traits, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(identity.id)
        .bind(&identity.schema_id)
        .bind(Json(&identity.traits))
        .bind(identity.state.as_str())
        .bind(identity.created_at)
        .bind(identity.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|error| map_error("insert identity", error))?;
        insert_children(
            &mut tx,
            identity.id,
            &identity.identifiers,
            &identity.verifiable_addresses,
        )
        .await?;
        if let Some(hash) = password_hash {
            sqlx::query(
                "INSERT INTO identity_credentials \
                 (identity_id, kind, password_hash, created_at, updated_at) \
                 VALUES ($1, 'password', $2, $3, $3)",
            )
            .bind(identity.id)
            .bind(hash)
            .bind(identity.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("insert password credential", error))?;
        }
        commit(tx).await
    }

    async fn update_identity(&self, identity: &Identity) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // Updating the identity row first locks it, so concurrent updates of one identity queue
        // up instead of interleaving their identifier and address rewrites.
        let updated = sqlx::query(
            "UPDATE identities SET schema_id = $2, traits = $3, state = $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(identity.id)
        .bind(&identity.schema_id)
        .bind(Json(&identity.traits))
        .bind(identity.state.as_str())
        .bind(identity.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|error| map_error("update identity", error))?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        let stored = sqlx::query(
            "SELECT id, channel, value, verified, verified_at FROM identity_verifiable_addresses \
             WHERE identity_id = $1",
        )
        .bind(identity.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(|error| map_error("load addresses", error))?;
        let stored = decode_all(&stored, stored_address_row, "decode address")?;
        let addresses = merge_addresses(&identity.verifiable_addresses, &stored);
        sqlx::query("DELETE FROM identity_identifiers WHERE identity_id = $1")
            .bind(identity.id)
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("delete identifiers", error))?;
        sqlx::query("DELETE FROM identity_verifiable_addresses WHERE identity_id = $1")
            .bind(identity.id)
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("delete addresses", error))?;
        insert_children(&mut tx, identity.id, &identity.identifiers, &addresses).await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn get_identity(&self, id: Uuid) -> StoreResult<Option<Identity>> {
        let row = sqlx::query(concat!(identity_select!(), "WHERE i.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get identity", error))?;
        row.as_ref().map(identity_from).transpose()
    }

    async fn find_by_identifier(
        &self,
        kind: CredentialKind,
        value: &str,
    ) -> StoreResult<Option<Identity>> {
        let row = sqlx::query(concat!(
            identity_select!(),
            "WHERE i.id = (SELECT identity_id FROM identity_identifiers \
                           WHERE kind = $1 AND value = $2)"
        ))
        .bind(kind.as_str())
        .bind(value)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| map_error("find identity by identifier", error))?;
        row.as_ref().map(identity_from).transpose()
    }

    async fn password_hash(&self, identity_id: Uuid) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT password_hash FROM identity_credentials \
             WHERE identity_id = $1 AND kind = 'password'",
        )
        .bind(identity_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| map_error("get password hash", error))?;
        row.map(|row| row.try_get("password_hash"))
            .transpose()
            .map_err(|error| map_error("decode password hash", error))
    }

    async fn list_identities(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Identity>> {
        let rows = sqlx::query(concat!(
            identity_select!(),
            "WHERE ($1::uuid IS NULL OR i.id > $1) ORDER BY i.id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|error| map_error("list identities", error))?;
        rows.iter().map(identity_from).collect()
    }

    async fn delete_identity(&self, id: Uuid) -> StoreResult<bool> {
        // Credentials, identifiers, addresses and sessions go with it (ON DELETE CASCADE).
        let deleted = sqlx::query("DELETE FROM identities WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|error| map_error("delete identity", error))?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn mark_address_verified(
        &self,
        identity_id: Uuid,
        value: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // The first verification time is kept when an address is verified again.
        let updated = sqlx::query(
            "UPDATE identity_verifiable_addresses \
             SET verified = true, verified_at = COALESCE(verified_at, $3) \
             WHERE identity_id = $1 AND value = $2",
        )
        .bind(identity_id)
        .bind(value)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(|error| map_error("mark address verified", error))?;
        Ok(updated.rows_affected() > 0)
    }
}

fn stored_address_row(row: &PgRow) -> Result<StoredAddress, sqlx::Error> {
    Ok(StoredAddress {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        value: row.try_get("value")?,
        verified: row.try_get("verified")?,
        verified_at: row.try_get("verified_at")?,
    })
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn insert_session(&self, session: &Session) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id, identity_id, token_hash, aal, methods, issued_at, \
             expires_at, authenticated_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(session.id)
        .bind(session.identity_id)
        .bind(&session.token_hash)
        .bind(session.aal.as_str())
        .bind(Json(&session.methods))
        .bind(session.issued_at)
        .bind(session.expires_at)
        .bind(session.authenticated_at)
        .bind(session.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(|error| map_error("insert session", error))?;
        Ok(())
    }

    async fn find_by_token_hash(&self, token_hash: &[u8]) -> StoreResult<Option<Session>> {
        let row = sqlx::query(concat!(session_select!(), "WHERE token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("find session by token", error))?;
        decode_session(row)
    }

    async fn find_with_identity(
        &self,
        token_hash: &[u8],
    ) -> StoreResult<Option<(Session, Identity)>> {
        let row = sqlx::query(concat!(
            "SELECT s.id AS session_id, s.token_hash, s.aal, s.methods, s.issued_at, \
             s.expires_at, s.authenticated_at, s.revoked_at, ",
            identity_columns!(),
            "FROM sessions s JOIN identities i ON i.id = s.identity_id WHERE s.token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| map_error("find session and identity by token", error))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let identity = identity_from(&row)?;
        let session = joined_session_row(&row, identity.id)
            .map_err(|error| map_error("decode session", error))?
            .into_domain()?;
        Ok(Some((session, identity)))
    }

    async fn get_session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        let row = sqlx::query(concat!(session_select!(), "WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get session", error))?;
        decode_session(row)
    }

    async fn list_sessions(
        &self,
        identity_id: Uuid,
        include_inactive: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(concat!(
            session_select!(),
            "WHERE identity_id = $1 AND ($2 OR (revoked_at IS NULL AND expires_at > $3)) \
             ORDER BY issued_at DESC, id DESC"
        ))
        .bind(identity_id)
        .bind(include_inactive)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| map_error("list sessions", error))?;
        decode_all(&rows, session_row, "decode session")?
            .into_iter()
            .map(SessionRow::into_domain)
            .collect()
    }

    async fn revoke_session(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        let updated =
            sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(at)
                .execute(&self.pool)
                .await
                .map_err(|error| map_error("revoke session", error))?;
        Ok(updated.rows_affected() == 1)
    }

    async fn revoke_identity_sessions(
        &self,
        identity_id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<u32> {
        let updated = sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE identity_id = $1 AND revoked_at IS NULL",
        )
        .bind(identity_id)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(|error| map_error("revoke identity sessions", error))?;
        Ok(u32::try_from(updated.rows_affected()).unwrap_or(u32::MAX))
    }

    async fn upgrade_session(
        &self,
        id: Uuid,
        expected_token_hash: &[u8],
        upgrade: &SessionUpgrade,
    ) -> StoreResult<Option<Upgraded>> {
        self.upgrade(id, expected_token_hash, upgrade, true).await
    }

    async fn upgrade_session_without_identity(
        &self,
        id: Uuid,
        expected_token_hash: &[u8],
        upgrade: &SessionUpgrade,
    ) -> StoreResult<Option<Upgraded>> {
        self.upgrade(id, expected_token_hash, upgrade, false).await
    }
}

impl PostgresStore {
    async fn upgrade(
        &self,
        id: Uuid,
        expected_token_hash: &[u8],
        upgrade: &SessionUpgrade,
        read_identity: bool,
    ) -> StoreResult<Option<Upgraded>> {
        upgrade.check_audited()?;
        let wanted = UpgradeWanted {
            id,
            expected_token_hash: expected_token_hash.to_vec(),
            upgrade: upgrade.clone(),
            read_identity,
        };
        match self.writes.submit(DurableWrite::Upgrade(wanted)).await? {
            Written::Upgraded(upgraded) => Ok(upgraded),
            Written::Enqueued => Err(answered_as_the_other_kind("an upgrade")),
        }
    }
}

/// A session upgrade waiting to be written; see `batch` for why several callers' are joined.
struct UpgradeWanted {
    id: Uuid,
    expected_token_hash: Vec<u8>,
    upgrade: SessionUpgrade,
    /// Whether the statement reads the identity too. Its identifiers and addresses are two
    /// aggregating subqueries, about a fifth of a batch's execution time (0.72 against 0.58 ms
    /// without them, docs/performance.md), and a caller that holds the identity already has no
    /// use for them.
    read_identity: bool,
}

/// A durable write on the step-up's path, waiting to be committed; see `batch` for why several
/// callers' are joined, and [`DurableWrites::many`] for why both kinds go in one statement.
enum DurableWrite {
    /// A message and its `code.sent` event, written together.
    Enqueue(OutboxMessage, AuditEvent),
    Upgrade(UpgradeWanted),
}

/// What a [`DurableWrite`] answers, of its own kind.
#[allow(
    clippy::large_enum_variant,
    reason = "an answer is moved once, through a channel; boxing would allocate per upgrade"
)]
enum Written {
    Enqueued,
    Upgraded(Option<Upgraded>),
}

/// A [`Written`] of the other kind than its write: a bug, reported rather than unwound.
fn answered_as_the_other_kind(write: &str) -> StoreError {
    StoreError::Internal(format!("{write} was answered as the other kind of write"))
}

struct DurableWrites {
    pool: sqlx::PgPool,
}

impl BatchWrite for DurableWrites {
    type Item = DurableWrite;
    type Output = Written;

    /// Queued codes linger while they come often (see [`ENQUEUE_LINGER`]); upgrades never do,
    /// and take the lingering codes along.
    fn lingers(&self, write: &DurableWrite) -> bool {
        matches!(write, DurableWrite::Enqueue(..))
    }

    async fn one(&self, write: &DurableWrite) -> StoreResult<Written> {
        match write {
            DurableWrite::Enqueue(message, audit) => {
                enqueue_alone(&self.pool, message, audit).await?;
                Ok(Written::Enqueued)
            }
            DurableWrite::Upgrade(wanted) => {
                Ok(Written::Upgraded(upgrade_alone(&self.pool, wanted).await?))
            }
        }
    }

    /// The single statements of [`enqueue_alone`] and [`upgrade_alone`] for many writes of
    /// either kind, in one statement: one round trip and one commit, so one wait for the WAL's
    /// flush, for queued codes and upgrades that waited at the same time. Each durable commit on
    /// the step-up's path waits for that flush, one flush at a time, and most of a write
    /// statement's time under load was spent waiting for it (docs/performance.md, "After the
    /// nineteenth pass"). A batch of one kind binds empty arrays for the other.
    ///
    /// Each wanted upgrade carries its position, and its audit events carry the position they
    /// belong to, so they are written exactly when their own upgrade is. Two upgrades of one
    /// session in a batch update it once: the other finds nothing, as it would have after the
    /// first one's commit. The sessions are listed in id order, so two batches lock the rows they
    /// share in the same order.
    ///
    /// `LIMIT $17` (the number of upgrades, so it drops nothing) is for the planner. A cached
    /// generic plan cannot see how many rows `unnest` gives and guesses ten; against a sessions
    /// table still small when the plan was made (a fresh installation, the bench's 256 sessions)
    /// a hash join over a sequential scan looked cheaper than ten index lookups, and the plan
    /// stayed while the table grew with dead versions of its rows, which every batch then read.
    /// With an unknown limit the planner reckons on one row, and looks sessions up by index.
    ///
    /// The answer has a row even when nothing was upgraded, with the counts of messages and
    /// events queued; the upgraded sessions' rows carry the same counts.
    async fn many(&self, writes: &[DurableWrite]) -> StoreResult<Vec<StoreResult<Written>>> {
        let mut enqueues = Vec::new();
        let mut upgrades = Vec::new();
        for write in writes {
            match write {
                DurableWrite::Enqueue(message, audit) => enqueues.push((message, audit)),
                DurableWrite::Upgrade(wanted) => upgrades.push(wanted),
            }
        }
        let send_counts = enqueues
            .iter()
            .map(|(message, _)| counter(i64::from(message.send_count), "send count"))
            .collect::<StoreResult<Vec<_>>>()?;
        let position = |index: usize| i32::try_from(index).unwrap_or(i32::MAX);
        let mut order: Vec<usize> = (0..upgrades.len()).collect();
        order.sort_by_key(|index| upgrades[*index].id);
        let sorted: Vec<&UpgradeWanted> = order.iter().map(|index| upgrades[*index]).collect();
        let audit_positions = upgrades
            .iter()
            .enumerate()
            .flat_map(|(index, wanted)| wanted.upgrade.audit.iter().map(move |_| position(index)))
            .collect::<Vec<_>>();
        let query = sqlx::query(concat!(
            "WITH wanted AS ( \
                 SELECT * FROM unnest($1::int[], $2::uuid[], $3::bytea[], $4::bytea[], \
                                      $5::text[], $6::jsonb[], $7::timestamptz[], $8::text[], \
                                      $18::bool[]) \
                 AS w(position, id, expected_token_hash, token_hash, aal, methods, \
                      authenticated_at, verified_address, read_identity) \
                 LIMIT $17), \
             upgraded AS ( \
                 UPDATE sessions s SET token_hash = w.token_hash, aal = w.aal, \
                                       methods = w.methods, \
                                       authenticated_at = w.authenticated_at \
                 FROM wanted w \
                 WHERE s.id = w.id AND s.token_hash = w.expected_token_hash \
                   AND s.revoked_at IS NULL \
                 RETURNING s.*, w.position, w.verified_address, w.read_identity), \
             verified AS ( \
                 UPDATE identity_verifiable_addresses a \
                 SET verified = true, verified_at = COALESCE(a.verified_at, u.authenticated_at) \
                 FROM upgraded u \
                 WHERE a.value = u.verified_address AND a.identity_id = u.identity_id \
                   AND (NOT a.verified OR a.verified_at IS NULL)), \
             audited AS ( \
                 INSERT INTO audit_events \
                 (id, event, identity_id, flow_id, address_hash, client_ip, occurred_at) \
                 SELECT e.id, e.event, e.identity_id, e.flow_id, e.address_hash, e.client_ip, \
                        e.occurred_at \
                 FROM upgraded u JOIN \
                     unnest($9::int[], $10::uuid[], $11::text[], $12::uuid[], $13::uuid[], \
                            $14::text[], $15::text[], $16::timestamptz[]) \
                     AS e(position, id, event, identity_id, flow_id, address_hash, client_ip, \
                          occurred_at) \
                 ON e.position = u.position), \
             queued AS ( \
                 INSERT INTO courier_messages (",
            message_columns!(),
            ") SELECT * FROM unnest($19::uuid[], $20::text[], $21::text[], $22::text[], \
                                   $23::text[], $24::bytea[], $25::uuid[], $26::text[], \
                                   $27::int[], $28::timestamptz[], $29::timestamptz[], \
                                   $30::timestamptz[], $31::timestamptz[], $32::timestamptz[]) \
                 RETURNING id), \
             queued_events AS ( \
                 INSERT INTO audit_events \
                 (id, event, identity_id, flow_id, address_hash, client_ip, occurred_at) \
                 SELECT * FROM unnest($33::uuid[], $34::text[], $35::uuid[], $36::uuid[], \
                                      $37::text[], $38::text[], $39::timestamptz[]) \
                 RETURNING id) \
             SELECT (SELECT count(*) FROM queued) AS messages_queued, \
                    (SELECT count(*) FROM queued_events) AS events_queued, \
                    s.position, s.id AS session_id, s.identity_id AS session_identity_id, \
                    s.token_hash, s.issued_at, s.expires_at, s.authenticated_at, \
                    s.revoked_at, i.id IS NOT NULL AS identity_found, ",
            identity_columns!(),
            "FROM (VALUES (true)) AS always(answer) LEFT JOIN upgraded s ON true \
             LEFT JOIN identities i ON i.id = s.identity_id AND s.read_identity"
        ))
        .bind(column(&order, |index| position(*index)))
        .bind(column(&sorted, |wanted| wanted.id))
        .bind(column(&sorted, |wanted| {
            wanted.expected_token_hash.as_slice()
        }))
        .bind(column(&sorted, |wanted| {
            wanted.upgrade.new_token_hash.as_slice()
        }))
        .bind(column(&sorted, |wanted| wanted.upgrade.aal.as_str()))
        .bind(column(&sorted, |wanted| Json(&wanted.upgrade.methods)))
        .bind(column(&sorted, |wanted| wanted.upgrade.authenticated_at))
        .bind(column(&sorted, |wanted| {
            wanted.upgrade.verified_address.as_deref()
        }))
        .bind(audit_positions);
        let upgrade_audits = upgrades
            .iter()
            .flat_map(|wanted| wanted.upgrade.audit.iter());
        let query = bind_audits(query, upgrade_audits)
            .bind(i64::try_from(upgrades.len()).unwrap_or(i64::MAX))
            .bind(column(&sorted, |wanted| wanted.read_identity))
            .bind(column(&enqueues, |(message, _)| message.id))
            .bind(column(&enqueues, |(message, _)| message.channel.as_str()))
            .bind(column(&enqueues, |(message, _)| message.recipient.as_str()))
            .bind(column(&enqueues, |(message, _)| {
                message.template_type.as_str()
            }))
            .bind(column(&enqueues, |(message, _)| message.locale.as_str()))
            .bind(column(&enqueues, |(message, _)| {
                message.sealed_data.as_slice()
            }))
            .bind(column(&enqueues, |(message, _)| message.identity_id))
            .bind(column(&enqueues, |(message, _)| message.status.as_str()))
            .bind(send_counts)
            .bind(column(&enqueues, |(message, _)| message.not_after))
            .bind(column(&enqueues, |(message, _)| message.next_attempt_at))
            .bind(column(&enqueues, |(message, _)| message.lease_until))
            .bind(column(&enqueues, |(message, _)| message.created_at))
            .bind(column(&enqueues, |(message, _)| message.updated_at));
        let rows = bind_audits(query, enqueues.iter().map(|(_, audit)| *audit))
            .fetch_all(&self.pool)
            .await
            .map_err(|error| map_error("write a batch of codes and upgrades", error))?;
        // Committed: from here on an answer that cannot be read fails its own caller, and is
        // never a reason to write again.
        let enqueued = enqueued_answer(&rows, enqueues.len());
        let mut upgraded = upgraded_answers(&rows, &upgrades).into_iter();
        Ok(writes
            .iter()
            .map(|write| match write {
                DurableWrite::Enqueue(..) => enqueued.clone().map(|()| Written::Enqueued),
                DurableWrite::Upgrade(_) => upgraded
                    .next()
                    .unwrap_or_else(|| {
                        Err(StoreError::Internal("an upgrade left unanswered".into()))
                    })
                    .map(Written::Upgraded),
            })
            .collect())
    }
}

/// Whether a batch's statement queued every one of its `wanted` messages and their events, from
/// the counts on its answer's rows.
fn enqueued_answer(rows: &[PgRow], wanted: usize) -> StoreResult<()> {
    let counts = rows.first().map(|row| {
        Ok::<_, sqlx::Error>((
            row.try_get::<i64, _>("messages_queued")?,
            row.try_get::<i64, _>("events_queued")?,
        ))
    });
    match counts {
        Some(Ok((messages, events)))
            if usize::try_from(messages) == Ok(wanted) && usize::try_from(events) == Ok(wanted) =>
        {
            Ok(())
        }
        Some(Ok((messages, events))) => Err(StoreError::Internal(format!(
            "{messages} messages and {events} audit events queued for {wanted} codes"
        ))),
        Some(Err(error)) => Err(map_error("decode queued counts", error)),
        None => Err(corrupt("a batch's answer without its row of counts")),
    }
}

/// Each wanted upgrade's answer, in their order, from a batch statement's rows: a row for each
/// session upgraded, found by its position, and none for an upgrade that lost its race.
fn upgraded_answers(
    rows: &[PgRow],
    wanted: &[&UpgradeWanted],
) -> Vec<StoreResult<Option<Upgraded>>> {
    let mut answers: Vec<Option<StoreResult<Upgraded>>> = wanted.iter().map(|_| None).collect();
    let mut unplaced = None;
    for row in rows {
        let index = match row.try_get::<Option<i32>, _>("position") {
            // The row that only carries the counts: nothing was upgraded.
            Ok(None) => continue,
            position => position
                .ok()
                .flatten()
                .and_then(|position| usize::try_from(position).ok())
                .filter(|index| *index < wanted.len()),
        };
        match index {
            Some(index) => answers[index] = Some(upgraded_from(row, &wanted[index].upgrade)),
            None => unplaced = Some(corrupt("an upgraded session without its position")),
        }
    }
    answers
        .into_iter()
        .map(|answer| match (answer, &unplaced) {
            (Some(answer), _) => answer.map(Some),
            // No row: this upgrade lost its race, unless a row could not be placed, which
            // may have been its own.
            (None, None) => Ok(None),
            (None, Some(error)) => Err(error.clone()),
        })
        .collect()
}

/// One upgrade in a statement of its own: what a lone upgrade runs, and each of a failed
/// batch's upgrades again.
async fn upgrade_alone(
    pool: &sqlx::PgPool,
    wanted: &UpgradeWanted,
) -> StoreResult<Option<Upgraded>> {
    let upgrade = &wanted.upgrade;
    // One guarded statement: Postgres re-checks the WHERE clause after waiting for a
    // concurrent writer's row lock, so only the first of several upgrades matches. The
    // address and audit writes hang off its RETURNING, so they happen exactly when it does,
    // in the same commit. An address already verified is left alone: rewriting it on every
    // step-up cost a row version and its WAL record for nothing. It also reads the identity
    // when asked to, so the new token's first lookup needs no statement of its own (see
    // `session_cache`).
    let query = sqlx::query(concat!(
        "WITH upgraded AS ( \
             UPDATE sessions SET token_hash = $3, aal = $4, methods = $5, \
                                 authenticated_at = $6 \
             WHERE id = $1 AND token_hash = $2 AND revoked_at IS NULL \
             RETURNING *), \
         verified AS ( \
             UPDATE identity_verifiable_addresses \
             SET verified = true, verified_at = COALESCE(verified_at, $6) \
             WHERE value = $7 AND identity_id IN (SELECT identity_id FROM upgraded) \
               AND (NOT verified OR verified_at IS NULL)), \
         audited AS ( \
             INSERT INTO audit_events \
             (id, event, identity_id, flow_id, address_hash, client_ip, occurred_at) \
             SELECT e.* FROM upgraded, \
                 unnest($8::uuid[], $9::text[], $10::uuid[], $11::uuid[], $12::text[], \
                        $13::text[], $14::timestamptz[]) \
                 AS e(id, event, identity_id, flow_id, address_hash, client_ip, occurred_at)) \
         SELECT s.id AS session_id, s.identity_id AS session_identity_id, s.token_hash, \
                s.issued_at, s.expires_at, s.authenticated_at, s.revoked_at, \
                i.id IS NOT NULL AS identity_found, ",
        identity_columns!(),
        "FROM upgraded s LEFT JOIN identities i ON i.id = s.identity_id AND $15"
    ))
    .bind(wanted.id)
    .bind(&wanted.expected_token_hash)
    .bind(&upgrade.new_token_hash)
    .bind(upgrade.aal.as_str())
    .bind(Json(&upgrade.methods))
    .bind(upgrade.authenticated_at)
    .bind(&upgrade.verified_address);
    let row = bind_audits(query, upgrade.audit.iter())
        .bind(wanted.read_identity)
        .fetch_optional(pool)
        .await
        .map_err(|error| map_error("upgrade session", error))?;
    row.map(|row| upgraded_from(&row, upgrade)).transpose()
}

/// The session and identity a successful upgrade statement returned in `row`. The session's
/// methods are the ones the statement wrote, taken from `upgrade` rather than read back: at eight
/// second factors they are 1.6 KiB of JSON, which Postgres would print and the server parse
/// again on every step-up.
fn upgraded_from(row: &PgRow, upgrade: &SessionUpgrade) -> StoreResult<Upgraded> {
    let decode = || -> Result<_, sqlx::Error> {
        let session = Session {
            id: row.try_get("session_id")?,
            identity_id: row.try_get("session_identity_id")?,
            token_hash: row.try_get("token_hash")?,
            aal: upgrade.aal,
            methods: upgrade.methods.clone(),
            issued_at: row.try_get("issued_at")?,
            expires_at: row.try_get("expires_at")?,
            authenticated_at: row.try_get("authenticated_at")?,
            revoked_at: row.try_get("revoked_at")?,
        };
        let found: bool = row.try_get("identity_found")?;
        Ok((session, found))
    };
    let (session, identity_found) =
        decode().map_err(|error| map_error("decode upgraded session", error))?;
    let identity = if identity_found {
        // The statement read the addresses from the snapshot it started with, before its
        // own `verified` part ran.
        let identity = identity_from(row)?;
        Some(upgrade.verified_in(identity))
    } else {
        None
    };
    Ok(Upgraded { session, identity })
}

fn decode_session(row: Option<PgRow>) -> StoreResult<Option<Session>> {
    row.map(|row| {
        session_row(&row)
            .map_err(|error| map_error("decode session", error))?
            .into_domain()
    })
    .transpose()
}

fn message_row(row: &PgRow) -> Result<MessageRow, sqlx::Error> {
    Ok(MessageRow {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        recipient: row.try_get("recipient")?,
        template_type: row.try_get("template_type")?,
        locale: row.try_get("locale")?,
        sealed_data: row.try_get("sealed_data")?,
        identity_id: row.try_get("identity_id")?,
        status: row.try_get("status")?,
        send_count: i64::from(row.try_get::<i32, _>("send_count")?),
        not_after: row.try_get("not_after")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        lease_until: row.try_get("lease_until")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn decode_messages(rows: &[PgRow]) -> StoreResult<Vec<OutboxMessage>> {
    decode_all(rows, message_row, "decode message")?
        .into_iter()
        .map(MessageRow::into_domain)
        .collect()
}

fn failure_row(row: &PgRow) -> Result<FailureRow, sqlx::Error> {
    Ok(FailureRow {
        window_started_at: row.try_get("window_started_at")?,
        window_ends_at: row.try_get("window_ends_at")?,
        failures: i64::from(row.try_get::<i32, _>("failures")?),
        lockouts: i64::from(row.try_get::<i32, _>("lockouts")?),
        locked_until: row.try_get("locked_until")?,
    })
}

fn counter(value: i64, what: &'static str) -> StoreResult<i32> {
    i32::try_from(value).map_err(|_| StoreError::Internal(format!("{what} out of range")))
}

/// One column of a multi-row statement, for `unnest`: `value` of every row, in order.
fn column<'a, Row, Value>(rows: &'a [Row], value: impl Fn(&'a Row) -> Value) -> Vec<Value> {
    rows.iter().map(value).collect()
}

/// Binds an audit event's seven columns, in `audit_events` column order, as the next parameters:
/// the statements that write one alongside something else list the columns the same way.
fn bind_audit<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    event: &'q AuditEvent,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(event.id)
        .bind(&event.event)
        .bind(event.identity_id)
        .bind(event.flow_id)
        .bind(&event.address_hash)
        .bind(&event.client_ip)
        .bind(event.occurred_at)
}

/// Binds audit events as seven arrays, one per `audit_events` column in column order, for a
/// statement that writes them with `unnest`.
fn bind_audits<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    events: impl Iterator<Item = &'q AuditEvent> + Clone,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let events = || events.clone();
    query
        .bind(events().map(|e| e.id).collect::<Vec<_>>())
        .bind(events().map(|e| e.event.as_str()).collect::<Vec<_>>())
        .bind(events().map(|e| e.identity_id).collect::<Vec<_>>())
        .bind(events().map(|e| e.flow_id).collect::<Vec<_>>())
        .bind(
            events()
                .map(|e| e.address_hash.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(events().map(|e| e.client_ip.as_deref()).collect::<Vec<_>>())
        .bind(events().map(|e| e.occurred_at).collect::<Vec<_>>())
}

async fn insert_audit(conn: &mut PgConnection, event: &AuditEvent) -> StoreResult<()> {
    bind_audit(
        sqlx::query(
            "INSERT INTO audit_events \
             (id, event, identity_id, flow_id, address_hash, client_ip, occurred_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        ),
        event,
    )
    .execute(conn)
    .await
    .map_err(|error| map_error("insert audit event", error))?;
    Ok(())
}

#[async_trait]
impl FailureBudgetStore for PostgresStore {
    async fn failure_state(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<FailureState> {
        let row = sqlx::query("SELECT * FROM identity_code_failures WHERE identity_id = $1")
            .bind(identity_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get failure state", error))?;
        match row {
            Some(row) => failure_row(&row)
                .map_err(|error| map_error("decode failure state", error))?
                .state_at(now),
            None => Ok(FailureState {
                failures: 0,
                locked_until: None,
                recorded: false,
            }),
        }
    }

    async fn record_failure(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
        budget: u32,
        window: Duration,
    ) -> StoreResult<FailureState> {
        let mut tx = self.begin().await?;
        // The row is read under FOR UPDATE, so concurrent failures of one identity queue up and
        // each sees the count the previous one wrote. The empty insert first gives a new
        // identity a row to lock (a lock on a missing row would lock nothing).
        sqlx::query(
            "INSERT INTO identity_code_failures \
             (identity_id, window_started_at, window_ends_at, failures, lockouts) \
             VALUES ($1, $2, $2, 0, 0) ON CONFLICT (identity_id) DO NOTHING",
        )
        .bind(identity_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|error| map_error("create failure state", error))?;
        let row =
            sqlx::query("SELECT * FROM identity_code_failures WHERE identity_id = $1 FOR UPDATE")
                .bind(identity_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|error| map_error("lock failure state", error))?;
        let row = failure_row(&row).map_err(|error| map_error("decode failure state", error))?;
        let next = count_failure(Some(row), now, budget, window)?;
        sqlx::query(
            "UPDATE identity_code_failures SET window_started_at = $2, window_ends_at = $3, \
             failures = $4, lockouts = $5, locked_until = $6 WHERE identity_id = $1",
        )
        .bind(identity_id)
        .bind(next.window_started_at)
        .bind(next.window_ends_at)
        .bind(counter(next.failures, "failure count")?)
        .bind(counter(next.lockouts, "lockout count")?)
        .bind(next.locked_until)
        .execute(&mut *tx)
        .await
        .map_err(|error| map_error("record failure", error))?;
        commit(tx).await?;
        next.state_at(now)
    }

    async fn reset_failures(&self, identity_id: Uuid) -> StoreResult<()> {
        sqlx::query("DELETE FROM identity_code_failures WHERE identity_id = $1")
            .bind(identity_id)
            .execute(&self.pool)
            .await
            .map_err(|error| map_error("reset failures", error))?;
        Ok(())
    }
}

/// One message and its `code.sent` event in a statement of their own: what a lone enqueue
/// runs, and each of a failed batch's enqueues again.
async fn enqueue_alone(
    pool: &sqlx::PgPool,
    message: &OutboxMessage,
    audit: &AuditEvent,
) -> StoreResult<()> {
    // One statement, so one round trip and one commit: the message and its audit event
    // exist together or not at all.
    let query = sqlx::query(concat!(
        "WITH queued AS (INSERT INTO courier_messages (",
        message_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         RETURNING id) \
         INSERT INTO audit_events \
         (id, event, identity_id, flow_id, address_hash, client_ip, occurred_at) \
         SELECT $15, $16, $17, $18, $19, $20, $21 FROM queued"
    ))
    .bind(message.id)
    .bind(message.channel.as_str())
    .bind(&message.recipient)
    .bind(&message.template_type)
    .bind(&message.locale)
    .bind(&message.sealed_data)
    .bind(message.identity_id)
    .bind(message.status.as_str())
    .bind(counter(i64::from(message.send_count), "send count")?)
    .bind(message.not_after)
    .bind(message.next_attempt_at)
    .bind(message.lease_until)
    .bind(message.created_at)
    .bind(message.updated_at);
    bind_audit(query, audit)
        .execute(pool)
        .await
        .map_err(|error| map_error("enqueue message", error))?;
    Ok(())
}

#[async_trait]
impl Outbox for PostgresStore {
    async fn enqueue(&self, message: &OutboxMessage, audit: &AuditEvent) -> StoreResult<()> {
        let write = DurableWrite::Enqueue(message.clone(), audit.clone());
        match self.writes.submit(write).await? {
            Written::Enqueued => Ok(()),
            Written::Upgraded(_) => Err(answered_as_the_other_kind("a queued code")),
        }
    }

    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|error| map_error("acquire connection", error))?;
        insert_audit(&mut conn, event).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxMessage>> {
        // SKIP LOCKED: a worker passes over rows another worker is claiming right now instead
        // of waiting for them; a row it locks is re-checked against its conditions first, so no
        // row is claimed twice. Queued messages and expired leases are read apart, each by a
        // plain scan of its own partial index (migration 0004 says why not one OR), expired
        // leases first since they have waited longest; rows locked beyond the limit are released
        // unchanged at commit.
        let rows = sqlx::query(concat!(
            "WITH expired AS ( \
                 SELECT id FROM courier_messages \
                 WHERE status = 'processing' AND lease_until <= $1 \
                 ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED), \
             queued AS ( \
                 SELECT id FROM courier_messages \
                 WHERE status = 'queued' AND next_attempt_at <= $1 \
                 ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE courier_messages SET status = 'processing', lease_until = $2, \
             updated_at = $1 \
             WHERE id IN (SELECT id FROM (SELECT id FROM expired UNION ALL \
                                          SELECT id FROM queued) AS due LIMIT $3) \
             RETURNING ",
            message_columns!()
        ))
        .bind(now)
        .bind(lease_end(now, lease))
        .bind(i64::from(limit))
        .fetch_all(&self.courier_pool)
        .await
        .map_err(|error| map_error("claim due messages", error))?;
        let mut messages = decode_messages(&rows)?;
        messages.sort_by_key(|message| (message.next_attempt_at, message.id));
        Ok(messages)
    }

    async fn finish_attempts(
        &self,
        finished: &[(DeliveryAttempt, AttemptResult)],
    ) -> StoreResult<()> {
        if finished.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(finished.len());
        let mut statuses = Vec::with_capacity(finished.len());
        let mut next_attempts = Vec::with_capacity(finished.len());
        let mut attempted = Vec::with_capacity(finished.len());
        let mut gateways = Vec::with_capacity(finished.len());
        let mut succeeded = Vec::with_capacity(finished.len());
        let mut errors = Vec::with_capacity(finished.len());
        let mut provider_ids = Vec::with_capacity(finished.len());
        for (attempt, result) in finished {
            let (status, next_attempt_at) = after_attempt(*result);
            ids.push(attempt.message_id);
            statuses.push(status.as_str());
            next_attempts.push(next_attempt_at);
            attempted.push(attempt.attempted_at);
            gateways.push(attempt.gateway.as_str());
            succeeded.push(attempt.succeeded);
            errors.push(attempt.error.as_deref());
            provider_ids.push(attempt.provider_message_id.as_deref());
        }
        // One statement for the whole round: the attempt records and the messages' new states
        // commit together. `LIMIT $9` (the round's length, so it drops nothing) is for the
        // planner, as in the upgrade batch: a generic plan made while the outbox was small
        // joined by scanning all of it, and Postgres kept it until the table was next analyzed,
        // so every round read the whole outbox as it grew. With an unknown limit the planner
        // reckons on few rows and looks messages up by key. The statement used to be planned
        // afresh each round instead, 0.14-0.15 ms of Postgres's time per round
        // (docs/performance.md, "After the twentieth pass").
        sqlx::query(
            "WITH done AS ( \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], \
                                      $4::timestamptz[], $5::text[], $6::bool[], $7::text[], \
                                      $8::text[]) \
                 AS d(message_id, status, next_attempt_at, attempted_at, gateway, succeeded, \
                      error, provider_message_id) \
                 LIMIT $9), \
             recorded AS ( \
                 INSERT INTO courier_message_attempts \
                 (message_id, attempted_at, gateway, succeeded, error, provider_message_id) \
                 SELECT message_id, attempted_at, gateway, succeeded, error, provider_message_id \
                 FROM done) \
             UPDATE courier_messages m SET status = d.status, send_count = m.send_count + 1, \
             next_attempt_at = COALESCE(d.next_attempt_at, m.next_attempt_at), \
             lease_until = NULL, updated_at = d.attempted_at \
             FROM done d WHERE m.id = d.message_id",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&next_attempts)
        .bind(&attempted)
        .bind(&gateways)
        .bind(&succeeded)
        .bind(&errors)
        .bind(&provider_ids)
        .bind(i64::try_from(finished.len()).unwrap_or(i64::MAX))
        .execute(&self.courier_pool)
        .await
        .map_err(|error| map_error("finish delivery attempts", error))?;
        Ok(())
    }

    async fn abandon(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE courier_messages SET status = 'abandoned', lease_until = NULL, \
             updated_at = $2 WHERE id = $1 AND status IN ('queued', 'processing')",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|error| map_error("abandon message", error))?;
        Ok(())
    }

    async fn get_message(&self, id: Uuid) -> StoreResult<Option<OutboxMessage>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM courier_messages WHERE id = $1"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| map_error("get message", error))?;
        Ok(decode_messages(&rows)?.into_iter().next())
    }

    async fn attempts(&self, id: Uuid) -> StoreResult<Vec<DeliveryAttempt>> {
        let rows = sqlx::query(
            "SELECT message_id, attempted_at, gateway, succeeded, error, provider_message_id \
             FROM courier_message_attempts WHERE message_id = $1 ORDER BY attempted_at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| map_error("list delivery attempts", error))?;
        decode_all(&rows, attempt_row, "decode delivery attempt")
    }

    async fn list_messages(
        &self,
        status: Option<MessageStatus>,
        recipient: Option<&str>,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM courier_messages \
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR recipient = $2) \
               AND ($3::uuid IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(status.map(MessageStatus::as_str))
        .bind(recipient)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|error| map_error("list messages", error))?;
        decode_messages(&rows)
    }

    async fn audit_events(&self, identity_id: Uuid) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT id, event, identity_id, flow_id, address_hash, client_ip, occurred_at \
             FROM audit_events WHERE identity_id = $1 ORDER BY occurred_at, id",
        )
        .bind(identity_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| map_error("list audit events", error))?;
        decode_all(&rows, audit_row, "decode audit event")
    }
}

fn attempt_row(row: &PgRow) -> Result<DeliveryAttempt, sqlx::Error> {
    Ok(DeliveryAttempt {
        message_id: row.try_get("message_id")?,
        attempted_at: row.try_get("attempted_at")?,
        gateway: row.try_get("gateway")?,
        succeeded: row.try_get("succeeded")?,
        error: row.try_get("error")?,
        provider_message_id: row.try_get("provider_message_id")?,
    })
}

fn audit_row(row: &PgRow) -> Result<AuditEvent, sqlx::Error> {
    Ok(AuditEvent {
        id: row.try_get("id")?,
        event: row.try_get("event")?,
        identity_id: row.try_get("identity_id")?,
        flow_id: row.try_get("flow_id")?,
        address_hash: row.try_get("address_hash")?,
        client_ip: row.try_get("client_ip")?,
        occurred_at: row.try_get("occurred_at")?,
    })
}

fn config_row(row: &sqlx::postgres::PgRow) -> StoreResult<ConfigVersion> {
    let version: i64 = row
        .try_get("version")
        .map_err(|error| map_error("read config version", error))?;
    let source: String = row
        .try_get("source")
        .map_err(|error| map_error("read config version", error))?;
    Ok(ConfigVersion {
        version: u64::try_from(version).map_err(|_| corrupt("negative config version"))?,
        document: row
            .try_get("document")
            .map_err(|error| map_error("read config version", error))?,
        etag: row
            .try_get("etag")
            .map_err(|error| map_error("read config version", error))?,
        source: ConfigSource::parse(&source).ok_or_else(|| corrupt("unknown config source"))?,
        created_at: row
            .try_get("created_at")
            .map_err(|error| map_error("read config version", error))?,
    })
}

#[async_trait]
impl ConfigVersionStore for PostgresStore {
    async fn latest_config(&self) -> StoreResult<Option<ConfigVersion>> {
        sqlx::query("SELECT * FROM config_versions ORDER BY version DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get latest config", error))?
            .map(|row| config_row(&row))
            .transpose()
    }

    async fn latest_config_version(&self) -> StoreResult<Option<u64>> {
        let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM config_versions")
            .fetch_one(&self.pool)
            .await
            .map_err(|error| map_error("get latest config version", error))?;
        Ok(version.and_then(|version| u64::try_from(version).ok()))
    }

    async fn config_version(&self, version: u64) -> StoreResult<Option<ConfigVersion>> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        sqlx::query("SELECT * FROM config_versions WHERE version = $1")
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get config version", error))?
            .map(|row| config_row(&row))
            .transpose()
    }

    async fn latest_config_from(&self, source: ConfigSource) -> StoreResult<Option<ConfigVersion>> {
        sqlx::query("SELECT * FROM config_versions WHERE source = $1 ORDER BY version DESC LIMIT 1")
            .bind(source.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get latest config by source", error))?
            .map(|row| config_row(&row))
            .transpose()
    }

    async fn list_config_versions(&self) -> StoreResult<Vec<ConfigVersion>> {
        sqlx::query("SELECT * FROM config_versions ORDER BY version DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(|error| map_error("list config versions", error))?
            .iter()
            .map(config_row)
            .collect()
    }

    async fn insert_config_version(&self, version: &ConfigVersion) -> StoreResult<bool> {
        let number =
            i64::try_from(version.version).map_err(|_| corrupt("config version out of range"))?;
        // The version must follow the newest one; the primary key settles races between writers.
        let inserted = sqlx::query(
            "INSERT INTO config_versions (version, document, etag, source, created_at) \
             SELECT $1, $2, $3, $4, $5 \
             WHERE $1 = (SELECT coalesce(max(version), 0) + 1 FROM config_versions) \
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(number)
        .bind(&version.document)
        .bind(&version.etag)
        .bind(version.source.as_str())
        .bind(version.created_at)
        .execute(&self.pool)
        .await
        .map_err(|error| map_error("insert config version", error))?;
        Ok(inserted.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_courier_commits_without_waiting_for_the_flush_and_keeps_the_dsns_options() {
        let options = courier_connect_options(
            "postgres://twofold@db.example/twofold?options=-c%20search_path%3Dauth",
        )
        .expect("options");
        assert_eq!(
            options.get_options(),
            Some("-c search_path=auth -c synchronous_commit=off")
        );
        assert_eq!(options.get_database(), Some("twofold"));
    }

    #[test]
    fn batches_are_larger_over_a_unix_socket_than_over_tcp() {
        let over = |dsn: &str| most_per_batch(&dsn.parse::<PgConnectOptions>().expect("a DSN"));
        assert_eq!(
            over("postgres://twofold@localhost/twofold?host=/var/run/postgresql"),
            MOST_PER_BATCH_OVER_SOCKET
        );
        let socket_as_host = PgConnectOptions::new_without_pgpass().host("/var/run/postgresql");
        assert_eq!(most_per_batch(&socket_as_host), MOST_PER_BATCH_OVER_SOCKET);
        assert_eq!(
            over("postgres://twofold@db.example:5432/twofold"),
            MOST_PER_BATCH_OVER_TCP
        );
        assert_eq!(
            over("postgres://twofold@127.0.0.1/twofold"),
            MOST_PER_BATCH_OVER_TCP
        );
    }
}
