//! The long-running service: a sweep at start, then one per tick of the cron schedule, never two
//! at once, until shutdown is requested; SIGTERM and SIGINT request it. Tells systemd (when it
//! set NOTIFY_SOCKET) that it is ready, alive (watchdog) and stopping, and serves the optional
//! /metrics and /healthz listener, the token API (`[api] socket`), file sinks, the invitation
//! pages (`[enroll]`) and the `[[proxy]]` routes. Between sweeps it sleeps until the next tick
//! (`ticker`): no timer of its own wakes it. Imports `exit`, `config`, `schedule`, `domain`, `enroll`,
//! `metrics`, `api`, `sink`, `listener`, `proxy` and `sweep`.

use tokio_cron_scheduler::JobSchedulerError;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{ConfigError, Settings};
use crate::domain::Trigger;
use crate::metrics::Metrics;
use crate::sweep::Sweeper;

mod ticker;

use ticker::Ticker;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[source] Box<ConfigError>),
    #[error("metrics.listen {address}: {source}")]
    MetricsListen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("enroll.listen {address}: {source}")]
    EnrollListen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Api(#[from] crate::api::BindError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
    #[error("cannot listen for signals: {0}")]
    Signals(#[from] std::io::Error),
}

impl From<ConfigError> for DaemonError {
    fn from(e: ConfigError) -> Self {
        Self::Config(Box::new(e))
    }
}

/// Sweeps at start and on every tick of the configured schedule until `shutdown` fires, then
/// returns once the sweep in flight (if any) has stored what it refreshed. With `[metrics]`
/// enabled, serves /metrics and /healthz meanwhile and counts each sweep there.
pub async fn run(
    sweeper: Sweeper,
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let schedule = settings.schedule()?;
    let metrics = listen_for_metrics(&sweeper, settings, &shutdown).await?;
    let proxy_stats = crate::proxy::ProxyStats::default();
    let routes = crate::proxy::bind(
        &sweeper,
        settings,
        &crate::startup::environment(),
        &proxy_stats,
    )
    .await?;
    if let Some(metrics) = &metrics
        && !settings.proxy.is_empty()
    {
        metrics.add_proxy(proxy_stats);
    }
    let proxies = tokio::spawn(crate::proxy::serve(routes, shutdown.clone()));
    listen_for_enroll(&sweeper, settings, &shutdown).await?;
    let api = listen_for_api(&sweeper, settings, &shutdown)?;
    let sinks = crate::sink::spawn(sweeper.store().clone(), &settings.sink, shutdown.clone())?;
    let mut ticker = Ticker::new(&schedule).await?;
    info!(schedule = schedule.six_fields(), "tokenwarden started");
    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog =
        sd_notify::watchdog_enabled().map(|interval| tokio::spawn(watchdog_pings(interval / 2)));

    // One sweep at a time, from this loop only: ticks that pass during a sweep collapse into one
    // follow-up sweep. Between sweeps the only wake-ups are the sleep to the next tick (and the
    // watchdog's pings, when systemd asked for them).
    sweep(&sweeper, &shutdown, metrics.as_ref()).await;
    while !shutdown.is_cancelled() {
        if ticker.take_due().await? {
            sweep(&sweeper, &shutdown, metrics.as_ref()).await;
            continue;
        }
        let wake_at = ticker.wake_at().await?;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = sleep_until(wake_at) => {}
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    // The routes finish the requests in flight (the listener's grace period).
    let _ = proxies.await;
    if let Some(sinks) = sinks {
        let _ = sinks.await;
    }
    if let Some((path, served)) = api {
        let _ = served.await;
        let _ = std::fs::remove_file(path);
    }
    info!("tokenwarden stopped");
    Ok(())
}

/// Binds the metrics listener and serves it until `shutdown`, when `[metrics]` is enabled.
async fn listen_for_metrics(
    sweeper: &Sweeper,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<Option<Metrics>, DaemonError> {
    if !settings.metrics.enabled {
        return Ok(None);
    }
    let address = &settings.metrics.listen;
    let listener = crate::listener::bind_tcp(address.as_str())
        .await
        .map_err(|source| DaemonError::MetricsListen {
            address: address.clone(),
            source,
        })?;
    // Unhealthy once a sweep is twice the longest gap between ticks overdue (`Metrics::new`).
    let metrics = Metrics::new(sweeper, settings);
    tokio::spawn(crate::metrics::serve(
        listener,
        metrics.clone(),
        shutdown.clone(),
    ));
    Ok(Some(metrics))
}

/// Binds the invitation pages' listener and serves it until `shutdown`, when `[enroll]` is
/// configured.
async fn listen_for_enroll(
    sweeper: &Sweeper,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<(), DaemonError> {
    let Some(enroll) = &settings.enroll else {
        return Ok(());
    };
    let listener = crate::listener::bind_tcp(enroll.listen.as_str())
        .await
        .map_err(|source| DaemonError::EnrollListen {
            address: enroll.listen.clone(),
            source,
        })?;
    let pages = crate::enroll::pages::Pages::new(
        sweeper.store().clone(),
        sweeper.providers().clone(),
        sweeper.transport().clone(),
        enroll,
        *sweeper.policy(),
    );
    info!(listen = %enroll.listen, public_url = %enroll.public_url, "serving the invitation pages");
    tokio::spawn(crate::enroll::pages::serve(
        listener,
        pages,
        shutdown.clone(),
    ));
    Ok(())
}

/// Binds the token API's socket and serves it until `shutdown`, when `[api] socket` is set.
fn listen_for_api(
    sweeper: &Sweeper,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<Option<(std::path::PathBuf, tokio::task::JoinHandle<()>)>, DaemonError> {
    let Some(path) = &settings.api.socket else {
        return Ok(None);
    };
    let socket = crate::api::bind(path)?;
    for warning in crate::api::access::warnings(&settings.access) {
        warn!("{warning}");
    }
    let rules = crate::api::access::Rules::new(
        settings.access.clone(),
        settings.api.owners_read_own,
        rustix::process::geteuid().as_raw(),
    );
    let api = crate::api::Api::new(sweeper.clone(), rules, settings.token_min_valid);
    info!(socket = %path.display(), rules = settings.access.len(), "token API listening");
    let served = tokio::spawn(crate::listener::serve(
        crate::listener::Socket::Unix(socket),
        crate::api::LIMITS,
        "api",
        api,
        shutdown.clone(),
    ));
    Ok(Some((path.clone(), served)))
}

async fn sweep(sweeper: &Sweeper, shutdown: &CancellationToken, metrics: Option<&Metrics>) {
    let started = std::time::Instant::now();
    match sweeper.sweep_once(Trigger::Schedule, shutdown).await {
        Ok(s) => {
            if let Some(metrics) = metrics {
                metrics.record_sweep(&s, started.elapsed().as_secs_f64());
            }
            let status = format!(
                "last sweep at {}: {} due, {} refreshed, {} failed, {} need re-authorization",
                crate::domain::iso8601(crate::domain::now()),
                s.due,
                s.refreshed,
                s.failed,
                s.needs_reauthorization
            );
            notify(&[sd_notify::NotifyState::Status(&status)]);
        }
        Err(e) => error!(error = %e, "sweep failed; the next tick tries again"),
    }
    // Idle until the next tick: no connection, no SQLite thread, no page cache.
    sweeper.store().close_idle().await;
}

/// Sleeps until `at`; for ever when there is no next tick.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Tells systemd how things stand; a no-op unless it set NOTIFY_SOCKET.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// Pings the systemd watchdog every `every` for as long as the process runs.
async fn watchdog_pings(every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

/// A token cancelled by the first SIGTERM or SIGINT. SIGHUP, whose default would kill the process
/// mid-sweep, is answered with a warning instead: the configuration is read at start only.
pub fn shutdown_on_signals() -> Result<CancellationToken, DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => warn!("SIGHUP does not reload the configuration; restart tokenwarden to apply changes"),
            }
        };
        info!(signal = name, "shutting down after the refreshes in flight");
        cancel.cancel();
    });
    Ok(token)
}

impl crate::exit::ExitStatus for DaemonError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::MetricsListen { .. }
            | Self::EnrollListen { .. }
            | Self::Api(_)
            | Self::Sink(_)
            | Self::Proxy(_) => crate::exit::CONFIG,
            Self::Scheduler(_) | Self::Signals(_) => crate::exit::INTERNAL,
        }
    }
}
