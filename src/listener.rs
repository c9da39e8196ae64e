//! The one way to serve a socket (TCP or unix) with HTTP/1.1: a header-read timeout, a
//! whole-connection timeout, a cap on concurrent connections (also kept below the process's
//! descriptor limit), exponential backoff after accept errors (EMFILE never makes the loop spin),
//! a rate-limited warning (one line per interval, with the count of those left out), and
//! graceful shutdown through a `CancellationToken`; connections served where they are accepted,
//! or dealt to other runtimes (the proxy's worker threads). The metrics listener, the token API,
//! the proxy, the enrollment pages and the authorize callback all serve through it. Imports nothing
//! from the crate.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// First pause after a failed accept; it doubles on each failure in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// Longest pause after failed accepts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning line per listener in this interval; the rest are counted.
const WARN_EVERY: Duration = Duration::from_mins(1);
/// Longest wait for connections in flight at shutdown before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Descriptors kept for the rest of the process: a listener's connections take at most this
/// fraction (1/N) of the descriptor limit, so refreshes and the database still get theirs.
const DESCRIPTOR_SHARE: u64 = 4;

/// Connections the kernel completes and holds for a listener at its cap (tokio's own bind asks
/// for 128: a crowd past that waits on SYN retries, seconds each).
pub const BACKLOG: u32 = 1024;

/// Binds a unix socket at `path`: a socket left there by an earlier run is replaced (one that
/// answers is in use, and refused; anything else at the path is refused); it is made 0666, so that
/// whoever serves it decides per request from the peer's credentials, not the file mode. The
/// directory is the operator's (systemd's `RuntimeDirectory=`).
pub fn bind_unix(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process serves this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Binds a TCP listener on the first of `address`'s addresses that binds, with [`BACKLOG`].
pub async fn bind_tcp(address: impl tokio::net::ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if let Err(e) = socket.bind(addr) {
            last = Some(e);
            continue;
        }
        match socket.listen(BACKLOG) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")))
}

/// How long a client may take and how many may be connected.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a client may take to send a request head (each request's, on a kept-alive
    /// connection too).
    pub header_read: Duration,
    /// Longest a connection may stay open, idle or not.
    pub connection: Duration,
    /// Most connections served at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Whether a connection may carry more than one request.
    pub keep_alive: bool,
}

/// Who is connected: a TCP peer's address, or a unix peer's credentials.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Tcp(SocketAddr),
    /// `SO_PEERCRED`: the process that connected (uid, gid, pid when the kernel says).
    Unix {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
    },
}

/// A bound socket to serve.
#[derive(Debug)]
pub enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Answers one request; cloned into each connection.
pub trait Handler: Clone + Send + Sync + 'static {
    fn handle(
        &self,
        peer: Peer,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// A [`Handler`] whose answers are streamed (the proxy's): its own body type. Every `Handler` is
/// one, with a `Full` body.
pub trait StreamHandler: Clone + Send + Sync + 'static {
    type Body: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
    fn handle(
        &self,
        peer: Peer,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;

    /// The handler for one new connection: its requests (one at a time) share what it keeps, such
    /// as the proxy's upstream connection. A clone unless a handler keeps something.
    #[must_use]
    fn connected(&self) -> Self {
        self.clone()
    }
}

impl<H: Handler> StreamHandler for H {
    type Body = Full<Bytes>;
    fn handle(
        &self,
        peer: Peer,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send {
        Handler::handle(self, peer, request)
    }
}

/// The pause after `failures` failed accepts in a row (1 for the first): doubling from
/// [`BACKOFF_FIRST`] up to [`BACKOFF_MAX`].
#[must_use]
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// A warning said at most once per interval: the others are counted and the count is said with
/// the next line.
#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    #[must_use]
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now: `Some(n)` with the number of occurrences left out since the last
    /// line, `None` to stay quiet (this one is counted).
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The connection cap for a process whose descriptor limit is `nofile`: the configured one, at
/// most a [`DESCRIPTOR_SHARE`]th of the limit, at least 1.
#[must_use]
pub fn connection_cap(configured: usize, nofile: Option<u64>) -> usize {
    let share = nofile.map_or(usize::MAX, |n| {
        usize::try_from(n / DESCRIPTOR_SHARE).unwrap_or(usize::MAX)
    });
    configured.min(share).max(1)
}

/// The soft descriptor limit of this process.
fn nofile() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Accepts connections within a cap: a permit first (at the cap, clients wait in the kernel's
/// backlog and take no descriptor), then the accept, backing off after errors with one warning
/// line per interval. For a listener that speaks its own protocol; [`serve`] is built on it.
pub struct Acceptor {
    socket: Socket,
    name: &'static str,
    permits: Arc<Semaphore>,
    warning: RateLimited,
    failures: u32,
}

/// An accepted connection; the connection counts against the cap until `permit` is dropped.
pub struct Accepted {
    pub stream: Stream,
    pub peer: Peer,
    pub permit: OwnedSemaphorePermit,
}

/// An accepted stream.
#[derive(Debug)]
pub enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Runtimes that connections are dealt to (each its own thread, as the proxy's workers are): a
/// new connection goes to the one serving the fewest, and stays there.
pub struct Dealer {
    runtimes: Vec<(tokio::runtime::Handle, Arc<AtomicUsize>)>,
}

impl Dealer {
    #[must_use]
    pub fn new(runtimes: impl IntoIterator<Item = tokio::runtime::Handle>) -> Self {
        Self {
            runtimes: runtimes
                .into_iter()
                .map(|handle| (handle, Arc::default()))
                .collect(),
        }
    }

    /// The runtime serving the fewest connections, and its count (the connection counts until
    /// the count's guard is dropped); `None` without runtimes.
    fn pick(&self) -> Option<(&tokio::runtime::Handle, Serving)> {
        let (handle, count) = self
            .runtimes
            .iter()
            .min_by_key(|(_, count)| count.load(Ordering::Relaxed))?;
        count.fetch_add(1, Ordering::Relaxed);
        Some((handle, Serving(count.clone())))
    }
}

/// One connection on a dealt runtime; counted until dropped.
struct Serving(Arc<AtomicUsize>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stream {
    /// The stream, served by the runtime this is called in (moved from the one it was accepted
    /// in).
    fn moved(self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(tokio::net::TcpStream::from_std(s.into_std()?)?),
            Self::Unix(s) => Self::Unix(tokio::net::UnixStream::from_std(s.into_std()?)?),
        })
    }
}

impl Acceptor {
    /// At most `max_connections` at once (and at most a [`DESCRIPTOR_SHARE`]th of this
    /// process's descriptor limit). `name` names the listener in log lines.
    #[must_use]
    pub fn new(socket: Socket, max_connections: usize, name: &'static str) -> Self {
        Self {
            socket,
            name,
            permits: Arc::new(Semaphore::new(connection_cap(max_connections, nofile()))),
            warning: RateLimited::new(WARN_EVERY),
            failures: 0,
        }
    }

    /// The next connection; `None` once `shutdown` fires. Never returns an accept error: it
    /// backs off and tries again.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<Accepted> {
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => return None,
                permit = self.permits.clone().acquire_owned() => permit.ok()?,
            };
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return None,
                accepted = accept(&self.socket) => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.failures = 0;
                    return Some(Accepted {
                        stream,
                        peer,
                        permit,
                    });
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    if let Some(suppressed) = self.warning.check(Instant::now()) {
                        warn!(
                            listener = self.name,
                            error = %e,
                            suppressed,
                            "cannot accept a connection; backing off (suppressed: like warnings left out since the last line)"
                        );
                    }
                    drop(permit);
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(backoff(self.failures)) => {}
                    }
                }
            }
        }
    }
}

/// Serves `socket` with `handler` until `shutdown` fires, then lets the connections in flight
/// finish (at most [`SHUTDOWN_GRACE`]). `name` names the listener in log lines.
pub async fn serve<H: StreamHandler>(
    socket: Socket,
    limits: Limits,
    name: &'static str,
    handler: H,
    shutdown: CancellationToken,
) {
    serve_dealt(socket, limits, name, handler, shutdown, None).await;
}

/// [`serve`], each connection dealt to one of `dealer`'s runtimes (accepted here, served there);
/// served here without one.
pub async fn serve_dealt<H: StreamHandler>(
    socket: Socket,
    limits: Limits,
    name: &'static str,
    handler: H,
    shutdown: CancellationToken,
    dealer: Option<Arc<Dealer>>,
) {
    let mut acceptor = Acceptor::new(socket, limits.max_connections, name);
    let mut connections = JoinSet::new();
    while let Some(Accepted {
        stream,
        peer,
        permit,
    }) = acceptor.next(&shutdown).await
    {
        let handler = handler.connected();
        let shutdown = shutdown.clone();
        let dealt = dealer.as_deref().and_then(Dealer::pick);
        let moved = dealt.is_some();
        let served = async move {
            let stream = if moved { stream.moved() } else { Ok(stream) };
            match stream {
                Ok(Stream::Tcp(s)) => connection(s, peer, limits, handler, shutdown).await,
                Ok(Stream::Unix(s)) => connection(s, peer, limits, handler, shutdown).await,
                Err(e) => {
                    debug!(listener = name, error = %e, "a connection could not be moved to its thread");
                }
            }
            drop(permit);
        };
        match dealt {
            Some((runtime, serving)) => {
                connections.spawn_on(
                    async move {
                        served.await;
                        drop(serving);
                    },
                    runtime,
                );
            }
            None => {
                connections.spawn(served);
            }
        }
        while connections.try_join_next().is_some() {}
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            listener = name,
            "connections still open at shutdown dropped"
        );
    }
}

async fn accept(socket: &Socket) -> io::Result<(Stream, Peer)> {
    match socket {
        Socket::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            // Answers go out whole as soon as they are ready (an answer streamed in parts must
            // not wait on Nagle for the client's acknowledgement of the part before).
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), Peer::Tcp(addr)))
        }
        Socket::Unix(l) => {
            let (s, _) = l.accept().await?;
            let cred = s.peer_cred()?;
            let peer = Peer::Unix {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            };
            Ok((Stream::Unix(s), peer))
        }
    }
}

/// One connection, bounded by `limits.connection` and ended gracefully at shutdown.
async fn connection<S, H>(
    stream: S,
    peer: Peer,
    limits: Limits,
    handler: H,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: StreamHandler,
{
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        async move {
            Ok::<_, std::convert::Infallible>(StreamHandler::handle(&handler, peer, request).await)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(limits.keep_alive)
        .max_buf_size(64 * 1024)
        // A head and a small body copied into one buffer and written at once cost fewer
        // instructions than queueing both for writev (callgrind, the proxy route: BENCHMARKS.md).
        .writev(false);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    // The connection's own token: asking whether it is cancelled (at each wake-up of this task)
    // takes its lock, not the one every connection of every thread shares.
    let shutdown = shutdown.child_token();
    let deadline = tokio::time::sleep(limits.connection);
    let mut deadline = std::pin::pin!(deadline);
    tokio::select! {
        biased;
        _ = conn.as_mut() => return,
        () = deadline.as_mut() => return,
        () = shutdown.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_second() {
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(2), Duration::from_millis(20));
        assert_eq!(backoff(4), Duration::from_millis(80));
        assert_eq!(backoff(8), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn one_warning_per_interval_with_the_count_left_out() {
        let start = Instant::now();
        let mut w = RateLimited::new(Duration::from_mins(1));
        assert_eq!(w.check(start), Some(0));
        for i in 1..=1000 {
            assert_eq!(w.check(start + Duration::from_millis(i)), None);
        }
        assert_eq!(w.check(start + Duration::from_secs(61)), Some(1000));
        assert_eq!(w.check(start + Duration::from_secs(62)), None);
    }

    #[test]
    fn the_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(connection_cap(64, Some(1024)), 64);
        assert_eq!(connection_cap(64, Some(64)), 16);
        assert_eq!(connection_cap(64, Some(2)), 1);
        assert_eq!(connection_cap(64, None), 64);
    }

    #[derive(Clone)]
    struct Hello;

    impl Handler for Hello {
        async fn handle(&self, _: Peer, _: Request<Incoming>) -> Response<Full<Bytes>> {
            Response::new(Full::new(Bytes::from_static(b"hello")))
        }
    }

    #[tokio::test]
    async fn an_unfinished_request_head_is_cut_and_others_are_served() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let limits = Limits {
            header_read: Duration::from_millis(300),
            connection: Duration::from_secs(30),
            max_connections: 4,
            keep_alive: true,
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            Socket::Tcp(tcp),
            limits,
            "test",
            Hello,
            shutdown.clone(),
        ));
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // The server closes it: read returns (EOF or an error) well before the test's bound.
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the unfinished head was not cut");

        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(20), ok.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello"), "{answer}");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .unwrap()
            .unwrap();
    }
}
