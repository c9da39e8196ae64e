//! Exit codes, and the errors a command reports about what the user asked for.

use crate::config::ConfigError;
use crate::daemon::DaemonError;
use crate::deliver::DeliverError;
use crate::discovery::DiscoveryError;
use crate::exec::ExecError;
use crate::http::HttpError;
use crate::keys::KeysError;
use crate::lifecycle::AuthorizeError;
use crate::provider::ProviderError;
use crate::startup::StartupError;
use crate::store::{LocationError, StoreError, TransferError};
use crate::sweep::RevokeError;

/// Success.
pub const OK: u8 = 0;
/// A refresh failed: `run --once` or `refresh` could not refresh every credential it tried,
/// `token`/`exec` could not renew a token that expires too soon; or a provider's issuer metadata
/// could not be fetched.
pub const REFRESH_FAILED: u8 = 1;
/// Bad usage or configuration: a flag, the TOML, a missing secret or key file, an unknown provider.
pub const CONFIG: u8 = 2;
/// The database cannot be opened, read or written (missing, corrupt, read-only, locked).
pub const DATABASE: u8 = 3;
/// No such credential (by name, or by owner: none or several), or it has no valid access token
/// (`token`; a stored one that is not visible ASCII is not printed), or it is not active.
pub const NOT_FOUND: u8 = 4;
/// Stored tokens are sealed under a key the configuration does not list (or it lists none), or a
/// stored token does not open: nothing was claimed or sent.
pub const SEALING: u8 = 5;
/// `migrate`: claims run in the source database (a daemon or a command is using it); stop them
/// and run it again.
pub const BUSY: u8 = 6;
/// Anything else (the runtime or the scheduler failed).
pub const INTERNAL: u8 = 70;

/// The table shown at the end of `--help`.
pub const HELP: &str = "Exit codes: 0 ok; 1 a refresh or renewal failed; 2 usage or configuration \
error; 3 database error; 4 unknown or ambiguous credential, or no valid token; 5 tokens sealed \
under a key the configuration lacks; 6 migrate: the source database is in use (claims held); 70 \
internal error. `exec` exits with its command's code once \
the command runs (126/127: it cannot be run/found).";

/// What the user asked for cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no credential named {0:?}")]
    UnknownCredential(String),
    #[error("unknown provider {name:?} (configured: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownProvider { name: String, known: Vec<String> },
    #[error("credential {name:?} is {status}; it is not refreshed until it is authorized again")]
    NotActive { name: String, status: &'static str },
    #[error("{0}")]
    Input(String),
}

/// The error as one line: each cause in the chain once (many messages already embed their
/// source's), code snippets that parsers draw under a message left out.
#[must_use]
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains(" | ") && !l.starts_with('|'))
            .collect();
        let text = text.join(": ");
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// The exit code for an error, from the first typed error in its chain.
#[must_use]
pub fn code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(ProviderError::Discovery {
            source: DiscoveryError::Unavailable { .. },
            ..
        }) = cause.downcast_ref::<ProviderError>()
        {
            // The issuer may be back in a moment: not a configuration error, so systemd retries.
            return REFRESH_FAILED;
        }
        if cause.is::<ConfigError>()
            || cause.is::<ProviderError>()
            || cause.is::<KeysError>()
            || cause.is::<LocationError>()
        {
            return CONFIG;
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return match e {
                StoreError::Exists(_)
                | StoreError::OwnerTaken { .. }
                | StoreError::InviteMismatch { .. } => CONFIG,
                StoreError::KeysMissing(_) | StoreError::Unreadable { .. } => SEALING,
                _ => DATABASE,
            };
        }
        if let Some(e) = cause.downcast_ref::<CommandError>() {
            return match e {
                CommandError::UnknownProvider { .. } | CommandError::Input(_) => CONFIG,
                _ => NOT_FOUND,
            };
        }
        if let Some(e) = cause.downcast_ref::<crate::api::client::ClientError>() {
            use crate::api::{client::ClientError, words};
            return match e {
                ClientError::Refused { word, .. } => match word.as_str() {
                    words::RENEWAL_FAILED => REFRESH_FAILED,
                    words::BAD_REQUEST => CONFIG,
                    words::UNAVAILABLE => DATABASE,
                    _ => NOT_FOUND,
                },
                ClientError::Connect { .. } | ClientError::Answer { .. } => DATABASE,
            };
        }
        if let Some(e) = cause.downcast_ref::<DeliverError>() {
            return match e {
                // The StoreError, or what could not set the renewal up, is next in the chain.
                DeliverError::Store(_) | DeliverError::Setup(_) => continue,
                DeliverError::RenewalFailed { .. } => REFRESH_FAILED,
                _ => NOT_FOUND,
            };
        }
        if let Some(e) = cause.downcast_ref::<TransferError>() {
            return match e {
                // The StoreError is next in the chain.
                TransferError::Store(_) => continue,
                TransferError::Claimed { .. } => BUSY,
                TransferError::SourceNotSqlite(_)
                | TransferError::NotPostgresUrl
                | TransferError::NotEmpty { .. } => CONFIG,
                _ => DATABASE,
            };
        }
        if let Some(e) = cause.downcast_ref::<ExecError>() {
            return e.shell_code().unwrap_or(INTERNAL);
        }
        if let Some(e) = cause.downcast_ref::<AuthorizeError>() {
            match e {
                // The StoreError is next in the chain.
                AuthorizeError::Keep(_) => continue,
                e if e.is_configuration() => return CONFIG,
                _ => return REFRESH_FAILED,
            }
        }
        if let Some(e) = cause.downcast_ref::<RevokeError>() {
            match e {
                RevokeError::Store(_) => continue,
                RevokeError::NotFound(_) => return NOT_FOUND,
                e if e.is_configuration() => return CONFIG,
                _ => return REFRESH_FAILED,
            }
        }
        match cause.downcast_ref::<StartupError>() {
            // Boxed (it is large), so the chain holds the box: decided here. A proxy variable
            // that is not a URL is the operator's to fix as well.
            Some(StartupError::Config(_) | StartupError::Http(HttpError::Proxy(_))) => {
                return CONFIG;
            }
            Some(StartupError::Http(_)) => return INTERNAL,
            _ => {}
        }
        if let Some(
            DaemonError::Config(_)
            | DaemonError::MetricsListen { .. }
            | DaemonError::EnrollListen { .. }
            | DaemonError::Api(_)
            | DaemonError::Sink(_),
        ) = cause.downcast_ref::<DaemonError>()
        {
            return CONFIG;
        }
        if cause.is::<DaemonError>() {
            return INTERNAL;
        }
    }
    INTERNAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_drops_repeats_and_snippets() {
        let inner = std::io::Error::other(
            "TOML parse error at line 1, column 12\n  |\n1 | schedule = \n  |            ^\nstring values must be quoted\n",
        );
        let e = anyhow::Error::new(inner).context("configuration file a.toml");
        assert_eq!(
            one_line(&e),
            "configuration file a.toml: TOML parse error at line 1, column 12: string values must be quoted"
        );
        let e = anyhow::anyhow!("no such file").context("cannot read x: no such file");
        assert_eq!(one_line(&e), "cannot read x: no such file");
    }
}
