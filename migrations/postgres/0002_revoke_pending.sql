-- Revocation (`tokenwarden revoke NAME`), as migrations/sqlite/0002: a revocation the provider
-- could not take yet leaves the row disabled with revoke_pending and its tokens.
ALTER TABLE oauth_credential ADD COLUMN revoke_pending boolean NOT NULL DEFAULT false;

CREATE INDEX oauth_credential_revoke_pending ON oauth_credential (next_attempt_at) WHERE revoke_pending;
