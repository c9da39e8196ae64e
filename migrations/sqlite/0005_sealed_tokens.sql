-- Sealed tokens (`[encryption]`): a sealed value is `tw1:<8 hex digit key id>:<base64url>`; any
-- other text is plaintext. These indexes hold only the first 13 characters of each token (the
-- part that names the key), so finding which keys are in use, and whether any plaintext is left,
-- takes a few index seeks at start instead of a read of the whole table.
CREATE INDEX oauth_credential_refresh_key ON oauth_credential (substr(refresh_token, 1, 13));
CREATE INDEX oauth_credential_access_key ON oauth_credential (substr(access_token, 1, 13));

-- current_token: a sealed access token (`seal_access_tokens = true`) is shown as NULL, and
-- access_token_sealed = 1 says why: read it with `tokenwarden token NAME`.
DROP VIEW current_token;
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
