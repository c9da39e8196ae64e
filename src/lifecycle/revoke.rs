//! `revoke`: RFC 7009 revocation of a credential's refresh token, then its access token, at the
//! provider's revocation endpoint with the provider's client authentication. A revoked credential's
//! row is deleted (its journal stays); one the provider could not take now (network error, 5xx,
//! 429) stays disabled and revoke-pending, and is sent again by `retry_pending_revocations`.
//! Imports `domain`, `provider`, `store` and `refresh` (its `HttpError`).

use std::time::Instant;

use serde::Deserialize;

use super::http::{Exchange, Sender};
use crate::domain::{self, Backoff, Secret, sanitize};
use crate::provider::{ClientAuth, Provider, Providers};
use crate::refresh::HttpError;
use crate::store::{RevocationClaim, RevocationClaimed, RevocationResult, Store, StoreError};

/// How many pending revocations one retry pass claims.
const RETRY_BATCH: usize = 16;

/// Why `revoke` could not even ask the provider, or the provider refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no credential named {0:?}")]
    NotFound(String),
    #[error(
        "credential {0:?} is being refreshed by another process right now; try again in a moment"
    )]
    Busy(String),
    #[error("credential {credential:?}: its provider {provider} is not configured")]
    ProviderMissing {
        credential: String,
        provider: String,
    },
    #[error(
        "provider {0} has no revocation_url; add it to [providers.{0}] (the credential was left as it was)"
    )]
    NoRevocationUrl(String),
    #[error("the revocation endpoint refused: {0} (the credential was left as it was)")]
    Refused(String),
    #[error("storing the revocation failed: {0}")]
    Store(#[from] StoreError),
}

impl RevokeError {
    /// Whether the configuration is at fault.
    #[must_use]
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::ProviderMissing { .. } | Self::NoRevocationUrl(_)
        )
    }
}

/// How `revoke_named` ended when it reached the provider.
#[derive(Debug)]
pub enum Revoked {
    /// Revoked at the provider; the row is deleted.
    Done,
    /// Not revoked yet: the row is disabled and revoke-pending until a retry succeeds.
    Pending { reason: String },
}

/// What one pass of `retry_pending_revocations` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetrySummary {
    pub revoked: usize,
    pub still_pending: usize,
}

/// Sends revocations for every configured provider.
pub struct Revoker {
    sender: Sender,
    providers: Providers,
    backoff: Backoff,
    /// Seconds a claim on a credential lasts (`Settings::lease`).
    lease: i64,
    /// Identifies this process's leases.
    owner: String,
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

/// An RFC 6749 §5.2 error body, as revocation endpoints send it.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    error_description: Option<String>,
}

impl Revoker {
    /// Revokes at `providers`' revocation endpoints; a revocation the provider cannot take now is
    /// retried after `backoff`; `lease` (seconds, `Settings::lease`) bounds each claim.
    #[must_use]
    pub fn new(providers: Providers, sender: Sender, backoff: Backoff, lease: i64) -> Self {
        let owner = crate::holder::Holder::this_process().to_string();
        Self {
            sender,
            providers,
            backoff,
            lease,
            owner,
        }
    }

    /// Revokes credential `name`: claims it (no refresh may be in flight), revokes its tokens and
    /// deletes it, or leaves it revoke-pending when the provider cannot take it now.
    pub async fn revoke_named(&self, store: &Store, name: &str) -> Result<Revoked, RevokeError> {
        let now = domain::now();
        let claim = match store
            .claim_for_revocation(name, &self.owner, now, now + self.lease)
            .await?
        {
            RevocationClaimed::Claimed(claim) => claim,
            RevocationClaimed::NotFound => return Err(RevokeError::NotFound(name.to_owned())),
            RevocationClaimed::Busy => return Err(RevokeError::Busy(name.to_owned())),
        };
        let target = match self.target(&claim) {
            Ok(target) => target,
            Err(e) => {
                store.release_revocation(&claim, &self.owner).await?;
                return Err(e);
            }
        };
        match self.settle(store, &claim, target, "manual").await? {
            Settled::Revoked => Ok(Revoked::Done),
            Settled::Pending(reason) => Ok(Revoked::Pending { reason }),
            Settled::Refused(reason) => Err(RevokeError::Refused(reason)),
        }
    }

    fn target(&self, claim: &RevocationClaim) -> Result<(&Provider, &str), RevokeError> {
        let provider =
            self.providers
                .get(&claim.provider)
                .ok_or_else(|| RevokeError::ProviderMissing {
                    credential: claim.name.clone(),
                    provider: claim.provider.clone(),
                })?;
        let url = provider
            .revocation_url
            .as_deref()
            .ok_or_else(|| RevokeError::NoRevocationUrl(claim.provider.clone()))?;
        Ok((provider, url))
    }

    /// Sends the revocations of a claimed credential and stores how they ended.
    async fn settle(
        &self,
        store: &Store,
        claim: &RevocationClaim,
        (provider, url): (&Provider, &str),
        trigger: &str,
    ) -> Result<Settled, StoreError> {
        let started = Instant::now();
        let mut last_status = None;
        let mut outcome = TokenRevocation::Done;
        // The refresh token first: revoking it ends the grant at most providers.
        for (token, hint) in [
            (&claim.refresh_token, "refresh_token"),
            (&claim.access_token, "access_token"),
        ] {
            let Some(token) = token else { continue };
            let (result, status) = self.revoke_token(provider, url, token, hint).await;
            last_status = status.or(last_status);
            match result {
                TokenRevocation::Done => {}
                other => {
                    outcome = other;
                    break;
                }
            }
        }
        let now = domain::now();
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (result, settled) = match &outcome {
            TokenRevocation::Done => (
                RevocationResult::Revoked {
                    http_status: last_status,
                },
                Settled::Revoked,
            ),
            TokenRevocation::Transient {
                reason,
                code,
                status,
                retry_after,
            } => {
                let failures = u32::try_from(claim.consecutive_failures)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                let delay = self
                    .backoff
                    .delay(failures, rand::random::<f64>(), *retry_after);
                (
                    RevocationResult::Pending {
                        next_attempt_at: now + delay,
                        last_error: reason,
                        error_code: code.as_deref(),
                        http_status: *status,
                    },
                    Settled::Pending(reason.clone()),
                )
            }
            TokenRevocation::Refused {
                reason,
                code,
                status,
            } => (
                RevocationResult::Refused {
                    last_error: reason,
                    error_code: code.as_deref(),
                    http_status: *status,
                },
                Settled::Refused(reason.clone()),
            ),
        };
        store
            .settle_revocation(claim, &self.owner, trigger, now, duration_ms, result)
            .await?;
        Ok(settled)
    }

    /// Revokes one token (RFC 7009 §2.1) and classifies the answer.
    async fn revoke_token(
        &self,
        provider: &Provider,
        url: &str,
        token: &Secret,
        hint: &str,
    ) -> (TokenRevocation, Option<u16>) {
        let assertion = match provider.client_assertion(domain::now()) {
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
        let mut form: Vec<(&str, &str)> =
            vec![("token", token.expose()), ("token_type_hint", hint)];
        let mut basic = None;
        match &provider.auth {
            ClientAuth::SecretBasic(secret) => {
                basic = Some((provider.client_id.as_str(), secret.expose()));
            }
            ClientAuth::SecretPost(secret) => {
                form.push(("client_id", &provider.client_id));
                form.push(("client_secret", secret.expose()));
            }
            ClientAuth::None => form.push(("client_id", &provider.client_id)),
            ClientAuth::PrivateKeyJwt { .. } => {
                form.push(("client_id", &provider.client_id));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                if let Some(jwt) = &assertion {
                    form.push(("client_assertion", jwt.expose()));
                }
            }
        }
        let answer = self.sender.post_form(url, &form, basic).await;
        let status = answer.as_ref().ok().and_then(|e| e.status);
        (classify(answer, hint, &[token]), status)
    }
}

/// What `settle` stored.
enum Settled {
    Revoked,
    Pending(String),
    Refused(String),
}

/// Sends the revocations that are pending and due again; each is deleted once revoked. Call it
/// from the sweep (it claims with its own lease owner, so sweeps and `revoke` never collide).
pub async fn retry_pending_revocations(
    revoker: &Revoker,
    store: &Store,
) -> Result<RetrySummary, StoreError> {
    let mut summary = RetrySummary::default();
    loop {
        let now = domain::now();
        let claims = store
            .claim_pending_revocations(&revoker.owner, now, now + revoker.lease, RETRY_BATCH)
            .await?;
        if claims.is_empty() {
            return Ok(summary);
        }
        for claim in claims {
            let settled = match revoker.target(&claim) {
                Ok(target) => revoker.settle(store, &claim, target, "schedule").await?,
                Err(e) => {
                    // Configuration changed since: keep it pending, retry after the longest backoff.
                    let reason = e.to_string();
                    let result = RevocationResult::Pending {
                        next_attempt_at: now + revoker.backoff.cap,
                        last_error: &reason,
                        error_code: None,
                        http_status: None,
                    };
                    store
                        .settle_revocation(&claim, &revoker.owner, "schedule", now, 0, result)
                        .await?;
                    Settled::Pending(reason)
                }
            };
            match settled {
                Settled::Revoked => {
                    tracing::info!(credential = %claim.name, provider = %claim.provider, "pending revocation done; credential deleted");
                    summary.revoked += 1;
                }
                Settled::Pending(reason) | Settled::Refused(reason) => {
                    tracing::warn!(credential = %claim.name, provider = %claim.provider, %reason, "revocation still pending");
                    summary.still_pending += 1;
                }
            }
        }
    }
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
                reason: format!("revocation endpoint: {e}"),
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
    let (code, described) = match serde_json::from_slice::<ErrorBody>(&exchange.body) {
        Ok(ErrorBody {
            error,
            error_description,
        }) => {
            let described = match error_description {
                Some(d) => format!("{error}: {d}"),
                None => error.clone(),
            };
            (
                Some(sanitize(&error, secrets)),
                sanitize(&described, secrets),
            )
        }
        Err(_) => (
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
