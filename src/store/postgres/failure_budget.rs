//! The failure budget: `FailureBudgetStore`.
use super::{PostgresStore, commit, counter};
use crate::store::StoreResult;
use crate::store::codes::{FailureBudgetStore, FailureState};
use crate::store::sql_common::{FailureRow, count_failure, map_error};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use std::time::Duration;
use uuid::Uuid;

/// Lifts the store's `lock_timeout` for the rest of `tx`. A failure's count waits for its row as
/// long as it takes: one given up on would go uncounted, and the budget's promise (every wrong
/// code counted, security requirement G2) would hold only for callers that queue up slowly. The
/// row is locked only by these short transactions, unless an operator holds it. A reset waits
/// too, so a right code is not refused for a lock held by wrong ones.
async fn wait_for_locks(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> StoreResult<()> {
    sqlx::query("SET LOCAL lock_timeout = 0")
        .execute(&mut **tx)
        .await
        .map_err(|error| map_error("wait for the failure state's lock", error))?;
    Ok(())
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
        wait_for_locks(&mut tx).await?;
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
        let mut tx = self.begin().await?;
        wait_for_locks(&mut tx).await?;
        sqlx::query("DELETE FROM identity_code_failures WHERE identity_id = $1")
            .bind(identity_id)
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("reset failures", error))?;
        commit(tx).await
    }
}
