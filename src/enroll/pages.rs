//! What an owner's browser is answered, as plain functions of a request (`answer`), served by
//! `tokenwarden run` on `[enroll] listen`:
//!
//! - `GET /i/{secret}`: what the link authorizes (provider, scopes, owner) and one button. Looking
//!   (a person, or a chat tool's link preview) never uses the link up.
//! - `POST /i/{secret}`: the button. Starts the authorization-code grant (state, PKCE S256, the
//!   redirect URI `public_url` + `/callback`) and sends the browser to the provider with 303.
//! - `GET /callback`: the provider's redirect. The state must be one this process handed out and
//!   not yet seen (else forged or replayed: nothing happens); the code is exchanged, the tokens
//!   stored through `enroll::keep` with the link's id, which spends the link in the same
//!   transaction (so of two sign-ins through one link exactly one stores).
//!
//! Every other outcome (an unknown, spent, revoked or expired link, consent denied, a forged or
//! replayed callback, a provider or store failure) is a plain page saying what happened, with
//! nothing stored. The sign-ins in progress are kept in memory, bounded and expiring: a callback
//! must come back to the process that sent the browser away. Imports `config`, `domain`, `http`,
//! `lifecycle`, `provider` and `store`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::html::{self, document, escape, facts, para};
use super::invite::{LINK_PREFIX, looks_like_secret, secret_hash};
use super::page::{
    Page, exchange_failed, not_allowed, provider_gone, store_failed, unknown_link, unusable,
};
use super::{Target, identity};
use crate::config::EnrollSettings;
use crate::domain::{Secret, iso8601, sanitize};
use crate::http::Transport;
use crate::lifecycle::browser;
use crate::listener::{self, Handler, Limits, Peer, Socket};
use crate::provider::Providers;
use crate::store::{Invite, Store, StoreError};

/// Most sign-ins in progress at once; past it, a button is answered 503 until some finish or
/// expire (a flood of button presses cannot grow the process without bound).
pub const MAX_PENDING: usize = 256;

/// The pages' listener limits: a person's browser, a few requests per sign-in.
pub const LIMITS: Limits = Limits {
    header_read: Duration::from_secs(10),
    connection: Duration::from_mins(1),
    max_connections: 128,
    keep_alive: true,
};

/// The path of the provider's redirect back, under `public_url`.
pub const CALLBACK: &str = "/callback";

/// One request, as far as the pages look at it.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    pub method: &'a http::Method,
    /// The path as the listener received it (with or without `public_url`'s path in front).
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// A sign-in between the button and the provider's redirect back.
struct Flow {
    invite: Invite,
    token_hash: String,
    verifier: Secret,
    login_hint: Option<String>,
    started: Instant,
}

/// The pages' state; cheap to clone.
#[derive(Clone)]
pub struct Pages {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    providers: Providers,
    transport: Transport,
    /// `public_url`'s path (no trailing slash): stripped from a request path that carries it.
    base_path: String,
    callback_url: String,
    sign_in_timeout: Duration,
    /// Times the stored credential's next refresh, as the sweep does.
    policy: crate::sweep::Policy,
    /// Sign-ins in progress, by their state.
    pending: Mutex<HashMap<String, Flow>>,
}

impl Pages {
    /// `policy` times the stored credential's next refresh, as the sweep does.
    #[must_use]
    pub fn new(
        store: Store,
        providers: Providers,
        transport: Transport,
        settings: &EnrollSettings,
        policy: crate::sweep::Policy,
    ) -> Self {
        let base_path = url::Url::parse(settings.base_url())
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                store,
                providers,
                transport,
                base_path,
                callback_url: settings.callback_url(),
                sign_in_timeout: settings.sign_in_timeout,
                policy,
                pending: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The answer to one request.
    pub async fn answer(&self, req: PageRequest<'_>) -> Page {
        let path = req
            .path
            .strip_prefix(self.inner.base_path.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or(req.path);
        let get = req.method == http::Method::GET || req.method == http::Method::HEAD;
        let post = req.method == http::Method::POST;
        if let Some(secret) = path.strip_prefix(LINK_PREFIX) {
            return match (get, post) {
                (true, _) => self.preview(secret).await,
                (_, true) => self.start(secret).await,
                _ => not_allowed(),
            };
        }
        if path == CALLBACK {
            return if get {
                self.callback(req.query.unwrap_or_default()).await
            } else {
                not_allowed()
            };
        }
        Page::plain(
            http::StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing here. Open the link you were sent.",
        )
    }

    /// The link, if `secret` names one (whatever its state).
    async fn find(&self, secret: &str) -> Result<(Invite, String), Page> {
        if !looks_like_secret(secret) {
            return Err(unknown_link());
        }
        let hash = secret_hash(secret);
        match self.inner.store.invite_by_hash(&hash).await {
            Ok(Some(invite)) => Ok((invite, hash)),
            Ok(None) => Err(unknown_link()),
            Err(e) => Err(store_failed(&e)),
        }
    }

    /// `GET /i/{secret}`: what will be authorized, and the button. Spends nothing.
    async fn preview(&self, secret: &str) -> Page {
        let invite = match self.find(secret).await {
            Ok((invite, _)) => invite,
            Err(page) => return page,
        };
        if let Some(page) = unusable(&invite) {
            return page;
        }
        let Some(provider) = self.inner.providers.get(&invite.provider) else {
            return provider_gone(&invite);
        };
        let scopes = invite
            .scopes
            .clone()
            .unwrap_or_else(|| provider.scopes.join(" "));
        let what = if invite.reauthorize {
            "Re-authorize"
        } else {
            "Authorize"
        };
        let body = format!(
            "{intro}{facts}\
             <form method=\"post\" action=\"{action}\"><button type=\"submit\">Sign in at {provider} and authorize</button></form>\
             <p class=\"note\">Opening this page does not use the link up; only the button does. \
             The link works once. Sign in as {owner}: another account is refused.</p>",
            intro = para(&format!(
                "{what} tokenwarden to keep a token of yours at {} for credential {}.",
                invite.provider, invite.name
            )),
            facts = facts(&[
                ("Provider", &invite.provider),
                ("Account", &invite.owner),
                ("Scopes", &scopes),
                ("Credential", &invite.name),
                ("Link valid until", &iso8601(invite.expires_at)),
            ]),
            action = escape(secret),
            provider = escape(&invite.provider),
            owner = escape(&invite.owner),
        );
        debug!(invite = invite.id, "invitation page shown");
        Page {
            status: http::StatusCode::OK,
            html: document(&format!("{what} {}", invite.name), &body),
            location: None,
            form_to: provider
                .authorization_url
                .as_deref()
                .and_then(html::origin_of),
        }
    }

    /// `POST /i/{secret}`: the button. Sends the browser to the provider.
    async fn start(&self, secret: &str) -> Page {
        let (invite, token_hash) = match self.find(secret).await {
            Ok(found) => found,
            Err(page) => return page,
        };
        if let Some(page) = unusable(&invite) {
            return page;
        }
        let Some(provider) = self.inner.providers.get(&invite.provider) else {
            return provider_gone(&invite);
        };
        let login_hint = identity::login_hint(&invite.owner).map(str::to_owned);
        let begun = match browser::begin(
            provider,
            &self.inner.callback_url,
            invite.scopes.as_deref(),
            login_hint.as_deref(),
        ) {
            Ok(begun) => begun,
            Err(e) => {
                warn!(invite = invite.id, error = %e, "cannot start a sign-in");
                return Page::plain(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "Cannot start the sign-in",
                    "The provider's configuration does not allow a sign-in from here. Tell the administrator who sent you the link.",
                );
            }
        };
        let flow = Flow {
            invite,
            token_hash,
            verifier: begun.verifier,
            login_hint,
            started: Instant::now(),
        };
        let id = flow.invite.id;
        {
            let mut pending = self.pending();
            let timeout = self.inner.sign_in_timeout;
            pending.retain(|_, f| f.started.elapsed() < timeout);
            if pending.len() >= MAX_PENDING {
                warn!(
                    pending = pending.len(),
                    "too many sign-ins in progress; refusing another"
                );
                return Page::plain(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "Busy",
                    "Too many sign-ins are in progress. Try the link again in a few minutes.",
                );
            }
            pending.insert(begun.state.expose().to_owned(), flow);
        }
        debug!(invite = id, "sign-in started");
        Page {
            status: http::StatusCode::SEE_OTHER,
            html: document(
                "Signing in",
                &para("Continue at the provider to sign in and consent."),
            ),
            form_to: html::origin_of(&begun.url),
            location: Some(begun.url),
        }
    }

    /// `GET /callback?…`: the provider's redirect back.
    async fn callback(&self, query: &str) -> Page {
        let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let Some(flow) = params.get("state").and_then(|s| self.pending().remove(s)) else {
            debug!("a callback without a known state");
            return Page::plain(
                http::StatusCode::BAD_REQUEST,
                "Unknown sign-in",
                "This answer from the provider does not belong to a sign-in in progress here (it was already used, it expired, or it was not started from an invitation link). Nothing was stored. Open the link you were sent again.",
            );
        };
        if flow.started.elapsed() >= self.inner.sign_in_timeout {
            return Page::plain(
                http::StatusCode::BAD_REQUEST,
                "Sign-in expired",
                "The sign-in took too long. Nothing was stored. Open the link you were sent again.",
            );
        }
        let invite = &flow.invite;
        if let Some(error) = params.get("error") {
            let reason = match params.get("error_description") {
                Some(d) => format!("{error}: {d}"),
                None => error.clone(),
            };
            info!(invite = invite.id, credential = %invite.name, "consent refused at the provider");
            return Page::plain(
                http::StatusCode::FORBIDDEN,
                "Not authorized",
                &format!(
                    "The provider did not authorize tokenwarden ({}). Nothing was stored; the link still works if you want to try again.",
                    sanitize(&reason, &[])
                ),
            );
        }
        let Some(code) = params.get("code").map(|c| Secret::new(c.clone())) else {
            return Page::plain(
                http::StatusCode::BAD_REQUEST,
                "No authorization",
                "The provider's answer carries no authorization code. Nothing was stored.",
            );
        };
        // Still usable? (Spent or revoked meanwhile: no code is exchanged.)
        match self.inner.store.invite_by_hash(&flow.token_hash).await {
            Ok(Some(now)) => {
                if let Some(page) = unusable(&now) {
                    return page;
                }
            }
            Ok(None) => return unknown_link(),
            Err(e) => return store_failed(&e),
        }
        let Some(provider) = self.inner.providers.get(&invite.provider) else {
            return provider_gone(invite);
        };
        let obtained = match browser::finish(
            &self.inner.transport,
            provider,
            &self.inner.callback_url,
            code,
            &flow.verifier,
        )
        .await
        {
            Ok(obtained) => obtained,
            Err(e) => return exchange_failed(invite, &e),
        };
        let account = match identity::check(&obtained, &invite.owner, flow.login_hint.as_deref()) {
            Ok(account) => account,
            Err(refusal) => {
                info!(invite = invite.id, credential = %invite.name, "sign-in refused: another account");
                return Page::plain(
                    http::StatusCode::FORBIDDEN,
                    "Wrong account",
                    &format!(
                        "{refusal} Nothing was stored; the link still works: open it again and sign in as {}.",
                        invite.owner
                    ),
                );
            }
        };
        self.keep(invite, &obtained, account.as_deref()).await
    }

    /// Stores what a sign-in through `invite` obtained (spending the link) and says how it went.
    async fn keep(
        &self,
        invite: &Invite,
        obtained: &crate::lifecycle::authorize::Obtained,
        account: Option<&str>,
    ) -> Page {
        let target = Target {
            name: &invite.name,
            provider: &invite.provider,
            scopes: invite.scopes.as_deref(),
            owner: Some(&invite.owner),
            policy: &self.inner.policy,
        };
        match super::keep(&self.inner.store, &target, obtained, Some(invite.id)).await {
            Ok(stored) => {
                info!(invite = invite.id, credential = %invite.name, "credential authorized through an invitation link");
                let mut rows = vec![
                    ("Credential", invite.name.as_str()),
                    ("Provider", invite.provider.as_str()),
                ];
                if let Some(account) = account {
                    rows.push(("Signed in as", account));
                }
                let refresh = if stored.has_refresh_token {
                    "tokenwarden keeps it fresh from now on. You can close this window."
                } else {
                    "The provider sent no refresh token, so it cannot be kept fresh: tell the administrator."
                };
                Page {
                    status: http::StatusCode::OK,
                    html: document(
                        "Authorized",
                        &format!(
                            "<p id=\"authorized\">Credential {} is authorized.</p>{}{}",
                            escape(&invite.name),
                            facts(&rows),
                            para(refresh)
                        ),
                    ),
                    location: None,
                    form_to: None,
                }
            }
            Err(StoreError::InviteGone(_)) => Page::plain(
                http::StatusCode::GONE,
                "Link already used",
                "This link was used, revoked or expired while you signed in. Nothing was stored from this sign-in.",
            ),
            Err(e @ StoreError::InviteMismatch { .. }) => {
                warn!(invite = invite.id, error = %e, "invitation no longer fits its credential");
                Page::plain(
                    http::StatusCode::CONFLICT,
                    "Credential changed",
                    "The credential this link was made for has changed meanwhile. Nothing was stored. Ask the administrator for a new link.",
                )
            }
            Err(e) => store_failed(&e),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flow>> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Handler for Pages {
    async fn handle(
        &self,
        _: Peer,
        request: http::Request<Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let page = self
            .answer(PageRequest {
                method: request.method(),
                path: request.uri().path(),
                query: request.uri().query(),
            })
            .await;
        let mut response = http::Response::builder().status(page.status);
        for (name, value) in page.headers() {
            response = response.header(name, value);
        }
        response
            .body(Full::new(Bytes::from(page.html)))
            .unwrap_or_default()
    }
}

/// Serves the pages on `listener` until `shutdown` fires, with [`LIMITS`].
pub async fn serve(listener: tokio::net::TcpListener, pages: Pages, shutdown: CancellationToken) {
    listener::serve(Socket::Tcp(listener), LIMITS, "enroll", pages, shutdown).await;
}
