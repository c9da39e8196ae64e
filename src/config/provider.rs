//! One `[providers.NAME]` block: how the client authenticates, its endpoints or preset, and the
//! checks it must pass (shape, https endpoints, key files named, limits). Part of `config`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::de::{optional_duration, reuse, words};
use super::{ConfigError, invalid, preset};
use crate::domain::RefreshTokenReuse;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    /// A public client: its client_id alone, no secret (RFC 6749 §2.1), as device-flow clients
    /// and jwt-bearer grants often are.
    None,
}

/// One OAuth client registration (`[providers.NAME]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// A known provider's endpoints and defaults: microsoft, google, salesforce, servicenow,
    /// okta, auth0 (see `preset`).
    pub preset: Option<Preset>,
    /// Microsoft Entra tenant (id or domain; default `common`).
    pub tenant: Option<String>,
    /// ServiceNow instance name (`dev12345` for dev12345.service-now.com).
    pub instance: Option<String>,
    /// Salesforce login host (default `login.salesforce.com`; `test.salesforce.com`, a My Domain).
    pub domain: Option<String>,
    /// An issuer whose RFC 8414 / OpenID Connect metadata gives the endpoints.
    pub issuer: Option<String>,
    /// The token endpoint; required unless a preset or `issuer` gives it.
    pub token_url: Option<String>,
    pub authorization_url: Option<String>,
    pub revocation_url: Option<String>,
    /// The device authorization endpoint (RFC 8628) for `authorize --device`; a preset or the
    /// issuer's metadata may give it.
    pub device_authorization_url: Option<String>,
    /// A fixed redirect URI for `authorize` (default: `http://127.0.0.1:<free port>/callback`). A
    /// loopback one is listened on; any other can only be pasted back with `--manual`.
    pub redirect_uri: Option<String>,
    pub client_id: String,
    /// Name of an environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// File holding the client secret (trailing newline ignored).
    pub client_secret_file: Option<PathBuf>,
    /// The secret inline: accepted with a warning.
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_auth: ClientAuthMethod,
    /// PEM private key for `private_key_jwt`, and for the assertions of jwt-bearer credentials.
    pub private_key_file: Option<PathBuf>,
    /// The `aud` of jwt-bearer assertions (default: the preset's, else the token endpoint).
    pub assertion_audience: Option<String>,
    /// Signing algorithm for `private_key_jwt` and jwt-bearer assertions (RS256, ES256, PS256, …).
    #[serde(default = "default_alg")]
    pub alg: String,
    pub kid: Option<String>,
    #[serde(default, deserialize_with = "words")]
    pub scopes: Vec<String>,
    /// Send `scope` with refresh requests too (Microsoft Entra wants it; the preset says so).
    pub scope_on_refresh: Option<bool>,
    /// Lifetime assumed when a token response has no `expires_in` (default 1h, or the preset's).
    #[serde(default, deserialize_with = "optional_duration")]
    pub default_expires_in: Option<Duration>,
    /// A refresh token's absolute lifetime when the provider does not report one.
    #[serde(default, deserialize_with = "optional_duration")]
    pub refresh_token_lifetime: Option<Duration>,
    /// Whether the provider accepts a refresh token presented a second time (after a crash or a
    /// takeover, when its answer to the first was lost): `"none"` (the default without a preset),
    /// a grace window such as `"30s"`, or `"stays-valid"`. A preset fills in what its provider
    /// documents.
    #[serde(default, deserialize_with = "reuse")]
    pub refresh_token_reuse: Option<RefreshTokenReuse>,
    /// Extra query parameters on the authorization URL (`access_type = "offline"` for Google).
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    /// Extra form parameters for every token request.
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// Allow an `http://` token endpoint on a host that is not loopback.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Most token requests per second the sweep sends this provider, from this process (spaced
    /// evenly, 1/rate apart). Unset: no limit but `concurrency`.
    pub rate_limit: Option<f64>,
    /// Most token requests the sweep has in flight to this provider at once, in this process.
    /// Unset: `concurrency`.
    pub max_concurrency: Option<usize>,
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("preset", &self.preset)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_auth", &self.client_auth)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

/// The slowest `rate_limit` accepted: one request every 1,000 s.
pub const MIN_RATE_LIMIT: f64 = 0.001;

fn default_alg() -> String {
    "RS256".to_owned()
}

/// A known provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Microsoft,
    Google,
    Salesforce,
    Servicenow,
    Okta,
    Auth0,
}

impl ProviderSettings {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let shape = preset::shape(self)
            .map_err(|(field, reason)| invalid(format!("{key}.{field}"), reason))?;
        for (field, url) in [("token_url", &shape.token_url), ("issuer", &shape.issuer)] {
            if let Some(url) = url {
                check_endpoint(&format!("{key}.{field}"), url, self.allow_insecure_http)?;
            }
        }
        for (field, url) in [
            ("authorization_url", &self.authorization_url),
            ("revocation_url", &self.revocation_url),
            ("device_authorization_url", &self.device_authorization_url),
            ("redirect_uri", &self.redirect_uri),
        ] {
            if let Some(url) = url {
                check_endpoint(&format!("{key}.{field}"), url, self.allow_insecure_http)?;
            }
        }
        if self.client_id.is_empty() {
            return Err(invalid(format!("{key}.client_id"), "must not be empty"));
        }
        if let Some(rate) = self.rate_limit
            && !(rate.is_finite() && rate >= MIN_RATE_LIMIT)
        {
            return Err(invalid(
                format!("{key}.rate_limit"),
                format!("must be a number of requests per second, at least {MIN_RATE_LIMIT}"),
            ));
        }
        if self.max_concurrency == Some(0) {
            return Err(invalid(
                format!("{key}.max_concurrency"),
                "must be at least 1",
            ));
        }
        let secret_sources = [
            self.client_secret_env.is_some(),
            self.client_secret_file.is_some(),
            self.client_secret.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        match self.client_auth {
            ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost => {
                if secret_sources != 1 {
                    return Err(invalid(
                        format!("{key}.client_secret_env"),
                        "set exactly one of client_secret_env, client_secret_file or client_secret",
                    ));
                }
            }
            ClientAuthMethod::None => {
                if secret_sources != 0 {
                    return Err(invalid(
                        format!("{key}.client_auth"),
                        "\"none\" is a public client: it sends no client secret, so set none",
                    ));
                }
            }
            ClientAuthMethod::PrivateKeyJwt => {
                if self.private_key_file.is_none() {
                    return Err(invalid(
                        format!("{key}.private_key_file"),
                        "private_key_jwt needs a private_key_file",
                    ));
                }
            }
        }
        if (self.private_key_file.is_some() || self.client_auth == ClientAuthMethod::PrivateKeyJwt)
            && self.alg.parse::<jsonwebtoken::Algorithm>().is_err()
        {
            return Err(invalid(
                format!("{key}.alg"),
                format!("{:?} is not a JWS algorithm", self.alg),
            ));
        }
        Ok(())
    }
}

/// An endpoint must be an absolute https URL; plain http only to loopback or when allowed.
pub(crate) fn check_endpoint(
    key: &str,
    value: &str,
    allow_insecure_http: bool,
) -> Result<(), ConfigError> {
    let url =
        url::Url::parse(value).map_err(|e| invalid(key, format!("{value:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || crate::untrusted::is_loopback(&url) => Ok(()),
        "http" => Err(invalid(
            key,
            format!(
                "{value:?} is plain http to a host that is not loopback; use https or set allow_insecure_http = true"
            ),
        )),
        other => Err(invalid(
            key,
            format!("{value:?} has scheme {other:?}; expected https"),
        )),
    }
}
