-- Identities, their credentials, identifiers and verifiable addresses, and sessions.

CREATE TABLE identities (
    id          uuid        PRIMARY KEY,
    schema_id   text        NOT NULL,
    traits      jsonb       NOT NULL,
    state       text        NOT NULL CHECK (state IN ('active', 'inactive')),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- One password credential per identity; code credentials need no secret of their own.
CREATE TABLE identity_credentials (
    identity_id   uuid        NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    kind          text        NOT NULL CHECK (kind IN ('password')),
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT identity_credentials_identity_kind_key UNIQUE (identity_id, kind)
);

-- `position` keeps the schema order the domain relies on (first code address is the default).
CREATE TABLE identity_identifiers (
    identity_id uuid    NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    kind        text    NOT NULL CHECK (kind IN ('password', 'code')),
    value       text    NOT NULL,
    trait_name  text    NOT NULL,
    channel     text    NULL CHECK (channel IN ('email', 'sms')),
    -- The unique identifier index: an identifier belongs to at most one identity per kind.
    CONSTRAINT identity_identifiers_kind_value_key UNIQUE (kind, value)
);
CREATE INDEX identity_identifiers_identity_id_idx ON identity_identifiers (identity_id);

CREATE TABLE identity_verifiable_addresses (
    id          uuid        PRIMARY KEY,
    identity_id uuid        NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    position    integer     NOT NULL,
    value       text        NOT NULL,
    channel     text        NOT NULL CHECK (channel IN ('email', 'sms')),
    trait_name  text        NOT NULL,
    verified    boolean     NOT NULL DEFAULT false,
    verified_at timestamptz NULL,
    CONSTRAINT identity_verifiable_addresses_identity_channel_value_key
        UNIQUE (identity_id, channel, value)
);

CREATE TABLE sessions (
    id               uuid        PRIMARY KEY,
    identity_id      uuid        NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    token_hash       bytea       NOT NULL,
    aal              text        NOT NULL CHECK (aal IN ('aal1', 'aal2')),
    methods          jsonb       NOT NULL,
    issued_at        timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    authenticated_at timestamptz NOT NULL,
    revoked_at       timestamptz NULL,
    CONSTRAINT sessions_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX sessions_identity_id_idx ON sessions (identity_id, issued_at DESC);
