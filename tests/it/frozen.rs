//! A daemon frozen with its requests out (SIGSTOP, as a paused VM, a stopped container or a stalled
//! host would be) past its lease, while `run --once` takes over, against the strict rotating
//! oidc-provider peer: no refresh token is presented twice, and once the daemon runs again every
//! credential works. On this host the live daemon keeps the credentials whose requests it sent;
//! from another PID namespace (standing for another host) they are flagged, never sent, and the
//! daemon's answers make them active again. Each on SQLite and on PostgreSQL (the other namespace
//! on PostgreSQL).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backends::{Backend, BackendHome, on_both_backends};
use crate::harness::{eventually, signal, stop};
use crate::oauth_server::{OauthServer, clients};

const SCOPE: &str = "openid offline_access api:read";
const CREDENTIALS: u64 = 20;
/// Eight requests in flight at once; short timeouts, so the lease (2 × 5 s + 20 s + 10 s) runs
/// out 40 s after the claim.
const CONFIG: &str = "concurrency = 8\nbusy_timeout = \"1s\"\n[http]\nrequest_timeout = \"5s\"\nconnect_timeout = \"1s\"";
/// How long the test waits for the lease of the frozen daemon to run out, at most.
const PAST_LEASE: Duration = Duration::from_secs(90);

/// Seconds since the Unix epoch, now.
fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// Where the taking-over `run --once` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taker {
    /// On this host, beside the frozen daemon.
    SameHost,
    /// In a PID namespace of its own (`unshare --pid --fork`): it cannot see the daemon.
    OtherNamespace,
}

/// Credentials of `status --json` whose attempt is in `state`, and every attempt as shown.
async fn attempts_in(home: &BackendHome, state: &str) -> (usize, String) {
    let run = home.run(&["status", "--json"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let shown: Vec<String> = rows.iter().map(|r| r["attempt"].to_string()).collect();
    let n = rows
        .iter()
        .filter(|r| r["attempt"]["state"] == state)
        .count();
    (n, shown.join("\n"))
}

async fn frozen_past_its_lease(backend: Backend, taker: Taker) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, CONFIG).await;
    let mut minted = Vec::new();
    for i in 0..CREDENTIALS {
        let token = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
        home.add(&format!("c{i:02}"), "basic", &token).await;
        minted.push(token);
    }
    // A slow provider: it rotates at once, and its answers wait.
    server.hold(300).await;
    let daemon = home.command(&["run"]).spawn().unwrap();
    server.wait_held(8, Duration::from_secs(30)).await;
    let db = home.db().await;
    // Frozen once every credential is claimed (no claim's transaction open: a SQLite writer
    // frozen inside one would block every other process until it runs again).
    eventually(
        Duration::from_secs(30),
        "the daemon to claim every credential",
        || async {
            db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'pending'")
                .await
                == 20
        },
    )
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation WHERE sent_at IS NOT NULL")
            .await,
        8,
        "eight requests went out, the other twelve wait for a slot"
    );
    signal(&daemon, "-STOP");
    // The answers reach the frozen daemon's sockets, unread.
    assert_eq!(server.release().await, 8);
    eventually(
        PAST_LEASE,
        "the frozen daemon's leases to run out",
        || async {
            let (running,): (i64,) = db
                .fetch_one(
                    "SELECT count(*) FROM oauth_credential WHERE lease_expires_at > CAST($1 AS BIGINT)",
                    &[&now().to_string()],
                )
                .await;
            running == 0
        },
    )
    .await;
    if taker == Taker::SameHost {
        let (held, shown) = attempts_in(&home, "held_past_lease").await;
        assert_eq!(held, 8, "{shown}");
    }

    let once = match taker {
        Taker::SameHost => home.run(&["run", "--once"], "").await,
        Taker::OtherNamespace => {
            let child = home
                .command_in_new_pid_namespace(&["run", "--once"])
                .spawn()
                .unwrap();
            let out = tokio::time::timeout(Duration::from_mins(1), child.wait_with_output())
                .await
                .expect("run --once ends")
                .unwrap();
            crate::harness::Run {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
    };
    let stats = server.stats().await;
    assert_eq!(stats.refresh_repeated, 0, "{stats:?}\n{}", once.stderr);
    assert_eq!(
        stats.refresh_ok, 20,
        "the twelve never sent were taken over, the eight sent were not sent again: {stats:?}"
    );
    match taker {
        Taker::SameHost => {
            assert_eq!(once.code, Some(0), "{once:?}");
            assert!(
                once.stderr.contains("alive but stopped past its lease"),
                "{}",
                once.stderr
            );
            let (held, shown) = attempts_in(&home, "held_past_lease").await;
            assert_eq!(held, 8, "{shown}");
            assert_eq!(
                db.count("SELECT count(*) FROM oauth_credential WHERE status <> 'active'")
                    .await,
                0
            );
        }
        Taker::OtherNamespace => {
            // It cannot tell a frozen peer from a dead one: rule 1, nothing sent twice.
            assert_eq!(once.code, Some(1), "{once:?}");
            let flagged: Vec<(String,)> = db
                .fetch_all(
                    "SELECT last_error FROM oauth_credential WHERE status = 'needs_reauthorization'",
                    &[],
                )
                .await;
            assert_eq!(flagged.len(), 8, "{}", once.stderr);
            for (error,) in flagged {
                assert!(
                    error.starts_with("refresh token already sent by an attempt started at ")
                        && error.contains("becomes active again"),
                    "{error}"
                );
            }
        }
    }

    // The daemon runs again: it reads the answers waiting in its sockets and stores them, its
    // lease long gone, because each row still holds the refresh token it sent.
    signal(&daemon, "-CONT");
    eventually(
        Duration::from_secs(30),
        "the daemon to store its eight answers",
        || async {
            db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'")
                .await
                == 20
        },
    )
    .await;
    let out = stop(daemon).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let stats = server.stats().await;
    assert_eq!(stats.refresh_repeated, 0, "{stats:?}");
    assert_eq!(stats.refresh_reuse, 0, "{stats:?}");
    assert_eq!(stats.grants_revoked, 0, "{stats:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM oauth_credential WHERE status <> 'active'")
            .await,
        0,
        "20 of 20 working"
    );
    let rows: Vec<(String, String, String)> = db
        .fetch_all(
            "SELECT name, refresh_token, access_token FROM oauth_credential ORDER BY name",
            &[],
        )
        .await;
    for (name, refresh, access) in rows {
        assert!(!minted.contains(&refresh), "{name} holds a rotated token");
        assert!(
            server.introspect_active(&access).await,
            "{name}'s access token is active"
        );
    }
    assert_eq!(attempts_in(&home, "held_past_lease").await.0, 0);
    db.close().await;
}

async fn frozen_past_its_lease_on_this_host_nothing_is_presented_twice(backend: Backend) {
    frozen_past_its_lease(backend, Taker::SameHost).await;
}
on_both_backends!(frozen_past_its_lease_on_this_host_nothing_is_presented_twice);

/// The process taking over in another PID namespace, on PostgreSQL: another host, as far as it
/// can tell.
#[tokio::test]
async fn frozen_past_its_lease_seen_from_another_pid_namespace_nothing_is_presented_twice() {
    frozen_past_its_lease(Backend::Postgres, Taker::OtherNamespace).await;
}
