//! One sweep: take over the claims of processes that died on this host, and leave those of live
//! ones whose request is out past their lease (`holders`, deciding with `takeover`), claim the due
//! credentials in batches under a lease (as many as start within it: `claim_size`; until a short
//! claim leaves none free to claim: `claiming`), refresh each with bounded concurrency (and each
//! provider's `max_concurrency` and `rate_limit`: `limits`, `handle`), decide what each outcome
//! comes to (`settle`, pure), store, log and alert it (`record`); then retry pending revocations
//! (`revocation`). Its tunables are `policy`, its counts `summary`, its failed attempts per provider
//! and class `errors`. Imports `config`, `domain`, `holder`, `provider`, `refresh`, `revoke`,
//! `store` and `alerts`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

mod claim_size;
mod claiming;
mod errors;
mod handle;
mod holders;
mod limits;
mod policy;
mod record;
mod revocation;
mod settle;
mod summary;
mod takeover;

pub use errors::{ErrorClass, ErrorTally};
pub use policy::Policy;
pub use revocation::{RetrySummary, RevokeError, Revoked, Settled};
pub use summary::{Handled, NamedRefresh, SweepSummary};

use claiming::Claiming;

use crate::alerts::Alerter;
use crate::domain::{self, Claimed, Trigger, UnixTime};
use crate::holder::Holder;
use crate::provider::Providers;
use crate::refresh::Refresher;
use crate::store::{ClaimByName, Store, StoreError};

/// Refreshes beyond `concurrency` under way at once: their requests wait for a slot in the limits
/// (`concurrency` requests at once, and the providers' own), or are answered and wait for their
/// group commit. Without them a group could never hold more than `concurrency` outcomes; with
/// them one commit serves up to the group writer's largest group (64).
const AHEAD: usize = 64;

/// How often storing a failed attempt is tried before giving up (the database may be busy). New
/// tokens are retried for as long as the claim lasts instead (`store_until_claim_ends`).
const STORE_ATTEMPTS: u32 = 5;

/// Runs sweeps; cheap to clone.
#[derive(Clone)]
pub struct Sweeper {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    providers: Providers,
    refresher: Refresher,
    policy: Policy,
    /// This process as a lease holder.
    holder: Holder,
    /// `holder`'s stored form: identifies this process's leases.
    owner: String,
    /// Providers that rejected our client, and until when to leave them alone.
    rejected: Mutex<HashMap<String, UnixTime>>,
    alerter: Alerter,
    /// Credentials (ids) already warned about for short-lived access tokens: once per process.
    warned_short_lived: Mutex<HashSet<i64>>,
    /// Each provider's `max_concurrency` and `rate_limit` for the sweep's requests.
    limits: limits::Limits,
    /// Failed attempts per provider and class, for the metrics.
    errors: ErrorTally,
}

impl Sweeper {
    #[must_use]
    pub fn new(
        store: Store,
        providers: Providers,
        refresher: Refresher,
        policy: Policy,
        alerter: Alerter,
    ) -> Self {
        let holder = Holder::this_process();
        let owner = holder.to_string();
        let rejected = Mutex::new(HashMap::new());
        let limits = limits::Limits::new(&providers, policy.concurrency);
        Self {
            inner: Arc::new(Inner {
                store,
                providers,
                refresher,
                policy,
                holder,
                owner,
                rejected,
                alerter,
                warned_short_lived: Mutex::default(),
                limits,
                errors: ErrorTally::default(),
            }),
        }
    }

    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The providers it refreshes with (the invitation pages sign owners in with them too).
    #[must_use]
    pub fn providers(&self) -> &Providers {
        &self.inner.providers
    }

    /// The one transport to providers.
    #[must_use]
    pub fn transport(&self) -> &crate::http::Transport {
        self.inner.refresher.transport()
    }

    /// The tunables this sweeper runs with.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// This process's failed attempts so far, per provider and class.
    #[must_use]
    pub fn errors(&self) -> &ErrorTally {
        &self.inner.errors
    }

    /// Refreshes every credential due now, at most once each. Stops claiming when `cancel` fires,
    /// lets the refreshes in flight finish and store, and gives the rest back.
    pub async fn sweep_once(
        &self,
        trigger: Trigger,
        cancel: &CancellationToken,
    ) -> Result<SweepSummary, StoreError> {
        let started = Instant::now();
        let sweep_start = domain::now();
        let inner = &self.inner;
        let batch = inner.policy.concurrency;
        let policy = &inner.policy;
        let slack = policy.lease - policy.request_timeout - policy.store_window;
        let mut done = 0;
        let mut summary = SweepSummary::default();
        let mut queue: VecDeque<Claimed> = VecDeque::new();
        let mut in_flight = JoinSet::new();
        let mut claiming = Claiming::default();
        let mut first_error = None;
        self.take_over_from_gone_holders(sweep_start).await?;
        claiming.skip = self.left_to_live_holders(sweep_start).await?;
        self.report_held_elsewhere(sweep_start).await;
        loop {
            while in_flight.len() < batch + AHEAD && !cancel.is_cancelled() && first_error.is_none()
            {
                if queue.is_empty() && !claiming.exhausted {
                    let want = claim_size::next(batch, done, started.elapsed(), slack);
                    match self
                        .claim_next(&mut claiming, want, sweep_start, trigger, cancel)
                        .await
                    {
                        Ok(claimed) => {
                            summary.due += claimed.len();
                            queue.extend(claimed);
                        }
                        Err(e) => first_error = Some(e),
                    }
                }
                let Some(claimed) = queue.pop_front() else {
                    if claiming.again_later() {
                        continue; // claim again after the pause, even with nothing in flight
                    }
                    break;
                };
                // A claim that waited too long to finish its request and store the result before
                // its lease ends is given back unsent by the check before the request
                // (`handle::may_send`): its refresh token is never out while another process may
                // claim it.
                let (me, cancel) = (self.clone(), cancel.clone());
                in_flight.spawn(async move { me.handle_within_limits(claimed, &cancel).await });
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            done += 1;
            match joined {
                Ok(Ok(Some(handled))) => summary.record(handled),
                Ok(Ok(None)) => summary.released += 1,
                Ok(Err(e)) => {
                    summary.failed += 1;
                    first_error.get_or_insert(e);
                }
                Err(join_error) => {
                    summary.failed += 1;
                    // The panic hook already printed where; its message stays unprinted.
                    error!(panicked = join_error.is_panic(), "a refresh task failed");
                }
            }
        }
        let unsent: Vec<Claimed> = queue.into();
        inner.store.release_all(&unsent, &inner.owner).await?;
        summary.released += unsent.len();
        // Refreshes first: a revocation the provider cannot take yet must not delay them.
        if !cancel.is_cancelled() && first_error.is_none() {
            self.retry_pending_revocations().await?;
        }
        inner.alerter.drain().await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(
            trigger = trigger.as_str(),
            due = summary.due,
            refreshed = summary.refreshed,
            failed = summary.failed,
            needs_reauthorization = summary.needs_reauthorization,
            superseded = summary.superseded,
            released = summary.released,
            duration_ms,
            "sweep finished"
        );
        match first_error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }

    /// Refreshes one credential now, due or not, under the same lease as the sweep.
    pub async fn refresh_named(&self, name: &str) -> Result<NamedRefresh, StoreError> {
        let now = domain::now();
        self.take_over_from_gone_holders(now).await?;
        let skip = self.left_to_live_holders(now).await?;
        let inner = &self.inner;
        Ok(
            match inner
                .store
                .claim_by_name(name, &inner.owner, now, now + inner.policy.lease, &skip)
                .await?
            {
                ClaimByName::Claimed(claimed) => match self.handle(claimed, None).await? {
                    Some(handled) => NamedRefresh::Done(handled),
                    // Left to the live process whose request is out, or taken over meanwhile.
                    None => NamedRefresh::Busy,
                },
                ClaimByName::NotFound => NamedRefresh::NotFound,
                ClaimByName::NotActive(status) => NamedRefresh::NotActive(status),
                ClaimByName::Busy => NamedRefresh::Busy,
            },
        )
    }
}

#[cfg(test)]
mod tests;

fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}
