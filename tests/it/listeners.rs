//! Hostile clients of the daemon's listeners (the metrics listener and the token API's unix
//! socket here; the authorize callback in lifecycle.rs): a request head never finished, and
//! hundreds of idle connections against a lowered descriptor limit. The daemon cuts the first,
//! never spins or floods its log on the second, keeps refreshing throughout, and answers a real
//! request afterwards.

use std::future::Future;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, ChildStderr};
use tokio::task::JoinHandle;

use crate::backends::count;
use crate::harness::{Home, eventually, stop};
use crate::oauth_server::{OauthServer, clients};

/// The daemon's descriptor limit in these tests: far below the idle connections opened.
const NOFILE: u32 = 64;
/// Idle connections a hostile local user opens.
const IDLE: usize = 300;
/// The most log the daemon may write in the whole test (the unfixed daemon wrote 1.25 GB in ten
/// seconds); trace level, a sweep every second.
const LOG_BOUND: usize = 4 * 1024 * 1024;
/// Longest a test waits for a listener to cut an unfinished request head (the metrics
/// listener's and the token API's header-read timeouts are 10 s).
const CUT_WITHIN: Duration = Duration::from_secs(40);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn scrape(port: u16) -> Option<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?;
    (response.status() == 200).then_some(response.text().await.ok()?)
}

/// A home whose daemon sweeps every second (tokens living 120 s: every sweep refreshes), with
/// one credential, `sharepoint`, and `extra` configuration.
async fn refreshing_home(server: &OauthServer, extra: &str) -> Home {
    let home = Home::new(server, &format!("schedule = \"* * * * * *\"\n{extra}"));
    let rt = server
        .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("sharepoint", "basic", &rt).await;
    home
}

/// Reads the daemon's log as it comes (a pipe left full would slow a flood down and hide it),
/// counting bytes and keeping at most [`LOG_BOUND`] of them.
fn read_log(daemon: &mut Child) -> JoinHandle<(usize, String)> {
    let mut stderr: ChildStderr = daemon.stderr.take().unwrap();
    tokio::spawn(async move {
        let (mut total, mut kept) = (0usize, Vec::new());
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n;
            if kept.len() < LOG_BOUND {
                kept.extend_from_slice(&buf[..n]);
            }
        }
        (total, String::from_utf8_lossy(&kept).into_owned())
    })
}

/// Sends `head` (a request head never finished) on `stream` and asserts that the listener cuts
/// the connection within [`CUT_WITHIN`].
async fn assert_slow_head_cut<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, head: &[u8]) {
    stream.write_all(head).await.unwrap();
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(CUT_WITHIN, stream.read_to_end(&mut rest)).await;
    assert!(cut.is_ok(), "an unfinished request head was held open");
}

/// Opens [`IDLE`] connections with `connect` and holds them while the daemon refreshes three
/// more times; then closes them.
async fn hold_idle_while_refreshing<S, F, Fut>(db: &SqlitePool, mut connect: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            connect()
                .await
                .expect("connect (the kernel's backlog takes what the daemon does not accept)"),
        );
    }
    let refreshed = "SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'";
    let before = count(db, refreshed).await;
    eventually(
        Duration::from_secs(30),
        "refreshes while the idle connections are held",
        || async { count(db, refreshed).await >= before + 3 },
    )
    .await;
    drop(idle);
}

/// Stops the daemon and checks its log: bounded, no panic, the accept warning rate-limited, no
/// secret.
async fn stop_and_check_log(daemon: Child, log: JoinHandle<(usize, String)>, db: &SqlitePool) {
    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));
    let (total, text) = log.await.unwrap();
    assert!(total < LOG_BOUND, "the daemon wrote {total} bytes of log");
    assert!(!text.contains("panicked"), "{text}");
    let accept_warnings = text.matches("cannot accept a connection").count();
    assert!(
        accept_warnings <= 2,
        "{accept_warnings} accept warnings: the warning is not rate-limited"
    );
    let tokens = crate::backends::stored_secrets(db).await;
    crate::harness::assert_no_secrets("log", &text, &tokens);
}

#[tokio::test]
async fn metrics_listener_cuts_slow_heads_and_survives_idle_floods_at_a_low_descriptor_limit() {
    let server = OauthServer::start().await;
    let port = free_port();
    let home = refreshing_home(
        &server,
        &format!("[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\""),
    )
    .await;
    let mut daemon = home
        .command_with_nofile(NOFILE, &["run"])
        .spawn()
        .expect("start daemon");
    let log = read_log(&mut daemon);
    eventually(Duration::from_secs(30), "the first scrape", || async {
        scrape(port).await.is_some()
    })
    .await;

    // A request head that is never finished is cut by the header-read timeout.
    let slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    assert_slow_head_cut(slow, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n").await;

    // 300 idle connections against a limit of 64 descriptors.
    let db = home.db().await;
    hold_idle_while_refreshing(&db, || tokio::net::TcpStream::connect(("127.0.0.1", port))).await;
    eventually(
        Duration::from_secs(30),
        "a scrape after the idle connections closed",
        || async { scrape(port).await.is_some() },
    )
    .await;
    stop_and_check_log(daemon, log, &db).await;
}

#[tokio::test]
async fn token_api_cuts_slow_heads_and_survives_idle_floods_at_a_low_descriptor_limit() {
    let server = OauthServer::start().await;
    let run_dir = tempfile::tempdir().unwrap();
    let socket = run_dir.path().join("api.sock");
    let home = refreshing_home(
        &server,
        &format!("[api]\nsocket = \"{}\"", socket.display()),
    )
    .await;
    let mut daemon = home
        .command_with_nofile(NOFILE, &["run"])
        .spawn()
        .expect("start daemon");
    let log = read_log(&mut daemon);
    let db = home.db().await;
    eventually(
        Duration::from_secs(30),
        "the socket and a token",
        || async {
            socket.exists()
                && count(
                    &db,
                    "SELECT count(*) FROM oauth_credential WHERE access_token IS NOT NULL",
                )
                .await
                    == 1
        },
    )
    .await;
    // The test runs as root, whom the API serves everything.
    let (status, _) = crate::api::raw(&socket, "/v1/token/sharepoint").await;
    assert_eq!(status, 200);

    // A request head that is never finished is cut by the API's header-read timeout.
    let slow = tokio::net::UnixStream::connect(&socket).await.unwrap();
    assert_slow_head_cut(slow, b"GET /v1/token/sharepoint HTTP/1.1\r\nHost: x\r\n").await;

    // 300 idle connections against a limit of 64 descriptors.
    hold_idle_while_refreshing(&db, || tokio::net::UnixStream::connect(&socket)).await;

    // A real request is answered afterwards, with the token the daemon holds now.
    let (status, body) = crate::api::raw(&socket, "/v1/token/sharepoint").await;
    assert_eq!(status, 200, "{body}");
    let stored = sqlx::query_as::<_, (String,)>(
        "SELECT access_token FROM oauth_credential WHERE name = 'sharepoint'",
    )
    .fetch_one(&db)
    .await
    .unwrap()
    .0;
    assert_eq!(body["access_token"], stored.as_str());
    stop_and_check_log(daemon, log, &db).await;
}
