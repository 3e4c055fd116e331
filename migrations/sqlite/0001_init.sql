-- Identities, their credentials, identifiers and verifiable addresses, and sessions.
--
-- Conventions: ids are 16-byte BLOBs (sqlx's UUID encoding; byte order is UUIDv7 time order, so
-- `ORDER BY id` is creation order); timestamps are INTEGER microseconds since the Unix epoch in
-- UTC (the precision Postgres keeps, and they compare as numbers); JSON is TEXT.

CREATE TABLE identities (
    id          BLOB    PRIMARY KEY NOT NULL,
    schema_id   TEXT    NOT NULL,
    traits      TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('active', 'inactive')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- One password credential per identity; code credentials need no secret of their own.
CREATE TABLE identity_credentials (
    identity_id   BLOB    NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('password')),
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (identity_id, kind)
);

-- `position` keeps the schema order the domain relies on (first code address is the default).
CREATE TABLE identity_identifiers (
    identity_id BLOB    NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('password', 'code')),
    value       TEXT    NOT NULL,
    trait_name  TEXT    NOT NULL,
    channel     TEXT    NULL CHECK (channel IN ('email', 'sms')),
    -- The unique identifier index: an identifier belongs to at most one identity per kind.
    UNIQUE (kind, value)
);
CREATE INDEX identity_identifiers_identity_id_idx ON identity_identifiers (identity_id);

CREATE TABLE identity_verifiable_addresses (
    id          BLOB    PRIMARY KEY NOT NULL,
    identity_id BLOB    NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    value       TEXT    NOT NULL,
    channel     TEXT    NOT NULL CHECK (channel IN ('email', 'sms')),
    trait_name  TEXT    NOT NULL,
    verified    INTEGER NOT NULL DEFAULT 0,
    verified_at INTEGER NULL,
    UNIQUE (identity_id, channel, value)
);

CREATE TABLE sessions (
    id               BLOB    PRIMARY KEY NOT NULL,
    identity_id      BLOB    NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    token_hash       BLOB    NOT NULL UNIQUE,
    aal              TEXT    NOT NULL CHECK (aal IN ('aal1', 'aal2')),
    methods          TEXT    NOT NULL,
    issued_at        INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    authenticated_at INTEGER NOT NULL,
    revoked_at       INTEGER NULL
);
CREATE INDEX sessions_identity_id_idx ON sessions (identity_id, issued_at DESC);
