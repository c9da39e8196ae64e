//! The command line: clap definitions and the thin glue from each subcommand to the library.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing::warn;

use crate::config::LogFormat;
use crate::doctor;
use crate::domain::{self, GrantType, Secret, Trigger};
use crate::lifecycle::{self, authorize::Prompt};
use crate::provider::Provider;
use crate::renew::{self, Renewal};
use crate::startup::Ctx;
use crate::store::{NewCredential, OpenMode, Store, Target, TokenState};
use crate::sweep::{Handled, NamedRefresh, Revoked};
use crate::untrusted::Escaped;
use crate::{daemon, telemetry};

pub mod exit;
mod header;
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
    Add(AddArgs),
    /// Show every credential: status, expiry, last refresh, failures, last error.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print the current access token of NAME (or of --owner's credential at --provider),
    /// renewed first when it expires within --min-valid; exit 4 when there is no valid one, 1
    /// when the renewal failed. Only the token goes to standard output.
    Token {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        renew: RenewArgs,
        /// Print `Authorization: <type> <token>`, a header line for `curl -H @-`.
        #[arg(long)]
        header: bool,
    },
    /// Run COMMAND with a fresh access token of NAME (renewed as `token` does) in an environment
    /// variable, and Salesforce's instance URL in INSTANCE_URL; never on a command line. Exits
    /// with COMMAND's exit code (128 + the signal when a signal ended it).
    Exec {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        renew: RenewArgs,
        /// The environment variable that receives the access token.
        #[arg(long, default_value = "ACCESS_TOKEN", value_name = "VAR")]
        env: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
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
        /// The device authorization grant (RFC 8628), for a machine without a browser: prints
        /// where to enter which code on any other device (the URL alone on standard output), and
        /// waits for the approval there.
        #[arg(long, conflicts_with = "manual")]
        device: bool,
        /// How long to wait for the redirect (default 5m), or with --device for the approval
        /// (default: as long as the user code lives).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Authorize it even though --owner already has another credential of this provider.
        #[arg(long)]
        allow_same_owner: bool,
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

/// `add`'s arguments.
#[derive(Debug, clap::Args)]
struct AddArgs {
    name: String,
    #[arg(long)]
    provider: String,
    #[arg(long, value_enum, default_value = "refresh-token")]
    grant: GrantArg,
    /// Who the credential belongs to.
    #[arg(long)]
    owner: Option<String>,
    /// jwt-bearer: the assertion's subject, the user or service account to act as (default: the
    /// owner; neither: no `sub`, as a Google service account acting as itself).
    #[arg(long)]
    subject: Option<String>,
    /// Space-separated scopes; default: the provider's.
    #[arg(long)]
    scopes: Option<String>,
    /// Read the refresh token from this file instead of standard input.
    #[arg(long, value_name = "PATH")]
    refresh_token_file: Option<PathBuf>,
    /// Replace the tokens of an existing credential of that name.
    #[arg(long)]
    replace: bool,
    /// Add it even though --owner already has a credential of this provider.
    #[arg(long)]
    allow_same_owner: bool,
}

/// Which credential: by name, or by its owner at a provider.
#[derive(Debug, clap::Args)]
struct Which {
    /// The credential's name (or give --provider and --owner).
    #[arg(required_unless_present = "owner")]
    name: Option<String>,
    /// With --owner: the provider of the owner's credential.
    #[arg(long, requires = "owner", conflicts_with = "name")]
    provider: Option<String>,
    /// With --provider: the credential of this owner; an error when the owner has several.
    #[arg(long, requires = "provider", conflicts_with = "name")]
    owner: Option<String>,
}

/// When to renew before handing a token out.
#[derive(Debug, clap::Args)]
struct RenewArgs {
    /// Renew the access token first when it expires sooner than this (default: the
    /// configuration's token_min_valid, 60s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    min_valid: Option<Duration>,
    /// Longest wait for a refresh that another process has in flight.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GrantArg {
    RefreshToken,
    ClientCredentials,
    /// RFC 7523: each access token for an assertion signed with the provider's private_key_file.
    JwtBearer,
}

/// Runs the command; the result is the exit code, or an error that `exit::code_for` maps to one.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let ctx = Ctx::load(cli.config.as_deref())?;
    telemetry::init(
        cli.log_format.unwrap_or(ctx.settings.log.format),
        &ctx.settings.log.level,
    );
    for warning in ctx.settings.warnings() {
        warn!("{warning}");
    }
    match cli.command {
        Command::Run { once } => run_sweeps(&ctx, once).await,
        Command::Add(args) => add(&ctx, &args).await,
        Command::Status { json } => status(&ctx, json).await,
        Command::Token {
            which,
            renew,
            header,
        } => token(&ctx, &which, &renew, header).await,
        Command::Exec {
            which,
            renew,
            env,
            command,
        } => exec(&ctx, &which, &renew, &env, &command).await,
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
            device,
            timeout,
            allow_same_owner,
        } => {
            let args = AuthorizeArgs {
                name: &name,
                provider: &provider,
                owner: owner.as_deref(),
                scopes: scopes.as_deref(),
                manual,
                device,
                timeout,
                allow_same_owner,
            };
            authorize(&ctx, args).await
        }
        Command::Revoke { name } => revoke(&ctx, &name).await,
        Command::Rekey { decrypt } => rekey(&ctx, decrypt).await,
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
        daemon::run(sweeper.clone(), &ctx.settings, shutdown).await?;
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

async fn add(ctx: &Ctx, args: &AddArgs) -> anyhow::Result<u8> {
    let grant_type = match args.grant {
        GrantArg::RefreshToken => GrantType::RefreshToken,
        GrantArg::ClientCredentials => GrantType::ClientCredentials,
        GrantArg::JwtBearer => GrantType::JwtBearer,
    };
    let mut new = NewCredential {
        name: &args.name,
        provider: &args.provider,
        grant_type,
        scopes: args.scopes.as_deref(),
        owner: args.owner.as_deref(),
        refresh_token: None,
    };
    check_input(new.name, new.owner, new.scopes)?;
    let Some(provider) = ctx.settings.providers.get(new.provider) else {
        let known = ctx.settings.providers.keys().cloned().collect();
        return Err(CommandError::UnknownProvider {
            name: new.provider.to_owned(),
            known,
        }
        .into());
    };
    if args.subject.is_some() && grant_type != GrantType::JwtBearer {
        return Err(
            CommandError::Input("--subject goes with --grant jwt-bearer".to_owned()).into(),
        );
    }
    if grant_type == GrantType::JwtBearer && provider.private_key_file.is_none() {
        return Err(CommandError::Input(format!(
            "provider {} has no private_key_file to sign jwt-bearer assertions with",
            new.provider
        ))
        .into());
    }
    let refresh_token = match new.grant_type {
        GrantType::RefreshToken => Some(read_refresh_token(args.refresh_token_file.as_deref())?),
        GrantType::ClientCredentials | GrantType::JwtBearer => None,
    };
    new.refresh_token = refresh_token.as_ref();
    let store = ctx.open_checked(OpenMode::CreateIfMissing).await?;
    if let Some(owner) = new.owner
        && !args.allow_same_owner
    {
        store
            .ensure_owner_free(new.provider, owner, new.name)
            .await?;
    }
    if grant_type == GrantType::JwtBearer {
        // The assertion's subject: --subject, else the owner (a user name, say), else none.
        let subject = args.subject.as_deref().or(new.owner);
        store
            .add_jwt_bearer(&new, subject, args.replace, domain::now())
            .await?;
    } else {
        store.add(&new, args.replace, domain::now()).await?;
    }
    store.close().await;
    println!(
        "credential {} added; it is refreshed on the next sweep",
        new.name
    );
    Ok(exit::OK)
}

/// The credential `which` names: by name, or the one credential of its owner at the provider.
async fn which_name(store: &Store, which: &Which) -> anyhow::Result<String> {
    if let Some(name) = &which.name {
        return Ok(name.clone());
    }
    let (Some(provider), Some(owner)) = (&which.provider, &which.owner) else {
        return Err(CommandError::Input(
            "name a credential, or give --provider and --owner".to_owned(),
        )
        .into());
    };
    let mut names = store.owned_by(provider, owner).await?;
    match names.len() {
        0 => Err(CommandError::NoOwnerCredential {
            provider: provider.clone(),
            owner: owner.clone(),
        }
        .into()),
        1 => Ok(names.remove(0)),
        _ => Err(CommandError::Ambiguous {
            provider: provider.clone(),
            owner: owner.clone(),
            names,
        }
        .into()),
    }
}

/// The access token of `which`, valid for at least `--min-valid`: renewed first if need be.
async fn fresh_token(ctx: &Ctx, which: &Which, args: &RenewArgs) -> anyhow::Result<TokenState> {
    let store = ctx.open(OpenMode::MustExist).await?;
    let result = fresh_from(ctx, &store, which, args).await;
    store.close().await;
    let state = result?;
    // One line, nothing a terminal would act on: a value from an older version, or written by
    // another program, that fails the rule is neither printed nor handed to a command.
    if let Some(token) = &state.access_token
        && let Err(flaw) = crate::untrusted::check_token(token.expose())
    {
        return Err(CommandError::UnprintableToken {
            name: state.name,
            flaw,
        }
        .into());
    }
    Ok(state)
}

async fn fresh_from(
    ctx: &Ctx,
    store: &Store,
    which: &Which,
    args: &RenewArgs,
) -> anyhow::Result<TokenState> {
    let name = which_name(store, which).await?;
    let state = store
        .token_state(&name)
        .await?
        .ok_or_else(|| CommandError::UnknownCredential(name.clone()))?;
    let min_valid = args.min_valid.unwrap_or(ctx.settings.token_min_valid);
    let min_secs = i64::try_from(min_valid.as_secs()).unwrap_or(i64::MAX);
    let now = domain::now();
    let state = if renew::fresh_enough(&state, now, min_secs) {
        state
    } else if state.status != "active" {
        return Err(CommandError::NoValidToken {
            name,
            status: state.status,
            expires_at: state.access_token_expires_at,
        }
        .into());
    } else {
        let sweeper = ctx
            .sweeper_with(store.clone(), Some(&state.provider))
            .await?;
        // As `refresh`: a signal mid-request must not end the process before the new tokens are
        // stored.
        let _signals = daemon::shutdown_on_signals()?;
        let failed = |reason: String| CommandError::RenewalFailed {
            name: name.clone(),
            reason,
        };
        match renew::renew(&sweeper, &name, min_secs, args.wait).await? {
            Renewal::Fresh(state) => state,
            Renewal::NotFound => return Err(CommandError::UnknownCredential(name).into()),
            Renewal::NotActive(state) => {
                return Err(CommandError::NoValidToken {
                    name,
                    status: state.status,
                    expires_at: state.access_token_expires_at,
                }
                .into());
            }
            Renewal::Failed { state, .. } => {
                let why = state
                    .last_error
                    .unwrap_or_else(|| "see `tokenwarden status`".to_owned());
                return Err(failed(why).into());
            }
            Renewal::TooShort(state) => {
                let until = domain::iso8601(state.access_token_expires_at.unwrap_or(now));
                return Err(failed(format!(
                    "the provider's new access token is valid until {until}, less than --min-valid {}",
                    humantime::format_duration(min_valid)
                ))
                .into());
            }
            Renewal::BackingOff(state) => {
                return Err(failed(format!(
                    "an earlier attempt failed ({}); not tried again before {}",
                    state
                        .last_error
                        .as_deref()
                        .unwrap_or("see `tokenwarden status`"),
                    domain::iso8601(state.next_attempt_at)
                ))
                .into());
            }
            Renewal::GaveUp { waited } => {
                return Err(failed(format!(
                    "another process is refreshing it; gave up waiting after {}s (--wait)",
                    waited.as_secs()
                ))
                .into());
            }
        }
    };
    if state.status != "active" {
        // Still valid, but the credential will not be refreshed: say so where scripts don't read.
        eprintln!(
            "tokenwarden: warning: credential {name} is {}; this access token is not renewed after {}",
            state.status,
            domain::iso8601(state.access_token_expires_at.unwrap_or(now))
        );
    }
    Ok(state)
}

async fn token(ctx: &Ctx, which: &Which, args: &RenewArgs, header: bool) -> anyhow::Result<u8> {
    let state = fresh_token(ctx, which, args).await?;
    let Some(token) = &state.access_token else {
        return Err(CommandError::UnknownCredential(state.name).into());
    };
    if header {
        let line =
            header::authorization_header(state.token_type.as_deref(), token).map_err(|why| {
                CommandError::Unusable {
                    name: state.name.clone(),
                    why,
                }
            })?;
        println!("{}", line.expose());
    } else {
        println!("{}", token.expose());
    }
    Ok(exit::OK)
}

async fn exec(
    ctx: &Ctx,
    which: &Which,
    args: &RenewArgs,
    var: &str,
    command: &[String],
) -> anyhow::Result<u8> {
    if !crate::exec::is_variable_name(var) {
        return Err(CommandError::Input(format!(
            "--env {var:?} is not an environment variable name (letters, digits and _)"
        ))
        .into());
    }
    let Some((program, command_args)) = command.split_first() else {
        return Err(CommandError::Input("no command given after --".to_owned()).into());
    };
    let state = fresh_token(ctx, which, args).await?;
    let Some(token) = &state.access_token else {
        return Err(CommandError::UnknownCredential(state.name).into());
    };
    let instance_url = state.instance_url.clone().map(Secret::new);
    let mut set = vec![(var, token)];
    if let Some(url) = &instance_url {
        set.push(("INSTANCE_URL", url));
    }
    // The child gets this process's environment without the client secrets it names, and
    // without a stale INSTANCE_URL.
    let mut remove: Vec<&str> =
        ctx.settings
            .providers
            .values()
            .filter_map(|p| p.client_secret_env.as_deref())
            .chain(
                ctx.env.keys().map(String::as_str).filter(|k| {
                    k.starts_with("TOKENWARDEN_") && *k != crate::config::CONFIG_PATH_VAR
                }),
            )
            .collect();
    if instance_url.is_none() {
        remove.push("INSTANCE_URL");
    }
    let child = crate::exec::Child {
        program,
        args: command_args,
        set,
        remove,
    };
    Ok(crate::exec::run(&child).await?)
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
    let sealer = if ctx.db_path.exists() {
        let store = ctx.open_checked(OpenMode::MustExist).await?;
        store.close().await;
        store.sealer().clone()
    } else {
        ctx.sealer()?
    };
    for (_, provider) in providers.iter() {
        provider.check_grant_key()?;
    }
    let names: Vec<&str> = providers.names().collect();
    let gap = ctx.settings.schedule()?.longest_gap(chrono::Utc::now());
    println!(
        "configuration is valid: {} provider(s) [{}]; database {}; sweeps every {} at most; refresh margin {}",
        names.len(),
        names.join(", "),
        ctx.db_path.display(),
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
    device: bool,
    timeout: Option<Duration>,
    allow_same_owner: bool,
}

/// How long `authorize` waits for a redirect by default.
const AUTHORIZE_TIMEOUT: Duration = Duration::from_mins(5);

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
    if let Some(owner) = args.owner
        && !args.allow_same_owner
    {
        // Before the browser: nobody signs in for a credential that would be refused.
        store
            .ensure_owner_free(args.provider, owner, args.name)
            .await?;
    }
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if args.device {
        let request = lifecycle::authorize::DeviceRequest {
            name: args.name,
            provider: &provider,
            scopes: args.scopes,
            owner: args.owner,
            timeout: args.timeout.unwrap_or(Duration::MAX),
            margin: secs(ctx.settings.refresh_margin),
            max_idle: secs(ctx.settings.max_idle),
        };
        let show = |prompt: &lifecycle::device::UserPrompt| {
            eprintln!(
                "tokenwarden: on any device with a browser, open {} and enter the code {} (valid for {}){}",
                prompt.verification_uri,
                prompt.user_code,
                humantime::format_duration(prompt.expires_in),
                if prompt.verification_uri_complete.is_some() {
                    ", or open this URL, which carries the code:"
                } else {
                    ":"
                }
            );
            println!(
                "{}",
                prompt
                    .verification_uri_complete
                    .as_deref()
                    .unwrap_or(&prompt.verification_uri)
            );
        };
        let result =
            lifecycle::authorize::authorize_device(&store, transport, &request, show).await;
        store.close().await;
        return Ok(report_authorized(args.name, &result?));
    }
    let timeout = args.timeout.unwrap_or(AUTHORIZE_TIMEOUT);
    let request = lifecycle::authorize::Request {
        name: args.name,
        provider: &provider,
        redirect_uri: provider.redirect_uri.as_deref(),
        scopes: args.scopes,
        owner: args.owner,
        manual: args.manual,
        timeout,
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
            humantime::format_duration(timeout)
        );
        println!("{}", prompt.url);
    };
    let result = lifecycle::authorize(&store, transport, &request, show).await;
    store.close().await;
    Ok(report_authorized(args.name, &result?))
}

/// Says how an authorization ended: on standard output, and a warning when it cannot be kept.
fn report_authorized(name: &str, done: &lifecycle::authorize::Authorization) -> u8 {
    if !done.has_refresh_token {
        eprintln!(
            "tokenwarden: warning: no refresh token returned: add offline_access to the scopes (or the provider's equivalent) and authorize {name} again; until then it cannot be refreshed"
        );
    }
    let again = match &done.how {
        lifecycle::authorize::AuthorizedAs::Created => String::new(),
        lifecycle::authorize::AuthorizedAs::Replaced { status, .. } => {
            format!(" again (was {status})")
        }
    };
    println!(
        "credential {name} authorized{again}; access token valid until {}",
        domain::iso8601(done.expires_at)
    );
    exit::OK
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
    let store = match ctx.open(OpenMode::MustExist).await {
        Ok(store) => Some(store),
        // No database yet: only the providers can be checked.
        Err(_) if only.is_none() => None,
        Err(e) => return Err(e.into()),
    };
    let scope = doctor::Scope {
        refresher: &refresher,
        providers: &providers,
        store: store.as_ref(),
        only,
        refresh_token_warning: i64::try_from(ctx.settings.refresh_token_warning.as_secs())
            .unwrap_or(i64::MAX),
        sweep_gap: ctx.sweep_gap()?,
        now: domain::now(),
    };
    let report = doctor::run(&scope).await?;
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
