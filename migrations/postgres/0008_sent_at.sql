-- When an attempt's request was sent (issue 19). A journal entry is written `pending` when its
-- credential is claimed, before the request; `sent_at` is set, in its own commit, immediately
-- before the request goes out, and only while the entry is still `pending` (a process that took
-- the claim over has marked it `interrupted` by then, and the late process then sends nothing).
-- NULL: the request was never sent, so the claim may be taken over and its refresh token sent
-- without presenting it twice. Set: the provider may have seen that refresh token, and a second
-- presentation follows the provider's `refresh_token_reuse`.
ALTER TABLE token_rotation ADD COLUMN sent_at BIGINT;
