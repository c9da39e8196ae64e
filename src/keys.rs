//! The keys of `[encryption]`, read from their files or environment variables and assembled into
//! the store's [`Sealer`]. A key file must not be writable by other users (refused) and should not
//! be readable by them (a warning). No message carries key material. Imports `exit`, `config` and
//! `store`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::EncryptionSettings;
use crate::store::seal::{Key, KeyError, Keyring, Sealer};

/// Why the configured keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("encryption key file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("encryption key variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("encryption: {0}")]
    Keyring(KeyError),
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

impl crate::exit::ExitStatus for KeysError {
    fn exit_code(&self) -> u8 {
        crate::exit::CONFIG
    }
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
