//! Reads and writes behind the CLI: import a credential, list them for `status`, read a current
//! token, read the rotation journal.

use sqlx::FromRow;

use super::{Store, StoreError};
use crate::domain::{GrantType, Secret, UnixTime};

/// A credential to import.
#[derive(Debug)]
pub struct NewCredential<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub grant_type: GrantType,
    pub scopes: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub refresh_token: Option<&'a Secret>,
}

/// One row of `status`: everything but the tokens.
#[derive(Debug, FromRow, serde::Serialize)]
pub struct CredentialSummary {
    pub name: String,
    pub provider: String,
    pub owner: Option<String>,
    pub grant_type: String,
    pub status: String,
    pub access_token_expires_at: Option<i64>,
    pub refresh_token_expires_at: Option<i64>,
    pub refresh_due_at: i64,
    pub last_refreshed_at: Option<i64>,
    pub consecutive_failures: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    /// The last successful refresh, or when the credential was added.
    pub last_success_at: i64,
}

/// The current access token of one credential.
#[derive(Debug, FromRow)]
pub struct TokenRow {
    pub status: String,
    pub access_token: Option<Secret>,
    pub token_type: Option<String>,
    pub access_token_expires_at: Option<i64>,
}

/// One journaled refresh attempt.
#[derive(Debug, FromRow, serde::Serialize)]
pub struct RotationRecord {
    pub id: i64,
    pub credential_name: String,
    pub provider: String,
    pub trigger: String,
    pub started_at: i64,
    pub duration_ms: Option<i64>,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub error_code: Option<String>,
    pub error_description: Option<String>,
    pub old_expires_at: Option<i64>,
    pub new_expires_at: Option<i64>,
    pub refresh_token_rotated: Option<bool>,
    pub old_refresh_fingerprint: Option<String>,
    pub new_refresh_fingerprint: Option<String>,
}

impl Store {
    /// Imports a credential, due at once. With `replace`, an existing credential of that name gets
    /// the new refresh token and becomes active again; without, it is an error.
    pub async fn add(
        &self,
        c: &NewCredential<'_>,
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
                    "UPDATE oauth_credential SET provider = ?1, grant_type = ?2, scopes = ?3, owner = ?4, \
                        refresh_token = ?5, access_token = NULL, token_type = NULL, access_token_expires_at = NULL, \
                        refresh_token_expires_at = NULL, status = 'active', refresh_due_at = 0, consecutive_failures = 0, \
                        next_attempt_at = 0, last_error = NULL, updated_at = ?6 WHERE id = ?7",
                )
                .bind(c.provider)
                .bind(c.grant_type.as_str())
                .bind(c.scopes)
                .bind(c.owner)
                .bind(c.refresh_token)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            (None, _) => {
                sqlx::query(
                    "INSERT INTO oauth_credential (name, provider, grant_type, scopes, owner, refresh_token, \
                        refresh_due_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7)",
                )
                .bind(c.name)
                .bind(c.provider)
                .bind(c.grant_type.as_str())
                .bind(c.scopes)
                .bind(c.owner)
                .bind(c.refresh_token)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every credential, by name, without tokens.
    pub async fn summaries(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, provider, owner, grant_type, status, access_token_expires_at, refresh_token_expires_at, \
                refresh_due_at, last_refreshed_at, consecutive_failures, next_attempt_at, last_error, \
                COALESCE(last_refreshed_at, created_at) AS last_success_at \
             FROM oauth_credential ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The stored access token of `name`, if there is such a credential.
    pub async fn token(&self, name: &str) -> Result<Option<TokenRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT status, access_token, token_type, access_token_expires_at FROM oauth_credential WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether a credential called `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM oauth_credential WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The newest `limit` journal entries, of one credential or all, oldest first.
    pub async fn rotations(
        &self,
        name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RotationRecord>, StoreError> {
        let mut rows: Vec<RotationRecord> = sqlx::query_as(
            "SELECT id, credential_name, provider, trigger, started_at, duration_ms, outcome, http_status, error_code, \
                error_description, old_expires_at, new_expires_at, refresh_token_rotated, old_refresh_fingerprint, \
                new_refresh_fingerprint \
             FROM token_rotation WHERE ?1 IS NULL OR credential_name = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.reverse();
        Ok(rows)
    }
}
