//! Reads and writes behind the CLI: import a credential, list them for `status`, read a current
//! token, read the rotation journal; store an authorization, claim and settle a revocation. The
//! SQL is the backends'; here tokens are sealed on their way in and opened on their way out.

use sqlx::FromRow;

use super::seal::{Column, Place};
use super::{Store, StoreError};
use crate::domain::{GrantType, Outcome, Secret, Status, TokenSet, UnixTime, Unreadable};

/// A credential to import.
#[derive(Debug)]
pub struct NewCredential<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub grant_type: GrantType,
    pub scopes: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub refresh_token: Option<&'a Secret>,
    /// jwt-bearer: the assertions' `sub` (`None`: none sent).
    pub subject: Option<&'a str>,
}

/// One row of `status`: everything but the tokens.
#[derive(Debug, FromRow, serde::Serialize)]
pub struct CredentialSummary {
    pub name: String,
    pub provider: String,
    pub owner: Option<String>,
    #[sqlx(try_from = "String")]
    pub grant_type: GrantType,
    #[sqlx(try_from = "String")]
    pub status: Status,
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
    /// When that attempt's request was sent, if it was.
    pub attempt_sent_at: Option<i64>,
    /// How the refresh token is stored: the id of the key that seals it, `plaintext`, or
    /// `malformed`; `None` when there is none.
    pub refresh_token_key: Option<String>,
    /// The same for the access token.
    pub access_token_key: Option<String>,
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
    #[sqlx(try_from = "String")]
    pub outcome: Outcome,
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
    /// The invitation this authorization came through (its id): spent in the same transaction
    /// (refused with [`StoreError::InviteGone`] when it no longer can be), an existing credential
    /// replaced only when its provider and owner are the link's, journaled with trigger `invite`.
    pub invite: Option<i64>,
}

impl Authorized<'_> {
    /// The journal's trigger: `invite` through a link, `manual` otherwise.
    pub(super) fn trigger(&self) -> &'static str {
        if self.invite.is_some() {
            "invite"
        } else {
            "manual"
        }
    }
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
    pub(super) stored: (Option<Secret>, Option<Secret>),
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

/// Table-wide figures of one provider and stored status, from one aggregate statement.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Aggregate {
    pub provider: String,
    pub status: String,
    pub credentials: i64,
    /// Active credentials that count as failing (`Failing`).
    pub failing: i64,
    /// Not disabled, and the access token expires (or expired) within the margin asked for.
    pub expiring: i64,
    /// The soonest access-token expiry of those not disabled.
    pub soonest_expiry: Option<UnixTime>,
    /// The oldest last successful refresh of those not disabled (never-refreshed ones left out).
    pub oldest_refresh: Option<UnixTime>,
    /// Not disabled, and the refresh token's known absolute expiry is at or before the window's
    /// `refresh_token_by`.
    pub refresh_token_expiring: i64,
    /// The soonest known refresh-token expiry of those not disabled.
    pub refresh_token_soonest_expiry: Option<UnixTime>,
    /// Claimed under a lease that has not run out: a refresh in flight (sweep or on-demand).
    pub renewals_in_flight: i64,
}

/// The horizons of [`Store::aggregates`]' "expiring" counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateWindow {
    /// Access tokens expiring at or before this count as expiring (`now + refresh_margin`).
    pub access_token_by: UnixTime,
    /// Refresh tokens expiring at or before this count as expiring (`now +
    /// refresh_token_warning`).
    pub refresh_token_by: UnixTime,
}

impl Store {
    /// Stores an authorization: a new credential, or new tokens for an existing one, which becomes
    /// active again (failures, backoff, last error and any pending revocation cleared). Journaled
    /// as outcome `authorized`, trigger `manual` (`invite` through a link), in the same transaction.
    pub async fn store_authorized(
        &self,
        a: &Authorized<'_>,
        now: UnixTime,
    ) -> Result<AuthorizedAs, StoreError> {
        let seal = |id| self.stored_pair(id, a.name, a.tokens);
        let fingerprint = |id, stored: &Secret| self.fingerprint_of(id, a.name, stored);
        self.db.store_authorized(a, now, &seal, &fingerprint).await
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
        let open = |claim| self.open_revocation(claim);
        let found = self
            .db
            .claim_for_revocation(name, owner, now, lease_until, &open)
            .await?;
        Ok(match found {
            Ok(claim) => RevocationClaimed::Claimed(claim),
            Err(true) => RevocationClaimed::Busy,
            Err(false) => RevocationClaimed::NotFound,
        })
    }

    /// Claims up to `limit` credentials whose revocation is pending and due again.
    pub async fn claim_pending_revocations(
        &self,
        owner: &str,
        now: UnixTime,
        lease_until: UnixTime,
        limit: usize,
    ) -> Result<Vec<RevocationClaim>, StoreError> {
        let open = |claim| self.open_revocation(claim);
        self.db
            .claim_pending_revocations(owner, now, lease_until, limit, &open)
            .await
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
        self.db.release_revocation(claim.id, owner).await
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
        self.db
            .settle_revocation(claim, owner, trigger, now, duration_ms, result)
            .await
    }

    /// Imports a credential, due at once. With `replace`, an existing credential of that name gets
    /// the new refresh token and becomes active again; without, it is an error.
    pub async fn add(
        &self,
        c: &NewCredential<'_>,
        replace: bool,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let seal = |id| {
            let place = Place {
                id,
                name: c.name,
                column: Column::RefreshToken,
            };
            c.refresh_token.map(|t| self.sealer.to_stored(place, t))
        };
        self.db.add(c, replace, now, &seal).await
    }

    /// Figures per provider and status over the whole table, in one aggregate statement:
    /// `expiring` and `refresh_token_expiring` count tokens expiring at or before the `window`'s
    /// horizons; `failing` and the claims in flight are judged at `now`.
    pub async fn aggregates(
        &self,
        now: UnixTime,
        window: AggregateWindow,
        failing: crate::domain::Failing,
    ) -> Result<Vec<Aggregate>, StoreError> {
        self.db.aggregates(now, window, failing).await
    }

    /// Every credential, by name, without tokens.
    pub async fn summaries(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        self.db.summaries().await
    }

    /// The access token of row `id` (credential `name`), opened from its stored form.
    pub(super) fn open_access_token(
        &self,
        id: i64,
        name: &str,
        stored: &Secret,
    ) -> Result<Secret, StoreError> {
        let place = Place {
            id,
            name,
            column: Column::AccessToken,
        };
        self.sealer
            .open(place, stored)
            .map_err(|reason| StoreError::Unreadable {
                name: name.to_owned(),
                column: Column::AccessToken.as_str(),
                reason,
            })
    }

    /// Whether a credential called `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        self.db.exists(name).await
    }

    /// The newest `limit` journal entries, of one credential or all, oldest first.
    pub async fn rotations(
        &self,
        name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RotationRecord>, StoreError> {
        let mut rows = self.db.rotations(name, limit).await?;
        rows.reverse();
        Ok(rows)
    }
}
