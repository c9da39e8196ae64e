//! One sweep: take over the claims of processes that died on this host (`holders`), claim the due
//! credentials in batches under a lease (as many as start within it: `claim_size`; until a short
//! claim leaves none free to claim), refresh them with bounded concurrency (and each provider's
//! `max_concurrency` and `rate_limit`: `limits`), decide what each outcome comes to (`settle`,
//! pure), store, log and alert it (`record`); then retry pending revocations (`revocation`).
//! Imports `config`, `domain`, `holder`, `provider`, `refresh`, `revoke`, `store` and `alerts`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

mod claim_size;
mod holders;
mod limits;
mod record;
mod revocation;
mod settle;

pub use revocation::{RetrySummary, RevokeError, Revoked, Settled};

use settle::{Action, Setback};

use crate::alerts::Alerter;
use crate::config::{ConfigError, Settings};
use crate::domain::{
    self, Backoff, Claimed, Failing, GrantType, Outcome, Trigger, UnixTime, iso8601,
};
use crate::holder::Holder;
use crate::provider::{Provider, Providers};
use crate::refresh::{Attempt, Grant, Refresher};
use crate::store::{ClaimByName, Store, StoreError};

/// Refreshes beyond `concurrency` under way at once: their requests wait for a slot in the limits
/// (`concurrency` requests at once, and the providers' own), or are answered and wait for their
/// group commit. Without them a group could never hold more than `concurrency` outcomes; with
/// them one commit serves up to the group writer's largest group (64).
const AHEAD: usize = 64;

/// How often storing a failed attempt is tried before giving up (the database may be busy). New
/// tokens are retried for as long as the claim lasts instead (`store_until_claim_ends`).
const STORE_ATTEMPTS: u32 = 5;
/// After a claim that came back short while due credentials were still free to claim (on
/// PostgreSQL, rows another transaction held locked at that moment: `SKIP LOCKED`), the sweep
/// claims again after this pause, up to [`RECLAIM_ROUNDS`] times in a row before it stops
/// claiming (those rows are left to the next sweep).
const RECLAIM_PAUSE: Duration = Duration::from_millis(100);
const RECLAIM_ROUNDS: u32 = 50;

/// The sweep's tunables, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Seconds before expiry to refresh.
    pub margin: i64,
    /// Refresh at least this often (seconds).
    pub max_idle: i64,
    pub backoff: Backoff,
    pub failing: Failing,
    /// Seconds before a refresh token's absolute expiry to warn.
    pub refresh_token_warning: i64,
    pub concurrency: usize,
    /// Seconds a claim lasts.
    pub lease: i64,
    /// Seconds a whole token request may take (`http.request_timeout`).
    pub request_timeout: i64,
    /// Seconds new tokens may take to be stored (`Settings::store_window`).
    pub store_window: i64,
    /// Seconds of the schedule's longest gap between sweeps: access tokens that live shorter are
    /// expired part of the time, which is worth a warning.
    pub sweep_gap: i64,
}

impl Policy {
    /// The sweep's tunables from the configuration, in whole seconds.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let gap = settings.schedule()?.longest_gap(chrono::Utc::now());
        Ok(Self {
            margin: secs(settings.refresh_margin),
            max_idle: secs(settings.max_idle),
            backoff: Backoff {
                base: secs(settings.retry.base),
                cap: secs(settings.retry.max),
            },
            failing: settings.failing(),
            refresh_token_warning: secs(settings.refresh_token_warning),
            concurrency: settings.concurrency,
            lease: secs(settings.lease()),
            request_timeout: secs(settings.http.request_timeout),
            store_window: secs(settings.store_window()),
            sweep_gap: secs(gap),
        })
    }
}

/// What happened to one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Refreshed,
    /// A transient failure; retried after backoff.
    Retrying,
    /// The grant is dead; marked needs_reauthorization.
    NeedsReauthorization,
    /// The provider rejected the client (its configuration is wrong); retried slowly.
    ClientRejected,
    /// Its refresh token changed while the request was out; nothing stored.
    Superseded,
}

/// Counts of one sweep, logged as its summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepSummary {
    /// Credentials claimed as due.
    pub due: usize,
    pub refreshed: usize,
    /// Transient failures and client rejections.
    pub failed: usize,
    pub needs_reauthorization: usize,
    pub superseded: usize,
    /// Claimed but given back unattempted (shutdown).
    pub released: usize,
}

impl SweepSummary {
    fn record(&mut self, handled: Handled) {
        match handled {
            Handled::Refreshed => self.refreshed += 1,
            Handled::Retrying | Handled::ClientRejected => self.failed += 1,
            Handled::NeedsReauthorization => self.needs_reauthorization += 1,
            Handled::Superseded => self.superseded += 1,
        }
    }

    /// Whether every due credential was refreshed.
    #[must_use]
    pub fn all_refreshed(&self) -> bool {
        self.failed == 0 && self.needs_reauthorization == 0 && self.released == 0
    }
}

/// Where a sweep's claiming stands.
#[derive(Debug, Default)]
struct Claiming {
    /// Nothing is left to claim in this sweep.
    exhausted: bool,
    /// Short claims in a row that left due credentials free to claim.
    reclaims: u32,
    /// When to claim next, after such a claim.
    claim_at: Option<tokio::time::Instant>,
}

impl Claiming {
    /// Whether an empty queue waits for the next claim rather than ending the claiming.
    fn again_later(&self) -> bool {
        !self.exhausted && self.claim_at.is_some()
    }
}

/// What `refresh_named` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedRefresh {
    Done(Handled),
    NotFound,
    NotActive(domain::Status),
    Busy,
}

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
            }),
        }
    }

    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
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
                // A claim that waited here too long to finish its request and store the result
                // before its lease ends is given back, not started: its refresh token must never
                // be out while another process may claim it.
                let needed = inner.policy.request_timeout + inner.policy.store_window;
                if domain::now() + needed > claimed.lease_expires_at {
                    if let Err(e) = inner.store.release(&claimed, &inner.owner).await {
                        warn!(error = %e, credential = %claimed.name, "could not give back a claim; it runs out by itself");
                    }
                    summary.released += 1;
                    continue;
                }
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

    /// The next batch of due credentials for [`Sweeper::sweep_once`], after the pause a short
    /// claim asked for (none when `cancel` fires meanwhile). After a short claim, claiming goes on
    /// only while due credentials are still free to claim (held locked by another transaction for
    /// a moment), at most [`RECLAIM_ROUNDS`] times in a row.
    async fn claim_next(
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
            )
            .await?;
        if claimed.len() == want {
            claiming.reclaims = 0;
            return Ok(claimed);
        }
        // The claimed rows are queued whatever this finds: their leases are held now.
        let left = claiming.reclaims < RECLAIM_ROUNDS
            && match inner.store.any_claimable(now, sweep_start).await {
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

    /// Refreshes one credential now, due or not, under the same lease as the sweep.
    pub async fn refresh_named(&self, name: &str) -> Result<NamedRefresh, StoreError> {
        let now = domain::now();
        self.take_over_from_gone_holders(now).await?;
        let inner = &self.inner;
        Ok(
            match inner
                .store
                .claim_by_name(name, &inner.owner, now, now + inner.policy.lease)
                .await?
            {
                ClaimByName::Claimed(claimed) => {
                    NamedRefresh::Done(self.handle(claimed, None).await?)
                }
                ClaimByName::NotFound => NamedRefresh::NotFound,
                ClaimByName::NotActive(status) => NamedRefresh::NotActive(status),
                ClaimByName::Busy => NamedRefresh::Busy,
            },
        )
    }

    /// [`Sweeper::handle`] once the provider's limits let the request go; `None` when the claim
    /// is given back unattempted instead: `cancel` fired while it waited (shutdown does not wait
    /// for a rate limit), or the wait took so long that the claim could run out before the
    /// outcome is stored (never sent late).
    async fn handle_within_limits(
        &self,
        claimed: Claimed,
        cancel: &CancellationToken,
    ) -> Result<Option<Handled>, StoreError> {
        let inner = &self.inner;
        let slot = tokio::select! {
            // A slot free at once is taken even during shutdown: that request is in flight.
            biased;
            slot = inner.limits.acquire(&claimed.provider) => slot,
            () = cancel.cancelled() => {
                inner.store.release(&claimed, &inner.owner).await?;
                return Ok(None);
            }
        };
        let needed = inner.policy.request_timeout + inner.policy.store_window;
        if domain::now() + needed > claimed.lease_expires_at {
            warn!(credential = %claimed.name, "waited for the provider's rate or concurrency limit until too little of the claim was left; given back");
            inner.store.release(&claimed, &inner.owner).await?;
            return Ok(None);
        }
        self.handle(claimed, Some(slot)).await.map(Some)
    }

    /// Refreshes one claimed credential and stores the outcome. `slot`, its place in the limits,
    /// is given up as soon as the request is answered: storing the outcome is no request.
    #[tracing::instrument(skip_all, fields(credential = %claimed.name, provider = %claimed.provider))]
    async fn handle(
        &self,
        claimed: Claimed,
        slot: Option<limits::Slot>,
    ) -> Result<Handled, StoreError> {
        let started = Instant::now();
        let now = domain::now();
        let provider = match self.provider_for(&claimed, now) {
            Ok(provider) => provider,
            Err(setback) => return self.store_setback(&claimed, setback, started).await,
        };
        if claimed.after_interruption {
            warn!(
                "an earlier refresh of this credential was interrupted; trying once more with the stored refresh token"
            );
        }
        let scopes = scopes_to_send(provider, &claimed);
        let grant = match (claimed.grant_type, &claimed.refresh_token) {
            (GrantType::ClientCredentials, _) => Grant::ClientCredentials {
                scopes: scopes.as_deref(),
            },
            // A fresh assertion each time; no refresh token is stored or needed.
            (GrantType::JwtBearer, _) => Grant::JwtBearer {
                subject: claimed.subject.as_deref(),
                scopes: scopes.as_deref(),
            },
            (GrantType::RefreshToken, Some(token)) => Grant::RefreshToken {
                token,
                scopes: scopes.as_deref(),
            },
            (GrantType::RefreshToken, None) => {
                let setback = record::unsendable(claimed.unreadable.as_ref());
                return self.store_setback(&claimed, setback, started).await;
            }
        };
        let Attempt {
            outcome,
            http_status,
        } = self.inner.refresher.request(provider, grant, now).await;
        drop(slot);
        let policy = &self.inner.policy;
        match settle::setback(
            &claimed,
            outcome,
            http_status,
            &provider.name,
            policy,
            domain::now(),
        ) {
            Ok(tokens) => {
                self.store_tokens(&claimed, &tokens, http_status, started)
                    .await
            }
            Err(setback) => {
                if let Action::ClientRejected { until } = setback.action {
                    self.inner
                        .rejected
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(provider.name.clone(), until);
                }
                self.store_setback(&claimed, setback, started).await
            }
        }
    }

    /// The credential's provider, unless it is not configured or is rejecting our client.
    fn provider_for(&self, claimed: &Claimed, now: UnixTime) -> Result<&Arc<Provider>, Setback> {
        let Some(provider) = self.inner.providers.get(&claimed.provider) else {
            let reason = format!("provider {:?} is not configured", claimed.provider);
            return Err(Setback::new(
                Action::Retry { not_before: None },
                Outcome::ProviderMissing,
                reason,
            ));
        };
        if let Some(until) = self.rejected_until(&provider.name, now) {
            let reason = format!(
                "provider {} rejected the client configuration; not tried again before {}",
                provider.name,
                iso8601(until)
            );
            return Err(Setback::new(
                Action::ClientRejected { until },
                Outcome::ClientRejected,
                reason,
            ));
        }
        Ok(provider)
    }

    fn rejected_until(&self, provider: &str, now: UnixTime) -> Option<UnixTime> {
        let rejected = self
            .inner
            .rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rejected.get(provider).copied().filter(|until| *until > now)
    }
}

/// The scopes to put in the request: always for client_credentials and jwt-bearer, on refresh
/// only when the provider wants them. The credential's own scopes win over the provider's.
fn scopes_to_send(provider: &Provider, claimed: &Claimed) -> Option<String> {
    if claimed.grant_type == GrantType::RefreshToken && !provider.scope_on_refresh {
        return None;
    }
    claimed
        .scopes
        .clone()
        .or_else(|| (!provider.scopes.is_empty()).then(|| provider.scopes.join(" ")))
}

#[cfg(test)]
mod tests;

fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}
