-- Sealed tokens (`[encryption]`), as migrations/sqlite/0005: indexes on the first 13 characters
-- of each token (the part that names the key), and current_token showing a sealed access token as
-- NULL with access_token_sealed saying why.
CREATE INDEX oauth_credential_refresh_key ON oauth_credential (substr(refresh_token, 1, 13));
CREATE INDEX oauth_credential_access_key ON oauth_credential (substr(access_token, 1, 13));

DROP VIEW current_token;
CREATE VIEW current_token AS
SELECT name,
       provider,
       owner,
       status,
       CASE WHEN substr(access_token, 1, 4) = 'tw1:' THEN NULL ELSE access_token END AS access_token,
       token_type,
       instance_url,
       to_char(to_timestamp(access_token_expires_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS expires_at,
       access_token_expires_at - extract(epoch FROM now())::bigint                                   AS seconds_left,
       substr(access_token, 1, 4) = 'tw1:'                                                           AS access_token_sealed
FROM oauth_credential
WHERE status <> 'disabled' AND access_token IS NOT NULL;
