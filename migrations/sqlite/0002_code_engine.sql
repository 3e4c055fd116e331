-- The code engine's durable state: the per-identity failure budget, the courier outbox with its
-- delivery attempts, and audit events. Conventions as in 0001 (BLOB ids, INTEGER microseconds).

-- One row per identity that has failed a code. The window ends at `window_ends_at` (stored, not
-- derived, so reading the state needs no configuration); `lockouts` counts lockouts since the
-- last success and doubles the next one.
CREATE TABLE identity_code_failures (
    identity_id       BLOB    PRIMARY KEY NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    window_started_at INTEGER NOT NULL,
    window_ends_at    INTEGER NOT NULL,
    failures          INTEGER NOT NULL CHECK (failures >= 0),
    lockouts          INTEGER NOT NULL CHECK (lockouts >= 0),
    locked_until      INTEGER NULL
);

-- No foreign key to identities: the delivery record outlives the identity it was for.
CREATE TABLE courier_messages (
    id              BLOB    PRIMARY KEY NOT NULL,
    channel         TEXT    NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient       TEXT    NOT NULL,
    template_type   TEXT    NOT NULL,
    locale          TEXT    NOT NULL,
    sealed_data     BLOB    NOT NULL,
    identity_id     BLOB    NULL,
    status          TEXT    NOT NULL
        CHECK (status IN ('queued', 'processing', 'sent', 'abandoned')),
    send_count      INTEGER NOT NULL CHECK (send_count >= 0),
    not_after       INTEGER NULL,
    next_attempt_at INTEGER NOT NULL,
    -- While processing: when the claiming worker's lease runs out.
    lease_until     INTEGER NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX courier_messages_status_next_attempt_idx
    ON courier_messages (status, next_attempt_at);
CREATE INDEX courier_messages_recipient_idx ON courier_messages (recipient);

CREATE TABLE courier_message_attempts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id          BLOB    NOT NULL REFERENCES courier_messages (id) ON DELETE CASCADE,
    attempted_at        INTEGER NOT NULL,
    gateway             TEXT    NOT NULL,
    succeeded           INTEGER NOT NULL,
    error               TEXT    NULL,
    provider_message_id TEXT    NULL
);
CREATE INDEX courier_message_attempts_message_idx
    ON courier_message_attempts (message_id, attempted_at);

-- No foreign keys: the audit trail outlives identities and flows.
CREATE TABLE audit_events (
    id           BLOB    PRIMARY KEY NOT NULL,
    event        TEXT    NOT NULL,
    identity_id  BLOB    NULL,
    flow_id      BLOB    NULL,
    address_hash TEXT    NULL,
    client_ip    TEXT    NULL,
    occurred_at  INTEGER NOT NULL
);
CREATE INDEX audit_events_identity_id_idx ON audit_events (identity_id, occurred_at);
