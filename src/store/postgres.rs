//! Postgres backend for identities, sessions, the failure budget and the courier outbox.
//!
//! Queries are checked at run time (`sqlx::query` + `bind`): there is no database at build time.
//! Writes that touch several rows run in one transaction; an identity and its children are read in
//! one statement (aggregated as JSON), so it is never assembled from two different versions and
//! costs one round trip.
use super::batch::Batcher;
use super::codes::AuditEvent;
use super::sql_common::{map_error, map_migrate_error};
use super::{StoreError, StoreResult};
use durable_writes::DurableWrites;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Transaction};
use std::time::Duration;

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
/// How long a statement waits for a row another transaction holds before it fails with
/// `StoreError::LockTimedOut`, unless the DSN's `options` set a `lock_timeout` of their own.
/// Twofold's own transactions hold their rows for milliseconds; a lock held longer is someone
/// else's open transaction (an operator's `psql`, a batch job). Without a limit a step-up's write
/// waited for it as long as it stayed open, and so did every write batched with it.
const LOCK_TIMEOUT: &str = "1s";
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

macro_rules! message_columns {
    () => {
        "id, channel, recipient, template_type, locale, sealed_data, identity_id, status, \
         send_count, not_after, next_attempt_at, lease_until, created_at, updated_at"
    };
}

// Declared after the macros above: a `macro_rules!` is in scope only below its definition.
mod config_versions;
mod durable_writes;
mod failure_budget;
mod identities;
mod outbox;
mod sessions;

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

/// The pools' connection options: the DSN's, with [`LOCK_TIMEOUT`] unless the DSN sets one.
/// Migrations run without it (see [`PostgresStore::connect`]).
fn store_connect_options(dsn_options: &PgConnectOptions) -> PgConnectOptions {
    let sets_its_own = dsn_options
        .get_options()
        .is_some_and(|options| options.contains("lock_timeout"));
    if sets_its_own {
        dsn_options.clone()
    } else {
        dsn_options
            .clone()
            .options([("lock_timeout", LOCK_TIMEOUT)])
    }
}

/// The courier pool's connection options: the store's own, with commits that do not wait for the
/// WAL's flush.
fn courier_connect_options(store: &PgConnectOptions) -> PgConnectOptions {
    store.clone().options([("synchronous_commit", "off")])
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
        let dsn_options: PgConnectOptions = dsn
            .parse()
            .map_err(|error| map_error("connect to postgres", error))?;
        // On a connection without the lock timeout: the migrator waits on an advisory lock while
        // another replica migrates, and a migration may wait for a table's lock, both for
        // longer than a request should.
        let mut migrating = sqlx::PgConnection::connect_with(&dsn_options)
            .await
            .map_err(|error| map_error("connect to postgres", error))?;
        MIGRATOR
            .run(&mut migrating)
            .await
            .map_err(map_migrate_error)?;
        let _ = migrating.close().await;
        let options = store_connect_options(&dsn_options);
        let most = most_per_batch(&options);
        let courier_options = courier_connect_options(&options);
        let pool = pool_options(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|error| map_error("connect to postgres", error))?;
        // Connected now, not on first use: a server or pooler that refuses the start-up option
        // stops the process here instead of leaving every courier round failing.
        let courier_pool = pool_options(COURIER_CONNECTIONS)
            .connect_with(courier_options)
            .await
            .map_err(|error| map_error("connect the courier's pool to postgres", error))?;
        let writes = Batcher::new(DurableWrites { pool: pool.clone() }, BATCHES_AT_ONCE, most);
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

fn decode_all<T>(
    rows: &[PgRow],
    decode: fn(&PgRow) -> Result<T, sqlx::Error>,
    context: &'static str,
) -> StoreResult<Vec<T>> {
    rows.iter()
        .map(|row| decode(row).map_err(|error| map_error(context, error)))
        .collect()
}

fn counter(value: i64, what: &'static str) -> StoreResult<i32> {
    i32::try_from(value).map_err(|_| StoreError::Internal(format!("{what} out of range")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_courier_commits_without_waiting_for_the_flush_and_keeps_the_dsns_options() {
        let store = "postgres://twofold@db.example/twofold?options=-c%20search_path%3Dauth"
            .parse::<PgConnectOptions>()
            .expect("a DSN");
        let options = courier_connect_options(&store);
        assert_eq!(
            options.get_options(),
            Some("-c search_path=auth -c synchronous_commit=off")
        );
        assert_eq!(options.get_database(), Some("twofold"));
        assert_eq!(
            store.get_options(),
            Some("-c search_path=auth"),
            "the store's own commits still wait for the flush"
        );
    }

    #[test]
    fn the_store_waits_for_a_locked_row_a_second_unless_the_dsn_says_otherwise() {
        let options = |dsn: &str| {
            let parsed = dsn.parse::<PgConnectOptions>().expect("a DSN");
            store_connect_options(&parsed)
                .get_options()
                .map(str::to_owned)
        };
        assert_eq!(
            options("postgres://twofold@db.example/twofold").as_deref(),
            Some("-c lock_timeout=1s")
        );
        assert_eq!(
            options("postgres://twofold@db.example/twofold?options=-c%20search_path%3Dauth")
                .as_deref(),
            Some("-c search_path=auth -c lock_timeout=1s")
        );
        assert_eq!(
            options("postgres://twofold@db.example/twofold?options=-c%20lock_timeout%3D5s")
                .as_deref(),
            Some("-c lock_timeout=5s"),
            "the DSN's own limit stays, alone"
        );
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
