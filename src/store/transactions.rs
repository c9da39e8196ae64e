// The transactions and reads both backends run, written once and compiled against each driver:
// this file is `include!`d by `sqlite.rs` and `postgres.rs` (never declared as a module). Each of
// them defines `Db` (its pool and `write()`, the one way into a write transaction), `Conn` (its
// connection type) and the statements whose dialects differ (the claims). Every statement here is
// accepted by both: `$n` parameters, `IS [NOT] DISTINCT FROM`, `true`/`false`.
//
// Values arrive and leave in their stored form (sealed text, or plaintext without a key): the
// `Store` above opens and seals them, passing in what a transaction needs done to a row between
// its statements (`open`, `seal`).

use crate::domain::{Outcome, Secret, Trigger, UnixTime};
use crate::store::claim::ClaimRow;
use crate::store::leases::{HeldElsewhere, HeldLease};
use crate::store::records::{
    Aggregate, Authorized, AuthorizedAs, CredentialSummary, NewCredential, RevocationClaim, RevocationResult,
    RotationRecord, TokenRow,
};
use crate::store::rekey::{Reformed, Row as RekeyRow};
use crate::store::seal::Column;
use crate::store::writer::{GROUP_MAX, StoreJob};
use crate::store::{Failure, StoreError, Stored};

/// The columns a claim returns, as `ClaimRow` reads them.
macro_rules! claim_returning {
    () => {
        " RETURNING id, name, provider, grant_type, scopes, refresh_token, access_token_expires_at, \
          consecutive_failures, COALESCE(last_refreshed_at, created_at) AS last_success_at, \
          refresh_token_expires_at, lease_expires_at, subject"
    };
}

/// The columns a revocation claim returns, as `RevocationClaim` reads them.
macro_rules! revocation_returning {
    () => {
        " RETURNING id, name, provider, status, access_token, refresh_token, access_token_expires_at, \
          consecutive_failures"
    };
}

/// The same statement for either token column, `c` standing for the column's name: SQL is never
/// assembled at run time.
macro_rules! for_column {
    ($column:expr; $($piece:tt)*) => {
        match $column {
            Column::RefreshToken => concat!($(for_column!(@piece "refresh_token"; $piece)),*),
            Column::AccessToken => concat!($(for_column!(@piece "access_token"; $piece)),*),
        }
    };
    (@piece $name:literal; c) => { $name };
    (@piece $name:literal; $text:literal) => { $text };
}

/// What a claim by name found: the claimed row and its journal entry, or the credential's status
/// (`None`: no such credential).
pub(in crate::store) type NameClaim = Result<(ClaimRow, (i64, bool)), Option<String>>;

impl Db {
    /// Claims up to `limit` due credentials and journals an attempt for each, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::store) async fn claim_due(
        &self,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        limit: usize,
        sweep_start: UnixTime,
        trigger: Trigger,
        open: &crate::store::Open<'_, ClaimRow>,
    ) -> Result<Vec<(ClaimRow, (i64, bool))>, StoreError> {
        let mut w = self.write().await?;
        let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_DUE)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(sweep_start)
            .fetch_all(w.conn())
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let row = open(row);
            let attempt = journal_start(w.conn(), &row, owner, now, trigger).await?;
            claimed.push((row, attempt));
        }
        w.commit().await?;
        Ok(claimed)
    }

    /// Claims one active credential by name, due or not, and journals the attempt.
    pub(in crate::store) async fn claim_by_name(
        &self,
        name: &str,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        open: &crate::store::Open<'_, ClaimRow>,
    ) -> Result<NameClaim, StoreError> {
        let mut w = self.write().await?;
        let row: Option<ClaimRow> = sqlx::query_as(CLAIM_BY_NAME)
            .bind(owner)
            .bind(lease_until)
            .bind(name)
            .bind(now)
            .fetch_optional(w.conn())
            .await?;
        let Some(row) = row else {
            let status: Option<(String,)> =
                sqlx::query_as("SELECT status FROM oauth_credential WHERE name = $1")
                    .bind(name)
                    .fetch_optional(w.conn())
                    .await?;
            w.rollback().await?;
            return Ok(Err(status.map(|(s,)| s)));
        };
        let row = open(row);
        let attempt = journal_start(w.conn(), &row, owner, now, Trigger::Manual).await?;
        w.commit().await?;
        Ok(Ok((row, attempt)))
    }

    /// Stores a failed attempt and completes its journal entry, in one transaction.
    pub(in crate::store) async fn store_failure(
        &self,
        id: i64,
        stored_refresh_token: Option<&Secret>,
        attempt_id: i64,
        owner: &str,
        now: UnixTime,
        failure: &Failure<'_>,
    ) -> Result<Stored, StoreError> {
        let mut w = self.write().await?;
        let (detail, updated) = match failure {
            Failure::Retry {
                next_attempt_at,
                detail,
            } => {
                let n = sqlx::query(
                    "UPDATE oauth_credential SET consecutive_failures = consecutive_failures + 1, \
                        next_attempt_at = $1, last_error = $2, updated_at = $3, lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $4 AND lease_owner = $5",
                )
                .bind(next_attempt_at)
                .bind(detail.last_error)
                .bind(now)
                .bind(id)
                .bind(owner)
                .execute(w.conn())
                .await?
                .rows_affected();
                (detail, n)
            }
            Failure::Reauthorize { detail } => {
                // Race-aware: a refresh token that changed while the request was out is not dead.
                let n = sqlx::query(
                    "UPDATE oauth_credential SET status = 'needs_reauthorization', \
                        consecutive_failures = consecutive_failures + 1, last_error = $1, updated_at = $2, \
                        lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $3 AND refresh_token IS NOT DISTINCT FROM $4",
                )
                .bind(detail.last_error)
                .bind(now)
                .bind(id)
                .bind(stored_refresh_token)
                .execute(w.conn())
                .await?
                .rows_affected();
                (detail, n)
            }
        };
        let stored = if updated == 1 {
            Stored::Yes
        } else {
            Stored::Superseded
        };
        if stored == Stored::Superseded {
            release_lease(w.conn(), id, owner).await?;
        }
        sqlx::query(
            "UPDATE token_rotation SET finished_at = $1, duration_ms = $2, outcome = $3, http_status = $4, \
                error_code = $5, error_description = $6 WHERE id = $7",
        )
        .bind(now)
        .bind(detail.duration_ms)
        .bind(if stored == Stored::Yes { detail.outcome } else { Outcome::Superseded }.as_str())
        .bind(detail.http_status.map(i64::from))
        .bind(detail.error_code)
        .bind(detail.last_error)
        .bind(attempt_id)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(stored)
    }

    /// Gives back a claim that was never attempted, dropping its journal entry.
    pub(in crate::store) async fn release(
        &self,
        id: i64,
        attempt_id: i64,
        owner: &str,
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        release_lease(w.conn(), id, owner).await?;
        sqlx::query("DELETE FROM token_rotation WHERE id = $1 AND outcome = 'pending'")
            .bind(attempt_id)
            .execute(w.conn())
            .await?;
        w.commit().await?;
        Ok(())
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
        let existing: Option<(i64, String, bool, Option<Secret>)> = sqlx::query_as(
            "SELECT id, status, revoke_pending, refresh_token FROM oauth_credential WHERE name = $1",
        )
        .bind(a.name)
        .fetch_optional(w.conn())
        .await?;
        let (id, how, old_refresh) = if let Some((id, status, revoke_pending, old)) = existing {
            let (access, refresh) = seal(id);
            let old = old.map(|o| fingerprint(id, &o));
            sqlx::query(
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
            let (id,): (i64,) = sqlx::query_as(
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
            sqlx::query(
                "UPDATE oauth_credential SET access_token = $1, refresh_token = $2 WHERE id = $3",
            )
            .bind(access)
            .bind(refresh)
            .bind(id)
            .execute(w.conn())
            .await?;
            (id, AuthorizedAs::Created, None)
        };
        sqlx::query(
            "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at, \
                finished_at, duration_ms, outcome, http_status, new_expires_at, refresh_token_rotated, \
                old_refresh_fingerprint, new_refresh_fingerprint, new_access_fingerprint) \
             VALUES ($1, $2, $3, 'manual', $4, $5, $6, $7, 'authorized', $8, $9, $10, $11, $12, $13)",
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
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(how)
    }

    /// Claims credential `name`, whatever its status, for revocation. `Ok(Err(found))`: not
    /// claimed; `found` says whether such a credential exists (then another process holds it).
    pub(in crate::store) async fn claim_for_revocation(
        &self,
        name: &str,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        open: &(dyn Fn(RevocationClaim) -> Result<RevocationClaim, StoreError> + Sync),
    ) -> Result<Result<RevocationClaim, bool>, StoreError> {
        let mut w = self.write().await?;
        let claim: Option<RevocationClaim> = sqlx::query_as(CLAIM_FOR_REVOCATION)
            .bind(owner)
            .bind(lease_until)
            .bind(name)
            .bind(now)
            .fetch_optional(w.conn())
            .await?;
        let found = if let Some(claim) = claim {
            // An error rolls the claim back.
            Ok(open(claim)?)
        } else {
            let row: Option<(i64,)> =
                sqlx::query_as("SELECT id FROM oauth_credential WHERE name = $1")
                    .bind(name)
                    .fetch_optional(w.conn())
                    .await?;
            Err(row.is_some())
        };
        w.commit().await?;
        Ok(found)
    }

    /// Claims up to `limit` credentials whose revocation is pending and due again.
    pub(in crate::store) async fn claim_pending_revocations(
        &self,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        limit: usize,
        open: &(dyn Fn(RevocationClaim) -> Result<RevocationClaim, StoreError> + Sync),
    ) -> Result<Vec<RevocationClaim>, StoreError> {
        let mut w = self.write().await?;
        let claims: Vec<RevocationClaim> = sqlx::query_as(CLAIM_PENDING_REVOCATIONS)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(w.conn())
            .await?;
        let claims = claims
            .into_iter()
            .map(open)
            .collect::<Result<Vec<_>, _>>()?;
        w.commit().await?;
        Ok(claims)
    }

    /// Gives back a revocation claim that sent nothing.
    pub(in crate::store) async fn release_revocation(
        &self,
        id: i64,
        owner: &str,
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        release_lease(w.conn(), id, owner).await?;
        w.commit().await
    }

    /// Stores how a revocation ended and journals it, in one transaction.
    pub(in crate::store) async fn settle_revocation(
        &self,
        claim: &RevocationClaim,
        owner: &str,
        trigger: &str,
        now: UnixTime,
        duration_ms: i64,
        result: RevocationResult<'_>,
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        let (stored_access, stored_refresh) = (&claim.stored.0, &claim.stored.1);
        let (outcome, http_status, error_code, error_description) = match result {
            RevocationResult::Revoked { http_status } => {
                // Only the tokens that were revoked: a credential authorized again meanwhile stays.
                sqlx::query(
                    "DELETE FROM oauth_credential WHERE id = $1 AND refresh_token IS NOT DISTINCT FROM $2 \
                        AND access_token IS NOT DISTINCT FROM $3",
                )
                .bind(claim.id)
                .bind(stored_refresh)
                .bind(stored_access)
                .execute(w.conn())
                .await?;
                ("revoked", http_status, None, None)
            }
            RevocationResult::Pending {
                next_attempt_at,
                last_error,
                error_code,
                http_status,
            } => {
                sqlx::query(
                    "UPDATE oauth_credential SET status = 'disabled', revoke_pending = true, \
                        consecutive_failures = consecutive_failures + 1, next_attempt_at = $1, last_error = $2, \
                        updated_at = $3, \
                        lease_owner = CASE WHEN lease_owner = $4 THEN NULL ELSE lease_owner END, \
                        lease_expires_at = CASE WHEN lease_owner = $4 THEN NULL ELSE lease_expires_at END \
                     WHERE id = $5 AND refresh_token IS NOT DISTINCT FROM $6 \
                        AND access_token IS NOT DISTINCT FROM $7",
                )
                .bind(next_attempt_at)
                .bind(format!("revocation pending: {last_error}"))
                .bind(now)
                .bind(owner)
                .bind(claim.id)
                .bind(stored_refresh)
                .bind(stored_access)
                .execute(w.conn())
                .await?;
                (
                    "revocation_pending",
                    http_status,
                    error_code,
                    Some(last_error),
                )
            }
            RevocationResult::Refused {
                last_error,
                error_code,
                http_status,
            } => {
                release_lease(w.conn(), claim.id, owner).await?;
                (
                    "revocation_refused",
                    http_status,
                    error_code,
                    Some(last_error),
                )
            }
        };
        sqlx::query(
            "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at, \
                finished_at, duration_ms, outcome, http_status, error_code, error_description, old_expires_at, \
                old_refresh_fingerprint) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(claim.id)
        .bind(&claim.name)
        .bind(&claim.provider)
        .bind(trigger)
        .bind(owner)
        .bind(now - duration_ms / 1000)
        .bind(now)
        .bind(duration_ms)
        .bind(outcome)
        .bind(http_status.map(i64::from))
        .bind(error_code)
        .bind(error_description)
        .bind(claim.access_token_expires_at)
        .bind(claim.refresh_token.as_ref().map(Secret::fingerprint))
        .execute(w.conn())
        .await?;
        w.commit().await
    }

    /// Imports a credential, due at once; `seal(id)` gives its refresh token's stored form.
    pub(in crate::store) async fn add(
        &self,
        c: &NewCredential<'_>,
        replace: bool,
        now: UnixTime,
        seal: &(dyn Fn(i64) -> Option<Secret> + Sync),
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        let exists: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM oauth_credential WHERE name = $1")
                .bind(c.name)
                .fetch_optional(w.conn())
                .await?;
        match (exists, replace) {
            (Some(_), false) => {
                w.rollback().await?;
                return Err(StoreError::Exists(c.name.to_owned()));
            }
            (Some((id,)), true) => {
                sqlx::query(
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
                let (id,): (i64,) = sqlx::query_as(
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
                sqlx::query("UPDATE oauth_credential SET refresh_token = $1 WHERE id = $2")
                    .bind(seal(id))
                    .bind(id)
                    .execute(w.conn())
                    .await?;
            }
        }
        w.commit().await
    }

    /// Per provider and status: counts, failing, expiring by `$2`, soonest expiry, oldest
    /// refresh. One statement, however many rows.
    pub(in crate::store) async fn aggregates(
        &self,
        now: UnixTime,
        expiring_by: UnixTime,
        failing: crate::domain::Failing,
    ) -> Result<Vec<Aggregate>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT provider, status, count(*) AS credentials, \
                sum(CASE WHEN status = 'active' AND (consecutive_failures >= $3 \
                    OR (consecutive_failures > 0 AND $1 - COALESCE(last_refreshed_at, created_at) >= $4)) \
                    THEN 1 ELSE 0 END) AS failing, \
                sum(CASE WHEN status <> 'disabled' AND access_token_expires_at <= $2 THEN 1 ELSE 0 END) AS expiring, \
                min(CASE WHEN status <> 'disabled' THEN access_token_expires_at END) AS soonest_expiry, \
                min(CASE WHEN status <> 'disabled' THEN last_refreshed_at END) AS oldest_refresh \
             FROM oauth_credential GROUP BY provider, status ORDER BY provider, status",
        )
        .bind(now)
        .bind(expiring_by)
        .bind(i64::from(failing.after_failures))
        .bind(failing.after_secs)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every credential, by name, without tokens.
    pub(in crate::store) async fn summaries(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        Ok(sqlx::query_as(
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
                  WHERE t.credential_id = c.id AND t.outcome = 'pending') AS attempt_started_at \
             FROM oauth_credential c ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The stored access token of `name` (as stored), if there is such a credential.
    pub(in crate::store) async fn token(&self, name: &str) -> Result<Option<TokenRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, status, access_token, token_type, access_token_expires_at FROM oauth_credential WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether a credential called `name` exists.
    pub(in crate::store) async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM oauth_credential WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The newest `limit` journal entries, of one credential or all, newest first.
    pub(in crate::store) async fn rotations(
        &self,
        name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RotationRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, credential_name, provider, trigger, started_at, duration_ms, outcome, http_status, error_code, \
                error_description, old_expires_at, new_expires_at, refresh_token_rotated, old_refresh_fingerprint, \
                new_refresh_fingerprint, expires_in_reported \
             FROM token_rotation WHERE $1 IS NULL OR credential_name = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(name)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Leases running at `now` whose holder's stored form starts with `prefix`, other than `me`'s.
    pub(in crate::store) async fn leases_with_prefix(
        &self,
        prefix: &str,
        me: &str,
        now: UnixTime,
    ) -> Result<Vec<HeldLease>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id AS credential_id, name, lease_owner, lease_expires_at FROM oauth_credential \
             WHERE lease_owner IS NOT NULL AND lease_expires_at > $1 \
               AND substr(lease_owner, 1, length($2)) = $2 AND lease_owner <> $3",
        )
        .bind(now)
        .bind(prefix)
        .bind(me)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Ends the leases of holders known to be gone, unless they changed hands meanwhile.
    pub(in crate::store) async fn end_leases(
        &self,
        gone: &[HeldLease],
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        let mut w = self.write().await?;
        let mut ended = 0;
        for lease in gone {
            ended += sqlx::query(
                "UPDATE oauth_credential SET lease_expires_at = $1 \
                 WHERE id = $2 AND lease_owner = $3 AND lease_expires_at > $1",
            )
            .bind(now)
            .bind(lease.credential_id)
            .bind(&lease.lease_owner)
            .execute(w.conn())
            .await?
            .rows_affected();
        }
        w.commit().await?;
        Ok(ended)
    }

    /// Active credentials due before `due_before` that processes other than `me` hold at `now`.
    pub(in crate::store) async fn held_elsewhere(
        &self,
        me: &str,
        now: UnixTime,
        due_before: UnixTime,
    ) -> Result<HeldElsewhere, StoreError> {
        let (count, until): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), max(lease_expires_at) FROM oauth_credential \
             WHERE lease_owner IS NOT NULL AND lease_expires_at > $1 AND lease_owner <> $2 \
               AND status = 'active' AND refresh_due_at < $3",
        )
        .bind(now)
        .bind(me)
        .bind(due_before)
        .fetch_one(&self.pool)
        .await?;
        Ok(HeldElsewhere { count, until })
    }

    /// Per stored head (the first 13 characters when they start like a sealed value, else ''),
    /// how many values of `column`.
    pub(in crate::store) async fn heads(
        &self,
        column: Column,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = for_column!(column;
            "SELECT CASE WHEN h >= 'tw1:' AND h < 'tw1;' THEN h ELSE '' END AS k, count(*) \
             FROM (SELECT substr(" c ", 1, 13) AS h FROM oauth_credential WHERE " c " IS NOT NULL) heads \
             GROUP BY k");
        Ok(sqlx::query_as(sql).fetch_all(&self.pool).await?)
    }

    /// The first distinct head of `column` after `after` that starts like a sealed value: one
    /// index seek.
    pub(in crate::store) async fn next_head(
        &self,
        column: Column,
        after: &str,
    ) -> Result<Option<String>, StoreError> {
        let sql = for_column!(column;
            "SELECT substr(" c ", 1, 13) FROM oauth_credential \
             WHERE substr(" c ", 1, 13) > $1 AND substr(" c ", 1, 13) < 'tw1;' \
             ORDER BY substr(" c ", 1, 13) LIMIT 1");
        let row: Option<(String,)> = sqlx::query_as(sql)
            .bind(after)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(h,)| h))
    }

    /// Whether any value in `column` is plaintext: two index seeks.
    pub(in crate::store) async fn has_plaintext(&self, column: Column) -> Result<bool, StoreError> {
        let sql = for_column!(column;
            "SELECT EXISTS (SELECT 1 FROM oauth_credential WHERE substr(" c ", 1, 13) < 'tw1:') \
                 OR EXISTS (SELECT 1 FROM oauth_credential WHERE substr(" c ", 1, 13) >= 'tw1;')");
        let (any,): (bool,) = sqlx::query_as(sql).fetch_one(&self.pool).await?;
        Ok(any)
    }

    /// The names of the credentials with a value (in either column) starting with `head`.
    pub(in crate::store) async fn names_under(
        &self,
        head: &str,
    ) -> Result<Vec<String>, StoreError> {
        let names: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM oauth_credential \
             WHERE substr(refresh_token, 1, 13) = $1 OR substr(access_token, 1, 13) = $1 ORDER BY name",
        )
        .bind(head)
        .fetch_all(&self.pool)
        .await?;
        Ok(names.into_iter().map(|(n,)| n).collect())
    }

    /// One batch of a re-sealing pass, in its own transaction: up to `batch` rows after id
    /// `after` not yet in `target`'s form (`current`: the current key's head; `seal_access`:
    /// whether access tokens are sealed), each written in the form `reform` gives it
    /// (compare-and-swapped against what was read). The rows are locked until the commit, so no
    /// claim can take one between its read and its write. `None` when no row is left.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::store) async fn reseal_batch(
        &self,
        target: crate::store::Target,
        after: i64,
        current: Option<&str>,
        seal_access: bool,
        batch: i64,
        reform: &mut (dyn FnMut(&RekeyRow) -> Reformed + Send),
    ) -> Result<Option<i64>, StoreError> {
        use crate::store::Target;
        macro_rules! rows_where {
            ($wanted:literal) => {
                concat!(
                    "SELECT id, name, refresh_token, access_token, lease_expires_at FROM oauth_credential \
                     WHERE id > $1 AND (",
                    $wanted,
                    ") ORDER BY id LIMIT $4",
                    lock_rows!()
                )
            };
        }
        // The rows not yet in the target form ($2: the current key's head, $3: seal access tokens).
        let sql = match target {
            Target::SealPlaintext => rows_where!(
                "(refresh_token IS NOT NULL AND substr(refresh_token, 1, 4) <> 'tw1:') \
                 OR ($3 AND access_token IS NOT NULL AND substr(access_token, 1, 4) <> 'tw1:')"
            ),
            Target::Current => rows_where!(
                "(refresh_token IS NOT NULL AND substr(refresh_token, 1, 13) IS DISTINCT FROM $2) \
                 OR (access_token IS NOT NULL AND CASE WHEN $3 THEN substr(access_token, 1, 13) IS DISTINCT FROM $2 \
                     ELSE substr(access_token, 1, 4) = 'tw1:' END)"
            ),
            Target::Plaintext => rows_where!(
                "substr(refresh_token, 1, 4) = 'tw1:' OR substr(access_token, 1, 4) = 'tw1:'"
            ),
        };
        let mut w = self.write().await?;
        if let Some((before, _)) = RESEAL_PRAGMAS {
            sqlx::query(before).execute(w.conn()).await?;
        }
        let rows: Vec<RekeyRow> = sqlx::query_as(sql)
            .bind(after)
            .bind(current)
            .bind(seal_access)
            .bind(batch)
            .fetch_all(w.conn())
            .await?;
        let Some(last) = rows.last().map(|r| r.id) else {
            w.rollback().await?;
            return Ok(None);
        };
        for row in rows {
            let Reformed::Write { refresh, access } = reform(&row) else {
                continue;
            };
            sqlx::query(
                "UPDATE oauth_credential SET refresh_token = $1, access_token = $2 \
                 WHERE id = $3 AND refresh_token IS NOT DISTINCT FROM $4 AND access_token IS NOT DISTINCT FROM $5",
            )
            .bind(&refresh)
            .bind(&access)
            .bind(row.id)
            .bind(&row.refresh_token)
            .bind(&row.access_token)
            .execute(w.conn())
            .await?;
        }
        if let Some((_, after)) = RESEAL_PRAGMAS {
            sqlx::query(after).execute(w.conn()).await?;
        }
        w.commit().await?;
        Ok(Some(last))
    }

    /// The migrations applied, as `(version, description)`, oldest first.
    pub(in crate::store) async fn applied_migrations(
        &self,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether the database answers.
    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection.
    pub(in crate::store) async fn close(&self) {
        self.pool.close().await;
    }
}

async fn release_lease(conn: &mut Conn, id: i64, owner: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE oauth_credential SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Journals an attempt before its request: what was sent, never the token itself. An earlier
/// attempt still pending belonged to a process that died (its lease ran out, or this claim could
/// not have happened): it is marked interrupted, and the new attempt knows it follows one.
async fn journal_start(
    conn: &mut Conn,
    row: &ClaimRow,
    owner: &str,
    now: UnixTime,
    trigger: Trigger,
) -> Result<(i64, bool), StoreError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at, \
            old_expires_at, old_refresh_fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(row.id)
    .bind(&row.name)
    .bind(&row.provider)
    .bind(trigger.as_str())
    .bind(owner)
    .bind(now)
    .bind(row.access_token_expires_at)
    .bind(row.token().map(Secret::fingerprint))
    .fetch_one(&mut *conn)
    .await?;
    let interrupted = sqlx::query(
        "UPDATE token_rotation SET outcome = 'interrupted', finished_at = $1 \
         WHERE credential_id = $2 AND outcome = 'pending' AND id <> $3",
    )
    .bind(now)
    .bind(row.id)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok((id, interrupted > 0))
}

/// Takes every job waiting (up to [`GROUP_MAX`]), applies them in one transaction, commits once,
/// then answers each. A failed transaction fails every job in it; each caller retries its own.
async fn group_writer(db: Db, mut jobs: tokio::sync::mpsc::UnboundedReceiver<StoreJob>) {
    let mut batch = Vec::with_capacity(GROUP_MAX);
    while jobs.recv_many(&mut batch, GROUP_MAX).await > 0 {
        let result: Result<Vec<Stored>, StoreError> = async {
            let mut w = db.write().await?;
            let mut stored = Vec::with_capacity(batch.len());
            for job in &batch {
                stored.push(apply_refreshed(w.conn(), job).await?);
            }
            w.commit().await?;
            Ok(stored)
        }
        .await;
        match result {
            Ok(stored) => {
                for (job, stored) in batch.drain(..).zip(stored) {
                    let _ = job.reply.send(Ok(stored));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for job in batch.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Sql(sqlx::Error::Protocol(reason.clone()))));
                }
            }
        }
    }
}

/// Stores one refresh's tokens and completes its journal entry, inside the group's transaction.
async fn apply_refreshed(conn: &mut Conn, job: &StoreJob) -> Result<Stored, StoreError> {
    let t = &job.tokens;
    let updated = sqlx::query(
        "UPDATE oauth_credential SET access_token = $1, token_type = $2, access_token_expires_at = $3, \
            refresh_token = COALESCE($4, refresh_token), \
            refresh_token_expires_at = CASE WHEN $12 THEN $5 \
                ELSE COALESCE($5, refresh_token_expires_at) END, \
            refresh_due_at = $6, consecutive_failures = 0, next_attempt_at = 0, last_error = NULL, \
            instance_url = COALESCE($11, instance_url), \
            last_refreshed_at = $7, updated_at = $7, \
            lease_owner = CASE WHEN lease_owner = $10 THEN NULL ELSE lease_owner END, \
            lease_expires_at = CASE WHEN lease_owner = $10 THEN NULL ELSE lease_expires_at END \
         WHERE id = $8 AND refresh_token IS NOT DISTINCT FROM $9",
    )
    .bind(&job.access_token)
    .bind(&t.token_type)
    .bind(t.expires_at)
    .bind(&job.refresh_token)
    .bind(t.refresh_token_expires_at)
    .bind(job.refresh_due_at)
    .bind(job.now)
    .bind(job.credential_id)
    .bind(&job.stored_refresh_token)
    .bind(&job.owner)
    .bind(&t.instance_url)
    .bind(job.rotated)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let stored = if updated == 1 {
        Stored::Yes
    } else {
        Stored::Superseded
    };
    sqlx::query(
        "UPDATE token_rotation SET finished_at = $1, duration_ms = $2, outcome = $3, http_status = $4, \
            new_expires_at = $5, refresh_token_rotated = $6, new_refresh_fingerprint = $7, \
            new_access_fingerprint = $8, expires_in_reported = $10 WHERE id = $9",
    )
    .bind(job.now)
    .bind(job.duration_ms)
    .bind(if stored == Stored::Yes { Outcome::Refreshed } else { Outcome::Superseded }.as_str())
    .bind(job.http_status.map(i64::from))
    .bind(t.expires_at)
    .bind(job.rotated)
    .bind(t.refresh_token.as_ref().map(Secret::fingerprint))
    .bind(t.access_token.fingerprint())
    .bind(job.attempt_id)
    .bind(t.lifetime_reported)
    .execute(&mut *conn)
    .await?;
    if stored == Stored::Superseded {
        release_lease(conn, job.credential_id, &job.owner).await?;
    }
    Ok(stored)
}

// ---- consumers: a token with what decides its renewal, credentials by owner

impl Db {
    /// The current token of `name` as stored, with its lease and backoff.
    pub(in crate::store) async fn token_state(
        &self,
        name: &str,
    ) -> Result<Option<crate::store::TokenState>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, provider, status, access_token, token_type, access_token_expires_at, instance_url, \
                lease_expires_at, last_error, next_attempt_at FROM oauth_credential WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The names of `owner`'s credentials at `provider` that are not disabled, by name.
    pub(in crate::store) async fn owned_by(
        &self,
        provider: &str,
        owner: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM oauth_credential \
             WHERE provider = $1 AND owner = $2 AND status <> 'disabled' ORDER BY name",
        )
        .bind(provider)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }
}

// ---- the pool between sweeps

impl Db {
    /// Closes the pool's idle connections. A connection given back goes idle a moment later (sqlx
    /// returns it from a task): those still on their way are waited for this long at most.
    pub(in crate::store) async fn close_idle(&self) {
        const RETURNING: std::time::Duration = std::time::Duration::from_millis(500);
        const STEP: std::time::Duration = std::time::Duration::from_millis(5);
        let started = std::time::Instant::now();
        loop {
            while let Some(conn) = self.pool.try_acquire() {
                let _ = conn.close().await;
            }
            if self.pool.size() == 0 || started.elapsed() >= RETURNING {
                break;
            }
            tokio::time::sleep(STEP).await;
        }
    }
}
