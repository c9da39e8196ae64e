//! The command line: clap definitions and the dispatch of each subcommand to its module (`inspect`,
//! `credentials`, `token`), which call the library and render what it returns.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing::warn;

use crate::config::LogFormat;
use crate::startup::Ctx;
use crate::store::OpenMode;
use crate::telemetry;

mod credentials;
pub mod exit;
mod inspect;
mod invite;
mod migrate;
mod remote;
mod render;
mod token;

use credentials::{AuthorizeArgs, add, authorize, rekey, revoke};
use inspect::{check_config, doctor, refresh, run_sweeps, status};
use token::{exec, token};

use exit::{CommandError, Failure};

/// Keeps OAuth 2.0 credentials alive: refreshes access tokens before they expire.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden", version, about, after_help = exit::HELP)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the embedded defaults apply.
    #[arg(long, global = true, env = crate::config::CONFIG_PATH_VAR, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format; overrides the configuration's log.format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
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
        /// Give COMMAND only PATH, HOME, LANG and the token variables, not this environment.
        #[arg(long)]
        clean_env: bool,
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
    /// Make a one-time link (printed alone on standard output, under [enroll] public_url) with
    /// which OWNER authorizes NAME in a browser: `tokenwarden run` serves the pages. For an
    /// existing NAME the link re-authorizes it, only with its provider and owner. --list shows
    /// the outstanding links, --revoke ID withdraws one.
    Invite(InviteArgs),
    /// Revoke NAME's tokens at the provider (RFC 7009) and delete NAME. When the provider cannot
    /// be reached, NAME stays disabled and the revocation is sent again later.
    Revoke { name: String },
    /// Copy this configuration's SQLite database (credentials and journal, ids and sealed tokens
    /// as stored) into an empty PostgreSQL database, migrated first, and compare every row after
    /// the copy. The source is only read; refused (exit 6) while a claim in it runs. The password
    /// comes from [postgres] password_file or password_env.
    Migrate {
        /// The destination: postgres://user@host:port/database (sslmode etc. as for `database`).
        #[arg(long, value_name = "URL")]
        to: String,
    },
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

/// `invite`'s arguments.
#[derive(Debug, clap::Args)]
struct InviteArgs {
    #[arg(required_unless_present_any = ["list", "revoke"], conflicts_with_all = ["list", "revoke"])]
    name: Option<String>,
    #[arg(long, required_unless_present_any = ["list", "revoke"])]
    provider: Option<String>,
    /// Who authorizes it (their account at the provider; an email is compared with the
    /// account's email claim when the provider sends one).
    #[arg(long, required_unless_present_any = ["list", "revoke"])]
    owner: Option<String>,
    /// Space-separated scopes; default: the provider's.
    #[arg(long)]
    scopes: Option<String>,
    /// How long the link works (default: [enroll] link_valid, 24h).
    #[arg(long, value_parser = humantime::parse_duration)]
    valid: Option<Duration>,
    /// Show the outstanding links (never their secrets).
    #[arg(long, conflicts_with = "revoke")]
    list: bool,
    /// With --list: JSON.
    #[arg(long, requires = "list")]
    json: bool,
    /// Withdraw the link with this id (from --list).
    #[arg(long, value_name = "ID")]
    revoke: Option<i64>,
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
    /// Ask the daemon's token API on this unix socket instead of reading the database; no
    /// configuration is read.
    #[arg(long, env = crate::config::SOCKET_VAR, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// `--log-format`: the configuration's `log.format`, as a flag.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => Self::Text,
            LogFormatArg::Json => Self::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GrantArg {
    RefreshToken,
    ClientCredentials,
    /// RFC 7523: each access token for an assertion signed with the provider's private_key_file.
    JwtBearer,
}

/// `token`/`exec` with `--socket`: over the token API, with no configuration and no database.
async fn over_socket(cli: &Cli) -> Option<Result<u8, Failure>> {
    let log_format = cli.log_format.map_or(LogFormat::Text, LogFormat::from);
    match &cli.command {
        Command::Token {
            which,
            renew:
                renew @ RenewArgs {
                    socket: Some(socket),
                    ..
                },
            header,
        } => {
            telemetry::init(log_format, "warn");
            Some(remote::token(socket, which, renew, *header).await)
        }
        Command::Exec {
            which,
            renew:
                renew @ RenewArgs {
                    socket: Some(socket),
                    ..
                },
            env,
            clean_env,
            command,
        } => {
            telemetry::init(log_format, "warn");
            Some(remote::exec(socket, which, renew, env, *clean_env, command).await)
        }
        _ => None,
    }
}

/// Runs the command; the result is the exit code, or the error with the code it says
/// (`crate::exit::ExitStatus`).
pub async fn run(cli: Cli) -> Result<u8, Failure> {
    if let Some(code) = over_socket(&cli).await {
        return code;
    }
    let ctx = Ctx::load(cli.config.as_deref())?;
    telemetry::init(
        cli.log_format
            .map_or(ctx.settings.log.format, LogFormat::from),
        &ctx.settings.log.level,
    );
    for warning in &ctx.warnings {
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
            clean_env,
            command,
        } => exec(&ctx, &which, &renew, &env, clean_env, &command).await,
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
        Command::Invite(args) => invite::invite(&ctx, &args).await,
        Command::Revoke { name } => revoke(&ctx, &name).await,
        Command::Rekey { decrypt } => rekey(&ctx, decrypt).await,
        Command::Migrate { to } => migrate::migrate(&ctx, &to).await,
    }
}
