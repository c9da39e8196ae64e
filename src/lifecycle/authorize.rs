//! `authorize`: the authorization-code grant with PKCE (S256) and a random state, through oauth2.
//! The browser is sent to the provider and back to a listener on 127.0.0.1 (or the operator pastes
//! the redirect); the code is exchanged with the provider's client authentication and the tokens
//! are handed to the caller's `keep` (which stores them) before the browser hears how it ended;
//! `authorize_device` returns what the device grant (`device`) obtained. Never touches the store.
//! Imports `exit`, `domain`, `http`, `provider` and `refresh` (the lenient token response).

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oauth2::{
    AuthUrl, AuthorizationCode, CsrfToken, EndpointSet, PkceCodeChallenge, RedirectUrl,
    RequestTokenError, Scope, TokenUrl,
};

pub use super::callback::CALLBACK_PATH;
use super::callback::{Listen, Rejection, listen, wait};
use crate::domain::{self, Secret, UnixTime, sanitize};
use crate::http::{Exchange, Transport};
use crate::provider::{Provider, ProviderError};

/// The oauth2 client shape for this grant: authorization and token endpoints.
type CodeClient = crate::refresh::ClientWith<EndpointSet, EndpointSet>;

/// Why an authorization did not store a credential. Messages name no token, code or verifier.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("provider {0} has no authorization_url; add it to [providers.{0}]")]
    NoAuthorizationUrl(String),
    #[error("provider {provider}: {key} {value:?} is not usable: {reason}")]
    BadUrl {
        provider: String,
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("cannot listen on 127.0.0.1 for the redirect: {0}")]
    Listen(std::io::Error),
    #[error("no redirect arrived within {0}; nothing was stored")]
    Timeout(String),
    #[error(
        "the redirect's state does not match this authorization request (a stale or forged redirect); nothing was stored"
    )]
    StateMismatch,
    #[error("the provider refused the authorization ({0}); nothing was stored")]
    Denied(String),
    #[error("the redirect carries no authorization code; nothing was stored")]
    NoCode,
    #[error("standard input closed before a redirect URL or code was pasted; nothing was stored")]
    NoInput,
    #[error("exchanging the authorization code failed: {0}; nothing was stored")]
    Exchange(String),
    #[error(transparent)]
    Device(#[from] super::device::DeviceError),
    #[error("storing the credential failed: {0}")]
    Keep(#[source] KeepError),
}

impl AuthorizeError {
    /// Whether the configuration (not the provider, the browser or the operator) is at fault.
    #[must_use]
    pub fn is_configuration(&self) -> bool {
        use super::device::DeviceError;
        matches!(
            self,
            Self::NoAuthorizationUrl(_)
                | Self::BadUrl { .. }
                | Self::Provider(_)
                | Self::Device(DeviceError::NoEndpoint(_) | DeviceError::Provider(_))
        )
    }
}

/// What to authorize.
#[derive(Debug)]
pub struct Request<'a> {
    /// The credential's name, for the page the browser is shown.
    pub name: &'a str,
    pub provider: &'a Provider,
    /// A redirect URI fixed by the configuration; `None`: `http://127.0.0.1:PORT/callback` on
    /// an ephemeral port. A fixed URI on a loopback host is listened on; any other needs `manual`.
    pub redirect_uri: Option<&'a str>,
    /// `--scopes`; `None`: the provider's scopes.
    pub scopes: Option<&'a str>,
    /// Read the redirect URL (or the code) from standard input too.
    pub manual: bool,
    pub timeout: Duration,
}

/// What the operator must do, handed to the caller to show.
#[derive(Debug)]
pub struct Prompt {
    /// The URL to open in a browser.
    pub url: String,
    pub redirect_uri: String,
    /// Whether a listener waits for the redirect.
    pub listening: bool,
    /// Whether a pasted redirect URL (or code) is read from standard input.
    pub reading_stdin: bool,
}

/// What a grant obtained, for the caller to keep.
#[derive(Debug)]
pub struct Obtained {
    pub tokens: domain::TokenSet,
    pub http_status: Option<u16>,
    /// From the token request's start to its answer.
    pub duration_ms: i64,
    /// The OpenID Connect ID token of a code exchange, when the provider sent one (never stored:
    /// it says which account consented).
    pub id_token: Option<Secret>,
}

impl Obtained {
    pub(super) fn new(
        tokens: domain::TokenSet,
        http_status: Option<u16>,
        started: Instant,
    ) -> Self {
        Self {
            tokens,
            http_status,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            id_token: None,
        }
    }
}

/// Runs the whole grant: prompt, wait for the redirect, exchange, `keep` (the caller stores the
/// tokens). `show` gets the URL to open once the listener is up; the browser gets a page saying
/// how it ended, after `keep` has.
pub async fn authorize<T>(
    transport: &Transport,
    req: &Request<'_>,
    show: impl FnOnce(&Prompt),
    keep: impl AsyncFnOnce(Obtained) -> Result<T, KeepError>,
) -> Result<T, AuthorizeError> {
    let provider = req.provider;
    let bad_url = |key: &'static str, value: &str, reason: String| AuthorizeError::BadUrl {
        provider: provider.name.clone(),
        key,
        value: value.to_owned(),
        reason,
    };
    let auth_url = provider
        .authorization_url
        .as_deref()
        .ok_or_else(|| AuthorizeError::NoAuthorizationUrl(provider.name.clone()))?;
    let (listener, redirect_uri, path) = listen(req.redirect_uri).await.map_err(|e| match e {
        Listen::Io(e) => AuthorizeError::Listen(e),
        Listen::Bad(reason) => {
            bad_url("redirect_uri", req.redirect_uri.unwrap_or_default(), reason)
        }
    })?;
    let client = code_client(provider, auth_url, &redirect_uri)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let scopes = requested_scopes(provider, req.scopes);
    let mut authorization = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes)
        .set_pkce_challenge(challenge);
    for (k, v) in &provider.authorization_params {
        authorization = authorization.add_extra_param(k.as_str(), v.as_str());
    }
    let (url, state) = authorization.url();
    let listening = listener.is_some();
    let reading_stdin = req.manual || !listening;
    show(&Prompt {
        url: url.to_string(),
        redirect_uri: redirect_uri.clone(),
        listening,
        reading_stdin,
    });

    let waited = tokio::time::timeout(
        req.timeout,
        wait(listener, reading_stdin, &path, state.secret()),
    )
    .await
    .map_err(|_| AuthorizeError::Timeout(humantime::format_duration(req.timeout).to_string()))?;
    let (code, arrival) = match waited {
        Ok(ok) => ok,
        Err((rejection, arrival)) => {
            let error = match rejection {
                Rejection::StateMismatch => AuthorizeError::StateMismatch,
                Rejection::Denied(reason) => {
                    let redactions = req.provider.redactions();
                    let secrets: Vec<&Secret> = redactions.iter().collect();
                    AuthorizeError::Denied(sanitize(&reason, &secrets))
                }
                Rejection::NoCode => AuthorizeError::NoCode,
                Rejection::ListenerStopped => AuthorizeError::Listen(std::io::Error::other(
                    "the listener for the redirect stopped",
                )),
            };
            if let Some(arrival) = arrival {
                arrival
                    .answer(400, "Authorization failed", &error.to_string())
                    .await;
            }
            return Err(error);
        }
    };

    let outcome =
        match exchange_timed(transport, &client, provider, Secret::new(code), verifier).await {
            Ok(obtained) => keep(obtained).await.map_err(AuthorizeError::Keep),
            Err(e) => Err(e),
        };
    if let Some(arrival) = arrival {
        match &outcome {
            Ok(_) => {
                let text = format!(
                    "Credential {} is authorized. You can close this window.",
                    req.name
                );
                arrival.answer(200, "Authorized", &text).await;
            }
            Err(e) => {
                arrival
                    .answer(400, "Authorization failed", &e.to_string())
                    .await;
            }
        }
    }
    outcome
}

/// What to authorize with the device grant (`authorize --device`).
#[derive(Debug)]
pub struct DeviceRequest<'a> {
    pub provider: &'a Provider,
    /// `--scopes`; `None`: the provider's scopes.
    pub scopes: Option<&'a str>,
    /// Longest wait for the user's approval (the code's own lifetime bounds it too).
    pub timeout: Duration,
}

/// Runs the device grant (RFC 8628): `show` gets the verification URI and user code, the token
/// endpoint is polled until the user approves, and what it obtained is returned to be kept.
pub async fn authorize_device(
    transport: &Transport,
    req: &DeviceRequest<'_>,
    show: impl FnOnce(&super::device::UserPrompt),
) -> Result<Obtained, AuthorizeError> {
    let provider = req.provider;
    let scopes = req
        .scopes
        .map_or_else(|| provider.scopes.join(" "), str::to_owned);
    let started = Instant::now();
    let (tokens, http_status) =
        super::device::obtain(transport, provider, &scopes, req.timeout, show).await?;
    Ok(Obtained::new(tokens, http_status, started))
}

/// Exchanges the code for tokens, timed from the request's start.
pub(super) async fn exchange_timed(
    transport: &Transport,
    client: &CodeClient,
    provider: &Provider,
    code: Secret,
    verifier: oauth2::PkceCodeVerifier,
) -> Result<Obtained, AuthorizeError> {
    let started = Instant::now();
    let (tokens, http_status, id_token) =
        exchange(transport, client, provider, &code, verifier, domain::now()).await?;
    let mut obtained = Obtained::new(tokens, http_status, started);
    obtained.id_token = id_token;
    Ok(obtained)
}

/// The scopes an authorization asks for: `--scopes` (or the link's), else the provider's.
pub(super) fn requested_scopes(provider: &Provider, scopes: Option<&str>) -> Vec<Scope> {
    match scopes {
        Some(s) => s
            .split_whitespace()
            .map(|s| Scope::new(s.to_owned()))
            .collect(),
        None => provider
            .scopes
            .iter()
            .map(|s| Scope::new(s.clone()))
            .collect(),
    }
}

pub(super) fn code_client(
    provider: &Provider,
    auth_url: &str,
    redirect_uri: &str,
) -> Result<CodeClient, AuthorizeError> {
    let bad = |key: &'static str, value: &str, e: url::ParseError| AuthorizeError::BadUrl {
        provider: provider.name.clone(),
        key,
        value: value.to_owned(),
        reason: e.to_string(),
    };
    Ok(crate::refresh::authenticated_client(provider)
        .set_auth_uri(
            AuthUrl::new(auth_url.to_owned()).map_err(|e| bad("authorization_url", auth_url, e))?,
        )
        .set_token_uri(
            TokenUrl::new(provider.token_url.clone())
                .map_err(|e| bad("token_url", &provider.token_url, e))?,
        )
        .set_redirect_uri(
            RedirectUrl::new(redirect_uri.to_owned())
                .map_err(|e| bad("redirect_uri", redirect_uri, e))?,
        ))
}

/// Exchanges the code (with the PKCE verifier) for tokens.
async fn exchange(
    transport: &Transport,
    client: &CodeClient,
    provider: &Provider,
    code: &Secret,
    verifier: oauth2::PkceCodeVerifier,
    now: UnixTime,
) -> Result<(domain::TokenSet, Option<u16>, Option<Secret>), AuthorizeError> {
    let assertion = provider.client_assertion(now)?;
    let secret_verifier = Secret::new(verifier.secret().clone());
    let mut request = client
        .exchange_code(AuthorizationCode::new(code.expose().to_owned()))
        .set_pkce_verifier(verifier);
    for (k, v) in &provider.extra_params {
        request = request.add_extra_param(k.as_str(), v.as_str());
    }
    for (k, v) in Provider::assertion_params(assertion.as_ref()) {
        request = request.add_extra_param(Cow::Borrowed(k), Cow::Borrowed(v));
    }
    let recorded = Mutex::new(Exchange::default());
    let result = request.request_async(&transport.recording(&recorded)).await;
    let seen = recorded
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The provider may quote the request back: code, verifier, assertion and the client secret in
    // every form it was sent are blanked out of what it says (stderr, the browser page).
    let redactions = provider.redactions();
    let mut secrets: Vec<&Secret> = vec![code, &secret_verifier];
    secrets.extend(assertion.as_ref());
    secrets.extend(&redactions);
    match result {
        Ok(response) => {
            let id_token = response.id_token().map(Secret::new);
            let tokens = response
                .into_token_set(
                    now,
                    provider.default_expires_in,
                    provider.refresh_token_lifetime,
                )
                .map_err(|refused| AuthorizeError::Exchange(refused.to_string()))?;
            Ok((tokens, seen.status, id_token))
        }
        Err(RequestTokenError::Request(e)) => {
            Err(AuthorizeError::Exchange(sanitize(&e.to_string(), &secrets)))
        }
        Err(RequestTokenError::ServerResponse(e)) => {
            let reason = match e.error_description() {
                Some(d) => format!("{}: {d}", e.error()),
                None => e.error().to_string(),
            };
            Err(AuthorizeError::Exchange(format!(
                "token endpoint answered {}: {}",
                seen.status.unwrap_or(0),
                sanitize(&reason, &secrets)
            )))
        }
        Err(RequestTokenError::Parse(..) | RequestTokenError::Other(_)) => {
            Err(AuthorizeError::Exchange(format!(
                "token endpoint answered {} with {} bytes that are not a token response",
                seen.status.unwrap_or(0),
                seen.body.len()
            )))
        }
    }
}

impl crate::exit::ExitStatus for AuthorizeError {
    fn exit_code(&self) -> u8 {
        match self {
            // The caller's own error decides.
            Self::Keep(e) => e.0.exit_code(),
            e if e.is_configuration() => crate::exit::CONFIG,
            _ => crate::exit::REFRESH_FAILED,
        }
    }
}

/// Why the caller could not keep what a grant obtained: its own error (next in the chain), which
/// says its exit code.
pub type KeepError = crate::exit::Boxed;
