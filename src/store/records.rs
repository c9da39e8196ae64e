//! Reads and writes behind the CLI: import a credential, list them for `status`, read a current
//! token, read the rotation journal; store an authorization, claim and settle a revocation.

use sqlx::FromRow;

use super::seal::{Column, Place};
use super::{Store, StoreError};
use crate::domain::{GrantType, Secret, TokenSet, UnixTime, Unreadable};

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
    /// The API host the provider named with the tokens, if any (Salesforce).
    pub instance_url: Option<String>,
    /// The process holding the claim (see `holder::Holder`), if any.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// When the newest attempt still pending in the journal started: one is in flight, or was
    /// interrupted.
    pub attempt_started_at: Option<i64>,
    /// How the refresh token is stored: the id of the key that seals it, `plaintext`, or
    /// `malformed`; `None` when there is none.
    pub refresh_token_key: Option<String>,
    /// The same for the access token.
    pub access_token_key: Option<String>,
}

/// The current access token of one credential.
#[derive(Debug, FromRow)]
pub struct TokenRow {
    id: i64,
    pub status: String,
    /// Opened, when it was sealed.
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
    /// Whether the response carried expires_in (successful refreshes only).
    pub expires_in_reported: Option<bool>,
}

/// Tokens obtained by authorizing a credential (the authorization-code grant), ready to store.
#[derive(Debug)]
pub struct Authorized<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    /// The scopes asked for; `None`: the provider's configured scopes.
    pub scopes: Option<&'a str>,
    /// `None` keeps the owner of a credential authorized again.
    pub owner: Option<&'a str>,
    pub tokens: &'a TokenSet,
    pub refresh_due_at: UnixTime,
    pub http_status: Option<u16>,
    pub duration_ms: i64,
    /// Names this process in the journal's `lease_owner` column.
    pub actor: &'a str,
}

/// What an authorization did to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizedAs {
    Created,
    /// An existing credential got the new tokens; `status` is what it was before.
    Replaced {
        status: String,
        revoke_pending: bool,
    },
}

/// A credential claimed for revocation: its tokens (opened), under this process's lease. A token
/// that cannot be opened (altered) is `None`: it is not sent, and the rest goes on.
#[derive(Debug, FromRow)]
pub struct RevocationClaim {
    pub id: i64,
    pub name: String,
    pub provider: String,
    pub status: String,
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    pub access_token_expires_at: Option<i64>,
    pub consecutive_failures: i64,
    /// The tokens as stored, for the compare-and-swap of `settle_revocation`.
    #[sqlx(skip)]
    stored: (Option<Secret>, Option<Secret>),
}

/// What `claim_for_revocation` found.
#[derive(Debug)]
pub enum RevocationClaimed {
    Claimed(RevocationClaim),
    NotFound,
    /// Another process holds the lease (a refresh is in flight).
    Busy,
}

/// How a revocation attempt ended, ready to store.
#[derive(Debug, Clone, Copy)]
pub enum RevocationResult<'a> {
    /// The provider revoked the tokens: the row is deleted, its journal kept.
    Revoked { http_status: Option<u16> },
    /// The provider could not take it now: the row becomes disabled and revoke-pending, tried
    /// again from `next_attempt_at`.
    Pending {
        next_attempt_at: UnixTime,
        last_error: &'a str,
        error_code: Option<&'a str>,
        http_status: Option<u16>,
    },
    /// The provider refused (a client or configuration problem): the row is left as it was.
    Refused {
        last_error: &'a str,
        error_code: Option<&'a str>,
        http_status: Option<u16>,
    },
}

/// The columns a revocation claim returns, as `RevocationClaim` reads them.
macro_rules! revocation_returning {
    () => {
        " RETURNING id, name, provider, status, access_token, refresh_token, access_token_expires_at, \
          consecutive_failures"
    };
}

impl Store {
    /// Stores an authorization: a new credential, or new tokens for an existing one, which becomes
    /// active again (failures, backoff, last error and any pending revocation cleared). Journaled
    /// as outcome `authorized`, trigger `manual`, in the same transaction.
    pub async fn store_authorized(
        &self,
        a: &Authorized<'_>,
        now: UnixTime,
    ) -> Result<AuthorizedAs, StoreError> {
        let t = a.tokens;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let existing: Option<(i64, String, bool, Option<Secret>)> = sqlx::query_as(
            "SELECT id, status, revoke_pending, refresh_token FROM oauth_credential WHERE name = ?1",
        )
        .bind(a.name)
        .fetch_optional(&mut *tx)
        .await?;
        let (id, how, old_refresh) = if let Some((id, status, revoke_pending, old)) = existing {
            let (access, refresh) = self.stored_pair(id, a.name, t);
            let old = old.map(|o| self.fingerprint_of(id, a.name, &o));
            sqlx::query(
                "UPDATE oauth_credential SET provider = ?1, grant_type = 'refresh_token', scopes = ?2, \
                    owner = COALESCE(?3, owner), access_token = ?4, token_type = ?5, access_token_expires_at = ?6, \
                    refresh_token = CASE WHEN ?7 IS NULL AND provider = ?1 THEN refresh_token ELSE ?7 END, \
                    refresh_token_expires_at = CASE WHEN ?7 IS NULL AND provider = ?1 THEN refresh_token_expires_at ELSE ?8 END, \
                    status = 'active', refresh_due_at = ?9, \
                    consecutive_failures = 0, next_attempt_at = 0, last_error = NULL, revoke_pending = 0, \
                    instance_url = ?12, last_refreshed_at = ?10, updated_at = ?10 WHERE id = ?11",
            )
            .bind(a.provider)
            .bind(a.scopes)
            .bind(a.owner)
            .bind(&access)
            .bind(&t.token_type)
            .bind(t.expires_at)
            .bind(&refresh)
            .bind(t.refresh_token_expires_at)
            .bind(a.refresh_due_at)
            .bind(now)
            .bind(id)
            .bind(&t.instance_url)
            .execute(&mut *tx)
            .await?;
            let how = AuthorizedAs::Replaced {
                status,
                revoke_pending,
            };
            (id, how, old)
        } else {
            // The row id is part of what seals the tokens: insert, then store them.
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO oauth_credential (name, provider, grant_type, scopes, owner, token_type, \
                    access_token_expires_at, refresh_token_expires_at, refresh_due_at, \
                    last_refreshed_at, created_at, updated_at, instance_url) \
                 VALUES (?1, ?2, 'refresh_token', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9, ?10) RETURNING id",
            )
            .bind(a.name)
            .bind(a.provider)
            .bind(a.scopes)
            .bind(a.owner)
            .bind(&t.token_type)
            .bind(t.expires_at)
            .bind(t.refresh_token_expires_at)
            .bind(a.refresh_due_at)
            .bind(now)
            .bind(&t.instance_url)
            .fetch_one(&mut *tx)
            .await?;
            let (access, refresh) = self.stored_pair(id, a.name, t);
            sqlx::query(
                "UPDATE oauth_credential SET access_token = ?1, refresh_token = ?2 WHERE id = ?3",
            )
            .bind(access)
            .bind(refresh)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            (id, AuthorizedAs::Created, None)
        };
        sqlx::query(
            "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at, \
                finished_at, duration_ms, outcome, http_status, new_expires_at, refresh_token_rotated, \
                old_refresh_fingerprint, new_refresh_fingerprint, new_access_fingerprint) \
             VALUES (?1, ?2, ?3, 'manual', ?4, ?5, ?6, ?7, 'authorized', ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .bind(id)
        .bind(a.name)
        .bind(a.provider)
        .bind(a.actor)
        .bind(now - a.duration_ms / 1000)
        .bind(now)
        .bind(a.duration_ms)
        .bind(a.http_status)
        .bind(t.expires_at)
        .bind(old_refresh.is_some())
        .bind(old_refresh.flatten())
        .bind(t.refresh_token.as_ref().map(Secret::fingerprint))
        .bind(t.access_token.fingerprint())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(how)
    }

    /// A token set's access and refresh tokens in their stored form for credential `id`/`name`.
    fn stored_pair(&self, id: i64, name: &str, t: &TokenSet) -> (Secret, Option<Secret>) {
        let place = |column| Place { id, name, column };
        let access = self
            .sealer
            .to_stored(place(Column::AccessToken), &t.access_token);
        let refresh = t
            .refresh_token
            .as_ref()
            .map(|rt| self.sealer.to_stored(place(Column::RefreshToken), rt));
        (access, refresh)
    }

    /// The journal's fingerprint of a stored refresh token; one that does not open has none.
    fn fingerprint_of(&self, id: i64, name: &str, stored: &Secret) -> Option<String> {
        let place = Place {
            id,
            name,
            column: Column::RefreshToken,
        };
        self.sealer
            .open(place, stored)
            .ok()
            .map(|t| t.fingerprint())
    }

    /// Claims credential `name`, whatever its status, for revocation: no refresh of it can be in
    /// flight while the lease lasts.
    pub async fn claim_for_revocation(
        &self,
        name: &str,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
    ) -> Result<RevocationClaimed, StoreError> {
        const SQL: &str = concat!(
            "UPDATE oauth_credential SET lease_owner = ?1, lease_expires_at = ?2 \
             WHERE name = ?3 AND (lease_expires_at IS NULL OR lease_expires_at <= ?4)",
            revocation_returning!()
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let claim: Option<RevocationClaim> = sqlx::query_as(SQL)
            .bind(owner)
            .bind(lease_until)
            .bind(name)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let found = if let Some(claim) = claim {
            // An error rolls the claim back.
            RevocationClaimed::Claimed(self.open_revocation(claim)?)
        } else {
            let row: Option<(i64,)> =
                sqlx::query_as("SELECT id FROM oauth_credential WHERE name = ?1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if row.is_some() {
                RevocationClaimed::Busy
            } else {
                RevocationClaimed::NotFound
            }
        };
        tx.commit().await?;
        Ok(found)
    }

    /// Claims up to `limit` credentials whose revocation is pending and due again.
    pub async fn claim_pending_revocations(
        &self,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        limit: usize,
    ) -> Result<Vec<RevocationClaim>, StoreError> {
        const SQL: &str = concat!(
            "UPDATE oauth_credential SET lease_owner = ?1, lease_expires_at = ?2 \
             WHERE id IN (SELECT id FROM oauth_credential \
                WHERE revoke_pending = 1 AND status = 'disabled' AND next_attempt_at <= ?3 \
                  AND (lease_expires_at IS NULL OR lease_expires_at <= ?3) \
                ORDER BY next_attempt_at LIMIT ?4)",
            revocation_returning!()
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let claims: Vec<RevocationClaim> = sqlx::query_as(SQL)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        let claims = claims
            .into_iter()
            .map(|c| self.open_revocation(c))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok(claims)
    }

    /// Opens a revocation claim's tokens, keeping what was stored for the compare-and-swap. A
    /// token under a key this process lacks is an error (the claim is rolled back: a newer
    /// configuration can still revoke it); an altered one is left out.
    fn open_revocation(&self, mut claim: RevocationClaim) -> Result<RevocationClaim, StoreError> {
        let stored = (claim.access_token.take(), claim.refresh_token.take());
        for (column, stored, opened) in [
            (Column::AccessToken, &stored.0, &mut claim.access_token),
            (Column::RefreshToken, &stored.1, &mut claim.refresh_token),
        ] {
            let Some(stored) = stored else { continue };
            let place = Place {
                id: claim.id,
                name: &claim.name,
                column,
            };
            *opened = match self.sealer.open(place, stored) {
                Ok(token) => Some(token),
                Err(reason @ Unreadable::UnknownKey(_)) => {
                    return Err(StoreError::Unreadable {
                        name: claim.name.clone(),
                        column: column.as_str(),
                        reason,
                    });
                }
                Err(_) => None,
            };
        }
        claim.stored = stored;
        Ok(claim)
    }

    /// Gives back a revocation claim that sent nothing (the provider cannot revoke).
    pub async fn release_revocation(
        &self,
        claim: &RevocationClaim,
        owner: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE oauth_credential SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ?1 AND lease_owner = ?2",
        )
        .bind(claim.id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores how a revocation ended and journals it (trigger `trigger`), in one transaction.
    pub async fn settle_revocation(
        &self,
        claim: &RevocationClaim,
        owner: &str,
        trigger: &str,
        now: UnixTime,
        duration_ms: i64,
        result: RevocationResult<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (outcome, http_status, error_code, error_description) = match result {
            RevocationResult::Revoked { http_status } => {
                // Only the tokens that were revoked: a credential authorized again meanwhile stays.
                sqlx::query(
                    "DELETE FROM oauth_credential WHERE id = ?1 AND refresh_token IS ?2 AND access_token IS ?3",
                )
                .bind(claim.id)
                .bind(&claim.stored.1)
                .bind(&claim.stored.0)
                .execute(&mut *tx)
                .await?;
                ("revoked", http_status, None, None)
            }
            RevocationResult::Pending {
                next_attempt_at,
                last_error,
                error_code,
                http_status,
            } => {
                sqlx::query(
                    "UPDATE oauth_credential SET status = 'disabled', revoke_pending = 1, \
                        consecutive_failures = consecutive_failures + 1, next_attempt_at = ?1, last_error = ?2, \
                        updated_at = ?3, \
                        lease_owner = CASE WHEN lease_owner = ?4 THEN NULL ELSE lease_owner END, \
                        lease_expires_at = CASE WHEN lease_owner = ?4 THEN NULL ELSE lease_expires_at END \
                     WHERE id = ?5 AND refresh_token IS ?6 AND access_token IS ?7",
                )
                .bind(next_attempt_at)
                .bind(format!("revocation pending: {last_error}"))
                .bind(now)
                .bind(owner)
                .bind(claim.id)
                .bind(&claim.stored.1)
                .bind(&claim.stored.0)
                .execute(&mut *tx)
                .await?;
                (
                    "revocation_pending",
                    http_status,
                    error_code,
                    Some(last_error),
                )
            }
            RevocationResult::Refused {
                last_error,
                error_code,
                http_status,
            } => {
                sqlx::query(
                    "UPDATE oauth_credential SET lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = ?1 AND lease_owner = ?2",
                )
                .bind(claim.id)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
                (
                    "revocation_refused",
                    http_status,
                    error_code,
                    Some(last_error),
                )
            }
        };
        sqlx::query(
            "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at, \
                finished_at, duration_ms, outcome, http_status, error_code, error_description, old_expires_at, \
                old_refresh_fingerprint) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .bind(claim.id)
        .bind(&claim.name)
        .bind(&claim.provider)
        .bind(trigger)
        .bind(owner)
        .bind(now - duration_ms / 1000)
        .bind(now)
        .bind(duration_ms)
        .bind(outcome)
        .bind(http_status)
        .bind(error_code)
        .bind(error_description)
        .bind(claim.access_token_expires_at)
        .bind(claim.refresh_token.as_ref().map(Secret::fingerprint))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

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
        let seal = |id| {
            let place = Place {
                id,
                name: c.name,
                column: Column::RefreshToken,
            };
            c.refresh_token.map(|t| self.sealer.to_stored(place, t))
        };
        match (exists, replace) {
            (Some(_), false) => return Err(StoreError::Exists(c.name.to_owned())),
            (Some((id,)), true) => {
                sqlx::query(
                    "UPDATE oauth_credential SET provider = ?1, grant_type = ?2, scopes = ?3, owner = ?4, \
                        refresh_token = ?5, access_token = NULL, token_type = NULL, access_token_expires_at = NULL, \
                        refresh_token_expires_at = NULL, status = 'active', refresh_due_at = 0, consecutive_failures = 0, \
                        next_attempt_at = 0, last_error = NULL, revoke_pending = 0, updated_at = ?6 WHERE id = ?7",
                )
                .bind(c.provider)
                .bind(c.grant_type.as_str())
                .bind(c.scopes)
                .bind(c.owner)
                .bind(seal(id))
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            (None, _) => {
                // The row id is part of what seals the token: insert, then store it.
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO oauth_credential (name, provider, grant_type, scopes, owner, \
                        refresh_due_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6) RETURNING id",
                )
                .bind(c.name)
                .bind(c.provider)
                .bind(c.grant_type.as_str())
                .bind(c.scopes)
                .bind(c.owner)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("UPDATE oauth_credential SET refresh_token = ?1 WHERE id = ?2")
                    .bind(seal(id))
                    .bind(id)
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
                COALESCE(last_refreshed_at, created_at) AS last_success_at, instance_url, \
                lease_owner, lease_expires_at, \
                CASE WHEN refresh_token IS NULL THEN NULL WHEN substr(refresh_token, 1, 4) <> 'tw1:' THEN 'plaintext' \
                    WHEN substr(refresh_token, 13, 1) = ':' THEN substr(refresh_token, 5, 8) ELSE 'malformed' END \
                    AS refresh_token_key, \
                CASE WHEN access_token IS NULL THEN NULL WHEN substr(access_token, 1, 4) <> 'tw1:' THEN 'plaintext' \
                    WHEN substr(access_token, 13, 1) = ':' THEN substr(access_token, 5, 8) ELSE 'malformed' END \
                    AS access_token_key, \
                (SELECT max(started_at) FROM token_rotation t \
                  WHERE t.credential_id = c.id AND t.outcome = 'pending') AS attempt_started_at \
             FROM oauth_credential c ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The stored access token of `name` (opened), if there is such a credential.
    pub async fn token(&self, name: &str) -> Result<Option<TokenRow>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, status, access_token, token_type, access_token_expires_at FROM oauth_credential WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(mut row) = row else {
            return Ok(None);
        };
        if let Some(stored) = row.access_token.take() {
            let place = Place {
                id: row.id,
                name,
                column: Column::AccessToken,
            };
            let opened =
                self.sealer
                    .open(place, &stored)
                    .map_err(|reason| StoreError::Unreadable {
                        name: name.to_owned(),
                        column: Column::AccessToken.as_str(),
                        reason,
                    })?;
            row.access_token = Some(opened);
        }
        Ok(Some(row))
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
                new_refresh_fingerprint, expires_in_reported \
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
