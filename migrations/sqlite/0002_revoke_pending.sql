-- Revocation (`tokenwarden revoke NAME`). A revoked credential's row is deleted and its journal
-- kept; a revocation the provider could not take yet (network error, 5xx, 429) leaves the row
-- disabled with revoke_pending = 1 and its tokens, so the revocation can be sent again.
ALTER TABLE oauth_credential ADD COLUMN revoke_pending INTEGER NOT NULL DEFAULT 0;

-- Pending revocations are few: a partial index finds them without scanning the table.
CREATE INDEX oauth_credential_revoke_pending ON oauth_credential (next_attempt_at) WHERE revoke_pending = 1;
