-- no-transaction
-- Expired leases for the courier's claim; see 0004.
CREATE INDEX CONCURRENTLY courier_messages_lease_idx
    ON courier_messages (lease_until) WHERE status = 'processing';
