//! A credential's first tokens into the store: runs `lifecycle`'s grants and stores what they
//! obtained (journaled `authorized`), as `sweep` does for `refresh`, due again by the sweep's
//! rule (`Policy::due_at`). Imports `domain`, `http`, `lifecycle`, `provider`, `store` and `sweep`.
//! `enroll/invite.rs` makes the one-time links of `tokenwarden invite`; `enroll/pages.rs` answers
//! the requests of an owner's browser (link -> consent -> provider -> callback -> stored),
//! `enroll/page.rs` is one answer (and the plain pages for what went wrong), `enroll/html.rs`
//! renders documents and headers, `enroll/identity.rs` reads which account consented.

use crate::domain::{self, UnixTime};
use crate::http::Transport;
use crate::lifecycle::authorize::{self, AuthorizeError, DeviceRequest, Obtained, Prompt, Request};
use crate::lifecycle::device::UserPrompt;
pub use crate::store::AuthorizedAs;
use crate::store::{Authorized, Store, StoreError};
use crate::sweep::Policy;

mod html;
pub mod identity;
pub mod invite;
mod page;
pub mod pages;

/// Where obtained tokens go: the credential, and how its next refresh is timed.
#[derive(Debug)]
pub struct Target<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    /// `--scopes`; `None`: the provider's scopes.
    pub scopes: Option<&'a str>,
    pub owner: Option<&'a str>,
    /// Says when the credential is next due (`Policy::due_at`, as the sweep does).
    pub policy: &'a Policy,
}

/// A stored authorization.
#[derive(Debug)]
pub struct Authorization {
    pub how: AuthorizedAs,
    pub expires_at: UnixTime,
    /// Whether the provider sent a refresh token (without one the credential cannot be refreshed).
    pub has_refresh_token: bool,
    /// The scope the provider reports granting, when it says.
    pub granted_scope: Option<String>,
}

/// The authorization-code grant, its tokens stored before the browser is told it worked.
///
/// # Errors
/// The grant's, or the store's (as [`AuthorizeError::Keep`], the `StoreError` next in the chain).
pub async fn authorize(
    store: &Store,
    transport: &Transport,
    grant: &Request<'_>,
    to: &Target<'_>,
    show: impl FnOnce(&Prompt),
) -> Result<Authorization, AuthorizeError> {
    authorize::authorize(transport, grant, show, async |obtained| {
        keep(store, to, &obtained, None).await.map_err(Into::into)
    })
    .await
}

/// The device grant, its tokens stored.
///
/// # Errors
/// The grant's, or the store's (as [`AuthorizeError::Keep`]).
pub async fn authorize_device(
    store: &Store,
    transport: &Transport,
    grant: &DeviceRequest<'_>,
    to: &Target<'_>,
    show: impl FnOnce(&UserPrompt),
) -> Result<Authorization, AuthorizeError> {
    let obtained = authorize::authorize_device(transport, grant, show).await?;
    keep(store, to, &obtained, None)
        .await
        .map_err(|e| AuthorizeError::Keep(e.into()))
}

/// Stores tokens an authorization obtained (journaled `authorized`), the one way every grant
/// does; through invitation `invite` (spent in the same transaction), by the pages.
pub(crate) async fn keep(
    store: &Store,
    to: &Target<'_>,
    obtained: &Obtained,
    invite: Option<i64>,
) -> Result<Authorization, StoreError> {
    let now = domain::now();
    let tokens = &obtained.tokens;
    let authorized = Authorized {
        name: to.name,
        provider: to.provider,
        scopes: to.scopes,
        owner: to.owner,
        tokens,
        refresh_due_at: to.policy.due_at(to.name, now, tokens.expires_at),
        http_status: obtained.http_status,
        duration_ms: obtained.duration_ms,
        actor: &format!(
            "{}-{}",
            if invite.is_some() {
                "invite"
            } else {
                "authorize"
            },
            std::process::id()
        ),
        invite,
    };
    let how = store.store_authorized(&authorized, now).await?;
    Ok(Authorization {
        how,
        expires_at: tokens.expires_at,
        has_refresh_token: tokens.refresh_token.is_some(),
        granted_scope: tokens.scope.clone(),
    })
}
