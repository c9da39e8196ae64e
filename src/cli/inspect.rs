//! The commands that run sweeps and look at how things stand: `run`, `refresh`, `status`,
//! `check-config`, `doctor`.

use super::exit::{self, CommandError, Failure};
use super::render;
use crate::daemon;
use crate::doctor;
use crate::domain::{self, Trigger};
use crate::startup::Ctx;
use crate::store::Location;
use crate::store::OpenMode;
use crate::sweep::{Handled, NamedRefresh};
use crate::untrusted::Escaped;

pub(super) async fn run_sweeps(ctx: &Ctx, once: bool) -> Result<u8, Failure> {
    let sweeper = ctx.sweeper(OpenMode::CreateIfMissing).await?;
    let shutdown = daemon::shutdown_on_signals()?;
    let code = if once {
        let summary = sweeper.sweep_once(Trigger::Once, &shutdown).await?;
        if summary.all_refreshed() {
            exit::OK
        } else {
            exit::REFRESH_FAILED
        }
    } else {
        daemon::run(sweeper.clone(), &ctx.settings, shutdown).await?;
        exit::OK
    };
    sweeper.store().close().await;
    Ok(code)
}

pub(super) async fn status(ctx: &Ctx, json: bool) -> Result<u8, Failure> {
    let store = ctx.open(OpenMode::MustExist).await?;
    let rows = store.summaries().await?;
    let invites = store.outstanding_invites(None, domain::now()).await?;
    let view = render::View {
        now: domain::now(),
        failing: ctx.policy.failing,
        refresh_token_warning: ctx.policy.refresh_token_warning,
        sweep_gap: ctx.policy.sweep_gap,
    };
    let text = if json {
        render::status_json(&rows, view)
    } else {
        render::status_table(&rows, view)
    };
    print!("{text}");
    if !json && !invites.is_empty() {
        print!("{}", render::invites_by_credential(&invites));
    }
    Ok(exit::OK)
}

pub(super) async fn refresh(ctx: &Ctx, name: String) -> Result<u8, Failure> {
    let sweeper = ctx.sweeper(OpenMode::CreateIfMissing).await?;
    // Ctrl-C or SIGTERM mid-request must not kill the process between the provider's rotation
    // and the store: the signal is noted, and the refresh finishes first.
    let _signals = daemon::shutdown_on_signals()?;
    let result = sweeper.refresh_named(&name).await?;
    sweeper.store().close().await;
    let shown = Escaped(&name);
    match result {
        NamedRefresh::Done(Handled::Refreshed) => {
            println!("credential {shown} refreshed");
            Ok(exit::OK)
        }
        NamedRefresh::Done(other) => {
            eprintln!(
                "tokenwarden: error: credential {shown} was not refreshed ({other:?}); see `tokenwarden status`"
            );
            Ok(exit::REFRESH_FAILED)
        }
        NamedRefresh::NotFound => Err(CommandError::UnknownCredential(name).into()),
        NamedRefresh::NotActive(status) => Err(CommandError::NotActive {
            name,
            status: status.as_str(),
        }
        .into()),
        NamedRefresh::Busy => {
            eprintln!(
                "tokenwarden: error: credential {shown} is being refreshed by another process right now"
            );
            Ok(exit::REFRESH_FAILED)
        }
    }
}

pub(super) async fn check_config(ctx: &Ctx) -> Result<u8, Failure> {
    let providers = ctx.providers(&ctx.refresher()?).await?;
    // An existing database must not need a key the configuration no longer lists.
    let exists = match &ctx.location {
        Location::Sqlite(path) => path.exists(),
        Location::Postgres(_) => true,
    };
    let sealer = if exists {
        let store = ctx.open_checked(OpenMode::MustExist).await?;
        store.close().await;
        store.sealer().clone()
    } else {
        ctx.sealer()?
    };
    for (_, provider) in providers.iter() {
        provider.check_grant_key()?;
    }
    for warning in crate::api::access::warnings(&ctx.settings.access) {
        tracing::warn!("{warning}");
    }
    let names: Vec<&str> = providers.names().collect();
    let gap = ctx.settings.schedule()?.longest_gap(chrono::Utc::now());
    println!(
        "configuration is valid: {} provider(s) [{}]; database {}; sweeps every {} at most; refresh margin {}",
        names.len(),
        names.join(", "),
        ctx.location.shown(),
        humantime::format_duration(gap),
        humantime::format_duration(ctx.settings.refresh_margin),
    );
    println!("{}", doctor::sealing_summary(sealer.keyring()));
    for route in &ctx.settings.proxy {
        println!(
            "proxy route {}: {} -> {} with credential {}",
            route.route_name(),
            route.listen,
            route.upstream,
            route
                .credential
                .clone()
                .or_else(|| route
                    .provider
                    .as_ref()
                    .map(|p| format!("of the unix peer at provider {p}")))
                .unwrap_or_default()
        );
    }
    Ok(exit::OK)
}

/// Probes every provider (or NAME's) and reviews every credential (or NAME); exit 1 on a failure.
pub(super) async fn doctor(ctx: &Ctx, only: Option<&str>) -> Result<u8, Failure> {
    let refresher = ctx.refresher()?;
    let providers = ctx.providers(&refresher).await?;
    let mut unreachable = None;
    let store = match ctx.open(OpenMode::MustExist).await {
        Ok(store) => Some(store),
        // A server that does not answer is a finding; a SQLite file not made yet is not.
        Err(e) if only.is_none() && matches!(ctx.location, Location::Postgres(_)) => {
            unreachable = Some(exit::one_line(&e.into()));
            None
        }
        // No database yet: only the providers can be checked.
        Err(_) if only.is_none() => None,
        Err(e) => return Err(e.into()),
    };
    let scope = doctor::Scope {
        refresher: &refresher,
        providers: &providers,
        store: store.as_ref(),
        database: ctx.location.shown(),
        unreachable,
        database_warnings: &ctx.warnings,
        only,
        proxies: &ctx.settings.proxy,
        refresh_token_warning: ctx.policy.refresh_token_warning,
        sweep_gap: ctx.policy.sweep_gap,
        now: domain::now(),
    };
    let mut report = doctor::run(&scope).await?;
    let sinks = doctor::sink_checks(&ctx.settings.sink);
    if only.is_none() && !sinks.is_empty() {
        report.sections.push(("sinks".to_owned(), sinks));
    }
    if let Some(name) = only
        && report.credentials == 0
    {
        return Err(CommandError::UnknownCredential(name.to_owned()).into());
    }
    print!("{}", report.text());
    Ok(if report.worst() == doctor::Verdict::Fail {
        exit::REFRESH_FAILED
    } else {
        exit::OK
    })
}
