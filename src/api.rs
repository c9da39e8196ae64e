//! The local token API of `tokenwarden run`: HTTP/1.1 on a unix socket (`[api] socket`), served
//! through `listener`. `GET /v1/token/NAME` and `GET /v1/token?provider=P&owner=O` (both with
//! `min_valid=DURATION`, `wait=DURATION`) answer the token as JSON after `api::access` allowed
//! the peer (`SO_PEERCRED`, groups from `api::users`); `deliver` decides freshness and renews.
//! Errors are JSON `{"error", "reason"}`: 400, 403 (nothing said about the credential), 404 (only
//! to a peer allowed to know), 503. `api/client.rs` is the other end, for `token --socket`.
//! Imports `config`, `domain`, `store`, `sweep`, `deliver` and `listener`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tracing::debug;

use crate::deliver::{self, DeliverError, Delivered, Want, Which};
use crate::domain::iso8601;
use crate::listener::{Handler, Limits, Peer};
use crate::sweep::Sweeper;

pub mod access;
pub mod client;
pub mod users;

use access::{Grant, Rules};

/// The API's limits: one short request per connection at a time; a renewal may take a token
/// request and a wait for another process's.
pub const LIMITS: Limits = Limits {
    header_read: Duration::from_secs(10),
    connection: Duration::from_mins(3),
    max_connections: 128,
    keep_alive: true,
};

/// Longest `wait=` a client may ask for.
const WAIT_MAX: Duration = Duration::from_mins(2);

/// The error words of the JSON answers (`error`), which `api::client` maps back.
pub mod words {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const NO_VALID_TOKEN: &str = "no_valid_token";
    pub const RENEWAL_FAILED: &str = "renewal_failed";
    pub const UNAVAILABLE: &str = "unavailable";
}

/// The API's state; cheap to clone.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    sweeper: Sweeper,
    rules: Rules,
    /// `min_valid` when the request names none (`token_min_valid`).
    min_valid: Duration,
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
struct Ask {
    which: Which,
    min_valid: Option<Duration>,
    wait: Option<Duration>,
}

/// Reads `/v1/token/NAME` or `/v1/token?provider=&owner=` with their parameters.
fn parse(path: &str, query: Option<&str>) -> Result<Ask, String> {
    let mut provider = None;
    let mut owner = None;
    let mut min_valid = None;
    let mut wait = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let duration =
            |v: &str| humantime::parse_duration(v).map_err(|e| format!("{key}={v:?}: {e}"));
        match key.as_ref() {
            "provider" => provider = Some(value.into_owned()),
            "owner" => owner = Some(value.into_owned()),
            "min_valid" => min_valid = Some(duration(&value)?),
            "wait" => wait = Some(duration(&value)?.min(WAIT_MAX)),
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    let which = if let Some(name) = path.strip_prefix("/v1/token/") {
        if provider.is_some() || owner.is_some() {
            return Err("give a name or provider and owner, not both".to_owned());
        }
        let name = percent_decode(name)?;
        if !crate::untrusted::is_valid_name(&name) {
            return Err(format!("credential name: {}", crate::untrusted::NAME_RULE));
        }
        Which::Name(name)
    } else if path == "/v1/token" {
        match (provider, owner) {
            (Some(provider), Some(owner)) => Which::Owner { provider, owner },
            _ => {
                return Err(
                    "name a credential (/v1/token/NAME) or give provider and owner".to_owned(),
                );
            }
        }
    } else {
        return Err(format!("no such route {path:?}: try /v1/token/NAME"));
    };
    Ok(Ask {
        which,
        min_valid,
        wait,
    })
}

fn percent_decode(text: &str) -> Result<String, String> {
    url::form_urlencoded::parse(format!("n={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| "empty credential name".to_owned())
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-store")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .unwrap_or_default()
}

fn error(status: StatusCode, word: &str, reason: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "error": word, "reason": reason }),
    )
}

impl Api {
    #[must_use]
    pub fn new(sweeper: Sweeper, rules: Rules, min_valid: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                sweeper,
                rules,
                min_valid,
            }),
        }
    }

    async fn answer(&self, peer: Peer, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let Peer::Unix { uid, gid, pid } = peer else {
            return error(StatusCode::FORBIDDEN, words::FORBIDDEN, "not allowed");
        };
        if request.method() != hyper::Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                words::BAD_REQUEST,
                "only GET is served",
            );
        }
        let ask = match parse(request.uri().path(), request.uri().query()) {
            Ok(ask) => ask,
            Err(reason) => return error(StatusCode::BAD_REQUEST, words::BAD_REQUEST, &reason),
        };
        let who = users::identify(uid, gid);
        let pid = pid.unwrap_or(0);
        let inner = &self.inner;
        let store = inner.sweeper.store();
        // The name first; whether the peer may even hear that it does not exist comes next.
        let (name, state) = match deliver::resolve(store, &ask.which).await {
            Ok(name) => match store.token_state(&name).await {
                Ok(state) => (name, state),
                Err(e) => return failure(&DeliverError::Store(e)),
            },
            Err(e @ (DeliverError::NoOwnerCredential { .. } | DeliverError::Ambiguous { .. })) => {
                return self.unknown(&who, pid, &ask.which, "(by owner)", &e);
            }
            Err(e) => return failure(&e),
        };
        let Some(state) = state else {
            let e = DeliverError::UnknownCredential(name.clone());
            return self.unknown(&who, pid, &Which::Name(name.clone()), &name, &e);
        };
        let Some(grant) = self.grant(&who, &name, &state.provider).await else {
            debug!(uid, pid, credential = %name, "token API: refused");
            return error(StatusCode::FORBIDDEN, words::FORBIDDEN, "not allowed");
        };
        let want = Want {
            min_valid: ask.min_valid.unwrap_or(inner.min_valid),
            wait: ask.wait.unwrap_or(WAIT_MAX / 2),
        };
        match deliver::deliver(store, &Which::Name(name.clone()), &want, &inner.sweeper).await {
            Ok(delivered) => {
                debug!(uid, pid, credential = %name, %grant, "token API: granted");
                json(StatusCode::OK, &body(&delivered))
            }
            Err(e) => {
                debug!(uid, pid, credential = %name, %grant, error = %e, "token API: no token");
                failure(&e)
            }
        }
    }

    /// The answer for a credential that does not exist: 404 to a peer allowed to know, else 403.
    fn unknown(
        &self,
        who: &users::Identity,
        pid: i32,
        which: &Which,
        shown: &str,
        e: &DeliverError,
    ) -> Response<Full<Bytes>> {
        let uid = who.uid;
        if let Some(grant) = self.may_know(who, which) {
            debug!(uid, pid, credential = shown, %grant, "token API: unknown credential");
            failure(e)
        } else {
            debug!(uid, pid, credential = shown, "token API: refused");
            error(StatusCode::FORBIDDEN, words::FORBIDDEN, "not allowed")
        }
    }

    /// The grant for `who` to read `name` of `provider`: the rules, then the owner rule.
    async fn grant(&self, who: &users::Identity, name: &str, provider: &str) -> Option<Grant> {
        if let Some(grant) = self.inner.rules.grant(who, name) {
            return Some(grant);
        }
        let user = who.name.as_deref()?;
        if !self.inner.rules.owners_read_own() {
            return None;
        }
        let owned = self
            .inner
            .sweeper
            .store()
            .owned_by(provider, user)
            .await
            .ok()?;
        owned.iter().any(|n| n == name).then_some(Grant::Owner)
    }

    /// For a credential that does not exist: whether `who` may hear so (404 rather than 403).
    fn may_know(&self, who: &users::Identity, which: &Which) -> Option<Grant> {
        match which {
            Which::Name(name) => self.inner.rules.grant(who, name),
            Which::Owner { owner, .. } => {
                if let Some(Grant::Privileged) = self.inner.rules.grant(who, "") {
                    return Some(Grant::Privileged);
                }
                (self.inner.rules.owners_read_own() && who.name.as_deref() == Some(owner))
                    .then_some(Grant::Owner)
            }
        }
    }
}

/// The JSON of a token handed out.
fn body(delivered: &Delivered) -> serde_json::Value {
    let state = &delivered.state;
    let mut body = serde_json::json!({
        "name": state.name,
        "access_token": delivered.token.expose(),
        "token_type": state.token_type.as_deref().unwrap_or("Bearer"),
        "expires_at": state.access_token_expires_at.map(iso8601),
    });
    if let Some(url) = &state.instance_url {
        body["instance_url"] = serde_json::Value::String(url.clone());
    }
    let notices: Vec<String> = delivered
        .notices
        .iter()
        .map(|n| format!("credential {} {n}", state.name))
        .collect();
    if !notices.is_empty() {
        body["notices"] = serde_json::json!(notices);
    }
    body
}

/// The answer for an error of `deliver`.
fn failure(e: &DeliverError) -> Response<Full<Bytes>> {
    let (status, word) = match e {
        DeliverError::UnknownCredential(_)
        | DeliverError::NoOwnerCredential { .. }
        | DeliverError::Ambiguous { .. } => (StatusCode::NOT_FOUND, words::NOT_FOUND),
        DeliverError::NoValidToken { .. }
        | DeliverError::UnprintableToken { .. }
        | DeliverError::Unusable { .. } => (StatusCode::SERVICE_UNAVAILABLE, words::NO_VALID_TOKEN),
        DeliverError::RenewalFailed { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, words::RENEWAL_FAILED)
        }
        DeliverError::Store(_) | DeliverError::Setup(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, words::UNAVAILABLE)
        }
    };
    let reason = crate::untrusted::Escaped(&e.to_string()).to_string();
    error(status, word, &reason)
}

impl Handler for Api {
    async fn handle(&self, peer: Peer, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.answer(peer, &request).await
    }
}

/// Why the API socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("api.socket {}: {reason}", path.display())]
pub struct BindError {
    pub path: PathBuf,
    pub reason: String,
}

/// Binds the API socket at `path` (`listener::bind_unix`: a stale socket is replaced, one in
/// use refused, 0666 so that the access rules, not the file mode, decide).
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, BindError> {
    crate::listener::bind_unix(path).map_err(|e| BindError {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_parameters() {
        assert_eq!(
            parse("/v1/token/sharepoint", Some("min_valid=5m")),
            Ok(Ask {
                which: Which::Name("sharepoint".to_owned()),
                min_valid: Some(Duration::from_mins(5)),
                wait: None,
            })
        );
        assert_eq!(
            parse(
                "/v1/token",
                Some("provider=entra&owner=alice%40example.com")
            )
            .map(|a| a.which),
            Ok(Which::Owner {
                provider: "entra".to_owned(),
                owner: "alice@example.com".to_owned()
            })
        );
        assert!(parse("/v1/token", Some("provider=entra")).is_err());
        assert!(parse("/v1/token/x", Some("min_valid=soon")).is_err());
        assert!(parse("/v1/token/x", Some("colour=red")).is_err());
        assert!(parse("/v2/token/x", None).is_err());
        assert!(parse("/v1/token/x", Some("owner=a&provider=b")).is_err());
    }
}
