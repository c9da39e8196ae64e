//! Running as a service: the systemd notify protocol (READY, watchdog pings, STOPPING) spoken to a
//! NOTIFY_SOCKET the test opens, and JSON logs for containers.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::{Home, signal, stop};

/// Nothing listens here; no credential exists anyway.
const NOWHERE: &str = "http://127.0.0.1:9/token";

/// Collects datagrams until `done` says so or `deadline` passes.
fn receive_until(
    socket: &UnixDatagram,
    deadline: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) {
        assert!(start.elapsed() < deadline, "timed out; received {got:?}");
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[tokio::test]
async fn the_daemon_speaks_the_systemd_notify_protocol() {
    let home = Home::with_token_url(NOWHERE, "");
    let path = home.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut cmd = home.command(&["run"]);
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    let daemon = cmd.spawn().unwrap();

    let got = receive_until(&socket, Duration::from_secs(20), |got| {
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    });
    assert!(got[0].contains("READY=1"), "READY comes first: {got:?}");
    assert!(
        got.iter().any(|m| m.starts_with("STATUS=last sweep at ")),
        "{got:?}"
    );

    // SIGHUP is not a reload, and must not kill the daemon either.
    signal(&daemon, "-HUP");
    let got = receive_until(&socket, Duration::from_secs(20), |got| {
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
    });
    assert!(!got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    signal(&daemon, "-TERM");
    let got = receive_until(&socket, Duration::from_secs(20), |got| {
        got.iter().any(|m| m.contains("STOPPING=1"))
    });
    assert!(got.last().unwrap().contains("STOPPING=1"), "{got:?}");
    let out = tokio::time::timeout(Duration::from_secs(20), daemon.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SIGHUP does not reload the configuration"),
        "{stderr}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_a_sweep_summary() {
    let home = Home::with_token_url(NOWHERE, "");
    let run = home
        .run(&["--log-format", "json", "run", "--once"], "")
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines
        .iter()
        .find(|l| l["message"] == "sweep finished")
        .expect("a summary line");
    assert_eq!(summary["due"], 0);
    assert!(
        summary["duration_ms"].is_number() && summary["timestamp"].is_string(),
        "{summary}"
    );
}

#[tokio::test]
async fn metrics_and_healthz_report_credentials_and_sweeps() {
    use crate::oauth_server::{OauthServer, clients};
    let server = OauthServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = Home::new(
        &server,
        &format!("[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\""),
    );
    let rt = server
        .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("sharepoint", "basic", &rt).await;
    let daemon = home.command(&["run"]).spawn().unwrap();

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let scraped = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    crate::harness::eventually(
        Duration::from_secs(20),
        "a scrape after the first sweep",
        || {
            let (http, url, scraped) = (http.clone(), format!("{base}/metrics"), scraped.clone());
            async move {
                let Ok(response) = http.get(url).send().await else {
                    return false;
                };
                let text = response.text().await.unwrap_or_default();
                let done = text.contains("tokenwarden_sweeps_total 1");
                *scraped.lock().unwrap() = text;
                done
            }
        },
    )
    .await;
    let metrics = scraped.lock().unwrap().clone();
    assert!(
        metrics.contains(r#"tokenwarden_refreshes_total{outcome="refreshed"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tokenwarden_credential_status{credential="sharepoint",provider="basic",status="active"} 1"#), "{metrics}");
    assert!(
        metrics.contains(
            r#"tokenwarden_consecutive_failures{credential="sharepoint",provider="basic"} 0"#
        ),
        "{metrics}"
    );
    let expires = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"tokenwarden_access_token_expires_in_seconds{credential="sharepoint",provider="basic"} "#))
        .expect("an expiry gauge");
    assert!(
        // A fresh 120 s token, scraped after the sweep (however slow this machine is today).
        (1..=120).contains(&expires.parse::<i64>().unwrap()),
        "{expires}"
    );
    assert!(
        metrics.contains("tokenwarden_last_sweep_duration_seconds"),
        "{metrics}"
    );
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        http.get(format!("{base}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let db = home.db().await;
    let tokens = crate::backends::stored_secrets(&db).await;
    crate::harness::assert_no_secrets("metrics", &metrics, &tokens);

    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));
}

/// Scrapes `/metrics` on `port` until `done` says the text is complete, within a deadline.
pub async fn scrape_until(port: u16, done: impl Fn(&str) -> bool + Clone) -> String {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let scraped = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    crate::harness::eventually(Duration::from_secs(20), "a complete scrape", || {
        let (http, scraped, done) = (http.clone(), scraped.clone(), done.clone());
        async move {
            let Ok(response) = http
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
            else {
                return false;
            };
            let text = response.text().await.unwrap_or_default();
            let complete = done(&text);
            *scraped.lock().unwrap() = text;
            complete
        }
    })
    .await;
    scraped.lock().unwrap().clone()
}

#[tokio::test]
async fn metrics_at_scale_are_aggregates_and_per_credential_series_stop_at_the_cap() {
    use crate::oauth_server::{OauthServer, clients};
    let server = OauthServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = Home::new(
        &server,
        &format!(
            "[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nper_credential_max = 2"
        ),
    );
    for (name, provider, client) in [
        ("a", "basic", clients::BASIC_ID),
        ("b", "basic", clients::BASIC_ID),
        ("c", "basic", clients::BASIC_ID),
        ("p", "post", clients::POST_ID),
    ] {
        let rt = server
            .mint_refresh_token(client, "openid offline_access api:read")
            .await;
        home.add(name, provider, &rt).await;
    }
    let db = home.db().await;
    sqlx::query("UPDATE oauth_credential SET status = 'needs_reauthorization' WHERE name = 'c'")
        .execute(&db)
        .await
        .unwrap();
    let daemon = home.command(&["run"]).spawn().unwrap();
    let metrics = scrape_until(port, |t| t.contains("tokenwarden_sweeps_total 1")).await;
    let (soonest, oldest): (i64, i64) = sqlx::query_as(
        "SELECT min(access_token_expires_at), min(last_refreshed_at) FROM oauth_credential \
         WHERE provider = 'basic' AND status <> 'disabled'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    for line in [
        r#"tokenwarden_credentials{provider="basic",status="active"} 2"#.to_owned(),
        r#"tokenwarden_credentials{provider="basic",status="needs_reauthorization"} 1"#.to_owned(),
        r#"tokenwarden_credentials{provider="post",status="active"} 1"#.to_owned(),
        // The test server's tokens live 120 s, inside the 10-minute margin.
        r#"tokenwarden_credentials_expiring_within_margin{provider="basic"} 2"#.to_owned(),
        r#"tokenwarden_credentials_failing{provider="basic"} 0"#.to_owned(),
        format!(
            r#"tokenwarden_access_token_soonest_expiry_timestamp_seconds{{provider="basic"}} {soonest}"#
        ),
        format!(r#"tokenwarden_oldest_refresh_timestamp_seconds{{provider="basic"}} {oldest}"#),
        // 4 credentials, more than per_credential_max = 2: left out, and said so.
        "tokenwarden_per_credential_series 0".to_owned(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}: {metrics}");
    }
    assert!(
        metrics.contains("metrics.per_credential_max (2)"),
        "{metrics}"
    );
    for series in [
        "tokenwarden_access_token_expires_in_seconds{",
        "tokenwarden_credential_status{",
        "tokenwarden_consecutive_failures{",
    ] {
        assert!(!metrics.contains(series), "{series} left out: {metrics}");
    }
    let tokens = crate::backends::stored_secrets(&db).await;
    crate::harness::assert_no_secrets("metrics", &metrics, &tokens);
    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));

    // Down to the cap: the per-credential series are back.
    sqlx::query("DELETE FROM oauth_credential WHERE name IN ('b', 'c')")
        .execute(&db)
        .await
        .unwrap();
    let daemon = home.command(&["run"]).spawn().unwrap();
    let metrics = scrape_until(port, |t| t.contains("tokenwarden_sweeps_total 1")).await;
    assert!(
        metrics.contains("tokenwarden_per_credential_series 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"tokenwarden_credential_status{credential="a",provider="basic",status="active"} 1"#
        ),
        "{metrics}"
    );
    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));
}

/// The daemon sleeps until each tick itself (tokio-cron-scheduler's 500 ms loop is not run): it
/// must still sweep on every tick of a seconds-granular schedule, once per tick, and stop on
/// SIGTERM while it sleeps.
#[tokio::test]
async fn the_daemon_sweeps_once_on_each_tick_of_its_schedule() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let home = Home::with_token_url(NOWHERE, "schedule = \"*/2 * * * * *\"");
    let mut daemon = home
        .command(&["--log-format", "json", "run"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(daemon.stderr.take().unwrap()).lines();
    // The startup sweep, then three ticks' sweeps.
    let mut sweeps = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while sweeps.len() < 4 {
            let line = lines.next_line().await.unwrap().expect("the daemon runs");
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            if event["message"] == "sweep finished" {
                let at = event["timestamp"].as_str().unwrap();
                sweeps.push(chrono::DateTime::parse_from_rfc3339(at).unwrap());
            }
        }
    })
    .await
    .expect("four sweeps within 30 s");
    // Ticks every 2 s: the first and the third tick's sweeps are 4 s apart (a sweep per 500 ms
    // check, or a tick missed, would be 3 s off), give or take how late each sweep ran.
    let span = (sweeps[3] - sweeps[1]).as_seconds_f64();
    assert!((3.0..=5.0).contains(&span), "{span} s: {sweeps:?}");

    signal(&daemon, "-TERM");
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push_str(&line);
            rest.push('\n');
        }
    })
    .await
    .expect("the daemon exits within 20 s of SIGTERM");
    let status = daemon.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("tokenwarden stopped"), "{rest}");
}
