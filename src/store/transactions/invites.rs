//! Invitations: recorded, listed, looked up by the hash of their secret, revoked; spent inside
//! `store_authorized` ([`spend_invite`]).

use crate::domain::UnixTime;
use crate::store::StoreError;
use crate::store::backend::Db;
use crate::store::invites::{Invite, NewInvite};
use crate::store::records::Authorized;
use crate::store::statement::{Conn, sql};

/// The columns an `Invite` reads.
macro_rules! invite_columns {
    () => {
        "id, name, provider, owner, scopes, reauthorize, created_at, expires_at, spent_at, revoked_at"
    };
}

impl Db {
    /// Records a link; for an existing credential, only with its provider and owner.
    pub(in crate::store) async fn create_invite(
        &self,
        i: &NewInvite<'_>,
        now: UnixTime,
    ) -> Result<Invite, StoreError> {
        let mut w = self.write().await?;
        let existing: Option<(String, Option<String>)> =
            sql("SELECT provider, owner FROM oauth_credential WHERE name = $1")
                .bind(i.name)
                .fetch_optional(w.conn())
                .await?;
        if let Some((provider, owner)) = &existing
            && (provider != i.provider || owner.as_deref() != Some(i.owner))
        {
            w.rollback().await?;
            return Err(StoreError::InviteMismatch {
                name: i.name.to_owned(),
                provider: provider.clone(),
                owner: owner.clone(),
            });
        }
        let invite = sql(concat!(
            "INSERT INTO enroll_invite (token_hash, name, provider, owner, scopes, reauthorize, \
                created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            invite_columns!()
        ))
        .bind(i.token_hash)
        .bind(i.name)
        .bind(i.provider)
        .bind(i.owner)
        .bind(i.scopes)
        .bind(existing.is_some())
        .bind(now)
        .bind(i.expires_at)
        .fetch_one(w.conn())
        .await?;
        w.commit().await?;
        Ok(invite)
    }

    /// The links not spent, revoked or expired at `now` (of credential `name`, when given).
    pub(in crate::store) async fn outstanding_invites(
        &self,
        name: Option<&str>,
        now: UnixTime,
    ) -> Result<Vec<Invite>, StoreError> {
        Ok(sql(concat!(
            "SELECT ",
            invite_columns!(),
            " FROM enroll_invite WHERE spent_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
               AND ($2 IS NULL OR name = $2) ORDER BY id"
        ))
        .bind(now)
        .bind(name)
        .fetch_all(self.read().await?.conn())
        .await?)
    }

    /// A credential's provider, owner and scopes.
    pub(in crate::store) async fn credential_binding(
        &self,
        name: &str,
    ) -> Result<Option<(String, Option<String>, Option<String>)>, StoreError> {
        Ok(
            sql("SELECT provider, owner, scopes FROM oauth_credential WHERE name = $1")
                .bind(name)
                .fetch_optional(self.read().await?.conn())
                .await?,
        )
    }

    /// The link whose secret hashes to `token_hash`.
    pub(in crate::store) async fn invite_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invite>, StoreError> {
        Ok(sql(concat!(
            "SELECT ",
            invite_columns!(),
            " FROM enroll_invite WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.read().await?.conn())
        .await?)
    }

    /// Revokes link `id` if still outstanding; the link and whether this revoked it.
    pub(in crate::store) async fn revoke_invite(
        &self,
        id: i64,
        now: UnixTime,
    ) -> Result<Option<(Invite, bool)>, StoreError> {
        let mut w = self.write().await?;
        let changed = sql("UPDATE enroll_invite SET revoked_at = $1 \
             WHERE id = $2 AND spent_at IS NULL AND revoked_at IS NULL AND expires_at > $1")
        .bind(now)
        .bind(id)
        .execute(w.conn())
        .await?
            > 0;
        let invite: Option<Invite> = sql(concat!(
            "SELECT ",
            invite_columns!(),
            " FROM enroll_invite WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(w.conn())
        .await?;
        w.commit().await?;
        Ok(invite.map(|i| (i, changed)))
    }
}

/// Spends `a`'s link (if it came through one) for its credential inside the caller's transaction:
/// only a link not spent, revoked or expired at `now` ([`StoreError::InviteGone`] otherwise), so
/// that of two transactions spending one link exactly one does (SQLite: the write lock;
/// PostgreSQL: the second UPDATE waits on the row, then finds it spent). A credential of that name
/// must have the provider and owner `a` names ([`StoreError::InviteMismatch`] otherwise).
pub(in crate::store) async fn spend_invite(
    mut conn: Conn<'_>,
    a: &Authorized<'_>,
    now: UnixTime,
) -> Result<(), StoreError> {
    let Some(id) = a.invite else {
        return Ok(());
    };
    let spent: Option<(i64,)> = sql(
        "UPDATE enroll_invite SET spent_at = $1 \
         WHERE id = $2 AND name = $3 AND spent_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
         RETURNING id",
    )
    .bind(now)
    .bind(id)
    .bind(a.name)
    .fetch_optional(conn.reborrow())
    .await?;
    if spent.is_none() {
        return Err(StoreError::InviteGone(a.name.to_owned()));
    }
    let existing: Option<(String, Option<String>)> =
        sql("SELECT provider, owner FROM oauth_credential WHERE name = $1")
            .bind(a.name)
            .fetch_optional(conn)
            .await?;
    match existing {
        Some((provider, owner)) if provider != a.provider || owner.as_deref() != a.owner => {
            Err(StoreError::InviteMismatch {
                name: a.name.to_owned(),
                provider,
                owner,
            })
        }
        _ => Ok(()),
    }
}
