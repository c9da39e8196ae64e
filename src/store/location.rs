//! Where the database is: a SQLite file or a PostgreSQL server ([`Location`]), read once from
//! the settings (`database`, `[postgres]`, systemd's `STATE_DIRECTORY`), with the PostgreSQL
//! password read from `[postgres] password_file` or `password_env` (the file must not be writable
//! by other users, and should not be readable by them: a warning) and its CA file. [`PgOptions`]
//! never shows a password (`Debug`, [`PgOptions::shown`]), and no message carries one. A URL to
//! another host without `sslmode=verify-full` draws a warning. Imports
//! `config`, `domain`, `exit` and `secret_file`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use crate::config::Settings;
use crate::domain::Secret;

/// Why the configured database cannot be reached as configured.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("database: {0}")]
    Database(&'static str),
    #[error("postgres.{key}: {reason}")]
    Password { key: &'static str, reason: String },
}

/// Where the database is: a SQLite file, or a PostgreSQL server.
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PgOptions),
}

impl Location {
    /// The database `settings` name, and warnings about how its password is kept: a
    /// `postgres://` (or `postgresql://`) URL with `[postgres]`'s password and CA file, else the
    /// SQLite file: the configured one, else `$STATE_DIRECTORY/tokenwarden.db` when systemd sets
    /// `STATE_DIRECTORY`, else `./tokenwarden.db`.
    pub fn from_settings(
        settings: &Settings,
        env: &BTreeMap<String, String>,
    ) -> Result<(Self, Vec<String>), LocationError> {
        let Some(url) = postgres_url(settings) else {
            return Ok((Self::Sqlite(sqlite_path(settings, env)), Vec::new()));
        };
        let parsed = url::Url::parse(url)
            // The URL itself is not shown: it may hold a password.
            .map_err(|_| LocationError::Database("is not a usable postgres:// URL"))?;
        let (options, mut warnings) = postgres_options(settings, env, url)?;
        if parsed.password().is_some() {
            warnings.insert(0, "database: the URL holds a password; prefer [postgres] password_file or password_env (or PGPASSFILE)".to_owned());
        }
        Ok((Self::Postgres(options), warnings))
    }

    /// How the database is named in messages: the file, or the URL without its password.
    #[must_use]
    pub fn shown(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(pg) => pg.shown(),
        }
    }
}

/// The PostgreSQL URL, when `database` is one.
fn postgres_url(settings: &Settings) -> Option<&str> {
    let text = settings.database.as_deref()?.to_str()?;
    PgOptions::is_url(text).then_some(text)
}

/// The SQLite file: the configured one, else `$STATE_DIRECTORY/tokenwarden.db` when systemd sets
/// `STATE_DIRECTORY`, else `./tokenwarden.db`.
fn sqlite_path(settings: &Settings, env: &BTreeMap<String, String>) -> PathBuf {
    if let Some(path) = &settings.database {
        return path.clone();
    }
    match env
        .get("STATE_DIRECTORY")
        .and_then(|dirs| dirs.split(':').next())
    {
        Some(dir) if !dir.is_empty() => Path::new(dir).join("tokenwarden.db"),
        _ => PathBuf::from("tokenwarden.db"),
    }
}

/// The PostgreSQL database at `url` with `[postgres]`'s password and CA file (for `database`,
/// and for `migrate --to`), and warnings about how the password is kept.
pub fn postgres_options(
    settings: &Settings,
    env: &BTreeMap<String, String>,
    url: &str,
) -> Result<(PgOptions, Vec<String>), LocationError> {
    let pg = settings.postgres.as_ref();
    let mut warnings = Vec::new();
    let password = match (
        pg.and_then(|p| p.password_file.as_deref()),
        pg.and_then(|p| p.password_env.as_deref()),
    ) {
        (Some(path), _) => {
            let err = |reason: String| LocationError::Password {
                key: "password_file",
                reason: format!("{}: {reason}", path.display()),
            };
            let file = crate::secret_file::read(path).map_err(|e| err(e.to_string()))?;
            warnings.extend(file.warning("postgres.password_file", path));
            Some(Secret::new(file.text.clone()))
        }
        (None, Some(name)) => Some(Secret::new(env.get(name).cloned().ok_or_else(|| {
            LocationError::Password {
                key: "password_env",
                reason: format!("the variable {name} is not set"),
            }
        })?)),
        (None, None) => None,
    };
    warnings.extend(tls_warning(url));
    let ca = pg.and_then(|p| p.ssl_root_cert.clone());
    if let Some(ca) = &ca
        && !ca.is_file()
    {
        return Err(LocationError::Password {
            key: "ssl_root_cert",
            reason: format!("{} is not a readable file", ca.display()),
        });
    }
    Ok((PgOptions::new(url.to_owned(), password, ca), warnings))
}

/// A warning when the PostgreSQL connection at `url` could go without TLS or to a server whose
/// certificate is not checked: without `sslmode`, libpq's and sqlx's default is `prefer`, which
/// falls back to cleartext when the server (or a man in the middle) declines TLS, and sends the
/// password there. Only `sslmode=verify-full` checks the server's name; a loopback host or a unix
/// socket never leaves the machine.
fn tls_warning(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let query = |key: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let sslmode = query("sslmode").unwrap_or_else(|| "prefer (the default)".to_owned());
    if sslmode == "verify-full" {
        return None;
    }
    let local = match (query("host"), parsed.host()) {
        (Some(host), _) => host.starts_with('/') || is_loopback_name(&host),
        (None, None) => true,
        (None, Some(url::Host::Domain(d))) => d.is_empty() || is_loopback_name(d),
        (None, Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        (None, Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
    };
    (!local).then(|| {
        format!(
            "database: PostgreSQL on another host with sslmode={sslmode}: the server's certificate is not checked, and unless sslmode is require or stricter the connection (and the password) may go in clear; add sslmode=verify-full to the URL (with [postgres] ssl_root_cert for a private CA)"
        )
    })
}

/// `localhost` or a loopback address, as a host name or a `host=` parameter spells it.
fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How to reach the server: its URL (`postgres://` or `postgresql://`, with `sslmode`, host,
/// port, user, database), and the password and CA file when they are configured apart from it.
/// `Debug` and [`PgOptions::shown`] never show a password.
#[derive(Clone)]
pub struct PgOptions {
    url: String,
    password: Option<Secret>,
    ssl_root_cert: Option<PathBuf>,
}

impl PgOptions {
    /// Whether `text` names a PostgreSQL database rather than a SQLite file (`postgres://` or
    /// `postgresql://`, in any case).
    #[must_use]
    pub fn is_url(text: &str) -> bool {
        let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
        lower.starts_with("postgres://") || lower.starts_with("postgresql://")
    }

    #[must_use]
    pub fn new(url: String, password: Option<Secret>, ssl_root_cert: Option<PathBuf>) -> Self {
        Self {
            url,
            password,
            ssl_root_cert,
        }
    }

    /// The URL without any password (in its user part or its query), for messages.
    #[must_use]
    pub fn shown(&self) -> String {
        shown_url(&self.url)
    }

    /// The connect options: the URL's, then the configured password and CA file.
    pub fn connect_options(&self) -> Result<PgConnectOptions, String> {
        let mut options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| format!("not a usable PostgreSQL URL: {}", strip_url(&e.to_string())))?
            .application_name("tokenwarden")
            // sqlx's own "slow statement" warnings would come before a command's one error line.
            .disable_statement_logging();
        if let Some(password) = &self.password {
            options = options.password(password.expose());
        }
        if let Some(ca) = &self.ssl_root_cert {
            options = options.ssl_root_cert(ca);
        }
        Ok(options)
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.shown())
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("ssl_root_cert", &self.ssl_root_cert)
            .finish()
    }
}

/// `url` with the password of its user part and any `password` query parameter left out.
fn shown_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "postgres://(an unreadable URL)".to_owned();
    };
    let _ = parsed.set_password(None);
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("password"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    parsed.to_string()
}

/// An error text with anything URL-like cut down to its scheme (a parser's message might quote it).
pub(super) fn strip_url(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if PgOptions::is_url(w) {
                "postgres://…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl crate::exit::ExitStatus for LocationError {
    fn exit_code(&self) -> u8 {
        crate::exit::CONFIG
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::{Location, PgOptions, shown_url, tls_warning};
    use crate::config::Settings;

    #[test]
    fn postgres_elsewhere_without_verify_full_is_warned_about() {
        for url in [
            "postgres://tw@db.example.com/tw",
            "postgres://tw@db.example.com/tw?sslmode=require",
            "postgres://tw@10.0.0.5:5432/tw?sslmode=verify-ca",
            "postgresql://tw@localhost/tw?host=db.example.com",
        ] {
            let warning = tls_warning(url).unwrap_or_else(|| panic!("{url}"));
            assert!(warning.contains("sslmode=verify-full"), "{warning}");
        }
        for url in [
            "postgres://tw@db.example.com/tw?sslmode=verify-full",
            "postgres://tw@127.0.0.1:5432/tw",
            "postgres://tw@localhost/tw?sslmode=disable",
            "postgres://tw@[::1]/tw",
            "postgresql://tw@db.example.com/tw?host=/run/postgresql",
            "postgresql:///tw",
        ] {
            assert_eq!(tls_warning(url), None, "{url}");
        }
    }

    #[test]
    fn urls_are_recognised_and_shown_without_passwords() {
        assert!(PgOptions::is_url("postgres://h/db"));
        assert!(PgOptions::is_url("PostgreSQL://h/db"));
        assert!(!PgOptions::is_url("/var/lib/tokenwarden/tokenwarden.db"));
        assert!(!PgOptions::is_url("postgres.db"));
        let shown = shown_url(
            "postgres://tw:s3cr3t-pw@db.example:5432/tw?sslmode=verify-full&password=other-pw",
        );
        assert!(
            !shown.contains("s3cr3t-pw") && !shown.contains("other-pw"),
            "{shown}"
        );
        assert!(
            shown.contains("sslmode=verify-full") && shown.contains("tw@db.example:5432/tw"),
            "{shown}"
        );
        let debug = format!(
            "{:?}",
            PgOptions::new(
                "postgres://u:pw-123456@h/d".into(),
                Some(crate::domain::Secret::new("pw-abcdef")),
                None
            )
        );
        assert!(
            !debug.contains("pw-123456") && !debug.contains("pw-abcdef"),
            "{debug}"
        );
    }

    #[test]
    fn the_sqlite_file_defaults_to_the_state_directory() {
        let s = Settings::load(None, &BTreeMap::new()).unwrap();
        let path = |env: &BTreeMap<String, String>| match Location::from_settings(&s, env) {
            Ok((Location::Sqlite(path), _)) => path,
            other => panic!("{other:?}"),
        };
        assert_eq!(path(&BTreeMap::new()), PathBuf::from("tokenwarden.db"));
        let env = BTreeMap::from([(
            "STATE_DIRECTORY".to_owned(),
            "/var/lib/tw:/other".to_owned(),
        )]);
        assert_eq!(path(&env), PathBuf::from("/var/lib/tw/tokenwarden.db"));
    }
}
