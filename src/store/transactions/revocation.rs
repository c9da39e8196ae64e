//! Revocation's claims and settlement, shaped like refresh's: claim, journal, settle in one
//! transaction.

use super::refresh::release_lease;
use crate::domain::{Secret, UnixTime};
use crate::store::StoreError;
use crate::store::backend::Db;
use crate::store::records::{RevocationClaim, RevocationResult};
use crate::store::statement::sql;

impl Db {
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
        let claim: Option<RevocationClaim> = sql(self.dialect().claim_for_revocation)
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
            let row: Option<(i64,)> = sql("SELECT id FROM oauth_credential WHERE name = $1")
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
        let claims: Vec<RevocationClaim> = sql(self.dialect().claim_pending_revocations)
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
                sql(
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
                sql(
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
        sql(
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
}
