//! The PostgreSQL backend against a real server (`postgres::PgServer`) and the rotating
//! oidc-provider: the CLI end to end and the views a consumer reads; several daemons, `run --once`
//! and `refresh NAME` on one database; a sweep that finds rows locked by another transaction; a
//! replica killed mid-sweep; the server restarted, and stopped, mid-sweep.

use std::time::Duration;

use sqlx::PgPool;

use crate::backends::{count, stored_secrets};
use crate::harness::{Home, assert_no_secrets, eventually, signal, stop};
use crate::oauth_server::{OauthServer, ServerOptions, clients};
use crate::postgres::{PASSWORD, PgServer};

const SCOPE: &str = "openid offline_access api:read";

/// Inserts `n` due credentials named `user-NNN` with freshly minted refresh tokens, the way
/// another tool would, straight into the table.
async fn insert_minted(server: &OauthServer, db: &PgPool, n: usize) -> Vec<String> {
    let mut minted = Vec::with_capacity(n);
    for i in 0..n {
        let (client, provider) = [
            (clients::BASIC_ID, "basic"),
            (clients::POST_ID, "post"),
            (clients::JWT_ID, "jwt"),
        ][i % 3];
        let rt = server.mint_refresh_token(client, SCOPE).await;
        sqlx::query(
            "INSERT INTO oauth_credential (name, provider, refresh_token) VALUES ($1, $2, $3)",
        )
        .bind(format!("user-{i:03}"))
        .bind(provider)
        .bind(&rt)
        .execute(db)
        .await
        .unwrap();
        minted.push(rt);
    }
    minted
}

#[tokio::test]
async fn the_cli_works_on_postgres_and_psql_reads_the_current_token() {
    let pg = PgServer::start().await;
    let server = OauthServer::start().await;
    let home = Home::on_postgres(&server, &pg, "");
    home.append_to_provider(
        "basic",
        &format!("revocation_url = \"{}\"", server.revocation_url()),
    );
    let minted = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("c", "basic", &minted).await;
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(0), "{once:?}");
    assert!(
        !home.db.exists(),
        "no SQLite file is made beside a PostgreSQL database"
    );

    let token = home.run(&["token", "c"], "").await;
    assert_eq!(token.code, Some(0), "{token:?}");
    let db = pg.pool().await;
    // What a consumer reads with psql: the same view, the same columns as with sqlite3.
    let (access, expires_at, seconds_left, sealed): (String, String, i64, bool) = sqlx::query_as(
        "SELECT access_token, expires_at, seconds_left, access_token_sealed FROM current_token WHERE name = 'c'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(token.stdout.trim(), access);
    assert!(
        expires_at.ends_with('Z') && expires_at.len() == 20,
        "{expires_at}"
    );
    assert!((60..=120).contains(&seconds_left), "{seconds_left}");
    assert!(!sealed);
    let (outcome, started_at): (String, String) =
        sqlx::query_as("SELECT outcome, started_at FROM rotation_log ORDER BY id DESC LIMIT 1")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(outcome, "refreshed");
    assert!(started_at.contains('T'), "{started_at}");

    let refresh = home.run(&["refresh", "c"], "").await;
    assert_eq!(refresh.code, Some(0), "{refresh:?}");
    let status = home.run(&["status", "--json"], "").await;
    assert_eq!(status.code, Some(0), "{status:?}");
    let log = home.run(&["log", "c"], "").await;
    assert_eq!(log.code, Some(0), "{log:?}");
    assert_eq!(log.stdout.matches("refreshed").count(), 2, "{}", log.stdout);
    let check = home.run(&["check-config"], "").await;
    assert_eq!(check.code, Some(0), "{check:?}");
    assert!(
        check.stdout.contains("postgres://postgres@127.0.0.1:"),
        "{check:?}"
    );
    let doctor = home.run(&["doctor"], "").await;
    // Every migration shipped for PostgreSQL, numbered from 1 without gaps.
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    let migrations = format!("{shipped} applied, the latest {shipped}");
    for line in [
        "database postgres://postgres@127.0.0.1:",
        "postgres answers",
        migrations.as_str(),
        "ms off the database server's",
    ] {
        assert!(doctor.stdout.contains(line), "{line}: {doctor:?}");
    }
    let dup = home
        .run(&["add", "c", "--provider", "basic"], "rt-0123456789")
        .await;
    assert_eq!(dup.code, Some(2), "{dup:?}");
    let mut stored = stored_secrets(&db).await;
    stored.push(minted.clone());
    let revoke = home.run(&["revoke", "c"], "").await;
    assert_eq!(revoke.code, Some(0), "{revoke:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM oauth_credential").await, 0);

    // The token printed by `token` is the one value allowed out, on its stdout only.
    assert_no_secrets("token's stderr", &token.stderr, &stored);
    for run in [
        &once, &refresh, &status, &log, &check, &doctor, &dup, &revoke,
    ] {
        assert_no_secrets("a command's output", &run.all(), &stored);
    }
    assert_eq!(server.stats().await.refresh_reuse, 0);
}

#[tokio::test]
async fn a_wrong_password_or_a_down_server_is_one_line_and_exit_3() {
    let pg = PgServer::start().await;
    let server = OauthServer::start().await;
    let home = Home::on_postgres(&server, &pg, "");
    crate::harness::write_secret(&home.path().join("pg.password"), "not-the-password-77\n");
    let run = home.run(&["status"], "").await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.contains("password authentication failed"),
        "{run:?}"
    );
    assert!(!run.all().contains("not-the-password-77"), "{run:?}");
    drop(pg);
    let run = home.run(&["status"], "").await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(!run.all().contains(PASSWORD), "{run:?}");
}

/// Three daemons, `run --once` and `refresh NAME` on one database of 500 due credentials: each is
/// refreshed exactly once (`refresh` may add one manual refresh after the sweep's), none twice
/// at once, zero reuse at the provider.
#[tokio::test]
async fn three_daemons_and_run_once_refresh_500_credentials_each_once() {
    const CREDENTIALS: usize = 500;
    let pg = PgServer::start().await;
    // Hour-long tokens: once refreshed, a credential is not due again for any process.
    let server = OauthServer::start_with_ttl(3600).await;
    // A sweep that meets a database error (on a loaded machine: a pool timing out) ends early and
    // leaves the rest to the next tick; with the default schedule (every 3 min) that is past the
    // deadline below. Ticks every 10 s let the daemons carry on within it.
    let home = Home::on_postgres(
        &server,
        &pg,
        "concurrency = 8\nschedule = \"*/10 * * * * *\"",
    );
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    let db = pg.pool().await;
    insert_minted(&server, &db, CREDENTIALS).await;
    let daemons: Vec<_> = (0..3)
        .map(|_| home.command(&["run"]).spawn().unwrap())
        .collect();
    let others: Vec<_> = [&["run", "--once"][..], &["refresh", "user-000"]]
        .into_iter()
        .map(|args| home.command(args).spawn().unwrap())
        .collect();
    for child in others {
        let out = tokio::time::timeout(Duration::from_mins(2), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eventually(
        Duration::from_mins(2),
        "every credential to be refreshed",
        || async {
            count(
                &db,
                "SELECT count(*) FROM oauth_credential WHERE last_refreshed_at IS NULL",
            )
            .await
                == 0
        },
    )
    .await;
    let secrets = stored_secrets(&db).await;
    let mut owners = std::collections::BTreeSet::new();
    for daemon in daemons {
        let out = stop(daemon).await;
        assert_eq!(out.status.code(), Some(0));
        assert_no_secrets(
            "a daemon's log",
            &String::from_utf8_lossy(&out.stderr),
            &secrets,
        );
    }
    let stats = server.stats().await;
    assert_eq!(stats.refresh_reuse, 0, "{stats:?}");
    let per: Vec<(String, i64)> = sqlx::query_as(
        "SELECT credential_name, count(*) FROM token_rotation WHERE outcome = 'refreshed' GROUP BY credential_name",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(per.len(), CREDENTIALS);
    for (name, n) in &per {
        let most = if name == "user-000" { 2 } else { 1 };
        assert!((1..=most).contains(n), "{name} refreshed {n} times");
    }
    let others: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT credential_name, outcome, error_description FROM token_rotation \
         WHERE outcome <> 'refreshed' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        others.is_empty(),
        "journal rows other than refreshed: {others:?}"
    );
    // The work was shared: the journal names more than one process.
    let holders: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT lease_owner FROM token_rotation")
        .fetch_all(&db)
        .await
        .unwrap();
    owners.extend(holders.into_iter().map(|(h,)| h));
    assert!(owners.len() >= 2, "{owners:?}");
}

/// A claim skips rows another transaction holds locked (`SKIP LOCKED`), so it can come back short
/// while due credentials are still free to claim: the sweep claims again (after a pause) instead
/// of ending, and refreshes them once the lock is gone.
#[tokio::test]
async fn a_sweep_keeps_claiming_rows_another_transaction_held_locked() {
    const CREDENTIALS: usize = 20;
    const LOCKED: i64 = 3;
    let pg = PgServer::start().await;
    let server = OauthServer::start_with_ttl(3600).await;
    // A sweep that meets a database error (on a loaded machine: a pool timing out) ends early and
    // leaves the rest to the next tick; with the default schedule (every 3 min) that is past the
    // deadline below. Ticks every 10 s let the daemons carry on within it.
    let home = Home::on_postgres(
        &server,
        &pg,
        "concurrency = 8\nschedule = \"*/10 * * * * *\"",
    );
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    let db = pg.pool().await;
    insert_minted(&server, &db, CREDENTIALS).await;
    let mut locker = db.begin().await.unwrap();
    let held: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM oauth_credential WHERE name IN ('user-000', 'user-001', 'user-002') FOR UPDATE",
    )
    .fetch_all(&mut *locker)
    .await
    .unwrap();
    assert_eq!(held.len() as i64, LOCKED);
    let once = home.command(&["run", "--once"]).spawn().unwrap();
    eventually(
        Duration::from_mins(1),
        "every credential not locked to be refreshed",
        || async {
            count(
                &db,
                "SELECT count(*) FROM oauth_credential WHERE last_refreshed_at IS NOT NULL",
            )
            .await
                == CREDENTIALS as i64 - LOCKED
        },
    )
    .await;
    locker.commit().await.unwrap();
    let out = tokio::time::timeout(Duration::from_mins(1), once.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "due={CREDENTIALS} refreshed={CREDENTIALS} failed=0"
        )),
        "{log}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM oauth_credential WHERE last_refreshed_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(server.stats().await.refresh_reuse, 0);
    assert_no_secrets("the sweep's log", &log, &stored_secrets(&db).await);
}

/// Starts a daemon whose refreshes the provider holds after rotating, waits for `n` held answers.
async fn daemon_with_held_refreshes(
    server: &OauthServer,
    home: &Home,
    n: u64,
) -> tokio::process::Child {
    server.hold(120).await;
    let daemon = home.command(&["run"]).spawn().unwrap();
    let stats = server.wait_held(n, Duration::from_mins(1)).await;
    assert_eq!(stats.refresh_ok, n, "the provider rotated every token");
    daemon
}

/// kill -9 of one replica mid-sweep, its refresh answers lost: another replica takes its claims
/// over and, inside the provider's declared grace window (`refresh_token_reuse`), every
/// credential lives on; the journal says
/// which replica started each attempt (interrupted) and which finished it.
#[tokio::test]
async fn a_replica_killed_mid_sweep_is_covered_by_another() {
    const CREDENTIALS: u64 = 20;
    let pg = PgServer::start().await;
    let server = OauthServer::start_with(ServerOptions {
        rt_grace_secs: 60,
        ..ServerOptions::default()
    })
    .await;
    let home = Home::on_postgres(&server, &pg, "concurrency = 20");
    for provider in ["basic", "post", "jwt"] {
        home.append_to_provider(provider, "refresh_token_reuse = \"60s\"");
    }
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    let db = pg.pool().await;
    insert_minted(&server, &db, CREDENTIALS as usize).await;
    let doomed = daemon_with_held_refreshes(&server, &home, CREDENTIALS).await;
    let mut doomed = doomed;
    signal(&doomed, "-KILL");
    assert_eq!(doomed.wait().await.unwrap().code(), None);
    server.release().await;

    let survivor = home.command(&["run"]).spawn().unwrap();
    eventually(
        Duration::from_secs(40),
        "every credential to be refreshed by the survivor",
        || async {
            count(
                &db,
                "SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'",
            )
            .await
                == 20
        },
    )
    .await;
    let out = stop(survivor).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("taking its attempt over"), "{stderr}");
    assert_eq!(server.stats().await.refresh_reuse, 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM oauth_credential WHERE status <> 'active'"
        )
        .await,
        0
    );
    // Started by one replica, finished by another.
    let (started_by, finished_by): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT i.lease_owner), count(DISTINCT r.lease_owner) FROM token_rotation i \
         JOIN token_rotation r ON r.credential_id = i.credential_id AND r.outcome = 'refreshed' \
         WHERE i.outcome = 'interrupted' AND i.lease_owner <> r.lease_owner",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((started_by, finished_by), (1, 1));
}

/// The database stops mid-sweep while every refresh is out and rotated: /healthz says the
/// database is down, the new tokens are held, and when it is back (a `restart -m fast` later)
/// they are all written — every credential works, zero reuse.
#[tokio::test]
async fn a_database_restart_mid_sweep_loses_nothing() {
    const CREDENTIALS: u64 = 20;
    let pg = PgServer::start().await;
    let server = OauthServer::start().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let home = Home::on_postgres(
        &server,
        &pg,
        &format!("concurrency = 20\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\""),
    );
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    let db = pg.pool().await;
    let minted = insert_minted(&server, &db, CREDENTIALS as usize).await;
    db.close().await;
    let daemon = daemon_with_held_refreshes(&server, &home, CREDENTIALS).await;
    pg.stop_fast().await;
    let health = format!("http://127.0.0.1:{port}/healthz");
    eventually(
        Duration::from_secs(20),
        "/healthz to report the database down",
        || async { matches!(reqwest::get(&health).await, Ok(r) if r.status() == 503) },
    )
    .await;
    server.release().await;
    // The answers reach the daemon while the database is down; it holds them and retries.
    eventually(
        Duration::from_secs(30),
        "the held answers to be sent",
        || async { server.stats().await.refresh_ok >= CREDENTIALS },
    )
    .await;
    pg.start_again().await;
    let db = pg.pool().await;
    eventually(
        Duration::from_mins(1),
        "every new token to be stored",
        || async {
            count(
                &db,
                "SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'",
            )
            .await
                == 20
        },
    )
    .await;
    eventually(Duration::from_secs(20), "/healthz to recover", || async {
        matches!(reqwest::get(&health).await, Ok(r) if r.status() == 200)
    })
    .await;
    pg.restart_fast().await;
    eventually(
        Duration::from_secs(30),
        "/healthz to recover after a restart",
        || async { matches!(reqwest::get(&health).await, Ok(r) if r.status() == 200) },
    )
    .await;
    // AT_TTL (120 s) is shorter than the margin, so a scheduled sweep of the daemon may hold
    // user-001 for a moment: `refresh` then says so (exit 1) and is run again, a bounded number
    // of times.
    let mut once = home.run(&["refresh", "user-001"], "").await;
    for _ in 0..30 {
        if once.code != Some(1) || !once.stderr.contains("by another process right now") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        once = home.run(&["refresh", "user-001"], "").await;
    }
    assert_eq!(once.code, Some(0), "refreshed after a restart: {once:?}");
    let out = stop(daemon).await;
    assert_no_secrets(
        "the daemon's log",
        &String::from_utf8_lossy(&out.stderr),
        &stored_secrets(&db).await,
    );
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT refresh_token, status FROM oauth_credential ORDER BY name")
            .fetch_all(&db)
            .await
            .unwrap();
    for (rt, status) in rows {
        assert!(!minted.contains(&rt), "a new refresh token is stored");
        assert_eq!(status, "active");
    }
    assert_eq!(server.stats().await.refresh_reuse, 0);
}

#[tokio::test]
async fn metrics_aggregates_come_from_postgres_too() {
    let pg = PgServer::start().await;
    let server = OauthServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = Home::on_postgres(
        &server,
        &pg,
        &format!(
            "[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nper_credential_max = 1"
        ),
    );
    for name in ["a", "b"] {
        let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
        home.add(name, "basic", &rt).await;
    }
    let daemon = home.command(&["run"]).spawn().unwrap();
    let metrics =
        crate::service::scrape_until(port, |t| t.contains("tokenwarden_sweeps_total 1")).await;
    let db = pg.pool().await;
    let (soonest,): (i64,) =
        sqlx::query_as("SELECT min(access_token_expires_at) FROM oauth_credential")
            .fetch_one(&db)
            .await
            .unwrap();
    for line in [
        r#"tokenwarden_credentials{provider="basic",status="active"} 2"#.to_owned(),
        r#"tokenwarden_credentials_expiring_within_margin{provider="basic"} 2"#.to_owned(),
        format!(
            r#"tokenwarden_access_token_soonest_expiry_timestamp_seconds{{provider="basic"}} {soonest}"#
        ),
        "tokenwarden_per_credential_series 0".to_owned(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}: {metrics}");
    }
    let mut stored = stored_secrets(&db).await;
    stored.push(PASSWORD.to_owned());
    assert_no_secrets("metrics", &metrics, &stored);
    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));
}

/// An up-to-date schema is opened with one read of `_sqlx_migrations`, without sqlx's migration
/// lock: `status` answers while another session holds that lock. One recorded migration changed,
/// dirty, or unknown to this binary is still refused by the migrator, with its one-line error.
#[tokio::test]
async fn an_up_to_date_schema_opens_without_the_migration_lock_and_a_changed_one_is_refused() {
    use sqlx::migrate::Migrate;

    let pg = PgServer::start().await;
    let server = OauthServer::start().await;
    let home = Home::on_postgres(&server, &pg, "");
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let db = pg.pool().await;
    let mut holder = db.acquire().await.unwrap();
    holder.lock().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), home.run(&["status"], "")).await;
    let run = status.expect("status waited for the migration lock");
    assert_eq!(run.code, Some(0), "{run:?}");
    holder.unlock().await.unwrap();
    drop(holder);

    let refused = async |change: &'static str, undo: &'static str, message: &str| {
        sqlx::query(change).execute(&db).await.unwrap();
        let run = home.run(&["status"], "").await;
        sqlx::query(undo).execute(&db).await.unwrap();
        assert_eq!(run.code, Some(3), "{run:?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
        assert!(run.stderr.contains("cannot migrate the schema"), "{run:?}");
        assert!(run.stderr.contains(message), "{run:?}");
        assert!(!run.all().contains(PASSWORD), "{run:?}");
    };
    refused(
        "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea || checksum WHERE version = 1",
        "UPDATE _sqlx_migrations SET checksum = substr(checksum, 2) WHERE version = 1",
        "migration 1 was previously applied but has been modified",
    )
    .await;
    refused(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer binary', true, '\\x00'::bytea, 0)",
        "DELETE FROM _sqlx_migrations WHERE version = 9999",
        "migration 9999 was previously applied but is missing",
    )
    .await;
    refused(
        "UPDATE _sqlx_migrations SET success = false WHERE version = 6",
        "UPDATE _sqlx_migrations SET success = true WHERE version = 6",
        "migration 6 is partially applied",
    )
    .await;
    let run = home.run(&["status"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
}
