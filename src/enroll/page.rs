//! One answer of the invitation pages ([`Page`]: a status, a document or a redirect, and the
//! headers every answer carries), and the plain pages for what went wrong. Imports `domain`,
//! `lifecycle` and `store`.

use tracing::{info, warn};

use super::html::{self, document, para};
use crate::domain;
use crate::lifecycle::authorize::AuthorizeError;
use crate::store::{Invite, InviteState, StoreError};

/// One answer: a status and a document, or a redirect.
#[derive(Debug)]
pub struct Page {
    pub status: http::StatusCode,
    pub html: String,
    /// `303 See Other` to here (the provider's authorization endpoint).
    pub location: Option<String>,
    /// An origin forms on this page may go to besides the page's own (`form-action`).
    pub(super) form_to: Option<String>,
}

impl Page {
    pub(super) fn plain(status: http::StatusCode, title: &str, text: &str) -> Self {
        Self {
            status,
            html: document(title, &para(text)),
            location: None,
            form_to: None,
        }
    }

    /// The headers to send with it: the security headers, the content type, the redirect.
    #[must_use]
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = html::security_headers(self.form_to.as_deref());
        headers.push(("Content-Type", "text/html; charset=utf-8".to_owned()));
        if let Some(location) = &self.location {
            headers.push(("Location", location.clone()));
        }
        headers
    }
}

/// The page for a link that can no longer be used, if it cannot.
pub(super) fn unusable(invite: &Invite) -> Option<Page> {
    let (title, text) = match invite.state(domain::now()) {
        InviteState::Usable => return None,
        InviteState::Spent => (
            "Link already used",
            "This link was already used to authorize the credential. A link works once; ask the administrator for a new one if you need to authorize again.",
        ),
        InviteState::Revoked => (
            "Link withdrawn",
            "The administrator withdrew this link. Ask them for a new one.",
        ),
        InviteState::Expired => (
            "Link expired",
            "This link has expired. Ask the administrator for a new one.",
        ),
    };
    Some(Page::plain(http::StatusCode::GONE, title, text))
}

pub(super) fn unknown_link() -> Page {
    Page::plain(
        http::StatusCode::NOT_FOUND,
        "Unknown link",
        "This link is not known here. Check that you opened the whole link you were sent.",
    )
}

pub(super) fn not_allowed() -> Page {
    Page::plain(
        http::StatusCode::METHOD_NOT_ALLOWED,
        "Not allowed",
        "This page is opened with a link and its button only.",
    )
}

pub(super) fn provider_gone(invite: &Invite) -> Page {
    warn!(invite = invite.id, provider = %invite.provider, "invitation names a provider that is not configured");
    Page::plain(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "Provider not configured",
        "The provider this link is for is no longer configured here. Tell the administrator who sent you the link.",
    )
}

pub(super) fn store_failed(e: &StoreError) -> Page {
    warn!(error = %e, "invitation pages: the database failed");
    Page::plain(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "Try again later",
        "tokenwarden cannot reach its database just now. Nothing was stored. Try the link again in a few minutes.",
    )
}

pub(super) fn exchange_failed(invite: &Invite, e: &AuthorizeError) -> Page {
    info!(invite = invite.id, credential = %invite.name, error = %e, "invitation sign-in: the code exchange failed");
    Page::plain(
        http::StatusCode::BAD_GATEWAY,
        "The provider did not hand out tokens",
        &format!("{e} The link still works: open it again to retry, or tell the administrator."),
    )
}
