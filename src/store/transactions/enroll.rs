//! Credentials entering the store: `add` for a new row, `store_authorized` for tokens obtained
//! by an authorization grant (spending the invitation it came through, if any).

use crate::domain::{Secret, UnixTime};
use crate::store::StoreError;
use crate::store::backend::Db;
use crate::store::records::{Authorized, AuthorizedAs, NewCredential};
use crate::store::statement::sql;

impl Db {
    /// Imports a credential, due at once; `seal(id)` gives its refresh token's stored form.
    pub(in crate::store) async fn add(
        &self,
        c: &NewCredential<'_>,
        replace: bool,
        now: UnixTime,
        seal: &(dyn Fn(i64) -> Option<Secret> + Sync),
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        let exists: Option<(i64,)> = sql("SELECT id FROM oauth_credential WHERE name = $1")
            .bind(c.name)
            .fetch_optional(w.conn())
            .await?;
        match (exists, replace) {
            (Some(_), false) => {
                w.rollback().await?;
                return Err(StoreError::Exists(c.name.to_owned()));
            }
            (Some((id,)), true) => {
                sql(
                    "UPDATE oauth_credential SET provider = $1, grant_type = $2, scopes = $3, owner = $4, \
                        refresh_token = $5, access_token = NULL, token_type = NULL, access_token_expires_at = NULL, \
                        refresh_token_expires_at = NULL, status = 'active', refresh_due_at = 0, consecutive_failures = 0, \
                        next_attempt_at = 0, last_error = NULL, revoke_pending = false, updated_at = $6, subject = $8 \
                     WHERE id = $7",
                )
                .bind(c.provider)
                .bind(c.grant_type.as_str())
                .bind(c.scopes)
                .bind(c.owner)
                .bind(seal(id))
                .bind(now)
                .bind(id)
                .bind(c.subject)
                .execute(w.conn())
                .await?;
            }
            (None, _) => {
                // The row id is part of what seals the token: insert, then store it.
                let (id,): (i64,) = sql(
                    "INSERT INTO oauth_credential (name, provider, grant_type, scopes, owner, subject, \
                        refresh_due_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $7, 0, $6, $6) RETURNING id",
                )
                .bind(c.name)
                .bind(c.provider)
                .bind(c.grant_type.as_str())
                .bind(c.scopes)
                .bind(c.owner)
                .bind(now)
                .bind(c.subject)
                .fetch_one(w.conn())
                .await?;
                sql("UPDATE oauth_credential SET refresh_token = $1 WHERE id = $2")
                    .bind(seal(id))
                    .bind(id)
                    .execute(w.conn())
                    .await?;
            }
        }
        w.commit().await
    }

    /// Stores an authorization (a new credential, or new tokens for an existing one) and journals
    /// it. `seal(id)` gives the tokens' stored form for row `id`; `fingerprint(id, stored)` the
    /// journal's fingerprint of the refresh token stored before.
    pub(in crate::store) async fn store_authorized(
        &self,
        a: &Authorized<'_>,
        now: UnixTime,
        seal: &(dyn Fn(i64) -> (Secret, Option<Secret>) + Sync),
        fingerprint: &(dyn Fn(i64, &Secret) -> Option<String> + Sync),
    ) -> Result<AuthorizedAs, StoreError> {
        let t = a.tokens;
        let mut w = self.write().await?;
        if let Err(e) = super::invites::spend_invite(w.conn(), a, now).await {
            w.rollback().await?;
            return Err(e);
        }
        let existing: Option<(i64, String, bool, Option<Secret>)> = sql(
            "SELECT id, status, revoke_pending, refresh_token FROM oauth_credential WHERE name = $1",
        )
        .bind(a.name)
        .fetch_optional(w.conn())
        .await?;
        let (id, how, old_refresh) = if let Some((id, status, revoke_pending, old)) = existing {
            let (access, refresh) = seal(id);
            let old = old.map(|o| fingerprint(id, &o));
            sql(
                "UPDATE oauth_credential SET provider = $1, grant_type = 'refresh_token', scopes = $2, \
                    owner = COALESCE($3, owner), access_token = $4, token_type = $5, access_token_expires_at = $6, \
                    refresh_token = CASE WHEN $7 IS NULL AND provider = $1 THEN refresh_token ELSE $7 END, \
                    refresh_token_expires_at = CASE WHEN $7 IS NULL AND provider = $1 THEN refresh_token_expires_at ELSE $8 END, \
                    status = 'active', refresh_due_at = $9, \
                    consecutive_failures = 0, next_attempt_at = 0, last_error = NULL, revoke_pending = false, \
                    instance_url = $12, last_refreshed_at = $10, updated_at = $10 WHERE id = $11",
            )
            .bind(a.provider)
            .bind(a.scopes)
            .bind(a.owner)
            .bind(&access)
            .bind(&t.token_type)
            .bind(t.expires_at)
            .bind(&refresh)
            .bind(t.refresh_token_expires_at)
            .bind(a.refresh_due_at)
            .bind(now)
            .bind(id)
            .bind(&t.instance_url)
            .execute(w.conn())
            .await?;
            let how = AuthorizedAs::Replaced {
                status,
                revoke_pending,
            };
            (id, how, old)
        } else {
            // The row id is part of what seals the tokens: insert, then store them.
            let (id,): (i64,) = sql(
                "INSERT INTO oauth_credential (name, provider, grant_type, scopes, owner, token_type, \
                    access_token_expires_at, refresh_token_expires_at, refresh_due_at, \
                    last_refreshed_at, created_at, updated_at, instance_url) \
                 VALUES ($1, $2, 'refresh_token', $3, $4, $5, $6, $7, $8, $9, $9, $9, $10) RETURNING id",
            )
            .bind(a.name)
            .bind(a.provider)
            .bind(a.scopes)
            .bind(a.owner)
            .bind(&t.token_type)
            .bind(t.expires_at)
            .bind(t.refresh_token_expires_at)
            .bind(a.refresh_due_at)
            .bind(now)
            .bind(&t.instance_url)
            .fetch_one(w.conn())
            .await?;
            let (access, refresh) = seal(id);
            sql("UPDATE oauth_credential SET access_token = $1, refresh_token = $2 WHERE id = $3")
                .bind(access)
                .bind(refresh)
                .bind(id)
                .execute(w.conn())
                .await?;
            (id, AuthorizedAs::Created, None)
        };
        sql(
            "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at, \
                finished_at, duration_ms, outcome, http_status, new_expires_at, refresh_token_rotated, \
                old_refresh_fingerprint, new_refresh_fingerprint, new_access_fingerprint, invite_id) \
             VALUES ($1, $2, $3, $14, $4, $5, $6, $7, 'authorized', $8, $9, $10, $11, $12, $13, $15)",
        )
        .bind(id)
        .bind(a.name)
        .bind(a.provider)
        .bind(a.actor)
        .bind(now - a.duration_ms / 1000)
        .bind(now)
        .bind(a.duration_ms)
        .bind(a.http_status.map(i64::from))
        .bind(t.expires_at)
        .bind(old_refresh.is_some())
        .bind(old_refresh.flatten())
        .bind(t.refresh_token.as_ref().map(Secret::fingerprint))
        .bind(t.access_token.fingerprint())
        .bind(a.trigger())
        .bind(a.invite)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(how)
    }
}
