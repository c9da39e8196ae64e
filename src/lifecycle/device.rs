//! The device authorization grant (RFC 8628) behind `authorize --device`, for machines without a
//! browser: ask the device authorization endpoint for a user code, show where to enter it, then
//! poll the token endpoint at the interval the provider gave — 5 s slower after each `slow_down` —
//! until the user approves or denies, the code expires or the caller's time is up. Sends through
//! `http`, with the provider's client authentication; never touches the store. Imports
//! `domain`, `http`, `provider` and `refresh` (the lenient token response).

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::domain::{self, Secret, TokenSet, UnixTime, sanitize};
use crate::http::{Exchange, Transport};
use crate::provider::{Provider, ProviderError};
use crate::refresh::LenientTokenResponse;

/// The grant type of a device-code poll (RFC 8628 §3.4).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The polling interval when the provider names none (RFC 8628 §3.2).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// How much slower to poll after each `slow_down` (RFC 8628 §3.5).
const SLOW_DOWN: Duration = Duration::from_secs(5);
/// The longest interval believed: a provider's larger value is cut to this.
const MAX_INTERVAL: Duration = Duration::from_mins(1);

/// Why the grant produced no tokens. Messages name no device code and no token.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "provider {0} has no device_authorization_url (set it, or an issuer whose metadata names one)"
    )]
    NoEndpoint(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the device authorization request failed: {0}; nothing was stored")]
    Start(String),
    #[error("the user denied the authorization (access_denied); nothing was stored")]
    Denied,
    #[error("the user code expired before it was approved (expired_token); nothing was stored")]
    Expired,
    #[error("the user code was not approved within {0}; nothing was stored")]
    Timeout(String),
    #[error("the token endpoint refused the device code: {0}; nothing was stored")]
    Refused(String),
}

/// What the user must do, handed to the caller to show.
#[derive(Debug)]
pub struct UserPrompt {
    /// Where to enter the code.
    pub verification_uri: String,
    /// The code to enter there (short-lived, meant to be shown; unlike the device code).
    pub user_code: String,
    /// The verification URI with the code in it, when the provider gives one.
    pub verification_uri_complete: Option<String>,
    /// How long the code lives.
    pub expires_in: Duration,
}

/// The device authorization response (RFC 8628 §3.2). Google calls the URI `verification_url`.
#[derive(Deserialize)]
struct Started {
    #[serde(deserialize_with = "secret")]
    device_code: Secret,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: serde_json::Value,
    interval: Option<serde_json::Value>,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

/// What one poll came to.
#[derive(Debug)]
enum Poll {
    Tokens(TokenSet),
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// A network error, a 5xx or a body that says nothing: try again at the next interval.
    Transient(String),
    /// Any other error: give up.
    Refused(String),
}

/// Runs the grant for `scopes`: starts it, calls `show` with what the user must do, and polls
/// until tokens arrive, bounded by the code's lifetime and `timeout`. Returns the tokens and the
/// HTTP status of the answer that carried them.
pub async fn obtain(
    transport: &Transport,
    provider: &Provider,
    scopes: &str,
    timeout: Duration,
    show: impl FnOnce(&UserPrompt),
) -> Result<(TokenSet, Option<u16>), DeviceError> {
    let url = provider
        .device_authorization_url
        .as_deref()
        .ok_or_else(|| DeviceError::NoEndpoint(provider.name.clone()))?;
    let started = Instant::now();
    let (device_code, prompt, mut interval) = start(transport, provider, url, scopes).await?;
    let give_up = started + prompt.expires_in.min(timeout);
    show(&prompt);
    let mut last_transient = None;
    loop {
        let next = Instant::now() + interval;
        if next >= give_up {
            return Err(if prompt.expires_in <= timeout {
                DeviceError::Expired
            } else {
                let waited = humantime::format_duration(timeout).to_string();
                DeviceError::Timeout(match last_transient {
                    Some(reason) => format!("{waited} (last poll: {reason})"),
                    None => waited,
                })
            });
        }
        tokio::time::sleep_until(next.into()).await;
        let now = domain::now();
        let answer = post(transport, provider, &provider.token_url, now, |form| {
            form.push(("grant_type".to_owned(), Secret::new(GRANT_TYPE)));
            form.push(("device_code".to_owned(), device_code.clone()));
        })
        .await;
        let status = answer.as_ref().ok().and_then(|e| e.status);
        match judge(answer, provider, now, &device_code) {
            Poll::Tokens(tokens) => return Ok((tokens, status)),
            Poll::Pending => {}
            Poll::SlowDown => interval = (interval + SLOW_DOWN).min(MAX_INTERVAL),
            Poll::Denied => return Err(DeviceError::Denied),
            Poll::Expired => return Err(DeviceError::Expired),
            Poll::Transient(reason) => last_transient = Some(reason),
            Poll::Refused(reason) => return Err(DeviceError::Refused(reason)),
        }
    }
}

/// Asks for a device code and a user code.
async fn start(
    transport: &Transport,
    provider: &Provider,
    url: &str,
    scopes: &str,
) -> Result<(Secret, UserPrompt, Duration), DeviceError> {
    let now = domain::now();
    let answer = post(transport, provider, url, now, |form| {
        if !scopes.is_empty() {
            form.push(("scope".to_owned(), Secret::new(scopes)));
        }
    })
    .await
    .map_err(DeviceError::Start)?;
    let status = answer.status.unwrap_or(0);
    let started = (status == 200)
        .then(|| serde_json::from_slice::<Started>(&answer.body).ok())
        .flatten();
    let Some(started) = started else {
        let reason = match answer.error_body() {
            Some(e) => e.describe(),
            None => format!(
                "{} bytes that are not a device authorization",
                answer.body.len()
            ),
        };
        let redactions = provider.redactions();
        let secrets: Vec<&Secret> = redactions.iter().collect();
        return Err(DeviceError::Start(format!(
            "{url} answered {status}: {}",
            sanitize(&reason, &secrets)
        )));
    };
    let seconds = |v: &serde_json::Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    };
    let expires_in = Duration::from_secs(seconds(&started.expires_in).unwrap_or(0));
    if expires_in.is_zero() {
        return Err(DeviceError::Start(format!(
            "{url} answered without a usable expires_in"
        )));
    }
    let interval = started
        .interval
        .as_ref()
        .and_then(seconds)
        .map_or(DEFAULT_INTERVAL, Duration::from_secs)
        .clamp(Duration::from_secs(1), MAX_INTERVAL);
    // Shown to a person who will open it: https (plain http only on this machine), nothing a
    // terminal acts on.
    for (key, value) in [
        ("verification_uri", Some(&started.verification_uri)),
        (
            "verification_uri_complete",
            started.verification_uri_complete.as_ref(),
        ),
    ] {
        if let Some(value) = value
            && let Err(flaw) = crate::untrusted::check_browser_url(value)
        {
            return Err(DeviceError::Start(format!(
                "{url} answered a {key} that {flaw}"
            )));
        }
    }
    let prompt = UserPrompt {
        verification_uri: started.verification_uri,
        user_code: started.user_code,
        verification_uri_complete: started.verification_uri_complete,
        expires_in,
    };
    Ok((started.device_code, prompt, interval))
}

/// POSTs a form with the provider's client authentication; `fill` adds the grant's parameters.
async fn post(
    transport: &Transport,
    provider: &Provider,
    url: &str,
    now: UnixTime,
    fill: impl FnOnce(&mut Vec<(String, Secret)>),
) -> Result<Exchange, String> {
    let mut grant: Vec<(String, Secret)> = Vec::new();
    fill(&mut grant);
    let assertion = provider.client_assertion(now).map_err(|e| e.to_string())?;
    let mut form: Vec<(&str, &str)> = grant
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    let basic = provider.authenticate_form(&mut form, assertion.as_ref());
    transport.post_form(url, &form, basic).await.map_err(|e| {
        let redactions = provider.redactions();
        let shown: Vec<&Secret> = grant
            .iter()
            .map(|(_, v)| v)
            .chain(assertion.as_ref())
            .chain(&redactions)
            .collect();
        sanitize(&e.to_string(), &shown)
    })
}

/// Classifies one poll's answer (RFC 8628 §3.5).
fn judge(
    answer: Result<Exchange, String>,
    provider: &Provider,
    now: UnixTime,
    device_code: &Secret,
) -> Poll {
    let answer = match answer {
        Ok(answer) => answer,
        Err(reason) => return Poll::Transient(reason),
    };
    let status = answer.status.unwrap_or(0);
    if status == 200
        && let Ok(tokens) = serde_json::from_slice::<LenientTokenResponse>(&answer.body)
    {
        return match tokens.into_token_set(
            now,
            provider.default_expires_in,
            provider.refresh_token_lifetime,
        ) {
            Ok(tokens) => Poll::Tokens(tokens),
            // Checked like every token response: refused whole, nothing of it stored.
            Err(refused) => Poll::Refused(refused.to_string()),
        };
    }
    let Some(error) = answer.error_body() else {
        return Poll::Transient(format!(
            "token endpoint answered {status} with {} bytes that are not a token response",
            answer.body.len()
        ));
    };
    // The provider may quote the request back: the device code and the client secret in every
    // form it was sent are blanked out of what it says.
    let redactions = provider.redactions();
    let mut secrets: Vec<&Secret> = vec![device_code];
    secrets.extend(&redactions);
    match error.error.as_str() {
        "authorization_pending" => Poll::Pending,
        "slow_down" => Poll::SlowDown,
        "access_denied" => Poll::Denied,
        "expired_token" => Poll::Expired,
        "temporarily_unavailable" | "server_error" => {
            Poll::Transient(sanitize(&error.describe(), &secrets))
        }
        _ if status >= 500 => Poll::Transient(sanitize(&error.describe(), &secrets)),
        _ => Poll::Refused(format!(
            "token endpoint answered {status}: {}",
            sanitize(&error.describe(), &secrets)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ClientAuth;

    fn provider() -> Provider {
        Provider {
            name: "p".to_owned(),
            token_url: "https://p/token".to_owned(),
            authorization_url: None,
            revocation_url: None,
            device_authorization_url: Some("https://p/device".to_owned()),
            redirect_uri: None,
            client_id: "c".to_owned(),
            auth: ClientAuth::None,
            scopes: vec![],
            scope_on_refresh: false,
            default_expires_in: 3600,
            refresh_token_lifetime: None,
            extra_params: vec![],
            authorization_params: vec![],
            grant_key: None,
            assertion_audience: "https://p/token".to_owned(),
            scope_in_assertion: false,
            refresh_token_reuse: crate::domain::RefreshTokenReuse::None,
            rate_limit: None,
            max_concurrency: None,
            warnings: vec![],
        }
    }

    fn answer(status: u16, body: &str) -> Exchange {
        Exchange {
            status: Some(status),
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    fn poll(status: u16, body: &str) -> Poll {
        judge(
            Ok(answer(status, body)),
            &provider(),
            1000,
            &Secret::new("dc-canary"),
        )
    }

    #[test]
    fn every_rfc_8628_answer_has_its_step() {
        assert!(matches!(
            poll(400, r#"{"error":"authorization_pending"}"#),
            Poll::Pending
        ));
        assert!(matches!(
            poll(400, r#"{"error":"slow_down"}"#),
            Poll::SlowDown
        ));
        assert!(matches!(
            poll(400, r#"{"error":"access_denied"}"#),
            Poll::Denied
        ));
        assert!(matches!(
            poll(400, r#"{"error":"expired_token"}"#),
            Poll::Expired
        ));
        assert!(matches!(poll(503, "<html>busy</html>"), Poll::Transient(_)));
        assert!(matches!(
            judge(
                Err("could not connect".to_owned()),
                &provider(),
                1000,
                &Secret::new("x")
            ),
            Poll::Transient(_)
        ));
        match poll(
            200,
            r#"{"access_token":"at","token_type":"bearer","expires_in":"120","refresh_token":"rt"}"#,
        ) {
            Poll::Tokens(t) => {
                assert_eq!(t.expires_at, 1120);
                assert_eq!(t.token_type, "Bearer");
                assert!(t.refresh_token.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_errors_give_up_without_echoing_the_device_code() {
        match poll(
            400,
            r#"{"error":"invalid_grant","error_description":"code dc-canary unknown"}"#,
        ) {
            Poll::Refused(reason) => {
                assert!(reason.contains("invalid_grant"), "{reason}");
                assert!(!reason.contains("dc-canary"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
