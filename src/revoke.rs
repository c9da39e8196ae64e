//! One revocation (RFC 7009) of a credential's tokens at its provider's revocation endpoint, with
//! the provider's client authentication: the refresh token first (revoking it ends the grant at
//! most providers), then the access token, classified into a [`RevocationOutcome`]. Never touches
//! the store; the sweep claims and settles. Imports `domain`, `http` and `provider`.

use crate::domain::{Secret, UnixTime, sanitize};
use crate::http::{Exchange, HttpError, Transport};
use crate::provider::Provider;

/// What the provider said about a credential's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationOutcome {
    /// Both revoked (or the provider cannot revoke access tokens, which then simply expire).
    Revoked { http_status: Option<u16> },
    /// Worth another try later: network errors, 5xx, 429, `temporarily_unavailable`.
    Transient {
        reason: String,
        code: Option<String>,
        http_status: Option<u16>,
        retry_after: Option<i64>,
    },
    /// The provider refused (or the client could not authenticate); sending again will not help.
    Refused {
        reason: String,
        code: Option<String>,
        http_status: Option<u16>,
    },
}

/// What the provider said about one token.
enum TokenRevocation {
    Done,
    Transient {
        reason: String,
        code: Option<String>,
        status: Option<u16>,
        retry_after: Option<i64>,
    },
    Refused {
        reason: String,
        code: Option<String>,
        status: Option<u16>,
    },
}

/// Revokes `refresh_token`, then `access_token` (each when present) at `url`, authenticating as
/// `provider`'s client; stops at the first that is not revoked.
pub async fn revoke(
    transport: &Transport,
    provider: &Provider,
    url: &str,
    refresh_token: Option<&Secret>,
    access_token: Option<&Secret>,
    now: UnixTime,
) -> RevocationOutcome {
    let mut last_status = None;
    for (token, hint) in [
        (refresh_token, "refresh_token"),
        (access_token, "access_token"),
    ] {
        let Some(token) = token else { continue };
        let (result, status) = revoke_token(transport, provider, url, token, hint, now).await;
        last_status = status.or(last_status);
        match result {
            TokenRevocation::Done => {}
            TokenRevocation::Transient {
                reason,
                code,
                status,
                retry_after,
            } => {
                return RevocationOutcome::Transient {
                    reason,
                    code,
                    http_status: status,
                    retry_after,
                };
            }
            TokenRevocation::Refused {
                reason,
                code,
                status,
            } => {
                return RevocationOutcome::Refused {
                    reason,
                    code,
                    http_status: status,
                };
            }
        }
    }
    RevocationOutcome::Revoked {
        http_status: last_status,
    }
}

/// Revokes one token (RFC 7009 §2.1) and classifies the answer.
async fn revoke_token(
    transport: &Transport,
    provider: &Provider,
    url: &str,
    token: &Secret,
    hint: &str,
    now: UnixTime,
) -> (TokenRevocation, Option<u16>) {
    let assertion = match provider.client_assertion(now) {
        Ok(assertion) => assertion,
        Err(e) => {
            let refused = TokenRevocation::Refused {
                reason: e.to_string(),
                code: None,
                status: None,
            };
            return (refused, None);
        }
    };
    let mut form: Vec<(&str, &str)> = vec![("token", token.expose()), ("token_type_hint", hint)];
    let basic = provider.authenticate_form(&mut form, assertion.as_ref());
    let answer = transport.post_form(url, &form, basic).await;
    let status = answer.as_ref().ok().and_then(|e| e.status);
    // The provider may quote the request back: the token, the assertion and the client secret in
    // every form it was sent are blanked out of what it says.
    let redactions = provider.redactions();
    let mut secrets: Vec<&Secret> = vec![token];
    secrets.extend(assertion.as_ref());
    secrets.extend(&redactions);
    (classify(answer, hint, &secrets), status)
}

/// Classifies a revocation endpoint's answer (RFC 7009 §2.2): 200 is revoked (also for a token the
/// provider no longer knows); 5xx, 429 and network errors are worth another try; any other error
/// is a refusal. `unsupported_token_type` for an access token counts as done: the provider cannot
/// revoke access tokens, which then simply expire.
fn classify(
    answer: Result<Exchange, HttpError>,
    hint: &str,
    secrets: &[&Secret],
) -> TokenRevocation {
    let exchange = match answer {
        Ok(exchange) => exchange,
        Err(e @ HttpError::Redirect(_)) => {
            return TokenRevocation::Refused {
                reason: sanitize(&format!("revocation endpoint: {e}"), secrets),
                code: None,
                status: None,
            };
        }
        Err(e) => {
            return TokenRevocation::Transient {
                reason: sanitize(&format!("revocation endpoint: {e}"), secrets),
                code: None,
                status: None,
                retry_after: None,
            };
        }
    };
    let status = exchange.status.unwrap_or(0);
    if status == 200 {
        return TokenRevocation::Done;
    }
    let (code, described) = match exchange.error_body() {
        Some(error) => (
            Some(sanitize(&error.error, secrets)),
            sanitize(&error.describe(), secrets),
        ),
        None => (
            None,
            format!("{} bytes that are not an OAuth error", exchange.body.len()),
        ),
    };
    if hint == "access_token" && code.as_deref() == Some("unsupported_token_type") {
        return TokenRevocation::Done;
    }
    let reason = format!("revocation endpoint answered {status}: {described}");
    if status == 429 || status >= 500 || code.as_deref() == Some("temporarily_unavailable") {
        TokenRevocation::Transient {
            reason,
            code,
            status: Some(status),
            retry_after: exchange.retry_after,
        }
    } else {
        TokenRevocation::Refused {
            reason,
            code,
            status: Some(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<Exchange, HttpError> {
        let exchange = Exchange {
            status: Some(status),
            retry_after: Some(9),
            body: body.as_bytes().to_vec(),
        };
        if status == 0 {
            return Err(HttpError::Timeout);
        }
        Ok(exchange)
    }

    #[test]
    fn ok_is_revoked_and_outages_are_retried() {
        assert!(matches!(
            classify(answer(200, ""), "refresh_token", &[]),
            TokenRevocation::Done
        ));
        for status in [429, 500, 503] {
            match classify(answer(status, "<html>down</html>"), "refresh_token", &[]) {
                TokenRevocation::Transient { retry_after, .. } => assert_eq!(retry_after, Some(9)),
                _ => panic!("{status} not transient"),
            }
        }
        assert!(matches!(
            classify(Err(HttpError::Timeout), "refresh_token", &[]),
            TokenRevocation::Transient { .. }
        ));
    }

    #[test]
    fn client_errors_are_refusals_without_tokens() {
        let token = Secret::new("rt-canary-123456");
        let body = r#"{"error":"invalid_client","error_description":"bad rt-canary-123456"}"#;
        match classify(answer(401, body), "refresh_token", &[&token]) {
            TokenRevocation::Refused { reason, code, .. } => {
                assert_eq!(code.as_deref(), Some("invalid_client"));
                assert!(!reason.contains("rt-canary-123456"), "{reason}");
            }
            _ => panic!("not refused"),
        }
        let unsupported = r#"{"error":"unsupported_token_type"}"#;
        assert!(matches!(
            classify(answer(400, unsupported), "access_token", &[]),
            TokenRevocation::Done
        ));
        assert!(matches!(
            classify(answer(400, unsupported), "refresh_token", &[]),
            TokenRevocation::Refused { .. }
        ));
    }
}
