//! One claimed credential: what an interrupted attempt before it allows (`takeover`), its
//! request once the provider's limits let it go and the one check before it is sent, the outcome
//! settled (`settle`), stored and logged (`record`).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::settle::{Action, Setback};
use super::takeover::{self, Takeover};
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
        self.handle(claimed, Some(slot)).await
    }

    /// Refreshes one claimed credential and stores the outcome; `None` when the claim is given
    /// back unsent (too little of it left, taken over meanwhile, or left to the live process
    /// whose request is out). `slot`, its place in the limits, is given up as soon as the
    /// request is answered: storing the outcome is no request.
    #[tracing::instrument(skip_all, fields(credential = %claimed.name, provider = %claimed.provider))]
    pub(super) async fn handle(
        &self,
        claimed: Claimed,
        slot: Option<limits::Slot>,
    ) -> Result<Option<Handled>, StoreError> {
        let started = Instant::now();
        let now = domain::now();
        let provider = match self.provider_for(&claimed, now) {
            Ok(provider) => provider,
            Err(setback) => return self.unsent(&claimed, setback, started).await,
        };
        if let Some(done) = self
            .after_interruption(&claimed, provider, now, started)
            .await?
        {
            return Ok(done);
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
                return self.unsent(&claimed, setback, started).await;
            }
        };
        if !self.may_send(&claimed).await? {
            return Ok(None);
        }
        let Attempt {
            outcome,
            http_status,
        } = self.inner.refresher.request(provider, grant, now).await;
        drop(slot);
        let policy = &self.inner.policy;
        let handled = match settle::setback(
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
        };
        handled.map(Some)
    }

    /// Stores a setback decided before any request, keeping a sent interrupted attempt before
    /// this claim pending for the next one to weigh.
    async fn unsent(
        &self,
        claimed: &Claimed,
        setback: Setback,
        started: Instant,
    ) -> Result<Option<Handled>, StoreError> {
        let handled = self.store_setback(claimed, setback, started).await?;
        self.inner.store.keep_interrupted_pending(claimed).await?;
        Ok(Some(handled))
    }

    /// What an interrupted attempt before this one allows (`takeover`): `None` to go on and
    /// send; otherwise what the claim came to without a request — given back to the live process
    /// whose request is out, or flagged for re-authorization.
    async fn after_interruption(
        &self,
        claimed: &Claimed,
        provider: &Provider,
        now: UnixTime,
        started: Instant,
    ) -> Result<Option<Option<Handled>>, StoreError> {
        let Some(attempt) = &claimed.interrupted else {
            return Ok(None);
        };
        let owner = self.judge_owner(attempt.holder.as_deref());
        match takeover::decide(
            owner,
            attempt,
            claimed.grant_type,
            &provider.name,
            provider.refresh_token_reuse,
            now,
        ) {
            Takeover::Leave => {
                warn!(
                    "the process refreshing this credential is alive with its request out; left to it"
                );
                let inner = &self.inner;
                inner
                    .store
                    .give_back(claimed, &inner.owner, attempt, now)
                    .await?;
                Ok(Some(None))
            }
            Takeover::Send { repeat: true } => {
                warn!(
                    refresh_token_reuse = %provider.refresh_token_reuse,
                    "an earlier refresh of this credential was interrupted after its request went out; the provider accepts its refresh token again, so it is sent once more"
                );
                Ok(None)
            }
            Takeover::Send { repeat: false } => {
                warn!(
                    "an earlier refresh of this credential was interrupted before presenting a refresh token; trying again"
                );
                Ok(None)
            }
            Takeover::Flag { reason } => {
                let setback =
                    Setback::new(Action::Reauthorize, Outcome::NeedsReauthorization, reason);
                self.store_setback(claimed, setback, started)
                    .await
                    .map(|h| Some(Some(h)))
            }
        }
    }

    /// The one check immediately before a request: this process's claim must still cover the
    /// request and storing its outcome (after it runs out, a process that was stopped sends
    /// nothing it claimed), and a refresh token goes out only once its journal entry is marked
    /// sent — which fails if another process took the claim over meanwhile. The claim is given
    /// back when it may not go.
    async fn may_send(&self, claimed: &Claimed) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let needed = inner.policy.request_timeout + inner.policy.store_window;
        let now = domain::now();
        if now + needed > claimed.lease_expires_at {
            warn!(
                "too little of the claim is left to send the request and store its outcome (the process waited for a rate or concurrency limit, or was stopped); given back unsent"
            );
            inner.store.release(claimed, &inner.owner).await?;
            return Ok(false);
        }
        if claimed.grant_type != GrantType::RefreshToken {
            return Ok(true);
        }
        match inner.store.mark_sent(claimed, now).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                warn!("another process took this credential over meanwhile; nothing sent");
                Ok(false)
            }
            Err(e) => {
                warn!(error = %e, "could not mark the request sent; given back unsent");
                if let Err(e) = inner.store.release(claimed, &inner.owner).await {
                    warn!(error = %e, "could not give back the claim; it runs out by itself");
                }
                Ok(false)
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
