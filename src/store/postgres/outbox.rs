//! The courier outbox: `Outbox`, and decoding message, attempt and audit rows.
use super::durable_writes::{DurableWrite, Written, answered_as_the_other_kind};
use super::{PostgresStore, bind_audit, decode_all};
use crate::store::StoreResult;
use crate::store::codes::{
    AttemptResult, AuditEvent, DeliveryAttempt, MessageStatus, Outbox, OutboxMessage,
};
use crate::store::sql_common::{MessageRow, after_attempt, lease_end, map_error};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use std::time::Duration;
use uuid::Uuid;

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
