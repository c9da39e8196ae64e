-- Invitations (`tokenwarden invite`): one-time links with which an owner authorizes their own
-- credential in a browser.
--
-- The link's secret is never stored: only its SHA-256 (hex). A link is spent at most once: the
-- transaction that stores the tokens it obtained sets `spent_at` where it is still NULL, and only
-- one can. The journal gains trigger 'invite' and the link's id (`invite_id`) for the
-- authorizations made through one. SQLite cannot alter a CHECK constraint, so token_rotation is
-- rebuilt (https://sqlite.org/lang_altertable.html#otheralter), every column of 0001-0006 copied
-- by name; the view that reads it is recreated as it was. A later migration that adds a column to
-- token_rotation must come after this one (0008 does).

CREATE TABLE enroll_invite (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT    NOT NULL UNIQUE,     -- hex SHA-256 of the link's secret
    name        TEXT    NOT NULL,            -- the credential it creates or re-authorizes
    provider    TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    scopes      TEXT,                        -- space-separated; NULL = the provider's scopes
    reauthorize INTEGER NOT NULL DEFAULT 0,  -- the credential existed when the link was made
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    spent_at    INTEGER,                     -- when the tokens it obtained were stored
    revoked_at  INTEGER                      -- `invite --revoke`
);

-- Outstanding links per credential (`invite --list`, `status`).
CREATE INDEX enroll_invite_outstanding ON enroll_invite (name, expires_at)
    WHERE spent_at IS NULL AND revoked_at IS NULL;

DROP VIEW rotation_log;

CREATE TABLE token_rotation_new (
    id                      INTEGER PRIMARY KEY,
    credential_id           INTEGER NOT NULL,
    credential_name         TEXT    NOT NULL,
    provider                TEXT    NOT NULL,
    trigger                 TEXT    NOT NULL
                            CHECK (trigger IN ('schedule', 'once', 'manual', 'recovery', 'invite')),
    lease_owner             TEXT    NOT NULL,
    started_at              INTEGER NOT NULL,
    finished_at             INTEGER,
    duration_ms             INTEGER,
    outcome                 TEXT    NOT NULL DEFAULT 'pending',
    http_status             INTEGER,
    error_code              TEXT,
    error_description       TEXT,
    old_expires_at          INTEGER,
    new_expires_at          INTEGER,
    refresh_token_rotated   INTEGER,
    old_refresh_fingerprint TEXT,
    new_refresh_fingerprint TEXT,
    new_access_fingerprint  TEXT,
    expires_in_reported     INTEGER,
    invite_id               INTEGER            -- trigger 'invite': the link's id (never its secret)
);

INSERT INTO token_rotation_new (id, credential_id, credential_name, provider, trigger, lease_owner,
    started_at, finished_at, duration_ms, outcome, http_status, error_code, error_description,
    old_expires_at, new_expires_at, refresh_token_rotated, old_refresh_fingerprint,
    new_refresh_fingerprint, new_access_fingerprint, expires_in_reported)
SELECT id, credential_id, credential_name, provider, trigger, lease_owner,
    started_at, finished_at, duration_ms, outcome, http_status, error_code, error_description,
    old_expires_at, new_expires_at, refresh_token_rotated, old_refresh_fingerprint,
    new_refresh_fingerprint, new_access_fingerprint, expires_in_reported
FROM token_rotation;

DROP TABLE token_rotation;
ALTER TABLE token_rotation_new RENAME TO token_rotation;

CREATE INDEX token_rotation_credential ON token_rotation (credential_id, id);
CREATE INDEX token_rotation_pending ON token_rotation (outcome) WHERE outcome = 'pending';

-- As 0001 made it.
CREATE VIEW rotation_log AS
SELECT id,
       credential_name,
       provider,
       trigger,
       strftime('%Y-%m-%dT%H:%M:%SZ', started_at, 'unixepoch')     AS started_at,
       duration_ms,
       outcome,
       http_status,
       error_code,
       error_description,
       strftime('%Y-%m-%dT%H:%M:%SZ', old_expires_at, 'unixepoch') AS old_expires_at,
       strftime('%Y-%m-%dT%H:%M:%SZ', new_expires_at, 'unixepoch') AS new_expires_at,
       refresh_token_rotated,
       old_refresh_fingerprint,
       new_refresh_fingerprint
FROM token_rotation;
