//! Where the authorization code arrives: a minimal HTTP listener on 127.0.0.1 for the browser's
//! redirect (one GET per connection, answered with `Connection: close`), or a redirect URL (or a
//! bare code) pasted on standard input, whichever comes first. Validates `state`: a redirect at
//! the listener with another state (stale or forged) is answered 400 and the real one is still
//! waited for. Connections are accepted through `listener::Acceptor` (a cap, backoff after accept
//! errors such as EMFILE). Imports `listener`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::listener::{Accepted, Acceptor, Socket, Stream, bind_tcp};

/// Longest a browser connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read from the browser.
const MAX_HEAD: usize = 16 * 1024;
/// Most browser connections at once; others wait in the backlog.
const MAX_CONNECTIONS: usize = 16;

/// The parameters of a redirect to the callback.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Params {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl Params {
    fn from_query<'a>(
        pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    ) -> Self {
        let mut params = Self::default();
        for (key, value) in pairs {
            let slot = match key.as_ref() {
                "code" => &mut params.code,
                "state" => &mut params.state,
                "error" => &mut params.error,
                "error_description" => &mut params.error_description,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        params
    }
}

/// Why the redirect cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `state` is missing or differs from the one sent.
    StateMismatch,
    /// The provider sent an error (`access_denied`, …): the code and description.
    Denied(String),
    /// Neither a code nor an error.
    NoCode,
    /// The listener stopped and nothing else can bring the redirect.
    ListenerStopped,
}

impl Params {
    /// The authorization code, if `state` matches `expected` (required unless `state_optional`:
    /// a bare pasted code carries none) and the provider sent no error.
    pub fn check(self, expected: &str, state_optional: bool) -> Result<String, Rejection> {
        match self.state.as_deref() {
            Some(state) if state == expected => {}
            None if state_optional => {}
            _ => return Err(Rejection::StateMismatch),
        }
        if let Some(error) = self.error {
            return Err(Rejection::Denied(match self.error_description {
                Some(d) => format!("{error}: {d}"),
                None => error,
            }));
        }
        self.code.filter(|c| !c.is_empty()).ok_or(Rejection::NoCode)
    }
}

/// Reads what an operator pasted: the whole redirect URL, its query string, or just the code.
/// `None` for a blank line. Whether a state came with it shows in `Params::state`.
#[must_use]
pub fn parse_pasted(line: &str) -> Option<Params> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if line.contains("://") {
        return Some(match url::Url::parse(line) {
            Ok(url) => Params::from_query(url.query_pairs()),
            Err(_) => Params::default(),
        });
    }
    let query = line.strip_prefix('?').unwrap_or(line);
    if query.contains('=') {
        return Some(Params::from_query(url::form_urlencoded::parse(
            query.as_bytes(),
        )));
    }
    Some(Params {
        code: Some(line.to_owned()),
        ..Params::default()
    })
}

/// A request that reached the listener: its target (path and query) and the connection to
/// answer on.
pub struct Arrival {
    pub path: String,
    pub params: Params,
    stream: TcpStream,
    /// The connection counts against the listener's cap until it is answered.
    _permit: OwnedSemaphorePermit,
}

impl Arrival {
    /// Answers the browser with a small HTML page and closes the connection.
    pub async fn answer(mut self, status: u16, title: &str, text: &str) {
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>tokenwarden</title></head>\
             <body><h1>{}</h1><p>{}</p></body></html>\n",
            escape(title),
            escape(text)
        );
        let reason = match status {
            200 => "OK",
            404 => "Not Found",
            _ => "Bad Request",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = self.stream.write_all(response.as_bytes()).await;
        let _ = self.stream.shutdown().await;
    }
}

/// The listener: accepts connections in the background and hands over each request's target.
/// Dropping it stops listening.
pub struct Listener {
    arrivals: mpsc::Receiver<Arrival>,
    _tasks: JoinSet<()>,
    _stop: DropGuard,
}

impl Listener {
    /// Starts accepting on `listener`.
    #[must_use]
    pub fn start(listener: TcpListener) -> Self {
        let (tx, rx) = mpsc::channel(8);
        let mut tasks = JoinSet::new();
        let stop = CancellationToken::new();
        let mut acceptor = Acceptor::new(Socket::Tcp(listener), MAX_CONNECTIONS, "authorize");
        let shutdown = stop.clone();
        tasks.spawn(async move {
            // Connections live in this set: dropping the listener aborts them all.
            let mut connections = JoinSet::new();
            while let Some(Accepted { stream, permit, .. }) = acceptor.next(&shutdown).await {
                let Stream::Tcp(stream) = stream else {
                    continue;
                };
                let tx = tx.clone();
                connections.spawn(async move {
                    if let Ok(Some(arrival)) =
                        tokio::time::timeout(HEAD_TIMEOUT, read_request(stream, permit)).await
                    {
                        let _ = tx.send(arrival).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            arrivals: rx,
            _tasks: tasks,
            _stop: stop.drop_guard(),
        }
    }

    /// The next request; `None` when the listener failed.
    pub async fn next(&mut self) -> Option<Arrival> {
        self.arrivals.recv().await
    }
}

/// Reads one request head and splits its target; `None` for anything that is not a GET.
async fn read_request(mut stream: TcpStream, permit: OwnedSemaphorePermit) -> Option<Arrival> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.lines().next()?.split_whitespace();
    let (method, target) = (words.next()?, words.next()?);
    if method != "GET" {
        return None;
    }
    let url = url::Url::parse(&format!("http://127.0.0.1{target}")).ok()?;
    Some(Arrival {
        path: url.path().to_owned(),
        params: Params::from_query(url.query_pairs()),
        stream,
        _permit: permit,
    })
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The path of the loopback redirect URI.
pub const CALLBACK_PATH: &str = "/callback";

/// Why the listener could not be set up.
pub(super) enum Listen {
    Io(std::io::Error),
    Bad(String),
}

/// Binds the listener for the redirect: an ephemeral port on 127.0.0.1, or the host and port of a
/// configured loopback redirect URI. A configured URI elsewhere gets no listener.
pub(super) async fn listen(
    configured: Option<&str>,
) -> Result<(Option<TcpListener>, String, String), Listen> {
    let Some(uri) = configured else {
        let listener = bind_tcp(("127.0.0.1", 0)).await.map_err(Listen::Io)?;
        let port = listener.local_addr().map_err(Listen::Io)?.port();
        let uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
        return Ok((Some(listener), uri, CALLBACK_PATH.to_owned()));
    };
    let url = url::Url::parse(uri).map_err(|e| Listen::Bad(e.to_string()))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if url.scheme() != "http" || !loopback {
        return Ok((None, uri.to_owned(), url.path().to_owned()));
    }
    let host = url
        .host_str()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']']);
    let port = url.port().unwrap_or(80);
    let listener = bind_tcp((host, port)).await.map_err(Listen::Io)?;
    Ok((Some(listener), uri.to_owned(), url.path().to_owned()))
}

/// Waits for the first usable redirect: at the listener, or pasted on standard input. A redirect
/// at the listener whose state does not match is answered 400 and the wait goes on (said once on
/// the log): a forged one must not end the flow the real one is on its way to.
pub(super) async fn wait(
    listener: Option<TcpListener>,
    reading_stdin: bool,
    path: &str,
    state: &str,
) -> Result<(String, Option<Arrival>), (Rejection, Option<Arrival>)> {
    let mut listener = listener.map(Listener::start);
    let mut pasted = reading_stdin.then(read_stdin_lines);
    let mut refused = 0u64;
    loop {
        tokio::select! {
            arrival = async { listener.as_mut()?.next().await }, if listener.is_some() => {
                let Some(arrival) = arrival else {
                    listener = None;
                    if pasted.is_none() {
                        return Err((Rejection::ListenerStopped, None));
                    }
                    continue;
                };
                if arrival.path != path {
                    arrival.answer(404, "Not found", "This is tokenwarden's authorization callback.").await;
                    continue;
                }
                let mut arrival = arrival;
                let params = std::mem::take(&mut arrival.params);
                match params.check(state, false) {
                    Ok(code) => return Ok((code, Some(arrival))),
                    Err(Rejection::StateMismatch) => {
                        refused += 1;
                        if refused == 1 {
                            tracing::warn!("a redirect whose state does not match this authorization request (stale or forged) was refused; still waiting for the real one");
                        }
                        arrival.answer(400, "Authorization failed", "This redirect does not belong to the authorization in progress (its state does not match); nothing was stored.").await;
                    }
                    Err(rejection) => return Err((rejection, Some(arrival))),
                }
            }
            line = async { pasted.as_mut()?.recv().await }, if pasted.is_some() => {
                let Some(line) = line else {
                    pasted = None;
                    if listener.is_none() {
                        return Err((Rejection::NoCode, None));
                    }
                    continue;
                };
                let Some(params) = parse_pasted(&line) else { continue };
                // A bare code carries no state; a pasted URL or query must carry the right one.
                let bare = params.state.is_none() && params.error.is_none() && !line.contains('=');
                return params.check(state, bare).map(|code| (code, None)).map_err(|r| (r, None));
            }
            else => return Err((Rejection::ListenerStopped, None)),
        }
    }
}

/// Lines of standard input, read on a plain thread: a blocked read there never holds up the
/// runtime's shutdown once the redirect arrived at the listener instead.
fn read_stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_url_query_or_bare_code() {
        let full =
            parse_pasted(" http://127.0.0.1:4711/callback?code=abc%2F1&state=s1&iss=x \n").unwrap();
        assert_eq!(full.code.as_deref(), Some("abc/1"));
        assert_eq!(full.state.as_deref(), Some("s1"));
        let query = parse_pasted("?state=s1&code=abc").unwrap();
        assert_eq!(query.code.as_deref(), Some("abc"));
        let bare = parse_pasted("abc").unwrap();
        assert_eq!(bare.code.as_deref(), Some("abc"));
        assert_eq!(bare.state, None);
        assert!(parse_pasted("  ").is_none());
    }

    #[test]
    fn state_is_checked_before_anything_else() {
        let p = |s: &str| parse_pasted(s).unwrap();
        assert_eq!(
            p("?code=c&state=good").check("good", false),
            Ok("c".to_owned())
        );
        assert_eq!(
            p("?code=c&state=bad").check("good", true),
            Err(Rejection::StateMismatch)
        );
        assert_eq!(
            p("?code=c").check("good", false),
            Err(Rejection::StateMismatch)
        );
        assert_eq!(p("c").check("good", true), Ok("c".to_owned()));
        assert_eq!(
            p("?error=access_denied&error_description=no+way&state=good").check("good", false),
            Err(Rejection::Denied("access_denied: no way".to_owned()))
        );
        assert_eq!(
            p("?error=access_denied&state=bad").check("good", false),
            Err(Rejection::StateMismatch)
        );
        assert_eq!(
            p("?state=good").check("good", false),
            Err(Rejection::NoCode)
        );
    }

    #[test]
    fn pages_escape_provider_text() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
