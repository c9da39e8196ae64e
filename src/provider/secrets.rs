//! A provider's own credentials as the configuration names them: how the client authenticates,
//! its client secret (from the environment, a secret file or the config), and its signing keys
//! (PEM files for `private_key_jwt` and the jwt-bearer grant).

use std::collections::BTreeMap;
use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey};

use super::{ClientAuth, ProviderError};
use crate::config::{ClientAuthMethod, ProviderSettings};
use crate::domain::{MIN_REDACTABLE_CHARS, Secret};

/// How the client authenticates, with its secret or key read.
pub(super) fn client_auth(
    name: &str,
    settings: &ProviderSettings,
    env: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<ClientAuth, ProviderError> {
    Ok(match settings.client_auth {
        ClientAuthMethod::ClientSecretBasic => {
            ClientAuth::SecretBasic(client_secret(name, settings, env, warnings)?)
        }
        ClientAuthMethod::ClientSecretPost => {
            ClientAuth::SecretPost(client_secret(name, settings, env, warnings)?)
        }
        ClientAuthMethod::None => ClientAuth::None,
        ClientAuthMethod::PrivateKeyJwt => {
            // `validate` guarantees both are present and well-formed.
            let path = settings.private_key_file.clone().unwrap_or_default();
            let alg: Algorithm = settings.alg.parse().unwrap_or(Algorithm::RS256);
            let pem = read_secret_file(name, "private_key_file", &path, warnings)?;
            ClientAuth::PrivateKeyJwt {
                key: encoding_key(name, &path, alg, pem.as_bytes())?,
                alg,
                kid: settings.kid.clone(),
            }
        }
    })
}

fn client_secret(
    name: &str,
    settings: &ProviderSettings,
    env: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<Secret, ProviderError> {
    let secret = if let Some(var) = &settings.client_secret_env {
        env.get(var)
            .filter(|v| !v.is_empty())
            .map(Secret::new)
            .ok_or_else(|| ProviderError::SecretEnvUnset {
                provider: name.to_owned(),
                var: var.clone(),
            })?
    } else if let Some(path) = &settings.client_secret_file {
        Secret::new(read_secret_file(
            name,
            "client_secret_file",
            path,
            warnings,
        )?)
    } else {
        Secret::new(settings.client_secret.clone().unwrap_or_default())
    };
    let chars = secret.expose().chars().count();
    if chars < MIN_REDACTABLE_CHARS {
        warnings.push(format!(
            "provider {name}: the client secret is {chars} character(s) long, shorter than {MIN_REDACTABLE_CHARS}: \
             it cannot be told apart from ordinary text, so provider messages are redacted only where it stands alone; \
             use a longer secret"
        ));
    }
    Ok(secret)
}

/// Reads a secret file with [`crate::secret_file::read`]'s checks; a file others may read adds a
/// warning.
/// A secret file read where its mode warnings cannot be shown (they were at start): the jwt-bearer
/// key, read again for each assertion. A world-writable or empty file is still refused.
pub(super) fn read_nonempty(
    provider: &str,
    what: &'static str,
    path: &Path,
) -> Result<String, ProviderError> {
    read_secret_file(provider, what, path, &mut Vec::new())
}

fn read_secret_file(
    provider: &str,
    what: &'static str,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<String, ProviderError> {
    let file = crate::secret_file::read(path).map_err(|source| ProviderError::SecretFile {
        provider: provider.to_owned(),
        what,
        path: path.to_owned(),
        source,
    })?;
    warnings.extend(
        file.warning(what, path)
            .map(|w| format!("provider {provider}: {w}")),
    );
    Ok(file.text)
}

pub(super) fn encoding_key(
    provider: &str,
    path: &Path,
    alg: Algorithm,
    pem: &[u8],
) -> Result<EncodingKey, ProviderError> {
    use Algorithm::{ES256, ES384, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512};
    let key = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => EncodingKey::from_rsa_pem(pem),
        ES256 | ES384 => EncodingKey::from_ec_pem(pem),
        EdDSA => EncodingKey::from_ed_pem(pem),
        _ => {
            return Err(ProviderError::Key {
                provider: provider.to_owned(),
                path: path.to_owned(),
                alg,
                reason: "private_key_jwt needs an asymmetric algorithm".to_owned(),
            });
        }
    };
    key.map_err(|e| ProviderError::Key {
        provider: provider.to_owned(),
        path: path.to_owned(),
        alg,
        reason: e.to_string(),
    })
}
