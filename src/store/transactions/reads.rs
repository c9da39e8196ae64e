//! Reads for status, log, metrics and consumers: no transaction, no lease.

use crate::domain::UnixTime;
use crate::store::StoreError;
use crate::store::backend::Db;
use crate::store::records::{Aggregate, AggregateWindow, CredentialSummary, RotationRecord};
use crate::store::statement::sql;

impl Db {
    /// Per provider and status: counts, failing, expiring by `$2`, soonest expiry, oldest
    /// refresh, refresh tokens expiring by `$5` and the soonest of them, claims in flight at `$1`.
    /// One statement, however many rows.
    pub(in crate::store) async fn aggregates(
        &self,
        now: UnixTime,
        window: AggregateWindow,
        failing: crate::domain::Failing,
    ) -> Result<Vec<Aggregate>, StoreError> {
        Ok(sql(
            "SELECT provider, status, count(*) AS credentials, \
                sum(CASE WHEN status = 'active' AND (consecutive_failures >= $3 \
                    OR (consecutive_failures > 0 AND $1 - COALESCE(last_refreshed_at, created_at) >= $4)) \
                    THEN 1 ELSE 0 END) AS failing, \
                sum(CASE WHEN status <> 'disabled' AND access_token_expires_at <= $2 THEN 1 ELSE 0 END) AS expiring, \
                min(CASE WHEN status <> 'disabled' THEN access_token_expires_at END) AS soonest_expiry, \
                min(CASE WHEN status <> 'disabled' THEN last_refreshed_at END) AS oldest_refresh, \
                sum(CASE WHEN status <> 'disabled' AND refresh_token_expires_at <= $5 THEN 1 ELSE 0 END) \
                    AS refresh_token_expiring, \
                min(CASE WHEN status <> 'disabled' THEN refresh_token_expires_at END) AS refresh_token_soonest_expiry, \
                sum(CASE WHEN lease_owner IS NOT NULL AND lease_expires_at > $1 THEN 1 ELSE 0 END) AS renewals_in_flight \
             FROM oauth_credential GROUP BY provider, status ORDER BY provider, status",
        )
        .bind(now)
        .bind(window.access_token_by)
        .bind(i64::from(failing.after_failures))
        .bind(failing.after_secs)
        .bind(window.refresh_token_by)
        .fetch_all(self.read().await?.conn())
        .await?)
    }

    /// Every credential, by name, without tokens.
    pub(in crate::store) async fn summaries(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        Ok(sql(
            "SELECT name, provider, owner, grant_type, status, access_token_expires_at, refresh_token_expires_at, \
                refresh_due_at, last_refreshed_at, consecutive_failures, next_attempt_at, last_error, \
                COALESCE(last_refreshed_at, created_at) AS last_success_at, instance_url, \
                lease_owner, lease_expires_at, \
                CASE WHEN refresh_token IS NULL THEN NULL WHEN substr(refresh_token, 1, 4) <> 'tw1:' THEN 'plaintext' \
                    WHEN substr(refresh_token, 13, 1) = ':' THEN substr(refresh_token, 5, 8) ELSE 'malformed' END \
                    AS refresh_token_key, \
                CASE WHEN access_token IS NULL THEN NULL WHEN substr(access_token, 1, 4) <> 'tw1:' THEN 'plaintext' \
                    WHEN substr(access_token, 13, 1) = ':' THEN substr(access_token, 5, 8) ELSE 'malformed' END \
                    AS access_token_key, \
                (SELECT max(started_at) FROM token_rotation t \
                  WHERE t.credential_id = c.id AND t.outcome = 'pending') AS attempt_started_at, \
                (SELECT max(sent_at) FROM token_rotation t \
                  WHERE t.credential_id = c.id AND t.outcome = 'pending') AS attempt_sent_at \
             FROM oauth_credential c ORDER BY name",
        )
        .fetch_all(self.read().await?.conn())
        .await?)
    }

    /// Whether a credential called `name` exists.
    pub(in crate::store) async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let row: Option<(i64,)> = sql("SELECT id FROM oauth_credential WHERE name = $1")
            .bind(name)
            .fetch_optional(self.read().await?.conn())
            .await?;
        Ok(row.is_some())
    }

    /// The newest `limit` journal entries, of one credential or all, newest first.
    pub(in crate::store) async fn rotations(
        &self,
        name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RotationRecord>, StoreError> {
        Ok(sql(
            "SELECT id, credential_name, provider, trigger, started_at, duration_ms, outcome, http_status, error_code, \
                error_description, old_expires_at, new_expires_at, refresh_token_rotated, old_refresh_fingerprint, \
                new_refresh_fingerprint, expires_in_reported \
             FROM token_rotation WHERE $1 IS NULL OR credential_name = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(name)
        .bind(i64::from(limit))
        .fetch_all(self.read().await?.conn())
        .await?)
    }

    /// The current token of `name` as stored, with its lease and backoff.
    pub(in crate::store) async fn token_state(
        &self,
        name: &str,
    ) -> Result<Option<crate::store::TokenState>, StoreError> {
        Ok(sql(
            "SELECT id, name, provider, status, access_token, token_type, access_token_expires_at, instance_url, \
                lease_expires_at, last_error, next_attempt_at FROM oauth_credential WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.read().await?.conn())
        .await?)
    }

    /// The names of `owner`'s credentials at `provider` that are not disabled, by name.
    pub(in crate::store) async fn owned_by(
        &self,
        provider: &str,
        owner: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sql("SELECT name FROM oauth_credential \
             WHERE provider = $1 AND owner = $2 AND status <> 'disabled' ORDER BY name")
        .bind(provider)
        .bind(owner)
        .fetch_all(self.read().await?.conn())
        .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }
}
