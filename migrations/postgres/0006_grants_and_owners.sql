-- Grants beyond refresh_token and client_credentials, and lookups by owner, as
-- migrations/sqlite/0006: grant_type gains 'jwt_bearer' (RFC 7523 §2.1: an access token for each
-- freshly signed assertion, no refresh token stored), the credential gains `subject` (the
-- assertion's `sub`), and an index finds an owner's credentials at a provider. PostgreSQL alters
-- the CHECK in place; no row is copied.
ALTER TABLE oauth_credential DROP CONSTRAINT oauth_credential_grant_type_check;
ALTER TABLE oauth_credential ADD CONSTRAINT oauth_credential_grant_type_check
    CHECK (grant_type IN ('refresh_token', 'client_credentials', 'jwt_bearer'));
ALTER TABLE oauth_credential ADD COLUMN subject text;

-- Not UNIQUE: a database may already hold two credentials of one owner and provider, and
-- `--allow-same-owner` permits them; a lookup that finds several reports the ambiguity.
CREATE INDEX oauth_credential_owner ON oauth_credential (provider, owner) WHERE owner IS NOT NULL;
