//! Revocations around the sweep: claim one credential (`revoke NAME`) or the pending ones (each
//! sweep) under the sweep's lease, revoke their tokens through `revoke`, and settle the outcome
//! into the store. Deciding what to store is [`settle`], a pure function. Imports `exit`, `domain`,
//! `provider`, `revoke` and `store`.

use std::time::Instant;

use tracing::{info, warn};

use super::Sweeper;
use crate::domain::{self, Backoff, UnixTime};
use crate::provider::Provider;
use crate::revoke::{RevocationOutcome, revoke};
use crate::store::{RevocationClaim, RevocationClaimed, RevocationResult, StoreError};

/// How many pending revocations one retry pass claims.
const RETRY_BATCH: usize = 16;

/// Why `revoke NAME` could not even ask the provider, or the provider refused.
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

/// How `revoke NAME` ended when it reached the provider.
#[derive(Debug)]
pub enum Revoked {
    /// Revoked at the provider; the row is deleted.
    Done,
    /// Not revoked yet: the row is disabled and revoke-pending until a retry succeeds.
    Pending { reason: String },
}

/// What one pass over the pending revocations did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetrySummary {
    pub revoked: usize,
    pub still_pending: usize,
}

/// What a settled revocation came to, for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Revoked,
    Pending(String),
    Refused(String),
}

/// What to store for a revocation `outcome` of a credential with `consecutive_failures` earlier
/// failures: revoked (the row goes), pending until a backoff (`jitter` in `[0, 1)`) that honours
/// the provider's Retry-After, or refused (the row stays as it was).
#[must_use]
pub fn settle(
    outcome: &RevocationOutcome,
    consecutive_failures: i64,
    backoff: Backoff,
    jitter: f64,
    now: UnixTime,
) -> (RevocationResult<'_>, Settled) {
    match outcome {
        RevocationOutcome::Revoked { http_status } => (
            RevocationResult::Revoked {
                http_status: *http_status,
            },
            Settled::Revoked,
        ),
        RevocationOutcome::Transient {
            reason,
            code,
            http_status,
            retry_after,
        } => {
            let failures = u32::try_from(consecutive_failures)
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            let delay = backoff.delay(failures, jitter, *retry_after);
            (
                RevocationResult::Pending {
                    next_attempt_at: now + delay,
                    last_error: reason,
                    error_code: code.as_deref(),
                    http_status: *http_status,
                },
                Settled::Pending(reason.clone()),
            )
        }
        RevocationOutcome::Refused {
            reason,
            code,
            http_status,
        } => (
            RevocationResult::Refused {
                last_error: reason,
                error_code: code.as_deref(),
                http_status: *http_status,
            },
            Settled::Refused(reason.clone()),
        ),
    }
}

impl Sweeper {
    /// Revokes credential `name`: claims it (no refresh may be in flight), revokes its tokens and
    /// deletes it, or leaves it revoke-pending when the provider cannot take it now.
    pub async fn revoke_named(&self, name: &str) -> Result<Revoked, RevokeError> {
        let inner = &self.inner;
        let now = domain::now();
        self.take_over_from_gone_holders(now).await?;
        let claimed = inner
            .store
            .claim_for_revocation(name, &inner.owner, now, now + inner.policy.lease)
            .await?;
        let claim = match claimed {
            RevocationClaimed::Claimed(claim) => claim,
            RevocationClaimed::NotFound => return Err(RevokeError::NotFound(name.to_owned())),
            RevocationClaimed::Busy => return Err(RevokeError::Busy(name.to_owned())),
        };
        let target = match self.revocation_target(&claim) {
            Ok(target) => target,
            Err(e) => {
                inner.store.release_revocation(&claim, &inner.owner).await?;
                return Err(e);
            }
        };
        match self.revoke_and_settle(&claim, target, "manual").await? {
            Settled::Revoked => Ok(Revoked::Done),
            Settled::Pending(reason) => Ok(Revoked::Pending { reason }),
            Settled::Refused(reason) => Err(RevokeError::Refused(reason)),
        }
    }

    /// Sends the revocations that are pending and due again; each is deleted once revoked.
    pub(super) async fn retry_pending_revocations(&self) -> Result<RetrySummary, StoreError> {
        let inner = &self.inner;
        let mut summary = RetrySummary::default();
        loop {
            let now = domain::now();
            let claims = inner
                .store
                .claim_pending_revocations(&inner.owner, now, now + inner.policy.lease, RETRY_BATCH)
                .await?;
            if claims.is_empty() {
                return Ok(summary);
            }
            for claim in claims {
                let settled = match self.revocation_target(&claim) {
                    Ok(target) => self.revoke_and_settle(&claim, target, "schedule").await?,
                    Err(e) => {
                        // The configuration changed since: keep it pending, after the longest backoff.
                        let reason = e.to_string();
                        let result = RevocationResult::Pending {
                            next_attempt_at: now + inner.policy.backoff.cap,
                            last_error: &reason,
                            error_code: None,
                            http_status: None,
                        };
                        inner
                            .store
                            .settle_revocation(&claim, &inner.owner, "schedule", now, 0, result)
                            .await?;
                        Settled::Pending(reason)
                    }
                };
                match settled {
                    Settled::Revoked => {
                        info!(credential = %claim.name, provider = %claim.provider, "pending revocation done; credential deleted");
                        summary.revoked += 1;
                    }
                    Settled::Pending(reason) | Settled::Refused(reason) => {
                        warn!(credential = %claim.name, provider = %claim.provider, %reason, "revocation still pending");
                        summary.still_pending += 1;
                    }
                }
            }
        }
    }

    /// The claimed credential's provider and its revocation endpoint.
    fn revocation_target(&self, claim: &RevocationClaim) -> Result<(&Provider, &str), RevokeError> {
        let provider = self.inner.providers.get(&claim.provider).ok_or_else(|| {
            RevokeError::ProviderMissing {
                credential: claim.name.clone(),
                provider: claim.provider.clone(),
            }
        })?;
        let url = provider
            .revocation_url
            .as_deref()
            .ok_or_else(|| RevokeError::NoRevocationUrl(claim.provider.clone()))?;
        Ok((provider, url))
    }

    /// Revokes a claimed credential's tokens and stores how that ended.
    async fn revoke_and_settle(
        &self,
        claim: &RevocationClaim,
        (provider, url): (&Provider, &str),
        trigger: &str,
    ) -> Result<Settled, StoreError> {
        let inner = &self.inner;
        let started = Instant::now();
        let outcome = revoke(
            inner.refresher.transport(),
            provider,
            url,
            claim.refresh_token.as_ref(),
            claim.access_token.as_ref(),
            domain::now(),
        )
        .await;
        let now = domain::now();
        let duration_ms = super::elapsed_ms(started);
        let (result, settled) = settle(
            &outcome,
            claim.consecutive_failures,
            inner.policy.backoff,
            rand::random::<f64>(),
            now,
        );
        inner
            .store
            .settle_revocation(claim, &inner.owner, trigger, now, duration_ms, result)
            .await?;
        Ok(settled)
    }
}

impl crate::exit::ExitStatus for RevokeError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Store(e) => e.exit_code(),
            Self::NotFound(_) => crate::exit::NOT_FOUND,
            e if e.is_configuration() => crate::exit::CONFIG,
            _ => crate::exit::REFRESH_FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: 30,
        cap: 3600,
    };

    #[test]
    fn revoked_deletes_and_keeps_the_status() {
        let outcome = RevocationOutcome::Revoked {
            http_status: Some(200),
        };
        let (result, settled) = settle(&outcome, 0, BACKOFF, 0.5, 1000);
        assert!(matches!(
            result,
            RevocationResult::Revoked {
                http_status: Some(200)
            }
        ));
        assert_eq!(settled, Settled::Revoked);
    }

    #[test]
    fn transient_waits_a_growing_backoff_and_at_least_retry_after() {
        let outcome = |retry_after| RevocationOutcome::Transient {
            reason: "revocation endpoint answered 503: down".to_owned(),
            code: None,
            http_status: Some(503),
            retry_after,
        };
        let first = outcome(None);
        let (
            RevocationResult::Pending {
                next_attempt_at, ..
            },
            settled,
        ) = settle(&first, 0, BACKOFF, 0.999, 1000)
        else {
            panic!("not pending");
        };
        assert!(
            (1001..=1030).contains(&next_attempt_at),
            "{next_attempt_at}"
        );
        assert_eq!(
            settled,
            Settled::Pending("revocation endpoint answered 503: down".into())
        );
        let (
            RevocationResult::Pending {
                next_attempt_at, ..
            },
            _,
        ) = settle(&first, 3, BACKOFF, 0.999, 1000)
        else {
            panic!("not pending");
        };
        assert!(
            next_attempt_at > 1030,
            "grows with failures: {next_attempt_at}"
        );
        let patient = outcome(Some(600));
        let (
            RevocationResult::Pending {
                next_attempt_at, ..
            },
            _,
        ) = settle(&patient, 0, BACKOFF, 0.0, 1000)
        else {
            panic!("not pending");
        };
        assert_eq!(next_attempt_at, 1600, "Retry-After honoured");
    }

    #[test]
    fn refused_leaves_the_row_and_says_why() {
        let outcome = RevocationOutcome::Refused {
            reason: "revocation endpoint answered 401: invalid_client".to_owned(),
            code: Some("invalid_client".to_owned()),
            http_status: Some(401),
        };
        let (result, settled) = settle(&outcome, 2, BACKOFF, 0.5, 1000);
        assert!(matches!(
            result,
            RevocationResult::Refused {
                error_code: Some("invalid_client"),
                http_status: Some(401),
                ..
            }
        ));
        assert!(matches!(settled, Settled::Refused(r) if r.contains("invalid_client")));
    }
}
