-- Leases held right now are few (at most a sweep's batches): a partial index finds them without
-- scanning the table, for taking over the claims of processes that died on this host and for
-- counting the credentials other processes are refreshing.
CREATE INDEX oauth_credential_leased ON oauth_credential (lease_expires_at) WHERE lease_owner IS NOT NULL;
