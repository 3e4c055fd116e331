//! Postgres backend for identities and sessions. STUB.
use super::StoreResult;

#[derive(Clone)]
pub struct PostgresStore {
    pool: sqlx::PgPool,
}

impl PostgresStore {
    /// Connects and runs the embedded migrations in `migrations/postgres`.
    pub async fn connect(dsn: &str) -> StoreResult<Self> {
        let _ = dsn;
        unimplemented!("postgres connect")
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }
}
