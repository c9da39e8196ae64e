//! Claims held by other processes: the ones whose holder died on this host are taken over at once;
//! the ones whose holder still lives on this host with its request out are left to it, even past
//! its lease (`takeover`); the others are counted and logged. Imports `domain`, `holder` and
//! `store`.

use tracing::{info, warn};

use super::Sweeper;
use super::takeover::{self, Takeover};
use crate::domain::{GrantType, Interrupted, RefreshTokenReuse, UnixTime, iso8601};
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

    /// The credentials a live process on this host is refreshing past its lease (stopped with its
    /// request out: SIGSTOP, a paused VM or container): not to be claimed, since taking them over
    /// would present their refresh tokens a second time. Logged, one line each.
    pub(super) async fn left_to_live_holders(&self, now: UnixTime) -> Result<Vec<i64>, StoreError> {
        let inner = &self.inner;
        let mut left = Vec::new();
        for lease in inner.store.sent_past_lease(now).await? {
            let owner = self.judge_owner(Some(&lease.lease_owner));
            let attempt = Interrupted {
                attempt_id: 0,
                started_at: lease.started_at,
                sent: true,
                holder: Some(lease.lease_owner.clone()),
            };
            let grant = lease.grant_type.parse().unwrap_or(GrantType::RefreshToken);
            // The provider's tolerance does not matter to a live owner: its request is out.
            let decided =
                takeover::decide(owner, &attempt, grant, "", RefreshTokenReuse::None, now);
            if decided == Takeover::Leave {
                warn!(
                    credential = %lease.name,
                    holder = %Holder::describe(&lease.lease_owner),
                    lease_expired_at = %iso8601(lease.lease_expires_at),
                    "the process refreshing this credential is alive but stopped past its lease with its request out; left to it (it stores the answer when it runs again)"
                );
                left.push(lease.credential_id);
            }
        }
        Ok(left)
    }

    /// How the process that made an interrupted attempt (its stored form) is judged from here.
    /// This very process is not waiting for an answer it gave up storing: judged gone.
    pub(super) fn judge_owner(&self, stored: Option<&str>) -> Liveness {
        let me = &self.inner.holder;
        match stored.and_then(Holder::parse) {
            Some(h) if me.same_process(&h) => Liveness::Gone,
            Some(h) => me.judge(&h),
            None => Liveness::Unknown,
        }
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
