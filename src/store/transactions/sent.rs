//! Requests that went out (issue 19): the marks written immediately before refresh tokens go out
//! (in the group writer's transaction), a claim given back to the live process whose request was
//! out, and the attempts whose request went out but whose lease ran out before their outcome was
//! stored. Plain SQL both dialects
//! accept, but for the marks (`Dialect::mark_sent`: one statement per batch).

use crate::domain::UnixTime;
use crate::store::backend::Db;
use crate::store::leases::PastLease;
use crate::store::statement::{Conn, sql};
use crate::store::{StoreError, batch};

/// Marks the journal entries `attempt_ids` sent at `now`, those still pending, in one statement
/// (`Dialect::mark_sent`, in id order where rows are locked), inside the group writer's
/// transaction; returns the ones marked. One no longer pending was taken over by another process
/// meanwhile (it marked the entry `interrupted` in its claim's transaction): its request must not
/// go out.
pub(in crate::store) async fn mark_sent(
    conn: Conn<'_>,
    attempt_ids: &[i64],
    now: UnixTime,
) -> Result<Vec<i64>, StoreError> {
    let marked: Vec<(i64,)> = sql(conn.dialect().mark_sent)
        .bind(now)
        .bind(batch::to_json(attempt_ids)?)
        .fetch_all(conn)
        .await?;
    Ok(marked.into_iter().map(|(id,)| id).collect())
}

impl Db {
    /// Gives a claim back to the live process whose request was out when it was claimed (it
    /// sent its refresh token just before this claim): its journal entry `theirs` pending again,
    /// the lease its holder's again (run out), this claim's entry `ours` dropped.
    pub(in crate::store) async fn give_back(
        &self,
        credential_id: i64,
        me: &str,
        ours: i64,
        theirs: i64,
        holder: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        sql("DELETE FROM token_rotation WHERE id = $1 AND outcome = 'pending'")
            .bind(ours)
            .execute(w.conn())
            .await?;
        sql(
            "UPDATE token_rotation SET outcome = 'pending', finished_at = NULL \
             WHERE id = $1 AND outcome = 'interrupted'",
        )
        .bind(theirs)
        .execute(w.conn())
        .await?;
        sql(
            "UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 \
             WHERE id = $3 AND lease_owner = $4",
        )
        .bind(holder)
        .bind(now)
        .bind(credential_id)
        .bind(me)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(())
    }

    /// Makes the interrupted journal entry `attempt_id` pending again, so that the next claim
    /// weighs its sent request again (this claim sent nothing and decided nothing about it).
    pub(in crate::store) async fn keep_pending(&self, attempt_id: i64) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        sql(
            "UPDATE token_rotation SET outcome = 'pending', finished_at = NULL \
             WHERE id = $1 AND outcome = 'interrupted'",
        )
        .bind(attempt_id)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(())
    }

    /// Credentials whose lease ran out by `now` while their pending attempt's request was out
    /// (sent, no outcome stored), in id order. Pending entries are few (the pending index).
    pub(in crate::store) async fn sent_past_lease(
        &self,
        now: UnixTime,
    ) -> Result<Vec<PastLease>, StoreError> {
        Ok(sql(
            "SELECT c.id AS credential_id, c.name, c.grant_type, c.lease_owner, c.lease_expires_at, \
                t.started_at, t.sent_at \
             FROM token_rotation t JOIN oauth_credential c ON c.id = t.credential_id \
             WHERE t.outcome = 'pending' AND t.sent_at IS NOT NULL \
               AND c.lease_owner IS NOT NULL AND c.lease_expires_at <= $1 \
             ORDER BY c.id",
        )
        .bind(now)
        .fetch_all(self.read().await?.conn())
        .await?)
    }
}
