//! Reads for the consumers of tokens: one credential's current token with what decides whether
//! it must be renewed (status, expiry, lease), and the credentials of an owner at a provider.

use sqlx::FromRow;

use super::{Store, StoreError};
use crate::domain::{Secret, Status, UnixTime};

/// A credential's current access token, and what decides whether it must be renewed first.
#[derive(Debug, Clone, FromRow)]
pub struct TokenState {
    /// The row's id: sealed values are bound to it.
    pub id: i64,
    pub name: String,
    pub provider: String,
    #[sqlx(try_from = "String")]
    pub status: Status,
    pub access_token: Option<Secret>,
    pub token_type: Option<String>,
    pub access_token_expires_at: Option<UnixTime>,
    /// Salesforce's API host, when the provider named one.
    pub instance_url: Option<String>,
    /// Until when a process holds the credential's lease (a refresh may be in flight), if any.
    pub lease_expires_at: Option<UnixTime>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Not tried again before this (backoff after a failure, a provider's Retry-After).
    pub next_attempt_at: UnixTime,
}

impl Store {
    /// The current token of `name`, opened (when sealed), if there is such a credential.
    pub async fn token_state(&self, name: &str) -> Result<Option<TokenState>, StoreError> {
        let row = self.db.token_state(name).await?;
        let Some(mut row) = row else {
            return Ok(None);
        };
        if let Some(stored) = row.access_token.take() {
            row.access_token = Some(self.open_access_token(row.id, name, &stored)?);
        }
        Ok(Some(row))
    }

    /// The names of `owner`'s credentials at `provider` that are not disabled, by name.
    pub async fn owned_by(&self, provider: &str, owner: &str) -> Result<Vec<String>, StoreError> {
        self.db.owned_by(provider, owner).await
    }

    /// Refuses a credential for `owner` at `provider` when another one (not named `name`, not
    /// disabled) already belongs to them: `add` and `authorize` call it unless told to allow it.
    pub async fn ensure_owner_free(
        &self,
        provider: &str,
        owner: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let others: Vec<String> = self
            .owned_by(provider, owner)
            .await?
            .into_iter()
            .filter(|other| other != name)
            .collect();
        if others.is_empty() {
            Ok(())
        } else {
            Err(StoreError::OwnerTaken {
                provider: provider.to_owned(),
                owner: owner.to_owned(),
                names: others,
            })
        }
    }
}
