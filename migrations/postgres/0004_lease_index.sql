-- Leases held right now are few: a partial index finds them without scanning the table, as
-- migrations/sqlite/0004.
CREATE INDEX oauth_credential_leased ON oauth_credential (lease_expires_at) WHERE lease_owner IS NOT NULL;
