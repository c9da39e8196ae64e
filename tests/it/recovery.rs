//! Recovery from a crash mid-sweep against a provider that has already rotated every refresh token
//! in flight: where the provider declares a grace window (`refresh_token_reuse`, and the server's
//! own) every credential lives on by a repeat inside it; without one, no refresh token is
//! presented twice, and every lost credential is flagged with its reason within seconds of the
//! restart — never when the dead daemon's lease runs out two minutes later. Each on SQLite and on
//! PostgreSQL.

use std::time::{Duration, Instant};

use crate::backends::{Backend, BackendHome, on_both_backends};
use crate::harness::{Home, eventually, signal, stop};
use crate::oauth_server::{OauthServer, ServerOptions, clients};

const SCOPE: &str = "openid offline_access api:read";
/// Every credential in flight at once, and a lease (2 × 30 s + 50 s + 10 s) far longer than the
/// recovery these tests wait for.
const CONFIG: &str = "concurrency = 20";
const CREDENTIALS: u64 = 20;
/// How long the restarted daemon may take to recover every credential: well inside a 30 s grace
/// window, and far below the lease.
const RECOVERY: Duration = Duration::from_secs(20);

/// Starts a daemon on `home` with every credential's refresh held back by `server` after the
/// rotation, kills it with SIGKILL, and lets the held answers go (to a dead process).
async fn crash_after_rotation(server: &OauthServer, home: &Home) {
    server.hold(120).await;
    let daemon = home.command(&["run"]).spawn().unwrap();
    let stats = server.wait_held(CREDENTIALS, Duration::from_secs(30)).await;
    assert_eq!(
        stats.refresh_ok, CREDENTIALS,
        "the provider rotated every token"
    );
    signal(&daemon, "-KILL");
    let mut daemon = daemon;
    assert_eq!(
        daemon.wait().await.unwrap().code(),
        None,
        "killed by a signal"
    );
    server.release().await;
}

async fn setup(server: &OauthServer, backend: Backend) -> (BackendHome, Vec<String>) {
    let home = BackendHome::new(server, backend, CONFIG).await;
    let mut minted = Vec::new();
    for i in 0..CREDENTIALS {
        let token = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
        home.add(&format!("c{i:02}"), "basic", &token).await;
        minted.push(token);
    }
    (home, minted)
}

async fn killed_mid_sweep_inside_a_grace_window_every_credential_lives_on(backend: Backend) {
    let server = OauthServer::start_with(ServerOptions {
        rt_grace_secs: 30,
        ..ServerOptions::default()
    })
    .await;
    let (home, minted) = setup(&server, backend).await;
    home.append_to_provider("basic", "refresh_token_reuse = \"30s\"");
    crash_after_rotation(&server, &home).await;

    let restarted = Instant::now();
    let daemon = home.command(&["run"]).spawn().unwrap();
    let db = home.db().await;
    eventually(
        RECOVERY,
        "every credential to be refreshed again",
        || async {
            db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'")
                .await
                == 20
        },
    )
    .await;
    let took = restarted.elapsed();
    let out = stop(daemon).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is gone; taking its attempt over now"),
        "{stderr}"
    );

    let stats = server.stats().await;
    assert_eq!(
        stats.refresh_reuse, 0,
        "no reuse outside the window: {stats:?}"
    );
    assert_eq!(stats.refresh_grace, CREDENTIALS, "{stats:?}");
    assert_eq!(
        stats.refresh_repeated, CREDENTIALS,
        "each repeated once, inside the declared window: {stats:?}"
    );
    assert!(
        stderr.contains("the provider accepts its refresh token again"),
        "{stderr}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM oauth_credential WHERE status <> 'active'")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'interrupted'")
            .await,
        20
    );
    // Every credential works: its stored refresh token is a new one, and its access token is live.
    let rows: Vec<(String, String, String)> = db
        .fetch_all(
            "SELECT name, refresh_token, access_token FROM oauth_credential ORDER BY name",
            &[],
        )
        .await;
    for (name, refresh, access) in rows {
        assert!(
            !minted.contains(&refresh),
            "{name} holds a rotated refresh token"
        );
        assert!(
            server.introspect_active(&access).await,
            "{name}'s access token is active"
        );
    }
    let refreshed = home.run(&["refresh", "c00"], "").await;
    assert_eq!(
        refreshed.code,
        Some(0),
        "the stored refresh token works: {refreshed:?}"
    );
    assert_eq!(server.stats().await.refresh_reuse, 0);
    eprintln!("recovered {CREDENTIALS} credentials in {took:?}");
}
on_both_backends!(killed_mid_sweep_inside_a_grace_window_every_credential_lives_on);

async fn killed_mid_sweep_against_a_strict_provider_nothing_is_replayed_and_all_are_flagged(
    backend: Backend,
) {
    let server = OauthServer::start().await;
    let (home, _minted) = setup(&server, backend).await;
    crash_after_rotation(&server, &home).await;
    let requests = server.stats().await.token_requests;

    let restarted = Instant::now();
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        restarted.elapsed() < RECOVERY,
        "flagged within seconds, not when the lease runs out: {:?}",
        restarted.elapsed()
    );
    let db = home.db().await;
    let flagged: Vec<(String, String)> = db
        .fetch_all(
            "SELECT status, last_error FROM oauth_credential ORDER BY name",
            &[],
        )
        .await;
    assert_eq!(flagged.len(), 20);
    for (status, error) in flagged {
        assert_eq!(status, "needs_reauthorization");
        assert!(
            error.starts_with("refresh token already sent by an attempt started at ")
                && error.contains("does not accept a refresh token twice")
                && error.contains("authorize again"),
            "{error}"
        );
    }
    let stats = server.stats().await;
    assert_eq!(stats.token_requests, requests, "nothing sent: {stats:?}");
    assert_eq!(stats.refresh_repeated, 0, "{stats:?}");
    assert_eq!(stats.refresh_reuse, 0, "{stats:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'needs_reauthorization'")
            .await,
        20
    );
    let status = home.run(&["status"], "").await;
    assert!(
        status.stdout.contains("refresh token already sent"),
        "{status:?}"
    );
}
on_both_backends!(
    killed_mid_sweep_against_a_strict_provider_nothing_is_replayed_and_all_are_flagged
);
