//! Crashes, shutdown and concurrency against the rotating oidc-provider server: kill -9 at each
//! point of a refresh, SIGTERM with a refresh in flight, five processes on one database. Each on
//! SQLite and on PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncBufReadExt;

use crate::backends::{Backend, BackendHome, WriteLock, on_both_backends};
use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{eventually, signal, stop};
use crate::oauth_server::{OauthServer, clients};

const SCOPE: &str = "openid offline_access api:read";
/// Short timeouts, so a dead process's lease runs out in about 20 s.
const SHORT: &str =
    "busy_timeout = \"1s\"\n[http]\nrequest_timeout = \"2s\"\nconnect_timeout = \"1s\"";

async fn refresh_token(home: &BackendHome) -> String {
    let db = home.db().await;
    let (rt,): (String,) = db
        .fetch_one(
            "SELECT refresh_token FROM oauth_credential WHERE name = 'c'",
            &[],
        )
        .await;
    db.close().await;
    rt
}

/// Seconds since the Unix epoch, now.
fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// Kills the child with SIGKILL and reaps it.
async fn kill9(mut child: tokio::process::Child) {
    signal(&child, "-KILL");
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
}

/// A `run --once` whose refresh the provider has answered (rotating the refresh token) while the
/// test holds the database's write lock, so tokenwarden cannot commit the new tokens yet.
struct RotatedBehindLock {
    home: BackendHome,
    minted: String,
    child: tokio::process::Child,
    lock: WriteLock,
    /// Kept alive: dropping it stops the proxy.
    proxy: FakeEndpoint,
}

/// With `lock_timeout`, on PostgreSQL the role's sessions give up waiting for a lock after 1 s (a
/// `lock_timeout` setting, standing for SQLite's `busy_timeout = "1s"`), where by default they
/// wait for it as long as it takes.
async fn rotate_behind_a_write_lock(
    server: &OauthServer,
    backend: Backend,
    lock_timeout: bool,
) -> RotatedBehindLock {
    let (proxy, gate) = FakeEndpoint::gated(server.token_url()).await;
    let home = BackendHome::with_token_url(&proxy.token_url(), backend, SHORT).await;
    let minted = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("c", "basic", &minted).await;
    if lock_timeout && backend == Backend::Postgres {
        let db = home.db().await;
        db.execute("ALTER ROLE CURRENT_USER SET lock_timeout = '1s'", &[])
            .await;
        db.close().await;
    }
    let child = home.command(&["run", "--once"]).spawn().unwrap();
    eventually(
        Duration::from_secs(10),
        "the request to reach the proxy",
        || async { proxy.requests() == 1 },
    )
    .await;
    let lock = home.write_lock().await;
    gate.add_permits(1);
    eventually(
        Duration::from_secs(10),
        "the provider's answer to be relayed",
        || async { proxy.answered() == 1 },
    )
    .await;
    RotatedBehindLock {
        home,
        minted,
        child,
        lock,
        proxy,
    }
}

/// `status --json`'s `attempt` of credential `c`.
async fn status_attempt(home: &BackendHome) -> serde_json::Value {
    let run = home.run(&["status", "--json"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    rows[0]["attempt"].clone()
}

async fn journal(home: &BackendHome) -> Vec<String> {
    let db = home.db().await;
    let rows: Vec<(String,)> = db
        .fetch_all("SELECT outcome FROM token_rotation ORDER BY id", &[])
        .await;
    db.close().await;
    rows.into_iter().map(|(o,)| o).collect()
}

/// The request went out (to an endpoint that never answers) before the kill: sending the refresh
/// token again is a repeat, made because the provider declares a grace window.
async fn killed_before_the_provider_answered_the_stored_token_still_works(backend: Backend) {
    let server = OauthServer::start().await;
    let hang = FakeEndpoint::start(Reply::Hang).await;
    let home = BackendHome::with_token_url(&hang.token_url(), backend, SHORT).await;
    home.append_to_provider("basic", "refresh_token_reuse = \"30s\"");
    let minted = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("c", "basic", &minted).await;

    let child = home.command(&["run", "--once"]).spawn().unwrap();
    eventually(Duration::from_secs(10), "the request to go out", || async {
        hang.requests() == 1
    })
    .await;
    let attempt = status_attempt(&home).await;
    assert_eq!(attempt["state"], "in_flight", "{attempt}");
    let pid = child.id().unwrap();
    assert!(
        attempt["holder"]
            .as_str()
            .unwrap()
            .ends_with(&format!(" pid {pid}")),
        "{attempt}"
    );
    assert!(
        attempt["since"].is_string() && attempt["resolved_by"].is_string(),
        "{attempt}"
    );
    kill9(child).await;
    assert_eq!(
        journal(&home).await,
        ["pending"],
        "the attempt was journaled before the request"
    );
    assert_eq!(refresh_token(&home).await, minted);
    let attempt = status_attempt(&home).await;
    assert_eq!(
        attempt["state"], "interrupted",
        "the holder is gone: {attempt}"
    );
    let text = home.run(&["status"], "").await;
    assert!(text.stdout.contains("interrupted: "), "{}", text.stdout);

    // The lease has most of its time left, but its holder died on this host: the next run takes
    // the attempt over at once.
    home.retarget(server.token_url());
    let started = std::time::Instant::now();
    let run = home.run(&["run", "--once"], "").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        run.stderr.contains("is gone; taking its attempt over"),
        "{}",
        run.stderr
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("was interrupted"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the provider accepts its refresh token again"),
        "{}",
        run.stderr
    );
    assert_eq!(journal(&home).await, ["interrupted", "refreshed"]);
    assert_ne!(refresh_token(&home).await, minted);
    assert_eq!(server.stats().await.refresh_reuse, 0);
}
on_both_backends!(killed_before_the_provider_answered_the_stored_token_still_works);

/// The same kill against a provider that declares nothing (strict): the refresh token it may
/// have seen is never sent again; the credential is flagged with what happened and what to do.
async fn killed_with_a_request_out_to_a_strict_provider_is_flagged_not_replayed(backend: Backend) {
    let server = OauthServer::start().await;
    let hang = FakeEndpoint::start(Reply::Hang).await;
    let home = BackendHome::with_token_url(&hang.token_url(), backend, SHORT).await;
    let minted = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("c", "basic", &minted).await;
    let child = home.command(&["run", "--once"]).spawn().unwrap();
    eventually(Duration::from_secs(10), "the request to go out", || async {
        hang.requests() == 1
    })
    .await;
    kill9(child).await;
    home.retarget(server.token_url());
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        server.stats().await.token_requests,
        0,
        "nothing was sent again"
    );
    let db = home.db().await;
    let (status, error, rt): (String, String, String) = db
        .fetch_one(
            "SELECT status, last_error, refresh_token FROM oauth_credential WHERE name = 'c'",
            &[],
        )
        .await;
    db.close().await;
    assert_eq!(status, "needs_reauthorization");
    assert_eq!(rt, minted, "the stored refresh token is kept");
    assert!(
        error.starts_with("refresh token already sent by an attempt started at ")
            && error.contains("provider basic does not accept a refresh token twice")
            && error.contains("authorize again"),
        "{error}"
    );
    assert_eq!(
        journal(&home).await,
        ["interrupted", "needs_reauthorization"]
    );
}
on_both_backends!(killed_with_a_request_out_to_a_strict_provider_is_flagged_not_replayed);

async fn a_holder_on_another_host_keeps_its_lease_until_it_runs_out(backend: Backend) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, SHORT).await;
    let minted = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("c", "basic", &minted).await;
    let db = home.db().await;
    // Another host's process (another boot id) claimed it and journaled its attempt.
    let foreign = "otherhost/0123456789ab/0123456789ab/4026531836/77/12345/beef";
    db.execute(
        "UPDATE oauth_credential SET lease_owner = $1, \
            lease_expires_at = CAST($2 AS BIGINT) + 600 WHERE name = 'c'",
        &[foreign, &now().to_string()],
    )
    .await;
    db.execute(
        "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at) \
         SELECT id, name, provider, 'schedule', $1, CAST($2 AS BIGINT) - 5 \
         FROM oauth_credential WHERE name = 'c'",
        &[foreign, &now().to_string()],
    )
    .await;

    let attempt = status_attempt(&home).await;
    assert_eq!(attempt["state"], "in_flight", "{attempt}");
    assert_eq!(attempt["holder"], "otherhost pid 77", "{attempt}");
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr
            .contains("skipping credentials that other processes are refreshing"),
        "{}",
        run.stderr
    );
    assert_eq!(
        server.stats().await.token_requests,
        0,
        "its lease was honoured"
    );

    // Once the lease runs out, the attempt is resolved as an interrupted one.
    db.execute(
        "UPDATE oauth_credential SET lease_expires_at = CAST($1 AS BIGINT) - 1",
        &[&now().to_string()],
    )
    .await;
    db.close().await;
    assert_eq!(status_attempt(&home).await["state"], "interrupted");
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(journal(&home).await, ["interrupted", "refreshed"]);
    assert_eq!(server.stats().await.refresh_reuse, 0);
}
on_both_backends!(a_holder_on_another_host_keeps_its_lease_until_it_runs_out);

async fn killed_after_the_response_but_before_the_commit_is_flagged_not_looped(backend: Backend) {
    let server = OauthServer::start().await;
    let RotatedBehindLock {
        home,
        minted,
        child,
        lock,
        proxy: _proxy,
    } = rotate_behind_a_write_lock(&server, backend, false).await;
    assert_eq!(
        server.stats().await.refresh_ok,
        1,
        "the provider rotated the refresh token"
    );
    kill9(child).await;
    lock.release().await;
    assert_eq!(refresh_token(&home).await, minted, "nothing was committed");

    home.retarget(server.token_url());
    // Taken over at once (the holder died on this host), not when its lease runs out; the
    // provider is strict, so the refresh token it rotated is not presented again.
    let requests = server.stats().await.token_requests;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        server.stats().await.token_requests,
        requests,
        "nothing sent"
    );
    assert_eq!(server.stats().await.refresh_repeated, 0);
    let db = home.db().await;
    let (status, error): (String, String) = db
        .fetch_one(
            "SELECT status, last_error FROM oauth_credential WHERE name = 'c'",
            &[],
        )
        .await;
    db.close().await;
    assert_eq!(status, "needs_reauthorization");
    assert!(
        error.starts_with("refresh token already sent by an attempt started at "),
        "{error}"
    );
    assert_eq!(
        journal(&home).await,
        ["interrupted", "needs_reauthorization"]
    );

    // Flagged once, then left alone: no silent loop.
    let requests = server.stats().await.token_requests;
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    assert_eq!(server.stats().await.token_requests, requests);
}
on_both_backends!(killed_after_the_response_but_before_the_commit_is_flagged_not_looped);

async fn killed_right_after_the_commit_loses_nothing(backend: Backend) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, SHORT).await;
    let minted = server.mint_refresh_token(clients::POST_ID, SCOPE).await;
    home.add("c", "post", &minted).await;
    let daemon = home.command(&["run"]).spawn().unwrap();
    let db = home.db().await;
    eventually(
        Duration::from_secs(20),
        "the first rotation to commit",
        || async {
            db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'")
                .await
                == 1
        },
    )
    .await;
    db.close().await;
    kill9(daemon).await;
    let rotated = refresh_token(&home).await;
    assert_ne!(rotated, minted);
    let manual = home.run(&["refresh", "c"], "").await;
    assert_eq!(
        manual.code,
        Some(0),
        "the stored rotated token works: {manual:?}"
    );
    assert_ne!(refresh_token(&home).await, rotated);
    assert_eq!(server.stats().await.refresh_reuse, 0);
}
on_both_backends!(killed_right_after_the_commit_loses_nothing);

async fn sigterm_lets_the_refresh_in_flight_finish_and_commit(backend: Backend) {
    let server = OauthServer::start().await;
    let (proxy, gate) = FakeEndpoint::gated(server.token_url()).await;
    let home = BackendHome::with_token_url(&proxy.token_url(), backend, "").await;
    let minted = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("c", "basic", &minted).await;

    let mut daemon = home.command(&["run"]).spawn().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut lines = tokio::io::BufReader::new(daemon.stderr.take().unwrap()).lines();
    let collected = Arc::clone(&stderr);
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            collected.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    eventually(
        Duration::from_secs(10),
        "the request to reach the proxy",
        || async { proxy.requests() == 1 },
    )
    .await;
    signal(&daemon, "-TERM");
    eventually(
        Duration::from_secs(10),
        "the daemon to acknowledge SIGTERM",
        || async { stderr.lock().unwrap().contains("shutting down") },
    )
    .await;
    gate.add_permits(1);
    let status = tokio::time::timeout(Duration::from_secs(20), daemon.wait())
        .await
        .expect("exits")
        .unwrap();
    reader.await.unwrap();
    let log = stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("access token refreshed") && log.contains("tokenwarden stopped"),
        "{log}"
    );
    assert_eq!(journal(&home).await, ["refreshed"]);
    assert_ne!(
        refresh_token(&home).await,
        minted,
        "the rotated token was stored before exit"
    );
    assert_eq!(server.stats().await.refresh_reuse, 0);
}
on_both_backends!(sigterm_lets_the_refresh_in_flight_finish_and_commit);

async fn five_processes_on_one_database_refresh_each_credential_once(backend: Backend) {
    const CREDENTIALS: usize = 200;
    // Hour-long tokens: once refreshed, a credential is not due again for any process.
    let server = OauthServer::start_with_ttl(3600).await;
    let home = BackendHome::new(&server, backend, "concurrency = 8").await;
    // An empty sweep creates the schema; then the credentials arrive the way another tool would.
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    let minted: Vec<String> = mint_many(&server, CREDENTIALS).await;
    {
        let db = home.db().await;
        for (i, rt) in minted.iter().enumerate() {
            let provider = ["basic", "post", "jwt"][i % 3];
            db.execute(
                "INSERT INTO oauth_credential (name, provider, refresh_token) VALUES ($1, $2, $3)",
                &[&format!("user-{i:03}"), provider, rt],
            )
            .await;
        }
        db.close().await;
    }
    let daemon = home.command(&["run"]).spawn().unwrap();
    let others: Vec<_> = [
        &["run", "--once"][..],
        &["run", "--once"],
        &["run", "--once"],
        &["refresh", "user-000"],
    ]
    .into_iter()
    .map(|args| home.command(args).spawn().unwrap())
    .collect();
    for child in others {
        let out = tokio::time::timeout(Duration::from_mins(1), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let db = home.db().await;
    eventually(
        Duration::from_mins(1),
        "every credential to be refreshed",
        || async {
            db.count("SELECT count(*) FROM oauth_credential WHERE last_refreshed_at IS NULL")
                .await
                == 0
        },
    )
    .await;
    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));

    let stats = server.stats().await;
    assert_eq!(stats.refresh_reuse, 0, "{stats:?}");
    let per: Vec<(String, i64)> = db
        .fetch_all(
            "SELECT credential_name, count(*) FROM token_rotation WHERE outcome = 'refreshed' GROUP BY credential_name",
            &[],
        )
        .await;
    assert_eq!(per.len(), CREDENTIALS);
    for (name, n) in &per {
        // `refresh NAME` is a manual refresh: it may come after the sweep's, never at once with it.
        let most = if name == "user-000" { 2 } else { 1 };
        assert!((1..=most).contains(n), "{name} refreshed {n} times");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation WHERE outcome NOT IN ('refreshed')")
            .await,
        0
    );
    db.close().await;
}
on_both_backends!(five_processes_on_one_database_refresh_each_credential_once);

async fn mint_many(server: &OauthServer, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let client = [clients::BASIC_ID, clients::POST_ID, clients::JWT_ID][i % 3];
        out.push(server.mint_refresh_token(client, SCOPE).await);
    }
    out
}

async fn invalid_grant_for_a_token_replaced_meanwhile_does_not_kill_the_credential(
    backend: Backend,
) {
    let dead = FakeEndpoint::start(Reply::json(400, r#"{"error":"invalid_grant"}"#)).await;
    let (proxy, gate) = FakeEndpoint::gated(&dead.token_url()).await;
    let home = BackendHome::with_token_url(&proxy.token_url(), backend, "").await;
    home.add("c", "basic", "rt-old-0123456789").await;
    let child = home.command(&["run", "--once"]).spawn().unwrap();
    eventually(Duration::from_secs(10), "the request to go out", || async {
        proxy.requests() == 1
    })
    .await;
    // The operator re-authorizes while the old token's refresh is out…
    let replace = home
        .run(
            &["add", "c", "--provider", "basic", "--replace"],
            "rt-new-0123456789",
        )
        .await;
    assert_eq!(replace.code, Some(0), "{replace:?}");
    // …and the provider then rejects the old token.
    gate.add_permits(1);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = home.db().await;
    let (status, rt): (String, String) = db
        .fetch_one(
            "SELECT status, refresh_token FROM oauth_credential WHERE name = 'c'",
            &[],
        )
        .await;
    db.close().await;
    assert_eq!(
        (status.as_str(), rt.as_str()),
        ("active", "rt-new-0123456789"),
        "the new grant is not marked dead"
    );
    assert_eq!(journal(&home).await, ["superseded"]);
}
on_both_backends!(invalid_grant_for_a_token_replaced_meanwhile_does_not_kill_the_credential);

/// The writer gives up on a lock after SQLite's `busy_timeout`, or PostgreSQL's `lock_timeout`
/// (set for the role here: tokenwarden sets none, its PostgreSQL writers wait as long as the lock
/// is held), and tries again while the claim lasts.
async fn new_tokens_are_stored_after_a_long_database_lock(backend: Backend) {
    let server = OauthServer::start().await;
    let RotatedBehindLock {
        home,
        minted,
        child,
        lock,
        proxy: _proxy,
    } = rotate_behind_a_write_lock(&server, backend, true).await;
    // Longer than five attempts at busy_timeout 1 s took before: the tokens must still land.
    tokio::time::sleep(Duration::from_secs(15)).await;
    lock.release().await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("trying again while the claim lasts"),
        "{stderr}"
    );
    assert_ne!(
        refresh_token(&home).await,
        minted,
        "the rotated refresh token was stored"
    );
    assert_eq!(journal(&home).await, ["refreshed"]);
    assert_eq!(server.stats().await.refresh_reuse, 0);
}
on_both_backends!(new_tokens_are_stored_after_a_long_database_lock);
