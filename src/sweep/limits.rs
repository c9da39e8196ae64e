//! Limits on the sweep's token requests, in this process: `concurrency` over all providers, and
//! per provider `max_concurrency` (semaphores) and `rate_limit` (requests spaced at least 1/rate
//! apart, measured from when the previous one was let go). A slot is held while the request is
//! out, not while its outcome waits to be stored. Several replicas each apply the whole limit: set
//! it to the provider's limit divided by the number of replicas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::provider::Providers;

/// The limits: `concurrency` requests at once, and every provider's own (providers without any
/// are not in `by_provider`).
pub(super) struct Limits {
    requests: Arc<Semaphore>,
    by_provider: HashMap<String, Limit>,
}

struct Limit {
    permits: Option<Arc<Semaphore>>,
    pace: Option<Pace>,
}

/// Requests let go at least `interval` apart.
struct Pace {
    interval: Duration,
    /// When the next request may go. Held while waiting: waiters go in turn.
    next: Mutex<Instant>,
}

/// A place in the limits, held while the request is out.
pub(super) struct Slot {
    _request: Option<OwnedSemaphorePermit>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Limits {
    pub(super) fn new(providers: &Providers, concurrency: usize) -> Self {
        let by_provider = providers
            .iter()
            .filter(|(_, p)| p.rate_limit.is_some() || p.max_concurrency.is_some())
            .map(|(name, p)| {
                let limit = Limit {
                    permits: p.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
                    pace: p.rate_limit.map(|rate| Pace {
                        interval: Duration::from_secs_f64(1.0 / rate),
                        next: Mutex::new(Instant::now()),
                    }),
                };
                (name.to_owned(), limit)
            })
            .collect();
        Self {
            requests: Arc::new(Semaphore::new(concurrency.max(1))),
            by_provider,
        }
    }

    /// Waits for a request slot at `provider`: one of the `concurrency` first, then the
    /// provider's concurrency permit, then its turn in the pace (so a turn is never spent on a
    /// request that still waits for a permit).
    pub(super) async fn acquire(&self, provider: &str) -> Slot {
        // The semaphores are never closed.
        let request = Arc::clone(&self.requests).acquire_owned().await.ok();
        let Some(limit) = self.by_provider.get(provider) else {
            return Slot {
                _request: request,
                _permit: None,
            };
        };
        let permit = match &limit.permits {
            Some(permits) => Arc::clone(permits).acquire_owned().await.ok(),
            None => None,
        };
        if let Some(pace) = &limit.pace {
            let mut next = pace.next.lock().await;
            tokio::time::sleep_until(*next).await;
            // From when this one goes, not from when it was due: a late wake-up does not let the
            // next one go sooner.
            *next = Instant::now() + pace.interval;
        }
        Slot {
            _request: request,
            _permit: permit,
        }
    }
}
