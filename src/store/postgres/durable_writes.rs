//! The step-up's durable writes (queued codes and session upgrades), batched or alone.
use super::identities::identity_from;
use super::{PostgresStore, bind_audit, counter};
use crate::domain::session::Session;
use crate::store::batch::BatchWrite;
use crate::store::codes::{AuditEvent, OutboxMessage};
use crate::store::sql_common::{corrupt, map_error};
use crate::store::{SessionUpgrade, StoreError, StoreResult, Upgraded};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, Row};
use uuid::Uuid;

impl PostgresStore {
    pub(super) async fn upgrade(
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
pub(super) struct UpgradeWanted {
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
pub(super) enum DurableWrite {
    /// A message and its `code.sent` event, written together.
    Enqueue(OutboxMessage, AuditEvent),
    Upgrade(UpgradeWanted),
}

/// What a [`DurableWrite`] answers, of its own kind.
#[allow(
    clippy::large_enum_variant,
    reason = "an answer is moved once, through a channel; boxing would allocate per upgrade"
)]
pub(super) enum Written {
    Enqueued,
    Upgraded(Option<Upgraded>),
}

/// A [`Written`] of the other kind than its write: a bug, reported rather than unwound.
pub(super) fn answered_as_the_other_kind(write: &str) -> StoreError {
    StoreError::Internal(format!("{write} was answered as the other kind of write"))
}

pub(super) struct DurableWrites {
    pub(super) pool: sqlx::PgPool,
}

impl BatchWrite for DurableWrites {
    type Item = DurableWrite;
    type Output = Written;

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

/// One column of a multi-row statement, for `unnest`: `value` of every row, in order.
fn column<'a, Row, Value>(rows: &'a [Row], value: impl Fn(&'a Row) -> Value) -> Vec<Value> {
    rows.iter().map(value).collect()
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
