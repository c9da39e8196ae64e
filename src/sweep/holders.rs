//! Claims held by other processes: the ones whose holder died on this host are taken over at once;
//! the others are counted and logged. Imports `domain`, `holder` and `store`.

use tracing::{info, warn};

use super::Sweeper;
use crate::domain::{UnixTime, iso8601};
use crate::holder::{Holder, Liveness};
use crate::store::{HeldLease, StoreError};

impl Sweeper {
    /// Ends the leases of processes on this host that died holding them, so that their
    /// interrupted attempts are retried now — inside a provider's grace window for a rotated-away
    /// refresh token — instead of when the lease runs out. Holders elsewhere keep their leases.
    pub(super) async fn take_over_from_gone_holders(
        &self,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let Some(prefix) = inner.holder.host_prefix() else {
            return Ok(());
        };
        let held = inner
            .store
            .leases_with_prefix(&prefix, &inner.owner, now)
            .await?;
        let gone: Vec<HeldLease> = held
            .into_iter()
            .filter(|lease| {
                Holder::parse(&lease.lease_owner)
                    .is_some_and(|h| inner.holder.judge(&h) == Liveness::Gone)
            })
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let ended = inner.store.end_leases(&gone, now).await?;
        for lease in &gone {
            warn!(
                credential = %lease.name,
                holder = %Holder::describe(&lease.lease_owner),
                "the process refreshing this credential is gone; taking its attempt over now"
            );
        }
        info!(
            ended,
            "took over the claims of processes that died on this host"
        );
        Ok(())
    }

    /// Logs how many due credentials other processes are refreshing, and until when at most.
    pub(super) async fn report_held_elsewhere(&self, now: UnixTime) {
        let inner = &self.inner;
        match inner.store.held_elsewhere(&inner.owner, now, now).await {
            Ok(held) if held.count > 0 => {
                let until = held.until.map(iso8601).unwrap_or_default();
                info!(
                    held = held.count,
                    until = %until,
                    "skipping credentials that other processes are refreshing; their leases end by then"
                );
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot count the credentials other processes hold"),
        }
    }
}
