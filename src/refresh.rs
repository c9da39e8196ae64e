//! One token request: the refresh_token or client_credentials grant through the oauth2 crate (the
//! jwt-bearer grant, which oauth2 lacks, by hand in `jwt_bearer`), sent through the one transport
//! (`http`), and classified into a [`RefreshOutcome`]. Never touches the store. Imports `domain`,
//! `http` and `provider`.

use std::borrow::Cow;
use std::sync::Mutex;

use crate::domain::{Secret, TokenSet, UnixTime, sanitize};
use crate::http::{Exchange, HttpError, Transport};
use crate::provider::{ClientAuth, Provider};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RequestTokenError, Scope,
    StandardRevocableToken, TokenUrl,
};

mod jwt;
mod jwt_bearer;
mod response;

pub use response::{LenientTokenResponse, Refused};

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
    /// The endpoint answered with tokens that fail their checks (a control character, a space,
    /// too long…): nothing of the response is kept, and it is retried like a malformed one.
    Refused { reason: String },
}

/// A finished request: the outcome and what the HTTP exchange looked like.
#[derive(Debug)]
pub struct Attempt {
    pub outcome: RefreshOutcome,
    pub http_status: Option<u16>,
}

/// Sends token requests.
#[derive(Clone)]
pub struct Refresher {
    transport: Transport,
}

impl Refresher {
    #[must_use]
    pub fn new(transport: Transport) -> Self {
        Self { transport }
    }

    /// The transport it sends through, for other requests to providers.
    #[must_use]
    pub fn transport(&self) -> &Transport {
        &self.transport
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
        let redactions = provider.redactions();
        secrets.extend(&redactions);
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
            .chain(
                Provider::assertion_params(assertion.as_ref())
                    .into_iter()
                    .map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v))),
            )
            .collect();
        let send = self.transport.recording(exchange);
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
            Ok(token) => Ok(
                match token.into_token_set(
                    now,
                    provider.default_expires_in,
                    provider.refresh_token_lifetime,
                ) {
                    Ok(tokens) => RefreshOutcome::Refreshed(tokens),
                    Err(refused) => RefreshOutcome::Refused {
                        reason: refused.to_string(),
                    },
                },
            ),
            Err(RequestTokenError::Request(e)) => Err(Failure::Http(e)),
            // The status and body were recorded by the transport; oauth2's view adds nothing.
            Err(
                RequestTokenError::ServerResponse(_)
                | RequestTokenError::Parse(..)
                | RequestTokenError::Other(_),
            ) => Err(Failure::Response),
        }
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

/// Turns a failed exchange into an outcome.
fn classify(failure: Failure, exchange: &Exchange, secrets: &[&Secret]) -> RefreshOutcome {
    let transient = |code: Option<String>, reason: String| RefreshOutcome::Transient {
        retry_after: exchange.retry_after,
        code,
        reason: sanitize(&reason, secrets),
    };
    match failure {
        Failure::Http(e) => return transient(None, e.to_string()),
        Failure::Local(reason) => return transient(None, reason),
        Failure::Response => {}
    }
    let status = exchange.status.unwrap_or(0);
    let Some(error) = exchange.error_body() else {
        let what = exchange.body_shape("a token response");
        return transient(
            None,
            format!("token endpoint answered {status} with {what}"),
        );
    };
    let reason = sanitize(&error.describe(), secrets);
    let error = error.error;
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
