//! The sweep's transactions: claim due credentials under a lease and journal each attempt before
//! its request; store the outcome and complete the journal in one transaction; release unused claims.

use sqlx::FromRow;

use super::seal::{Column, Place, Sealer};
use super::writer::StoreJob;
use super::{Store, StoreError};
use crate::domain::{Claimed, GrantType, Secret, Status, TokenSet, Trigger, UnixTime, Unreadable};

/// The columns a claim returns, as `ClaimRow` reads them.
macro_rules! claim_returning {
    () => {
        " RETURNING id, name, provider, grant_type, scopes, refresh_token, access_token_expires_at, \
          consecutive_failures, COALESCE(last_refreshed_at, created_at) AS last_success_at, \
          refresh_token_expires_at, lease_expires_at, subject"
    };
}

#[derive(FromRow)]
struct ClaimRow {
    id: i64,
    name: String,
    provider: String,
    grant_type: String,
    scopes: Option<String>,
    /// As stored: sealed text, or plaintext.
    refresh_token: Option<Secret>,
    /// The refresh token opened by [`ClaimRow::open`].
    #[sqlx(skip)]
    opened: Option<Result<Secret, Unreadable>>,
    access_token_expires_at: Option<i64>,
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
    pub outcome: &'a str,
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
    fn token(&self) -> Option<&Secret> {
        self.opened.as_ref().and_then(|t| t.as_ref().ok())
    }

    fn into_claimed(self, (attempt_id, after_interruption): (i64, bool)) -> Claimed {
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
            after_interruption,
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
    pub async fn claim_due(
        &self,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        limit: usize,
        sweep_start: UnixTime,
        trigger: Trigger,
    ) -> Result<Vec<Claimed>, StoreError> {
        const SQL: &str = concat!(
            "UPDATE oauth_credential SET lease_owner = ?1, lease_expires_at = ?2 \
            WHERE id IN (SELECT id FROM oauth_credential \
                WHERE status = 'active' AND refresh_due_at < ?5 AND next_attempt_at <= ?3 \
                  AND (lease_expires_at IS NULL OR lease_expires_at <= ?3) \
                ORDER BY refresh_due_at LIMIT ?4)",
            claim_returning!()
        );
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows: Vec<ClaimRow> = sqlx::query_as(SQL)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(sweep_start)
            .fetch_all(&mut *tx)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let row = row.open(&self.sealer);
            let attempt = journal_start(&mut tx, &row, owner, now, trigger).await?;
            claimed.push(row.into_claimed(attempt));
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Claims one credential by name, due or not (a manual refresh).
    pub async fn claim_by_name(
        &self,
        name: &str,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
    ) -> Result<ClaimByName, StoreError> {
        const SQL: &str = concat!(
            "UPDATE oauth_credential SET lease_owner = ?1, lease_expires_at = ?2 \
            WHERE name = ?3 AND status = 'active' AND (lease_expires_at IS NULL OR lease_expires_at <= ?4)",
            claim_returning!()
        );
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<ClaimRow> = sqlx::query_as(SQL)
            .bind(owner)
            .bind(lease_until)
            .bind(name)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            let status: Option<(String,)> =
                sqlx::query_as("SELECT status FROM oauth_credential WHERE name = ?1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(match status {
                None => ClaimByName::NotFound,
                Some((s,)) => match s.parse::<Status>() {
                    Ok(Status::Active) => ClaimByName::Busy,
                    Ok(other) => ClaimByName::NotActive(other),
                    Err(_) => ClaimByName::NotActive(Status::Disabled),
                },
            });
        };
        let row = row.open(&self.sealer);
        let attempt = journal_start(&mut tx, &row, owner, now, Trigger::Manual).await?;
        tx.commit().await?;
        Ok(ClaimByName::Claimed(row.into_claimed(attempt)))
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
        let (reply, answer) = tokio::sync::oneshot::channel();
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
        if self.jobs.send(job).is_err() {
            return Err(StoreError::Sql(sqlx::Error::PoolClosed));
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Sql(sqlx::Error::PoolClosed)))
    }

    /// Stores a failed attempt and completes its journal entry, in one transaction.
    pub async fn store_failure(
        &self,
        claimed: &Claimed,
        owner: &str,
        now: UnixTime,
        failure: &Failure<'_>,
    ) -> Result<Stored, StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (detail, updated) = match failure {
            Failure::Retry {
                next_attempt_at,
                detail,
            } => {
                let n = sqlx::query(
                    "UPDATE oauth_credential SET consecutive_failures = consecutive_failures + 1, \
                        next_attempt_at = ?1, last_error = ?2, updated_at = ?3, lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = ?4 AND lease_owner = ?5",
                )
                .bind(next_attempt_at)
                .bind(detail.last_error)
                .bind(now)
                .bind(claimed.id)
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                (detail, n)
            }
            Failure::Reauthorize { detail } => {
                // Race-aware: a refresh token that changed while the request was out is not dead.
                let n = sqlx::query(
                    "UPDATE oauth_credential SET status = 'needs_reauthorization', \
                        consecutive_failures = consecutive_failures + 1, last_error = ?1, updated_at = ?2, \
                        lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = ?3 AND refresh_token IS ?4",
                )
                .bind(detail.last_error)
                .bind(now)
                .bind(claimed.id)
                .bind(&claimed.stored_refresh_token)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                (detail, n)
            }
        };
        let stored = if updated == 1 {
            Stored::Yes
        } else {
            Stored::Superseded
        };
        if stored == Stored::Superseded {
            release_lease(&mut tx, claimed.id, owner).await?;
        }
        sqlx::query(
            "UPDATE token_rotation SET finished_at = ?1, duration_ms = ?2, outcome = ?3, http_status = ?4, \
                error_code = ?5, error_description = ?6 WHERE id = ?7",
        )
        .bind(now)
        .bind(detail.duration_ms)
        .bind(if stored == Stored::Yes { detail.outcome } else { "superseded" })
        .bind(detail.http_status)
        .bind(detail.error_code)
        .bind(detail.last_error)
        .bind(claimed.attempt_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Gives back a claim that was never attempted (shutdown), dropping its journal entry.
    pub async fn release(&self, claimed: &Claimed, owner: &str) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        release_lease(&mut tx, claimed.id, owner).await?;
        sqlx::query("DELETE FROM token_rotation WHERE id = ?1 AND outcome = 'pending'")
            .bind(claimed.attempt_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

pub(super) async fn release_lease(
    tx: &mut sqlx::SqliteConnection,
    id: i64,
    owner: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE oauth_credential SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?1 AND lease_owner = ?2")
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Journals an attempt before its request: what was sent, never the token itself. An earlier
/// attempt still pending belonged to a process that died (its lease ran out, or this claim could
/// not have happened): it is marked interrupted, and the new attempt knows it follows one.
async fn journal_start(
    tx: &mut sqlx::SqliteConnection,
    row: &ClaimRow,
    owner: &str,
    now: UnixTime,
    trigger: Trigger,
) -> Result<(i64, bool), StoreError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at, \
            old_expires_at, old_refresh_fingerprint) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
    )
    .bind(row.id)
    .bind(&row.name)
    .bind(&row.provider)
    .bind(trigger.as_str())
    .bind(owner)
    .bind(now)
    .bind(row.access_token_expires_at)
    .bind(row.token().map(Secret::fingerprint))
    .fetch_one(&mut *tx)
    .await?;
    let interrupted = sqlx::query(
        "UPDATE token_rotation SET outcome = 'interrupted', finished_at = ?1 \
         WHERE credential_id = ?2 AND outcome = 'pending' AND id <> ?3",
    )
    .bind(now)
    .bind(row.id)
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok((id, interrupted > 0))
}
