//! One route's requests: who may use it (unix peers), which credential, its header, the request
//! sent upstream (body kept when small enough to send again, streamed otherwise), one renewal and
//! one retry after a 401, and the answer streamed back — or the proxy's own short JSON error.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

use super::credential::{AfterRejection, Credentials, Current, Remembered, Unavailable};
use super::forward::{self, Base, Forwarded};
use super::stats::{ProxyStats, RouteStats};
use super::tally::{self, Exchange, ProxyBody, Tag};
use super::upstream::{AnswerBody, Lane, RequestBody, Upstream};
use crate::config::{ProxyCredential, ProxyUpstream};
use crate::listener::{Peer, StreamHandler};

/// The header on a 401 passed through without a retry, saying why.
pub const RETRY_HEADER: &str = "tokenwarden-retry";

/// A route, ready to serve; cheap to clone. Each client connection gets its own
/// ([`StreamHandler::connected`]): see [`Served`].
#[derive(Clone)]
pub struct Route {
    served: Arc<Served>,
}

/// One client connection's share of a route: its lane upstream, its copy of the credential's
/// header and of the upstream base, its handles on the route's name and series. Its requests
/// (one at a time) touch nothing another thread writes, but the route's counters.
struct Served {
    inner: Arc<Inner>,
    lane: Lane,
    tag: Arc<Tag>,
    /// `None` for `upstream = "instance_url"`: each credential names its own.
    base: Option<Base>,
    /// Taken by a request, put back when it has its answer.
    memo: Mutex<Option<Remembered>>,
}

/// What a route is told at start.
pub struct RouteParts {
    pub name: String,
    pub which: ProxyCredential,
    pub upstream: ProxyUpstream,
    pub allow_insecure_http: bool,
    pub x_forwarded: bool,
    pub retry_body_max: usize,
    pub body_timeout: Duration,
    /// The way to the upstream; each client connection takes a lane of it.
    pub client: Upstream,
    pub credentials: Credentials,
    pub stats: ProxyStats,
    /// Who may use a unix route's named credential: the token API's `[[access]]` rules.
    pub rules: crate::api::access::Rules,
}

struct Inner {
    name: Arc<str>,
    /// This route's series of `parts.stats`.
    stats: RouteStats,
    /// The configured upstream URL's base (`None` for `instance_url`, or a URL without a host,
    /// which the configuration refuses).
    base: Option<Base>,
    parts: RouteParts,
}

/// Why the proxy answers by itself.
#[derive(Debug)]
enum Problem {
    BadRequest(String),
    Forbidden,
    NoCredential(String),
    Upgrade,
    Unavailable(Unavailable),
    BodyTimeout,
    Upstream(crate::http::HttpError),
    NoInstanceUrl(String),
}

impl Problem {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NoCredential(_) => StatusCode::NOT_FOUND,
            Self::Upgrade => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Upstream(crate::http::HttpError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream(_) | Self::NoInstanceUrl(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Forbidden => "forbidden",
            Self::NoCredential(_) => "no_credential",
            Self::Upgrade => "upgrade_not_supported",
            Self::Unavailable(_) => "credential_unavailable",
            Self::BodyTimeout => "request_body_timeout",
            Self::Upstream(crate::http::HttpError::Timeout) => "upstream_timeout",
            Self::Upstream(_) => "upstream_unreachable",
            Self::NoInstanceUrl(_) => "no_instance_url",
        }
    }

    /// One line; never a token or a header value.
    fn reason(&self) -> String {
        match self {
            Self::BadRequest(why) | Self::NoCredential(why) => why.clone(),
            Self::Forbidden => "this route is not open to your user".to_owned(),
            Self::Upgrade => {
                "protocol upgrades (WebSocket) and CONNECT are not proxied by tokenwarden"
                    .to_owned()
            }
            Self::Unavailable(why) => why.to_string(),
            Self::BodyTimeout => "the request body was not received in time".to_owned(),
            Self::Upstream(e) => format!("upstream: {e}"),
            Self::NoInstanceUrl(name) => format!(
                "credential {name} has no instance_url to forward to (upstream = \"instance_url\")"
            ),
        }
    }

    fn note(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "no token to send: renewal failed or not possible",
            Self::Upstream(_) | Self::NoInstanceUrl(_) => "upstream failed",
            _ => "refused",
        }
    }
}

/// `{"error":…,"route":…,"reason":…}` on one line.
fn json_error(route: &str, problem: &Problem) -> String {
    let reason = crate::untrusted::Escaped(&problem.reason()).to_string();
    serde_json::json!({"error": problem.code(), "route": route, "reason": reason}).to_string()
}

/// The request body as sent upstream: kept (and sendable again) or streamed.
enum Outgoing {
    Kept(Bytes),
    Streamed(Option<Incoming>),
}

impl Outgoing {
    fn take(&mut self) -> RequestBody {
        match self {
            Self::Kept(bytes) => Either::Left(Full::new(bytes.clone())),
            Self::Streamed(body) => body
                .take()
                .map_or_else(|| Either::Left(Full::new(Bytes::new())), Either::Right),
        }
    }
}

impl Served {
    fn new(inner: Arc<Inner>) -> Self {
        Self {
            lane: inner.parts.client.lane(),
            tag: Arc::new(Tag {
                route: inner.name.clone(),
                stats: inner.stats.clone(),
            }),
            base: inner.base.as_ref().map(Base::copy),
            memo: Mutex::new(None),
            inner,
        }
    }
}

impl Route {
    #[must_use]
    pub fn new(parts: RouteParts) -> Self {
        let base = match &parts.upstream {
            ProxyUpstream::Url(url) => Base::new(url),
            ProxyUpstream::InstanceUrl => None,
        };
        let inner = Arc::new(Inner {
            name: Arc::from(parts.name.as_str()),
            stats: parts.stats.route(&parts.name),
            base,
            parts,
        });
        Self {
            served: Arc::new(Served::new(inner)),
        }
    }

    fn exchange(&self, method: Method, target: http::Uri, started: Instant) -> Exchange {
        Exchange {
            tag: self.served.tag.clone(),
            method,
            target,
            started,
            status: 0,
            renewed: false,
            retried: false,
            note: None,
        }
    }

    fn inner(&self) -> &Inner {
        &self.served.inner
    }

    /// The credential for `peer`: the route's (a unix peer needs a grant of the `[[access]]`
    /// rules: root, the service user, or a block naming it), or (by provider) the one the peer's
    /// user owns. Each decision on a unix socket is logged at debug with the peer's uid and pid.
    async fn credential(&self, peer: Peer) -> Result<Cow<'_, str>, Problem> {
        let parts = &self.inner().parts;
        let route = &*self.inner().name;
        let (uid, gid, pid) = match peer {
            Peer::Tcp(_) => {
                return match &parts.which {
                    ProxyCredential::Named(name) => Ok(Cow::Borrowed(name)),
                    ProxyCredential::OwnedAt(_) => Err(Problem::Forbidden),
                };
            }
            Peer::Unix { uid, gid, pid } => (uid, gid, pid),
        };
        let who = crate::api::users::identify(uid, gid);
        match &parts.which {
            ProxyCredential::Named(name) => {
                if let Some(grant) = parts.rules.grant(&who, name) {
                    tracing::debug!(route, uid, pid, credential = %name, %grant, "proxy: allowed");
                    Ok(Cow::Borrowed(name))
                } else {
                    tracing::debug!(route, uid, pid, credential = %name, "proxy: refused");
                    Err(Problem::Forbidden)
                }
            }
            ProxyCredential::OwnedAt(provider) => {
                let Some(user) = who.name else {
                    tracing::debug!(route, uid, pid, "proxy: refused, the uid has no user name");
                    return Err(Problem::Forbidden);
                };
                let which = crate::deliver::Which::Owner {
                    provider: provider.clone(),
                    owner: user,
                };
                let store = parts.credentials.store().clone();
                let store_failed = || {
                    Problem::Unavailable(Unavailable::Store(format!("of the peer at {provider}")))
                };
                let name = parts
                    .credentials
                    .on_daemon(async move { crate::deliver::resolve(&store, &which).await })
                    .await
                    .ok_or_else(store_failed)?
                    .map_err(|e| match e {
                        crate::deliver::DeliverError::Store(_) => store_failed(),
                        other => Problem::NoCredential(other.to_string()),
                    })?;
                tracing::debug!(route, uid, pid, credential = %name, "proxy: allowed, owner");
                Ok(Cow::Owned(name))
            }
        }
    }

    /// The upstream base for `current`'s credential.
    fn base(&self, name: &str, current: &Current) -> Result<Cow<'_, Base>, Problem> {
        let parts = &self.inner().parts;
        match &parts.upstream {
            ProxyUpstream::Url(_) => self
                .served
                .base
                .as_ref()
                .map(Cow::Borrowed)
                .ok_or_else(|| Problem::BadRequest("the upstream URL has no host".to_owned())),
            ProxyUpstream::InstanceUrl => {
                let text = current
                    .instance_url
                    .as_deref()
                    .ok_or_else(|| Problem::NoInstanceUrl(name.to_owned()))?;
                crate::config::check_endpoint("instance_url", text, parts.allow_insecure_http)
                    .map_err(|_| Problem::NoInstanceUrl(name.to_owned()))?;
                url::Url::parse(text)
                    .ok()
                    .as_ref()
                    .and_then(Base::new)
                    .map(Cow::Owned)
                    .ok_or_else(|| Problem::NoInstanceUrl(name.to_owned()))
            }
        }
    }

    /// The body kept when its declared length is small enough, streamed otherwise.
    async fn outgoing(
        &self,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<Outgoing, Problem> {
        let parts = &self.inner().parts;
        // A request without a body (a GET, most of them): nothing to read, no timer to arm.
        if hyper::body::Body::is_end_stream(&body) {
            return Ok(Outgoing::Kept(Bytes::new()));
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let chunked = headers.contains_key(header::TRANSFER_ENCODING);
        let small = declared.is_none_or(|n| n <= parts.retry_body_max as u64);
        if chunked || !small {
            return Ok(Outgoing::Streamed(Some(body)));
        }
        let read = Limited::new(body, parts.retry_body_max).collect();
        match tokio::time::timeout(parts.body_timeout, read).await {
            Err(_) => Err(Problem::BodyTimeout),
            Ok(Err(_)) => Err(Problem::BadRequest(
                "the request body could not be read".to_owned(),
            )),
            Ok(Ok(collected)) => Ok(Outgoing::Kept(collected.to_bytes())),
        }
    }

    async fn send(
        &self,
        parts: &http::request::Parts,
        uri: http::Uri,
        authorization: &HeaderValue,
        forwarded: Option<&Forwarded>,
        body: RequestBody,
    ) -> Result<Response<AnswerBody>, Problem> {
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() =
            forward::request_headers(&parts.headers, authorization.clone(), forwarded);
        let sent = Instant::now();
        let answer = self
            .served
            .lane
            .send(request)
            .await
            .map_err(Problem::Upstream)?;
        self.inner()
            .stats
            .upstream_latency(sent.elapsed().as_secs_f64());
        Ok(answer)
    }

    async fn forward(
        &self,
        peer: Peer,
        request: Request<Incoming>,
        exchange: &mut Exchange,
    ) -> Result<Response<AnswerBody>, Problem> {
        if request.method() == Method::CONNECT || forward::wants_upgrade(request.headers()) {
            return Err(Problem::Upgrade);
        }
        let name = self.credential(peer).await?;
        let route = &self.inner().parts;
        let memo = self
            .served
            .memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let remembered = route
            .credentials
            .remembered(&name, memo)
            .await
            .map_err(Problem::Unavailable)?;
        let current = remembered.current();
        let base = self.base(&name, current)?;
        let (parts, body) = request.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let uri = forward::target(&base, target).map_err(|e| Problem::BadRequest(e.to_string()))?;
        let forwarded = route.x_forwarded.then(|| Forwarded {
            client: match peer {
                Peer::Tcp(address) => Some(address.ip()),
                Peer::Unix { .. } => None,
            },
            host: parts.headers.get(header::HOST).cloned(),
        });
        let mut outgoing = self.outgoing(&parts.headers, body).await?;
        let mut answer = self
            .send(
                &parts,
                uri,
                remembered.authorization(),
                forwarded.as_ref(),
                outgoing.take(),
            )
            .await?;
        let mut not_retried = None;
        if answer.status() == StatusCode::UNAUTHORIZED {
            match &outgoing {
                Outgoing::Streamed(_) => {
                    self.inner().stats.rejected_after_renewal();
                    not_retried = Some("not retried: the request body was streamed");
                }
                Outgoing::Kept(_) => {
                    match route
                        .credentials
                        .after_rejection(&name, current)
                        .await
                        .map_err(Problem::Unavailable)?
                    {
                        AfterRejection::Renewed {
                            current: renewed,
                            shared,
                        } => {
                            if !shared {
                                self.inner().stats.renewed_after_401();
                                exchange.renewed = true;
                            }
                            let base = self.base(&name, &renewed)?;
                            let uri = forward::target(&base, target)
                                .map_err(|e| Problem::BadRequest(e.to_string()))?;
                            drop(answer);
                            self.inner().stats.retried();
                            exchange.retried = true;
                            answer = self
                                .send(
                                    &parts,
                                    uri,
                                    &renewed.authorization,
                                    forwarded.as_ref(),
                                    outgoing.take(),
                                )
                                .await?;
                            if answer.status() == StatusCode::UNAUTHORIZED {
                                self.inner().stats.rejected_after_renewal();
                                not_retried = Some("not retried again: rejected after a renewal");
                            }
                        }
                        AfterRejection::RecentlyRenewed => {
                            self.inner().stats.rejected_after_renewal();
                            not_retried = Some("not retried: the token was renewed moments ago");
                        }
                    }
                }
            }
        }
        // The connection's next request reuses the copy of the header.
        *self
            .served
            .memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(remembered);
        Ok(passed_back(answer, not_retried, exchange))
    }
}

/// The upstream's answer as the client gets it: its status, its end-to-end headers (and why a
/// 401 was not retried), its body streamed.
fn passed_back(
    answer: Response<AnswerBody>,
    not_retried: Option<&'static str>,
    exchange: &mut Exchange,
) -> Response<AnswerBody> {
    exchange.status = answer.status().as_u16();
    exchange.note = not_retried.map(|_| "401 passed through");
    let (head, body) = answer.into_parts();
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = forward::response_headers(head.headers);
    if let Some(why) = not_retried {
        response
            .headers_mut()
            .insert(RETRY_HEADER, HeaderValue::from_static(why));
    }
    response
}

impl StreamHandler for Route {
    type Body = ProxyBody;

    fn connected(&self) -> Self {
        Self {
            served: Arc::new(Served::new(self.served.inner.clone())),
        }
    }

    async fn handle(&self, peer: Peer, request: Request<Incoming>) -> Response<ProxyBody> {
        let method = request.method().clone();
        let target = request.uri().clone();
        let mut exchange = self.exchange(method, target, Instant::now());
        match self.forward(peer, request, &mut exchange).await {
            Ok(response) => response.map(|body| tally::counted(body, exchange)),
            Err(problem) => {
                let status = problem.status();
                exchange.status = status.as_u16();
                exchange.note = Some(problem.note());
                let body = json_error(&self.inner().name, &problem) + "\n";
                let mut response =
                    Response::new(tally::counted(Full::new(Bytes::from(body)), exchange));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
        }
    }
}
