-- no-transaction
-- Replaced by the indexes of 0004 and 0005.
DROP INDEX CONCURRENTLY courier_messages_status_next_attempt_idx;
