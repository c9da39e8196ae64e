//! Storing what an attempt came to: new tokens (retried while the claim lasts, since the provider
//! has already rotated), or a setback (backoff or re-authorization) — logged and alerted as
//! `settle` decided. Imports `alerts`, `domain` and `store`.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::settle::{self, Action, FailureWrite, Setback};
use super::{ErrorClass, Handled, STORE_ATTEMPTS, Sweeper, elapsed_ms};
use crate::alerts::Event;
use crate::domain::{self, Claimed, Outcome, TokenSet, UnixTime, Unreadable, iso8601};
use crate::store::{Failure, FailureDetail, Refreshed, StoreError, Stored};

/// Evaluates a store operation, again while the database is busy, so that an outcome is not
/// dropped because another process held the lock a little too long. `?`s the last error.
macro_rules! retrying {
    ($op:expr) => {{
        let mut attempt = 1;
        loop {
            match $op.await {
                Ok(v) => break v,
                Err(e) if attempt < STORE_ATTEMPTS => {
                    error!(error = %e, attempt, "storing the outcome failed; trying again");
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }};
}

impl Sweeper {
    /// Stores new tokens and logs the rotation.
    pub(super) async fn store_tokens(
        &self,
        claimed: &Claimed,
        tokens: &TokenSet,
        http_status: Option<u16>,
        started: Instant,
    ) -> Result<Handled, StoreError> {
        let inner = &self.inner;
        let finished = domain::now();
        let decided = settle::success(claimed, tokens, &inner.policy, finished);
        let duration_ms = elapsed_ms(started);
        let record = Refreshed {
            tokens,
            refresh_due_at: decided.refresh_due_at,
            http_status,
            duration_ms,
        };
        let stored = self
            .store_until_claim_ends(claimed, finished, &record)
            .await?;
        if stored == Stored::Superseded {
            warn!("credential changed while its refresh was out; the new tokens were not stored");
            return Ok(Handled::Superseded);
        }
        if decided.recovered {
            inner.alerter.fire(
                Event::Recovered,
                &claimed.name,
                &claimed.provider,
                "refreshed after failing",
            );
        }
        info!(expires_at = %iso8601(tokens.expires_at), refresh_token_rotated = decided.rotated, duration_ms, "access token refreshed");
        if let Some(short) = decided.short_lived
            && inner
                .warned_short_lived
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(claimed.id)
        {
            warn!(
                lifetime_secs = short.lifetime,
                longest_sweep_gap_secs = short.sweep_gap,
                "{short}"
            );
        }
        if let Some(expiring) = decided.expiring {
            let at = iso8601(expiring.at);
            warn!(refresh_token_expires_at = %at, "refresh token expires soon: authorize again before then");
            if expiring.alert {
                let reason = format!("refresh token expires at {at}");
                inner.alerter.fire(
                    Event::RefreshTokenExpiring,
                    &claimed.name,
                    &claimed.provider,
                    &reason,
                );
            }
        }
        Ok(Handled::Refreshed)
    }

    /// Stores new tokens, trying again while the database is busy for as long as this process's
    /// claim lasts: the provider has already rotated the refresh token, so giving up early would
    /// lose the only one that still works. Only when the claim is about to run out (another process
    /// could then claim the credential) does it give up, loudly; the journal entry stays pending
    /// and is resolved as an interrupted attempt.
    async fn store_until_claim_ends(
        &self,
        claimed: &Claimed,
        finished: UnixTime,
        record: &Refreshed<'_>,
    ) -> Result<Stored, StoreError> {
        const SAFETY_SECS: i64 = 5;
        let inner = &self.inner;
        let mut attempt: u32 = 1;
        loop {
            match inner
                .store
                .store_refreshed(claimed, &inner.owner, finished, record)
                .await
            {
                Ok(stored) => return Ok(stored),
                Err(e) if domain::now() + SAFETY_SECS < claimed.lease_expires_at => {
                    error!(error = %e, attempt, "storing new tokens failed; trying again while the claim lasts");
                    let pause = Duration::from_millis(250_u64 << attempt.min(4));
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => {
                    error!(error = %e, attempt, "new tokens could not be stored before the claim ran out; the credential may need re-authorization");
                    return Err(e);
                }
            }
        }
    }

    /// Logs and stores a failed or skipped attempt.
    pub(super) async fn store_setback(
        &self,
        claimed: &Claimed,
        setback: Setback,
        started: Instant,
    ) -> Result<Handled, StoreError> {
        let inner = &self.inner;
        if let Some(class) = ErrorClass::of(setback.outcome, setback.http_status) {
            inner.errors.count(&claimed.provider, class);
        }
        let now = domain::now();
        let decided = settle::failure(
            claimed,
            setback.action,
            &inner.policy,
            now,
            rand::random::<f64>(),
        );
        let Setback {
            action,
            outcome,
            reason,
            code,
            http_status,
        } = setback;
        let code = code.as_deref();
        let detail = FailureDetail {
            outcome,
            last_error: &reason,
            http_status,
            error_code: code,
            duration_ms: elapsed_ms(started),
        };
        let failure = match decided.write {
            FailureWrite::Retry { next_attempt_at } => {
                let next = iso8601(next_attempt_at);
                if matches!(action, Action::ClientRejected { .. }) {
                    error!(
                        error_code = code,
                        http_status, reason, "provider rejected the client configuration"
                    );
                } else if decided.failing {
                    error!(error_code = code, http_status, reason, consecutive_failures = decided.failures, next_attempt_at = %next, "credential is failing; retrying slowly");
                } else {
                    warn!(error_code = code, http_status, reason, next_attempt_at = %next, "refresh failed; will retry");
                }
                Failure::Retry {
                    next_attempt_at,
                    detail,
                }
            }
            FailureWrite::Reauthorize => {
                error!(
                    error_code = code,
                    http_status, reason, "refresh rejected; credential needs re-authorization"
                );
                Failure::Reauthorize { detail }
            }
        };
        match retrying!(
            inner
                .store
                .store_failure(claimed, &inner.owner, now, &failure)
        ) {
            Stored::Yes => {
                if let Some(event) = decided.event {
                    inner
                        .alerter
                        .fire(event, &claimed.name, &claimed.provider, &reason);
                }
                Ok(decided.handled)
            }
            Stored::Superseded => {
                info!(
                    "credential changed while its refresh was out; the failure does not apply to it"
                );
                Ok(Handled::Superseded)
            }
        }
    }
}

/// Why a refresh-token credential has nothing to send. A stored token that does not open is
/// never sent: one sealed under a key this process lacks waits (a newer configuration may have
/// it), one that is damaged will never open and needs re-authorization.
pub(super) fn unsendable(unreadable: Option<&Unreadable>) -> Setback {
    match unreadable {
        None => Setback::new(
            Action::Reauthorize,
            Outcome::NeedsReauthorization,
            "no refresh token is stored",
        ),
        Some(why @ Unreadable::UnknownKey(_)) => Setback::new(
            Action::Retry { not_before: None },
            Outcome::KeyMissing,
            format!("the stored refresh token {why}; it was not sent"),
        ),
        Some(why) => Setback::new(
            Action::Reauthorize,
            Outcome::NeedsReauthorization,
            format!("the stored refresh token {why}; it was not sent: authorize again"),
        ),
    }
}
