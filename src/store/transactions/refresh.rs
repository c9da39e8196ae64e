// Claiming due credentials, journaling each attempt, and storing what it brought: the group
// writer applies many refreshes in one transaction. Part of `transactions.rs` (`include!`d).

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
    ) -> Result<Vec<(ClaimRow, (i64, bool))>, StoreError> {
        let mut w = self.write().await?;
        let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_DUE)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(sweep_start)
            .fetch_all(w.conn())
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let row = open(row);
            let attempt = journal_start(w.conn(), &row, owner, now, trigger).await?;
            claimed.push((row, attempt));
        }
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
    ) -> Result<NameClaim, StoreError> {
        let mut w = self.write().await?;
        let row: Option<ClaimRow> = sqlx::query_as(CLAIM_BY_NAME)
            .bind(owner)
            .bind(lease_until)
            .bind(name)
            .bind(now)
            .fetch_optional(w.conn())
            .await?;
        let Some(row) = row else {
            let status: Option<(String,)> =
                sqlx::query_as("SELECT status FROM oauth_credential WHERE name = $1")
                    .bind(name)
                    .fetch_optional(w.conn())
                    .await?;
            w.rollback().await?;
            return Ok(Err(status.map(|(s,)| s)));
        };
        let row = open(row);
        let attempt = journal_start(w.conn(), &row, owner, now, Trigger::Manual).await?;
        w.commit().await?;
        Ok(Ok((row, attempt)))
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
                let n = sqlx::query(
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
                .rows_affected();
                (detail, n)
            }
            Failure::Reauthorize { detail } => {
                // Race-aware: a refresh token that changed while the request was out is not dead.
                let n = sqlx::query(
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
            release_lease(w.conn(), id, owner).await?;
        }
        sqlx::query(
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

    /// Gives back a claim that was never attempted, dropping its journal entry.
    pub(in crate::store) async fn release(
        &self,
        id: i64,
        attempt_id: i64,
        owner: &str,
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        release_lease(w.conn(), id, owner).await?;
        sqlx::query("DELETE FROM token_rotation WHERE id = $1 AND outcome = 'pending'")
            .bind(attempt_id)
            .execute(w.conn())
            .await?;
        w.commit().await?;
        Ok(())
    }
}

async fn release_lease(conn: &mut Conn, id: i64, owner: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE oauth_credential SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Journals an attempt before its request: what was sent, never the token itself. An earlier
/// attempt still pending belonged to a process that died (its lease ran out, or this claim could
/// not have happened): it is marked interrupted, and the new attempt knows it follows one.
async fn journal_start(
    conn: &mut Conn,
    row: &ClaimRow,
    owner: &str,
    now: UnixTime,
    trigger: Trigger,
) -> Result<(i64, bool), StoreError> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at, \
            old_expires_at, old_refresh_fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(row.id)
    .bind(&row.name)
    .bind(&row.provider)
    .bind(trigger.as_str())
    .bind(owner)
    .bind(now)
    .bind(row.access_token_expires_at)
    .bind(row.token().map(Secret::fingerprint))
    .fetch_one(&mut *conn)
    .await?;
    let interrupted = sqlx::query(
        "UPDATE token_rotation SET outcome = 'interrupted', finished_at = $1 \
         WHERE credential_id = $2 AND outcome = 'pending' AND id <> $3",
    )
    .bind(now)
    .bind(row.id)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok((id, interrupted > 0))
}

/// Takes every job waiting (up to [`GROUP_MAX`]), applies them in id order in one transaction,
/// commits once, then answers each. A failed transaction fails every job in it; each caller
/// retries its own.
async fn group_writer(db: Db, mut jobs: tokio::sync::mpsc::UnboundedReceiver<StoreJob>) {
    let mut batch = Vec::with_capacity(GROUP_MAX);
    while jobs.recv_many(&mut batch, GROUP_MAX).await > 0 {
        // Rows are written in id order, the order `rekey`'s batches lock them in (`ORDER BY id
        // … FOR UPDATE`): two transactions that lock rows in one order cannot deadlock.
        batch.sort_unstable_by_key(|job| job.credential_id);
        let result: Result<Vec<Stored>, StoreError> = async {
            let mut w = db.write().await?;
            let mut stored = Vec::with_capacity(batch.len());
            for job in &batch {
                stored.push(apply_refreshed(w.conn(), job).await?);
            }
            w.commit().await?;
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
async fn apply_refreshed(conn: &mut Conn, job: &StoreJob) -> Result<Stored, StoreError> {
    let t = &job.tokens;
    let updated = sqlx::query(
        "UPDATE oauth_credential SET access_token = $1, token_type = $2, access_token_expires_at = $3, \
            refresh_token = COALESCE($4, refresh_token), \
            refresh_token_expires_at = CASE WHEN $12 THEN $5 \
                ELSE COALESCE($5, refresh_token_expires_at) END, \
            refresh_due_at = $6, consecutive_failures = 0, next_attempt_at = 0, last_error = NULL, \
            instance_url = COALESCE($11, instance_url), \
            last_refreshed_at = $7, updated_at = $7, \
            lease_owner = CASE WHEN lease_owner = $10 THEN NULL ELSE lease_owner END, \
            lease_expires_at = CASE WHEN lease_owner = $10 THEN NULL ELSE lease_expires_at END \
         WHERE id = $8 AND refresh_token IS NOT DISTINCT FROM $9",
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
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let stored = if updated == 1 {
        Stored::Yes
    } else {
        Stored::Superseded
    };
    sqlx::query(
        "UPDATE token_rotation SET finished_at = $1, duration_ms = $2, outcome = $3, http_status = $4, \
            new_expires_at = $5, refresh_token_rotated = $6, new_refresh_fingerprint = $7, \
            new_access_fingerprint = $8, expires_in_reported = $10 WHERE id = $9",
    )
    .bind(job.now)
    .bind(job.duration_ms)
    .bind(if stored == Stored::Yes { Outcome::Refreshed } else { Outcome::Superseded }.as_str())
    .bind(job.http_status.map(i64::from))
    .bind(t.expires_at)
    .bind(job.rotated)
    .bind(t.refresh_token.as_ref().map(Secret::fingerprint))
    .bind(t.access_token.fingerprint())
    .bind(job.attempt_id)
    .bind(t.lifetime_reported)
    .execute(&mut *conn)
    .await?;
    if stored == Stored::Superseded {
        release_lease(conn, job.credential_id, &job.owner).await?;
    }
    Ok(stored)
}
