-- Configuration versions: every accepted configuration document, newest = in force.
-- `document` is the full effective configuration as JSON, identity schemas inlined, secrets
-- included (this table is as sensitive as the configuration file). `source` says where a version
-- came from, so a start-up can tell an edited file from API changes.
CREATE TABLE config_versions (
    version    INTEGER PRIMARY KEY NOT NULL,
    document   TEXT    NOT NULL,
    etag       TEXT    NOT NULL,
    source     TEXT    NOT NULL CHECK (source IN ('file', 'api', 'rollback')),
    created_at INTEGER NOT NULL
);
