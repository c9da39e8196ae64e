//! Leases held by others, the resealing walk of `rekey`, migrations applied, and whether the
//! database answers.

use crate::domain::UnixTime;
use crate::store::StoreError;
use crate::store::backend::Db;
use crate::store::leases::{HeldElsewhere, HeldLease};
use crate::store::rekey::{Reformed, Row as RekeyRow};
use crate::store::seal::Column;
use crate::store::statement::sql;

/// The same statement for either token column, `c` standing for the column's name: SQL is never
/// assembled at run time.
macro_rules! for_column {
    ($column:expr; $($piece:tt)*) => {
        match $column {
            Column::RefreshToken => concat!($(for_column!(@piece "refresh_token"; $piece)),*),
            Column::AccessToken => concat!($(for_column!(@piece "access_token"; $piece)),*),
        }
    };
    (@piece $name:literal; c) => { $name };
    (@piece $name:literal; $text:literal) => { $text };
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
        Ok(sql(
            "SELECT id AS credential_id, name, lease_owner, lease_expires_at FROM oauth_credential \
             WHERE lease_owner IS NOT NULL AND lease_expires_at > $1 \
               AND substr(lease_owner, 1, length($2)) = $2 AND lease_owner <> $3 ORDER BY +id",
        )
        .bind(now)
        .bind(prefix)
        .bind(me)
        .fetch_all(self.read().await?.conn())
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
            ended += sql("UPDATE oauth_credential SET lease_expires_at = $1 \
                 WHERE id = $2 AND lease_owner = $3 AND lease_expires_at > $1")
            .bind(now)
            .bind(lease.credential_id)
            .bind(&lease.lease_owner)
            .execute(w.conn())
            .await?;
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
        let (count, until): (i64, Option<i64>) = sql(
            "SELECT count(*), max(lease_expires_at) FROM oauth_credential \
             WHERE lease_owner IS NOT NULL AND lease_expires_at > $1 AND lease_owner <> $2 \
               AND status = 'active' AND refresh_due_at < $3",
        )
        .bind(now)
        .bind(me)
        .bind(due_before)
        .fetch_one(self.read().await?.conn())
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
        let ids: Vec<(i64,)> = sql("SELECT id FROM oauth_credential \
                WHERE status = 'active' AND refresh_due_at < $1 AND next_attempt_at <= $1 \
                  AND (lease_expires_at IS NULL OR lease_expires_at <= $2) LIMIT $3")
        .bind(due_before)
        .bind(now)
        .bind(i64::try_from(skip.len()).unwrap_or(i64::MAX - 1) + 1)
        .fetch_all(self.read().await?.conn())
        .await?;
        Ok(ids.iter().any(|(id,)| !skip.contains(id)))
    }

    /// Per stored head (the first 13 characters when they start like a sealed value, else ''),
    /// how many values of `column`.
    pub(in crate::store) async fn heads(
        &self,
        column: Column,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let text = for_column!(column;
            "SELECT CASE WHEN h >= 'tw1:' AND h < 'tw1;' THEN h ELSE '' END AS k, count(*) \
             FROM (SELECT substr(" c ", 1, 13) AS h FROM oauth_credential WHERE " c " IS NOT NULL) heads \
             GROUP BY k");
        Ok(sql(text).fetch_all(self.read().await?.conn()).await?)
    }

    /// The first distinct head of `column` after `after` that starts like a sealed value: one
    /// index seek.
    pub(in crate::store) async fn next_head(
        &self,
        column: Column,
        after: &str,
    ) -> Result<Option<String>, StoreError> {
        let text = for_column!(column;
            "SELECT substr(" c ", 1, 13) FROM oauth_credential \
             WHERE substr(" c ", 1, 13) > $1 AND substr(" c ", 1, 13) < 'tw1;' \
             ORDER BY substr(" c ", 1, 13) LIMIT 1");
        let row: Option<(String,)> = sql(text)
            .bind(after)
            .fetch_optional(self.read().await?.conn())
            .await?;
        Ok(row.map(|(h,)| h))
    }

    /// Whether any value in `column` is plaintext: two index seeks.
    pub(in crate::store) async fn has_plaintext(&self, column: Column) -> Result<bool, StoreError> {
        let text = for_column!(column;
            "SELECT EXISTS (SELECT 1 FROM oauth_credential WHERE substr(" c ", 1, 13) < 'tw1:') \
                 OR EXISTS (SELECT 1 FROM oauth_credential WHERE substr(" c ", 1, 13) >= 'tw1;')");
        let (any,): (bool,) = sql(text).fetch_one(self.read().await?.conn()).await?;
        Ok(any)
    }

    /// The names of the credentials with a value (in either column) starting with `head`.
    pub(in crate::store) async fn names_under(
        &self,
        head: &str,
    ) -> Result<Vec<String>, StoreError> {
        let names: Vec<(String,)> = sql(
            "SELECT name FROM oauth_credential \
             WHERE substr(refresh_token, 1, 13) = $1 OR substr(access_token, 1, 13) = $1 ORDER BY name",
        )
        .bind(head)
        .fetch_all(self.read().await?.conn())
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
        let dialect = self.dialect();
        // The rows not yet in the target form ($2: the current key's head, $3: seal access tokens).
        let sql_text = match target {
            Target::SealPlaintext => dialect.reseal_rows.seal_plaintext,
            Target::Current => dialect.reseal_rows.current,
            Target::Plaintext => dialect.reseal_rows.plaintext,
        };
        let mut w = self.write().await?;
        if let Some((before, _)) = dialect.reseal_pragmas {
            sql(before).execute(w.conn()).await?;
        }
        let rows: Vec<RekeyRow> = sql(sql_text)
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
            sql(
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
        if let Some((_, after)) = dialect.reseal_pragmas {
            sql(after).execute(w.conn()).await?;
        }
        w.commit().await?;
        Ok(Some(last))
    }

    /// The migrations applied, as `(version, description)`, oldest first.
    pub(in crate::store) async fn applied_migrations(
        &self,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(
            sql("SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(self.read().await?.conn())
                .await?,
        )
    }

    /// Whether the database answers.
    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        sql("SELECT 1").execute(self.read().await?.conn()).await?;
        Ok(())
    }
}
