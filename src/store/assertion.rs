//! Credentials of the jwt-bearer grant (RFC 7523 §2.1): no refresh token, and the subject their
//! assertions name. Imported like `add` imports others, in one transaction.

use super::records::NewCredential;
use super::{Store, StoreError};
use crate::domain::UnixTime;

impl Store {
    /// Imports a jwt-bearer credential for `subject` (the assertion's `sub`; `None`: none sent),
    /// due at once. With `replace`, an existing credential of that name becomes this one, active
    /// again, its old tokens dropped; without, it is an error.
    pub async fn add_jwt_bearer(
        &self,
        c: &NewCredential<'_>,
        subject: Option<&str>,
        replace: bool,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let exists: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM oauth_credential WHERE name = ?1")
                .bind(c.name)
                .fetch_optional(&mut *tx)
                .await?;
        match (exists, replace) {
            (Some(_), false) => return Err(StoreError::Exists(c.name.to_owned())),
            (Some((id,)), true) => {
                sqlx::query(
                    "UPDATE oauth_credential SET provider = ?1, grant_type = 'jwt_bearer', scopes = ?2, owner = ?3, \
                        subject = ?4, refresh_token = NULL, access_token = NULL, token_type = NULL, \
                        access_token_expires_at = NULL, refresh_token_expires_at = NULL, instance_url = NULL, \
                        status = 'active', refresh_due_at = 0, consecutive_failures = 0, next_attempt_at = 0, \
                        last_error = NULL, revoke_pending = 0, updated_at = ?5 WHERE id = ?6",
                )
                .bind(c.provider)
                .bind(c.scopes)
                .bind(c.owner)
                .bind(subject)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            (None, _) => {
                sqlx::query(
                    "INSERT INTO oauth_credential (name, provider, grant_type, scopes, owner, subject, \
                        refresh_due_at, created_at, updated_at) VALUES (?1, ?2, 'jwt_bearer', ?3, ?4, ?5, 0, ?6, ?6)",
                )
                .bind(c.name)
                .bind(c.provider)
                .bind(c.scopes)
                .bind(c.owner)
                .bind(subject)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
