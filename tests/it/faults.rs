//! Bad and odd token responses, from a fault-injecting endpoint: odd-but-valid shapes are
//! accepted, everything else is a transient or permanent failure, and in every case the old tokens
//! stay in the database and no token reaches the output. The tests of what the store keeps and
//! records run on a real SQLite file and on a real PostgreSQL server (`on_both_backends!`); those
//! of the HTTP client and the response parser alone, on SQLite.

use std::time::Duration;

use crate::backends::{Backend, BackendHome, on_both_backends};
use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{CLIENT_SECRETS, Run};
use crate::proxy::TlsUpstream;

const OLD_RT: &str = "rt-canary-5f1c2b9e0d";
const OLD_AT: &str = "at-canary-77aa01d3c4";
const NEW_RT: &str = "rt-new-canary-0a9b8c7d";
const NEW_AT: &str = "at-new-canary-1e2f3a4b";
/// Short timeouts so hanging endpoints cost seconds.
const FAST_HTTP: &str = "[http]\nrequest_timeout = \"2s\"\nconnect_timeout = \"1s\"";

struct Case {
    home: BackendHome,
    run: Run,
    started: i64,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A credential holding the old tokens (access token valid 15 more minutes, but due), swept once
/// against `token_url`, on `backend`.
async fn sweep_against(token_url: &str, backend: Backend) -> Case {
    let home = holding_old_tokens(token_url, backend).await;
    let started = now();
    let run = home.run(&["run", "--once"], "").await;
    Case { home, run, started }
}

/// A home whose credential holds the old tokens (access token valid 15 more minutes, but due),
/// its provider's token endpoint `token_url`.
async fn holding_old_tokens(token_url: &str, backend: Backend) -> BackendHome {
    let home = BackendHome::with_token_url(token_url, backend, FAST_HTTP).await;
    home.add("victim", "basic", OLD_RT).await;
    let db = home.db().await;
    db.execute(
        "UPDATE oauth_credential SET access_token = $1, token_type = 'Bearer', \
         access_token_expires_at = CAST($2 AS BIGINT) + 900, refresh_due_at = 0",
        &[OLD_AT, &now().to_string()],
    )
    .await;
    db.close().await;
    home
}

#[derive(sqlx::FromRow, Debug)]
struct Row {
    status: String,
    access_token: String,
    refresh_token: String,
    access_token_expires_at: i64,
    token_type: String,
    next_attempt_at: i64,
    last_error: Option<String>,
}

async fn row(home: &BackendHome) -> Row {
    let db = home.db().await;
    db.fetch_one(
        "SELECT status, access_token, refresh_token, access_token_expires_at, token_type, next_attempt_at, last_error \
         FROM oauth_credential WHERE name = 'victim'",
        &[],
    )
    .await
}

fn assert_quiet(case: &Case) {
    let all = case.run.all();
    for secret in [OLD_RT, OLD_AT, NEW_RT, NEW_AT]
        .into_iter()
        .chain(CLIENT_SECRETS)
    {
        assert!(
            !all.contains(secret),
            "output contains a secret: {:?}",
            case.run
        );
    }
    assert!(!all.contains("panicked"), "{:?}", case.run);
}

/// The sweep failed transiently: exit 1, the old tokens kept and still served, a retry scheduled.
async fn assert_transient(case: &Case, error_contains: &str) -> Row {
    assert_eq!(case.run.code, Some(1), "{:?}", case.run);
    assert_quiet(case);
    let r = row(&case.home).await;
    assert_eq!(
        (
            r.status.as_str(),
            r.access_token.as_str(),
            r.refresh_token.as_str()
        ),
        ("active", OLD_AT, OLD_RT)
    );
    let error = r.last_error.clone().unwrap_or_default();
    assert!(
        error.contains(error_contains),
        "last_error {error:?} lacks {error_contains:?}"
    );
    assert!(
        r.next_attempt_at > case.started,
        "a retry is scheduled: {r:?}"
    );
    let token = case.home.run(&["token", "victim"], "").await;
    assert_eq!(
        token.stdout.trim(),
        OLD_AT,
        "the old access token is still served"
    );
    r
}

fn token_response(extra: &str) -> String {
    format!(r#"{{"access_token":"{NEW_AT}","refresh_token":"{NEW_RT}"{extra}}}"#)
}

#[tokio::test]
async fn unreadable_bodies_are_transient_and_keep_the_old_tokens() {
    let big = format!(
        r#"{{"access_token":"x","pad":"{}"}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    let cases = [
        (
            Reply::typed(502, "text/html", b"<html><body>Bad Gateway</body></html>"),
            "502 with 37 bytes that are not JSON",
        ),
        (
            Reply::json(200, r#"{"access_token":"abc","token_ty"#),
            "200 with 31 bytes that are not JSON",
        ),
        (Reply::json(200, ""), "200 with an empty body"),
        (
            Reply::typed(200, "text/plain", b"ok"),
            "200 with 2 bytes that are not JSON",
        ),
        (
            Reply::json(200, r#"{"status":"ok"}"#),
            "JSON that is not a token response",
        ),
        (
            Reply::json(500, r#"{"error":"server_error"}"#),
            "answered 500: server_error",
        ),
        (
            Reply::typed(429, "text/plain", b""),
            "429 with an empty body",
        ),
        (Reply::json(200, &big), "larger than 1048576 bytes"),
    ];
    for (reply, error) in cases {
        let fake = FakeEndpoint::start(reply).await;
        let case = sweep_against(&fake.token_url(), Backend::Sqlite).await;
        assert_transient(&case, error).await;
        assert_eq!(fake.requests(), 1, "{error}");
    }
}

/// The token endpoints' TLS (`http::tls_config`, which the proxy's routes share): an HTTPS token
/// endpoint whose certificate chains to the system's roots (`SSL_CERT_FILE`: here only the test's
/// CA) is reached: the handshake succeeds and the request goes through (`openssl s_server -rev`
/// sends each line back reversed, which is no HTTP answer: a transient failure like any other),
/// while one from an unknown issuer and one issued for another host are refused at the handshake,
/// with "certificate" in the recorded error; the old tokens stay every time.
#[tokio::test]
async fn an_https_token_endpoint_is_verified_against_the_system_roots() {
    let ours = crate::postgres::TestCa::new("tokenwarden token endpoint CA");
    let other = crate::postgres::TestCa::new("another CA");
    let cases = [
        ("trusted", "IP:127.0.0.1", &ours, false),
        ("unknown issuer", "IP:127.0.0.1", &other, true),
        ("another host's", "DNS:elsewhere.example", &ours, true),
    ];
    for (what, names, ca, refused) in cases {
        let endpoint = TlsUpstream::start_as(ca, names, "-rev").await;
        let url = format!("https://127.0.0.1:{}/token", endpoint.port);
        let home = holding_old_tokens(&url, Backend::Sqlite).await;
        let started = now();
        let mut command = home.command(&["run", "--once"]);
        command.env("SSL_CERT_FILE", &ours.cert);
        let run = crate::harness::finish(command, "").await;
        let case = Case { home, run, started };
        let r = assert_transient(&case, "").await;
        let error = r.last_error.unwrap_or_default();
        assert_eq!(
            error.contains("certificate"),
            refused,
            "{what} certificate: last_error {error:?}"
        );
        // Past the handshake: the answer arrived, and it was no HTTP.
        assert_eq!(
            error.contains("could not connect") || error.contains("timed out"),
            refused,
            "{what} certificate: last_error {error:?}"
        );
    }
}

async fn retry_after_is_honoured(backend: Backend) {
    let fake = FakeEndpoint::start(
        Reply::json(503, r#"{"error":"temporarily_unavailable"}"#)
            .with_header("Retry-After", "600"),
    )
    .await;
    let case = sweep_against(&fake.token_url(), backend).await;
    let r = assert_transient(&case, "temporarily_unavailable").await;
    assert!(r.next_attempt_at >= case.started + 600, "{r:?}");
    // A second run before then leaves it alone (the backoff is in the database).
    let again = case.home.run(&["run", "--once"], "").await;
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(fake.requests(), 1);
}
on_both_backends!(retry_after_is_honoured);

#[tokio::test]
async fn hanging_dripping_and_resetting_endpoints_are_bounded() {
    for (reply, error) in [
        (Reply::Hang, "timed out"),
        (
            Reply::Drip {
                every: Duration::from_millis(200),
            },
            "timed out",
        ),
        (Reply::Reset, "connection"),
    ] {
        let fake = FakeEndpoint::start(reply).await;
        let started = std::time::Instant::now();
        let case = sweep_against(&fake.token_url(), Backend::Sqlite).await;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "bounded by the request timeout"
        );
        assert_transient(&case, error).await;
    }
    // Nothing listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", closed.local_addr().unwrap());
    drop(closed);
    assert_transient(
        &sweep_against(&url, Backend::Sqlite).await,
        "could not connect",
    )
    .await;
}

#[tokio::test]
async fn redirects_are_never_followed() {
    for status in [302, 307] {
        let elsewhere = FakeEndpoint::start(Reply::json(200, &token_response(""))).await;
        let fake = FakeEndpoint::start(
            Reply::typed(status, "text/html", b"moved")
                .with_header("Location", &elsewhere.token_url()),
        )
        .await;
        let case = sweep_against(&fake.token_url(), Backend::Sqlite).await;
        assert_transient(&case, &format!("redirect ({status})")).await;
        assert_eq!(
            elsewhere.requests(),
            0,
            "the redirect target received nothing"
        );
    }
}

async fn grant_errors_flag_the_credential_and_keep_its_tokens(backend: Backend) {
    let body = r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity."}"#;
    for reply in [Reply::json(400, body), Reply::json(200, body)] {
        let fake = FakeEndpoint::start(reply).await;
        let case = sweep_against(&fake.token_url(), backend).await;
        assert_eq!(case.run.code, Some(1), "{:?}", case.run);
        assert_quiet(&case);
        let r = row(&case.home).await;
        assert_eq!(
            (
                r.status.as_str(),
                r.access_token.as_str(),
                r.refresh_token.as_str()
            ),
            ("needs_reauthorization", OLD_AT, OLD_RT)
        );
        assert!(r.last_error.unwrap().contains("AADSTS700082"));
        assert!(
            case.run.stderr.contains("AADSTS700082"),
            "the log names the provider's reason"
        );
    }
}
on_both_backends!(grant_errors_flag_the_credential_and_keep_its_tokens);

async fn a_rejected_client_is_blamed_on_the_provider_configuration(backend: Backend) {
    let fake = FakeEndpoint::start(Reply::json(
        401,
        r#"{"error":"invalid_client","error_description":"bad secret"}"#,
    ))
    .await;
    let case = sweep_against(&fake.token_url(), backend).await;
    let r = assert_transient(&case, "provider basic rejected the client").await;
    assert!(
        r.next_attempt_at >= case.started + 3600,
        "left alone for retry.max: {r:?}"
    );
    assert!(
        case.run
            .stderr
            .contains("provider rejected the client configuration"),
        "{}",
        case.run.stderr
    );
}
on_both_backends!(a_rejected_client_is_blamed_on_the_provider_configuration);

#[tokio::test]
async fn odd_but_valid_token_responses_are_accepted() {
    let hour = 3600;
    let cases: [(&str, i64, &str); 8] = [
        // 1799, far from the 1 h default: a value not read would show.
        (
            r#","expires_in":"1799","token_type":"Bearer""#,
            1799,
            "Bearer",
        ),
        (
            r#","expires_in":1799.0,"token_type":"bearer""#,
            1799,
            "Bearer",
        ),
        (r#","expires_in":-5"#, 60, "Bearer"),
        (r#","expires_in":0"#, 60, "Bearer"),
        (r#","expires_in":99999999999"#, 366 * 24 * hour, "Bearer"),
        ("", hour, "Bearer"),
        (
            r#","expires_in":"abc","token_type":"BEARER""#,
            hour,
            "Bearer",
        ),
        (r#","expires_in":120,"token_type":"DPoP""#, 120, "DPoP"),
    ];
    for (extra, lifetime, token_type) in cases {
        let fake = FakeEndpoint::start(Reply::typed(
            200,
            "text/plain; charset=utf-8",
            token_response(extra).as_bytes(),
        ))
        .await;
        let case = sweep_against(&fake.token_url(), Backend::Sqlite).await;
        assert_eq!(case.run.code, Some(0), "{extra}: {:?}", case.run);
        assert_quiet(&case);
        let r = row(&case.home).await;
        assert_eq!(
            (r.access_token.as_str(), r.refresh_token.as_str()),
            (NEW_AT, NEW_RT),
            "{extra}"
        );
        assert_eq!(r.token_type, token_type, "{extra}");
        // Lifetimes differ by minutes at least; 30 s absorbs a slow machine's start-up.
        let expected = case.started + lifetime;
        assert!(
            (expected..=expected + 30).contains(&r.access_token_expires_at),
            "{extra}: {r:?}"
        );
    }
}

async fn hostile_token_values_refuse_the_whole_response_and_keep_the_old_tokens(backend: Backend) {
    let long = "x".repeat(16 * 1024 + 1);
    let cases = [
        (
            format!(r#"{{"access_token":"{NEW_AT}\n","refresh_token":"{NEW_RT}"}}"#),
            "access_token holds a control character",
        ),
        (
            format!(r#"{{"access_token":"{NEW_AT}","refresh_token":"{NEW_RT}\u001b[2J"}}"#),
            "refresh_token holds a control character",
        ),
        (
            format!(r#"{{"access_token":"{NEW_AT} x","refresh_token":"{NEW_RT}"}}"#),
            "access_token holds a space",
        ),
        (
            format!(r#"{{"access_token":"{NEW_AT}","refresh_token":""}}"#),
            "refresh_token is empty",
        ),
        (
            format!(r#"{{"access_token":"{NEW_AT}","refresh_token":12345}}"#),
            "refresh_token is not a string",
        ),
        (
            format!(r#"{{"access_token":"{long}","refresh_token":"{NEW_RT}"}}"#),
            "access_token is longer than 16384 bytes",
        ),
        (
            format!(r#"{{"access_token":"{NEW_AT}","token_type":"Bearer\r\nX: 1"}}"#),
            "token_type holds a control character",
        ),
        (
            token_response(r#","instance_url":"http://acme.my.salesforce.com""#),
            "instance_url is not an https URL",
        ),
    ];
    for (body, reason) in cases {
        let fake = FakeEndpoint::start(Reply::json(200, &body)).await;
        let case = sweep_against(&fake.token_url(), backend).await;
        let reason = format!("token response refused: {reason}");
        let r = assert_transient(&case, &reason).await;
        assert_eq!(r.last_error.as_deref(), Some(reason.as_str()));
        assert_eq!(r.token_type, "Bearer", "{reason}");
        assert!(case.run.stderr.contains(&reason), "{:?}", case.run);
        let db = case.home.db().await;
        let (outcome, description): (String, String) = db
            .fetch_one(
                "SELECT outcome, error_description FROM token_rotation ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await;
        assert_eq!(
            (outcome.as_str(), description),
            ("refused_response", reason)
        );
        let journal = db.journal_text().await;
        assert!(
            !journal.contains(NEW_AT) && !journal.contains(NEW_RT),
            "{journal}"
        );
    }
}
on_both_backends!(hostile_token_values_refuse_the_whole_response_and_keep_the_old_tokens);

async fn a_stored_token_that_is_not_visible_ascii_is_never_printed(backend: Backend) {
    let home = BackendHome::with_token_url("http://127.0.0.1:9/token", backend, "").await;
    home.add("old", "basic", OLD_RT).await;
    let db = home.db().await;
    db.execute(
        "UPDATE oauth_credential SET access_token = $1, token_type = 'Bearer', \
         access_token_expires_at = CAST($2 AS BIGINT) + 900",
        &[&format!("{OLD_AT}\n\u{1b}[2Jrm -rf ~"), &now().to_string()],
    )
    .await;
    let run = home.run(&["token", "old"], "").await;
    assert_eq!(run.code, Some(4), "{run:?}");
    assert_eq!(run.stdout, "", "nothing is printed");
    assert_eq!(
        run.stderr.trim_end(),
        "tokenwarden: error: credential \"old\": the stored access token holds a control character, so it is not printed; refresh or authorize the credential again"
    );
}
on_both_backends!(a_stored_token_that_is_not_visible_ascii_is_never_printed);

async fn tokens_shorter_than_the_sweep_gap_are_named_in_the_log_status_and_doctor(
    backend: Backend,
) {
    let fake = FakeEndpoint::start(Reply::json(
        200,
        &format!(r#"{{"access_token":"{NEW_AT}","expires_in":60}}"#),
    ))
    .await;
    let case = sweep_against(&fake.token_url(), backend).await;
    assert_eq!(case.run.code, Some(0), "{:?}", case.run);
    assert_quiet(&case);
    let warnings: Vec<&str> = case
        .run
        .stderr
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("less than the longest gap between sweeps"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", case.run.stderr);
    assert!(
        warnings[0].contains("less than the longest gap between sweeps (3m)")
            && warnings[0].contains("sweep more often")
            && warnings[0].contains("credential=victim"),
        "{}",
        warnings[0]
    );

    let status = case.home.run(&["status"], "").await;
    assert!(
        status.stdout.contains("active (expires between sweeps)"),
        "{status:?}"
    );
    assert!(
        status.stdout.contains("note: victim: access tokens live "),
        "{status:?}"
    );
    let json = case.home.run(&["status", "--json"], "").await;
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows[0]["expires_between_sweeps"], true, "{rows}");
    let lifetime = rows[0]["access_token_lifetime_secs"].as_i64().unwrap();
    assert!((30..=60).contains(&lifetime), "{rows}");
    let doctor = case.home.run(&["doctor", "victim"], "").await;
    assert!(
        doctor
            .stdout
            .lines()
            .any(|l| l.contains("warn") && l.contains("lifetime") && l.contains("(3m)")),
        "{doctor:?}"
    );

    // A faster schedule makes the note go away.
    let fast =
        BackendHome::with_token_url(&fake.token_url(), backend, "schedule = \"*/20 * * * * *\"")
            .await;
    fast.add("quick", "basic", OLD_RT).await;
    let run = fast.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(!run.stderr.contains("longest gap"), "{run:?}");
    let status = fast.run(&["status", "--json"], "").await;
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(rows[0]["expires_between_sweeps"], false, "{rows}");
}
on_both_backends!(tokens_shorter_than_the_sweep_gap_are_named_in_the_log_status_and_doctor);

#[tokio::test]
async fn the_short_lifetime_warning_comes_once_per_credential_per_process() {
    // A JWT that expired long ago: every sweep (every 2 s) refreshes it again.
    let expired = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjEwMDB9.c2ln";
    let fake = FakeEndpoint::start(Reply::json(
        200,
        &format!(r#"{{"access_token":"{expired}","expires_in":3600}}"#),
    ))
    .await;
    let home = BackendHome::with_token_url(
        &fake.token_url(),
        Backend::Sqlite,
        "schedule = \"*/2 * * * * *\"",
    )
    .await;
    home.add("a", "basic", OLD_RT).await;
    home.add("b", "post", OLD_RT).await;
    let daemon = home.command(&["run"]).spawn().unwrap();
    let db = home.db().await;
    crate::harness::eventually(Duration::from_secs(30), "three sweeps' refreshes", || {
        let db = &db;
        async move {
            db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'")
                .await
                >= 6
        }
    })
    .await;
    let output = crate::harness::stop(daemon).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in ["a", "b"] {
        let warned = stderr
            .lines()
            .filter(|l| {
                l.contains("longest gap between sweeps")
                    && l.contains(&format!("credential={name} "))
            })
            .count();
        assert_eq!(warned, 1, "{name}: {stderr}");
    }
}

async fn a_response_without_a_refresh_token_keeps_the_old_one(backend: Backend) {
    let fake = FakeEndpoint::start(Reply::json(
        200,
        &format!(r#"{{"access_token":"{NEW_AT}","expires_in":3600}}"#),
    ))
    .await;
    let case = sweep_against(&fake.token_url(), backend).await;
    assert_eq!(case.run.code, Some(0), "{:?}", case.run);
    let r = row(&case.home).await;
    assert_eq!(
        (r.access_token.as_str(), r.refresh_token.as_str()),
        (NEW_AT, OLD_RT)
    );
}
on_both_backends!(a_response_without_a_refresh_token_keeps_the_old_one);

async fn a_credential_that_keeps_failing_is_reported_and_kept(backend: Backend) {
    let fake =
        FakeEndpoint::start(Reply::json(503, r#"{"error":"temporarily_unavailable"}"#)).await;
    let home = BackendHome::with_token_url(
        &fake.token_url(),
        backend,
        "[retry]\nfailing_after_failures = 2\nbase = \"1s\"",
    )
    .await;
    home.add("victim", "basic", OLD_RT).await;
    let first = home.run(&["run", "--once"], "").await;
    assert!(
        first.stderr.contains("refresh failed; will retry"),
        "{first:?}"
    );
    let db = home.db().await;
    db.execute("UPDATE oauth_credential SET next_attempt_at = 0", &[])
        .await;
    let second = home.run(&["run", "--once"], "").await;
    assert_eq!(second.code, Some(1));
    assert!(
        second
            .stderr
            .contains("credential is failing; retrying slowly"),
        "{second:?}"
    );
    let status = home.run(&["status", "--json"], "").await;
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["failing"].as_bool()),
        (Some("active"), Some(true)),
        "{rows}"
    );
    let table = home.run(&["status"], "").await;
    assert!(table.stdout.contains("active (failing)"), "{table:?}");
    // Retried slowly: at least half of retry.max (1 h) away.
    let (next,): (i64,) = db
        .fetch_one("SELECT next_attempt_at FROM oauth_credential", &[])
        .await;
    assert!(next >= now() + 1799, "{next}");
}
on_both_backends!(a_credential_that_keeps_failing_is_reported_and_kept);

async fn a_credential_of_an_unconfigured_provider_is_kept_and_retried(backend: Backend) {
    let home = BackendHome::with_token_url("http://127.0.0.1:9/token", backend, "").await;
    home.add("orphan", "basic", OLD_RT).await;
    let db = home.db().await;
    db.execute("UPDATE oauth_credential SET provider = 'gone'", &[])
        .await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let (status, error, rt): (String, String, String) = db
        .fetch_one(
            "SELECT status, last_error, refresh_token FROM oauth_credential",
            &[],
        )
        .await;
    assert_eq!((status.as_str(), rt.as_str()), ("active", OLD_RT));
    assert!(
        error.contains("provider \"gone\" is not configured"),
        "{error}"
    );
}
on_both_backends!(a_credential_of_an_unconfigured_provider_is_kept_and_retried);

async fn alerts_run_on_failing_recovery_and_reauthorization_without_secrets(backend: Backend) {
    let unavailable =
        FakeEndpoint::start(Reply::json(503, r#"{"error":"temporarily_unavailable"}"#)).await;
    let healthy =
        FakeEndpoint::start(Reply::json(200, &token_response(r#","expires_in":3600"#))).await;
    let dead = FakeEndpoint::start(Reply::json(
        400,
        r#"{"error":"invalid_grant","error_description":"revoked"}"#,
    ))
    .await;
    let probe = tempfile::tempdir().unwrap();
    let prefix = probe.path().join("alert");
    let home = BackendHome::with_token_url(
        &unavailable.token_url(),
        backend,
        &format!(
            "[retry]\nfailing_after_failures = 1\n[alerts]\non_event = [\"sh\", \"-c\", \"env > \\\"$0.$TOKENWARDEN_EVENT\\\"\", \"{}\"]",
            prefix.display()
        ),
    )
    .await;
    home.add("victim", "basic", OLD_RT).await;
    let db = home.db().await;
    let read = |event: &str| {
        std::fs::read_to_string(format!("{}.{event}", prefix.display())).unwrap_or_default()
    };

    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(1));
    let failing = read("failing");
    assert!(
        failing.contains("TOKENWARDEN_CREDENTIAL=victim")
            && failing.contains("TOKENWARDEN_PROVIDER=basic"),
        "{failing}"
    );
    assert!(
        failing.contains("TOKENWARDEN_REASON=token endpoint answered 503"),
        "{failing}"
    );

    home.retarget(&healthy.token_url());
    db.execute("UPDATE oauth_credential SET next_attempt_at = 0", &[])
        .await;
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    assert!(read("recovered").contains("TOKENWARDEN_EVENT=recovered"));

    home.retarget(&dead.token_url());
    db.execute("UPDATE oauth_credential SET refresh_due_at = 0", &[])
        .await;
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(1));
    assert!(read("needs_reauthorization").contains("TOKENWARDEN_REASON=invalid_grant: revoked"));

    for event in ["failing", "recovered", "needs_reauthorization"] {
        let env = read(event);
        for secret in [OLD_RT, OLD_AT, NEW_RT, NEW_AT]
            .into_iter()
            .chain(CLIENT_SECRETS)
        {
            assert!(!env.contains(secret), "the {event} alert saw a secret");
        }
        assert!(
            !env.contains("TW_TEST_BASIC_SECRET"),
            "the daemon's environment is not passed on"
        );
    }
}
on_both_backends!(alerts_run_on_failing_recovery_and_reauthorization_without_secrets);
