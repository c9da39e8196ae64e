//! The optional operator listener: `/metrics` in the Prometheus text format (encoded by
//! prometheus-client) and `/healthz`. At scrape time the store answers one aggregate statement
//! (credentials per provider and status, failing, expiring within the margin, the soonest expiry,
//! the oldest refresh, refresh tokens expiring within the warning window, renewals in flight: the
//! same on every replica of one database), the refresh requests out past their lease (a stopped or
//! partitioned process), and, while the table holds at most
//! `metrics.per_credential_max` credentials, the per-credential series; counters (refreshes by
//! outcome, failed attempts by provider and class), the last sweep and the schedule's gap come
//! from this process; `metrics/series.rs` registers the store's series. README "Metrics and
//! health" has the table of every series; a test compares it with a scrape. Served through
//! `listener` (its timeouts, connection cap and accept backoff). Imports `config`, `domain`,
//! `listener`, `store` and `sweep`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::{self, Failing, UnixTime};
use crate::listener::{self, Handler, Limits, Peer, Socket};
use crate::store::{Store, StoreError};
use crate::sweep::{ErrorClass, SweepSummary, Sweeper};

mod series;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    provider: String,
    class: &'static str,
}

/// The last finished sweep.
#[derive(Debug, Clone, Copy)]
struct LastSweep {
    at: UnixTime,
    seconds: f64,
}

/// Shared state behind the listener; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// The sweeper whose failed attempts are counted.
    sweeper: Sweeper,
    /// The configured providers: their error counters are exported from 0.
    providers: Vec<String>,
    refreshes: Family<OutcomeLabels, Counter>,
    sweeps: Counter,
    last_sweep: Mutex<Option<LastSweep>>,
    started_at: UnixTime,
    /// The longest gap between two scheduled sweeps (seconds).
    gap: i64,
    /// `/healthz` fails when the last sweep is older than this (seconds): twice `gap`.
    stale_after: i64,
    failing: Failing,
    /// Seconds of `refresh_margin`: "expiring within the margin".
    margin: i64,
    /// Seconds of `refresh_token_warning`: refresh tokens "expiring within the warning window".
    refresh_token_warning: i64,
    /// Most credentials for which per-credential series are exported.
    per_credential_max: u64,
    /// The `[[proxy]]` routes' series, when the daemon serves routes.
    proxy: std::sync::OnceLock<crate::proxy::ProxyStats>,
}

impl Metrics {
    /// `gap`: the longest gap between two scheduled sweeps, in seconds; `/healthz` calls the
    /// sweeps stalled once the last one is twice that old.
    #[must_use]
    pub fn new(sweeper: &Sweeper, settings: &Settings) -> Self {
        let policy = sweeper.policy();
        Self {
            inner: Arc::new(Inner {
                store: sweeper.store().clone(),
                sweeper: sweeper.clone(),
                providers: settings.providers.keys().cloned().collect(),
                refreshes: Family::default(),
                sweeps: Counter::default(),
                last_sweep: Mutex::new(None),
                started_at: domain::now(),
                gap: policy.sweep_gap,
                stale_after: policy.sweep_gap.saturating_mul(2),
                failing: policy.failing,
                margin: policy.margin,
                refresh_token_warning: policy.refresh_token_warning,
                per_credential_max: settings.metrics.per_credential_max,
                proxy: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Exports the proxy routes' series too (set once, at start).
    pub fn add_proxy(&self, stats: crate::proxy::ProxyStats) {
        let _ = self.inner.proxy.set(stats);
    }

    /// Counts a finished sweep.
    pub fn record_sweep(&self, summary: &SweepSummary, seconds: f64) {
        let inner = &self.inner;
        // Counters and the last sweep change together under the lock, so a scrape (which copies
        // them under it) never sees a sweep counted but not timed.
        let mut last = inner
            .last_sweep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.sweeps.inc();
        for (outcome, n) in [
            ("refreshed", summary.refreshed),
            ("failed", summary.failed),
            ("needs_reauthorization", summary.needs_reauthorization),
            ("superseded", summary.superseded),
        ] {
            inner
                .refreshes
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(n as u64);
        }
        *last = Some(LastSweep {
            at: domain::now(),
            seconds,
        });
    }

    /// A consistent copy of the sweep counters and the last sweep.
    fn sweep_snapshot(&self) -> (Family<OutcomeLabels, Counter>, Counter, Option<LastSweep>) {
        let inner = &self.inner;
        let last = inner
            .last_sweep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        for outcome in ["failed", "superseded", "needs_reauthorization", "refreshed"] {
            let labels = OutcomeLabels { outcome };
            let n = inner.refreshes.get_or_create(&labels).get();
            refreshes.get_or_create(&labels).inc_by(n);
        }
        let sweeps = Counter::default();
        sweeps.inc_by(inner.sweeps.get());
        (refreshes, sweeps, *last)
    }

    /// This process's failed attempts by provider and class: every configured provider's
    /// classes from 0, so that a rate over them exists before the first failure.
    fn error_counts(&self) -> Family<ErrorLabels, Counter> {
        let inner = &self.inner;
        let family = Family::<ErrorLabels, Counter>::default();
        for provider in &inner.providers {
            for class in ErrorClass::ALL {
                family
                    .get_or_create(&ErrorLabels {
                        provider: provider.clone(),
                        class: class.as_str(),
                    })
                    .inc_by(0);
            }
        }
        for (provider, class, n) in inner.sweeper.errors().snapshot() {
            family
                .get_or_create(&ErrorLabels {
                    provider,
                    class: class.as_str(),
                })
                .inc_by(n);
        }
        family
    }

    /// The exposition text.
    async fn render(&self) -> Result<String, StoreError> {
        let inner = &self.inner;
        let now = domain::now();
        let mut registry = Registry::with_prefix("tokenwarden");
        let (refreshes, sweeps, last_sweep) = self.sweep_snapshot();
        registry.register("refreshes", "Refresh attempts by outcome", refreshes);
        registry.register(
            "refresh_errors",
            "Failed refresh attempts of this process by provider and class (rate_limited: HTTP 429)",
            self.error_counts(),
        );
        registry.register("sweeps", "Sweeps finished", sweeps);
        let started = Gauge::<i64>::default();
        started.set(inner.started_at);
        registry.register(
            "start_time_seconds",
            "When this process started (Unix time)",
            started,
        );
        let gap = Gauge::<i64>::default();
        gap.set(inner.gap);
        registry.register(
            "sweep_gap_seconds",
            "The longest gap between two scheduled sweeps (seconds); /healthz fails at twice it",
            gap,
        );
        if let Some(last) = last_sweep {
            let at = Gauge::<i64>::default();
            at.set(last.at);
            registry.register(
                "last_sweep_timestamp_seconds",
                "When the last successful sweep finished (Unix time); a sweep that failed (the \
                 database) does not count",
                at,
            );
            let took = Gauge::<f64, AtomicU64>::default();
            took.set(last.seconds);
            registry.register(
                "last_sweep_duration_seconds",
                "How long the last sweep took",
                took,
            );
        }
        if let Some(proxy) = inner.proxy.get() {
            proxy.register(&mut registry);
        }
        let total = self.register_aggregates(&mut registry, now).await?;
        self.register_sent_past_lease(&mut registry, now).await?;
        let included = u64::try_from(total).unwrap_or(0) <= inner.per_credential_max;
        let shown = Gauge::<i64>::default();
        shown.set(i64::from(included));
        registry.register(
            "per_credential_series",
            format!(
                "1 when the per-credential series are exported; 0 when the table holds more than \
                 metrics.per_credential_max ({}) credentials and they are left out",
                inner.per_credential_max
            ),
            shown,
        );
        if included {
            self.register_per_credential(&mut registry, now).await?;
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| {
            StoreError::Open {
                path: "metrics".into(),
                reason: e.to_string(),
            }
        })?;
        Ok(text)
    }

    /// `Ok` when the last sweep is recent and the database answers.
    async fn health(&self) -> Result<(), String> {
        let inner = &self.inner;
        verdict(
            domain::now(),
            inner.started_at,
            self.sweep_snapshot().2.map(|l| l.at),
            inner.stale_after,
        )?;
        inner.store.ping().await.map_err(|e| e.to_string())
    }

    async fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, content_type: &str, body: String| {
            Response::builder()
                .status(status)
                .header("Content-Type", content_type)
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default()
        };
        match (request.method(), request.uri().path()) {
            (&hyper::Method::GET, "/metrics") => match self.render().await {
                Ok(text) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(e) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{e}\n"),
                ),
            },
            (&hyper::Method::GET, "/healthz") => match self.health().await {
                Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".to_owned()),
                Err(why) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{why}\n"),
                ),
            },
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics or /healthz\n".to_owned(),
            ),
        }
    }
}

/// Whether the sweeps are keeping up: the last one is no older than `stale_after`, or, before the
/// first one finished, the process is younger than that.
fn verdict(
    now: UnixTime,
    started_at: UnixTime,
    last_sweep_at: Option<UnixTime>,
    stale_after: i64,
) -> Result<(), String> {
    let since = last_sweep_at.unwrap_or(started_at);
    if now - since > stale_after {
        return Err(match last_sweep_at {
            Some(at) => format!(
                "last sweep finished {}s ago (at {})",
                now - at,
                domain::iso8601(at)
            ),
            None => format!(
                "no sweep has finished in the {}s since start",
                now - started_at
            ),
        });
    }
    Ok(())
}

/// The metrics listener's limits: a scrape is one short request.
pub const LIMITS: Limits = Limits {
    header_read: Duration::from_secs(10),
    connection: Duration::from_mins(1),
    max_connections: 64,
    keep_alive: true,
};

impl Handler for Metrics {
    async fn handle(&self, _: Peer, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.respond(&request).await
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` fires, with [`LIMITS`].
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: CancellationToken) {
    listener::serve(Socket::Tcp(listener), LIMITS, "metrics", metrics, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn healthy_while_sweeps_are_recent() {
        assert!(verdict(1000, 0, Some(900), 360).is_ok());
        assert!(
            verdict(100, 0, None, 360).is_ok(),
            "young process, no sweep yet"
        );
    }

    #[test]
    fn unhealthy_when_sweeps_stall() {
        let e = verdict(2000, 0, Some(1000), 360).unwrap_err();
        assert!(e.contains("last sweep finished 1000s ago"), "{e}");
        assert!(
            verdict(1000, 0, None, 360)
                .unwrap_err()
                .contains("no sweep has finished")
        );
    }
}
