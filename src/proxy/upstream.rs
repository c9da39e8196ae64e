//! The way to a route's upstream. Each client connection holds its own upstream connection
//! (hyper's HTTP/1.1 client connection over rustls: the token endpoints' roots and provider,
//! `http::tls_config`) and drives it in its own task, so a request and its answer never pass
//! between tasks; when the client goes away, the connection is parked for the thread's next
//! client (at most [`PARKED_MAX`] per upstream origin and thread, closed after [`PARKED_FOR`]
//! unused). The route's connect, idle and whole-request timeouts apply. When the environment names an HTTP proxy: reqwest with
//! the same timeouts and the proxies `http::proxy` reads (its proxy support is not rebuilt here).
//! Redirects are passed back, never followed: neither client follows one.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};
use tower_service::Service as _;

use super::tally::BoxError;
use crate::http::HttpError;

/// A request body as sent upstream: kept in memory, or streamed from the client.
pub type RequestBody = Either<Full<Bytes>, Incoming>;

/// An answer's body as it comes from the upstream.
pub type AnswerBody = Either<Timed<Driven>, reqwest::Body>;

/// Most idle connections parked per upstream origin (scheme, host and port); one more is closed.
pub const PARKED_MAX: usize = 128;
/// A parked connection unused this long is closed.
pub const PARKED_FOR: Duration = Duration::from_secs(90);
/// A connection idle this long may have been closed by the upstream as a request is sent on it:
/// the request is kept to send again on another when that is harmless.
const IDLE_BEFORE_REPLAY: Duration = Duration::from_secs(1);

/// How long an upstream may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest wait for the answer's head, and between two parts of its body.
    pub idle: Duration,
    /// Longest for the whole exchange, the answer's body included.
    pub request: Duration,
    /// The wait for an answer's head is timed in steps no longer than this: the listener's
    /// header-read timeout. tokio wakes its own thread's driver (a write to its eventfd) for a
    /// timer earlier than the one it last slept for; with steps, the timer the listener arms for
    /// the client's next request after each answer is never the earlier one.
    pub step: Duration,
}

/// A route's way upstream; cheap to clone. Each client connection takes a [`Lane`] of it.
#[derive(Clone)]
pub enum Upstream {
    Direct(Arc<Direct>),
    /// Through the HTTP proxies the environment names.
    Proxied(reqwest::Client),
}

/// Connections made and parked for one route.
pub struct Direct {
    connector: HttpsConnector<HttpConnector>,
    handshake: http1::Builder,
    timeouts: Timeouts,
    /// By thread: a connection is driven by the thread whose runtime it was made in.
    parked: Mutex<HashMap<(ThreadId, Origin), Vec<Parked>>>,
}

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
}

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// One upstream connection: the sender of its requests and the connection itself, which the
/// task that holds it drives.
struct Link {
    origin: Origin,
    /// The `Host` field of every request on it.
    host: http::HeaderValue,
    /// When it was last given a request.
    used: Instant,
    send: http1::SendRequest<RequestBody>,
    conn: http1::Connection<Io, RequestBody>,
}

struct Parked {
    link: Box<Link>,
    since: Instant,
}

impl Link {
    /// Whether it can take a request now. Polling the connection moves it on after the last
    /// answer (idle again) and ends it when the upstream closed it.
    fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        if Pin::new(&mut self.conn).poll(cx).is_ready() {
            return false;
        }
        matches!(self.send.poll_ready(cx), Poll::Ready(Ok(())))
    }
}

impl Upstream {
    /// The way for `timeouts` with the TLS settings `tls` (`http::tls_config`); through
    /// `proxies` when there are any. Starts the task that closes parked connections unused for
    /// [`PARKED_FOR`] (it ends with the route).
    pub fn new(
        timeouts: Timeouts,
        proxies: Vec<reqwest::Proxy>,
        mut tls: rustls::ClientConfig,
    ) -> Result<Self, HttpError> {
        if !proxies.is_empty() {
            // `no_proxy` first: reqwest's own reading of the environment would proxy loopback
            // too. No retries of its own (an HTTP/1.1 client has none to make; with a limit of 0
            // it also stops copying every request in case it would).
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .retry(reqwest::retry::never().max_retries_per_request(0))
                .use_preconfigured_tls(tls)
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.idle)
                .timeout(timeouts.request);
            for proxy in proxies {
                builder = builder.proxy(proxy);
            }
            return Ok(Self::Proxied(builder.build()?));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeouts.connect));
        // hyper-rustls sets the ALPN itself (`http/1.1`, what `tls_config` names) and refuses a
        // configuration that already has one.
        tls.alpn_protocols.clear();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let mut handshake = http1::Builder::new();
        // As the route's server side: one buffer, one write (`listener::connection`).
        handshake.writev(false);
        let direct = Arc::new(Direct {
            connector,
            handshake,
            timeouts,
            parked: Mutex::new(HashMap::new()),
        });
        tokio::spawn(sweep_parked(Arc::downgrade(&direct)));
        Ok(Self::Direct(direct))
    }

    /// A lane for one client connection.
    #[must_use]
    pub fn lane(&self) -> Lane {
        match self {
            Self::Direct(direct) => Lane::Direct(Arc::new(Held {
                direct: direct.clone(),
                link: Mutex::new(None),
            })),
            Self::Proxied(client) => Lane::Proxied(client.clone()),
        }
    }
}

/// Closes the parked connections unused for [`PARKED_FOR`], every third of that, until the
/// route is gone.
async fn sweep_parked(direct: Weak<Direct>) {
    let mut every = tokio::time::interval(PARKED_FOR / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(direct) = direct.upgrade() else {
            return;
        };
        let now = Instant::now();
        let closed: Vec<Parked> = {
            let mut parked = direct.parked.lock().unwrap_or_else(PoisonError::into_inner);
            let mut closed = Vec::new();
            for links in parked.values_mut() {
                let keep = links.iter().position(|p| now - p.since < PARKED_FOR);
                closed.extend(links.drain(..keep.unwrap_or(links.len())));
            }
            parked.retain(|_, links| !links.is_empty());
            closed
        };
        // Closed outside the lock.
        drop(closed);
    }
}

impl Direct {
    /// Parks `link` for another client, unless [`PARKED_MAX`] are parked for its origin.
    fn park(&self, link: Box<Link>) {
        if link.send.is_closed() {
            return;
        }
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (std::thread::current().id(), link.origin.clone());
        let links = parked.entry(key).or_default();
        if links.len() < PARKED_MAX {
            links.push(Parked {
                link,
                since: Instant::now(),
            });
        }
    }

    /// The connection this thread parked last for `origin`.
    fn unpark(&self, origin: &Origin) -> Option<Box<Link>> {
        let key = (std::thread::current().id(), origin.clone());
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        parked.get_mut(&key)?.pop().map(|p| p.link)
    }

    /// A new connection to `origin` (TCP, then TLS for `https`).
    async fn connect(&self, origin: &Origin) -> Result<Box<Link>, HttpError> {
        let uri = http::Uri::builder()
            .scheme(origin.scheme.clone())
            .authority(origin.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let io = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(|e| connect_error(&*e))?;
        let (send, conn) = self
            .handshake
            .handshake(io)
            .await
            .map_err(|e| HttpError::Connect(crate::http::error_chain(&e)))?;
        Ok(Box::new(Link {
            origin: origin.clone(),
            host: host_field(origin)?,
            used: Instant::now(),
            send,
            conn,
        }))
    }
}

/// One client connection's way upstream: its own connection (direct), or the route's reqwest
/// client. Cheap to clone; the connection held goes back to the route's parked ones when the last
/// clone is dropped.
#[derive(Clone)]
pub enum Lane {
    Direct(Arc<Held>),
    Proxied(reqwest::Client),
}

/// The connection a client connection holds between its requests.
pub struct Held {
    direct: Arc<Direct>,
    link: Mutex<Option<Box<Link>>>,
}

impl Held {
    fn take(&self) -> Option<Box<Link>> {
        self.link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Keeps `link` for this client's next request.
    fn keep(&self, link: Box<Link>) {
        let earlier = self
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(link);
        if let Some(earlier) = earlier {
            self.direct.park(earlier);
        }
    }

    /// A connection to `origin` that can take a request now, and whether it was used before:
    /// this client's own, a parked one, or a new one.
    async fn link(&self, origin: &Origin) -> Result<(Box<Link>, bool), HttpError> {
        if let Some(mut own) = self.take() {
            if own.origin == *origin {
                if poll_fn(|cx| Poll::Ready(own.usable(cx))).await {
                    return Ok((own, true));
                }
            } else {
                self.direct.park(own);
            }
        }
        while let Some(mut parked) = self.direct.unpark(origin) {
            if poll_fn(|cx| Poll::Ready(parked.usable(cx))).await {
                return Ok((parked, true));
            }
        }
        Ok((self.direct.connect(origin).await?, false))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let link = self
            .link
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(link) = link {
            self.direct.park(link);
        }
    }
}

impl Lane {
    /// Sends `request` (its URI absolute) and waits for the answer's head.
    pub async fn send(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<http::Response<AnswerBody>, HttpError> {
        match self {
            Self::Direct(held) => {
                let timeouts = held.direct.timeouts;
                let now = Instant::now();
                let deadline = now + timeouts.request;
                let head_by = deadline.min(now + timeouts.idle);
                let mut answer = std::pin::pin!(send_direct(held, request, now));
                let mut step_from = now;
                let answer = loop {
                    let step_to =
                        head_by.min(step_from + timeouts.step.max(Duration::from_millis(1)));
                    match tokio::time::timeout_at(step_to, answer.as_mut()).await {
                        Ok(answer) => break answer?,
                        Err(_) if step_to < head_by => step_from = step_to,
                        Err(_) => return Err(HttpError::Timeout),
                    }
                };
                Ok(answer.map(|body| Either::Left(Timed::new(body, deadline, timeouts.idle))))
            }
            Self::Proxied(client) => {
                let (parts, body) = request.into_parts();
                let body = match body {
                    Either::Left(full) => reqwest::Body::wrap(full),
                    Either::Right(incoming) => reqwest::Body::wrap(incoming),
                };
                let url = url::Url::parse(&parts.uri.to_string())
                    .map_err(|e| HttpError::Transport(e.to_string()))?;
                let answer = client
                    .request(parts.method, url)
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await?;
                let answer: http::Response<reqwest::Body> = answer.into();
                Ok(answer.map(Either::Right))
            }
        }
    }
}

/// `request` sent at `now` on a connection of `held`'s, driven here until the answer's head has
/// come. On a connection used before, the upstream may have closed it just now: a request it did
/// not take goes on another, and so does one it closed without an answer to, when sending that
/// again is harmless (an idempotent method, a body kept in memory) and the connection had been
/// idle for [`IDLE_BEFORE_REPLAY`] (an upstream closes an idle connection after some seconds).
async fn send_direct(
    held: &Arc<Held>,
    request: http::Request<RequestBody>,
    now: Instant,
) -> Result<http::Response<Driven>, HttpError> {
    let (origin, mut request) = origin_form(request)?;
    loop {
        let (mut link, reused) = held.link(&origin).await?;
        request
            .headers_mut()
            .insert(http::header::HOST, link.host.clone());
        let streamed = matches!(request.body(), Either::Right(_));
        let spare = if reused && now.saturating_duration_since(link.used) >= IDLE_BEFORE_REPLAY {
            replayable(&request)
        } else {
            None
        };
        link.used = now;
        let mut answer = std::pin::pin!(link.send.try_send_request(request));
        let mut ended = false;
        let conn = &mut link.conn;
        let answer = poll_fn(|cx| {
            if !ended && Pin::new(&mut *conn).poll(cx).is_ready() {
                ended = true;
            }
            answer.as_mut().poll(cx)
        })
        .await;
        let mut failed = match answer {
            Ok(answer) => {
                let home = held.clone();
                return Ok(answer.map(|body| Driven {
                    body,
                    link: (!ended).then_some(link),
                    ended: false,
                    streamed,
                    home,
                }));
            }
            Err(failed) => failed,
        };
        let not_taken = failed.take_message();
        let error = failed.into_error();
        request = match (reused, not_taken, spare) {
            (true, Some(again), _) => again,
            (true, None, Some(again)) if error.is_incomplete_message() => again,
            _ => return Err(answer_error(&error)),
        };
    }
}

/// A copy of `request` to send again if a reused connection closes before answering: for an
/// idempotent method (RFC 9110 §9.2.2) with its body in memory.
fn replayable(request: &http::Request<RequestBody>) -> Option<http::Request<RequestBody>> {
    let Either::Left(body) = request.body() else {
        return None;
    };
    if !request.method().is_idempotent() {
        return None;
    }
    let mut copy = http::Request::new(Either::Left(body.clone()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// The origin `request`'s absolute URI names, and the request as sent on a connection to it:
/// its target in origin form, its `Host` the origin's (the port only when not the scheme's own).
fn origin_form(
    request: http::Request<RequestBody>,
) -> Result<(Origin, http::Request<RequestBody>), HttpError> {
    let (mut parts, body) = request.into_parts();
    let uri = std::mem::take(&mut parts.uri).into_parts();
    let (Some(scheme), Some(authority)) = (uri.scheme, uri.authority) else {
        return Err(HttpError::Transport(
            "the upstream URL has no scheme or host".to_owned(),
        ));
    };
    parts.uri = http::Uri::from(
        uri.path_and_query
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Ok((
        Origin { scheme, authority },
        http::Request::from_parts(parts, body),
    ))
}

/// The `Host` field for a connection to `origin`: its host, and its port when not the scheme's
/// own.
fn host_field(origin: &Origin) -> Result<http::HeaderValue, HttpError> {
    let default_port = if origin.scheme == Scheme::HTTPS {
        443
    } else {
        80
    };
    let host = match origin.authority.port_u16() {
        Some(port) if port != default_port => origin.authority.as_str(),
        _ => origin.authority.host(),
    };
    http::HeaderValue::from_str(host)
        .map_err(|_| HttpError::Transport("the upstream host is not a header value".to_owned()))
}

/// A connect failure as the proxy reports it: a timeout (504) when the connect timed out, else
/// the chain of causes (no URL, no header: neither is in its text).
fn connect_error(e: &(dyn std::error::Error + 'static)) -> HttpError {
    if timed_out(e) {
        HttpError::Timeout
    } else {
        HttpError::Connect(crate::http::error_chain(e))
    }
}

/// A failure after the request was sent: the chain of causes.
fn answer_error(e: &hyper::Error) -> HttpError {
    if timed_out(e) {
        HttpError::Timeout
    } else {
        HttpError::Transport(crate::http::error_chain(e))
    }
}

fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// An answer's body read from the connection this task drives: each read polls the connection
/// first. Once read to its end, the connection goes back to the client connection's lane for its
/// next request; an answer dropped before its end closes it (HTTP/1.1 cannot abandon one), and
/// so does the answer to a request whose body was streamed.
pub struct Driven {
    body: Incoming,
    link: Option<Box<Link>>,
    ended: bool,
    /// The request's body was streamed from the client: the upstream may have answered before
    /// reading all of it, and nothing would then drive the connection to send the rest.
    streamed: bool,
    home: Arc<Held>,
}

impl Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(link) = &mut this.link
            && Pin::new(&mut link.conn).poll(cx).is_ready()
        {
            // Closed or failed: the body says how, and the connection is not kept.
            this.link = None;
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        // A streamed request may not have been sent whole: its connection is closed, and the
        // client's body with it (hyper then stops reading it and closes the client's connection
        // after the answer), rather than kept with nothing to drive it.
        if let Some(link) = self.link.take()
            && !self.streamed
            && (self.ended || self.body.is_end_stream())
        {
            self.home.keep(link);
        }
    }
}

/// An answer's body that fails when a part takes longer than the idle timeout to come, or the
/// exchange passes its deadline. The timer is armed only when a part is not ready at once.
pub struct Timed<B> {
    body: B,
    deadline: Instant,
    idle: Duration,
    /// Made the first time a part is not ready at once (a small answer never needs one).
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<B> Timed<B> {
    fn new(body: B, deadline: Instant, idle: Duration) -> Self {
        Self {
            body,
            deadline,
            idle,
            timer: None,
            armed: false,
        }
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(this.deadline)));
                if !this.armed {
                    timer
                        .as_mut()
                        .reset(this.deadline.min(Instant::now() + this.idle));
                    this.armed = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(HttpError::Timeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
