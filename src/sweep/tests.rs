//! `sweep_once` stepped directly: a real temporary SQLite database, real providers from a real
//! configuration, and the integration tests' fake token endpoint on 127.0.0.1 answering a
//! scripted reply. No sleeping: each test drives one sweep at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Policy, SweepSummary, Sweeper};
use crate::alerts::Alerter;
use crate::config::Settings;
use crate::domain::{self, GrantType, Outcome, Secret, Status, Trigger};
use crate::http::Transport;
use crate::provider::Providers;
use crate::refresh::Refresher;
use crate::store::{Location, NewCredential, OpenMode, OpenOptions, Sealer, Store};

/// The integration tests' fake token endpoint (tests/it/fake_endpoint.rs), the one fake both
/// kinds of test use; only part of it is needed here.
#[path = "../../tests/it/fake_endpoint.rs"]
#[allow(dead_code)]
mod fake_endpoint;

use fake_endpoint::{FakeEndpoint, Reply};

/// A sweeper on a fresh database in `dir` whose provider `p` posts to `endpoint`, with one
/// credential `c` holding refresh token `rt-1`.
async fn sweeper(dir: &tempfile::TempDir, endpoint: &FakeEndpoint) -> Sweeper {
    let config = dir.path().join("tokenwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.p]\ntoken_url = \"{}\"\nclient_id = \"client\"\nclient_secret_env = \"TW_UNIT_SECRET\"\n",
            endpoint.token_url()
        ),
    )
    .unwrap();
    let env: BTreeMap<String, String> = [(
        "TW_UNIT_SECRET".to_owned(),
        "unit-test-client-secret".to_owned(),
    )]
    .into();
    let settings = Settings::load(Some(&config), &env).unwrap();
    let transport = Transport::new(
        Duration::from_secs(2),
        Duration::from_secs(5),
        1 << 20,
        &std::collections::BTreeMap::new(),
    )
    .unwrap();
    let providers = Providers::resolve(&settings.providers, &env, &transport)
        .await
        .unwrap();
    let location = Location::Sqlite(dir.path().join("tokenwarden.db"));
    let options = OpenOptions {
        mode: OpenMode::CreateIfMissing,
        busy_timeout: Duration::from_secs(5),
        connections: 4,
    };
    let store = Store::open(&location, &options, Sealer::plaintext())
        .await
        .unwrap();
    let token = Secret::new("rt-1");
    let new = NewCredential {
        name: "c",
        provider: "p",
        grant_type: GrantType::RefreshToken,
        scopes: None,
        owner: None,
        refresh_token: Some(&token),
        subject: None,
    };
    store.add(&new, false, domain::now()).await.unwrap();
    let policy = Policy::from_settings(&settings).unwrap();
    let alerter = Alerter::new(&[], Duration::from_secs(1));
    Sweeper::new(store, providers, Refresher::new(transport), policy, alerter)
}

async fn sweep(sweeper: &Sweeper) -> SweepSummary {
    sweeper
        .sweep_once(Trigger::Once, &CancellationToken::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_due_credential_is_refreshed_once_and_left_alone_until_due() {
    let endpoint = FakeEndpoint::start(Reply::json(
        200,
        r#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-2"}"#,
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sweeper = sweeper(&dir, &endpoint).await;

    let first = sweep(&sweeper).await;
    assert_eq!(
        (first.due, first.refreshed, first.failed),
        (1, 1, 0),
        "{first:?}"
    );
    assert!(first.all_refreshed());
    let requests = endpoint.bodies();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].contains("grant_type=refresh_token&refresh_token=rt-1"),
        "{requests:?}"
    );

    let row = &sweeper.store().summaries().await.unwrap()[0];
    assert_eq!(row.status, Status::Active);
    let expires = row.access_token_expires_at.unwrap() - domain::now();
    assert!((3500..=3600).contains(&expires), "{expires}");
    assert!(
        row.refresh_due_at > domain::now(),
        "due again before expiry, not now"
    );

    // Nothing is due now: the next sweep sends nothing.
    let second = sweep(&sweeper).await;
    assert_eq!((second.due, second.refreshed), (0, 0), "{second:?}");
    assert_eq!(endpoint.requests(), 1);
    let journal = sweeper.store().rotations(Some("c"), 10).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].outcome, Outcome::Refreshed);
    assert_eq!(journal[0].refresh_token_rotated, Some(true));
    sweeper.store().close().await;
}

#[tokio::test]
async fn a_transient_failure_backs_off_and_keeps_the_token() {
    let endpoint =
        FakeEndpoint::start(Reply::json(503, r#"{"error":"temporarily_unavailable"}"#)).await;
    let dir = tempfile::tempdir().unwrap();
    let sweeper = sweeper(&dir, &endpoint).await;

    let summary = sweep(&sweeper).await;
    assert_eq!((summary.due, summary.failed), (1, 1), "{summary:?}");
    assert!(!summary.all_refreshed());
    let row = &sweeper.store().summaries().await.unwrap()[0];
    assert_eq!((row.status, row.consecutive_failures), (Status::Active, 1));
    assert!(row.next_attempt_at > domain::now(), "backed off");
    assert!(
        row.last_error.as_deref().unwrap().contains("503"),
        "{row:?}"
    );
    // Backing off: the next sweep leaves it alone.
    let again = sweep(&sweeper).await;
    assert_eq!(again.due, 0, "{again:?}");
    assert_eq!(endpoint.requests(), 1);
    let token = sweeper.store().token_state("c").await.unwrap().unwrap();
    assert!(token.access_token.is_none());
    sweeper.store().close().await;
}

#[tokio::test]
async fn a_rejected_grant_needs_reauthorization_and_is_not_retried() {
    let endpoint = FakeEndpoint::start(Reply::json(
        400,
        r#"{"error":"invalid_grant","error_description":"AADSTS70008: expired"}"#,
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sweeper = sweeper(&dir, &endpoint).await;

    let summary = sweep(&sweeper).await;
    assert_eq!(
        (summary.due, summary.needs_reauthorization),
        (1, 1),
        "{summary:?}"
    );
    let row = &sweeper.store().summaries().await.unwrap()[0];
    assert_eq!(row.status, Status::NeedsReauthorization);
    assert_eq!(
        row.last_error.as_deref(),
        Some("invalid_grant: AADSTS70008: expired")
    );
    assert_eq!(sweep(&sweeper).await.due, 0);
    assert_eq!(endpoint.requests(), 1);
    sweeper.store().close().await;
}

#[tokio::test]
async fn a_refused_response_stores_nothing_of_it() {
    let endpoint = FakeEndpoint::start(Reply::json(200, r#"{"access_token":"at bad","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-2"}"#))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sweeper = sweeper(&dir, &endpoint).await;

    let summary = sweep(&sweeper).await;
    assert_eq!(summary.failed, 1, "{summary:?}");
    let journal = sweeper.store().rotations(Some("c"), 10).await.unwrap();
    assert_eq!(journal[0].outcome, Outcome::RefusedResponse);
    assert!(
        sweeper
            .store()
            .token_state("c")
            .await
            .unwrap()
            .unwrap()
            .access_token
            .is_none()
    );
    sweeper.store().close().await;
}
