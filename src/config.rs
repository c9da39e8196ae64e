//! Settings: embedded defaults, then the TOML file, then `TOKENWARDEN_*` environment variables,
//! deserialized strictly (unknown keys are errors) and validated. Reads nothing but that file: the
//! secrets a provider references are resolved later, by `provider`. `config/provider.rs` holds a
//! provider block and its checks, `config/preset.rs` the known providers, `config/encryption.rs`
//! the `[encryption]` table, `config/enroll.rs` the `[enroll]` table, `config/proxy.rs` a
//! `[[proxy]]` route, `config/check.rs` the checks across settings, `config/de.rs` how durations
//! and word lists are read. Imports `exit`, `domain`, `schedule` and `untrusted`.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::schedule::Schedule;

mod check;
mod de;
mod encryption;
mod enroll;
pub mod preset;
mod provider;
mod proxy;

pub use encryption::EncryptionSettings;
pub use enroll::EnrollSettings;
pub(crate) use provider::check_endpoint;
pub use provider::{ClientAuthMethod, MIN_RATE_LIMIT, Preset, ProviderSettings};
pub use proxy::{
    ProxyCredential, ProxyListen, ProxySettings, ProxyUpstream, UPSTREAM_INSTANCE_URL,
};

/// The defaults every key falls back to; `config/tokenwarden.example.toml` documents them.
const DEFAULTS: &str = r#"
schedule = "*/3 * * * *"
refresh_margin = "10m"
max_idle = "24h"
refresh_token_warning = "14d"
concurrency = 8
busy_timeout = "5s"
token_min_valid = "60s"

[http]
connect_timeout = "10s"
request_timeout = "30s"
max_response_bytes = 1048576

[retry]
base = "30s"
max = "1h"
failing_after_failures = 5
failing_after = "6h"

[log]
format = "text"
level = "info"

[metrics]
enabled = false
listen = "127.0.0.1:9464"
per_credential_max = 1000

[alerts]
on_event = []
timeout = "10s"

[api]
owners_read_own = false
"#;

/// The environment variable that names the configuration file; never read as a setting.
pub const CONFIG_PATH_VAR: &str = "TOKENWARDEN_CONFIG";
/// The environment variable that names the token API's socket for `token`/`exec`; never read as
/// a setting.
pub const SOCKET_VAR: &str = "TOKENWARDEN_SOCKET";
/// libpq's variables for a password or a password file (sqlx reads them as libpq does): secrets
/// too, never handed to a command that `exec` runs.
pub const LIBPQ_SECRET_VARS: [&str; 2] = ["PGPASSWORD", "PGPASSFILE"];
const ENV_PREFIX: &str = "TOKENWARDEN";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {source}")]
    File {
        path: PathBuf,
        source: config::ConfigError,
    },
    #[error(
        "configuration file {path}: anyone may write to it (mode {mode:04o}), and it names the programs to run and where secrets are sent; chmod o-w it (0640 or 0600)"
    )]
    WorldWritable { path: PathBuf, mode: u32 },
    #[error("configuration: {0}")]
    Parse(config::ConfigError),
    #[error("configuration key {key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// Reads the configuration file ourselves, so that a missing or unreadable file is named plainly,
/// and refuses one that anyone may write to: it names programs to run (`alerts.on_event`) and
/// where secrets are sent (`token_url`). The mode is taken from the opened file.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let unreadable = |e: std::io::Error| ConfigError::File {
        path: path.to_owned(),
        source: config::ConfigError::Foreign(Box::new(e)),
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mode = file.metadata().map_err(unreadable)?.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(ConfigError::WorldWritable {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(unreadable)?;
    Ok(text)
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Everything tokenwarden can be told.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The SQLite database file, or a `postgres://` / `postgresql://` URL (read by
    /// `store::Location::from_settings`, the one place that decides which, and the default file).
    pub database: Option<PathBuf>,
    /// How to reach PostgreSQL besides its URL: for a `postgres://` database, and for the
    /// destination of `migrate --to`.
    #[serde(default)]
    pub postgres: Option<PostgresSettings>,
    /// Cron expression for sweeps (5 or 6 fields, UTC).
    pub schedule: String,
    /// Refresh an access token this long before it expires.
    #[serde(deserialize_with = "de::duration")]
    pub refresh_margin: Duration,
    /// Refresh at least this often even when the access token lives longer.
    #[serde(deserialize_with = "de::duration")]
    pub max_idle: Duration,
    /// Warn this long before a refresh token's known absolute expiry.
    #[serde(deserialize_with = "de::duration")]
    pub refresh_token_warning: Duration,
    /// Refreshes in flight at once.
    pub concurrency: usize,
    /// How long to wait for another process's lock on the database.
    #[serde(deserialize_with = "de::duration")]
    pub busy_timeout: Duration,
    /// `token` and `exec` renew an access token first when it expires sooner than this.
    #[serde(deserialize_with = "de::duration")]
    pub token_min_valid: Duration,
    pub http: HttpSettings,
    pub retry: RetrySettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub alerts: AlertSettings,
    /// Invitation links and the pages they open; absent: none.
    #[serde(default)]
    pub enroll: Option<EnrollSettings>,
    /// Sealing of stored tokens; absent: stored as they are.
    #[serde(default)]
    pub encryption: Option<EncryptionSettings>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSettings>,
    /// `[[proxy]]` routes `run` serves: the credential's header added to each forwarded request.
    #[serde(default)]
    pub proxy: Vec<ProxySettings>,
    /// The local token API of `tokenwarden run`.
    pub api: ApiSettings,
    /// Who may read which credential over the API (`[[access]]` blocks); none: only root and
    /// the service user.
    #[serde(default)]
    pub access: Vec<AccessRule>,
    /// Files kept holding a credential's current token (`[[sink]]` blocks).
    #[serde(default)]
    pub sink: Vec<SinkSettings>,
}

/// One `[[sink]]`: a credential's token kept in a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    pub credential: String,
    /// An absolute path; its directory must exist.
    pub path: PathBuf,
    /// The file's mode, octal (`"0640"`).
    #[serde(default = "default_sink_mode", deserialize_with = "de::octal_mode")]
    pub mode: u32,
    /// The file's group (the service user must be a member: `SupplementaryGroups=`).
    pub group: Option<String>,
    #[serde(default)]
    pub format: SinkFormat,
}

fn default_sink_mode() -> u32 {
    0o600
}

/// What a sink's file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    /// The access token and a newline.
    #[default]
    Token,
    /// `Authorization: <type> <token>` and a newline.
    Header,
    /// The token API's JSON answer.
    Json,
}

/// `[api]`: the local token API, HTTP/1.1 on a unix socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// The socket's path; absent: no API.
    pub socket: Option<PathBuf>,
    /// Each local user may read the credentials whose `owner` is that user's name.
    pub owners_read_own: bool,
}

/// One `[[access]]` block: `users` and members of `groups` may read `credentials`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Credential names, or globs (`*` any run of characters, `?` one).
    pub credentials: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[postgres]`: the password and CA file for a `postgres://` database, kept out of its URL.
/// (`database` is a string, so these cannot live under a `[database]` table.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// A file holding the password (mode 0600 or stricter; world-writable is refused).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// CA certificates (PEM) to verify the server with, instead of the system's roots; use it
    /// with `sslmode=verify-full` in the URL.
    pub ssl_root_cert: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(deserialize_with = "de::duration")]
    pub connect_timeout: Duration,
    /// Bound on one whole token request, connect to last byte.
    #[serde(deserialize_with = "de::duration")]
    pub request_timeout: Duration,
    /// Token responses larger than this are refused.
    pub max_response_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Backoff ceiling after the first transient failure (doubles per failure, full jitter).
    #[serde(deserialize_with = "de::duration")]
    pub base: Duration,
    /// Largest backoff.
    #[serde(deserialize_with = "de::duration")]
    pub max: Duration,
    /// A credential is reported failing after this many consecutive failures…
    pub failing_after_failures: u32,
    /// …or this long without a successful refresh while it fails.
    #[serde(deserialize_with = "de::duration")]
    pub failing_after: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing level (`error` … `trace`) for tokenwarden's own events.
    pub level: String,
}

/// The command run on credential events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Program and arguments (no shell); empty: no alerts.
    #[serde(deserialize_with = "de::words")]
    pub on_event: Vec<String>,
    /// Longest an alert command may run.
    #[serde(deserialize_with = "de::duration")]
    pub timeout: Duration,
}

/// The optional `/metrics` and `/healthz` listener of `tokenwarden run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    pub enabled: bool,
    /// Address to listen on; loopback unless you mean it.
    pub listen: String,
    /// Per-credential series only while the table holds at most this many credentials; above
    /// it, only the aggregates (a scrape stays small and cheap however many there are).
    pub per_credential_max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Loads the embedded defaults, then `file` if given, then the `TOKENWARDEN_*` variables of
    /// `env`, and validates the result. `env` is passed in so that loading stays pure.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            let text = read_file(path)?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let vars: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("{ENV_PREFIX}_"))
                    && *k != CONFIG_PATH_VAR
                    && *k != SOCKET_VAR
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .ignore_empty(true)
                .source(Some(vars)),
        );
        let settings: Self = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| match file {
                Some(path) => ConfigError::File {
                    path: path.to_owned(),
                    source: e,
                },
                None => ConfigError::Parse(e),
            })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every environment variable this configuration names as holding a secret: each provider's
    /// `client_secret_env`, `[encryption]`'s `key_env` and `retired_key_envs`, `[postgres]
    /// password_env`; and libpq's own [`LIBPQ_SECRET_VARS`]. A child process (`exec`) never
    /// inherits them.
    #[must_use]
    pub fn secret_variables(&self) -> Vec<&str> {
        let encryption = self.encryption.iter().flat_map(|e| {
            e.key_env
                .as_deref()
                .into_iter()
                .chain(e.retired_key_envs.iter().map(String::as_str))
        });
        self.providers
            .values()
            .filter_map(|p| p.client_secret_env.as_deref())
            .chain(encryption)
            .chain(
                self.postgres
                    .iter()
                    .filter_map(|p| p.password_env.as_deref()),
            )
            .chain(LIBPQ_SECRET_VARS)
            .collect()
    }

    /// The parsed sweep schedule (validated by `load`).
    pub fn schedule(&self) -> Result<Schedule, ConfigError> {
        self.schedule.parse().map_err(|e| invalid("schedule", e))
    }

    /// How long a claim on a credential lasts: longer than waiting for a slot, the whole request
    /// and every attempt to store its outcome, so that no two processes ever hold the same refresh
    /// token at once. A crashed process's claims are taken over when it runs out.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.http.request_timeout * 2 + self.store_window() + Duration::from_secs(10)
    }

    /// How long new tokens may take to be stored (retried while the database is busy) before the
    /// claim on their credential runs out: ten busy timeouts, at least 20 seconds.
    #[must_use]
    pub fn store_window(&self) -> Duration {
        (self.busy_timeout * 10).max(Duration::from_secs(20))
    }

    /// Warnings about settings that work but should change.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        self.providers
            .iter()
            .filter(|(_, p)| p.client_secret.is_some())
            .map(|(name, _)| {
                format!(
                    "provider {name}: client_secret is inline in the configuration; prefer client_secret_env or client_secret_file"
                )
            })
            .collect()
    }
}

impl crate::exit::ExitStatus for ConfigError {
    fn exit_code(&self) -> u8 {
        crate::exit::CONFIG
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(Some(file.path()), &env)
    }

    const PROVIDER: &str = r#"
[providers.entra]
token_url = "https://login.example.com/token"
client_id = "000123"
client_secret_env = "ENTRA_SECRET"
scopes = "offline_access https://graph.microsoft.com/.default"
"#;

    #[test]
    fn defaults_need_no_file() {
        let s = Settings::load(None, &BTreeMap::new()).unwrap();
        assert_eq!(s.refresh_margin, Duration::from_mins(10));
        assert_eq!(s.schedule().unwrap().six_fields(), "0 */3 * * * *");
    }

    #[test]
    fn provider_limits_are_read_and_checked() {
        let s = load_str(
            &format!("{PROVIDER}rate_limit = 2.5\nmax_concurrency = 4\n"),
            &[],
        )
        .unwrap();
        assert_eq!(s.providers["entra"].rate_limit, Some(2.5));
        assert_eq!(s.providers["entra"].max_concurrency, Some(4));
        let env = load_str(
            PROVIDER,
            &[("TOKENWARDEN_PROVIDERS__ENTRA__RATE_LIMIT", "7")],
        )
        .unwrap();
        assert_eq!(env.providers["entra"].rate_limit, Some(7.0));
        for (line, key) in [
            ("rate_limit = 0", "providers.entra.rate_limit"),
            ("rate_limit = -1", "providers.entra.rate_limit"),
            ("rate_limit = nan", "providers.entra.rate_limit"),
            ("max_concurrency = 0", "providers.entra.max_concurrency"),
        ] {
            let e = load_str(&format!("{PROVIDER}{line}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && !e.contains('\n'), "{line}: {e}");
        }
    }

    #[test]
    fn file_then_env_and_client_id_keeps_leading_zeros() {
        let s = load_str(
            PROVIDER,
            &[
                ("TOKENWARDEN_CONCURRENCY", "3"),
                ("TOKENWARDEN_PROVIDERS__ENTRA__SCOPE_ON_REFRESH", "true"),
                ("TOKENWARDEN_CONFIG", "/ignored.toml"),
            ],
        )
        .unwrap();
        assert_eq!(s.concurrency, 3);
        let p = &s.providers["entra"];
        assert_eq!(p.client_id, "000123");
        assert_eq!(p.scope_on_refresh, Some(true));
        assert_eq!(
            p.scopes,
            ["offline_access", "https://graph.microsoft.com/.default"]
        );
        assert_eq!(p.default_expires_in, None, "the preset or 1h applies");
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tokenwarden.example.toml");
        let s = Settings::load(Some(&path), &BTreeMap::new()).unwrap();
        assert!(
            s.providers.is_empty(),
            "every provider in the example is commented out"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load_str("refresh_margn = \"5m\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("refresh_margn"), "{e}");
        let e = load_str(&format!("{PROVIDER}tokn_url = \"x\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokn_url"), "{e}");
    }

    #[test]
    fn margin_must_cover_a_sweep_gap() {
        let e = load_str("schedule = \"*/10 * * * *\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("refresh_margin"), "{e}");
        load_str(
            "schedule = \"*/10 * * * *\"\nrefresh_margin = \"15m\"\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let remote = PROVIDER.replace("https://login.example.com", "http://login.example.com");
        let e = load_str(&remote, &[]).unwrap_err().to_string();
        assert!(
            e.contains("providers.entra.token_url") && e.contains("plain http"),
            "{e}"
        );
        load_str(
            &PROVIDER.replace("https://login.example.com", "http://127.0.0.1:8080"),
            &[],
        )
        .unwrap();
        load_str(&format!("{remote}allow_insecure_http = true\n"), &[]).unwrap();
    }

    #[test]
    fn a_secret_source_is_required_and_inline_warns() {
        let none = PROVIDER.replace("client_secret_env = \"ENTRA_SECRET\"\n", "");
        let e = load_str(&none, &[]).unwrap_err().to_string();
        assert!(e.contains("exactly one of client_secret_env"), "{e}");
        let inline = PROVIDER.replace(
            "client_secret_env = \"ENTRA_SECRET\"",
            "client_secret = \"s3cr3t-canary\"",
        );
        let s = load_str(&inline, &[]).unwrap();
        let warnings = s.warnings().join("\n");
        assert!(warnings.contains("inline") && !warnings.contains("s3cr3t-canary"));
        assert!(!format!("{s:?}").contains("s3cr3t-canary"));
    }

    #[test]
    fn provider_names_follow_the_name_rule() {
        for bad in ["\"a b\"", "\"caf\u{e9}\"", "\"x\\u001b[2J\""] {
            let toml = PROVIDER.replace("[providers.entra]", &format!("[providers.{bad}]"));
            let e = load_str(&toml, &[]).unwrap_err().to_string();
            assert!(e.contains("provider names are 1 to 128 characters"), "{e}");
            assert!(!e.contains('\u{1b}'), "{e}");
        }
        load_str(
            &PROVIDER.replace("[providers.entra]", "[providers.entra-2_x]"),
            &[],
        )
        .unwrap();
    }

    #[test]
    fn a_public_client_takes_no_secret() {
        let public = PROVIDER.replace(
            "client_secret_env = \"ENTRA_SECRET\"",
            "client_auth = \"none\"",
        );
        load_str(&public, &[]).unwrap();
        let both = PROVIDER.replace(
            "client_secret_env = \"ENTRA_SECRET\"",
            "client_auth = \"none\"\nclient_secret_env = \"X\"",
        );
        let e = load_str(&both, &[]).unwrap_err().to_string();
        assert!(
            e.contains("client_auth") && e.contains("public client"),
            "{e}"
        );
    }

    #[test]
    fn malformed_toml_names_the_file() {
        let e = load_str("schedule = \n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("configuration file "), "{e}");
    }
}
