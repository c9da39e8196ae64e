//! The sweep's transactions: claim due credentials under a lease and journal each attempt before
//! its request; store the outcome and complete the journal in one transaction; release unused
//! claims. The SQL is the backends'; here each claimed refresh token is opened and each new token
//! sealed.

use sqlx::FromRow;
use tokio::sync::oneshot;

use super::seal::{Column, Place, Sealer};
use super::sent::MarkJob;
use super::writer::{Job, StoreJob};
use super::{Store, StoreError};
use crate::domain::{
    Claimed, GrantType, Interrupted, Outcome, Secret, Status, TokenSet, Trigger, UnixTime,
    Unreadable,
};

/// A claimed row, as the backends' claims return it.
#[derive(FromRow)]
pub(super) struct ClaimRow {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) provider: String,
    grant_type: String,
    scopes: Option<String>,
    /// As stored: sealed text, or plaintext.
    refresh_token: Option<Secret>,
    /// The refresh token opened by [`ClaimRow::open`].
    #[sqlx(skip)]
    opened: Option<Result<Secret, Unreadable>>,
    pub(super) access_token_expires_at: Option<i64>,
    consecutive_failures: i64,
    last_success_at: i64,
    refresh_token_expires_at: Option<i64>,
    lease_expires_at: i64,
    subject: Option<String>,
}

/// What `claim_by_name` found.
// Made once per manual refresh and matched at once: boxing the claim would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ClaimByName {
    Claimed(Claimed),
    NotFound,
    NotActive(Status),
    /// Another process holds the lease right now.
    Busy,
}

/// A successful refresh, ready to store.
#[derive(Debug)]
pub struct Refreshed<'a> {
    pub tokens: &'a TokenSet,
    pub refresh_due_at: UnixTime,
    pub http_status: Option<u16>,
    pub duration_ms: i64,
}

/// A failed attempt, ready to store.
#[derive(Debug)]
pub enum Failure<'a> {
    /// Retry at `next_attempt_at`.
    Retry {
        next_attempt_at: UnixTime,
        detail: FailureDetail<'a>,
    },
    /// The grant is dead: status needs_reauthorization, unless the refresh token changed meanwhile.
    Reauthorize { detail: FailureDetail<'a> },
}

/// What the journal and `last_error` record about a failure.
#[derive(Debug, Clone, Copy)]
pub struct FailureDetail<'a> {
    pub outcome: Outcome,
    pub last_error: &'a str,
    pub http_status: Option<u16>,
    pub error_code: Option<&'a str>,
    pub duration_ms: i64,
}

/// Whether a result was written to the credential row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Yes,
    /// The row's refresh token changed while the request was out (re-authorized, or refreshed by
    /// someone else): the row is left as it is, and this outcome only journaled.
    Superseded,
}

impl ClaimRow {
    /// Opens the stored refresh token. One that cannot be opened is never sent: the claim says
    /// why instead, and the sweep settles it.
    fn open(mut self, sealer: &Sealer) -> Self {
        let place = Place {
            id: self.id,
            name: &self.name,
            column: Column::RefreshToken,
        };
        self.opened = self.refresh_token.as_ref().map(|t| sealer.open(place, t));
        self
    }

    /// The opened refresh token, if there is one and it opened.
    pub(super) fn token(&self) -> Option<&Secret> {
        self.opened.as_ref().and_then(|t| t.as_ref().ok())
    }

    fn into_claimed(self, (attempt_id, interrupted): (i64, Option<Interrupted>)) -> Claimed {
        let (refresh_token, unreadable) = match self.opened {
            Some(Ok(token)) => (Some(token), None),
            Some(Err(why)) => (None, Some(why)),
            None => (None, None),
        };
        Claimed {
            id: self.id,
            grant_type: self.grant_type.parse().unwrap_or(GrantType::RefreshToken),
            name: self.name,
            provider: self.provider,
            scopes: self.scopes,
            refresh_token,
            stored_refresh_token: self.refresh_token,
            unreadable,
            access_token_expires_at: self.access_token_expires_at,
            consecutive_failures: u32::try_from(self.consecutive_failures).unwrap_or(u32::MAX),
            attempt_id,
            interrupted,
            last_success_at: self.last_success_at,
            refresh_token_expires_at: self.refresh_token_expires_at,
            lease_expires_at: self.lease_expires_at,
            subject: self.subject,
        }
    }
}

impl Store {
    /// Claims up to `limit` due credentials for `owner` until `lease_until` and journals an attempt
    /// for each, in one transaction. Only credentials due before `sweep_start` are claimed; since a
    /// refresh never sets a due time earlier than itself, one sweep refreshes each at most once.
    /// The credentials in `skip` are left alone (a live process's request is out on them).
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_due(
        &self,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        limit: usize,
        sweep_start: UnixTime,
        trigger: Trigger,
        skip: &[i64],
    ) -> Result<Vec<Claimed>, StoreError> {
        let open = |row: ClaimRow| row.open(&self.sealer);
        let rows = self
            .db
            .claim_due(
                owner,
                now,
                lease_until,
                limit,
                sweep_start,
                trigger,
                &open,
                skip,
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(row, attempt)| row.into_claimed(attempt))
            .collect())
    }

    /// Claims one credential by name, due or not (a manual refresh); one in `skip` is `Busy`.
    pub async fn claim_by_name(
        &self,
        name: &str,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        skip: &[i64],
    ) -> Result<ClaimByName, StoreError> {
        let open = |row: ClaimRow| row.open(&self.sealer);
        let found = self
            .db
            .claim_by_name(name, owner, now, lease_until, &open, skip)
            .await?;
        Ok(match found {
            Ok((row, attempt)) => ClaimByName::Claimed(row.into_claimed(attempt)),
            Err(None) => ClaimByName::NotFound,
            Err(Some(s)) => match s.parse::<Status>() {
                Ok(Status::Active) => ClaimByName::Busy,
                Ok(other) => ClaimByName::NotActive(other),
                Err(_) => ClaimByName::NotActive(Status::Disabled),
            },
        })
    }

    /// Marks the claimed attempt's request sent, immediately before it goes out: `false` when
    /// another process took the claim over meanwhile, and then it must not go out.
    pub async fn mark_sent(&self, claimed: &Claimed, now: UnixTime) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = MarkJob {
            attempt_id: claimed.attempt_id,
            now,
            reply,
        };
        if self.jobs.send(Job::Mark(job)).is_err() {
            return Err(StoreError::Sql(sqlx::Error::PoolClosed));
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Sql(sqlx::Error::PoolClosed)))
    }

    /// Gives the claim back to the live process that made `attempt`, whose request is out: its
    /// journal entry pending again and the lease its holder's, as before this claim.
    pub async fn give_back(
        &self,
        claimed: &Claimed,
        owner: &str,
        attempt: &Interrupted,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let Some(holder) = attempt.holder.as_deref() else {
            return self.release(claimed, owner).await;
        };
        self.db
            .give_back(
                claimed.id,
                owner,
                claimed.attempt_id,
                attempt.attempt_id,
                holder,
                now,
            )
            .await
    }

    /// Keeps the sent request of the interrupted attempt this claim followed (if it was sent)
    /// pending, after this claim ended without sending anything (given back, or a setback before
    /// the request): the next claim weighs it again, instead of taking the refresh token for one
    /// never presented.
    pub async fn keep_interrupted_pending(&self, claimed: &Claimed) -> Result<(), StoreError> {
        match &claimed.interrupted {
            Some(attempt) if attempt.sent => self.db.keep_pending(attempt.attempt_id).await,
            _ => Ok(()),
        }
    }

    /// Stores new tokens and completes the journal entry, in one transaction. The row is updated
    /// only if it still holds the refresh token that was sent (compare-and-swap). The transaction
    /// is shared with the other outcomes waiting at that moment (group commit, see `writer`): one
    /// commit for all of them, and nothing is reported stored before its commit.
    pub async fn store_refreshed(
        &self,
        claimed: &Claimed,
        owner: &str,
        now: UnixTime,
        r: &Refreshed<'_>,
    ) -> Result<Stored, StoreError> {
        let (job, answer) = self.store_job(claimed, owner, now, r);
        if self.jobs.send(Job::Store(job)).is_err() {
            return Err(StoreError::Sql(sqlx::Error::PoolClosed));
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Sql(sqlx::Error::PoolClosed)))
    }

    /// The group writer's job for a successful refresh, and where its answer arrives.
    fn store_job(
        &self,
        claimed: &Claimed,
        owner: &str,
        now: UnixTime,
        r: &Refreshed<'_>,
    ) -> (StoreJob, oneshot::Receiver<Result<Stored, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let place = |column| Place {
            id: claimed.id,
            name: &claimed.name,
            column,
        };
        // Sealed here, on the refreshing task, so the group writer only binds text. The refresh
        // token is written on every refresh, the unchanged one too: re-sealed under the current key.
        let refresh_token = r
            .tokens
            .refresh_token
            .as_ref()
            .or(claimed.refresh_token.as_ref());
        let job = StoreJob {
            credential_id: claimed.id,
            attempt_id: claimed.attempt_id,
            stored_refresh_token: claimed.stored_refresh_token.clone(),
            rotated: r
                .tokens
                .refresh_token
                .as_ref()
                .is_some_and(|new| Some(new) != claimed.refresh_token.as_ref()),
            refresh_token: refresh_token
                .map(|t| self.sealer.to_stored(place(Column::RefreshToken), t)),
            access_token: self
                .sealer
                .to_stored(place(Column::AccessToken), &r.tokens.access_token),
            owner: owner.to_owned(),
            now,
            tokens: r.tokens.clone(),
            refresh_due_at: r.refresh_due_at,
            http_status: r.http_status,
            duration_ms: r.duration_ms,
            reply,
        };
        (job, answer)
    }

    /// Stores a failed attempt and completes its journal entry, in one transaction.
    pub async fn store_failure(
        &self,
        claimed: &Claimed,
        owner: &str,
        now: UnixTime,
        failure: &Failure<'_>,
    ) -> Result<Stored, StoreError> {
        let stored = claimed.stored_refresh_token.as_ref();
        self.db
            .store_failure(claimed.id, stored, claimed.attempt_id, owner, now, failure)
            .await
    }

    /// Gives back a claim that was never attempted (shutdown), dropping its journal entry.
    pub async fn release(&self, claimed: &Claimed, owner: &str) -> Result<(), StoreError> {
        self.release_all(std::slice::from_ref(claimed), owner).await
    }

    /// Gives back claims that were never attempted, dropping their journal entries, in one
    /// transaction.
    pub async fn release_all(&self, claimed: &[Claimed], owner: &str) -> Result<(), StoreError> {
        if claimed.is_empty() {
            return Ok(());
        }
        let claims: Vec<(i64, i64, Option<i64>)> = claimed
            .iter()
            .map(|c| {
                let followed = c.interrupted.as_ref().filter(|i| i.sent);
                (c.id, c.attempt_id, followed.map(|i| i.attempt_id))
            })
            .collect();
        self.db.release(&claims, owner).await
    }
}

#[cfg(test)]
mod tests;
