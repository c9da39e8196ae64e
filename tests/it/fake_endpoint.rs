//! A fault-injecting token endpoint on 127.0.0.1: answers every request with one scripted reply
//! (odd bodies, errors, redirects, hangs, drips, resets). Stops when dropped.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Longest a hanging or dripping connection is kept open, so nothing outlives a test.
const MAX_CONNECTION: Duration = Duration::from_secs(30);

/// What the endpoint answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A complete response.
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// An OAuth error whose `error_description` quotes the request back (its Authorization
    /// header and its body), as a careless or hostile provider does.
    Echo { status: u16, error: &'static str },
    /// Reads the request and never answers.
    Hang,
    /// Sends headers promising a body, then one byte every `every`.
    Drip { every: Duration },
    /// Reads the request, then resets the connection.
    Reset,
    /// Waits for a permit from `gate`, then forwards the request to `upstream` (the real server)
    /// and relays its answer: a test can act while a request is held, and after it was answered.
    Forward {
        upstream: String,
        gate: Arc<tokio::sync::Semaphore>,
    },
}

impl Reply {
    /// A JSON (or any text) body with a status.
    pub fn json(status: u16, body: &str) -> Self {
        Self::Http {
            status,
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// A body with an explicit content type.
    pub fn typed(status: u16, content_type: &str, body: &[u8]) -> Self {
        Self::Http {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.to_vec(),
        }
    }

    /// Adds a header to an `Http` reply.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Http { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

/// A running fake endpoint.
pub struct FakeEndpoint {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    bodies: Arc<std::sync::Mutex<Vec<String>>>,
    load: Arc<Load>,
    task: JoinHandle<()>,
}

/// When requests arrived and how many were being answered at once.
#[derive(Default)]
struct Load {
    /// How long each answer is held before it is sent.
    delay: Duration,
    arrivals: std::sync::Mutex<Vec<std::time::Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl FakeEndpoint {
    pub async fn start(reply: Reply) -> Self {
        Self::start_delayed(reply, Duration::ZERO).await
    }

    /// Like [`FakeEndpoint::start`], holding each answer for `delay` (so that requests overlap).
    pub async fn start_delayed(reply: Reply, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let counters = (Arc::clone(&requests), Arc::clone(&answered));
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&bodies);
        let load = Arc::new(Load {
            delay,
            ..Load::default()
        });
        let measured = Arc::clone(&load);
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the server aborts them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let reply = reply.clone();
                let (requests, answered) = (Arc::clone(&counters.0), Arc::clone(&counters.1));
                let seen = Arc::clone(&seen);
                let load = Arc::clone(&measured);
                connections.spawn(async move {
                    let serving = serve(stream, &reply, &requests, &answered, &seen, &load);
                    let _ = tokio::time::timeout(MAX_CONNECTION, serving).await;
                });
            }
        });
        Self {
            addr,
            requests,
            answered,
            bodies,
            load,
            task,
        }
    }

    /// When each request arrived (its head and body read), in order.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.load.arrivals.lock().unwrap().clone()
    }

    /// The most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.load.max_in_flight.load(Ordering::SeqCst)
    }

    /// A proxy to `upstream` that holds each request until the returned gate gets a permit.
    pub async fn gated(upstream: &str) -> (Self, Arc<tokio::sync::Semaphore>) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let proxy = Self::start(Reply::Forward {
            upstream: upstream.to_owned(),
            gate: Arc::clone(&gate),
        })
        .await;
        (proxy, gate)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The bodies of the requests received so far.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }

    /// Complete responses written so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

impl Drop for FakeEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    reply: &Reply,
    requests: &AtomicUsize,
    answered: &AtomicUsize,
    bodies: &std::sync::Mutex<Vec<String>>,
    load: &Load,
) -> std::io::Result<()> {
    loop {
        let Some(request) = read_request(&mut stream).await? else {
            return Ok(());
        };
        load.arrivals
            .lock()
            .unwrap()
            .push(std::time::Instant::now());
        let now = load.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        load.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !load.delay.is_zero() {
            tokio::time::sleep(load.delay).await;
        }
        // Counted out before the answer is written: the client may send its next request as
        // soon as it has read this one.
        load.in_flight.fetch_sub(1, Ordering::SeqCst);
        bodies
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&request.body).into_owned());
        requests.fetch_add(1, Ordering::SeqCst);
        let forwarded;
        let reply = match reply {
            Reply::Echo { status, error } => {
                forwarded = echo(&request, *status, error);
                &forwarded
            }
            Reply::Forward { upstream, gate } => {
                let _permit = gate.acquire().await.map_err(std::io::Error::other)?;
                forwarded = forward(&request, upstream).await?;
                &forwarded
            }
            other => other,
        };
        match reply {
            Reply::Http {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (name, value) in headers {
                    let _ = write!(head, "{name}: {value}\r\n");
                }
                head.push_str("\r\n");
                stream.write_all(head.as_bytes()).await?;
                for chunk in body.chunks(64 * 1024) {
                    stream.write_all(chunk).await?;
                }
                stream.flush().await?;
                answered.fetch_add(1, Ordering::SeqCst);
            }
            Reply::Forward { .. } | Reply::Echo { .. } => {
                unreachable!("replaced by the upstream's answer or the echo")
            }
            Reply::Hang => {
                tokio::time::sleep(MAX_CONNECTION).await;
                return Ok(());
            }
            Reply::Drip { every } => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                    .await?;
                loop {
                    stream.write_all(b" ").await?;
                    tokio::time::sleep(*every).await;
                }
            }
            Reply::Reset => {
                stream.set_zero_linger()?;
                drop(stream);
                return Ok(());
            }
        }
    }
}

/// A request as read: the head and the body.
struct Request {
    head: String,
    body: Vec<u8>,
}

/// An OAuth error quoting `request`'s Authorization header and body back.
fn echo(request: &Request, status: u16, error: &str) -> Reply {
    let authorization = request
        .head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let body = serde_json::json!({
        "error": error,
        "error_description": format!(
            "you sent [{authorization}] and [{}]",
            String::from_utf8_lossy(&request.body)
        ),
    });
    Reply::json(status, &body.to_string())
}

/// Sends `request` on to `upstream` and turns its answer into a reply.
async fn forward(request: &Request, upstream: &str) -> std::io::Result<Reply> {
    let mut post = reqwest::Client::new()
        .post(upstream)
        .body(request.body.clone());
    for line in request.head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && ["authorization", "content-type", "accept"]
                .contains(&name.to_ascii_lowercase().as_str())
        {
            post = post.header(name, value.trim());
        }
    }
    let response = post.send().await.map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = response.bytes().await.map_err(std::io::Error::other)?;
    Ok(Reply::typed(status, &content_type, &body))
}

/// Reads one request (head and Content-Length body); `None` when the peer closed first.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            return Ok(None);
        }
        body.extend_from_slice(&byte[..n]);
    }
    Ok(Some(Request { head, body }))
}
