//! An answer's body as it goes to the client, counted: when it ends (sent, failed, or dropped by a
//! client that went away) the request's one log line is written and its status counted. The line
//! names the route, method, path (no query), status, duration and bytes, never a header value.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use tracing::{debug, info};

use super::stats::RouteStats;

/// The error of an answer's body: the upstream's read failed mid-way.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every answer's body.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A route's name and series, as one client connection holds them.
pub struct Tag {
    pub route: std::sync::Arc<str>,
    pub stats: RouteStats,
}

/// What the request's log line says.
pub struct Exchange {
    pub tag: std::sync::Arc<Tag>,
    pub method: http::Method,
    /// The request's target; its path (no query) is logged.
    pub target: http::Uri,
    pub started: Instant,
    pub status: u16,
    /// Renewed after a 401.
    pub renewed: bool,
    /// Sent a second time after that renewal.
    pub retried: bool,
    /// Why this answer is the proxy's own, or why a 401 was not retried.
    pub note: Option<&'static str>,
}

/// `body`, counted into `exchange`'s log line.
pub fn counted<B>(body: B, exchange: Exchange) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Tally {
        // An empty body (204, HEAD, an empty error) may never be polled: it is sent as it is.
        ended: body.is_end_stream(),
        body,
        exchange,
        bytes: 0,
        failed: false,
    }
    .boxed_unsync()
}

struct Tally<B> {
    body: B,
    exchange: Exchange,
    bytes: u64,
    failed: bool,
    ended: bool,
}

impl<B> Body for Tally<B>
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
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                // hyper stops polling once a known length is sent: that was the end too.
                this.ended |= this.body.is_end_stream();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Tally<B> {
    fn drop(&mut self) {
        let e = &self.exchange;
        e.tag.stats.answered(e.status);
        let outcome = if self.failed {
            "the upstream's answer broke off"
        } else if self.ended {
            e.note.unwrap_or("forwarded")
        } else {
            "the client left before the answer was sent"
        };
        macro_rules! line {
            ($level:ident) => {
                $level!(
                    route = &*e.tag.route,
                    method = %e.method,
                    path = e.target.path(),
                    status = e.status,
                    // Read only when the line is written.
                    duration_ms = e.started.elapsed().as_millis(),
                    bytes = self.bytes,
                    renewed = e.renewed,
                    retried = e.retried,
                    "{outcome}"
                )
            };
        }
        if e.status >= 500 || e.status == 401 || e.renewed || self.failed {
            line!(info);
        } else {
            line!(debug);
        }
    }
}
