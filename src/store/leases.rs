//! Leases seen from outside a claim: the ones held by processes on this host (so that those of a
//! process that died can be ended at once), the ones that ran out while their request was out (a
//! stopped, partitioned or dead process), how many credentials other processes hold now, and
//! whether any due credential is still free to claim.

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

/// A lease that ran out while its attempt's request was out: sent, and no outcome stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PastLease {
    pub credential_id: i64,
    pub name: String,
    pub grant_type: String,
    /// The holder's stored form (see `holder::Holder`).
    pub lease_owner: String,
    pub lease_expires_at: UnixTime,
    /// When the attempt was journaled, and when its request went out.
    pub started_at: UnixTime,
    pub sent_at: UnixTime,
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
        self.db.leases_with_prefix(prefix, me, now).await
    }

    /// Ends the leases of holders known to be gone, so that their credentials can be claimed now.
    /// A lease that changed hands meanwhile is left alone. Returns how many were ended.
    pub async fn end_leases(&self, gone: &[HeldLease], now: UnixTime) -> Result<u64, StoreError> {
        if gone.is_empty() {
            return Ok(0);
        }
        self.db.end_leases(gone, now).await
    }

    /// Leases run out by `now` whose attempt's request went out and has no outcome stored.
    pub async fn sent_past_lease(&self, now: UnixTime) -> Result<Vec<PastLease>, StoreError> {
        self.db.sent_past_lease(now).await
    }

    /// Active credentials due before `due_before` that processes other than `me` hold at `now`.
    pub async fn held_elsewhere(
        &self,
        me: &str,
        now: UnixTime,
        due_before: UnixTime,
    ) -> Result<HeldElsewhere, StoreError> {
        self.db.held_elsewhere(me, now, due_before).await
    }

    /// Whether an active credential due before `due_before`, other than those in `skip`, is
    /// claimable at `now`, row locks ignored: on PostgreSQL a claim skips rows another
    /// transaction has locked at that moment (`FOR UPDATE SKIP LOCKED`), so a short claim alone
    /// does not mean nothing is left.
    pub async fn any_claimable(
        &self,
        now: UnixTime,
        due_before: UnixTime,
        skip: &[i64],
    ) -> Result<bool, StoreError> {
        self.db.any_claimable(now, due_before, skip).await
    }
}
