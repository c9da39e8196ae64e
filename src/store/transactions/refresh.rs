//! Claiming due credentials, journaling each attempt, and storing what it brought: the group
//! writer applies many refreshes in one transaction.

use std::collections::{HashMap, HashSet};

use crate::domain::{Interrupted, Outcome, Secret, Trigger, UnixTime};
use crate::store::backend::Db;
use crate::store::claim::ClaimRow;
use crate::store::sent::MarkJob;
use crate::store::statement::{Conn, sql};
use crate::store::writer::{self, GROUP_MAX, Job, StoreJob};
use crate::store::{Failure, StoreError, Stored, batch};

/// A claim's journal entry, and the interrupted attempt it follows, if any.
pub(in crate::store) type Journaled = (i64, Option<Interrupted>);

/// What a claim by name found: the claimed row and its journal entry, or the credential's status
/// (`None`: no such credential).
pub(in crate::store) type NameClaim = Result<(ClaimRow, Journaled), Option<String>>;

impl Db {
    /// Claims up to `limit` due credentials and journals an attempt for each, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::store) async fn claim_due(
        &self,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        limit: usize,
        sweep_start: UnixTime,
        trigger: Trigger,
        open: &crate::store::Open<'_, ClaimRow>,
        skip: &[i64],
    ) -> Result<Vec<(ClaimRow, Journaled)>, StoreError> {
        let mut w = self.write().await?;
        let rows: Vec<ClaimRow> = sql(self.dialect().claim_due)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(sweep_start)
            .bind(batch::to_json(skip)?)
            .fetch_all(w.conn())
            .await?;
        let rows: Vec<ClaimRow> = rows.into_iter().map(open).collect();
        let claimed = journal_starts(w.conn(), rows, owner, now, trigger).await?;
        w.commit().await?;
        Ok(claimed)
    }

    /// Claims one active credential by name, due or not, and journals the attempt.
    pub(in crate::store) async fn claim_by_name(
        &self,
        name: &str,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        open: &crate::store::Open<'_, ClaimRow>,
        skip: &[i64],
    ) -> Result<NameClaim, StoreError> {
        let mut w = self.write().await?;
        let row: Option<ClaimRow> = sql(self.dialect().claim_by_name)
            .bind(owner)
            .bind(lease_until)
            .bind(name)
            .bind(now)
            .bind(batch::to_json(skip)?)
            .fetch_optional(w.conn())
            .await?;
        let Some(row) = row else {
            let status: Option<(String,)> =
                sql("SELECT status FROM oauth_credential WHERE name = $1")
                    .bind(name)
                    .fetch_optional(w.conn())
                    .await?;
            w.rollback().await?;
            return Ok(Err(status.map(|(s,)| s)));
        };
        let mut claimed =
            journal_starts(w.conn(), vec![open(row)], owner, now, Trigger::Manual).await?;
        w.commit().await?;
        claimed
            .pop()
            .map(Ok)
            .ok_or(StoreError::Sql(sqlx::Error::RowNotFound))
    }

    /// Stores a failed attempt and completes its journal entry, in one transaction.
    pub(in crate::store) async fn store_failure(
        &self,
        id: i64,
        stored_refresh_token: Option<&Secret>,
        attempt_id: i64,
        owner: &str,
        now: UnixTime,
        failure: &Failure<'_>,
    ) -> Result<Stored, StoreError> {
        let mut w = self.write().await?;
        let (detail, updated) = match failure {
            Failure::Retry {
                next_attempt_at,
                detail,
            } => {
                let n = sql(
                    "UPDATE oauth_credential SET consecutive_failures = consecutive_failures + 1, \
                        next_attempt_at = $1, last_error = $2, updated_at = $3, lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $4 AND lease_owner = $5",
                )
                .bind(next_attempt_at)
                .bind(detail.last_error)
                .bind(now)
                .bind(id)
                .bind(owner)
                .execute(w.conn())
                .await?
                ;
                (detail, n)
            }
            Failure::Reauthorize { detail } => {
                // Race-aware: a refresh token that changed while the request was out is not dead.
                let n = sql(
                    "UPDATE oauth_credential SET status = 'needs_reauthorization', \
                        consecutive_failures = consecutive_failures + 1, last_error = $1, updated_at = $2, \
                        lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $3 AND refresh_token IS NOT DISTINCT FROM $4",
                )
                .bind(detail.last_error)
                .bind(now)
                .bind(id)
                .bind(stored_refresh_token)
                .execute(w.conn())
                .await?
                ;
                (detail, n)
            }
        };
        let stored = if updated == 1 {
            Stored::Yes
        } else {
            Stored::Superseded
        };
        if stored == Stored::Superseded {
            release_lease(w.conn(), id, owner).await?;
        }
        sql(
            "UPDATE token_rotation SET finished_at = $1, duration_ms = $2, outcome = $3, http_status = $4, \
                error_code = $5, error_description = $6 WHERE id = $7",
        )
        .bind(now)
        .bind(detail.duration_ms)
        .bind(if stored == Stored::Yes { detail.outcome } else { Outcome::Superseded }.as_str())
        .bind(detail.http_status.map(i64::from))
        .bind(detail.error_code)
        .bind(detail.last_error)
        .bind(attempt_id)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(stored)
    }

    /// Gives back claims (credential and journal entry ids) that were never attempted, dropping
    /// their journal entries.
    ///
    /// Each claim may name the sent attempt it followed (interrupted by this claim): that one is
    /// made pending again, so that the next claim weighs its request instead of taking the
    /// refresh token for one never presented — unless this claim's entry was taken over meanwhile.
    pub(in crate::store) async fn release(
        &self,
        claims: &[(i64, i64, Option<i64>)],
        owner: &str,
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        for &(id, attempt_id, followed) in claims {
            release_lease(w.conn(), id, owner).await?;
            let dropped = sql("DELETE FROM token_rotation WHERE id = $1 AND outcome = 'pending'")
                .bind(attempt_id)
                .execute(w.conn())
                .await?;
            if let Some(sent) = followed.filter(|_| dropped == 1) {
                sql(
                    "UPDATE token_rotation SET outcome = 'pending', finished_at = NULL \
                     WHERE id = $1 AND outcome = 'interrupted'",
                )
                .bind(sent)
                .execute(w.conn())
                .await?;
            }
        }
        w.commit().await?;
        Ok(())
    }
}

/// Ends `owner`'s lease on credential `id`, if it still holds it.
pub(in crate::store) async fn release_lease(
    conn: Conn<'_>,
    id: i64,
    owner: &str,
) -> Result<(), StoreError> {
    sql(
        "UPDATE oauth_credential SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(())
}

/// An interrupted journal entry, as `JOURNAL_INTERRUPT` returns it: its id, its credential's, its
/// start, when it was sent (if it was), and its holder.
type InterruptedRow = (i64, i64, i64, Option<i64>, Option<String>);

/// Journals the claimed attempts before their requests, in two statements whatever their number:
/// what is sent, never the token itself. An earlier attempt still pending belonged to a process
/// that died or stopped (its lease ran out, or this claim could not have happened): it is marked
/// interrupted first, and the new attempt knows when it started and whether it was sent.
async fn journal_starts(
    mut conn: Conn<'_>,
    rows: Vec<ClaimRow>,
    owner: &str,
    now: UnixTime,
    trigger: Trigger,
) -> Result<Vec<(ClaimRow, Journaled)>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<batch::Started<'_>> = rows
        .iter()
        .map(|row| batch::Started {
            id: row.id,
            name: &row.name,
            provider: &row.provider,
            expires_at: row.access_token_expires_at,
            fingerprint: row.token().map(Secret::fingerprint),
        })
        .collect();
    let entries = batch::to_json(&entries)?;
    let dialect = conn.dialect();
    let mut interrupted: HashMap<i64, Interrupted> = HashMap::new();
    let found: Vec<InterruptedRow> = sql(dialect.journal_interrupt)
        .bind(now)
        .bind(&entries)
        .fetch_all(conn.reborrow())
        .await?;
    for (attempt_id, credential, started_at, sent_at, holder) in found {
        // Normally one per credential; of several, the latest, and sent if any was.
        let entry = interrupted.entry(credential).or_insert(Interrupted {
            attempt_id,
            started_at,
            sent: false,
            holder: None,
        });
        if started_at >= entry.started_at {
            entry.attempt_id = attempt_id;
            entry.started_at = started_at;
            entry.holder = holder;
        }
        entry.sent |= sent_at.is_some();
    }
    let started: HashMap<i64, i64> = sql(dialect.journal_start)
        .bind(trigger.as_str())
        .bind(owner)
        .bind(now)
        .bind(&entries)
        .fetch_all::<(i64, i64)>(conn)
        .await?
        .into_iter()
        .map(|(attempt, credential)| (credential, attempt))
        .collect();
    rows.into_iter()
        .map(|row| {
            let attempt = *started
                .get(&row.id)
                .ok_or(StoreError::Sql(sqlx::Error::RowNotFound))?;
            let after = interrupted.remove(&row.id);
            Ok((row, (attempt, after)))
        })
        .collect()
}

/// Takes every job waiting (up to [`GROUP_MAX`]), refreshes to store and requests to mark sent
/// alike, applies them in one transaction, commits once, then answers each. A failed transaction
/// fails every job in it; each caller retries its own (a mark that failed: that request is given
/// back unsent).
pub(in crate::store) async fn group_writer(
    db: Db,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
) {
    let mut batch = Vec::with_capacity(GROUP_MAX);
    let mut stores = Vec::with_capacity(GROUP_MAX);
    let mut marks = Vec::with_capacity(GROUP_MAX);
    while jobs.recv_many(&mut batch, GROUP_MAX).await > 0 {
        for job in batch.drain(..) {
            match job {
                Job::Store(job) => stores.push(job),
                Job::Mark(job) => marks.push(job),
            }
        }
        let result = db.write_group(&stores, &marks).await;
        match result {
            Ok((outcomes, marked)) => {
                for (job, outcome) in stores.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
                for job in marks.drain(..) {
                    let _ = job.reply.send(Ok(marked.contains(&job.attempt_id)));
                }
            }
            Err(e) => {
                let failed = || StoreError::Sql(sqlx::Error::Protocol(e.to_string()));
                for job in stores.drain(..) {
                    let _ = job.reply.send(Err(failed()));
                }
                for job in marks.drain(..) {
                    let _ = job.reply.send(Err(failed()));
                }
            }
        }
    }
}

impl Db {
    /// Applies a group of refreshes in one transaction and commits once: each job's answer, in
    /// order.
    #[cfg(test)]
    pub(in crate::store) async fn store_group(
        &self,
        jobs: &[StoreJob],
    ) -> Result<Vec<Stored>, StoreError> {
        Ok(self.write_group(jobs, &[]).await?.0)
    }

    /// Applies a group of refreshes and marks a group of requests sent, in one transaction, and
    /// commits once: each refresh's answer in order, and the attempts marked sent.
    pub(in crate::store) async fn write_group(
        &self,
        jobs: &[StoreJob],
        marks: &[MarkJob],
    ) -> Result<(Vec<Stored>, Vec<i64>), StoreError> {
        let mut w = self.write().await?;
        let mut stored = Vec::with_capacity(jobs.len());
        if !jobs.is_empty() {
            // Rows are locked in id order, the order `rekey`'s batches lock them in (`ORDER BY id
            // … FOR UPDATE`): two transactions that lock rows in one order cannot deadlock. The
            // multi-row UPDATE alone would lock them in whatever order its plan visits them.
            if let Some(lock) = self.dialect().lock_group {
                let mut ids: Vec<i64> = jobs.iter().map(|job| job.credential_id).collect();
                ids.sort_unstable();
                ids.dedup();
                sql(lock)
                    .bind(batch::to_json(&ids)?)
                    .execute(w.conn())
                    .await?;
            }
            for run in writer::distinct_runs(jobs) {
                stored.extend(store_refreshed(w.conn(), run).await?);
            }
        }
        // The marks after the credentials' rows, which a claim locks first too.
        let mut marked = Vec::new();
        if !marks.is_empty() {
            let ids: Vec<i64> = marks.iter().map(|job| job.attempt_id).collect();
            let now = marks.iter().map(|job| job.now).max().unwrap_or_default();
            marked = super::sent::mark_sent(w.conn(), &ids, now).await?;
        }
        w.commit().await?;
        Ok((stored, marked))
    }
}

/// Stores the tokens of refreshes of distinct credentials and completes their journal entries,
/// inside the group's transaction, in two statements whatever their number (a third for each
/// superseded one, rare). Each row is written only if it still holds the refresh token that was
/// sent (compare-and-swap): the ones that changed meanwhile are reported `Superseded`, alone.
async fn store_refreshed(mut conn: Conn<'_>, jobs: &[StoreJob]) -> Result<Vec<Stored>, StoreError> {
    let tokens: Vec<batch::Tokens<'_>> = jobs
        .iter()
        .map(|job| batch::Tokens {
            id: job.credential_id,
            stored: job.stored_refresh_token.as_ref().map(Secret::expose),
            access_token: job.access_token.expose(),
            token_type: &job.tokens.token_type,
            expires_at: job.tokens.expires_at,
            refresh_token: job.refresh_token.as_ref().map(Secret::expose),
            refresh_expires_at: job.tokens.refresh_token_expires_at,
            rotated: job.rotated,
            due_at: job.refresh_due_at,
            stored_at: job.now,
            holder: &job.owner,
            instance_url: job.tokens.instance_url.as_deref(),
        })
        .collect();
    let dialect = conn.dialect();
    let written: HashSet<i64> = sql(dialect.store_tokens)
        .bind(batch::to_json(&tokens)?)
        .fetch_all::<(i64,)>(conn.reborrow())
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect();
    let stored: Vec<Stored> = jobs
        .iter()
        .map(|job| {
            if written.contains(&job.credential_id) {
                Stored::Yes
            } else {
                Stored::Superseded
            }
        })
        .collect();
    let finished: Vec<batch::Completed<'_>> = jobs
        .iter()
        .zip(&stored)
        .map(|(job, stored)| batch::Completed {
            id: job.attempt_id,
            finished_at: job.now,
            duration_ms: job.duration_ms,
            outcome: match stored {
                Stored::Yes => Outcome::Refreshed,
                Stored::Superseded => Outcome::Superseded,
            }
            .as_str(),
            http_status: job.http_status,
            expires_at: job.tokens.expires_at,
            rotated: job.rotated,
            refresh_fingerprint: job.tokens.refresh_token.as_ref().map(Secret::fingerprint),
            access_fingerprint: job.tokens.access_token.fingerprint(),
            reported: job.tokens.lifetime_reported,
        })
        .collect();
    sql(dialect.journal_finish)
        .bind(batch::to_json(&finished)?)
        .execute(conn.reborrow())
        .await?;
    for (job, stored) in jobs.iter().zip(&stored) {
        if *stored == Stored::Superseded {
            release_lease(conn.reborrow(), job.credential_id, &job.owner).await?;
        }
    }
    Ok(stored)
}
