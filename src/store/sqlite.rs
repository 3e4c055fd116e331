//! SQLite backend (the embedded default) for identities and sessions. STUB.
use super::StoreResult;

#[derive(Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs `migrations/sqlite`. `memory` opens a
    /// private in-memory database.
    pub async fn connect(dsn: &str) -> StoreResult<Self> {
        let _ = dsn;
        unimplemented!("sqlite connect")
    }

    pub fn pool(&self) -> &sqlx::SqlitePool {
        &self.pool
    }
}
