//! The header a route adds, per credential: kept in memory while it stays valid for `min_valid`,
//! else asked of `deliver` (the stored token when fresh enough, else renewed under the sweep's
//! lease, waiting for another process's renewal), and renewed after the upstream rejected it.
//! One store read or renewal at a time per credential in this process: requests that meet a 401
//! together share one renewal. Imports `deliver`, `domain`, `renew`, `store` and `sweep`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::deliver::{self, DeliverError, Want, Which};
use crate::domain::{self, Secret, Status, UnixTime};
use crate::renew;
use crate::store::TokenState;
use crate::sweep::{Handled, NamedRefresh, Sweeper};

/// After a renewal on 401, further 401s within this time are passed through without another
/// renewal: an upstream that rejects every token must not turn each request into a refresh.
pub const RENEWAL_AFTER_401_EVERY: Duration = Duration::from_secs(30);

/// The header of one credential's token, and which token it is.
#[derive(Clone)]
pub struct Current {
    /// `Authorization` value (marked sensitive).
    pub authorization: HeaderValue,
    token: Secret,
    expires_at: UnixTime,
    /// The credential's API host (Salesforce), when the provider named one.
    pub instance_url: Option<String>,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why no header could be had; `Display` is the one-line reason a client is given (no token).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("credential {0} does not exist")]
    NotFound(String),
    #[error("credential {name} is {status} and has no valid access token")]
    NotActive { name: String, status: String },
    #[error("credential {name}: renewal failed: {reason}")]
    RenewalFailed { name: String, reason: String },
    #[error("credential {name}: its token cannot be sent: {why}")]
    Unusable { name: String, why: String },
    #[error("credential {0}: the database could not be read")]
    Store(String),
    /// `deliver`'s own one-line reason.
    #[error("{0}")]
    Delivery(String),
}

/// One client connection's copy of a credential's header ([`Credentials::remembered`]): its
/// own `Authorization` value, so that sending it touches nothing shared between threads.
pub struct Remembered {
    slot: Arc<Slot>,
    /// The slot's count of kept headers when this copy was taken.
    kept: u64,
    current: Arc<Current>,
    authorization: HeaderValue,
}

impl Remembered {
    /// The header this copy is of.
    #[must_use]
    pub fn current(&self) -> &Arc<Current> {
        &self.current
    }

    /// The `Authorization` value (marked sensitive).
    #[must_use]
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }
}

/// How a renewal after a 401 went.
#[derive(Debug)]
pub enum AfterRejection {
    /// A token other than the rejected one: send again with it. `shared`: another request's
    /// renewal (after the same 401) got it; this one waited for it.
    Renewed { current: Arc<Current>, shared: bool },
    /// The rejected token was itself renewed after a 401 moments ago: pass the 401 through.
    RecentlyRenewed,
}

/// One credential's header and its renewals.
struct Slot {
    name: String,
    current: Mutex<Option<Arc<Current>>>,
    /// Counts the headers kept: a connection's copy ([`Remembered`]) older than this is read
    /// again.
    kept: AtomicU64,
    /// Held while the store is read or a renewal runs: one at a time per credential.
    renewing: tokio::sync::Mutex<Option<Instant>>,
}

/// The headers of every credential a route has used; cheap to clone.
#[derive(Clone)]
pub struct Credentials {
    sweeper: Sweeper,
    /// Seconds a token must stay valid to be sent.
    min_valid: i64,
    /// Longest wait for another process's renewal.
    wait: Duration,
    slots: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
    /// The daemon's runtime: every store read and renewal runs there, whichever thread the
    /// request that needs it is served on.
    daemon: tokio::runtime::Handle,
}

impl Credentials {
    /// Called on the daemon's runtime, which then runs every store read and renewal.
    #[must_use]
    pub fn new(sweeper: Sweeper, min_valid: Duration, wait: Duration) -> Self {
        Self {
            sweeper,
            min_valid: i64::try_from(min_valid.as_secs()).unwrap_or(i64::MAX),
            wait,
            slots: Arc::default(),
            daemon: tokio::runtime::Handle::current(),
        }
    }

    /// `work` run on the daemon's runtime; `None` when it could not finish there (the daemon
    /// is stopping).
    pub async fn on_daemon<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        self.daemon.spawn(work).await.ok()
    }

    /// The store the sweeper writes.
    #[must_use]
    pub fn store(&self) -> &crate::store::Store {
        self.sweeper.store()
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Every request asks: the name is copied only the first time.
        if let Some(slot) = slots.get(name) {
            return Arc::clone(slot);
        }
        slots
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    name: name.to_owned(),
                    current: Mutex::new(None),
                    kept: AtomicU64::new(0),
                    renewing: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    }

    /// `name`'s header as [`Credentials::current`] gives it, through one client connection's
    /// copy `memo`: while the credential's slot has kept no newer header and the copy stays valid
    /// for `min_valid`, it is the answer, and a request reads nothing another thread writes.
    pub async fn remembered(
        &self,
        name: &str,
        memo: Option<Remembered>,
    ) -> Result<Remembered, Unavailable> {
        let now = domain::now();
        if let Some(memo) = memo
            && memo.slot.name == name
            && memo.kept == memo.slot.kept.load(Ordering::Acquire)
            && memo.current.expires_at - now >= self.min_valid.max(1)
        {
            return Ok(memo);
        }
        let slot = self.slot(name);
        // Read before the header: a header kept meanwhile makes the copy stale, not lost.
        let kept = slot.kept.load(Ordering::Acquire);
        let current = self.current(name).await?;
        let mut authorization =
            HeaderValue::from_bytes(current.authorization.as_bytes()).map_err(|_| {
                Unavailable::Unusable {
                    name: name.to_owned(),
                    why: "its access token cannot go into an Authorization header".to_owned(),
                }
            })?;
        authorization.set_sensitive(true);
        Ok(Remembered {
            slot,
            kept,
            current,
            authorization,
        })
    }

    /// `name`'s header, valid for at least `min_valid`: from memory, else through `deliver`.
    pub async fn current(&self, name: &str) -> Result<Arc<Current>, Unavailable> {
        let slot = self.slot(name);
        if let Some(current) = slot.cached(domain::now(), self.min_valid) {
            return Ok(current);
        }
        let this = self.clone();
        self.on_daemon(async move { this.delivered(&slot).await })
            .await
            .unwrap_or_else(|| Err(stopping(name)))
    }

    /// [`Credentials::current`] when memory has none valid long enough.
    async fn delivered(&self, slot: &Slot) -> Result<Arc<Current>, Unavailable> {
        let name = slot.name.as_str();
        let _renewing = slot.renewing.lock().await;
        if let Some(current) = slot.cached(domain::now(), self.min_valid) {
            return Ok(current);
        }
        let want = Want {
            min_valid: Duration::from_secs(u64::try_from(self.min_valid).unwrap_or(0)),
            wait: self.wait,
        };
        let which = Which::Name(name.to_owned());
        let delivered = deliver::deliver(self.sweeper.store(), &which, &want, &self.sweeper)
            .await
            .map_err(|e| unavailable(name, e))?;
        slot.keep(&delivered.state)
    }

    /// After the upstream answered 401 to `rejected`: a different token, renewed now under the
    /// lease, or the one another request or process renewed meanwhile.
    pub async fn after_rejection(
        &self,
        name: &str,
        rejected: &Arc<Current>,
    ) -> Result<AfterRejection, Unavailable> {
        let (this, slot, rejected) = (self.clone(), self.slot(name), rejected.clone());
        self.on_daemon(async move { this.renewed(&slot, &rejected).await })
            .await
            .unwrap_or_else(|| Err(stopping(name)))
    }

    /// [`Credentials::after_rejection`], on the daemon's runtime.
    async fn renewed(
        &self,
        slot: &Slot,
        rejected: &Current,
    ) -> Result<AfterRejection, Unavailable> {
        let name = slot.name.as_str();
        let mut renewing = slot.renewing.lock().await;
        if let Some(current) = slot.cached(domain::now(), 0)
            && current.token != rejected.token
        {
            // A request that met the 401 first renewed it while this one waited.
            return Ok(AfterRejection::Renewed {
                current,
                shared: true,
            });
        }
        // Another process (the sweep, `token`, a replica) may have stored a newer token already.
        let stored = self.read(name).await?;
        if stored.access_token.as_ref() != Some(&rejected.token)
            && renew::fresh_enough(&stored, domain::now(), 0)
        {
            return slot.keep(&stored).map(|current| AfterRejection::Renewed {
                current,
                shared: true,
            });
        }
        if renewing.is_some_and(|at| at.elapsed() < RENEWAL_AFTER_401_EVERY) {
            return Ok(AfterRejection::RecentlyRenewed);
        }
        let state = self.rejected(name, &rejected.token).await?;
        *renewing = Some(Instant::now());
        slot.keep(&state).map(|current| AfterRejection::Renewed {
            current,
            shared: false,
        })
    }

    async fn read(&self, name: &str) -> Result<TokenState, Unavailable> {
        self.sweeper
            .store()
            .token_state(name)
            .await
            .map_err(|_| Unavailable::Store(name.to_owned()))?
            .ok_or_else(|| Unavailable::NotFound(name.to_owned()))
    }

    /// A token other than `rejected`: the stored one if another process already replaced it,
    /// else refreshed now under the lease, or — while another process holds the lease — the one
    /// its refresh stores. Never refreshes while another holder has the credential.
    async fn rejected(&self, name: &str, rejected: &Secret) -> Result<TokenState, Unavailable> {
        let started = Instant::now();
        loop {
            let state = self.read(name).await?;
            let now = domain::now();
            let replaced = state.access_token.as_ref().is_some_and(|t| t != rejected);
            if replaced && renew::fresh_enough(&state, now, 0) {
                return Ok(state);
            }
            if state.status != Status::Active {
                return Err(not_active(&state));
            }
            // A provider that failed moments ago is not asked again on every 401 (backoff, its
            // Retry-After), as on-demand renewals never are.
            if state.next_attempt_at > now && !renew::held(&state, now) {
                return Err(Unavailable::RenewalFailed {
                    name: name.to_owned(),
                    reason: format!(
                        "an earlier attempt failed ({}); not tried again before {}",
                        state
                            .last_error
                            .as_deref()
                            .unwrap_or("see tokenwarden status"),
                        domain::iso8601(state.next_attempt_at)
                    ),
                });
            }
            if !renew::held(&state, now) {
                let refreshed = self
                    .sweeper
                    .refresh_named(name)
                    .await
                    .map_err(|_| Unavailable::Store(name.to_owned()))?;
                match refreshed {
                    NamedRefresh::Done(Handled::Refreshed | Handled::Superseded)
                    | NamedRefresh::Busy => {}
                    NamedRefresh::Done(_) => {
                        let state = self.read(name).await?;
                        return Err(failed(name, state.last_error.as_deref()));
                    }
                    NamedRefresh::NotFound => return Err(Unavailable::NotFound(name.to_owned())),
                    NamedRefresh::NotActive(_) => {
                        let state = self.read(name).await?;
                        return Err(not_active(&state));
                    }
                }
                let state = self.read(name).await?;
                if state.access_token.as_ref().is_some_and(|t| t != rejected)
                    && renew::fresh_enough(&state, domain::now(), 0)
                {
                    return Ok(state);
                }
            }
            if started.elapsed() >= self.wait {
                return Err(gave_up(name, started.elapsed()));
            }
            tokio::time::sleep(renew::POLL_EVERY).await;
        }
    }
}

impl Slot {
    fn cached(&self, now: UnixTime, min_valid: i64) -> Option<Arc<Current>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current
            .as_ref()
            .filter(|c| c.expires_at - now >= min_valid.max(1))
            .cloned()
    }

    /// Remembers `state`'s token as the one to send.
    fn keep(&self, state: &TokenState) -> Result<Arc<Current>, Unavailable> {
        let Some(token) = state.access_token.clone() else {
            return Err(not_active(state));
        };
        let line = deliver::header::authorization_header(state.token_type.as_deref(), &token)
            .map_err(|why| Unavailable::Unusable {
                name: self.name.clone(),
                why,
            })?;
        let value = line.expose().trim_start_matches("Authorization: ");
        let mut authorization =
            HeaderValue::from_str(value).map_err(|_| Unavailable::Unusable {
                name: self.name.clone(),
                why: "its access token cannot go into an Authorization header".to_owned(),
            })?;
        authorization.set_sensitive(true);
        let current = Arc::new(Current {
            authorization,
            token,
            expires_at: state.access_token_expires_at.unwrap_or(0),
            instance_url: state.instance_url.clone(),
        });
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&current));
        self.kept.fetch_add(1, Ordering::Release);
        Ok(current)
    }
}

/// What a client is told when `deliver` hands out no token: its one-line reason, except for the
/// database's own errors (a path, a driver's words), which only the log gets.
fn unavailable(name: &str, e: DeliverError) -> Unavailable {
    match e {
        DeliverError::UnknownCredential(_) => Unavailable::NotFound(name.to_owned()),
        DeliverError::Store(e) => {
            tracing::warn!(credential = name, error = %e, "proxy: the database could not be read");
            Unavailable::Store(name.to_owned())
        }
        DeliverError::Setup(e) => {
            tracing::warn!(credential = name, error = %e, "proxy: renewal could not be set up");
            Unavailable::RenewalFailed {
                name: name.to_owned(),
                reason: "the renewal could not be set up (see the daemon's log)".to_owned(),
            }
        }
        other => Unavailable::Delivery(other.to_string()),
    }
}

fn not_active(state: &TokenState) -> Unavailable {
    Unavailable::NotActive {
        name: state.name.clone(),
        status: state.status.as_str().to_owned(),
    }
}

fn failed(name: &str, last_error: Option<&str>) -> Unavailable {
    Unavailable::RenewalFailed {
        name: name.to_owned(),
        reason: last_error
            .unwrap_or("the provider did not issue a new token")
            .to_owned(),
    }
}

fn stopping(name: &str) -> Unavailable {
    Unavailable::Unusable {
        name: name.to_owned(),
        why: "the daemon is stopping".to_owned(),
    }
}

fn gave_up(name: &str, waited: Duration) -> Unavailable {
    Unavailable::RenewalFailed {
        name: name.to_owned(),
        reason: format!(
            "another process is renewing it; gave up waiting after {}s",
            waited.as_secs()
        ),
    }
}
