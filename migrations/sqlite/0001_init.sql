-- tokenwarden schema. Times are INTEGER seconds since the Unix epoch (UTC); the views render ISO-8601.

-- One row per credential: one authorized account of one provider.
CREATE TABLE oauth_credential (
    id                       INTEGER PRIMARY KEY,
    name                     TEXT    NOT NULL UNIQUE,
    provider                 TEXT    NOT NULL,
    grant_type               TEXT    NOT NULL DEFAULT 'refresh_token'
                             CHECK (grant_type IN ('refresh_token', 'client_credentials')),
    scopes                   TEXT,              -- space-separated; NULL = the provider's configured scopes
    owner                    TEXT,              -- who the credential belongs to (per-user integrations)
    access_token             TEXT,
    token_type               TEXT,
    access_token_expires_at  INTEGER,
    refresh_token            TEXT,
    refresh_token_expires_at INTEGER,           -- when known
    status                   TEXT    NOT NULL DEFAULT 'active'
                             CHECK (status IN ('active', 'needs_reauthorization', 'disabled')),
    refresh_due_at           INTEGER NOT NULL DEFAULT 0,  -- 0 = due at once
    consecutive_failures     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at          INTEGER NOT NULL DEFAULT 0,  -- backoff after a transient failure
    last_error               TEXT,
    last_refreshed_at        INTEGER,
    lease_owner              TEXT,              -- the process holding the claim
    lease_expires_at         INTEGER,
    created_at               INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)),
    updated_at               INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER))
);

-- The sweep asks "what is due now?": a range scan over active rows only.
CREATE INDEX oauth_credential_due ON oauth_credential (refresh_due_at) WHERE status = 'active';

-- Every refresh attempt, journaled before the request and completed in the transaction that stores
-- its tokens. Never holds a token value: only short SHA-256 fingerprints.
CREATE TABLE token_rotation (
    id                      INTEGER PRIMARY KEY,
    credential_id           INTEGER NOT NULL,
    credential_name         TEXT    NOT NULL,
    provider                TEXT    NOT NULL,
    trigger                 TEXT    NOT NULL CHECK (trigger IN ('schedule', 'once', 'manual', 'recovery')),
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
    new_access_fingerprint  TEXT
);

CREATE INDEX token_rotation_credential ON token_rotation (credential_id, id);
CREATE INDEX token_rotation_pending ON token_rotation (outcome) WHERE outcome = 'pending';

-- What other programs read: the current access token of every credential that is not disabled.
-- A credential that needs re-authorization keeps serving its access token until it expires.
CREATE VIEW current_token AS
SELECT name,
       provider,
       owner,
       status,
       access_token,
       token_type,
       strftime('%Y-%m-%dT%H:%M:%SZ', access_token_expires_at, 'unixepoch') AS expires_at,
       access_token_expires_at - CAST(strftime('%s', 'now') AS INTEGER)      AS seconds_left
FROM oauth_credential
WHERE status <> 'disabled' AND access_token IS NOT NULL;

-- The rotation journal with readable times.
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
