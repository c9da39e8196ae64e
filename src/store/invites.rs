//! Invitations (`tokenwarden invite`): one-time links kept as the SHA-256 of their secret, never
//! the secret; each bound to a credential's name, provider, owner and scopes, expiring, revocable,
//! and spent by the transaction that stores what it obtained (`store_authorized` with
//! [`Authorized::invite`](super::Authorized), so that of two uses at once exactly one stores
//! anything). The SQL is the backends' (`transactions/invites.rs`). Imports `domain` only.

use sqlx::FromRow;

use super::{Store, StoreError};
use crate::domain::UnixTime;

/// A link to record: what it authorizes, and the hash of its secret.
#[derive(Debug)]
pub struct NewInvite<'a> {
    /// Hex SHA-256 of the link's secret.
    pub token_hash: &'a str,
    pub name: &'a str,
    pub provider: &'a str,
    pub owner: &'a str,
    /// `None`: the provider's configured scopes.
    pub scopes: Option<&'a str>,
    pub expires_at: UnixTime,
}

/// One recorded link, as `invite --list`, `status` and the pages see it (never its secret).
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct Invite {
    pub id: i64,
    pub name: String,
    pub provider: String,
    pub owner: String,
    pub scopes: Option<String>,
    /// The credential existed when the link was made: the link re-authorizes it.
    pub reauthorize: bool,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub spent_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
}

/// Whether a link can still be used, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteState {
    Usable,
    Spent,
    Revoked,
    Expired,
}

impl Invite {
    /// This link's state at `now` (spent and revoked before expired: they say more).
    #[must_use]
    pub fn state(&self, now: UnixTime) -> InviteState {
        if self.spent_at.is_some() {
            InviteState::Spent
        } else if self.revoked_at.is_some() {
            InviteState::Revoked
        } else if self.expires_at <= now {
            InviteState::Expired
        } else {
            InviteState::Usable
        }
    }
}

impl Store {
    /// Records a link. For a credential that exists already, the link re-authorizes it, and only
    /// with the provider and owner it has ([`StoreError::InviteMismatch`] otherwise).
    pub async fn create_invite(
        &self,
        invite: &NewInvite<'_>,
        now: UnixTime,
    ) -> Result<Invite, StoreError> {
        self.db.create_invite(invite, now).await
    }

    /// The links not spent, revoked or expired at `now`, oldest first; of one credential when
    /// `name` is given.
    pub async fn outstanding_invites(
        &self,
        name: Option<&str>,
        now: UnixTime,
    ) -> Result<Vec<Invite>, StoreError> {
        self.db.outstanding_invites(name, now).await
    }

    /// A credential's provider, owner and scopes (what a re-authorization link is bound to);
    /// `None`: no such credential.
    pub async fn credential_binding(
        &self,
        name: &str,
    ) -> Result<Option<(String, Option<String>, Option<String>)>, StoreError> {
        self.db.credential_binding(name).await
    }

    /// The link whose secret hashes to `token_hash`, whatever its state.
    pub async fn invite_by_hash(&self, token_hash: &str) -> Result<Option<Invite>, StoreError> {
        self.db.invite_by_hash(token_hash).await
    }

    /// Revokes link `id` if it is still outstanding; returns it and whether this revoked it
    /// (`None`: no such link). A spent, expired or revoked link is returned unchanged.
    pub async fn revoke_invite(
        &self,
        id: i64,
        now: UnixTime,
    ) -> Result<Option<(Invite, bool)>, StoreError> {
        self.db.revoke_invite(id, now).await
    }
}
