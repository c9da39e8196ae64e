-- Grants beyond refresh_token and client_credentials, and lookups by owner.
--
-- grant_type gains 'jwt_bearer' (RFC 7523 §2.1: each access token is had for a freshly signed
-- assertion; no refresh token is stored), and the credential gains `subject`, the assertion's
-- `sub` (a Salesforce user name, a Google account to act for). SQLite cannot alter a CHECK
-- constraint, so the table is rebuilt (https://sqlite.org/lang_altertable.html#otheralter):
-- create the new table, copy every row, drop the old one, rename, then recreate its indexes and
-- the view that reads it. Runs inside the migration's transaction: all of it or nothing.
-- Every column of 0001-0005 is copied by name (0004 and 0005 add indexes and a view, recreated
-- below); a later migration that adds a column to
-- oauth_credential must come after this one.

DROP VIEW current_token;

CREATE TABLE oauth_credential_new (
    id                       INTEGER PRIMARY KEY,
    name                     TEXT    NOT NULL UNIQUE,
    provider                 TEXT    NOT NULL,
    grant_type               TEXT    NOT NULL DEFAULT 'refresh_token'
                             CHECK (grant_type IN ('refresh_token', 'client_credentials', 'jwt_bearer')),
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
    updated_at               INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)),
    revoke_pending           INTEGER NOT NULL DEFAULT 0,
    instance_url             TEXT,
    subject                  TEXT               -- jwt_bearer: the assertion's sub; NULL = none sent
);

INSERT INTO oauth_credential_new (id, name, provider, grant_type, scopes, owner, access_token, token_type,
    access_token_expires_at, refresh_token, refresh_token_expires_at, status, refresh_due_at,
    consecutive_failures, next_attempt_at, last_error, last_refreshed_at, lease_owner, lease_expires_at,
    created_at, updated_at, revoke_pending, instance_url)
SELECT id, name, provider, grant_type, scopes, owner, access_token, token_type,
    access_token_expires_at, refresh_token, refresh_token_expires_at, status, refresh_due_at,
    consecutive_failures, next_attempt_at, last_error, last_refreshed_at, lease_owner, lease_expires_at,
    created_at, updated_at, revoke_pending, instance_url
FROM oauth_credential;

DROP TABLE oauth_credential;
ALTER TABLE oauth_credential_new RENAME TO oauth_credential;

CREATE INDEX oauth_credential_due ON oauth_credential (refresh_due_at) WHERE status = 'active';
CREATE INDEX oauth_credential_revoke_pending ON oauth_credential (next_attempt_at) WHERE revoke_pending = 1;
CREATE INDEX oauth_credential_leased ON oauth_credential (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX oauth_credential_refresh_key ON oauth_credential (substr(refresh_token, 1, 13));
CREATE INDEX oauth_credential_access_key ON oauth_credential (substr(access_token, 1, 13));

-- `token --provider P --owner O` and the one-credential-per-owner check. Not UNIQUE: a database
-- may already hold two credentials of one owner and provider, and `--allow-same-owner` permits
-- them on purpose; a lookup that finds more than one reports the ambiguity instead of guessing.
CREATE INDEX oauth_credential_owner ON oauth_credential (provider, owner) WHERE owner IS NOT NULL;

-- As 0005 left it: a sealed access token is shown as NULL, with access_token_sealed = 1.
CREATE VIEW current_token AS
SELECT name,
       provider,
       owner,
       status,
       CASE WHEN substr(access_token, 1, 4) = 'tw1:' THEN NULL ELSE access_token END AS access_token,
       token_type,
       instance_url,
       strftime('%Y-%m-%dT%H:%M:%SZ', access_token_expires_at, 'unixepoch') AS expires_at,
       access_token_expires_at - CAST(strftime('%s', 'now') AS INTEGER)      AS seconds_left,
       substr(access_token, 1, 4) = 'tw1:'                                   AS access_token_sealed
FROM oauth_credential
WHERE status <> 'disabled' AND access_token IS NOT NULL;
