//! Helpers shared by the integration test crates: real Postgres and Redis servers come from
//! `scripts/services.sh`, and every test gets its own database or key prefix so tests can run in
//! parallel and against a server that earlier runs have used.
#![allow(dead_code)] // each test crate uses a different subset

/// Runs each scenario once per backend, as `<scenario>::embedded` and
/// `<scenario>::postgres_redis`, with the server's log captured.
#[allow(unused_macros)]
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                support::logs::capture();
                super::$scenario(Backend::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_redis() {
                support::logs::capture();
                super::$scenario(Backend::PostgresRedis).await;
            }
        }
    )*};
}

pub mod flows;
pub mod http_stub;
pub mod logs;
pub mod server;
pub mod stand_ins;

use sqlx::Connection;
use uuid::Uuid;

pub const POSTGRES_ENV: &str = "TWOFOLD_TEST_POSTGRES_URL";
pub const REDIS_ENV: &str = "TWOFOLD_TEST_REDIS_URL";
pub const POSTGRES_SOCKET_ENV: &str = "TWOFOLD_TEST_POSTGRES_SOCKET_URL";

/// The value of a service variable. Missing services fail the test: a suite that skips itself
/// silently looks green while testing nothing.
pub fn service_url(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{variable} is not set: start the test services with `eval \"$(scripts/services.sh)\"` \
             (as root) and run the tests from the same shell"
        ),
    }
}

/// A database of its own for one test, on the server `TWOFOLD_TEST_POSTGRES_URL` points at,
/// named `twofold_test_<UUIDv7>`.
///
/// It is dropped with this value once the test has passed. A failing test's database is kept
/// for inspection (its name is printed), and `scripts/services.sh` drops it an hour after it was
/// made, reading the time from the UUID. All of them used to be kept: at about 8 MiB each and
/// over a hundred a run, they helped fill a CI machine's disk.
pub struct TestDatabase {
    /// A DSN of the server's own database, from which this one is dropped.
    server: String,
    name: String,
    dsn: String,
}

impl TestDatabase {
    /// A new empty database, reached over TCP.
    pub async fn create() -> Self {
        let server = service_url(POSTGRES_ENV);
        let name = create_database(&server).await;
        let dsn = with_database(&server, &name);
        Self { server, name, dsn }
    }

    /// A new empty database, reached over the server's Unix socket
    /// (`TWOFOLD_TEST_POSTGRES_SOCKET_URL`, from `scripts/services.sh`).
    pub async fn create_reached_by_socket() -> Self {
        let server = service_url(POSTGRES_ENV);
        let name = create_database(&server).await;
        let dsn = with_database(&service_url(POSTGRES_SOCKET_ENV), &name);
        Self { server, name, dsn }
    }

    pub fn dsn(&self) -> &str {
        &self.dsn
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the failing test's database {}", self.name);
            return;
        }
        let (server, name) = (self.server.clone(), self.name.clone());
        // `drop` cannot await, and a test's runtime refuses to be blocked on from inside: a
        // thread with a runtime of its own drops the database while this one waits for it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(drop_database(&server, &name))
        })
        .join();
        // Housekeeping only: a database left behind is dropped by the next run's services.sh.
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop database {}: {error}", self.name),
            Err(_) => eprintln!("dropping database {} panicked", self.name),
        }
    }
}

async fn create_database(server: &str) -> String {
    let name = format!("twofold_test_{}", Uuid::now_v7().simple());
    let mut connection = sqlx::PgConnection::connect(server)
        .await
        .unwrap_or_else(|error| panic!("connect to {POSTGRES_ENV}: {error}"));
    // The name is generated above from hex digits only, so formatting it in is safe.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("create database {name}: {error}"));
    let _ = connection.close().await;
    name
}

/// Drops the database even while the test's server or pools still hold connections to it:
/// `FORCE` ends them, since nothing waits to close them once the test is over.
async fn drop_database(server: &str, name: &str) -> Result<(), String> {
    let mut connection = sqlx::PgConnection::connect(server)
        .await
        .map_err(|error| error.to_string())?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut connection)
    .await
    .map_err(|error| error.to_string())?;
    let _ = connection.close().await;
    Ok(())
}

/// Replaces the database (path) of a `postgres://` URL, keeping credentials and parameters.
fn with_database(url: &str, database: &str) -> String {
    let (without_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority_start = without_query.find("://").map_or(0, |index| index + 3);
    let server = match without_query[authority_start..].find('/') {
        Some(slash) => &without_query[..authority_start + slash],
        None => without_query,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

pub fn redis_url() -> String {
    service_url(REDIS_ENV)
}

/// A connection to the tests' Redis.
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// The keys of the tests' Redis that match `pattern`.
pub async fn redis_keys(pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut redis_connection().await)
        .await
        .unwrap()
}

/// The remaining TTL of a Redis key in milliseconds (negative when it has none or is gone).
pub async fn redis_pttl(key: &str) -> i64 {
    let mut redis = redis_connection().await;
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// Asserts that the Redis key expires, and within `limit`.
pub async fn assert_expires_within(key: &str, limit: std::time::Duration) {
    let remaining = redis_pttl(key).await;
    assert!(
        (1..=limit.as_millis() as i64).contains(&remaining),
        "{key}: {remaining} ms"
    );
}

/// A key prefix no other test (or earlier run) uses.
pub fn unique_redis_prefix() -> String {
    format!("twofold-test:{}:", Uuid::now_v7().simple())
}

#[test]
fn replaces_the_database_of_a_url() {
    assert_eq!(
        with_database(
            "postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable",
            "x"
        ),
        "postgres://u:p@127.0.0.1:5432/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://127.0.0.1", "x"),
        "postgres://127.0.0.1/x"
    );
}
