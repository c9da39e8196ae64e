//! The way to a route's upstream: hyper-util's pooled HTTP/1.1 client over rustls (the token
//! endpoints' roots and provider, `http::tls_config`) with the route's connect, idle and
//! whole-request timeouts; or, when the environment names an HTTP proxy, reqwest with the same
//! timeouts and the proxies `http::proxy` reads (its proxy support is not rebuilt here). Redirects
//! are passed back, never followed: neither client follows one.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

use super::tally::BoxError;
use crate::http::HttpError;

/// A request body as sent upstream: kept in memory, or streamed from the client.
pub type RequestBody = Either<Full<Bytes>, Incoming>;

/// An answer's body as it comes from the upstream.
pub type AnswerBody = Either<Timed<Incoming>, reqwest::Body>;

/// How long an upstream may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest wait for the answer's head, and between two parts of its body.
    pub idle: Duration,
    /// Longest for the whole exchange, the answer's body included.
    pub request: Duration,
}

/// A route's client; cheap to clone.
#[derive(Clone)]
pub enum Upstream {
    Direct {
        client: Client<hyper_rustls::HttpsConnector<HttpConnector>, RequestBody>,
        timeouts: Timeouts,
    },
    /// Through the HTTP proxies the environment names.
    Proxied(reqwest::Client),
}

impl Upstream {
    /// The client for `timeouts` with the TLS settings `tls` (`http::tls_config`); through
    /// `proxies` when there are any.
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
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Self::Direct { client, timeouts })
    }

    /// Sends `request` (its URI absolute) and waits for the answer's head.
    pub async fn send(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<http::Response<AnswerBody>, HttpError> {
        match self {
            Self::Direct { client, timeouts } => {
                let deadline = Instant::now() + timeouts.request;
                let head_by = deadline.min(Instant::now() + timeouts.idle);
                let answer = tokio::time::timeout_at(head_by, client.request(request))
                    .await
                    .map_err(|_| HttpError::Timeout)?
                    .map_err(|e| legacy_error(&e))?;
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

/// hyper-util's error as the proxy reports it: a timeout (504) when the connect timed out, a
/// connect error, or the chain of causes (no URL, no header: neither is in its text).
fn legacy_error(e: &hyper_util::client::legacy::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return HttpError::Timeout;
        }
        source = s.source();
    }
    if e.is_connect() {
        HttpError::Connect(crate::http::error_chain(e))
    } else {
        HttpError::Transport(crate::http::error_chain(e))
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
