//! A token endpoint that answers 429 with an absurd `Retry-After` (99999999999 s, the year 5195):
//! the next attempt is put off by at most `retry.max`, as revocation does.

use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::Home;

#[tokio::test]
async fn an_absurd_retry_after_is_clamped_to_retry_max() {
    let endpoint = FakeEndpoint::start(
        Reply::json(429, r#"{"error":"temporarily_unavailable"}"#)
            .with_header("Retry-After", "99999999999"),
    )
    .await;
    let home = Home::with_token_url(&endpoint.token_url(), "[retry]\nmax = \"20m\"");
    home.add("parked", "basic", "rt-retry-after-canary-1").await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .cast_signed();
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(endpoint.requests(), 1);
    let (next,): (i64,) =
        sqlx::query_as("SELECT next_attempt_at FROM oauth_credential WHERE name = 'parked'")
            .fetch_one(&home.db().await)
            .await
            .unwrap();
    assert!(
        next > before && next <= before + 20 * 60 + 60,
        "next_attempt_at {next} is not within retry.max of {before}"
    );
}
