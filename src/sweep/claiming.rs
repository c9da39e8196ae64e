//! Claiming the next batch of due credentials, and claiming again after a short claim while due
//! credentials are still free to claim (rows locked for a moment by another replica's claim on
//! PostgreSQL: `SKIP LOCKED`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Sweeper;
use crate::domain::{self, Claimed, Trigger, UnixTime};
use crate::store::StoreError;

/// After a claim that came back short while due credentials were still free to claim (on
/// PostgreSQL, rows another transaction held locked at that moment: `SKIP LOCKED`), the sweep
/// claims again after this pause, up to [`RECLAIM_ROUNDS`] times in a row before it stops
/// claiming (those rows are left to the next sweep).
pub(super) const RECLAIM_PAUSE: Duration = Duration::from_millis(100);
pub(super) const RECLAIM_ROUNDS: u32 = 50;

/// Where a sweep's claiming stands.
#[derive(Debug, Default)]
pub(super) struct Claiming {
    /// Nothing is left to claim in this sweep.
    pub(super) exhausted: bool,
    /// Short claims in a row that left due credentials free to claim.
    reclaims: u32,
    /// When to claim next, after such a claim.
    claim_at: Option<tokio::time::Instant>,
    /// Credentials left to live processes whose request is out past their lease.
    pub(super) skip: Vec<i64>,
}

impl Claiming {
    /// Whether an empty queue waits for the next claim rather than ending the claiming.
    pub(super) fn again_later(&self) -> bool {
        !self.exhausted && self.claim_at.is_some()
    }
}

impl Sweeper {
    /// The next batch of due credentials for [`Sweeper::sweep_once`], after the pause a short
    /// claim asked for (none when `cancel` fires meanwhile). After a short claim, claiming goes on
    /// only while due credentials are still free to claim (held locked by another transaction for
    /// a moment), at most [`RECLAIM_ROUNDS`] times in a row.
    pub(super) async fn claim_next(
        &self,
        claiming: &mut Claiming,
        want: usize,
        sweep_start: UnixTime,
        trigger: Trigger,
        cancel: &CancellationToken,
    ) -> Result<Vec<Claimed>, StoreError> {
        if let Some(at) = claiming.claim_at.take() {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = cancel.cancelled() => return Ok(Vec::new()),
            }
        }
        let inner = &self.inner;
        let now = domain::now();
        let claimed = inner
            .store
            .claim_due(
                &inner.owner,
                now,
                now + inner.policy.lease,
                want,
                sweep_start,
                trigger,
                &claiming.skip,
            )
            .await?;
        if claimed.len() == want {
            claiming.reclaims = 0;
            return Ok(claimed);
        }
        // The claimed rows are queued whatever this finds: their leases are held now.
        let left = claiming.reclaims < RECLAIM_ROUNDS
            && match inner
                .store
                .any_claimable(now, sweep_start, &claiming.skip)
                .await
            {
                Ok(left) => left,
                Err(e) => {
                    warn!(error = %e, "could not tell whether due credentials are left to claim; this sweep claims no more");
                    false
                }
            };
        if left {
            claiming.reclaims += 1;
            claiming.claim_at = Some(tokio::time::Instant::now() + RECLAIM_PAUSE);
        } else {
            claiming.exhausted = true;
        }
        Ok(claimed)
    }
}
