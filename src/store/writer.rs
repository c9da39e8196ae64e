//! Group commit for new tokens: successful refreshes queue here, and one task applies every
//! outcome waiting at that moment in a single transaction with a single commit (one fsync), then
//! answers each. Write transactions of this process also queue on one mutex before `BEGIN
//! IMMEDIATE`, so they wait in order instead of in SQLite's sleeping busy handler; `busy_timeout`
//! is then only ever spent on other processes.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::claim::release_lease;
use super::{StoreError, Stored};
use crate::domain::{Secret, TokenSet, UnixTime};

/// Most outcomes committed in one transaction.
const GROUP_MAX: usize = 64;

/// One successful refresh waiting for the group commit.
pub(super) struct StoreJob {
    pub credential_id: i64,
    pub attempt_id: i64,
    /// The refresh token as it was stored when claimed: the row is updated only if it still
    /// holds exactly that text (compare-and-swap).
    pub stored_refresh_token: Option<Secret>,
    /// Whether the provider sent a refresh token other than the one that was sent.
    pub rotated: bool,
    /// What to store: the new (or the unchanged) refresh token and the new access token, each
    /// already in its stored form (sealed, or plaintext without a key). `tokens` keeps the
    /// plaintext, for the journal's fingerprints only.
    pub refresh_token: Option<Secret>,
    pub access_token: Secret,
    pub owner: String,
    pub now: UnixTime,
    pub tokens: TokenSet,
    pub refresh_due_at: UnixTime,
    pub http_status: Option<u16>,
    pub duration_ms: i64,
    pub reply: oneshot::Sender<Result<Stored, StoreError>>,
}

/// Takes every job waiting (up to [`GROUP_MAX`]), applies them in one transaction, commits once,
/// then answers each. A failed transaction fails every job in it; each caller retries its own.
pub(super) async fn group_writer(
    pool: sqlx::SqlitePool,
    writer: Arc<Mutex<()>>,
    mut jobs: mpsc::UnboundedReceiver<StoreJob>,
) {
    let mut batch = Vec::with_capacity(GROUP_MAX);
    while jobs.recv_many(&mut batch, GROUP_MAX).await > 0 {
        let result: Result<Vec<Stored>, StoreError> = async {
            let _writer = writer.lock().await;
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut stored = Vec::with_capacity(batch.len());
            for job in &batch {
                stored.push(apply_refreshed(&mut tx, job).await?);
            }
            tx.commit().await?;
            Ok(stored)
        }
        .await;
        match result {
            Ok(stored) => {
                for (job, stored) in batch.drain(..).zip(stored) {
                    let _ = job.reply.send(Ok(stored));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for job in batch.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Sql(sqlx::Error::Protocol(reason.clone()))));
                }
            }
        }
    }
}

/// Stores one refresh's tokens and completes its journal entry, inside the group's transaction.
async fn apply_refreshed(
    tx: &mut sqlx::SqliteConnection,
    job: &StoreJob,
) -> Result<Stored, StoreError> {
    let t = &job.tokens;
    let updated = sqlx::query(
        "UPDATE oauth_credential SET access_token = ?1, token_type = ?2, access_token_expires_at = ?3, \
            refresh_token = COALESCE(?4, refresh_token), \
            refresh_token_expires_at = CASE WHEN ?12 THEN ?5 \
                ELSE COALESCE(?5, refresh_token_expires_at) END, \
            refresh_due_at = ?6, consecutive_failures = 0, next_attempt_at = 0, last_error = NULL, \
            instance_url = COALESCE(?11, instance_url), \
            last_refreshed_at = ?7, updated_at = ?7, \
            lease_owner = CASE WHEN lease_owner = ?10 THEN NULL ELSE lease_owner END, \
            lease_expires_at = CASE WHEN lease_owner = ?10 THEN NULL ELSE lease_expires_at END \
         WHERE id = ?8 AND refresh_token IS ?9",
    )
    .bind(&job.access_token)
    .bind(&t.token_type)
    .bind(t.expires_at)
    .bind(&job.refresh_token)
    .bind(t.refresh_token_expires_at)
    .bind(job.refresh_due_at)
    .bind(job.now)
    .bind(job.credential_id)
    .bind(&job.stored_refresh_token)
    .bind(&job.owner)
    .bind(&t.instance_url)
    .bind(job.rotated)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let stored = if updated == 1 {
        Stored::Yes
    } else {
        Stored::Superseded
    };
    let rotated = job.rotated;
    sqlx::query(
        "UPDATE token_rotation SET finished_at = ?1, duration_ms = ?2, outcome = ?3, http_status = ?4, \
            new_expires_at = ?5, refresh_token_rotated = ?6, new_refresh_fingerprint = ?7, \
            new_access_fingerprint = ?8, expires_in_reported = ?10 WHERE id = ?9",
    )
    .bind(job.now)
    .bind(job.duration_ms)
    .bind(if stored == Stored::Yes { "refreshed" } else { "superseded" })
    .bind(job.http_status)
    .bind(t.expires_at)
    .bind(rotated)
    .bind(t.refresh_token.as_ref().map(Secret::fingerprint))
    .bind(t.access_token.fingerprint())
    .bind(job.attempt_id)
    .bind(t.lifetime_reported)
    .execute(&mut *tx)
    .await?;
    if stored == Stored::Superseded {
        release_lease(&mut *tx, job.credential_id, &job.owner).await?;
    }
    Ok(stored)
}
