// Leases held by others, the resealing walk of `rekey`, migrations (applied, and bringing the
// schema up to date), and the pool itself. Part of `transactions.rs` (`include!`d).

/// Brings the schema on `conn` up to date: one read of `_sqlx_migrations` when it already is
/// (`schema::up_to_date`), else the migrator as it always ran, with its lock and its refusals.
async fn migrate_schema(conn: &mut Conn) -> Result<(), sqlx::migrate::MigrateError> {
    use crate::store::schema::{RECORDED, Recorded, up_to_date};
    // Any error here (no table yet, a column of another type) leaves the decision to the migrator.
    if let Ok(rows) = sqlx::raw_sql(RECORDED).fetch_all(&mut *conn).await {
        let recorded: Result<Vec<Recorded>, sqlx::Error> = rows
            .iter()
            .map(|row| {
                Ok(Recorded {
                    version: sqlx::Row::try_get(row, 0)?,
                    checksum: sqlx::Row::try_get(row, 1)?,
                    success: sqlx::Row::try_get(row, 2)?,
                })
            })
            .collect();
        if recorded.is_ok_and(|recorded| up_to_date(&MIGRATOR, &recorded)) {
            return Ok(());
        }
    }
    MIGRATOR.run(&mut *conn).await
}

impl Db {
    /// Leases running at `now` whose holder's stored form starts with `prefix`, other than `me`'s,
    /// in id order (`ORDER BY +id`: sorted after the lease index found them; a plain `ORDER BY id`
    /// lets SQLite walk the whole table in id order instead, 0.5 s at 1M rows).
    pub(in crate::store) async fn leases_with_prefix(
        &self,
        prefix: &str,
        me: &str,
        now: UnixTime,
    ) -> Result<Vec<HeldLease>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id AS credential_id, name, lease_owner, lease_expires_at FROM oauth_credential \
             WHERE lease_owner IS NOT NULL AND lease_expires_at > $1 \
               AND substr(lease_owner, 1, length($2)) = $2 AND lease_owner <> $3 ORDER BY +id",
        )
        .bind(now)
        .bind(prefix)
        .bind(me)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Ends the leases of holders known to be gone, unless they changed hands meanwhile: in the
    /// order given, which is id order (`leases_with_prefix`), as every multi-row write locks.
    pub(in crate::store) async fn end_leases(
        &self,
        gone: &[HeldLease],
        now: UnixTime,
    ) -> Result<u64, StoreError> {
        let mut w = self.write().await?;
        let mut ended = 0;
        for lease in gone {
            ended += sqlx::query(
                "UPDATE oauth_credential SET lease_expires_at = $1 \
                 WHERE id = $2 AND lease_owner = $3 AND lease_expires_at > $1",
            )
            .bind(now)
            .bind(lease.credential_id)
            .bind(&lease.lease_owner)
            .execute(w.conn())
            .await?
            .rows_affected();
        }
        w.commit().await?;
        Ok(ended)
    }

    /// Active credentials due before `due_before` that processes other than `me` hold at `now`.
    pub(in crate::store) async fn held_elsewhere(
        &self,
        me: &str,
        now: UnixTime,
        due_before: UnixTime,
    ) -> Result<HeldElsewhere, StoreError> {
        let (count, until): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), max(lease_expires_at) FROM oauth_credential \
             WHERE lease_owner IS NOT NULL AND lease_expires_at > $1 AND lease_owner <> $2 \
               AND status = 'active' AND refresh_due_at < $3",
        )
        .bind(now)
        .bind(me)
        .bind(due_before)
        .fetch_one(&mut *self.conn().await?)
        .await?;
        Ok(HeldElsewhere { count, until })
    }

    /// Whether an active credential due before `due_before`, other than those in `skip`, is
    /// claimable at `now` (no lease running, no backoff): what a claim would take, row locks of
    /// other transactions ignored. Reads at most one row more than `skip` holds.
    pub(in crate::store) async fn any_claimable(
        &self,
        now: UnixTime,
        due_before: UnixTime,
        skip: &[i64],
    ) -> Result<bool, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM oauth_credential \
                WHERE status = 'active' AND refresh_due_at < $1 AND next_attempt_at <= $1 \
                  AND (lease_expires_at IS NULL OR lease_expires_at <= $2) LIMIT $3",
        )
        .bind(due_before)
        .bind(now)
        .bind(i64::try_from(skip.len()).unwrap_or(i64::MAX - 1) + 1)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(ids.iter().any(|id| !skip.contains(id)))
    }

    /// Per stored head (the first 13 characters when they start like a sealed value, else ''),
    /// how many values of `column`.
    pub(in crate::store) async fn heads(
        &self,
        column: Column,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = for_column!(column;
            "SELECT CASE WHEN h >= 'tw1:' AND h < 'tw1;' THEN h ELSE '' END AS k, count(*) \
             FROM (SELECT substr(" c ", 1, 13) AS h FROM oauth_credential WHERE " c " IS NOT NULL) heads \
             GROUP BY k");
        Ok(sqlx::query_as(sql).fetch_all(&mut *self.conn().await?).await?)
    }

    /// The first distinct head of `column` after `after` that starts like a sealed value: one
    /// index seek.
    pub(in crate::store) async fn next_head(
        &self,
        column: Column,
        after: &str,
    ) -> Result<Option<String>, StoreError> {
        let sql = for_column!(column;
            "SELECT substr(" c ", 1, 13) FROM oauth_credential \
             WHERE substr(" c ", 1, 13) > $1 AND substr(" c ", 1, 13) < 'tw1;' \
             ORDER BY substr(" c ", 1, 13) LIMIT 1");
        let row: Option<(String,)> = sqlx::query_as(sql)
            .bind(after)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.map(|(h,)| h))
    }

    /// Whether any value in `column` is plaintext: two index seeks.
    pub(in crate::store) async fn has_plaintext(&self, column: Column) -> Result<bool, StoreError> {
        let sql = for_column!(column;
            "SELECT EXISTS (SELECT 1 FROM oauth_credential WHERE substr(" c ", 1, 13) < 'tw1:') \
                 OR EXISTS (SELECT 1 FROM oauth_credential WHERE substr(" c ", 1, 13) >= 'tw1;')");
        let (any,): (bool,) = sqlx::query_as(sql).fetch_one(&mut *self.conn().await?).await?;
        Ok(any)
    }

    /// The names of the credentials with a value (in either column) starting with `head`.
    pub(in crate::store) async fn names_under(
        &self,
        head: &str,
    ) -> Result<Vec<String>, StoreError> {
        let names: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM oauth_credential \
             WHERE substr(refresh_token, 1, 13) = $1 OR substr(access_token, 1, 13) = $1 ORDER BY name",
        )
        .bind(head)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(names.into_iter().map(|(n,)| n).collect())
    }

    /// One batch of a re-sealing pass, in its own transaction: up to `batch` rows after id
    /// `after` not yet in `target`'s form (`current`: the current key's head; `seal_access`:
    /// whether access tokens are sealed), each written in the form `reform` gives it
    /// (compare-and-swapped against what was read). The rows are locked until the commit, so no
    /// claim can take one between its read and its write. `None` when no row is left.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::store) async fn reseal_batch(
        &self,
        target: crate::store::Target,
        after: i64,
        current: Option<&str>,
        seal_access: bool,
        batch: i64,
        reform: &mut (dyn FnMut(&RekeyRow) -> Reformed + Send),
    ) -> Result<Option<i64>, StoreError> {
        use crate::store::Target;
        macro_rules! rows_where {
            ($wanted:literal) => {
                concat!(
                    "SELECT id, name, refresh_token, access_token, lease_expires_at FROM oauth_credential \
                     WHERE id > $1 AND (",
                    $wanted,
                    ") ORDER BY id LIMIT $4",
                    lock_rows!()
                )
            };
        }
        // The rows not yet in the target form ($2: the current key's head, $3: seal access tokens).
        let sql = match target {
            Target::SealPlaintext => rows_where!(
                "(refresh_token IS NOT NULL AND substr(refresh_token, 1, 4) <> 'tw1:') \
                 OR ($3 AND access_token IS NOT NULL AND substr(access_token, 1, 4) <> 'tw1:')"
            ),
            Target::Current => rows_where!(
                "(refresh_token IS NOT NULL AND substr(refresh_token, 1, 13) IS DISTINCT FROM $2) \
                 OR (access_token IS NOT NULL AND CASE WHEN $3 THEN substr(access_token, 1, 13) IS DISTINCT FROM $2 \
                     ELSE substr(access_token, 1, 4) = 'tw1:' END)"
            ),
            Target::Plaintext => rows_where!(
                "substr(refresh_token, 1, 4) = 'tw1:' OR substr(access_token, 1, 4) = 'tw1:'"
            ),
        };
        let mut w = self.write().await?;
        if let Some((before, _)) = RESEAL_PRAGMAS {
            sqlx::query(before).execute(w.conn()).await?;
        }
        let rows: Vec<RekeyRow> = sqlx::query_as(sql)
            .bind(after)
            .bind(current)
            .bind(seal_access)
            .bind(batch)
            .fetch_all(w.conn())
            .await?;
        let Some(last) = rows.last().map(|r| r.id) else {
            w.rollback().await?;
            return Ok(None);
        };
        for row in rows {
            let Reformed::Write { refresh, access } = reform(&row) else {
                continue;
            };
            sqlx::query(
                "UPDATE oauth_credential SET refresh_token = $1, access_token = $2 \
                 WHERE id = $3 AND refresh_token IS NOT DISTINCT FROM $4 AND access_token IS NOT DISTINCT FROM $5",
            )
            .bind(&refresh)
            .bind(&access)
            .bind(row.id)
            .bind(&row.refresh_token)
            .bind(&row.access_token)
            .execute(w.conn())
            .await?;
        }
        if let Some((_, after)) = RESEAL_PRAGMAS {
            sqlx::query(after).execute(w.conn()).await?;
        }
        w.commit().await?;
        Ok(Some(last))
    }

    /// The migrations applied, as `(version, description)`, oldest first.
    pub(in crate::store) async fn applied_migrations(
        &self,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Whether the database answers.
    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&mut *self.conn().await?).await?;
        Ok(())
    }

    /// Closes every connection.
    pub(in crate::store) async fn close(&self) {
        self.pool.close().await;
    }

    /// Closes the pool's idle connections. A connection given back goes idle a moment later (sqlx
    /// returns it from a task): those still on their way are waited for this long at most.
    pub(in crate::store) async fn close_idle(&self) {
        const RETURNING: std::time::Duration = std::time::Duration::from_millis(500);
        const STEP: std::time::Duration = std::time::Duration::from_millis(5);
        let started = std::time::Instant::now();
        loop {
            while let Some(conn) = self.pool.try_acquire() {
                let _ = conn.close().await;
            }
            if self.pool.size() == 0 || started.elapsed() >= RETURNING {
                break;
            }
            tokio::time::sleep(STEP).await;
        }
    }
}
