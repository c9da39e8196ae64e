//! Presets against the response shapes real providers document, served by a local fake (the
//! preset's token URL overridden to point at it); discovery against oidc-provider's metadata; the
//! early warning before a refresh token's absolute expiry.

use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{Home, Run};
use crate::oauth_server::{OauthServer, clients};

const OLD_RT: &str = "rt-preset-canary-0001";
const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A home with one provider `p` (`block` plus a client), one due credential `c` of it, swept once.
async fn sweep(block: &str, extra: &str) -> (Home, Run) {
    let home = Home::with_token_url("http://127.0.0.1:9/unused", extra);
    home.append_config(&format!("[providers.p]\nclient_id = \"app\"\nclient_secret_env = \"TW_TEST_BASIC_SECRET\"\n{block}\n"));
    home.add("c", "p", OLD_RT).await;
    let run = home.run(&["run", "--once"], "").await;
    (home, run)
}

#[derive(sqlx::FromRow, Debug)]
struct Row {
    status: String,
    refresh_token: String,
    access_token_expires_at: Option<i64>,
    refresh_token_expires_at: Option<i64>,
    last_error: Option<String>,
}

async fn row(home: &Home) -> Row {
    sqlx::query_as(
        "SELECT status, refresh_token, access_token_expires_at, refresh_token_expires_at, last_error \
         FROM oauth_credential WHERE name = 'c'",
    )
    .fetch_one(&home.db().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn microsoft_sends_its_scopes_with_offline_access_and_reports_aadsts_codes() {
    // The shape of a Microsoft identity platform v2.0 token response.
    let ok = FakeEndpoint::start(Reply::json(
        200,
        r#"{"token_type":"Bearer","scope":"https://contoso.sharepoint.com/AllSites.Read","expires_in":4742,"ext_expires_in":4742,"access_token":"eyJ0eXAiOiJKV1QiLCJub25jZSI6ImNhbmFyeSJ9","refresh_token":"0.AXEA-canary-new"}"#,
    ))
    .await;
    let block = format!(
        "preset = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nscopes = \"https://contoso.sharepoint.com/.default\"\ntoken_url = \"{}\"",
        ok.token_url()
    );
    let (home, run) = sweep(&block, "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let body = ok.bodies().pop().unwrap();
    assert!(body.contains("grant_type=refresh_token"), "{body}");
    assert!(
        body.contains("scope=https%3A%2F%2Fcontoso.sharepoint.com%2F.default+offline_access"),
        "scope on refresh: {body}"
    );
    let r = row(&home).await;
    assert_eq!(r.refresh_token, "0.AXEA-canary-new");
    assert!((now() + 4700..now() + 4800).contains(&r.access_token_expires_at.unwrap()));

    // Entra's answer for a refresh token that lapsed from inactivity.
    let expired = FakeEndpoint::start(Reply::json(
        400,
        r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity. The token was issued on 2026-08-01T00:00:00Z and was inactive for 90.00:00:00. Trace ID: 0000 Correlation ID: 0000 Timestamp: 2026-11-23 10:00:00Z","error_codes":[700082],"timestamp":"2026-11-23 10:00:00Z","trace_id":"0000","correlation_id":"0000"}"#,
    ))
    .await;
    home.retarget(&expired.token_url());
    sqlx::query("UPDATE oauth_credential SET refresh_due_at = 0")
        .execute(&home.db().await)
        .await
        .unwrap();
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(1));
    let r = row(&home).await;
    assert_eq!(r.status, "needs_reauthorization");
    assert!(
        r.last_error
            .unwrap()
            .contains("AADSTS700082: The refresh token has expired due to inactivity")
    );
}

#[tokio::test]
async fn google_does_not_rotate_so_the_refresh_token_is_kept() {
    let fake = FakeEndpoint::start(Reply::json(
        200,
        r#"{"access_token":"ya29.canary","expires_in":3599,"scope":"https://www.googleapis.com/auth/drive.readonly","token_type":"Bearer","id_token":"eyJhbGciOiJSUzI1NiJ9.e30.sig"}"#,
    ))
    .await;
    let (home, run) = sweep(
        &format!("preset = \"google\"\ntoken_url = \"{}\"", fake.token_url()),
        "",
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        !fake.bodies()[0].contains("scope="),
        "no scope on refresh: {:?}",
        fake.bodies()
    );
    assert_eq!(row(&home).await.refresh_token, OLD_RT);
}

#[tokio::test]
async fn salesforce_sends_no_expires_in_so_an_hour_is_assumed() {
    let fake = FakeEndpoint::start(Reply::json(
        200,
        r#"{"access_token":"00Dxx0000001gPL!AR8AQJXg-canary","signature":"CMJ4l+CCaPQiKjoOEwEig9H4wqhpuLSk4J2urAe+fVg=","scope":"refresh_token api","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS","token_type":"Bearer","issued_at":"1700000000000"}"#,
    ))
    .await;
    let (home, run) = sweep(
        &format!(
            "preset = \"salesforce\"\ntoken_url = \"{}\"",
            fake.token_url()
        ),
        "",
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let r = row(&home).await;
    assert!(
        (now() + 3570..=now() + 3600).contains(&r.access_token_expires_at.unwrap()),
        "{r:?}"
    );
    assert_eq!(
        r.refresh_token, OLD_RT,
        "Salesforce keeps its refresh token"
    );
}

#[tokio::test]
async fn servicenow_knows_its_refresh_token_lifetime_and_warns_before_it_ends() {
    let fake = FakeEndpoint::start(Reply::json(
        200,
        r#"{"access_token":"sn-at-canary","refresh_token":"sn-rt-canary-new","scope":"useraccount","token_type":"Bearer","expires_in":1799}"#,
    ))
    .await;
    let block = format!(
        "preset = \"servicenow\"\ninstance = \"dev12345\"\ntoken_url = \"{}\"",
        fake.token_url()
    );
    // Warn 120 days ahead: a fresh 100-day refresh token is already inside the window.
    let (home, run) = sweep(&block, "refresh_token_warning = \"120d\"").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let r = row(&home).await;
    let expires = r.refresh_token_expires_at.expect("the preset's 100 days");
    assert!(
        (now() + 100 * DAY - 30..=now() + 100 * DAY).contains(&expires),
        "{r:?}"
    );
    assert!(
        run.stderr.contains("refresh token expires soon"),
        "{}",
        run.stderr
    );
    let status = home.run(&["status"], "").await;
    assert!(
        status.stdout.contains("active (re-authorize by "),
        "{status:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&home.run(&["status", "--json"], "").await.stdout).unwrap();
    assert_eq!(json[0]["refresh_token_expiring"], true);
}

#[tokio::test]
async fn an_issuer_gives_the_endpoints_through_discovery() {
    let server = OauthServer::start().await;
    let block = format!("issuer = \"{}\"", server.issuer());
    let home = Home::with_token_url("http://127.0.0.1:9/unused", "");
    home.append_config(&format!(
        "[providers.p]\nclient_id = \"{}\"\nclient_secret_env = \"TW_TEST_BASIC_SECRET\"\n{block}\n",
        clients::BASIC_ID
    ));
    let rt = server
        .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("c", "p", &rt).await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_ne!(
        row(&home).await.refresh_token,
        rt,
        "rotated through the discovered token endpoint"
    );
    assert_eq!(server.stats().await.refresh_ok, 1);
}

#[tokio::test]
async fn metadata_naming_another_issuer_is_refused_and_a_dead_issuer_is_retryable() {
    let liar = FakeEndpoint::start(Reply::json(
        200,
        r#"{"issuer":"https://evil.example","token_endpoint":"https://evil.example/token"}"#,
    ))
    .await;
    let issuer = liar.token_url().trim_end_matches("/token").to_owned();
    let home = Home::with_token_url("http://127.0.0.1:9/unused", "");
    home.append_config(&format!(
        "[providers.p]\nclient_id = \"a\"\nclient_secret = \"s\"\nissuer = \"{issuer}\"\n"
    ));
    let run = home.run(&["check-config"], "").await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("refusing it") && run.stderr.contains("evil.example"),
        "{run:?}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    home.retarget("http://127.0.0.1:9/unused");
    let config = std::fs::read_to_string(&home.config)
        .unwrap()
        .replace(&issuer, &dead);
    std::fs::write(&home.config, config).unwrap();
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(
        run.code,
        Some(1),
        "an unreachable issuer may come back: not a config error; {run:?}"
    );
    assert!(run.stderr.contains("no usable metadata"), "{run:?}");
}

#[tokio::test]
async fn doctor_checks_providers_and_credentials_without_touching_real_tokens() {
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    let rt = server
        .mint_refresh_token(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("c", "basic", &rt).await;
    assert_eq!(
        home.run(
            &[
                "add",
                "svc",
                "--provider",
                "cc",
                "--grant",
                "client-credentials"
            ],
            ""
        )
        .await
        .code,
        Some(0)
    );
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    let before = row(&home).await.refresh_token;
    let refreshes = server.stats().await.refresh_ok;

    let run = home.run(&["doctor", "c"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    for line in [
        "provider basic",
        "ok    reachable",
        "ok    client auth",
        "credential c (basic)",
        "ok    status",
        "ok    last refresh",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} missing:\n{}",
            run.stdout
        );
    }
    assert!(
        !run.stdout.contains("provider post"),
        "only c's provider: {}",
        run.stdout
    );
    assert_eq!(
        row(&home).await.refresh_token,
        before,
        "doctor never uses a real refresh token"
    );
    assert_eq!(server.stats().await.refresh_ok, refreshes);
    assert_eq!(server.stats().await.refresh_reuse, 0);

    let svc = home.run(&["doctor", "svc"], "").await;
    assert_eq!(
        svc.code,
        Some(0),
        "a client_credentials provider is probed with that grant: {svc:?}"
    );

    let mut wrong = home.command(&["doctor", "c"]);
    wrong.env("TW_TEST_BASIC_SECRET", "not-the-secret");
    let run = crate::harness::finish(wrong, "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.contains("FAIL  client auth") && run.stdout.contains("rejected: invalid_client"),
        "{}",
        run.stdout
    );
    assert!(!run.all().contains("not-the-secret") && !run.all().contains(&before));
}

#[tokio::test]
async fn salesforce_instance_url_is_kept_for_api_callers() {
    let fake = FakeEndpoint::start(Reply::json(
        200,
        r#"{"access_token":"00Dxx!canary","instance_url":"https://acme.my.salesforce.com","token_type":"Bearer","issued_at":"1700000000000"}"#,
    ))
    .await;
    let (home, run) = sweep(
        &format!(
            "preset = \"salesforce\"\ntoken_url = \"{}\"",
            fake.token_url()
        ),
        "",
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let db = home.db().await;
    let (url,): (Option<String>,) =
        sqlx::query_as("SELECT instance_url FROM current_token WHERE name = 'c'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(url.as_deref(), Some("https://acme.my.salesforce.com"));
    let (reported,): (Option<bool>,) =
        sqlx::query_as("SELECT expires_in_reported FROM token_rotation")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        reported,
        Some(false),
        "the journal notes that the lifetime was assumed"
    );
    let json: serde_json::Value =
        serde_json::from_str(&home.run(&["status", "--json"], "").await.stdout).unwrap();
    assert_eq!(json[0]["instance_url"], "https://acme.my.salesforce.com");
}

#[tokio::test]
async fn a_long_lived_token_is_still_refreshed_within_max_idle() {
    let fake = FakeEndpoint::start(Reply::json(
        200,
        r#"{"access_token":"at-long-canary","refresh_token":"rt-long-canary","expires_in":31536000}"#,
    ))
    .await;
    let (home, run) = sweep(
        &format!("token_url = \"{}\"", fake.token_url()),
        "max_idle = \"2h\"",
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let (due,): (i64,) =
        sqlx::query_as("SELECT refresh_due_at FROM oauth_credential WHERE name = 'c'")
            .fetch_one(&home.db().await)
            .await
            .unwrap();
    let two_hours = now() + 2 * 3600;
    assert!(
        (two_hours - 30..=two_hours).contains(&due),
        "due {due}, expected about {two_hours}"
    );
}
