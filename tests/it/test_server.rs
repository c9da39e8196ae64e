//! Self-tests of the test authorization server's newer behaviours, over real HTTP: the
//! refresh-token grace window, held token answers, the device authorization grant (RFC 8628) and
//! the JWT bearer grant (RFC 7523 §2.1). Every loop is bounded in count and time; every server
//! dies with its `OauthServer`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::oauth_server::{
    AssertionClaims, DeviceAction, DeviceOutcome, OauthServer, ServerOptions, Stats, clients,
    jwt_bearer_assertion,
};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SCOPE: &str = "openid offline_access api:read";

/// How a request authenticates at the token endpoint.
#[derive(Clone, Copy, Debug)]
enum Auth {
    Basic(&'static str, &'static str),
    /// A public client: `client_id` in the form.
    Public(&'static str),
    /// No client identification at all.
    Nothing,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn token_at(
    http: &reqwest::Client,
    token_url: &str,
    auth: Auth,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    let mut request = http.post(token_url);
    match auth {
        Auth::Basic(id, secret) => request = request.basic_auth(id, Some(secret)),
        Auth::Public(id) => form.push(("client_id", id)),
        Auth::Nothing => {}
    }
    let response = request.form(&form).send().await.expect("token request");
    let status = response.status();
    let body = response.json().await.expect("token response is JSON");
    (status, body)
}

async fn token(server: &OauthServer, auth: Auth, params: &[(&str, &str)]) -> (StatusCode, Value) {
    token_at(&http(), server.token_url(), auth, params).await
}

const BASIC: Auth = Auth::Basic(clients::BASIC_ID, clients::BASIC_SECRET);
const DEVICE: Auth = Auth::Basic(clients::DEVICE_ID, clients::DEVICE_SECRET);

async fn refresh(server: &OauthServer, auth: Auth, refresh_token: &str) -> (StatusCode, Value) {
    token(
        server,
        auth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// The named string field of a 200 token response.
fn field(status: StatusCode, body: &Value, name: &str) -> String {
    assert_eq!(status, StatusCode::OK, "expected 200: {body}");
    body[name]
        .as_str()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("no {name}: {body}"))
        .to_owned()
}

fn assert_error(status: StatusCode, body: &Value, error: &str, what: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert_eq!(body["error"], error, "{what}: {body}");
}

fn assert_clean_log(server: &OauthServer) {
    let log = server.stderr_log();
    assert!(
        !log.contains("server_error"),
        "the server hit internal errors:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Refresh-token grace window
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn grace_window_accepts_a_consumed_refresh_token_then_revokes() {
    const GRACE: Duration = Duration::from_secs(3);
    let server = OauthServer::start_with(ServerOptions {
        rt_grace_secs: GRACE.as_secs(),
        ..ServerOptions::default()
    })
    .await;
    let first = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    let (status, body) = refresh(&server, BASIC, &first).await;
    // The server consumed `first` before it answered: its window ends before this + GRACE.
    let answered = Instant::now();
    let second = field(status, &body, "refresh_token");

    // Presented again inside the window: a fresh rotation, counted as grace, not reuse.
    let (status, body) = refresh(&server, BASIC, &first).await;
    assert!(
        answered.elapsed() < GRACE,
        "the machine is too slow for this test"
    );
    let third = field(status, &body, "refresh_token");
    let third_access = field(status, &body, "access_token");
    assert_ne!(third, second);
    assert_ne!(third, first);
    assert!(server.introspect_active(&third_access).await);
    let stats = server.stats().await;
    assert_eq!(
        (
            stats.refresh_grace,
            stats.refresh_reuse,
            stats.grants_revoked
        ),
        (1, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.refresh_ok, 2, "{stats:?}");

    // Both successors live on, in the same grant.
    let (status, body) = refresh(&server, BASIC, &second).await;
    field(status, &body, "refresh_token");
    let (status, body) = refresh(&server, BASIC, &third).await;
    let latest = field(status, &body, "refresh_token");
    let latest_access = field(status, &body, "access_token");

    // Two concurrent presentations of one token: one rotates, the other is a grace acceptance.
    let other = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    let (a, b) = tokio::join!(
        refresh(&server, BASIC, &other),
        refresh(&server, BASIC, &other)
    );
    field(a.0, &a.1, "refresh_token");
    field(b.0, &b.1, "refresh_token");
    let stats = server.stats().await;
    assert_eq!(
        (
            stats.refresh_grace,
            stats.refresh_reuse,
            stats.grants_revoked
        ),
        (2, 0, 0),
        "{stats:?}"
    );

    // Past the window the same presentation is reuse: rejected, counted, the grant revoked.
    tokio::time::sleep_until((answered + GRACE + Duration::from_millis(500)).into()).await;
    let (status, body) = refresh(&server, BASIC, &first).await;
    assert_error(
        status,
        &body,
        "invalid_grant",
        "consumed token past the window",
    );
    let stats = server.stats().await;
    assert_eq!(
        (
            stats.refresh_grace,
            stats.refresh_reuse,
            stats.grants_revoked
        ),
        (2, 1, 1),
        "{stats:?}"
    );
    let (status, body) = refresh(&server, BASIC, &latest).await;
    assert_error(
        status,
        &body,
        "invalid_grant",
        "latest token of the revoked grant",
    );
    assert!(!server.introspect_active(&latest_access).await);
    let stats = server.stats().await;
    assert_eq!(
        stats.refresh_reuse, 1,
        "a revoked token is no reuse: {stats:?}"
    );
    assert_clean_log(&server);
}

// ---------------------------------------------------------------------------------------------
// Held answers
// ---------------------------------------------------------------------------------------------

/// A refresh on its own connection, in a task (so the test can watch it or drop it).
fn spawn_refresh(
    server: &OauthServer,
    refresh_token: &str,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let token_url = server.token_url().to_owned();
    let refresh_token = refresh_token.to_owned();
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_mins(1))
            .build()
            .unwrap();
        token_at(
            &http,
            &token_url,
            BASIC,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
            ],
        )
        .await
    })
}

/// Polls the stats until `held` is `k`; panics after `within`.
async fn wait_held_exactly(server: &OauthServer, k: u64, within: Duration) -> Stats {
    let deadline = Instant::now() + within;
    loop {
        let stats = server.stats().await;
        if stats.held == k {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "held never became {k}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn hold_delays_rotated_answers() {
    let server = OauthServer::start().await;

    // Held: the rotation happens, the answer waits for release.
    let first = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    server.hold(30).await;
    let a = spawn_refresh(&server, &first);
    let b = spawn_refresh(
        &server,
        &server.mint_refresh_token(clients::BASIC_ID, SCOPE).await,
    );
    let stats = server.wait_held(2, Duration::from_secs(10)).await;
    assert_eq!(stats.refresh_ok, 2, "rotated before the answer: {stats:?}");
    assert!(!a.is_finished() && !b.is_finished(), "answered while held");
    // Other endpoints still answer while refresh answers are held.
    assert!(
        server
            .introspect_active(&server.mint(clients::POST_ID, "api:read").await.access_token)
            .await
    );
    assert_eq!(server.release().await, 2);
    let (status, body) = a.await.unwrap();
    let second = field(status, &body, "refresh_token");
    let (status, body) = b.await.unwrap();
    field(status, &body, "refresh_token");
    assert_eq!(server.stats().await.held, 0);
    // The token handed out by the held answer works; the presented one was consumed.
    let (status, body) = refresh(&server, BASIC, &second).await;
    let third = field(status, &body, "refresh_token");

    // A client that disconnects while held: it stops counting and the server carries on.
    server.hold(30).await;
    let dropped = spawn_refresh(&server, &third);
    server.wait_held(1, Duration::from_secs(10)).await;
    dropped.abort();
    assert!(dropped.await.unwrap_err().is_cancelled());
    let stats = wait_held_exactly(&server, 0, Duration::from_secs(10)).await;
    assert_eq!(
        stats.refresh_ok, 4,
        "the dropped request rotated: {stats:?}"
    );
    assert_eq!(server.release().await, 0);
    // Its rotation happened: presenting `third` again is reuse (no grace window here).
    let (status, body) = refresh(&server, BASIC, &third).await;
    assert_error(
        status,
        &body,
        "invalid_grant",
        "token rotated by a dropped request",
    );
    assert_eq!(server.stats().await.refresh_reuse, 1);

    // A hold ends by itself after its seconds.
    let minted = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    server.hold(1).await;
    let started = Instant::now();
    let (status, body) = refresh(&server, BASIC, &minted).await;
    field(status, &body, "refresh_token");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}, before the hold ended"
    );
    assert_eq!(server.stats().await.held, 0);
    assert_clean_log(&server);
}

// ---------------------------------------------------------------------------------------------
// Device authorization grant
// ---------------------------------------------------------------------------------------------

async fn poll(server: &OauthServer, auth: Auth, device_code: &str) -> (StatusCode, Value) {
    token(
        server,
        auth,
        &[("grant_type", DEVICE_GRANT), ("device_code", device_code)],
    )
    .await
}

#[tokio::test]
async fn device_flow_pending_slow_down_approve_deny() {
    let server = OauthServer::start_with(ServerOptions {
        device_interval_secs: 2,
        ..ServerOptions::default()
    })
    .await;
    let issuer = server.issuer().to_owned();
    assert_eq!(
        server.device_authorization_url(),
        format!("{issuer}/device/auth")
    );

    // Pending, then too fast.
    let pending = server.device_authorize(SCOPE).await;
    assert_eq!(pending.interval, 2, "{pending:?}");
    assert_eq!(pending.expires_in, 600, "{pending:?}");
    assert_eq!(pending.verification_uri, format!("{issuer}/device"));
    assert!(
        pending
            .verification_uri_complete
            .ends_with(&format!("?user_code={}", pending.user_code)),
        "{pending:?}"
    );
    let (status, body) = poll(&server, DEVICE, &pending.device_code).await;
    assert_error(status, &body, "authorization_pending", "first poll");
    let (status, body) = poll(&server, DEVICE, &pending.device_code).await;
    assert_error(status, &body, "slow_down", "second poll at once");

    // Approved on the real pages: the first poll gets tokens, and the refresh token rotates.
    let approved = server.device_authorize(SCOPE).await;
    server.approve_device(&approved.user_code).await;
    let (status, body) = poll(&server, DEVICE, &approved.device_code).await;
    let access = field(status, &body, "access_token");
    let refresh_token = field(status, &body, "refresh_token");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 120, "{body}");
    assert!(server.introspect_active(&access).await);
    let (status, body) = refresh(&server, DEVICE, &refresh_token).await;
    field(status, &body, "refresh_token");
    // The code cannot be approved twice.
    assert_eq!(
        server
            .device_user(&approved.user_code, DeviceAction::Approve)
            .await,
        DeviceOutcome::Rejected("AlreadyUsedError".to_owned())
    );

    // Denied on the confirm page.
    let denied = server.device_authorize("api:read").await;
    server.deny_device(&denied.user_code).await;
    let (status, body) = poll(&server, DEVICE, &denied.device_code).await;
    assert_error(status, &body, "access_denied", "denied code");

    // Unknown user code.
    assert_eq!(
        server.device_user("BCDF-GHJK", DeviceAction::Approve).await,
        DeviceOutcome::Rejected("NotFoundError".to_owned())
    );

    // The public device client: client_id in the form, no secret.
    let response = http()
        .post(server.device_authorization_url())
        .form(&[
            ("client_id", clients::DEVICE_PUBLIC_ID),
            ("scope", "api:read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let public: Value = response.json().await.unwrap();
    let user_code = public["user_code"].as_str().unwrap();
    let device_code = public["device_code"].as_str().unwrap();
    server.approve_device(user_code).await;
    let (status, body) = poll(
        &server,
        Auth::Public(clients::DEVICE_PUBLIC_ID),
        device_code,
    )
    .await;
    field(status, &body, "access_token");
    assert_eq!(body["scope"], "api:read", "{body}");
    assert_clean_log(&server);
}

#[tokio::test]
async fn device_code_expires() {
    let server = OauthServer::start_with(ServerOptions {
        device_code_ttl_secs: 2,
        device_interval_secs: 1,
        ..ServerOptions::default()
    })
    .await;
    let code = server.device_authorize(SCOPE).await;
    assert_eq!(code.expires_in, 2, "{code:?}");
    let (status, body) = poll(&server, DEVICE, &code.device_code).await;
    assert_error(status, &body, "authorization_pending", "first poll");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut polls = 0;
    loop {
        // Exactly the interval after the previous answer: never too soon.
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let (status, body) = poll(&server, DEVICE, &code.device_code).await;
        polls += 1;
        if body["error"] == "expired_token" {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            break;
        }
        assert_error(status, &body, "authorization_pending", "before expiry");
        assert!(
            polls < 10 && Instant::now() < deadline,
            "no expired_token after {polls} polls"
        );
    }
    // The user pages say so too.
    assert_eq!(
        server
            .device_user(&code.user_code, DeviceAction::Approve)
            .await,
        DeviceOutcome::Rejected("ExpiredError".to_owned())
    );
    assert_clean_log(&server);
}

// ---------------------------------------------------------------------------------------------
// JWT bearer grant
// ---------------------------------------------------------------------------------------------

async fn bearer(server: &OauthServer, auth: Auth, assertion: &str) -> (StatusCode, Value) {
    token(
        server,
        auth,
        &[("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)],
    )
    .await
}

async fn introspect(server: &OauthServer, token: &str) -> Value {
    http()
        .post(server.introspection_url())
        .basic_auth(clients::INTROSPECTOR_ID, Some(clients::INTROSPECTOR_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn jwt_bearer_grant_checks_the_assertion() {
    let server = OauthServer::start_with_ttl(90).await;
    let token_url = server.token_url().to_owned();
    let claims = || AssertionClaims::new(clients::BEARER_ID, "svc@example.test", &token_url);

    // Assertion alone (no client authentication), aud = token endpoint.
    let (status, body) = bearer(&server, Auth::Nothing, &jwt_bearer_assertion(&claims())).await;
    let access = field(status, &body, "access_token");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 90, "{body}");
    assert_eq!(body["scope"], "api:read api:write", "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let info = introspect(&server, &access).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "svc@example.test", "{info}");
    assert_eq!(info["client_id"], clients::BEARER_ID, "{info}");

    // aud = issuer, a narrower scope, client_id given explicitly.
    let mut at_issuer = claims();
    at_issuer.aud = server.issuer().to_owned();
    let (status, body) = token(
        &server,
        Auth::Public(clients::BEARER_ID),
        &[
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", &jwt_bearer_assertion(&at_issuer)),
            ("scope", "api:read"),
        ],
    )
    .await;
    field(status, &body, "access_token");
    assert_eq!(body["scope"], "api:read", "{body}");

    // The confidential client: basic auth plus its own assertion.
    let secret_client = Auth::Basic(clients::BEARER_SECRET_ID, clients::BEARER_SECRET);
    let own = AssertionClaims::new(clients::BEARER_SECRET_ID, "svc@example.test", &token_url);
    let (status, body) = bearer(&server, secret_client, &jwt_bearer_assertion(&own)).await;
    field(status, &body, "access_token");

    // Each failed check: invalid_grant, and the description names it.
    let good = jwt_bearer_assertion(&claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut forged = claims();
    forged.sub = Some("admin@example.test".to_owned());
    let forged_jwt = jwt_bearer_assertion(&forged);
    parts[1] = forged_jwt.split('.').nth(1).unwrap();
    let bad_signature = parts.join(".");

    let mut wrong_aud = claims();
    wrong_aud.aud = "https://elsewhere.example/token".to_owned();
    let mut expired = claims();
    expired.exp = expired.iat - 5;
    let mut too_long = claims();
    too_long.exp = too_long.iat + 3600;
    let mut no_sub = claims();
    no_sub.sub = None;
    let mut no_jti = claims();
    no_jti.jti = None;
    let other_iss = AssertionClaims::new(clients::BEARER_ID, "svc@example.test", &token_url);

    let cases: Vec<(&str, Auth, String, &str)> = vec![
        ("bad signature", Auth::Nothing, bad_signature, "signature"),
        (
            "wrong aud",
            Auth::Nothing,
            jwt_bearer_assertion(&wrong_aud),
            "aud",
        ),
        (
            "expired",
            Auth::Nothing,
            jwt_bearer_assertion(&expired),
            "expired",
        ),
        (
            "exp too far",
            Auth::Nothing,
            jwt_bearer_assertion(&too_long),
            "ahead",
        ),
        (
            "no sub",
            Auth::Nothing,
            jwt_bearer_assertion(&no_sub),
            "sub",
        ),
        (
            "no jti",
            Auth::Nothing,
            jwt_bearer_assertion(&no_jti),
            "jti",
        ),
        (
            "not a JWT",
            Auth::Public(clients::BEARER_ID),
            "abc".to_owned(),
            "JWS",
        ),
        (
            "iss of another client",
            secret_client,
            jwt_bearer_assertion(&other_iss),
            "iss",
        ),
    ];
    let mut failed = 0;
    for (what, auth, assertion, says) in &cases {
        let (status, body) = bearer(&server, *auth, assertion).await;
        assert_error(status, &body, "invalid_grant", what);
        let description = body["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(says), "{what}: {body}");
        failed += 1;
    }

    // Replay: the second presentation of one assertion (one jti) is rejected.
    let once = jwt_bearer_assertion(&claims());
    let (status, body) = bearer(&server, Auth::Nothing, &once).await;
    field(status, &body, "access_token");
    let (status, body) = bearer(&server, Auth::Nothing, &once).await;
    assert_error(status, &body, "invalid_grant", "reused jti");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("already used"),
        "{body}"
    );
    failed += 1;

    // An iss that is no client, with no client authentication: the client is unknown.
    let stranger = AssertionClaims::new("nobody", "svc@example.test", &token_url);
    let (status, body) = bearer(&server, Auth::Nothing, &jwt_bearer_assertion(&stranger)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
    failed += 1;

    let stats = server.stats().await;
    assert_eq!(stats.jwt_bearer_ok, 4, "{stats:?}");
    assert_eq!(stats.jwt_bearer_failed, failed, "{stats:?}");
    assert_eq!(stats.token_requests, 4 + failed, "{stats:?}");
    assert_clean_log(&server);
}
