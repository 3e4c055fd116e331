-- no-transaction
-- The courier's claim reads due messages through this index and the next one, one index scan
-- each (see PostgresStore::claim_due); migration 0006 drops the index they replace. That index
-- served an OR of both conditions, which Postgres answers with a bitmap scan: bitmap scans never
-- mark index entries of dead row versions as dead, and every claimed and sent message leaves
-- such entries behind, so each claim visited every message sent since the last vacuum (about
-- 3 ms per claim after 15,000 step-ups).
--
-- CONCURRENTLY, and so outside a transaction and one statement per migration: the outbox is never
-- emptied, and a plain CREATE or DROP INDEX would block enqueueing and claiming while it runs.
-- A build that fails leaves an INVALID index behind; drop it before running the migrations again.
CREATE INDEX CONCURRENTLY courier_messages_queued_idx
    ON courier_messages (next_attempt_at, id) WHERE status = 'queued';
