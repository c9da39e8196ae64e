-- Values a provider sends with the tokens that API callers need: Salesforce's instance_url (the
-- host to call). Kept from the last token response that carried one.
ALTER TABLE oauth_credential ADD COLUMN instance_url TEXT;

-- Whether a successful token response carried expires_in (otherwise default_expires_in was assumed).
ALTER TABLE token_rotation ADD COLUMN expires_in_reported INTEGER;

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
       strftime('%Y-%m-%dT%H:%M:%SZ', access_token_expires_at, 'unixepoch') AS expires_at,
       access_token_expires_at - CAST(strftime('%s', 'now') AS INTEGER)      AS seconds_left
FROM oauth_credential
WHERE status <> 'disabled' AND access_token IS NOT NULL;
