-- Salesforce's instance_url, and whether a token response carried expires_in, as
-- migrations/sqlite/0003.
ALTER TABLE oauth_credential ADD COLUMN instance_url text;

ALTER TABLE token_rotation ADD COLUMN expires_in_reported boolean;

-- current_token gains instance_url.
DROP VIEW current_token;
CREATE VIEW current_token AS
SELECT name,
       provider,
       owner,
       status,
       access_token,
       token_type,
       instance_url,
       to_char(to_timestamp(access_token_expires_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS expires_at,
       access_token_expires_at - extract(epoch FROM now())::bigint                                   AS seconds_left
FROM oauth_credential
WHERE status <> 'disabled' AND access_token IS NOT NULL;
