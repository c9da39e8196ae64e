//! The instant token endpoint: a hand-rolled HTTP/1.1 keep-alive responder on 127.0.0.1 that answers
//! every request at once with a fixed-shape token response and a fresh refresh token, so that what
//! is measured is the client, not the provider. It remembers every refresh token presented since
//! [`Presented::reset`] and counts those presented more than once: refresh-token reuse. The refresh
//! tokens it issues start `ri` and the generated rows' `rt`, so an issued one never equals a row's.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Token sizes in responses, like the rows the benchmark generates.
pub const ACCESS_TOKEN_LEN: usize = 500;
pub const REFRESH_TOKEN_LEN: usize = 200;

/// A running endpoint; it lives as long as the runtime that spawned it.
pub struct Endpoint {
    pub token_url: String,
    pub requests: Arc<AtomicU64>,
    pub presented: Arc<Presented>,
}

/// The refresh tokens presented since the last [`Presented::reset`]: each may be accepted once.
#[derive(Debug, Default)]
pub struct Presented {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    seen: HashSet<Box<[u8]>>,
    counts: Counts,
}

/// Since the last reset: refresh-token grants answered, and those whose token was presented before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub refresh_grants: u64,
    pub reused: u64,
}

impl Presented {
    /// Forgets every token seen: a new measurement starts.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.seen = HashSet::new();
        state.counts = Counts::default();
    }

    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// Records one presented refresh token.
    fn record(&self, token: &[u8]) {
        let mut state = self.lock();
        state.counts.refresh_grants += 1;
        if !state.seen.insert(token.into()) {
            state.counts.reused += 1;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `refresh_token` field of a form body (as sent: its encoding is the same every time).
fn refresh_token(body: &[u8]) -> Option<&[u8]> {
    body.split(|&b| b == b'&')
        .find_map(|pair| pair.strip_prefix(b"refresh_token="))
}

/// Binds 127.0.0.1 on a free port and serves on the current runtime.
pub async fn start() -> std::io::Result<Endpoint> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&requests);
    let presented = Arc::new(Presented::default());
    let tokens = Arc::clone(&presented);
    let pads: Arc<(String, String)> =
        Arc::new(("a".repeat(ACCESS_TOKEN_LEN), "r".repeat(REFRESH_TOKEN_LEN)));
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            tokio::spawn(serve(
                socket,
                Arc::clone(&counter),
                Arc::clone(&tokens),
                Arc::clone(&pads),
            ));
        }
    });
    Ok(Endpoint {
        token_url: format!("http://{addr}/token"),
        requests,
        presented,
    })
}

async fn serve(
    socket: TcpStream,
    counter: Arc<AtomicU64>,
    presented: Arc<Presented>,
    pads: Arc<(String, String)>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        let mut content_length = 0usize;
        let mut close = false;
        let mut seen_request_line = false;
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(()); // the client closed the connection
            }
            let l = line.trim_end();
            if !seen_request_line {
                seen_request_line = !l.is_empty();
                continue;
            }
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection")
                    && value.trim().eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        body.resize(content_length, 0);
        read.read_exact(&mut body).await?;
        if let Some(token) = refresh_token(&body) {
            presented.record(token);
        }
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let (at, rt) = &*pads;
        let json = format!(
            r#"{{"access_token":"at{n:010}{at}","token_type":"Bearer","expires_in":3600,"refresh_token":"ri{n:010}{rt}","scope":"api:read"}}"#
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        write.write_all(response.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}
