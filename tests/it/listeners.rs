//! Hostile clients of the daemon's listeners (the metrics listener here; the authorize callback
//! in lifecycle.rs, the token API in api.rs): a request head never finished, and hundreds of idle
//! connections against a lowered descriptor limit. The daemon cuts the first, never spins or
//! floods its log on the second, and keeps refreshing throughout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Home, count, eventually, stop};
use crate::oauth_server::{OauthServer, clients};

/// The daemon's descriptor limit in these tests: far below the idle connections opened.
const NOFILE: u32 = 64;
/// Idle connections a hostile local user opens.
const IDLE: usize = 300;
/// The most log the daemon may write in the whole test (the unfixed daemon wrote 1.25 GB in ten
/// seconds); trace level, a sweep every second.
const LOG_BOUND: usize = 4 * 1024 * 1024;

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

#[tokio::test]
async fn metrics_listener_cuts_slow_heads_and_survives_idle_floods_at_a_low_descriptor_limit() {
    let server = OauthServer::start().await;
    let port = free_port();
    // A sweep every second, tokens living 120 s: every sweep refreshes.
    let home = Home::new(
        &server,
        &format!(
            "schedule = \"* * * * * *\"\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\""
        ),
    );
    let rt = server
        .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("sharepoint", "basic", &rt).await;
    let mut daemon = home
        .command_with_nofile(NOFILE, &["run"])
        .spawn()
        .expect("start daemon");
    // Read the log as it comes (a pipe left full would slow a flood down and hide it), counting
    // bytes and keeping at most LOG_BOUND of them.
    let mut stderr = daemon.stderr.take().unwrap();
    let log = tokio::spawn(async move {
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
    });
    eventually(Duration::from_secs(30), "the first scrape", || async {
        scrape(port).await.is_some()
    })
    .await;

    // A request head that is never finished is cut by the header-read timeout.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(40), slow.read_to_end(&mut rest)).await;
    assert!(cut.is_ok(), "an unfinished request head was held open");
    drop(slow);

    // 300 idle connections against a limit of 64 descriptors.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect (the kernel's backlog takes what the daemon does not accept)"),
        );
    }
    let db = home.db().await;
    let before = count(
        &db,
        "SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'",
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "refreshes while the idle connections are held",
        || async {
            count(
                &db,
                "SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'",
            )
            .await
                >= before + 3
        },
    )
    .await;
    drop(idle);
    eventually(
        Duration::from_secs(30),
        "a scrape after the idle connections closed",
        || async { scrape(port).await.is_some() },
    )
    .await;

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
    let tokens = crate::harness::stored_secrets(&db).await;
    crate::harness::assert_no_secrets("log", &text, &tokens);
}
