//! SQLite backend (the embedded default) for identities, sessions, the failure budget and the
//! courier outbox.
//!
//! Stored formats (see `migrations/sqlite`): ids are 16-byte BLOBs, timestamps INTEGER
//! microseconds since the epoch (UTC; the precision Postgres keeps, and they compare as numbers),
//! JSON is TEXT. Writes that touch several rows run in a `BEGIN IMMEDIATE` transaction: taking
//! the write lock up front makes concurrent writers wait for the busy timeout instead of failing
//! when a read lock cannot be upgraded.
use super::codes::{
    AttemptResult, AuditEvent, DeliveryAttempt, FailureBudgetStore, FailureState, MessageStatus,
    Outbox, OutboxMessage,
};
use super::config_versions::{ConfigSource, ConfigVersion, ConfigVersionStore};
use super::sql_common::{
    AddressRow, FailureRow, IdentifierRow, IdentityRow, MessageRow, SessionRow, StoredAddress,
    after_attempt, assemble, corrupt, count_failure, lease_end, map_error,
    map_identifier_insert_error, map_migrate_error, merge_addresses,
};
use super::sqlite_writes::{
    Shareable, WAL_FILE_KEPT, WRITER_CHECKPOINTS_AT, WriteThread, Writer, WriterGuard,
    in_one_command, statements,
};
use super::{IdentityStore, SessionStore, SessionUpgrade, StoreError, StoreResult, Upgraded};
use crate::domain::identity::{CredentialKind, Identifier, Identity, VerifiableAddress};
use crate::domain::session::Session;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row, Sqlite, Transaction};
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Readers run concurrently in WAL mode.
const READ_CONNECTIONS: u32 = 4;
/// How long a writer waits for another writer's lock before the store reports `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

macro_rules! identity_select {
    () => {
        "SELECT i.id, i.schema_id, i.traits, i.state, i.created_at, i.updated_at, \
         EXISTS (SELECT 1 FROM identity_credentials c \
                 WHERE c.identity_id = i.id AND c.kind = 'password') AS has_password \
         FROM identities i "
    };
}

macro_rules! identifier_select {
    () => {
        "SELECT identity_id, kind, value, trait_name, channel FROM identity_identifiers "
    };
}

macro_rules! address_select {
    () => {
        "SELECT id, identity_id, value, channel, trait_name, verified, verified_at \
         FROM identity_verifiable_addresses "
    };
}

macro_rules! session_columns {
    () => {
        "id, identity_id, token_hash, aal, methods, issued_at, expires_at, authenticated_at, \
         revoked_at "
    };
}

macro_rules! session_select {
    () => {
        concat!("SELECT ", session_columns!(), "FROM sessions ")
    };
}

/// The three queries (identities, identifiers, addresses) that load the identities a scope
/// selects. SQLite cannot bind an array, so the page is selected again by subquery; all three
/// run in one transaction, so they see the same rows.
macro_rules! scoped_queries {
    ($scope:literal) => {
        [
            concat!(
                identity_select!(),
                "WHERE i.id IN ",
                $scope,
                " ORDER BY i.id"
            ),
            concat!(
                identifier_select!(),
                "WHERE identity_id IN ",
                $scope,
                " ORDER BY identity_id, position"
            ),
            concat!(
                address_select!(),
                "WHERE identity_id IN ",
                $scope,
                " ORDER BY identity_id, position"
            ),
        ]
    };
}

const BY_ID: [&str; 3] = scoped_queries!("(?1)");
const BY_IDENTIFIER: [&str; 3] = scoped_queries!(
    "(SELECT identity_id FROM identity_identifiers WHERE kind = ?1 AND value = ?2)"
);
const BY_PAGE: [&str; 3] = scoped_queries!(
    "(SELECT id FROM identities WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2)"
);

/// The identity of a session that carries a token, for the statements of a session upgrade:
/// anonymous parameters (the session id, then the token hash, for each of the three), as a
/// transaction in one command needs.
const BY_UPGRADED_SESSION: [&str; 3] =
    scoped_queries!("(SELECT identity_id FROM sessions WHERE id = ? AND token_hash = ?)");

enum Scope<'a> {
    Id(Uuid),
    Identifier(CredentialKind, &'a str),
    Page(Option<Uuid>, i64),
}

impl<'a> Scope<'a> {
    fn queries(&self) -> [&'static str; 3] {
        match self {
            Scope::Id(_) => BY_ID,
            Scope::Identifier(..) => BY_IDENTIFIER,
            Scope::Page(..) => BY_PAGE,
        }
    }

    fn bind(&self, sql: &'static str) -> sqlx::query::Query<'a, Sqlite, SqliteArguments> {
        let query = sqlx::query(sql);
        match *self {
            Scope::Id(id) => query.bind(id),
            Scope::Identifier(kind, value) => query.bind(kind.as_str()).bind(value),
            Scope::Page(after, limit) => query.bind(after).bind(limit),
        }
    }
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(micros: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt("timestamp out of range"))
}

fn from_micros_opt(micros: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    micros.map(from_micros).transpose()
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|error| super::StoreError::Internal(format!("encode json: {error}")))
}

fn parse_json(text: &str, what: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|_| corrupt(what))
}

/// Decodes a column, mapping a type mismatch (a corrupt row) to `Internal`.
fn get<'r, T>(row: &'r SqliteRow, column: &'static str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column)
        .map_err(|error| map_error("decode row", error))
}

fn identity_row(row: &SqliteRow) -> StoreResult<IdentityRow> {
    Ok(IdentityRow {
        id: get(row, "id")?,
        schema_id: get(row, "schema_id")?,
        traits: parse_json(&get::<String>(row, "traits")?, "identity traits")?,
        state: get(row, "state")?,
        has_password: get(row, "has_password")?,
        created_at: from_micros(get(row, "created_at")?)?,
        updated_at: from_micros(get(row, "updated_at")?)?,
    })
}

fn identifier_row(row: &SqliteRow) -> StoreResult<IdentifierRow> {
    Ok(IdentifierRow {
        identity_id: get(row, "identity_id")?,
        kind: get(row, "kind")?,
        value: get(row, "value")?,
        trait_name: get(row, "trait_name")?,
        channel: get(row, "channel")?,
    })
}

fn address_row(row: &SqliteRow) -> StoreResult<AddressRow> {
    Ok(AddressRow {
        id: get(row, "id")?,
        identity_id: get(row, "identity_id")?,
        value: get(row, "value")?,
        channel: get(row, "channel")?,
        trait_name: get(row, "trait_name")?,
        verified: get(row, "verified")?,
        verified_at: from_micros_opt(get(row, "verified_at")?)?,
    })
}

fn stored_address_row(row: &SqliteRow) -> StoreResult<StoredAddress> {
    Ok(StoredAddress {
        id: get(row, "id")?,
        channel: get(row, "channel")?,
        value: get(row, "value")?,
        verified: get(row, "verified")?,
        verified_at: from_micros_opt(get(row, "verified_at")?)?,
    })
}

fn session_row(row: &SqliteRow) -> StoreResult<SessionRow> {
    Ok(SessionRow {
        id: get(row, "id")?,
        identity_id: get(row, "identity_id")?,
        token_hash: get(row, "token_hash")?,
        aal: get(row, "aal")?,
        methods: parse_json(&get::<String>(row, "methods")?, "session methods")?,
        issued_at: from_micros(get(row, "issued_at")?)?,
        expires_at: from_micros(get(row, "expires_at")?)?,
        authenticated_at: from_micros(get(row, "authenticated_at")?)?,
        revoked_at: from_micros_opt(get(row, "revoked_at")?)?,
    })
}

fn decode_session(row: Option<SqliteRow>) -> StoreResult<Option<Session>> {
    row.map(|row| session_row(&row)?.into_domain()).transpose()
}

/// Reads go to `readers`, every write to `writer`, the one connection that writes. SQLite runs
/// one writer at a time anyway; with several write connections they met in SQLite's busy handler,
/// which sleeps (up to 100 ms a turn) instead of queueing, so a step-up load left the cores idle
/// while requests waited. Queued on the one writer connection they run back to back, and the
/// busiest transactions run on a thread of their own (`writes`), where those that queue
/// meanwhile share a commit.
#[derive(Clone)]
pub struct SqliteStore {
    readers: Readers,
    writer: Arc<Writer>,
    writes: Arc<WriteThread>,
}

#[derive(Clone)]
enum Readers {
    /// A database file, read in WAL mode by several connections at once.
    Pool(sqlx::SqlitePool),
    /// An in-memory database exists only in its one connection, so reads take the writer.
    Writer,
}

/// A connection to read from, held until dropped.
enum ReadConnection<'a> {
    Pooled(PoolConnection<Sqlite>),
    Writer(WriterGuard<'a>),
}

impl Deref for ReadConnection<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self {
            Self::Pooled(connection) => connection,
            Self::Writer(writer) => writer,
        }
    }
}

impl DerefMut for ReadConnection<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            Self::Pooled(connection) => connection,
            Self::Writer(writer) => writer,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs `migrations/sqlite`. `memory` opens a
    /// private in-memory database.
    pub async fn connect(dsn: &str) -> StoreResult<Self> {
        let in_memory = dsn == "memory" || dsn.contains(":memory:") || dsn.contains("mode=memory");
        let url = if dsn == "memory" {
            "sqlite::memory:"
        } else {
            dsn
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| map_error("parse sqlite dsn", error))?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        if in_memory {
            // Every connection to `:memory:` is its own empty database: the writer is the one
            // connection, and reads take it too.
            let mut connection = options
                .connect()
                .await
                .map_err(|error| map_error("open sqlite database", error))?;
            MIGRATOR
                .run(&mut connection)
                .await
                .map_err(map_migrate_error)?;
            let writer = Arc::new(Writer::new(connection, ACQUIRE_TIMEOUT));
            return Ok(Self {
                readers: Readers::Writer,
                writes: WriteThread::start(writer.clone(), None)?,
                writer,
            });
        }
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let mut writer = options
            .clone()
            // Checkpoints run on a connection of their own (`sqlite_writes::checkpoints`).
            .pragma("wal_autocheckpoint", WRITER_CHECKPOINTS_AT.to_string())
            .pragma("journal_size_limit", WAL_FILE_KEPT.to_string())
            .connect()
            .await
            .map_err(|error| map_error("open sqlite database", error))?;
        MIGRATOR.run(&mut writer).await.map_err(map_migrate_error)?;
        let checkpoint_options = options.clone();
        let checkpoints = checkpoint_options
            .connect()
            .await
            .map_err(|error| map_error("open sqlite checkpoint connection", error))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            // A ping would only ask SQLite's worker thread whether it is still there.
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.read_only(true).create_if_missing(false))
            .await
            .map_err(|error| map_error("open sqlite database", error))?;
        let writer = Arc::new(Writer::new(writer, ACQUIRE_TIMEOUT));
        Ok(Self {
            readers: Readers::Pool(pool),
            writes: WriteThread::start(writer.clone(), Some((checkpoints, checkpoint_options)))?,
            writer,
        })
    }

    async fn read(&self) -> StoreResult<ReadConnection<'_>> {
        match &self.readers {
            Readers::Pool(pool) => pool
                .acquire()
                .await
                .map(ReadConnection::Pooled)
                .map_err(|error| map_error("acquire a read connection", error)),
            Readers::Writer => Ok(ReadConnection::Writer(self.writer.lock().await?)),
        }
    }

    async fn load(&self, scope: Scope<'_>) -> StoreResult<Vec<Identity>> {
        // A deferred transaction: in WAL mode its first read fixes the snapshot for all three.
        let mut reader = self.read().await?;
        let mut tx = reader
            .begin()
            .await
            .map_err(|error| map_error("begin transaction", error))?;
        let [identities_sql, identifiers_sql, addresses_sql] = scope.queries();
        let identities = scope
            .bind(identities_sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(|error| map_error("load identities", error))?;
        if identities.is_empty() {
            return Ok(Vec::new());
        }
        let identifiers = scope
            .bind(identifiers_sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(|error| map_error("load identifiers", error))?;
        let addresses = scope
            .bind(addresses_sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(|error| map_error("load addresses", error))?;
        commit(tx).await?;
        decode_identities(&identities, &identifiers, &addresses)
    }
}

fn decode_identities(
    identities: &[SqliteRow],
    identifiers: &[SqliteRow],
    addresses: &[SqliteRow],
) -> StoreResult<Vec<Identity>> {
    assemble(
        identities
            .iter()
            .map(identity_row)
            .collect::<StoreResult<_>>()?,
        identifiers
            .iter()
            .map(identifier_row)
            .collect::<StoreResult<_>>()?,
        addresses
            .iter()
            .map(address_row)
            .collect::<StoreResult<_>>()?,
    )
}

async fn begin_write(writer: &mut SqliteConnection) -> StoreResult<Transaction<'_, Sqlite>> {
    writer
        .begin_with(BEGIN_WRITE)
        .await
        .map_err(|error| map_error("begin transaction", error))
}

async fn commit(tx: Transaction<'_, Sqlite>) -> StoreResult<()> {
    tx.commit()
        .await
        .map_err(|error| map_error("commit transaction", error))
}

async fn insert_children(
    conn: &mut SqliteConnection,
    identity_id: Uuid,
    identifiers: &[Identifier],
    addresses: &[VerifiableAddress],
) -> StoreResult<()> {
    // One statement per identifier, so a collision names exactly the identifier that collided.
    for (position, identifier) in identifiers.iter().enumerate() {
        sqlx::query(
            "INSERT INTO identity_identifiers \
             (identity_id, position, kind, value, trait_name, channel) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(identity_id)
        .bind(position as i64)
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(address.id)
        .bind(identity_id)
        .bind(position as i64)
        .bind(&address.value)
        .bind(address.channel.as_str())
        .bind(&address.trait_name)
        .bind(address.verified)
        .bind(address.verified_at.map(micros))
        .execute(&mut *conn)
        .await
        .map_err(|error| map_error("insert address", error))?;
    }
    Ok(())
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn insert_identity(
        &self,
        identity: &Identity,
        password_hash: Option<&str>,
    ) -> StoreResult<()> {
        let traits = json_text(&identity.traits)?;
        let mut writer = self.writer.lock().await?;
        let mut tx = begin_write(&mut writer).await?;
        sqlx::query(
            "INSERT INTO identities (id, schema_id, traits, state, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(identity.id)
        .bind(&identity.schema_id)
        .bind(traits)
        .bind(identity.state.as_str())
        .bind(micros(identity.created_at))
        .bind(micros(identity.updated_at))
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
                 VALUES (?1, 'password', ?2, ?3, ?3)",
            )
            .bind(identity.id)
            .bind(hash)
            .bind(micros(identity.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("insert password credential", error))?;
        }
        commit(tx).await
    }

    async fn update_identity(&self, identity: &Identity) -> StoreResult<bool> {
        let traits = json_text(&identity.traits)?;
        let mut writer = self.writer.lock().await?;
        let mut tx = begin_write(&mut writer).await?;
        let updated = sqlx::query(
            "UPDATE identities SET schema_id = ?2, traits = ?3, state = ?4, updated_at = ?5 \
             WHERE id = ?1",
        )
        .bind(identity.id)
        .bind(&identity.schema_id)
        .bind(traits)
        .bind(identity.state.as_str())
        .bind(micros(identity.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|error| map_error("update identity", error))?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        let stored = sqlx::query(
            "SELECT id, channel, value, verified, verified_at FROM identity_verifiable_addresses \
             WHERE identity_id = ?1",
        )
        .bind(identity.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(|error| map_error("load addresses", error))?;
        let stored = stored
            .iter()
            .map(stored_address_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let addresses = merge_addresses(&identity.verifiable_addresses, &stored);
        sqlx::query("DELETE FROM identity_identifiers WHERE identity_id = ?1")
            .bind(identity.id)
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("delete identifiers", error))?;
        sqlx::query("DELETE FROM identity_verifiable_addresses WHERE identity_id = ?1")
            .bind(identity.id)
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("delete addresses", error))?;
        insert_children(&mut tx, identity.id, &identity.identifiers, &addresses).await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn get_identity(&self, id: Uuid) -> StoreResult<Option<Identity>> {
        Ok(self.load(Scope::Id(id)).await?.into_iter().next())
    }

    async fn find_by_identifier(
        &self,
        kind: CredentialKind,
        value: &str,
    ) -> StoreResult<Option<Identity>> {
        Ok(self
            .load(Scope::Identifier(kind, value))
            .await?
            .into_iter()
            .next())
    }

    async fn password_hash(&self, identity_id: Uuid) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT password_hash FROM identity_credentials \
             WHERE identity_id = ?1 AND kind = 'password'",
        )
        .bind(identity_id)
        .fetch_optional(&mut *self.read().await?)
        .await
        .map_err(|error| map_error("get password hash", error))?;
        row.map(|row| get(&row, "password_hash")).transpose()
    }

    async fn list_identities(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Identity>> {
        self.load(Scope::Page(after, i64::from(limit))).await
    }

    async fn delete_identity(&self, id: Uuid) -> StoreResult<bool> {
        // Credentials, identifiers, addresses and sessions go with it (ON DELETE CASCADE, with
        // foreign keys switched on for every connection).
        let deleted = sqlx::query("DELETE FROM identities WHERE id = ?1")
            .bind(id)
            .execute(&mut *self.writer.lock().await?)
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
             SET verified = 1, verified_at = COALESCE(verified_at, ?3) \
             WHERE identity_id = ?1 AND value = ?2",
        )
        .bind(identity_id)
        .bind(value)
        .bind(micros(at))
        .execute(&mut *self.writer.lock().await?)
        .await
        .map_err(|error| map_error("mark address verified", error))?;
        Ok(updated.rows_affected() > 0)
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(&self, session: &Session) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id, identity_id, token_hash, aal, methods, issued_at, \
             expires_at, authenticated_at, revoked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(session.id)
        .bind(session.identity_id)
        .bind(&session.token_hash)
        .bind(session.aal.as_str())
        .bind(json_text(&session.methods)?)
        .bind(micros(session.issued_at))
        .bind(micros(session.expires_at))
        .bind(micros(session.authenticated_at))
        .bind(session.revoked_at.map(micros))
        .execute(&mut *self.writer.lock().await?)
        .await
        .map_err(|error| map_error("insert session", error))?;
        Ok(())
    }

    async fn find_by_token_hash(&self, token_hash: &[u8]) -> StoreResult<Option<Session>> {
        let row = sqlx::query(concat!(session_select!(), "WHERE token_hash = ?1"))
            .bind(token_hash)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(|error| map_error("find session by token", error))?;
        decode_session(row)
    }

    async fn find_with_identity(
        &self,
        token_hash: &[u8],
    ) -> StoreResult<Option<(Session, Identity)>> {
        // In-process: two reads cost no round trip worth saving.
        let Some(session) = self.find_by_token_hash(token_hash).await? else {
            return Ok(None);
        };
        let identity = IdentityStore::get_identity(self, session.identity_id).await?;
        Ok(identity.map(|identity| (session, identity)))
    }

    async fn get_session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        let row = sqlx::query(concat!(session_select!(), "WHERE id = ?1"))
            .bind(id)
            .fetch_optional(&mut *self.read().await?)
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
            "WHERE identity_id = ?1 AND (?2 OR (revoked_at IS NULL AND expires_at > ?3)) \
             ORDER BY issued_at DESC, id DESC"
        ))
        .bind(identity_id)
        .bind(include_inactive)
        .bind(micros(now))
        .fetch_all(&mut *self.read().await?)
        .await
        .map_err(|error| map_error("list sessions", error))?;
        rows.iter()
            .map(|row| session_row(row)?.into_domain())
            .collect()
    }

    async fn revoke_session(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        let updated =
            sqlx::query("UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
                .bind(id)
                .bind(micros(at))
                .execute(&mut *self.writer.lock().await?)
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
            "UPDATE sessions SET revoked_at = ?2 WHERE identity_id = ?1 AND revoked_at IS NULL",
        )
        .bind(identity_id)
        .bind(micros(at))
        .execute(&mut *self.writer.lock().await?)
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
        self.upgrade(id, expected_token_hash, upgrade, ReadBack::Identity)
            .await
    }

    async fn upgrade_session_without_identity(
        &self,
        id: Uuid,
        expected_token_hash: &[u8],
        upgrade: &SessionUpgrade,
    ) -> StoreResult<Option<Upgraded>> {
        self.upgrade(id, expected_token_hash, upgrade, ReadBack::SessionOnly)
            .await
    }
}

macro_rules! message_columns {
    () => {
        "id, channel, recipient, template_type, locale, sealed_data, identity_id, status, \
         send_count, not_after, next_attempt_at, lease_until, created_at, updated_at"
    };
}

fn message_row(row: &SqliteRow) -> StoreResult<MessageRow> {
    Ok(MessageRow {
        id: get(row, "id")?,
        channel: get(row, "channel")?,
        recipient: get(row, "recipient")?,
        template_type: get(row, "template_type")?,
        locale: get(row, "locale")?,
        sealed_data: get(row, "sealed_data")?,
        identity_id: get(row, "identity_id")?,
        status: get(row, "status")?,
        send_count: get(row, "send_count")?,
        not_after: from_micros_opt(get(row, "not_after")?)?,
        next_attempt_at: from_micros(get(row, "next_attempt_at")?)?,
        lease_until: from_micros_opt(get(row, "lease_until")?)?,
        created_at: from_micros(get(row, "created_at")?)?,
        updated_at: from_micros(get(row, "updated_at")?)?,
    })
}

fn decode_messages(rows: &[SqliteRow]) -> StoreResult<Vec<OutboxMessage>> {
    rows.iter()
        .map(|row| message_row(row)?.into_domain())
        .collect()
}

fn failure_row(row: &SqliteRow) -> StoreResult<FailureRow> {
    Ok(FailureRow {
        window_started_at: from_micros(get(row, "window_started_at")?)?,
        window_ends_at: from_micros(get(row, "window_ends_at")?)?,
        failures: get(row, "failures")?,
        lockouts: get(row, "lockouts")?,
        locked_until: from_micros_opt(get(row, "locked_until")?)?,
    })
}

fn attempt_row(row: &SqliteRow) -> StoreResult<DeliveryAttempt> {
    Ok(DeliveryAttempt {
        message_id: get(row, "message_id")?,
        attempted_at: from_micros(get(row, "attempted_at")?)?,
        gateway: get(row, "gateway")?,
        succeeded: get(row, "succeeded")?,
        error: get(row, "error")?,
        provider_message_id: get(row, "provider_message_id")?,
    })
}

fn audit_row(row: &SqliteRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        id: get(row, "id")?,
        event: get(row, "event")?,
        identity_id: get(row, "identity_id")?,
        flow_id: get(row, "flow_id")?,
        address_hash: get(row, "address_hash")?,
        client_ip: get(row, "client_ip")?,
        occurred_at: from_micros(get(row, "occurred_at")?)?,
    })
}

async fn insert_audit(conn: &mut SqliteConnection, event: &AuditEvent) -> StoreResult<()> {
    bind_audit(
        sqlx::query(
            "INSERT INTO audit_events \
             (id, event, identity_id, flow_id, address_hash, client_ip, occurred_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        ),
        event,
    )
    .execute(conn)
    .await
    .map_err(|error| map_error("insert audit event", error))?;
    Ok(())
}

/// Binds an audit event's seven columns, in `audit_events` column order, as the next
/// parameters: every statement that writes one lists the columns that way.
fn bind_audit<'q>(
    query: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    event: &AuditEvent,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    query
        .bind(event.id)
        .bind(&event.event)
        .bind(event.identity_id)
        .bind(event.flow_id)
        .bind(&event.address_hash)
        .bind(&event.client_ip)
        .bind(micros(event.occurred_at))
}

#[async_trait]
impl FailureBudgetStore for SqliteStore {
    async fn failure_state(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<FailureState> {
        let row = sqlx::query("SELECT * FROM identity_code_failures WHERE identity_id = ?1")
            .bind(identity_id)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(|error| map_error("get failure state", error))?;
        match row {
            Some(row) => failure_row(&row)?.state_at(now),
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
        let store = self.clone();
        self.writes
            .run(async move {
                store
                    .record_failure_here(identity_id, now, budget, window)
                    .await
            })
            .await
    }

    async fn reset_failures(&self, identity_id: Uuid) -> StoreResult<()> {
        sqlx::query("DELETE FROM identity_code_failures WHERE identity_id = ?1")
            .bind(identity_id)
            .execute(&mut *self.writer.lock().await?)
            .await
            .map_err(|error| map_error("reset failures", error))?;
        Ok(())
    }
}

/// The transactions of the code engine and the courier, which their trait methods hand to
/// `WriteThread::run` (the write thread when another transaction is under way). Writes of one
/// statement run where they are called, since they hold the writer for a single hop, and so do
/// the rarer identity writes.
impl SqliteStore {
    async fn record_failure_here(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
        budget: u32,
        window: Duration,
    ) -> StoreResult<FailureState> {
        // BEGIN IMMEDIATE holds the database's write lock from the read to the write, so
        // concurrent failures are counted one after the other.
        let mut writer = self.writer.lock().await?;
        let mut tx = begin_write(&mut writer).await?;
        let row = sqlx::query("SELECT * FROM identity_code_failures WHERE identity_id = ?1")
            .bind(identity_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|error| map_error("lock failure state", error))?;
        let row = row.as_ref().map(failure_row).transpose()?;
        let next = count_failure(row, now, budget, window)?;
        sqlx::query(
            "INSERT INTO identity_code_failures \
             (identity_id, window_started_at, window_ends_at, failures, lockouts, locked_until) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (identity_id) DO UPDATE SET window_started_at = excluded.window_started_at, \
             window_ends_at = excluded.window_ends_at, failures = excluded.failures, \
             lockouts = excluded.lockouts, locked_until = excluded.locked_until",
        )
        .bind(identity_id)
        .bind(micros(next.window_started_at))
        .bind(micros(next.window_ends_at))
        .bind(next.failures)
        .bind(next.lockouts)
        .bind(next.locked_until.map(micros))
        .execute(&mut *tx)
        .await
        .map_err(|error| map_error("record failure", error))?;
        commit(tx).await?;
        next.state_at(now)
    }

    async fn claim_due_here(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxMessage>> {
        // One statement, so choosing and marking the rows is one step for every other claimer:
        // a write statement takes the write lock before it reads. Expired leases first, as on
        // Postgres.
        let rows = sqlx::query(concat!(
            "UPDATE courier_messages SET status = 'processing', lease_until = ?2, \
             updated_at = ?1 \
             WHERE id IN (SELECT id FROM courier_messages \
                          WHERE (status = 'queued' AND next_attempt_at <= ?1) \
                             OR (status = 'processing' AND lease_until <= ?1) \
                          ORDER BY status = 'queued', next_attempt_at, id LIMIT ?3) \
             RETURNING ",
            message_columns!()
        ))
        .bind(micros(now))
        .bind(micros(lease_end(now, lease)))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.writer.lock().await?)
        .await
        .map_err(|error| map_error("claim due messages", error))?;
        let mut messages = decode_messages(&rows)?;
        messages.sort_by_key(|message| (message.next_attempt_at, message.id));
        Ok(messages)
    }

    async fn finish_attempts_here(
        &self,
        finished: &[(DeliveryAttempt, AttemptResult)],
    ) -> StoreResult<()> {
        if finished.is_empty() {
            return Ok(());
        }
        // `UPDATE … FROM` applies one row per message: a round attempts each message once.
        debug_assert!(
            finished
                .iter()
                .map(|(attempt, _)| attempt.message_id)
                .collect::<std::collections::HashSet<_>>()
                .len()
                == finished.len(),
            "a message attempted twice in one round"
        );
        // The text depends on how many attempts a round finished, so it is not kept prepared:
        // up to a claim's worth of variants would crowd the hot statements out of the cache.
        let rows = |row: &str| vec![row; finished.len()].join(", ");
        let sql = format!(
            in_one_command!(
                "INSERT INTO courier_message_attempts \
                 (message_id, attempted_at, gateway, succeeded, error, provider_message_id) \
                 VALUES {attempts}",
                "UPDATE courier_messages SET status = finished.column2, \
                 send_count = send_count + 1, \
                 next_attempt_at = COALESCE(finished.column3, next_attempt_at), \
                 lease_until = NULL, updated_at = finished.column4 \
                 FROM (VALUES {messages}) AS finished \
                 WHERE courier_messages.id = finished.column1"
            ),
            attempts = rows("(?, ?, ?, ?, ?, ?)"),
            messages = rows("(?, ?, ?, ?)"),
        );
        let mut transaction = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for (attempt, _) in finished {
            transaction = transaction
                .bind(attempt.message_id)
                .bind(micros(attempt.attempted_at))
                .bind(&attempt.gateway)
                .bind(attempt.succeeded)
                .bind(&attempt.error)
                .bind(&attempt.provider_message_id);
        }
        for (attempt, result) in finished {
            let (status, next_attempt_at) = after_attempt(*result);
            transaction = transaction
                .bind(attempt.message_id)
                .bind(status.as_str())
                .bind(next_attempt_at.map(micros))
                .bind(micros(attempt.attempted_at));
        }
        self.writer
            .transaction(transaction, "finish delivery attempts")
            .await?;
        Ok(())
    }
}

/// What a session upgrade reads back besides the upgraded session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadBack {
    /// Its identity too, in three more statements.
    Identity,
    /// Nothing more: the caller holds the identity already (the session cache). Each statement
    /// is one more answer from SQLite's worker thread to the write thread, and the writer is
    /// held until the last one; reading the identity was half of an upgrade's statements.
    SessionOnly,
}

/// The upgrade's own statements: the address, the audit events, the session.
const UPGRADE_STATEMENTS: usize = 3;

impl ReadBack {
    /// The upgrade's own statements, then the reads.
    fn statements(self) -> usize {
        match self {
            ReadBack::Identity => UPGRADE_STATEMENTS + BY_UPGRADED_SESSION.len(),
            ReadBack::SessionOnly => UPGRADE_STATEMENTS,
        }
    }
}

/// The session upgrade as one transaction. It is one guarded statement: SQLite runs writers one
/// at a time, so only the first of several concurrent upgrades still finds the expected token.
/// The address and audit writes share its transaction and come first, under the same guard:
/// nothing else in the transaction touches the session, so they happen exactly when it is
/// upgraded (a replayed upgrade writes nothing). An address already verified is not written
/// again. The identity, when asked for, is read back after it, so it shows the address verified.
/// The text depends on the number of audit events, which is one of a few, and on the read-back.
fn upgrade_transaction(
    id: Uuid,
    expected_token_hash: &[u8],
    upgrade: &SessionUpgrade,
    read_back: ReadBack,
) -> StoreResult<Shareable> {
    let mut sql = format!(
        statements!(
            "UPDATE identity_verifiable_addresses \
             SET verified = 1, verified_at = COALESCE(verified_at, ?) \
             WHERE identity_id = (SELECT identity_id FROM sessions \
                                  WHERE id = ? AND token_hash = ? AND revoked_at IS NULL) \
               AND value = ? AND (verified = 0 OR verified_at IS NULL)",
            "INSERT INTO audit_events \
             (id, event, identity_id, flow_id, address_hash, client_ip, occurred_at) \
             SELECT * FROM (VALUES {events}) \
             WHERE EXISTS (SELECT 1 FROM sessions \
                           WHERE id = ? AND token_hash = ? AND revoked_at IS NULL)",
            concat!(
                "UPDATE sessions SET token_hash = ?, aal = ?, methods = ?, \
                 authenticated_at = ? \
                 WHERE id = ? AND token_hash = ? AND revoked_at IS NULL RETURNING ",
                session_columns!()
            ),
        ),
        events = vec!["(?, ?, ?, ?, ?, ?, ?)"; upgrade.audit.len()].join(", "),
    );
    if read_back == ReadBack::Identity {
        for read in BY_UPGRADED_SESSION {
            sql.push_str(read);
            sql.push_str("; ");
        }
    }
    let methods = json_text(&upgrade.methods)?;
    let (expected, upgrade) = (expected_token_hash.to_vec(), upgrade.clone());
    Ok(Shareable::new(
        sql,
        read_back.statements(),
        "upgrade session",
        move |query| {
            let mut query = query
                .bind(micros(upgrade.authenticated_at))
                .bind(id)
                .bind(&expected)
                // No address to verify: `value = NULL` matches no row.
                .bind(&upgrade.verified_address);
            for event in &upgrade.audit {
                query = bind_audit(query, event);
            }
            let mut query = query
                .bind(id)
                .bind(&expected)
                .bind(&upgrade.new_token_hash)
                .bind(upgrade.aal.as_str())
                .bind(&methods)
                .bind(micros(upgrade.authenticated_at))
                .bind(id)
                .bind(&expected);
            if read_back == ReadBack::Identity {
                for _ in BY_UPGRADED_SESSION {
                    query = query.bind(id).bind(&upgrade.new_token_hash);
                }
            }
            query
        },
    ))
}

impl SqliteStore {
    async fn upgrade(
        &self,
        id: Uuid,
        expected_token_hash: &[u8],
        upgrade: &SessionUpgrade,
        read_back: ReadBack,
    ) -> StoreResult<Option<Upgraded>> {
        upgrade.check_audited()?;
        let statements = self
            .writes
            .commit(upgrade_transaction(
                id,
                expected_token_hash,
                upgrade,
                read_back,
            )?)
            .await?;
        upgraded(&statements, read_back)
    }
}

/// What `upgrade_transaction`'s statements answered.
fn upgraded(statements: &[Vec<SqliteRow>], read_back: ReadBack) -> StoreResult<Option<Upgraded>> {
    let (updated, read) = match (statements, read_back) {
        ([_, _, updated], ReadBack::SessionOnly) => (updated, None),
        ([_, _, updated, identities, identifiers, addresses], ReadBack::Identity) => {
            (updated, Some((identities, identifiers, addresses)))
        }
        _ => {
            return Err(StoreError::Internal(format!(
                "session upgrade: {} statements answered, not {}",
                statements.len(),
                read_back.statements()
            )));
        }
    };
    // From here on the upgrade has committed. An error is still safe to return: callers
    // treat a failed upgrade as one that may have happened (the session cache retires the
    // old token), as they must for a connection lost after COMMIT.
    let Some(updated) = updated.first() else {
        return Ok(None);
    };
    let session = session_row(updated)?.into_domain()?;
    // The upgrade has committed: an identity that does not decode must not report it as
    // failed, it only goes uncached.
    let identity = read.and_then(|(identities, identifiers, addresses)| {
        decode_identities(identities, identifiers, addresses)
            .map(|identities| identities.into_iter().next())
            .unwrap_or_else(|error| {
                tracing::warn!(error = %error, "identity not read back after a session upgrade");
                None
            })
    });
    Ok(Some(Upgraded { session, identity }))
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn enqueue(&self, message: &OutboxMessage, audit: &AuditEvent) -> StoreResult<()> {
        const ENQUEUE: &str = statements!(
            concat!(
                "INSERT INTO courier_messages (",
                message_columns!(),
                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            "INSERT INTO audit_events \
             (id, event, identity_id, flow_id, address_hash, client_ip, occurred_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)"
        );
        let (message, audit) = (message.clone(), audit.clone());
        let transaction = Shareable::new(ENQUEUE, 2, "enqueue message", move |query| {
            let query = query
                .bind(message.id)
                .bind(message.channel.as_str())
                .bind(&message.recipient)
                .bind(&message.template_type)
                .bind(&message.locale)
                .bind(&message.sealed_data)
                .bind(message.identity_id)
                .bind(message.status.as_str())
                .bind(i64::from(message.send_count))
                .bind(message.not_after.map(micros))
                .bind(micros(message.next_attempt_at))
                .bind(message.lease_until.map(micros))
                .bind(micros(message.created_at))
                .bind(micros(message.updated_at));
            bind_audit(query, &audit)
        });
        self.writes.commit(transaction).await?;
        Ok(())
    }

    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        insert_audit(&mut *self.writer.lock().await?, event).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxMessage>> {
        let store = self.clone();
        self.writes
            .run(async move { store.claim_due_here(now, limit, lease).await })
            .await
    }

    async fn finish_attempts(
        &self,
        finished: &[(DeliveryAttempt, AttemptResult)],
    ) -> StoreResult<()> {
        let (store, finished) = (self.clone(), finished.to_vec());
        self.writes
            .run(async move { store.finish_attempts_here(&finished).await })
            .await
    }

    async fn abandon(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE courier_messages SET status = 'abandoned', lease_until = NULL, \
             updated_at = ?2 WHERE id = ?1 AND status IN ('queued', 'processing')",
        )
        .bind(id)
        .bind(micros(now))
        .execute(&mut *self.writer.lock().await?)
        .await
        .map_err(|error| map_error("abandon message", error))?;
        Ok(())
    }

    async fn get_message(&self, id: Uuid) -> StoreResult<Option<OutboxMessage>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM courier_messages WHERE id = ?1"
        ))
        .bind(id)
        .fetch_all(&mut *self.read().await?)
        .await
        .map_err(|error| map_error("get message", error))?;
        Ok(decode_messages(&rows)?.into_iter().next())
    }

    async fn attempts(&self, id: Uuid) -> StoreResult<Vec<DeliveryAttempt>> {
        let rows = sqlx::query(
            "SELECT message_id, attempted_at, gateway, succeeded, error, provider_message_id \
             FROM courier_message_attempts WHERE message_id = ?1 ORDER BY attempted_at, id",
        )
        .bind(id)
        .fetch_all(&mut *self.read().await?)
        .await
        .map_err(|error| map_error("list delivery attempts", error))?;
        rows.iter().map(attempt_row).collect()
    }

    async fn list_messages(
        &self,
        status: Option<MessageStatus>,
        recipient: Option<&str>,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        // Ids are UUIDv7 BLOBs, whose byte order is creation order.
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM courier_messages \
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR recipient = ?2) \
               AND (?3 IS NULL OR id < ?3) \
             ORDER BY id DESC LIMIT ?4"
        ))
        .bind(status.map(MessageStatus::as_str))
        .bind(recipient)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.read().await?)
        .await
        .map_err(|error| map_error("list messages", error))?;
        decode_messages(&rows)
    }

    async fn audit_events(&self, identity_id: Uuid) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT id, event, identity_id, flow_id, address_hash, client_ip, occurred_at \
             FROM audit_events WHERE identity_id = ?1 ORDER BY occurred_at, id",
        )
        .bind(identity_id)
        .fetch_all(&mut *self.read().await?)
        .await
        .map_err(|error| map_error("list audit events", error))?;
        rows.iter().map(audit_row).collect()
    }
}

fn config_row(row: &SqliteRow) -> StoreResult<ConfigVersion> {
    let version: i64 = get(row, "version")?;
    let source: String = get(row, "source")?;
    Ok(ConfigVersion {
        version: u64::try_from(version).map_err(|_| corrupt("negative config version"))?,
        document: get(row, "document")?,
        etag: get(row, "etag")?,
        source: ConfigSource::parse(&source).ok_or_else(|| corrupt("unknown config source"))?,
        created_at: from_micros(get(row, "created_at")?)?,
    })
}

#[async_trait]
impl ConfigVersionStore for SqliteStore {
    async fn latest_config(&self) -> StoreResult<Option<ConfigVersion>> {
        sqlx::query("SELECT * FROM config_versions ORDER BY version DESC LIMIT 1")
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(|error| map_error("get latest config", error))?
            .map(|row| config_row(&row))
            .transpose()
    }

    async fn latest_config_version(&self) -> StoreResult<Option<u64>> {
        let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM config_versions")
            .fetch_one(&mut *self.read().await?)
            .await
            .map_err(|error| map_error("get latest config version", error))?;
        Ok(version.and_then(|version| u64::try_from(version).ok()))
    }

    async fn config_version(&self, version: u64) -> StoreResult<Option<ConfigVersion>> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        sqlx::query("SELECT * FROM config_versions WHERE version = ?1")
            .bind(version)
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(|error| map_error("get config version", error))?
            .map(|row| config_row(&row))
            .transpose()
    }

    async fn latest_config_from(&self, source: ConfigSource) -> StoreResult<Option<ConfigVersion>> {
        sqlx::query("SELECT * FROM config_versions WHERE source = ?1 ORDER BY version DESC LIMIT 1")
            .bind(source.as_str())
            .fetch_optional(&mut *self.read().await?)
            .await
            .map_err(|error| map_error("get latest config by source", error))?
            .map(|row| config_row(&row))
            .transpose()
    }

    async fn list_config_versions(&self) -> StoreResult<Vec<ConfigVersion>> {
        sqlx::query("SELECT * FROM config_versions ORDER BY version DESC")
            .fetch_all(&mut *self.read().await?)
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
             SELECT ?1, ?2, ?3, ?4, ?5 \
             WHERE ?1 = (SELECT coalesce(max(version), 0) + 1 FROM config_versions) \
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(number)
        .bind(&version.document)
        .bind(&version.etag)
        .bind(version.source.as_str())
        .bind(micros(version.created_at))
        .execute(&mut *self.writer.lock().await?)
        .await
        .map_err(|error| map_error("insert config version", error))?;
        Ok(inserted.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::sqlite_writes::tests::thread_name;
    use super::*;
    use crate::domain::aal::Channel;

    fn message(at: DateTime<Utc>) -> (OutboxMessage, AuditEvent) {
        let message = OutboxMessage {
            id: Uuid::now_v7(),
            channel: Channel::Sms,
            recipient: "+15550100".into(),
            template_type: "login_code".into(),
            locale: "en".into(),
            sealed_data: vec![1, 2, 3],
            identity_id: None,
            status: MessageStatus::Queued,
            send_count: 0,
            not_after: None,
            next_attempt_at: at,
            lease_until: None,
            created_at: at,
            updated_at: at,
        };
        let audit = AuditEvent {
            id: Uuid::now_v7(),
            event: "code.sent".into(),
            identity_id: None,
            flow_id: None,
            address_hash: None,
            client_ip: None,
            occurred_at: at,
        };
        (message, audit)
    }

    /// Another write, awaited to its end: the writer serves transactions one at a time, so an
    /// abandoned one would have committed before this one could.
    async fn settle(store: &SqliteStore) {
        let (message, audit) = message(Utc::now());
        store
            .enqueue(&message, &audit)
            .await
            .expect("a later write");
    }

    /// The store's WAL is copied into the database file by a connection of its own, well
    /// before the writer's own checkpoint would: a write soon stands in the database file alone.
    #[tokio::test]
    async fn the_store_checkpoints_its_wal_off_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("twofold.sqlite");
        let store = SqliteStore::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("open");
        let writer_checkpoints_at: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *store.writer.lock().await.expect("writer"))
            .await
            .expect("read the pragma");
        assert_eq!(writer_checkpoints_at, WRITER_CHECKPOINTS_AT);
        let wal_file_kept: i64 = sqlx::query_scalar("PRAGMA journal_size_limit")
            .fetch_one(&mut *store.writer.lock().await.expect("writer"))
            .await
            .expect("read the pragma");
        assert_eq!(wal_file_kept, WAL_FILE_KEPT);

        let (message, audit) = message(Utc::now());
        store.enqueue(&message, &audit).await.expect("queued");
        let copy = dir.path().join("copy.sqlite");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            // The database file without its WAL: only what a checkpoint copied is in it. A copy
            // taken while a checkpoint writes may be torn; a later one is not.
            std::fs::copy(&path, &copy).expect("copy the database file");
            let mut alone = SqliteConnectOptions::new()
                .filename(&copy)
                .connect()
                .await
                .expect("open the copy");
            let found: Result<i64, _> =
                sqlx::query_scalar("SELECT count(*) FROM courier_messages WHERE id = ?1")
                    .bind(message.id)
                    .fetch_one(&mut alone)
                    .await;
            alone.close().await.expect("close the copy");
            if matches!(found, Ok(1)) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the write never reached the database file: {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A request that hangs up while its transaction waits for the writer abandons it, as it
    /// did before the write thread: whatever follows a write in the caller (cache announcements,
    /// audit, waking the courier) must not be skipped for a write that commits.
    #[tokio::test]
    async fn a_lone_write_whose_caller_stops_waiting_is_abandoned() {
        let store = SqliteStore::connect("memory").await.expect("open");
        let (message, audit) = message(Utc::now());
        let busy = store.writer.lock().await.expect("writer");
        let cancelled = futures_util::FutureExt::now_or_never(store.enqueue(&message, &audit));
        assert!(cancelled.is_none(), "the caller stopped waiting");
        drop(busy);
        settle(&store).await;
        assert_eq!(store.get_message(message.id).await.expect("read"), None);
    }

    #[tokio::test]
    async fn a_queued_write_whose_caller_stops_waiting_is_abandoned() {
        let store = SqliteStore::connect("memory").await.expect("open");
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (held, holding) = tokio::sync::oneshot::channel::<()>();
        let holder = store.clone();
        let first = tokio::spawn(async move {
            let writer = holder.writer.clone();
            holder
                .writes
                .run(async move {
                    let _writer = writer.lock().await.expect("writer");
                    let _ = held.send(());
                    let _ = released.await;
                    Ok(())
                })
                .await
        });
        holding
            .await
            .expect("the first transaction holds the writer");

        let (message, audit) = message(Utc::now());
        let cancelled = futures_util::FutureExt::now_or_never(store.enqueue(&message, &audit));
        assert!(cancelled.is_none(), "queued behind the first, then dropped");
        release.send(()).expect("the first still waits");
        first.await.expect("joined").expect("the first committed");
        settle(&store).await;
        assert_eq!(store.get_message(message.id).await.expect("read"), None);
        let next = store
            .writes
            .run(async { thread_name() })
            .await
            .expect("ran");
        assert_ne!(
            next.as_deref(),
            Some("sqlite-writes"),
            "the abandoned transaction no longer counts as under way"
        );
    }
}
