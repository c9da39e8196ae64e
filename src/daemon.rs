//! The long-running service: a sweep at start, then one per tick of the cron schedule, never two
//! at once, until shutdown is requested; SIGTERM and SIGINT request it. Tells systemd (when it
//! set NOTIFY_SOCKET) that it is ready, alive (watchdog) and stopping. Imports `schedule`,
//! `domain` and `sweep`.

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::domain::Trigger;
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::sweep::Sweeper;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
    #[error("cannot listen for signals: {0}")]
    Signals(#[from] std::io::Error),
}

/// Sweeps at start and on every tick of `schedule` until `shutdown` fires, then returns once the
/// sweep in flight (if any) has stored what it refreshed. Each sweep is counted in `metrics`.
pub async fn run(
    sweeper: Sweeper,
    schedule: &Schedule,
    shutdown: CancellationToken,
    metrics: Option<Metrics>,
) -> Result<(), DaemonError> {
    // Ticks land in a channel of one: the single sweep loop below never overlaps itself, and
    // ticks that arrive while it runs collapse into one follow-up sweep.
    let (ticks, mut tick_rx) = mpsc::channel::<()>(1);
    let mut scheduler = JobScheduler::new().await?;
    let job = Job::new_async(schedule.six_fields(), move |_, _| {
        let ticks = ticks.clone();
        Box::pin(async move {
            let _ = ticks.try_send(());
        })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    info!(schedule = schedule.six_fields(), "tokenwarden started");
    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog =
        sd_notify::watchdog_enabled().map(|interval| tokio::spawn(watchdog_pings(interval / 2)));

    sweep(&sweeper, &shutdown, metrics.as_ref()).await;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            tick = tick_rx.recv() => match tick {
                Some(()) => sweep(&sweeper, &shutdown, metrics.as_ref()).await,
                None => break,
            },
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    scheduler.shutdown().await?;
    info!("tokenwarden stopped");
    Ok(())
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
