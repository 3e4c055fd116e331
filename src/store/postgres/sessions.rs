//! Sessions: `SessionStore` and decoding session rows.
use super::identities::identity_from;
use super::{PostgresStore, decode_all};
use crate::domain::identity::Identity;
use crate::domain::session::Session;
use crate::store::sql_common::{SessionRow, map_error};
use crate::store::{SessionStore, SessionUpgrade, StoreResult, Upgraded};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

macro_rules! session_select {
    () => {
        "SELECT id, identity_id, token_hash, aal, methods, issued_at, expires_at, \
         authenticated_at, revoked_at FROM sessions "
    };
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

fn decode_session(row: Option<PgRow>) -> StoreResult<Option<Session>> {
    row.map(|row| {
        session_row(&row)
            .map_err(|error| map_error("decode session", error))?
            .into_domain()
    })
    .transpose()
}
