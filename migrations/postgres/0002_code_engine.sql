-- The code engine's durable state: the per-identity failure budget, the courier outbox with its
-- delivery attempts, and audit events.

-- One row per identity that has failed a code. The window ends at `window_ends_at` (stored, not
-- derived, so reading the state needs no configuration); `lockouts` counts lockouts since the
-- last success and doubles the next one.
CREATE TABLE identity_code_failures (
    identity_id       uuid        PRIMARY KEY REFERENCES identities (id) ON DELETE CASCADE,
    window_started_at timestamptz NOT NULL,
    window_ends_at    timestamptz NOT NULL,
    failures          integer     NOT NULL CHECK (failures >= 0),
    lockouts          integer     NOT NULL CHECK (lockouts >= 0),
    locked_until      timestamptz NULL
);

-- No foreign key to identities: the delivery record outlives the identity it was for.
CREATE TABLE courier_messages (
    id              uuid        PRIMARY KEY,
    channel         text        NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient       text        NOT NULL,
    template_type   text        NOT NULL,
    locale          text        NOT NULL,
    sealed_data     bytea       NOT NULL,
    identity_id     uuid        NULL,
    status          text        NOT NULL
        CHECK (status IN ('queued', 'processing', 'sent', 'abandoned')),
    send_count      integer     NOT NULL CHECK (send_count >= 0),
    not_after       timestamptz NULL,
    next_attempt_at timestamptz NOT NULL,
    -- While processing: when the claiming worker's lease runs out.
    lease_until     timestamptz NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX courier_messages_status_next_attempt_idx
    ON courier_messages (status, next_attempt_at);
CREATE INDEX courier_messages_recipient_idx ON courier_messages (recipient);

CREATE TABLE courier_message_attempts (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id          uuid        NOT NULL REFERENCES courier_messages (id) ON DELETE CASCADE,
    attempted_at        timestamptz NOT NULL,
    gateway             text        NOT NULL,
    succeeded           boolean     NOT NULL,
    error               text        NULL,
    provider_message_id text        NULL
);
CREATE INDEX courier_message_attempts_message_idx
    ON courier_message_attempts (message_id, attempted_at);

-- No foreign keys: the audit trail outlives identities and flows.
CREATE TABLE audit_events (
    id           uuid        PRIMARY KEY,
    event        text        NOT NULL,
    identity_id  uuid        NULL,
    flow_id      uuid        NULL,
    address_hash text        NULL,
    client_ip    text        NULL,
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX audit_events_identity_id_idx ON audit_events (identity_id, occurred_at);
