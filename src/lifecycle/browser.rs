//! The authorization-code grant split across two requests of someone else's browser, for the
//! invitation pages: [`begin`] makes the provider's URL (state, PKCE S256, the fixed redirect
//! URI, an optional login hint), [`finish`] exchanges the code that came back. The caller keeps
//! the state and verifier between the two and checks the state. Never touches the store. Imports
//! `domain`, `http`, `provider` and (through `authorize`) `refresh`.

use oauth2::{CsrfToken, PkceCodeChallenge, PkceCodeVerifier};

use super::authorize::{AuthorizeError, Obtained, code_client, exchange_timed};
use crate::domain::Secret;
use crate::http::Transport;
use crate::provider::Provider;

/// A started authorization: where to send the browser, and what to keep until it comes back.
#[derive(Debug)]
pub struct Begun {
    /// The provider's authorization URL (no secret in it: state and challenge are public).
    pub url: String,
    /// The state to expect back.
    pub state: Secret,
    /// The PKCE verifier for the exchange.
    pub verifier: Secret,
}

/// Makes the authorization URL for `provider` with `redirect_uri`, the scopes (`None`: the
/// provider's) and, when given, a `login_hint`.
pub fn begin(
    provider: &Provider,
    redirect_uri: &str,
    scopes: Option<&str>,
    login_hint: Option<&str>,
) -> Result<Begun, AuthorizeError> {
    let auth_url = provider
        .authorization_url
        .as_deref()
        .ok_or_else(|| AuthorizeError::NoAuthorizationUrl(provider.name.clone()))?;
    let client = code_client(provider, auth_url, redirect_uri)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let scopes = super::authorize::requested_scopes(provider, scopes);
    let mut authorization = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes)
        .set_pkce_challenge(challenge);
    for (k, v) in &provider.authorization_params {
        authorization = authorization.add_extra_param(k.as_str(), v.as_str());
    }
    if let Some(hint) = login_hint
        && !provider
            .authorization_params
            .iter()
            .any(|(k, _)| k == "login_hint")
    {
        authorization = authorization.add_extra_param("login_hint", hint);
    }
    let (url, state) = authorization.url();
    Ok(Begun {
        url: url.to_string(),
        state: Secret::new(state.secret().clone()),
        verifier: Secret::new(verifier.secret().clone()),
    })
}

/// Exchanges `code` (with the verifier `begin` made) for tokens at `provider`'s token endpoint.
pub async fn finish(
    transport: &Transport,
    provider: &Provider,
    redirect_uri: &str,
    code: Secret,
    verifier: &Secret,
) -> Result<Obtained, AuthorizeError> {
    let auth_url = provider
        .authorization_url
        .as_deref()
        .ok_or_else(|| AuthorizeError::NoAuthorizationUrl(provider.name.clone()))?;
    let client = code_client(provider, auth_url, redirect_uri)?;
    let verifier = PkceCodeVerifier::new(verifier.expose().to_owned());
    exchange_timed(transport, &client, provider, code, verifier).await
}
