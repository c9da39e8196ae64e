//! The keys of `[encryption]`, read from their files or environment variables and assembled into
//! the store's [`Sealer`]; and the database's [`Location`], with a PostgreSQL password read from
//! `[postgres] password_file` or `password_env`. A key or password file must not be writable by
//! other users (refused) and should not be readable by them (a warning). No message carries key
//! material or a password. Imports `config`, `secret_file` and `store`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{EncryptionSettings, Settings};
use crate::domain::Secret;
use crate::store::seal::{Key, KeyError, Keyring, Sealer};
use crate::store::{Location, PgOptions};

/// Why the configured keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("encryption key file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("encryption key variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("encryption: {0}")]
    Keyring(KeyError),
    #[error("postgres.{key}: {reason}")]
    Password { key: &'static str, reason: String },
}

/// Where the database is, and warnings about how its password is kept.
pub fn database_location(
    settings: &Settings,
    env: &BTreeMap<String, String>,
) -> Result<(Location, Vec<String>), KeysError> {
    let Some(url) = settings.database_url() else {
        return Ok((Location::Sqlite(settings.database_path(env)), Vec::new()));
    };
    let (options, warnings) = postgres_options(settings, env, url)?;
    Ok((Location::Postgres(options), warnings))
}

/// The PostgreSQL database at `url` with `[postgres]`'s password and CA file (for `database`,
/// and for `migrate --to`), and warnings about how the password is kept.
pub fn postgres_options(
    settings: &Settings,
    env: &BTreeMap<String, String>,
    url: &str,
) -> Result<(PgOptions, Vec<String>), KeysError> {
    let pg = settings.postgres.as_ref();
    let mut warnings = Vec::new();
    let password = match (
        pg.and_then(|p| p.password_file.as_deref()),
        pg.and_then(|p| p.password_env.as_deref()),
    ) {
        (Some(path), _) => {
            let err = |reason: String| KeysError::Password {
                key: "password_file",
                reason: format!("{}: {reason}", path.display()),
            };
            let file = crate::secret_file::read(path).map_err(|e| err(e.to_string()))?;
            warnings.extend(file.warning("postgres.password_file", path));
            Some(Secret::new(file.text.clone()))
        }
        (None, Some(name)) => Some(Secret::new(env.get(name).cloned().ok_or_else(|| {
            KeysError::Password {
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
        return Err(KeysError::Password {
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

/// The sealer the configuration asks for, and warnings about how its keys are kept.
pub fn load(
    settings: Option<&EncryptionSettings>,
    env: &BTreeMap<String, String>,
) -> Result<(Sealer, Vec<String>), KeysError> {
    let Some(settings) = settings else {
        return Ok((Sealer::plaintext(), Vec::new()));
    };
    let mut warnings = Vec::new();
    let current = match (&settings.key_file, &settings.key_env) {
        (Some(path), _) => from_file(path, &mut warnings)?,
        (None, Some(name)) => from_env(name, env)?,
        // `Settings::load` demands exactly one.
        (None, None) => {
            return Err(KeysError::Env {
                name: "encryption.key_env".to_owned(),
                reason: "neither key_file nor key_env is set".to_owned(),
            });
        }
    };
    let mut retired = Vec::new();
    for path in &settings.retired_key_files {
        retired.push(from_file(path, &mut warnings)?);
    }
    for name in &settings.retired_key_envs {
        retired.push(from_env(name, env)?);
    }
    let keyring =
        Keyring::new(current, retired, settings.seal_access_tokens).map_err(KeysError::Keyring)?;
    Ok((Sealer::new(keyring), warnings))
}

/// A key file, read like every secret file (the mode checked on the opened file: anyone may write
/// it, refused; group or others may read or write it, a warning).
fn from_file(path: &Path, warnings: &mut Vec<String>) -> Result<Key, KeysError> {
    let err = |reason: String| KeysError::File {
        path: path.to_owned(),
        reason,
    };
    let file = crate::secret_file::read_bytes(path).map_err(|e| err(e.to_string()))?;
    warnings.extend(file.warning("encryption key file", path));
    Key::from_file_bytes(&file.bytes).map_err(|e| err(e.to_string()))
}

fn from_env(name: &str, env: &BTreeMap<String, String>) -> Result<Key, KeysError> {
    let err = |reason: &str| KeysError::Env {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let value = env.get(name).ok_or_else(|| err("is not set"))?;
    Key::parse(value).map_err(|e| err(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn settings(key_file: Option<PathBuf>, key_env: Option<&str>) -> EncryptionSettings {
        EncryptionSettings {
            key_file,
            key_env: key_env.map(str::to_owned),
            retired_key_files: Vec::new(),
            retired_key_envs: Vec::new(),
            seal_access_tokens: false,
        }
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn no_settings_no_key() {
        let (sealer, warnings) = load(None, &BTreeMap::new()).unwrap();
        assert!(sealer.keyring().is_none() && warnings.is_empty());
    }

    #[test]
    fn a_key_file_is_read_and_its_mode_checked() {
        let dir = tempfile::tempdir().unwrap();
        let private = write(dir.path(), "k", &format!("{KEY}\n"), 0o400);
        let (sealer, warnings) =
            load(Some(&settings(Some(private), None)), &BTreeMap::new()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let id = sealer.keyring().unwrap().current_id().to_owned();

        let readable = write(dir.path(), "r", KEY, 0o644);
        let (sealer, warnings) =
            load(Some(&settings(Some(readable), None)), &BTreeMap::new()).unwrap();
        assert_eq!(sealer.keyring().unwrap().current_id(), id);
        assert!(
            warnings[0].contains("accessible to group or others"),
            "{warnings:?}"
        );

        let writable = write(dir.path(), "w", KEY, 0o666);
        let e = load(Some(&settings(Some(writable), None)), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("anyone may write to it"), "{e}");

        let group_writable = write(dir.path(), "g", KEY, 0o620);
        let (_, warnings) = load(
            Some(&settings(Some(group_writable), None)),
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(warnings[0].contains("0620"), "{warnings:?}");

        let raw = dir.path().join("raw");
        std::fs::write(&raw, [0x0a_u8; 32]).unwrap();
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o400)).unwrap();
        let (sealer, _) = load(Some(&settings(Some(raw), None)), &BTreeMap::new()).unwrap();
        assert_eq!(
            sealer.keyring().unwrap().current_id(),
            Key::from_bytes(&[0x0a; 32]).id()
        );

        let e = load(
            Some(&settings(Some(dir.path().join("missing")), None)),
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing") && e.contains("cannot read"), "{e}");

        let bad = write(dir.path(), "b", "not-a-key-canary-value", 0o400);
        let e = load(Some(&settings(Some(bad), None)), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is not a key") && e.contains("raw") && !e.contains("canary"),
            "{e}"
        );
    }

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
    fn keys_from_the_environment_and_retired_ones() {
        let env = BTreeMap::from([
            ("TW_KEY".to_owned(), KEY.to_owned()),
            ("TW_OLD".to_owned(), "cd".repeat(32)),
        ]);
        let mut s = settings(None, Some("TW_KEY"));
        s.retired_key_envs = vec!["TW_OLD".to_owned()];
        let (sealer, _) = load(Some(&s), &env).unwrap();
        let ring = sealer.keyring().unwrap();
        assert_eq!(ring.retired_ids().count(), 1);
        s.retired_key_envs = vec!["TW_KEY".to_owned()];
        let e = load(Some(&s), &env).unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        let e = load(Some(&settings(None, Some("TW_UNSET"))), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("TW_UNSET: is not set"), "{e}");
    }
}
