//! `[[proxy]]` routes end to end: the real daemon (`run`) between a client and a resource server
//! this module starts on 127.0.0.1, which checks every bearer token at the oidc-provider peer's
//! introspection endpoint and answers 401 for a token that is not active.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::backends::stored_secrets;
use crate::harness::{Home, assert_no_secrets, eventually, stop};
use crate::oauth_server::{OauthServer, clients};

/// The client's own Authorization value: it must never reach the upstream nor a log.
const CLIENT_CANARY: &str = "client-own-authorization-canary";
/// Size of the streamed answer.
const BIG: usize = 20 * 1024 * 1024;

type ResourceBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// The resource server: `/echo` answers what it received (method, path, query, the bearer
/// token's SHA-256, the body's SHA-256 and length, headers of note); `/big` streams [`BIG`]
/// bytes; `/redirect` answers 302. Every request needs a bearer token the peer calls active.
struct Resource {
    address: SocketAddr,
    shutdown: CancellationToken,
    /// Requests answered 401 (inactive token).
    rejected: Arc<AtomicU64>,
    /// Connections accepted.
    accepted: Arc<AtomicU64>,
    /// Connections open now.
    open_now: Arc<AtomicU64>,
    /// Cancelled to close every open connection (a new one takes over for later connections).
    open: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Resource {
    async fn start(introspection_url: &str, on: Option<SocketAddr>) -> Self {
        let listener = tokio::net::TcpListener::bind(on.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let rejected = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let open_now = Arc::new(AtomicU64::new(0));
        let open = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url: Arc<str> = Arc::from(introspection_url);
        let (stop, count) = (shutdown.clone(), rejected.clone());
        let (accepts, connections, opened) = (accepted.clone(), open.clone(), open_now.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                accepts.fetch_add(1, Ordering::SeqCst);
                opened.fetch_add(1, Ordering::SeqCst);
                let closing = connections.lock().unwrap().clone();
                let opened = opened.clone();
                let (http, url, count) = (http.clone(), url.clone(), count.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (http, url, count) = (http.clone(), url.clone(), count.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                answer(&http, &url, &count, request).await,
                            )
                        }
                    });
                    let serving = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    tokio::select! {
                        _ = serving => {}
                        () = closing.cancelled() => {}
                    }
                    opened.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            address,
            shutdown,
            rejected,
            accepted,
            open_now,
            open,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection open now, as an upstream that restarts or times out idle
    /// connections does; returns once all are closed.
    async fn close_connections(&self) {
        {
            let mut open = self.open.lock().unwrap();
            open.cancel();
            *open = CancellationToken::new();
        }
        let open_now = self.open_now.clone();
        eventually(
            Duration::from_secs(10),
            "the upstream's connections closed",
            || {
                let open_now = open_now.clone();
                async move { open_now.load(Ordering::SeqCst) == 0 }
            },
        )
        .await;
    }
}

impl Drop for Resource {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<ResourceBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

async fn answer(
    http: &reqwest::Client,
    introspection_url: &str,
    rejected: &AtomicU64,
    request: Request<Incoming>,
) -> Response<ResourceBody> {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let active = match &token {
        None => false,
        Some(token) => {
            let answer: Value = http
                .post(introspection_url)
                .basic_auth(clients::INTROSPECTOR_ID, Some(clients::INTROSPECTOR_SECRET))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["active"] == true
        }
    };
    if !active {
        rejected.fetch_add(1, Ordering::SeqCst);
        return full(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_token"}"#);
    }
    match request.uri().path() {
        "/big" => {
            let mut response = Response::new(big_body().boxed());
            response
                .headers_mut()
                .insert("content-type", "application/octet-stream".parse().unwrap());
            response
        }
        "/redirect" => {
            let mut response = full(StatusCode::FOUND, "");
            response
                .headers_mut()
                .insert("location", "https://elsewhere.example/".parse().unwrap());
            response
        }
        _ => {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let echo = json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "token_sha256": hex::encode(Sha256::digest(token.unwrap_or_default().as_bytes())),
                "body_sha256": hex::encode(Sha256::digest(&body)),
                "body_len": body.len(),
                "host": header("host"),
                "x_custom": header("x-custom"),
                "forwarded": parts.headers.keys().any(|k| k.as_str().starts_with("x-forwarded")),
                "hop": header("x-hop"),
            });
            full(StatusCode::OK, echo.to_string())
        }
    }
}

/// [`BIG`] bytes in 64 KiB chunks, made as they are sent.
struct Chunks {
    chunk: Bytes,
    left: usize,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len());
        self.left -= n;
        let data = self.chunk.slice(..n);
        std::task::Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

fn big_body() -> Chunks {
    Chunks {
        chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        left: BIG,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_mins(1))
        .build()
        .unwrap()
}

/// The daemon with one credential `graph` (provider `basic`) and `routes` (TOML) appended; its
/// first sweep has stored an access token when this returns.
async fn daemon(server: &OauthServer, routes: &str) -> (Home, tokio::process::Child) {
    let home = Home::new(server, "");
    home.append_config(routes);
    let rt = server
        .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("graph", "basic", &rt).await;
    let daemon = home.command(&["run"]).spawn().unwrap();
    let db = home.db().await;
    eventually(Duration::from_secs(30), "the first sweep", || {
        let db = db.clone();
        async move {
            crate::backends::count(
                &db,
                "SELECT count(*) FROM oauth_credential WHERE access_token IS NOT NULL",
            )
            .await
                == 1
        }
    })
    .await;
    db.close().await;
    (home, daemon)
}

fn route(port: u16, upstream: &str, extra: &str) -> String {
    format!(
        "[[proxy]]\nlisten = \"127.0.0.1:{port}\"\ncredential = \"graph\"\nupstream = \"{upstream}\"\n{extra}\n"
    )
}

/// Waits until the route on `port` answers at all.
async fn wait_listening(port: u16) {
    eventually(
        Duration::from_secs(30),
        "the route listening",
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
}

async fn access_token(home: &Home) -> String {
    let db = home.db().await;
    let (token,): (String,) = sqlx::query_as("SELECT access_token FROM oauth_credential")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    token
}

/// Revokes the access token `token` at the peer: its grant and refresh token stay valid.
async fn revoke_at_peer(server: &OauthServer, token: &str) {
    assert!(server.revoke_access_token(token).await);
    assert!(!server.introspect_active(token).await);
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A stopped daemon's standard output and error, as one text.
fn log_of(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The daemon's peak resident set (kB), from /proc.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test]
async fn requests_pass_intact_with_the_credentials_header_and_answers_stream() {
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let port = free_port();
    let (home, daemon) = daemon(&server, &route(port, &resource.url(), "")).await;
    wait_listening(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    let stored = access_token(&home).await;

    // A GET: path and query intact, the client's Authorization replaced, Host the upstream's,
    // hop-by-hop fields named in Connection dropped, nothing X-Forwarded added.
    let answer = http
        .get(format!("{base}/v1.0/sites/root?$select=id&x=a%20b"))
        .header("authorization", format!("Bearer {CLIENT_CANARY}"))
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let echo: Value = answer.json().await.unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/v1.0/sites/root");
    assert_eq!(echo["query"], "$select=id&x=a%20b");
    assert_eq!(echo["token_sha256"], sha(stored.as_bytes()));
    assert_ne!(echo["token_sha256"], sha(CLIENT_CANARY.as_bytes()));
    assert_eq!(echo["host"], resource.address.to_string());
    assert_eq!(echo["x_custom"], "kept");
    assert_eq!(echo["hop"], Value::Null);
    assert_eq!(echo["forwarded"], false);

    // A 10 kB POST, byte for byte.
    let body: Vec<u8> = (0..10_240u32).map(|i| (i % 251) as u8).collect();
    let echo: Value = http
        .post(format!("{base}/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 10_240);
    assert_eq!(echo["body_sha256"], sha(&body));

    // A redirect is passed back, not followed.
    let answer = http.get(format!("{base}/redirect")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND);
    assert_eq!(answer.headers()["location"], "https://elsewhere.example/");

    // An upgrade is refused with 501 and one line of JSON.
    let answer = http
        .get(format!("{base}/socket"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_IMPLEMENTED);
    let refusal: Value = answer.json().await.unwrap();
    assert_eq!(refusal["error"], "upgrade_not_supported");
    assert_eq!(refusal["route"], "graph");

    // 20 MB streamed through: the daemon's peak memory grows by far less than the answer.
    let pid = daemon.id().unwrap();
    let before = peak_rss_kb(pid);
    let mut answer = http.get(format!("{base}/big")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let mut received = 0usize;
    let mut digest = Sha256::new();
    while let Some(chunk) = answer.chunk().await.unwrap() {
        received += chunk.len();
        digest.update(&chunk);
    }
    assert_eq!(received, BIG);
    assert_eq!(hex::encode(digest.finalize()), sha(&vec![b'x'; BIG]));
    let after = peak_rss_kb(pid);
    let grown_kb = after.saturating_sub(before);
    assert!(
        grown_kb < 8 * 1024,
        "peak RSS grew by {grown_kb} kB while streaming {} kB",
        BIG / 1024
    );

    let output = stop(daemon).await;
    let log = log_of(&output);
    let db = home.db().await;
    let mut secrets = stored_secrets(&db).await;
    secrets.push(CLIENT_CANARY.to_owned());
    assert_no_secrets("daemon log", &log, &secrets);
    assert!(log.contains("route=graph"), "{log}");
    assert_eq!(resource.rejected.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_revoked_token_is_renewed_once_on_401_shared_by_concurrent_requests() {
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let (port, metrics_port) = (free_port(), free_port());
    let routes = format!(
        "{}\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        route(port, &resource.url(), "retry_body_max = 16384")
    );
    let (home, daemon) = daemon(&server, &routes).await;
    wait_listening(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    assert_eq!(
        http.get(format!("{base}/warm"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let first = access_token(&home).await;
    server.reset_stats().await;
    revoke_at_peer(&server, &first).await;

    // A streamed body (larger than retry_body_max) cannot be sent again: the 401 comes back,
    // saying so.
    let answer = http
        .post(format!("{base}/upload"))
        .body(vec![7u8; 20_000])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let why = answer.headers()["tokenwarden-retry"].to_str().unwrap();
    assert!(why.contains("streamed"), "{why}");
    assert_eq!(server.stats().await.refresh_ok, 0);

    // Eight requests meet the 401 together: one renewal, each retried once, all succeed.
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (http, base) = (http.clone(), base.clone());
        requests.spawn(async move {
            let answer = http
                .post(format!("{base}/item/{i}"))
                .body(format!("body {i}"))
                .send()
                .await
                .unwrap();
            (i, answer.status(), answer.json::<Value>().await.unwrap())
        });
    }
    let mut answers = requests.join_all().await;
    answers.sort_by_key(|(i, _, _)| *i);
    let answers: Vec<_> = answers.into_iter().map(|(_, s, e)| (s, e)).collect();
    let second = access_token(&home).await;
    assert_ne!(first, second, "{answers:?}");
    for (i, (status, echo)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "{echo}");
        assert_eq!(echo["path"], format!("/item/{i}"));
        assert_eq!(echo["body_sha256"], sha(format!("body {i}").as_bytes()));
        assert_eq!(echo["token_sha256"], sha(second.as_bytes()));
    }
    let stats = server.stats().await;
    assert_eq!(stats.refresh_ok, 1, "{stats:?}");
    assert_eq!(stats.refresh_reuse, 0, "{stats:?}");

    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"tokenwarden_proxy_renewals_after_401_total{route="graph"} 1"#,
        r#"tokenwarden_proxy_retries_total{route="graph"} 8"#,
        r#"tokenwarden_proxy_requests_total{route="graph",class="2xx"} 9"#,
        r#"tokenwarden_proxy_requests_total{route="graph",class="4xx"} 1"#,
        r#"tokenwarden_proxy_unauthorized_passed_through_total{route="graph"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}: {metrics}");
    }

    assert_eq!(server.stats().await.refresh_reuse, 0);

    // The renewed token is rejected too, moments later: no second renewal, the 401 is passed
    // through and says why (sustained 401s never turn each request into a refresh).
    revoke_at_peer(&server, &second).await;
    let answer = http.get(format!("{base}/again")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let why = answer.headers()["tokenwarden-retry"].to_str().unwrap();
    assert!(why.contains("renewed moments ago"), "{why}");
    let stats = server.stats().await;
    assert_eq!((stats.refresh_ok, stats.refresh_reuse), (1, 0), "{stats:?}");

    let db = home.db().await;
    let mut secrets = stored_secrets(&db).await;
    secrets.extend([first, second]);
    let output = stop(daemon).await;
    let log = log_of(&output);
    assert_no_secrets("daemon log", &log, &secrets);
    assert!(log.contains("renewed=true"), "{log}");
}

#[tokio::test]
async fn a_failed_renewal_gives_503_with_one_line_of_json() {
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let port = free_port();
    let (home, daemon) = daemon(&server, &route(port, &resource.url(), "")).await;
    wait_listening(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    let db = home.db().await;
    let (access, refresh): (String, String) =
        sqlx::query_as("SELECT access_token, refresh_token FROM oauth_credential")
            .fetch_one(&db)
            .await
            .unwrap();
    // The revocation endpoint: oidc-provider revokes every token of the grant.
    let status = client()
        .post(server.revocation_url())
        .basic_auth(clients::BASIC_ID, Some(clients::BASIC_SECRET))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    let answer = http.get(format!("{base}/after")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = answer.text().await.unwrap();
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    let refusal: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(refusal["error"], "credential_unavailable", "{refusal}");
    assert_eq!(refusal["route"], "graph");
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{refusal}"
    );
    let secrets = vec![access, refresh];
    assert_no_secrets("503 answer", &text, &secrets);
    let output = stop(daemon).await;
    let log = log_of(&output);
    assert_no_secrets("daemon log", &log, &secrets);
}

#[tokio::test]
async fn upstream_connections_are_kept_shared_between_clients_and_replaced_when_closed() {
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let port = free_port();
    let (home, daemon) = daemon(&server, &route(port, &resource.url(), "")).await;
    wait_listening(port).await;
    let url = format!("http://127.0.0.1:{port}/x");
    let get = |http: reqwest::Client| {
        let url = url.clone();
        async move {
            let answer = http.get(url).send().await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            answer.bytes().await.unwrap();
        }
    };

    // One client connection, five requests: one upstream connection.
    let http = client();
    for _ in 0..5 {
        get(http.clone()).await;
    }
    assert_eq!(resource.accepted(), 1);
    drop(http);

    // A client connection that closed leaves its upstream connection to the next client: within
    // a few new clients (the first may come before the route has seen the close), one is served
    // on a connection opened for another.
    let mut shared = false;
    for _ in 0..20 {
        let before = resource.accepted();
        get(client()).await;
        if resource.accepted() == before {
            shared = true;
            break;
        }
    }
    assert!(
        shared,
        "every new client connection opened an upstream connection"
    );

    // The upstream closes every connection (a restart, its own idle timeout): the next request
    // goes on a new one, for a client with a kept-alive connection as for a new client.
    let http = client();
    get(http.clone()).await;
    for _ in 0..3 {
        let before = resource.accepted();
        resource.close_connections().await;
        get(http.clone()).await;
        get(client()).await;
        assert!(resource.accepted() > before);
    }
    assert_eq!(resource.rejected.load(Ordering::SeqCst), 0);

    let output = stop(daemon).await;
    let log = log_of(&output);
    let db = home.db().await;
    assert_no_secrets("daemon log", &log, &stored_secrets(&db).await);
}

#[tokio::test]
async fn a_streamed_upload_the_upstream_answers_early_does_not_stall() {
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let port = free_port();
    let (_home, daemon) = daemon(&server, &route(port, &resource.url(), "")).await;
    wait_listening(port).await;
    let base = format!("http://127.0.0.1:{port}");

    // 16 MB streamed (more than retry_body_max) to a path the upstream answers without reading
    // the body: more than the sockets hold, so the rest must still be read or refused. The
    // client gets the answer or its connection closed, well before any timeout of the route.
    let http = client();
    let sent = tokio::time::timeout(
        Duration::from_secs(30),
        http.post(format!("{base}/redirect"))
            .body(vec![b'u'; 16 * 1024 * 1024])
            .send(),
    )
    .await
    .expect("the upload stalled");
    if let Ok(answer) = sent {
        assert_eq!(answer.status(), StatusCode::FOUND);
    }
    // The route keeps serving, on a new connection as on a kept one.
    for http in [client(), http] {
        let answer = http.get(format!("{base}/x")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
    stop(daemon).await;
}

#[tokio::test]
async fn a_dead_upstream_gives_502_and_the_route_keeps_serving() {
    let server = OauthServer::start_with_ttl(3600).await;
    let upstream_port = free_port();
    let port = free_port();
    let (_home, daemon) = daemon(
        &server,
        &route(
            port,
            &format!("http://127.0.0.1:{upstream_port}"),
            "connect_timeout = \"5s\"",
        ),
    )
    .await;
    wait_listening(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    for _ in 0..2 {
        let answer = http.get(format!("{base}/x")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
        let text = answer.text().await.unwrap();
        let refusal: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(refusal["error"], "upstream_unreachable", "{text}");
        assert_eq!(refusal["route"], "graph");
    }
    // The upstream comes up on that port: the same route now forwards.
    let resource = Resource::start(
        server.introspection_url(),
        Some(([127, 0, 0, 1], upstream_port).into()),
    )
    .await;
    let answer = http.get(format!("{base}/x")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    drop(resource);
    stop(daemon).await;
}

#[tokio::test]
async fn a_flood_of_slow_clients_does_not_take_the_route_down() {
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let port = free_port();
    let (_home, mut daemon) = daemon(
        &server,
        &route(
            port,
            &resource.url(),
            "max_connections = 8\nheader_read_timeout = \"1s\"",
        ),
    )
    .await;
    wait_listening(port).await;
    // Forty clients that send half a request head and then nothing.
    let mut slow = Vec::new();
    for _ in 0..40 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n").await;
            slow.push(s);
        }
    }
    // A proper client is served once the slow ones are cut (header timeout), within a bound.
    let http = client();
    let answer = http
        .get(format!("http://127.0.0.1:{port}/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    // The slow ones were closed by the daemon, which still runs.
    let mut closed = 0;
    for s in &mut slow {
        let mut buf = [0u8; 256];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, slow.len());
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon still runs"
    );
    stop(daemon).await;
}

#[tokio::test]
async fn check_config_and_doctor_review_the_routes() {
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let (port, dead_port) = (free_port(), free_port());
    let home = Home::new(&server, "");
    home.append_config(&route(port, &resource.url(), ""));
    home.append_config(&format!(
        "[[proxy]]\nname = \"dead\"\nlisten = \"127.0.0.1:{}\"\ncredential = \"missing\"\nupstream = \"http://127.0.0.1:{dead_port}\"\n",
        free_port()
    ));
    let rt = server
        .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("graph", "basic", &rt).await;
    let run = home.run(&["check-config"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "proxy route graph: 127.0.0.1:{port} -> {} with credential graph",
            resource.url()
        )),
        "{run:?}"
    );
    let run = home.run(&["doctor"], "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let text = &run.stdout;
    assert!(text.contains("proxy route graph"), "{text}");
    assert!(text.contains("graph is active"), "{text}");
    assert!(text.contains("accepts connections"), "{text}");
    assert!(text.contains("missing is not stored"), "{text}");
    assert!(
        text.contains(&format!("http://127.0.0.1:{dead_port}/: ")),
        "{text}"
    );

    // A route that may not listen where it says is refused before anything runs.
    home.append_config(
        "[[proxy]]\nname = \"wide\"\nlisten = \"0.0.0.0:1\"\ncredential = \"graph\"\nupstream = \"https://a.example\"\n",
    );
    let run = home.run(&["check-config"], "").await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("proxy[2].listen") && run.stderr.contains("allow_remote"),
        "{run:?}"
    );
}

/// `curl --unix-socket SOCKET http://route/PATH` as `uid` (root, or `nobody`): status and body.
async fn curl_as(uid: u32, socket: &std::path::Path, path: &str) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "-m",
        "20",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--unix-socket",
    ])
    .arg(socket)
    .arg(format!("http://route{path}"))
    .env_clear()
    .uid(uid)
    .kill_on_drop(true);
    let output = cmd.output().await.expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test]
async fn unix_routes_decide_by_the_peer_and_serve_each_user_their_own_credential() {
    use std::os::unix::fs::PermissionsExt as _;
    const NOBODY: u32 = 65534;
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let home = Home::new(&server, "");
    // The sockets sit in the home: nobody must be able to reach them (not the database, 0600).
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (named, own, granted) = (
        home.path().join("named.sock"),
        home.path().join("own.sock"),
        home.path().join("granted.sock"),
    );
    home.append_config(&format!(
        "[[proxy]]\nname = \"named\"\nlisten = \"unix:{}\"\ncredential = \"graph\"\nupstream = \"{up}\"\n\n\
         [[proxy]]\nname = \"own\"\nlisten = \"unix:{}\"\nprovider = \"basic\"\nupstream = \"{up}\"\n\n\
         [[proxy]]\nname = \"granted\"\nlisten = \"unix:{}\"\ncredential = \"nobody-graph\"\nupstream = \"{up}\"\n\n\
         [[access]]\ncredentials = [\"nobody-*\"]\nusers = [\"nobody\"]\n",
        named.display(),
        own.display(),
        granted.display(),
        up = resource.url()
    ));
    for (name, owner) in [("graph", None), ("nobody-graph", Some("nobody"))] {
        let rt = server
            .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
            .await;
        let mut args = vec!["add", name, "--provider", "basic"];
        if let Some(owner) = owner {
            args.extend(["--owner", owner]);
        }
        let run = home.run(&args, &rt).await;
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    let daemon = home.command(&["run"]).spawn().unwrap();
    let db = home.db().await;
    eventually(Duration::from_secs(30), "the first sweep", || {
        let db = db.clone();
        async move {
            crate::backends::count(
                &db,
                "SELECT count(*) FROM oauth_credential WHERE access_token IS NOT NULL",
            )
            .await
                == 2
        }
    })
    .await;
    eventually(Duration::from_secs(30), "the sockets", || {
        let ready = named.exists() && own.exists() && granted.exists();
        async move { ready }
    })
    .await;
    let token_of = |name: &'static str| {
        let db = db.clone();
        async move {
            let (t,): (String,) =
                sqlx::query_as("SELECT access_token FROM oauth_credential WHERE name = $1")
                    .bind(name)
                    .fetch_one(&db)
                    .await
                    .unwrap();
            t
        }
    };
    let (graph, nobodys) = (token_of("graph").await, token_of("nobody-graph").await);

    // A named credential's route without a rule for the peer: root (and the service's user) only.
    let (status, body) = curl_as(0, &named, "/echo").await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["token_sha256"], sha(graph.as_bytes()));
    let (status, body) = curl_as(NOBODY, &named, "/echo").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "forbidden"
    );

    // An [[access]] block grants nobody the credentials nobody-*: that route serves it.
    let (status, body) = curl_as(NOBODY, &granted, "/echo").await;
    assert_eq!(status, 200, "{body}");

    // A provider's route: each user their own credential; a user with none, 404.
    let (status, body) = curl_as(NOBODY, &own, "/echo").await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["token_sha256"], sha(nobodys.as_bytes()));
    let (status, body) = curl_as(0, &own, "/echo").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no credential of owner \\\"root\\\""),
        "{body}"
    );

    let mut secrets = stored_secrets(&db).await;
    secrets.extend([graph, nobodys]);
    let output = stop(daemon).await;
    let log = log_of(&output);
    assert_no_secrets("daemon log", &log, &secrets);
}

#[tokio::test]
async fn a_token_another_process_renewed_is_used_without_a_second_refresh() {
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let port = free_port();
    let (home, daemon) = daemon(&server, &route(port, &resource.url(), "")).await;
    wait_listening(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    // The route has the first token in memory.
    assert_eq!(
        http.get(format!("{base}/warm"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let first = access_token(&home).await;
    revoke_at_peer(&server, &first).await;
    server.reset_stats().await;
    // Another process renews it (`tokenwarden refresh`, under the same lease rules).
    let run = home.run(&["refresh", "graph"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let second = access_token(&home).await;
    assert_ne!(first, second);
    // The route's remembered token meets a 401; the stored one is newer: sent again with it,
    // and the provider saw only the other process's refresh.
    let answer = http.get(format!("{base}/after")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let echo: Value = answer.json().await.unwrap();
    assert_eq!(echo["token_sha256"], sha(second.as_bytes()));
    let stats = server.stats().await;
    assert_eq!((stats.refresh_ok, stats.refresh_reuse), (1, 0), "{stats:?}");
    stop(daemon).await;
}

#[tokio::test]
async fn a_token_about_to_expire_is_renewed_before_it_is_sent() {
    // Access tokens live 75 s (tokenwarden counts at least a minute); the route wants 65 s left:
    // within seconds of the first sweep's token, a request would carry a token about to lapse.
    // The route renews first: the upstream never answers 401, no renewal after one is needed.
    let server = OauthServer::start_with_ttl(75).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let port = free_port();
    let (home, daemon) = daemon(
        &server,
        &route(port, &resource.url(), "min_valid = \"65s\""),
    )
    .await;
    wait_listening(port).await;
    let first = access_token(&home).await;
    let http = client();
    let url = format!("http://127.0.0.1:{port}/poll");
    let renewed = Arc::new(std::sync::Mutex::new(None));
    eventually(
        Duration::from_mins(1),
        "a request sent with a renewed token",
        || {
            let (http, url, first, renewed) =
                (http.clone(), url.clone(), first.clone(), renewed.clone());
            async move {
                let answer = http.get(url).send().await.unwrap();
                assert_eq!(answer.status(), StatusCode::OK);
                let echo: Value = answer.json().await.unwrap();
                let changed = echo["token_sha256"] != sha(first.as_bytes());
                if changed {
                    *renewed.lock().unwrap() = Some(echo["token_sha256"].clone());
                }
                changed
            }
        },
    )
    .await;
    let stats = server.stats().await;
    let output = stop(daemon).await;
    let log = log_of(&output);
    assert_eq!(
        resource.rejected.load(Ordering::SeqCst),
        0,
        "a dead token reached the upstream: {log}"
    );
    assert!(
        stats.refresh_ok >= 2 && stats.refresh_reuse == 0,
        "{stats:?}"
    );
}

/// An HTTPS upstream (`openssl s_server -www`, answering any GET with a page) on 127.0.0.1 with a
/// certificate `ca` issued for `names`; stopped on drop.
/// An HTTPS server on 127.0.0.1 (`openssl s_server -www`: a page for any GET) with a certificate
/// `ca` issued for `names`; stopped when dropped.
pub(crate) struct TlsUpstream {
    pub(crate) port: u16,
    _child: tokio::process::Child,
}

impl TlsUpstream {
    pub(crate) async fn start(ca: &crate::postgres::TestCa, names: &str) -> Self {
        Self::start_as(ca, names, "-www").await
    }

    /// As [`TlsUpstream::start`], with `openssl s_server`'s `mode` (`-rev`: each line sent back
    /// reversed, whatever the request; the HTTPS token endpoint of `faults.rs`).
    pub(crate) async fn start_as(ca: &crate::postgres::TestCa, names: &str, mode: &str) -> Self {
        let (cert, key) = ca.issue(names);
        let port = free_port();
        let child = tokio::process::Command::new("openssl")
            .args(["s_server", "-quiet", mode, "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("openssl s_server");
        wait_listening(port).await;
        Self {
            port,
            _child: child,
        }
    }
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_the_system_roots() {
    let server = OauthServer::start_with_ttl(3600).await;
    let ours = crate::postgres::TestCa::new("tokenwarden proxy test CA");
    let other = crate::postgres::TestCa::new("another CA");
    let trusted = TlsUpstream::start(&ours, "IP:127.0.0.1").await;
    let unknown_issuer = TlsUpstream::start(&other, "IP:127.0.0.1").await;
    let wrong_name = TlsUpstream::start(&ours, "DNS:elsewhere.example").await;
    let ports = [free_port(), free_port(), free_port()];
    let home = Home::new(&server, "");
    for (port, upstream) in ports.iter().zip([&trusted, &unknown_issuer, &wrong_name]) {
        home.append_config(&route(
            *port,
            &format!("https://127.0.0.1:{}", upstream.port),
            &format!("name = \"r{port}\""),
        ));
    }
    let rt = server
        .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("graph", "basic", &rt).await;
    // The system's roots, as rustls-native-certs reads them: here only the test's CA.
    let daemon = home
        .command(&["run"])
        .env("SSL_CERT_FILE", &ours.cert)
        .spawn()
        .unwrap();
    for port in ports {
        wait_listening(port).await;
    }
    let http = client();
    let answer = http
        .get(format!("http://127.0.0.1:{}/", ports[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    for port in &ports[1..] {
        let answer = http
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_GATEWAY, "route on {port}");
        let text = answer.text().await.unwrap();
        let refusal: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(refusal["error"], "upstream_unreachable", "{text}");
        assert!(
            refusal["reason"]
                .as_str()
                .is_some_and(|r| r.contains("certificate")),
            "{text}"
        );
    }
    stop(daemon).await;
}

#[tokio::test]
async fn routes_go_through_the_environments_http_proxy_but_never_for_loopback() {
    let server = OauthServer::start_with_ttl(3600).await;
    let resource = Resource::start(server.introspection_url(), None).await;
    let recorder = crate::fake_endpoint::FakeEndpoint::start(crate::fake_endpoint::Reply::json(
        418,
        "{\"via\":\"the proxy\"}",
    ))
    .await;
    let proxy = recorder.token_url().replace("/token", "");
    let (near, far) = (free_port(), free_port());
    let home = Home::new(&server, "");
    home.append_config(&route(near, &resource.url(), "name = \"near\""));
    home.append_config(&route(
        far,
        "http://api.example.invalid/base",
        "name = \"far\"\nallow_insecure_http = true",
    ));
    let rt = server
        .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("graph", "basic", &rt).await;
    let mut command = home.command(&["run"]);
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        command.env(var, &proxy);
    }
    let daemon = command.spawn().unwrap();
    wait_listening(near).await;
    wait_listening(far).await;
    let http = client();
    // Loopback: straight to the upstream, the proxy sees nothing.
    let answer = http
        .get(format!("http://127.0.0.1:{near}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(recorder.requests(), 0, "the proxy saw loopback traffic");
    // Elsewhere: through the proxy, whose answer is passed back as the upstream's.
    let answer = http
        .get(format!("http://127.0.0.1:{far}/x?y=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(answer.text().await.unwrap(), "{\"via\":\"the proxy\"}");
    assert_eq!(recorder.requests(), 1);
    stop(daemon).await;
}
