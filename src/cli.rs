//! The command line: clap definitions and the thin glue from each subcommand to the library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing::warn;

use crate::alerts::Alerter;
use crate::config::{LogFormat, Settings};
use crate::doctor;
use crate::domain::{self, Backoff, GrantType, Secret, Trigger};
use crate::http::Transport;
use crate::lifecycle::{self, authorize::Prompt};
use crate::metrics::{self, Metrics};
use crate::provider::{Provider, Providers};
use crate::refresh::Refresher;
use crate::store::{Location, NewCredential, OpenMode, OpenOptions, Sealer, Store, Target};
use crate::sweep::{Handled, NamedRefresh, Policy, Revoked, Sweeper};
use crate::untrusted::Escaped;
use crate::{daemon, keys, telemetry};

pub mod exit;
mod render;

use exit::CommandError;

/// Keeps OAuth 2.0 credentials alive: refreshes access tokens before they expire.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden", version, about, after_help = exit::HELP)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the embedded defaults apply.
    #[arg(long, global = true, env = crate::config::CONFIG_PATH_VAR, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format; overrides the configuration's log.format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sweep now and then on the schedule until SIGTERM or SIGINT.
    Run {
        /// Sweep once and exit: 0 when every due credential was refreshed, 1 when any failed.
        #[arg(long)]
        once: bool,
    },
    /// Import a credential. Its refresh token is read from standard input or --refresh-token-file.
    Add {
        name: String,
        #[arg(long)]
        provider: String,
        #[arg(long, value_enum, default_value = "refresh-token")]
        grant: GrantArg,
        /// Who the credential belongs to.
        #[arg(long)]
        owner: Option<String>,
        /// Space-separated scopes; default: the provider's.
        #[arg(long)]
        scopes: Option<String>,
        /// Read the refresh token from this file instead of standard input.
        #[arg(long, value_name = "PATH")]
        refresh_token_file: Option<PathBuf>,
        /// Replace the tokens of an existing credential of that name.
        #[arg(long)]
        replace: bool,
    },
    /// Show every credential: status, expiry, last refresh, failures, last error.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print the current access token of NAME; exit 4 when there is no valid one.
    Token { name: String },
    /// Refresh NAME now, due or not.
    Refresh { name: String },
    /// Show the rotation history, of NAME or of all credentials.
    Log {
        name: Option<String>,
        /// How many of the newest entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and the secrets it references.
    CheckConfig,
    /// Preflight: probe each provider (never with a real token) and review each credential.
    Doctor {
        /// Only this credential and its provider.
        name: Option<String>,
    },
    /// Authorize NAME in a browser (authorization code with PKCE) and store its tokens. The URL to
    /// open is printed alone on standard output, instructions on standard error; the redirect
    /// comes back to a listener on 127.0.0.1. Authorizing an existing NAME replaces its tokens.
    Authorize {
        name: String,
        #[arg(long)]
        provider: String,
        /// Who the credential belongs to (kept from before when authorizing again without it).
        #[arg(long)]
        owner: Option<String>,
        /// Space-separated scopes; default: the provider's.
        #[arg(long)]
        scopes: Option<String>,
        /// Also read the redirect URL (or just the code) pasted on standard input: for machines
        /// without a browser.
        #[arg(long)]
        manual: bool,
        /// How long to wait for the redirect.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Revoke NAME's tokens at the provider (RFC 7009) and delete NAME. When the provider cannot
    /// be reached, NAME stays disabled and the revocation is sent again later.
    Revoke { name: String },
    /// Re-seal every stored token under the current [encryption] key, in small transactions (safe
    /// beside the daemon, and to interrupt and run again); then report how many tokens each key
    /// still seals. Exit 1 when some rows were left (in use throughout, or unreadable).
    Rekey {
        /// Store every token as plaintext instead: the way to turn sealing off (with the keys
        /// still configured, to open them).
        #[arg(long)]
        decrypt: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GrantArg {
    RefreshToken,
    ClientCredentials,
}

/// Runs the command; the result is the exit code, or an error that `exit::code_for` maps to one.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let env = environment();
    let settings = Settings::load(cli.config.as_deref(), &env)?;
    telemetry::init(
        cli.log_format.unwrap_or(settings.log.format),
        &settings.log.level,
    );
    for warning in settings.warnings() {
        warn!("{warning}");
    }
    let (location, warnings) = keys::database_location(&settings, &env)?;
    for warning in warnings {
        warn!("{warning}");
    }
    let ctx = Ctx {
        settings,
        env,
        location,
    };
    match cli.command {
        Command::Run { once } => run_sweeps(&ctx, once).await,
        Command::Add {
            name,
            provider,
            grant,
            owner,
            scopes,
            refresh_token_file,
            replace,
        } => {
            let grant_type = match grant {
                GrantArg::RefreshToken => GrantType::RefreshToken,
                GrantArg::ClientCredentials => GrantType::ClientCredentials,
            };
            let new = NewCredential {
                name: &name,
                provider: &provider,
                grant_type,
                scopes: scopes.as_deref(),
                owner: owner.as_deref(),
                refresh_token: None,
            };
            add(&ctx, new, refresh_token_file.as_deref(), replace).await
        }
        Command::Status { json } => status(&ctx, json).await,
        Command::Token { name } => token(&ctx, name).await,
        Command::Refresh { name } => refresh(&ctx, name).await,
        Command::Log { name, limit, json } => {
            let store = ctx.open(OpenMode::MustExist).await?;
            if let Some(name) = &name
                && !store.exists(name).await?
            {
                return Err(CommandError::UnknownCredential(name.clone()).into());
            }
            let rows = store.rotations(name.as_deref(), limit).await?;
            print!(
                "{}",
                if json {
                    render::log_json(&rows)
                } else {
                    render::log_table(&rows)
                }
            );
            Ok(exit::OK)
        }
        Command::CheckConfig => check_config(&ctx).await,
        Command::Doctor { name } => doctor(&ctx, name.as_deref()).await,
        Command::Authorize {
            name,
            provider,
            owner,
            scopes,
            manual,
            timeout,
        } => {
            let args = AuthorizeArgs {
                name: &name,
                provider: &provider,
                owner: owner.as_deref(),
                scopes: scopes.as_deref(),
                manual,
                timeout,
            };
            authorize(&ctx, args).await
        }
        Command::Revoke { name } => revoke(&ctx, &name).await,
        Command::Rekey { decrypt } => rekey(&ctx, decrypt).await,
    }
}

/// What every command works from.
struct Ctx {
    settings: Settings,
    env: BTreeMap<String, String>,
    location: Location,
}

impl Ctx {
    fn refresher(&self) -> anyhow::Result<Refresher> {
        let http = &self.settings.http;
        let transport = Transport::new(
            http.connect_timeout,
            http.request_timeout,
            http.max_response_bytes,
        )
        .context("cannot build the HTTP client")?;
        Ok(Refresher::new(transport))
    }

    /// Every provider, endpoints discovered and secrets read.
    async fn providers(&self, refresher: &Refresher) -> anyhow::Result<Providers> {
        let settings = &self.settings.providers;
        let providers = Providers::resolve(settings, &self.env, refresher.transport()).await?;
        for warning in providers.warnings() {
            warn!("{warning}");
        }
        Ok(providers)
    }
    /// The `[encryption]` keys, read and checked; warnings about how they are kept are logged.
    fn sealer(&self) -> anyhow::Result<Sealer> {
        let (sealer, warnings) = keys::load(self.settings.encryption.as_ref(), &self.env)?;
        for warning in warnings {
            warn!("{warning}");
        }
        Ok(sealer)
    }

    async fn open(&self, mode: OpenMode) -> anyhow::Result<Store> {
        let connections = u32::try_from(self.settings.concurrency)
            .unwrap_or(8)
            .saturating_add(1);
        let options = OpenOptions {
            mode,
            busy_timeout: self.settings.busy_timeout,
            connections,
        };
        Ok(Store::open(&self.location, &options, self.sealer()?).await?)
    }

    /// The store for a command that writes tokens: every key it is sealed under is listed.
    async fn open_checked(&self, mode: OpenMode) -> anyhow::Result<Store> {
        let store = self.open(mode).await?;
        store.check_keys().await?;
        Ok(store)
    }

    /// Seconds of the schedule's longest gap between sweeps.
    fn sweep_gap(&self) -> anyhow::Result<i64> {
        let gap = self.settings.schedule()?.longest_gap(chrono::Utc::now());
        Ok(i64::try_from(gap.as_secs()).unwrap_or(i64::MAX))
    }

    async fn sweeper(&self, mode: OpenMode) -> anyhow::Result<Sweeper> {
        let settings = &self.settings;
        let refresher = self.refresher()?;
        let providers = self.providers(&refresher).await?;
        let store = self.open(mode).await?;
        // Before anything is claimed: every key the database needs is here, and with a key,
        // plaintext left from before is sealed.
        let sealed = store.prepare().await?;
        if sealed.resealed > 0 || sealed.leased > 0 || !sealed.unreadable.is_empty() {
            tracing::info!(
                sealed = sealed.resealed,
                in_use_elsewhere = sealed.leased,
                unreadable = sealed.unreadable.len(),
                "plaintext tokens sealed under the current key"
            );
        }
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let policy = Policy {
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
            sweep_gap: self.sweep_gap()?,
        };
        let alerter = Alerter::new(&settings.alerts.on_event, settings.alerts.timeout);
        Ok(Sweeper::new(store, providers, refresher, policy, alerter))
    }
}

async fn run_sweeps(ctx: &Ctx, once: bool) -> anyhow::Result<u8> {
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
        let settings = &ctx.settings;
        let schedule = settings.schedule()?;
        let metrics = if settings.metrics.enabled {
            let listener = tokio::net::TcpListener::bind(&settings.metrics.listen)
                .await
                .map_err(|e| {
                    CommandError::Input(format!("metrics.listen {}: {e}", settings.metrics.listen))
                })?;
            // Unhealthy once a sweep is twice the longest gap between ticks overdue.
            let gap = i64::try_from(schedule.longest_gap(chrono::Utc::now()).as_secs())
                .unwrap_or(i64::MAX);
            let metrics = Metrics::new(
                sweeper.store().clone(),
                gap.saturating_mul(2),
                settings.failing(),
            );
            tokio::spawn(metrics::serve(listener, metrics.clone(), shutdown.clone()));
            Some(metrics)
        } else {
            None
        };
        daemon::run(sweeper.clone(), &schedule, shutdown, metrics).await?;
        exit::OK
    };
    sweeper.store().close().await;
    Ok(code)
}

async fn status(ctx: &Ctx, json: bool) -> anyhow::Result<u8> {
    let rows = ctx.open(OpenMode::MustExist).await?.summaries().await?;
    let view = render::View {
        now: domain::now(),
        failing: ctx.settings.failing(),
        refresh_token_warning: i64::try_from(ctx.settings.refresh_token_warning.as_secs())
            .unwrap_or(i64::MAX),
        sweep_gap: ctx.sweep_gap()?,
    };
    let text = if json {
        render::status_json(&rows, view)
    } else {
        render::status_table(&rows, view)
    };
    print!("{text}");
    Ok(exit::OK)
}

async fn add(
    ctx: &Ctx,
    mut new: NewCredential<'_>,
    token_file: Option<&Path>,
    replace: bool,
) -> anyhow::Result<u8> {
    check_input(new.name, new.owner, new.scopes)?;
    if !ctx.settings.providers.contains_key(new.provider) {
        let known = ctx.settings.providers.keys().cloned().collect();
        return Err(CommandError::UnknownProvider {
            name: new.provider.to_owned(),
            known,
        }
        .into());
    }
    let refresh_token = match new.grant_type {
        GrantType::RefreshToken => Some(read_refresh_token(token_file)?),
        GrantType::ClientCredentials => None,
    };
    new.refresh_token = refresh_token.as_ref();
    let store = ctx.open_checked(OpenMode::CreateIfMissing).await?;
    store.add(&new, replace, domain::now()).await?;
    store.close().await;
    println!(
        "credential {} added; it is refreshed on the next sweep",
        new.name
    );
    Ok(exit::OK)
}

async fn token(ctx: &Ctx, name: String) -> anyhow::Result<u8> {
    let store = ctx.open(OpenMode::MustExist).await?;
    let row = store
        .token(&name)
        .await?
        .ok_or_else(|| CommandError::UnknownCredential(name.clone()))?;
    let now = domain::now();
    let unexpired = row.access_token_expires_at.is_some_and(|t| t > now);
    match (row.access_token, unexpired, row.status.as_str()) {
        (Some(token), true, status) if status != "disabled" => {
            // One line, nothing a terminal would act on: a value from an older version, or written
            // by another program, that fails the rule is not printed.
            if let Err(flaw) = crate::untrusted::check_token(token.expose()) {
                return Err(CommandError::UnprintableToken { name, flaw }.into());
            }
            if status != "active" {
                // Still valid, but the credential will not be refreshed: say so where scripts don't read.
                eprintln!(
                    "tokenwarden: warning: credential {} is {}; this access token is not renewed after {}",
                    Escaped(&name),
                    Escaped(status),
                    domain::iso8601(row.access_token_expires_at.unwrap_or(now))
                );
            }
            println!("{}", token.expose());
            Ok(exit::OK)
        }
        _ => Err(CommandError::NoValidToken {
            name,
            status: row.status,
            expires_at: row.access_token_expires_at,
        }
        .into()),
    }
}

async fn refresh(ctx: &Ctx, name: String) -> anyhow::Result<u8> {
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

async fn check_config(ctx: &Ctx) -> anyhow::Result<u8> {
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
    Ok(exit::OK)
}

/// Brings every stored token under the current key (or to plaintext), then reports the keys.
async fn rekey(ctx: &Ctx, decrypt: bool) -> anyhow::Result<u8> {
    let store = ctx.open_checked(OpenMode::MustExist).await?;
    if !decrypt && store.sealer().keyring().is_none() {
        store.close().await;
        return Err(CommandError::Input(
            "rekey seals under the [encryption] key, and none is configured".to_owned(),
        )
        .into());
    }
    let target = if decrypt {
        Target::Plaintext
    } else {
        Target::Current
    };
    let result = store.rekey(target, ctx.settings.lease()).await;
    let usage = store.key_usage().await;
    store.close().await;
    let (pass, usage) = (result?, usage?);
    let mut out = doctor::rekey_summary(&pass, store.sealer().keyring(), decrypt);
    let checks = doctor::encryption_checks(&usage, store.sealer().keyring());
    doctor::render(&mut out, "tokens by key", &checks);
    print!("{out}");
    Ok(if pass.leased == 0 && pass.unreadable.is_empty() {
        exit::OK
    } else {
        exit::REFRESH_FAILED
    })
}

/// `authorize`'s arguments.
struct AuthorizeArgs<'a> {
    name: &'a str,
    provider: &'a str,
    owner: Option<&'a str>,
    scopes: Option<&'a str>,
    manual: bool,
    timeout: Duration,
}

async fn authorize(ctx: &Ctx, args: AuthorizeArgs<'_>) -> anyhow::Result<u8> {
    check_input(args.name, args.owner, args.scopes)?;
    let Some(provider_settings) = ctx.settings.providers.get(args.provider) else {
        let known = ctx.settings.providers.keys().cloned().collect();
        return Err(CommandError::UnknownProvider {
            name: args.provider.to_owned(),
            known,
        }
        .into());
    };
    let refresher = ctx.refresher()?;
    let transport = refresher.transport();
    let provider = Provider::resolve(args.provider, provider_settings, &ctx.env, transport).await?;
    for warning in &provider.warnings {
        warn!("{warning}");
    }
    let store = ctx.open_checked(OpenMode::CreateIfMissing).await?;
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let request = lifecycle::authorize::Request {
        name: args.name,
        provider: &provider,
        redirect_uri: provider.redirect_uri.as_deref(),
        scopes: args.scopes,
        owner: args.owner,
        manual: args.manual,
        timeout: args.timeout,
        margin: secs(ctx.settings.refresh_margin),
        max_idle: secs(ctx.settings.max_idle),
    };
    let show = |prompt: &Prompt| {
        let how = match (prompt.listening, prompt.reading_stdin) {
            (true, false) => format!("waiting for the redirect to {}", prompt.redirect_uri),
            (true, true) => format!(
                "waiting for the redirect to {}, or paste the URL the browser ends on (or just its code) here",
                prompt.redirect_uri
            ),
            (false, _) => "paste the URL the browser ends on (or just its code) here".to_owned(),
        };
        eprintln!(
            "tokenwarden: open this URL in a browser and sign in; {how} (timeout {}):",
            humantime::format_duration(args.timeout)
        );
        println!("{}", prompt.url);
    };
    let result = lifecycle::authorize(&store, transport, &request, show).await;
    store.close().await;
    let done = result?;
    if !done.has_refresh_token {
        eprintln!(
            "tokenwarden: warning: no refresh token returned: add offline_access to the scopes (or the provider's equivalent) and authorize {} again; until then it cannot be refreshed",
            args.name
        );
    }
    let again = match &done.how {
        lifecycle::authorize::AuthorizedAs::Created => String::new(),
        lifecycle::authorize::AuthorizedAs::Replaced { status, .. } => {
            format!(" again (was {status})")
        }
    };
    println!(
        "credential {} authorized{again}; access token valid until {}",
        args.name,
        domain::iso8601(done.expires_at)
    );
    Ok(exit::OK)
}

async fn revoke(ctx: &Ctx, name: &str) -> anyhow::Result<u8> {
    let sweeper = ctx.sweeper(OpenMode::MustExist).await?;
    let result = sweeper.revoke_named(name).await;
    sweeper.store().close().await;
    let name = Escaped(name);
    match result? {
        Revoked::Done => {
            println!("credential {name} revoked at the provider and deleted");
            Ok(exit::OK)
        }
        Revoked::Pending { reason } => {
            eprintln!(
                "tokenwarden: credential {name} is not revoked yet ({reason}); it is disabled, and the revocation is sent again by the sweep or by running `tokenwarden revoke {name}` again"
            );
            Ok(exit::REFRESH_FAILED)
        }
    }
}

/// Probes every provider (or NAME's) and reviews every credential (or NAME); exit 1 on a failure.
async fn doctor(ctx: &Ctx, only: Option<&str>) -> anyhow::Result<u8> {
    let refresher = ctx.refresher()?;
    let providers = ctx.providers(&refresher).await?;
    let mut usage = None;
    let mut database = Vec::new();
    let rows = match ctx.open(OpenMode::MustExist).await {
        Ok(store) => {
            database = doctor::database_checks(&store).await;
            usage = Some((store.key_usage().await?, store.sealer().clone()));
            let mut rows = Vec::new();
            for row in store
                .summaries()
                .await?
                .into_iter()
                .filter(|r| only.is_none_or(|n| n == r.name))
            {
                let last = store.rotations(Some(&row.name), 1).await?.pop();
                rows.push((row, last));
            }
            rows
        }
        // A server that does not answer is a finding; a SQLite file not made yet is not.
        Err(e) if only.is_none() && matches!(ctx.location, Location::Postgres(_)) => {
            database.push(doctor::failed("connection", exit::one_line(&e)));
            Vec::new()
        }
        // No database yet: only the providers can be checked.
        Err(_) if only.is_none() => Vec::new(),
        Err(e) => return Err(e),
    };
    if let Some(name) = only
        && rows.is_empty()
    {
        return Err(CommandError::UnknownCredential(name.to_owned()).into());
    }
    let mut out = String::new();
    let mut worst = database.iter().map(|c| c.verdict).max().unwrap_or_default();
    if !database.is_empty() {
        let title = format!("database {}", ctx.location.shown());
        doctor::render(&mut out, &title, &database);
    }
    for (name, provider) in providers.iter() {
        let theirs: Vec<_> = rows.iter().filter(|(r, _)| r.provider == name).collect();
        if only.is_some() && theirs.is_empty() {
            continue;
        }
        let cc_only = !theirs.is_empty()
            && theirs
                .iter()
                .all(|(r, _)| r.grant_type == "client_credentials");
        let checks = doctor::provider_checks(&refresher, provider, cc_only).await;
        worst = checks.iter().map(|c| c.verdict).fold(worst, Ord::max);
        doctor::render(&mut out, &format!("provider {name}"), &checks);
    }
    if let Some((usage, sealer)) = &usage
        && only.is_none()
    {
        let checks = doctor::encryption_checks(usage, sealer.keyring());
        worst = checks.iter().map(|c| c.verdict).fold(worst, Ord::max);
        doctor::render(&mut out, "encryption", &checks);
    }
    let warning = i64::try_from(ctx.settings.refresh_token_warning.as_secs()).unwrap_or(i64::MAX);
    let gap = ctx.sweep_gap()?;
    for (row, last) in &rows {
        let mut checks = doctor::credential_checks(row, last.as_ref(), warning, gap, domain::now());
        if providers.get(&row.provider).is_none() {
            let detail = format!("{:?} is not configured", row.provider);
            checks.insert(
                0,
                doctor::Check {
                    verdict: doctor::Verdict::Fail,
                    what: "provider",
                    detail,
                },
            );
        }
        worst = checks.iter().map(|c| c.verdict).fold(worst, Ord::max);
        doctor::render(
            &mut out,
            &format!("credential {} ({})", row.name, row.provider),
            &checks,
        );
    }
    if out.is_empty() {
        out.push_str(
            "nothing to check: no provider is configured and no credential is stored (see `tokenwarden check-config`)\n",
        );
    }
    print!("{out}");
    Ok(if worst == doctor::Verdict::Fail {
        exit::REFRESH_FAILED
    } else {
        exit::OK
    })
}

/// The process environment. Variables that are not UTF-8 cannot be settings or secrets here:
/// they are skipped rather than panicked on.
fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Checks the credential name, owner and scopes that `add` and `authorize` would store.
fn check_input(name: &str, owner: Option<&str>, scopes: Option<&str>) -> Result<(), CommandError> {
    use crate::untrusted::{NAME_RULE, is_valid_name, is_valid_scope_list, quoted};
    let bad = |what: &str, value: &str| {
        CommandError::Input(format!(
            "{what} {} is not usable: names are {NAME_RULE}",
            quoted(value)
        ))
    };
    if !is_valid_name(name) {
        return Err(bad("credential name", name));
    }
    if let Some(owner) = owner
        && !is_valid_name(owner)
    {
        return Err(bad("owner", owner));
    }
    if let Some(scopes) = scopes
        && !is_valid_scope_list(scopes)
    {
        return Err(CommandError::Input(format!(
            "--scopes {} is not usable: scopes are visible ASCII but \" and \\, separated by spaces",
            quoted(scopes)
        )));
    }
    Ok(())
}

/// Reads a refresh token from `file` or standard input, never from the command line.
fn read_refresh_token(file: Option<&Path>) -> anyhow::Result<Secret> {
    use std::io::Read;
    let mut text = String::new();
    match file {
        Some(path) => {
            text = std::fs::read_to_string(path)
                .map_err(|e| CommandError::Input(format!("cannot read {}: {e}", path.display())))?;
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CommandError::Input(format!("cannot read standard input: {e}")))?;
        }
    }
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(CommandError::Input(
            "expected one refresh token (on standard input or in --refresh-token-file)".to_owned(),
        )
        .into());
    }
    Ok(Secret::new(token))
}
