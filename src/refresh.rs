//! One token request: the refresh_token or client_credentials grant through the oauth2 crate (the
//! jwt-bearer grant, which oauth2 lacks, by hand in `jwt_bearer`), sent
//! by a reqwest client that follows no redirects, times out and caps the body, and classified into a
//! [`RefreshOutcome`]. Never touches the store. Imports `domain` and `provider`.

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RequestTokenError, Scope,
    StandardRevocableToken, TokenUrl,
};
use serde::Deserialize;

use crate::domain::{Secret, TokenSet, UnixTime, sanitize};
use crate::provider::{ClientAuth, Provider};

mod jwt_bearer;
mod response;

pub use response::LenientTokenResponse;

/// The oauth2 client shape tokenwarden uses: a lenient token response, and (as type states) whether
/// the authorization and token endpoints are set.
pub(crate) type ClientWith<HasAuthUrl, HasTokenUrl> = oauth2::Client<
    BasicErrorResponse,
    LenientTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuthUrl,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    HasTokenUrl,
>;

/// A client for token requests.
type OAuthClient = ClientWith<EndpointNotSet, EndpointSet>;

/// What to ask the token endpoint for.
#[derive(Debug, Clone, Copy)]
pub enum Grant<'a> {
    /// Use a refresh token; `scopes` are sent only when given.
    RefreshToken {
        token: &'a Secret,
        scopes: Option<&'a str>,
    },
    /// The client_credentials grant.
    ClientCredentials { scopes: Option<&'a str> },
    /// The jwt-bearer grant (RFC 7523 §2.1): a fresh assertion for `subject`.
    JwtBearer {
        subject: Option<&'a str>,
        scopes: Option<&'a str>,
    },
}

/// What one token request came to.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// New tokens.
    Refreshed(TokenSet),
    /// Try again later: network, timeout, 5xx, 429, `temporarily_unavailable`, unreadable bodies.
    Transient {
        retry_after: Option<i64>,
        code: Option<String>,
        reason: String,
    },
    /// The grant is dead (`invalid_grant` and kin): someone must authorize again.
    GrantRejected { code: String, reason: String },
    /// The provider rejected the client itself (`invalid_client`, `unauthorized_client`): the
    /// provider's configuration is wrong, not the credential.
    ClientRejected { code: String, reason: String },
}

/// A finished request: the outcome and what the HTTP exchange looked like.
#[derive(Debug)]
pub struct Attempt {
    pub outcome: RefreshOutcome,
    pub http_status: Option<u16>,
}

/// Why the HTTP exchange itself failed. Messages name no token.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request timed out")]
    Timeout,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("token endpoint answered with a redirect ({0}), which is never followed")]
    Redirect(u16),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Transport(String),
}

impl From<reqwest::Error> for HttpError {
    fn from(e: reqwest::Error) -> Self {
        let e = e.without_url();
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_connect() {
            Self::Connect(error_chain(&e))
        } else {
            Self::Transport(error_chain(&e))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What the HTTP closure saw, kept for classification (oauth2's errors keep neither).
#[derive(Default)]
struct Exchange {
    status: Option<u16>,
    retry_after: Option<i64>,
    body: Vec<u8>,
}

/// Sends token requests.
#[derive(Clone)]
pub struct Refresher {
    http: reqwest::Client,
    max_body: usize,
}

impl Refresher {
    pub fn new(
        connect_timeout: Duration,
        request_timeout: Duration,
        max_body: usize,
    ) -> Result<Self, HttpError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .user_agent(concat!("tokenwarden/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, max_body })
    }

    /// The HTTP client itself (no redirects, timeouts), for other requests to providers.
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The response body cap.
    #[must_use]
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Performs one grant against `provider`'s token endpoint. Expiry is resolved against `now`.
    pub async fn request(&self, provider: &Provider, grant: Grant<'_>, now: UnixTime) -> Attempt {
        let exchange = Mutex::new(Exchange::default());
        let mut assertion = None;
        let result = match grant {
            Grant::JwtBearer { subject, scopes } => {
                match provider.grant_assertion(subject, scopes, now) {
                    Ok(signed) => {
                        let signed = assertion.insert(signed);
                        self.jwt_bearer(provider, signed, scopes, now, &exchange)
                            .await
                    }
                    Err(e) => Err(Failure::Local(e.to_string())),
                }
            }
            _ => self.request_inner(provider, grant, now, &exchange).await,
        };
        let exchange = exchange
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut secrets: Vec<&Secret> = match grant {
            Grant::RefreshToken { token, .. } => vec![token],
            Grant::ClientCredentials { .. } | Grant::JwtBearer { .. } => vec![],
        };
        secrets.extend(assertion.as_ref());
        if let ClientAuth::SecretBasic(secret) | ClientAuth::SecretPost(secret) = &provider.auth {
            secrets.push(secret);
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(failure) => classify(failure, &exchange, &secrets),
        };
        Attempt {
            outcome,
            http_status: exchange.status,
        }
    }

    async fn request_inner(
        &self,
        provider: &Provider,
        grant: Grant<'_>,
        now: UnixTime,
        exchange: &Mutex<Exchange>,
    ) -> Result<RefreshOutcome, Failure> {
        let client = oauth_client(provider)?;
        let assertion = provider
            .client_assertion(now)
            .map_err(|e| Failure::Local(e.to_string()))?;
        let extra: Vec<(Cow<'_, str>, Cow<'_, str>)> = provider
            .extra_params
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
            .chain(assertion.iter().flat_map(|jwt| {
                [
                    (
                        Cow::Borrowed("client_assertion_type"),
                        Cow::Borrowed("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ),
                    (
                        Cow::Borrowed("client_assertion"),
                        Cow::Borrowed(jwt.expose()),
                    ),
                ]
            }))
            .collect();
        let send = Recording {
            refresher: self,
            exchange,
        };
        let response = match grant {
            Grant::RefreshToken { token, scopes } => {
                let token = oauth2::RefreshToken::new(token.expose().to_owned());
                let mut req = client
                    .exchange_refresh_token(&token)
                    .add_scopes(scope_list(scopes));
                for (k, v) in extra {
                    req = req.add_extra_param(k, v);
                }
                req.request_async(&send).await
            }
            // Sent by `request` through `jwt_bearer`; never reaches here.
            Grant::ClientCredentials { scopes } | Grant::JwtBearer { scopes, .. } => {
                let mut req = client
                    .exchange_client_credentials()
                    .add_scopes(scope_list(scopes));
                for (k, v) in extra {
                    req = req.add_extra_param(k, v);
                }
                req.request_async(&send).await
            }
        };
        match response {
            Ok(token) => Ok(RefreshOutcome::Refreshed(token.into_token_set(
                now,
                provider.default_expires_in,
                provider.refresh_token_lifetime,
            ))),
            Err(RequestTokenError::Request(e)) => Err(Failure::Http(e)),
            // The status and body were recorded by `send`; oauth2's view of them adds nothing.
            Err(
                RequestTokenError::ServerResponse(_)
                | RequestTokenError::Parse(..)
                | RequestTokenError::Other(_),
            ) => Err(Failure::Response),
        }
    }

    /// Sends one request for oauth2: records status, Retry-After and body, caps the body.
    async fn send(
        &self,
        request: oauth2::HttpRequest,
        exchange: &Mutex<Exchange>,
    ) -> Result<oauth2::HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let (status, retry_after) = head_of(&response);
        {
            let mut ex = exchange
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ex.status = Some(status);
            ex.retry_after = retry_after;
        }
        let (headers, body) = capped_body(response, self.max_body).await?;
        let mut builder = http::Response::builder().status(status);
        // Some providers send JSON labelled text/plain or text/javascript: oauth2 would refuse it.
        let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        for (name, value) in &headers {
            if name == http::header::CONTENT_TYPE && looks_json {
                continue;
            }
            builder = builder.header(name, value);
        }
        if looks_json {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        exchange
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .body
            .clone_from(&body);
        builder
            .body(body)
            .map_err(|e| HttpError::Transport(e.to_string()))
    }
}

/// The status and Retry-After (seconds) of a provider's response.
pub(crate) fn head_of(response: &reqwest::Response) -> (u16, Option<i64>) {
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    (response.status().as_u16(), retry_after)
}

/// The headers and body of a provider's response: a redirect is refused (never followed), and a
/// body larger than `max_body` is refused as it streams in.
pub(crate) async fn capped_body(
    mut response: reqwest::Response,
    max_body: usize,
) -> Result<(http::HeaderMap, Vec<u8>), HttpError> {
    if response.status().is_redirection() {
        return Err(HttpError::Redirect(response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((response.headers().clone(), body))
}

/// The HTTP client handed to oauth2. A named type with a boxed `Send` future rather than a closure:
/// a closure's future borrows with a lifetime the compiler cannot prove `Send` for every caller.
struct Recording<'a> {
    refresher: &'a Refresher,
    exchange: &'a Mutex<Exchange>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Recording<'_> {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.refresher.send(request, self.exchange))
    }
}

/// Why `request_inner` did not produce tokens.
enum Failure {
    Http(HttpError),
    /// The endpoint answered something other than a token response; see the recorded exchange.
    Response,
    Local(String),
}

fn oauth_client(provider: &Provider) -> Result<OAuthClient, Failure> {
    let token_url = TokenUrl::new(provider.token_url.clone())
        .map_err(|e| Failure::Local(format!("token_url: {e}")))?;
    Ok(authenticated_client(provider).set_token_uri(token_url))
}

/// An oauth2 client with no endpoint set yet.
pub(crate) type BareClient = ClientWith<EndpointNotSet, EndpointNotSet>;

/// An oauth2 client that authenticates as `provider`'s client (basic, post, or no secret for
/// private_key_jwt, whose assertion goes in as extra parameters); endpoints are the caller's.
pub(crate) fn authenticated_client(provider: &Provider) -> BareClient {
    let client = oauth2::Client::new(ClientId::new(provider.client_id.clone()));
    match &provider.auth {
        ClientAuth::SecretBasic(secret) => client
            .set_client_secret(ClientSecret::new(secret.expose().to_owned()))
            .set_auth_type(AuthType::BasicAuth),
        ClientAuth::SecretPost(secret) => client
            .set_client_secret(ClientSecret::new(secret.expose().to_owned()))
            .set_auth_type(AuthType::RequestBody),
        // No secret: oauth2 then sends client_id in the body (beside the assertion, if any).
        ClientAuth::PrivateKeyJwt { .. } | ClientAuth::None => {
            client.set_auth_type(AuthType::RequestBody)
        }
    }
}

fn scope_list(scopes: Option<&str>) -> Vec<Scope> {
    scopes
        .unwrap_or_default()
        .split_whitespace()
        .map(|s| Scope::new(s.to_owned()))
        .collect()
}

/// An OAuth error body (RFC 6749 §5.2); Microsoft puts its AADSTS code in the description.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    error_description: Option<String>,
}

/// Turns a failed exchange into an outcome.
fn classify(failure: Failure, exchange: &Exchange, secrets: &[&Secret]) -> RefreshOutcome {
    let transient = |code: Option<String>, reason: String| RefreshOutcome::Transient {
        retry_after: exchange.retry_after,
        code,
        reason: sanitize(&reason, secrets),
    };
    let body = match failure {
        Failure::Http(e) => return transient(None, e.to_string()),
        Failure::Local(reason) => return transient(None, reason),
        Failure::Response => &exchange.body,
    };
    let status = exchange.status.unwrap_or(0);
    let Ok(ErrorBody {
        error,
        error_description,
    }) = serde_json::from_slice::<ErrorBody>(body)
    else {
        let what = if body.is_empty() {
            "an empty body".to_owned()
        } else if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
            "JSON that is not a token response".to_owned()
        } else {
            format!("{} bytes that are not JSON", body.len())
        };
        return transient(
            None,
            format!("token endpoint answered {status} with {what}"),
        );
    };
    let reason = sanitize(
        &match &error_description {
            Some(d) => format!("{error}: {d}"),
            None => error.clone(),
        },
        secrets,
    );
    let code = sanitize(&error, secrets);
    match error.as_str() {
        "invalid_grant" | "interaction_required" | "consent_required" | "login_required" => {
            RefreshOutcome::GrantRejected { code, reason }
        }
        "invalid_client" | "unauthorized_client" | "unsupported_grant_type" | "invalid_scope" => {
            RefreshOutcome::ClientRejected { code, reason }
        }
        // temporarily_unavailable, server_error, slow_down, anything unknown: try again later.
        _ => transient(
            Some(code),
            format!("token endpoint answered {status}: {reason}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(status: u16, body: &str) -> Exchange {
        Exchange {
            status: Some(status),
            retry_after: Some(7),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn invalid_grant_needs_reauthorization_and_keeps_the_description() {
        let body = r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired","error_codes":[700082]}"#;
        match classify(Failure::Response, &exchange(400, body), &[]) {
            RefreshOutcome::GrantRejected { code, reason } => {
                assert_eq!(code, "invalid_grant");
                assert!(reason.contains("AADSTS700082"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_200_with_an_error_member_is_an_error() {
        let outcome = classify(
            Failure::Response,
            &exchange(200, r#"{"error":"invalid_grant"}"#),
            &[],
        );
        assert!(
            matches!(outcome, RefreshOutcome::GrantRejected { .. }),
            "{outcome:?}"
        );
    }

    #[test]
    fn invalid_client_blames_the_provider_configuration() {
        let outcome = classify(
            Failure::Response,
            &exchange(401, r#"{"error":"invalid_client"}"#),
            &[],
        );
        assert!(
            matches!(outcome, RefreshOutcome::ClientRejected { .. }),
            "{outcome:?}"
        );
    }

    #[test]
    fn html_empty_and_truncated_bodies_are_transient_with_retry_after() {
        for body in [
            "<html>502 Bad Gateway</html>",
            "",
            r#"{"access_token":"abc","#,
        ] {
            match classify(Failure::Response, &exchange(502, body), &[]) {
                RefreshOutcome::Transient { retry_after, .. } => assert_eq!(retry_after, Some(7)),
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let outcome = classify(
            Failure::Response,
            &exchange(503, r#"{"error":"temporarily_unavailable"}"#),
            &[],
        );
        assert!(
            matches!(outcome, RefreshOutcome::Transient { code: Some(_), .. }),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_token_echoed_in_an_error_is_redacted() {
        let token = Secret::new("rt-canary-123");
        let body =
            r#"{"error":"invalid_grant","error_description":"token rt-canary-123 is unknown"}"#;
        let outcome = classify(Failure::Response, &exchange(400, body), &[&token]);
        assert!(
            !format!("{outcome:?}").contains("rt-canary-123"),
            "{outcome:?}"
        );
    }
}
