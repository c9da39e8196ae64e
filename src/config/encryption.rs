//! `[encryption]`: where the keys that seal refresh tokens (and, if asked, access tokens) at rest
//! come from. Only names files and variables; `keys` reads them.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::{ConfigError, invalid};

/// The keys that seal stored tokens. Absent: tokens are stored as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSettings {
    /// File holding the current key: 32 random bytes as base64 or hex (trailing newline ignored).
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the current key, as base64 or hex.
    pub key_env: Option<String>,
    /// Files of keys that no longer seal but still open what they sealed (one path or a list).
    #[serde(default, deserialize_with = "paths")]
    pub retired_key_files: Vec<PathBuf>,
    /// Environment variables of retired keys (one name or a list).
    #[serde(default, deserialize_with = "names")]
    pub retired_key_envs: Vec<String>,
    /// Seal access tokens too. `current_token.access_token` is then NULL (its `access_token_sealed`
    /// is 1) and `tokenwarden token NAME` is the way to read one.
    #[serde(default)]
    pub seal_access_tokens: bool,
}

impl EncryptionSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.key_file.is_some() == self.key_env.is_some() {
            return Err(invalid(
                "encryption.key_file",
                "set exactly one of key_file or key_env",
            ));
        }
        if self.key_env.as_deref().is_some_and(str::is_empty)
            || self.retired_key_envs.iter().any(String::is_empty)
        {
            return Err(invalid(
                "encryption.key_env",
                "an environment variable name must not be empty",
            ));
        }
        Ok(())
    }
}

/// One path or a list of them.
fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(names(d)?.into_iter().map(PathBuf::from).collect())
}

/// One string or a list of them (a single string is one item, spaces and all).
fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use crate::config::Settings;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, crate::config::ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(Some(file.path()), &env)
    }

    #[test]
    fn one_key_source_retired_keys_as_one_or_many_and_from_the_environment() {
        let s = load(
            "[encryption]\nkey_file = \"/k\"\nretired_key_files = \"/old key\"\n",
            &[],
        )
        .unwrap();
        let e = s.encryption.unwrap();
        assert_eq!(e.retired_key_files, [std::path::PathBuf::from("/old key")]);
        assert!(!e.seal_access_tokens);
        let both = load("[encryption]\nkey_file = \"/k\"\nkey_env = \"K\"\n", &[]);
        assert!(
            both.unwrap_err()
                .to_string()
                .contains("exactly one of key_file or key_env")
        );
        let none = load("[encryption]\nseal_access_tokens = true\n", &[]);
        assert!(
            none.unwrap_err()
                .to_string()
                .contains("encryption.key_file")
        );
        let env = load(
            "",
            &[
                (
                    "TOKENWARDEN_ENCRYPTION__KEY_FILE",
                    "/run/credentials/x/encryption-key",
                ),
                ("TOKENWARDEN_ENCRYPTION__SEAL_ACCESS_TOKENS", "true"),
            ],
        )
        .unwrap();
        let e = env.encryption.unwrap();
        assert!(e.seal_access_tokens && e.key_file.is_some());
        assert!(load("", &[]).unwrap().encryption.is_none());
    }
}
