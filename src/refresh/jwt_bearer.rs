//! The jwt-bearer grant (RFC 7523 §2.1), which oauth2 has no request for: the form built here
//! (grant_type, assertion, scope, and the provider's client authentication, if any), sent through
//! the same recording client as the other grants, the answer read as a lenient token response.

use std::sync::Mutex;

use base64::Engine as _;

use super::{Exchange, Failure, LenientTokenResponse, RefreshOutcome, Refresher};
use crate::domain::{Secret, UnixTime};
use crate::provider::{ClientAuth, Provider};

/// The grant type URI (RFC 7523 §2.1).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

impl Refresher {
    /// Asks for an access token with `assertion`.
    pub(super) async fn jwt_bearer(
        &self,
        provider: &Provider,
        assertion: &Secret,
        scopes: Option<&str>,
        now: UnixTime,
        exchange: &Mutex<Exchange>,
    ) -> Result<RefreshOutcome, Failure> {
        let request = build(provider, assertion, scopes, now)?;
        let response = self.send(request, exchange).await.map_err(Failure::Http)?;
        if response.status() != http::StatusCode::OK {
            return Err(Failure::Response);
        }
        let tokens: LenientTokenResponse =
            serde_json::from_slice(response.body()).map_err(|_| Failure::Response)?;
        Ok(RefreshOutcome::Refreshed(tokens.into_token_set(
            now,
            provider.default_expires_in,
            provider.refresh_token_lifetime,
        )))
    }
}

/// The request: the grant's form and the provider's client authentication. (Built apart from the
/// sending: the form serializer is not `Send`.)
fn build(
    provider: &Provider,
    assertion: &Secret,
    scopes: Option<&str>,
    now: UnixTime,
) -> Result<oauth2::HttpRequest, Failure> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", GRANT_TYPE);
    form.append_pair("assertion", assertion.expose());
    if !provider.scope_in_assertion
        && let Some(scopes) = scopes.filter(|s| !s.trim().is_empty())
    {
        form.append_pair("scope", scopes);
    }
    for (k, v) in &provider.extra_params {
        form.append_pair(k, v);
    }
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(&provider.token_url)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json");
    match &provider.auth {
        ClientAuth::SecretBasic(secret) => {
            // RFC 6749 §2.3.1: id and secret form-urlencoded, then Base64.
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!(
                "{}:{}",
                encode(&provider.client_id),
                encode(secret.expose())
            );
            let basic = base64::engine::general_purpose::STANDARD.encode(pair);
            request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        ClientAuth::SecretPost(secret) => {
            form.append_pair("client_id", &provider.client_id);
            form.append_pair("client_secret", secret.expose());
        }
        ClientAuth::PrivateKeyJwt { .. } => {
            let jwt = provider
                .client_assertion(now)
                .map_err(|e| Failure::Local(e.to_string()))?
                .unwrap_or_else(|| Secret::new(""));
            form.append_pair("client_id", &provider.client_id);
            form.append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            );
            form.append_pair("client_assertion", jwt.expose());
        }
        // The assertion alone: its `iss` names the client (Salesforce, Google).
        ClientAuth::None => {}
    }
    request
        .body(form.finish().into_bytes())
        .map_err(|e| Failure::Local(format!("token_url: {e}")))
}
