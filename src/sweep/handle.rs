//! One claimed credential: its request once the provider's limits let it go, the outcome
//! settled (`settle`), stored and logged (`record`).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::settle::{Action, Setback};
use super::{Handled, Sweeper, limits, record, settle};
use crate::domain::{self, Claimed, GrantType, Outcome, UnixTime, iso8601};
use crate::provider::Provider;
use crate::refresh::{Attempt, Grant};
use crate::store::StoreError;

impl Sweeper {
    /// [`Sweeper::handle`] once the provider's limits let the request go; `None` when the claim
    /// is given back unattempted instead: `cancel` fired while it waited (shutdown does not wait
    /// for a rate limit), or the wait took so long that the claim could run out before the
    /// outcome is stored (never sent late).
    pub(super) async fn handle_within_limits(
        &self,
        claimed: Claimed,
        cancel: &CancellationToken,
    ) -> Result<Option<Handled>, StoreError> {
        let inner = &self.inner;
        let slot = tokio::select! {
            // A slot free at once is taken even during shutdown: that request is in flight.
            biased;
            slot = inner.limits.acquire(&claimed.provider) => slot,
            () = cancel.cancelled() => {
                inner.store.release(&claimed, &inner.owner).await?;
                return Ok(None);
            }
        };
        let needed = inner.policy.request_timeout + inner.policy.store_window;
        if domain::now() + needed > claimed.lease_expires_at {
            warn!(credential = %claimed.name, "waited for the provider's rate or concurrency limit until too little of the claim was left; given back");
            inner.store.release(&claimed, &inner.owner).await?;
            return Ok(None);
        }
        self.handle(claimed, Some(slot)).await.map(Some)
    }

    /// Refreshes one claimed credential and stores the outcome. `slot`, its place in the limits,
    /// is given up as soon as the request is answered: storing the outcome is no request.
    #[tracing::instrument(skip_all, fields(credential = %claimed.name, provider = %claimed.provider))]
    pub(super) async fn handle(
        &self,
        claimed: Claimed,
        slot: Option<limits::Slot>,
    ) -> Result<Handled, StoreError> {
        let started = Instant::now();
        let now = domain::now();
        let provider = match self.provider_for(&claimed, now) {
            Ok(provider) => provider,
            Err(setback) => return self.store_setback(&claimed, setback, started).await,
        };
        if claimed.after_interruption {
            warn!(
                "an earlier refresh of this credential was interrupted; trying once more with the stored refresh token"
            );
        }
        let scopes = scopes_to_send(provider, &claimed);
        let grant = match (claimed.grant_type, &claimed.refresh_token) {
            (GrantType::ClientCredentials, _) => Grant::ClientCredentials {
                scopes: scopes.as_deref(),
            },
            // A fresh assertion each time; no refresh token is stored or needed.
            (GrantType::JwtBearer, _) => Grant::JwtBearer {
                subject: claimed.subject.as_deref(),
                scopes: scopes.as_deref(),
            },
            (GrantType::RefreshToken, Some(token)) => Grant::RefreshToken {
                token,
                scopes: scopes.as_deref(),
            },
            (GrantType::RefreshToken, None) => {
                let setback = record::unsendable(claimed.unreadable.as_ref());
                return self.store_setback(&claimed, setback, started).await;
            }
        };
        let Attempt {
            outcome,
            http_status,
        } = self.inner.refresher.request(provider, grant, now).await;
        drop(slot);
        let policy = &self.inner.policy;
        match settle::setback(
            &claimed,
            outcome,
            http_status,
            &provider.name,
            policy,
            domain::now(),
        ) {
            Ok(tokens) => {
                self.store_tokens(&claimed, &tokens, http_status, started)
                    .await
            }
            Err(setback) => {
                if let Action::ClientRejected { until } = setback.action {
                    self.inner
                        .rejected
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(provider.name.clone(), until);
                }
                self.store_setback(&claimed, setback, started).await
            }
        }
    }

    /// The credential's provider, unless it is not configured or is rejecting our client.
    pub(super) fn provider_for(
        &self,
        claimed: &Claimed,
        now: UnixTime,
    ) -> Result<&Arc<Provider>, Setback> {
        let Some(provider) = self.inner.providers.get(&claimed.provider) else {
            let reason = format!("provider {:?} is not configured", claimed.provider);
            return Err(Setback::new(
                Action::Retry { not_before: None },
                Outcome::ProviderMissing,
                reason,
            ));
        };
        if let Some(until) = self.rejected_until(&provider.name, now) {
            let reason = format!(
                "provider {} rejected the client configuration; not tried again before {}",
                provider.name,
                iso8601(until)
            );
            return Err(Setback::new(
                Action::ClientRejected { until },
                Outcome::ClientRejected,
                reason,
            ));
        }
        Ok(provider)
    }

    pub(super) fn rejected_until(&self, provider: &str, now: UnixTime) -> Option<UnixTime> {
        let rejected = self
            .inner
            .rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rejected.get(provider).copied().filter(|until| *until > now)
    }
}

/// The scopes to put in the request: always for client_credentials and jwt-bearer, on refresh
/// only when the provider wants them. The credential's own scopes win over the provider's.
pub(super) fn scopes_to_send(provider: &Provider, claimed: &Claimed) -> Option<String> {
    if claimed.grant_type == GrantType::RefreshToken && !provider.scope_on_refresh {
        return None;
    }
    claimed
        .scopes
        .clone()
        .or_else(|| (!provider.scopes.is_empty()).then(|| provider.scopes.join(" ")))
}
