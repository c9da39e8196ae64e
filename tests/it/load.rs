//! Load on the provider: credentials imported together are due spread over half the margin
//! (checked on the database after one sweep), and the sweep's `concurrency` and a provider's
//! `max_concurrency` and `rate_limit` hold at an in-process endpoint that counts what reaches it.

use std::time::Duration;

use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::Home;

const TOKENS: &str = r#"{"access_token":"at-load-canary-0001","refresh_token":"rt-load-canary-0001","token_type":"Bearer","expires_in":3600}"#;
const MARGIN: i64 = 600;

/// Creates the home's database and inserts `n` due credentials of `provider` at once, as a bulk
/// import would.
async fn import(home: &Home, provider: &str, n: usize) {
    let create = home.run(&["run", "--once"], "").await;
    assert_eq!(create.code, Some(0), "{create:?}");
    let db = home.db().await;
    let mut tx = db.begin().await.unwrap();
    for i in 0..n {
        sqlx::query(
            "INSERT INTO oauth_credential (name, provider, refresh_token) VALUES ($1, $2, $3)",
        )
        .bind(format!("user-{i:04}"))
        .bind(provider)
        .bind(format!("rt-imported-{i:04}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    db.close().await;
}

#[tokio::test]
async fn a_thousand_credentials_imported_together_are_due_spread_over_the_window() {
    let fake = FakeEndpoint::start(Reply::json(200, TOKENS)).await;
    let home = Home::with_token_url(&fake.token_url(), "concurrency = 32");
    import(&home, "basic", 1000).await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fake.requests(), 1000);
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT name, access_token_expires_at - refresh_due_at FROM oauth_credential",
    )
    .fetch_all(&home.db().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1000);
    let mut tenths = [0_u32; 10];
    let mut seconds = std::collections::HashSet::new();
    for (name, before_expiry) in &rows {
        // Never later than the margin alone: due at least MARGIN before expiry, at most 1.5x.
        assert!(
            (MARGIN..MARGIN + MARGIN / 2).contains(before_expiry),
            "{name}: due {before_expiry} s before expiry"
        );
        assert_eq!(
            *before_expiry,
            MARGIN + tokenwarden::domain::due_spread(name, MARGIN),
            "{name}: the stable spread of its name"
        );
        seconds.insert(*before_expiry);
        let tenth = usize::try_from((before_expiry - MARGIN) * 10 / (MARGIN / 2)).unwrap();
        tenths[tenth] += 1;
    }
    assert!(seconds.len() >= 250, "{} distinct seconds", seconds.len());
    assert!(tenths.iter().all(|n| (60..=140).contains(n)), "{tenths:?}");
}

#[tokio::test]
async fn a_providers_max_concurrency_is_never_exceeded() {
    let fake =
        FakeEndpoint::start_delayed(Reply::json(200, TOKENS), Duration::from_millis(100)).await;
    let home = Home::with_token_url(&fake.token_url(), "concurrency = 16");
    home.append_to_provider("basic", "max_concurrency = 3");
    import(&home, "basic", 30).await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fake.requests(), 30);
    // 16 at once without the limit; 3 with it, and the sweep does use all 3.
    assert_eq!(fake.max_in_flight(), 3);
}

#[tokio::test]
async fn the_sweeps_concurrency_is_never_exceeded_while_outcomes_wait_to_be_stored() {
    // More refreshes than `concurrency` are under way at once (waiting for a slot, or answered
    // and waiting for their group commit): the requests in flight stay within `concurrency`.
    let fake =
        FakeEndpoint::start_delayed(Reply::json(200, TOKENS), Duration::from_millis(50)).await;
    let home = Home::with_token_url(&fake.token_url(), "concurrency = 4");
    import(&home, "basic", 120).await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fake.requests(), 120);
    assert_eq!(fake.max_in_flight(), 4);
    let db = home.db().await;
    let (refreshed, pending): (i64, i64) = sqlx::query_as(
        "SELECT sum(outcome = 'refreshed'), sum(outcome = 'pending') FROM token_rotation",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((refreshed, pending), (120, 0));
    db.close().await;
}

#[tokio::test]
async fn a_providers_rate_limit_is_never_exceeded() {
    const RATE: usize = 20;
    const N: usize = 50;
    let fake = FakeEndpoint::start(Reply::json(200, TOKENS)).await;
    let home = Home::with_token_url(&fake.token_url(), "concurrency = 16");
    home.append_to_provider("basic", &format!("rate_limit = {RATE}"));
    import(&home, "basic", N).await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let arrivals = fake.arrivals();
    assert_eq!(arrivals.len(), N);
    // Requests leave at least 1/RATE apart; on arrival, loopback jitter of a few milliseconds
    // is allowed for: no window of 1 s less 25 ms holds more than RATE of them.
    let window = Duration::from_millis(975);
    for (i, start) in arrivals.iter().enumerate() {
        let within = arrivals[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < window)
            .count();
        assert!(
            within <= RATE,
            "{within} requests within 1 s from request {i}"
        );
    }
    let span = arrivals[N - 1].duration_since(arrivals[0]);
    assert!(
        span >= Duration::from_millis(u64::try_from((N - 1) * 1000 / RATE).unwrap() - 50),
        "{span:?} for {N} requests at {RATE}/s"
    );
}

#[tokio::test]
async fn shutdown_gives_back_what_waits_for_a_rate_limit() {
    let fake = FakeEndpoint::start(Reply::json(200, TOKENS)).await;
    let home = Home::with_token_url(&fake.token_url(), "concurrency = 8");
    // One request every 20 s: the first goes at once, the other three wait.
    home.append_to_provider("basic", "rate_limit = 0.05");
    import(&home, "basic", 4).await;
    let daemon = home.command(&["run"]).spawn().unwrap();
    crate::harness::eventually(Duration::from_secs(20), "the first request", || async {
        fake.answered() >= 1
    })
    .await;
    let started = std::time::Instant::now();
    let out = crate::harness::stop(daemon).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped in {:?}, not after the waits",
        started.elapsed()
    );
    assert_eq!(fake.requests(), 1, "nothing sent after SIGTERM");
    let db = home.db().await;
    let (refreshed, given_back): (i64, i64) = sqlx::query_as(
        "SELECT count(last_refreshed_at), sum(lease_owner IS NULL AND last_refreshed_at IS NULL) \
         FROM oauth_credential",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((refreshed, given_back), (1, 3));
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM token_rotation WHERE outcome = 'pending'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(pending, 0, "no attempt left pending");
}
