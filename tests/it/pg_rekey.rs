//! `rekey` beside a sweeping daemon on one PostgreSQL database: rekey locks its batches of rows
//! in id order while the daemon's group commit writes the rows it refreshed; neither may
//! deadlock the other (PostgreSQL's `deadlock detected` would fail a rekey batch or a whole
//! group of new tokens).

use std::time::{Duration, Instant};

use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{Home, eventually, finish, stop};
use crate::postgres::{PASSWORD, PgServer};
use crate::seal::{encryption, key_file};

const CREDENTIALS: usize = 400;
/// Rounds of "everything due in a shuffled order, then rekey": each rekey pass overlaps a sweep.
const ROUNDS: usize = 4;
/// Longest the rounds may take together.
const ROUNDS_DEADLINE: Duration = Duration::from_mins(3);

#[tokio::test]
async fn rekey_beside_a_sweeping_daemon_does_not_deadlock_on_postgres() {
    let pg = PgServer::start().await;
    // Answers overlap (20 ms each, 16 at once), so the group commit writes several rows at once,
    // in the order their answers came, not in id order.
    let endpoint = FakeEndpoint::start_delayed(
        Reply::json(
            200,
            r#"{"access_token":"at-from-the-fake-0123456789","token_type":"Bearer","expires_in":3600}"#,
        ),
        Duration::from_millis(20),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (k1, _, _) = key_file(dir.path(), "k1");
    let (k2, _, _) = key_file(dir.path(), "k2");
    let daemon_keys = encryption(&k1, &[&k2], true);
    let home = Home::on_postgres_url(
        &endpoint.token_url(),
        pg.url(),
        "",
        &format!("schedule = \"* * * * * *\"\nconcurrency = 16\n{daemon_keys}"),
    );
    // The daemon's log is read when it stops: at "warn" (errors, a deadlock among them) it stays
    // well inside the pipe's buffer, which a trace log of every refresh would fill, blocking the
    // daemon on its own logging.
    let config = std::fs::read_to_string(&home.config).unwrap();
    std::fs::write(
        &home.config,
        config.replacen("level = \"trace\"", "level = \"warn\"", 1),
    )
    .unwrap();
    // rekey's configuration: the same, with the other key current. The daemon seals every
    // refresh under k1, rekey moves every row to k2: each round has both writing most rows.
    let rekey_config = home.path().join("rekey.toml");
    std::fs::write(
        &rekey_config,
        std::fs::read_to_string(&home.config)
            .unwrap()
            .replace(&daemon_keys, &encryption(&k2, &[&k1], true)),
    )
    .unwrap();
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    let db = pg.pool().await;
    sqlx::query(
        "INSERT INTO oauth_credential (name, provider, refresh_token) \
         SELECT 'c' || lpad(i::text, 4, '0'), 'basic', 'rt-plain-' || i || '-0123456789' \
         FROM generate_series(1, $1) AS i",
    )
    .bind(CREDENTIALS as i64)
    .execute(&db)
    .await
    .unwrap();
    let first = home.run(&["run", "--once"], "").await;
    assert_eq!(first.code, Some(0), "sealed and refreshed: {first:?}");

    let daemon = home.command(&["run"]).spawn().unwrap();
    let started = Instant::now();
    let mut rekeys = Vec::new();
    for _ in 0..ROUNDS {
        // The last sweep is over: nothing due, no claim held.
        settled(&db, ROUNDS_DEADLINE.saturating_sub(started.elapsed())).await;
        // Due now, in a random order: the next sweep claims and stores them out of id order,
        // while rekey walks them in id order. Rows locked at this moment are skipped, so that
        // this statement never waits on the daemon's locks.
        sqlx::query(
            "UPDATE oauth_credential SET refresh_due_at = floor(random() * 1000)::bigint \
             WHERE id IN (SELECT id FROM oauth_credential ORDER BY id FOR UPDATE SKIP LOCKED)",
        )
        .execute(&db)
        .await
        .unwrap();
        let mut rekey = home.command(&["rekey"]);
        rekey.env("TOKENWARDEN_CONFIG", &rekey_config);
        let run = finish(rekey, "").await;
        assert!(
            !run.all().contains("deadlock"),
            "rekey deadlocked with the daemon: {run:?}"
        );
        assert!(matches!(run.code, Some(0 | 1)), "{run:?}");
        rekeys.push(run);
    }
    settled(&db, ROUNDS_DEADLINE.saturating_sub(started.elapsed())).await;
    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("deadlock"),
        "the daemon's group commit deadlocked with rekey: {}",
        log.lines()
            .filter(|l| l.contains("deadlock"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (refreshed,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'")
            .fetch_one(&db)
            .await
            .unwrap();
    // The first `run --once`, then each round's sweep (less the few rows skipped above).
    assert!(
        refreshed > (CREDENTIALS * (ROUNDS / 2 + 1)) as i64,
        "the rounds refreshed the credentials: {refreshed}"
    );
    let (pending,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM token_rotation WHERE outcome = 'pending'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(pending, 0, "every attempt was completed");
    for run in &rekeys {
        assert!(!run.all().contains(PASSWORD) && !run.all().contains("rt-plain-"));
    }
    assert!(!log.contains(PASSWORD) && !log.contains("rt-plain-"));
}

/// Waits (at most `within`) until no credential is due and no claim is held.
async fn settled(db: &sqlx::PgPool, within: Duration) {
    eventually(within, "the sweep to settle", || async {
        let (busy,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM oauth_credential WHERE refresh_due_at < 1000 OR lease_owner IS NOT NULL",
        )
        .fetch_one(db)
        .await
        .unwrap();
        busy == 0
    })
    .await;
}
