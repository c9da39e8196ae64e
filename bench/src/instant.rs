//! The instant token endpoint: a hand-rolled HTTP/1.1 keep-alive responder on 127.0.0.1 that answers
//! every request at once with a fixed-shape token response and a fresh refresh token, so that what
//! is measured is the client, not the provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Token sizes in responses, like the rows the benchmark generates.
pub const ACCESS_TOKEN_LEN: usize = 500;
pub const REFRESH_TOKEN_LEN: usize = 200;

/// A running endpoint; it lives as long as the runtime that spawned it.
pub struct Endpoint {
    pub token_url: String,
    pub requests: Arc<AtomicU64>,
}

/// Binds 127.0.0.1 on a free port and serves on the current runtime.
pub async fn start() -> std::io::Result<Endpoint> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&requests);
    let pads: Arc<(String, String)> =
        Arc::new(("a".repeat(ACCESS_TOKEN_LEN), "r".repeat(REFRESH_TOKEN_LEN)));
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            tokio::spawn(serve(socket, Arc::clone(&counter), Arc::clone(&pads)));
        }
    });
    Ok(Endpoint {
        token_url: format!("http://{addr}/token"),
        requests,
    })
}

async fn serve(
    socket: TcpStream,
    counter: Arc<AtomicU64>,
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
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let (at, rt) = &*pads;
        let json = format!(
            r#"{{"access_token":"at{n:010}{at}","token_type":"Bearer","expires_in":3600,"refresh_token":"rt{n:010}{rt}","scope":"api:read"}}"#
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
