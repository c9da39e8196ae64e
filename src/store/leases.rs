//! Leases seen from outside a claim: the ones held by processes on this host (so that those of a
//! process that died can be ended at once), and how many credentials other processes hold now.

use super::{Store, StoreError};
use crate::domain::UnixTime;

/// A lease held now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HeldLease {
    pub credential_id: i64,
    pub name: String,
    /// The holder's stored form (see `holder::Holder`).
    pub lease_owner: String,
    pub lease_expires_at: UnixTime,
}

/// Credentials held by other processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldElsewhere {
    pub count: i64,
    /// When the last of those leases runs out.
    pub until: Option<UnixTime>,
}

impl Store {
    /// Leases running at `now` whose holder's stored form starts with `prefix` (this host's), other
    /// than `me`'s.
    pub async fn leases_with_prefix(
        &self,
        prefix: &str,
        me: &str,
        now: UnixTime,
    ) -> Result<Vec<HeldLease>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id AS credential_id, name, lease_owner, lease_expires_at FROM oauth_credential \
             WHERE lease_owner IS NOT NULL AND lease_expires_at > ?1 \
               AND substr(lease_owner, 1, length(?2)) = ?2 AND lease_owner <> ?3",
        )
        .bind(now)
        .bind(prefix)
        .bind(me)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Ends the leases of holders known to be gone, so that their credentials can be claimed now.
    /// A lease that changed hands meanwhile is left alone. Returns how many were ended.
    pub async fn end_leases(&self, gone: &[HeldLease], now: UnixTime) -> Result<u64, StoreError> {
        if gone.is_empty() {
            return Ok(0);
        }
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut ended = 0;
        for lease in gone {
            ended += sqlx::query(
                "UPDATE oauth_credential SET lease_expires_at = ?1 \
                 WHERE id = ?2 AND lease_owner = ?3 AND lease_expires_at > ?1",
            )
            .bind(now)
            .bind(lease.credential_id)
            .bind(&lease.lease_owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(ended)
    }

    /// Active credentials due before `due_before` that processes other than `me` hold at `now`.
    pub async fn held_elsewhere(
        &self,
        me: &str,
        now: UnixTime,
        due_before: UnixTime,
    ) -> Result<HeldElsewhere, StoreError> {
        let (count, until): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), max(lease_expires_at) FROM oauth_credential \
             WHERE lease_owner IS NOT NULL AND lease_expires_at > ?1 AND lease_owner <> ?2 \
               AND status = 'active' AND refresh_due_at < ?3",
        )
        .bind(now)
        .bind(me)
        .bind(due_before)
        .fetch_one(&self.pool)
        .await?;
        Ok(HeldElsewhere { count, until })
    }
}
