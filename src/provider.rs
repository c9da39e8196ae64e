//! Providers ready to use: each configured OAuth client with its endpoints (from the block, its
//! preset, or its issuer's metadata), its client authentication and the secrets it references
//! (environment variables, files, private keys) resolved, and how that authentication goes into a
//! hand-built form. Imports `exit`, `config`, `preset`, `discovery`, `http`, `secret_file` and `domain`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::config::ProviderSettings;

mod grant_assertion;
pub mod redaction;
mod secrets;

use crate::discovery::DiscoveryError;
use crate::domain::{RefreshTokenReuse, Secret, UnixTime};
use crate::http::{CLIENT_ASSERTION_TYPE, Transport};
use crate::secret_file::SecretFileError;
pub use grant_assertion::GrantKey;

/// How long a `private_key_jwt` client assertion, or a jwt-bearer grant assertion, stays valid.
const ASSERTION_LIFETIME_SECS: i64 = 120;

/// Why a provider could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider {provider}: environment variable {var} (client_secret_env) is not set")]
    SecretEnvUnset { provider: String, var: String },
    #[error("provider {provider}: {what} {path}: {source}")]
    SecretFile {
        provider: String,
        what: &'static str,
        path: PathBuf,
        source: SecretFileError,
    },
    #[error("provider {provider}: private key {path} is not a usable {alg:?} PEM key: {reason}")]
    Key {
        provider: String,
        path: PathBuf,
        alg: Algorithm,
        reason: String,
    },
    #[error("provider {provider}: cannot sign a client assertion: {reason}")]
    Sign { provider: String, reason: String },
    #[error("provider {provider}: {source}")]
    Discovery {
        provider: String,
        source: DiscoveryError,
    },
    #[error("provider {provider}: {reason}")]
    Invalid { provider: String, reason: String },
}

/// How the client proves who it is at the token endpoint.
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with client id and secret.
    SecretBasic(Secret),
    /// `client_secret_post`: client id and secret in the form body.
    SecretPost(Secret),
    /// `private_key_jwt`: a freshly signed JWT per request (RFC 7523).
    PrivateKeyJwt {
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
    },
    /// A public client: its client_id in the form, nothing else.
    None,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SecretBasic(_) => "SecretBasic([redacted])",
            Self::SecretPost(_) => "SecretPost([redacted])",
            Self::PrivateKeyJwt { .. } => "PrivateKeyJwt([redacted])",
            Self::None => "None",
        })
    }
}

/// One OAuth client registration, ready to use.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub token_url: String,
    pub authorization_url: Option<String>,
    pub revocation_url: Option<String>,
    /// Where `authorize --device` starts (RFC 8628).
    pub device_authorization_url: Option<String>,
    /// A fixed redirect URI for `authorize`.
    pub redirect_uri: Option<String>,
    pub client_id: String,
    pub auth: ClientAuth,
    pub scopes: Vec<String>,
    pub scope_on_refresh: bool,
    /// Seconds assumed when a token response carries no `expires_in`.
    pub default_expires_in: i64,
    /// Seconds a new refresh token lives when the provider does not say (a preset may know).
    pub refresh_token_lifetime: Option<i64>,
    pub extra_params: Vec<(String, String)>,
    /// Extra query parameters for the authorization URL.
    pub authorization_params: Vec<(String, String)>,
    /// What works but should change (a secret file others may read, a secret too short to be
    /// redacted safely): logged as warnings by `check-config` and at start.
    pub warnings: Vec<String>,
    /// The key that signs jwt-bearer assertions (`private_key_file`), if one is configured.
    pub grant_key: Option<GrantKey>,
    /// The `aud` of jwt-bearer assertions.
    pub assertion_audience: String,
    /// Whether jwt-bearer scopes go into the assertion (Google) rather than the form.
    pub scope_in_assertion: bool,
    /// Most token requests per second from this process's sweeps (`rate_limit`).
    pub rate_limit: Option<f64>,
    /// Most token requests in flight at once from this process's sweeps (`max_concurrency`).
    pub max_concurrency: Option<usize>,
    /// Whether a refresh token may be presented again after an interrupted attempt
    /// (`refresh_token_reuse`, or the preset's).
    pub refresh_token_reuse: RefreshTokenReuse,
}

impl Provider {
    /// Resolves one `[providers.NAME]` block: `env` supplies `client_secret_env`, `transport`
    /// fetches the issuer's metadata when the block names an issuer instead of a token endpoint.
    pub async fn resolve(
        name: &str,
        settings: &ProviderSettings,
        env: &BTreeMap<String, String>,
        transport: &Transport,
    ) -> Result<Self, ProviderError> {
        let invalid = |reason: String| ProviderError::Invalid {
            provider: name.to_owned(),
            reason,
        };
        let shape = crate::config::preset::shape(settings)
            .map_err(|(field, reason)| invalid(format!("{field}: {reason}")))?;
        let (token_url, authorization_url, revocation_url, device_authorization_url) =
            match (&shape.token_url, &shape.issuer) {
                (Some(token_url), _) => (
                    token_url.clone(),
                    shape.authorization_url.clone(),
                    shape.revocation_url.clone(),
                    shape.device_authorization_url.clone(),
                ),
                (None, Some(issuer)) => {
                    let found = crate::discovery::discover(transport, issuer)
                        .await
                        .map_err(|source| ProviderError::Discovery {
                            provider: name.to_owned(),
                            source,
                        })?;
                    for (key, url) in [
                        ("token_endpoint", Some(&found.token_endpoint)),
                        (
                            "authorization_endpoint",
                            found.authorization_endpoint.as_ref(),
                        ),
                        ("revocation_endpoint", found.revocation_endpoint.as_ref()),
                        (
                            "device_authorization_endpoint",
                            found.device_authorization_endpoint.as_ref(),
                        ),
                    ] {
                        if let Some(url) = url {
                            crate::config::check_endpoint(key, url, settings.allow_insecure_http)
                                .map_err(|e| invalid(format!("issuer metadata: {e}")))?;
                        }
                    }
                    (
                        found.token_endpoint,
                        shape
                            .authorization_url
                            .clone()
                            .or(found.authorization_endpoint),
                        shape.revocation_url.clone().or(found.revocation_endpoint),
                        shape
                            .device_authorization_url
                            .clone()
                            .or(found.device_authorization_endpoint),
                    )
                }
                (None, None) => return Err(invalid("no token endpoint".to_owned())),
            };
        let mut warnings = Vec::new();
        let auth = secrets::client_auth(name, settings, env, &mut warnings)?;
        let grant_key = settings.private_key_file.as_ref().map(|path| GrantKey {
            path: path.clone(),
            alg: settings.alg.parse().unwrap_or(Algorithm::RS256),
            kid: settings.kid.clone(),
        });
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Ok(Self {
            grant_key,
            assertion_audience: shape
                .assertion_audience
                .clone()
                .unwrap_or_else(|| token_url.clone()),
            scope_in_assertion: shape.scope_in_assertion,
            refresh_token_reuse: shape.refresh_token_reuse,
            rate_limit: settings.rate_limit,
            max_concurrency: settings.max_concurrency,
            name: name.to_owned(),
            token_url,
            authorization_url,
            revocation_url,
            device_authorization_url,
            redirect_uri: settings.redirect_uri.clone(),
            client_id: settings.client_id.clone(),
            auth,
            scopes: shape.scopes,
            scope_on_refresh: shape.scope_on_refresh,
            default_expires_in: secs(shape.default_expires_in),
            refresh_token_lifetime: shape.refresh_token_lifetime.map(secs),
            extra_params: settings
                .extra_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            authorization_params: shape.authorization_params.into_iter().collect(),
            warnings,
        })
    }

    /// This client's secret in every form a request carries it ([`redaction::secret_forms`]):
    /// what must be blanked out of anything the provider answers. Empty without a secret.
    #[must_use]
    pub fn redactions(&self) -> Vec<Secret> {
        match &self.auth {
            ClientAuth::SecretBasic(secret) | ClientAuth::SecretPost(secret) => {
                redaction::secret_forms(&self.client_id, secret)
            }
            ClientAuth::PrivateKeyJwt { .. } | ClientAuth::None => Vec::new(),
        }
    }

    /// This client's authentication for a form posted by hand (revocation): the fields to add to
    /// `form`, and the id and secret for HTTP Basic when that is the method. `assertion` is
    /// [`Self::client_assertion`]'s, for private_key_jwt.
    pub fn authenticate_form<'a>(
        &'a self,
        form: &mut Vec<(&'a str, &'a str)>,
        assertion: Option<&'a Secret>,
    ) -> Option<(&'a str, &'a str)> {
        match &self.auth {
            ClientAuth::SecretBasic(secret) => Some((self.client_id.as_str(), secret.expose())),
            ClientAuth::SecretPost(secret) => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret.expose()));
                None
            }
            // A public client names itself and proves nothing (RFC 6749 §2.1).
            ClientAuth::None => {
                form.push(("client_id", &self.client_id));
                None
            }
            ClientAuth::PrivateKeyJwt { .. } => {
                form.push(("client_id", &self.client_id));
                form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE));
                if let Some(jwt) = assertion {
                    form.push(("client_assertion", jwt.expose()));
                }
                None
            }
        }
    }

    /// The client's parameters for an oauth2 request beside its configured extras: the
    /// private_key_jwt assertion (`assertion`) when there is one.
    #[must_use]
    pub fn assertion_params(assertion: Option<&Secret>) -> Vec<(&'static str, &str)> {
        assertion
            .map(|jwt| {
                vec![
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                    ("client_assertion", jwt.expose()),
                ]
            })
            .unwrap_or_default()
    }

    /// A signed client assertion for `private_key_jwt`, or `None` for the secret-based methods.
    pub fn client_assertion(&self, now: UnixTime) -> Result<Option<Secret>, ProviderError> {
        let ClientAuth::PrivateKeyJwt { key, alg, kid } = &self.auth else {
            return Ok(None);
        };
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "jti": hex::encode(rand::random::<[u8; 16]>()),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let mut header = Header::new(*alg);
        header.kid.clone_from(kid);
        jsonwebtoken::encode(&header, &claims, key)
            .map(|jwt| Some(Secret::new(jwt)))
            .map_err(|e| ProviderError::Sign {
                provider: self.name.clone(),
                reason: e.to_string(),
            })
    }
}

/// Every configured provider by name.
#[derive(Debug, Default, Clone)]
pub struct Providers(BTreeMap<String, Arc<Provider>>);

impl Providers {
    /// Resolves every provider of `settings` (all of them, or those a command needs), failing on the
    /// first whose secrets or endpoints cannot be had.
    pub async fn resolve<'a>(
        settings: impl IntoIterator<Item = (&'a String, &'a ProviderSettings)>,
        env: &BTreeMap<String, String>,
        transport: &Transport,
    ) -> Result<Self, ProviderError> {
        let mut providers = BTreeMap::new();
        for (name, p) in settings {
            providers.insert(
                name.clone(),
                Arc::new(Provider::resolve(name, p, env, transport).await?),
            );
        }
        Ok(Self(providers))
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.0.get(name)
    }

    /// Every provider with its name, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Provider>)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Every provider's warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.0
            .values()
            .flat_map(|p| p.warnings.iter().map(String::as_str))
    }
}

impl crate::exit::ExitStatus for ProviderError {
    fn exit_code(&self) -> u8 {
        match self {
            // The issuer may be back in a moment: not a configuration error, so systemd retries.
            Self::Discovery {
                source: crate::discovery::DiscoveryError::Unavailable { .. },
                ..
            } => crate::exit::REFRESH_FAILED,
            _ => crate::exit::CONFIG,
        }
    }
}
