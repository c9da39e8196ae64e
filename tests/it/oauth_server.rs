//! Test harness: runs the real OAuth 2.0 authorization server in `tests/oauth-server/` (oidc-provider on Node) as a child process and gives tests its URLs, token minting, introspection, refresh-token reuse counters, a refresh-token grace window, held responses, the device flow's user pages and jwt-bearer assertions.
//!
//! Needs `node` on PATH and `npm ci --prefix tests/oauth-server` once. Each
//! [`OauthServer`] is its own process on an ephemeral 127.0.0.1 port, so tests
//! run in parallel. The process dies with the value (kill + reap in `Drop`),
//! and by itself when this test process dies (its stdin pipe closes).
//!
//! Clients registered in the server (all scopes: `openid offline_access api:read api:write`):
//! see [`clients`].

// Test helpers fail by panicking, on purpose: a `# Panics` section on each would only repeat it.
#![allow(clippy::missing_panics_doc)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long `start` waits for the server's ready line.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Per-request timeout of the harness's own HTTP calls.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_AT_TTL_SECS: u64 = 120;
/// How often [`OauthServer::wait_held`] asks for the stats.
const POLL_EVERY: Duration = Duration::from_millis(20);
const NPM_HINT: &str = "run `npm ci --prefix tests/oauth-server` (from the repository root)";
/// Keep at most this much of the server's stderr for failure messages.
const STDERR_CAP: usize = 64 * 1024;

/// The clients `tests/oauth-server/server.js` registers.
pub mod clients {
    /// `client_secret_basic`; grants `authorization_code`, `refresh_token`.
    pub const BASIC_ID: &str = "basic-client";
    pub const BASIC_SECRET: &str = "basic-secret";
    /// `client_secret_post`; grants `authorization_code`, `refresh_token`.
    pub const POST_ID: &str = "post-client";
    pub const POST_SECRET: &str = "post-secret";
    /// `private_key_jwt` (RS256); grants `authorization_code`, `refresh_token`; key in
    /// [`super::jwt_client_key_path`], key id [`JWT_KID`].
    pub const JWT_ID: &str = "jwt-client";
    pub const JWT_KID: &str = "jwt-client-1";
    /// `client_secret_basic`; grant `client_credentials` only, scope `api:read api:write`.
    pub const CC_ID: &str = "cc-client";
    pub const CC_SECRET: &str = "cc-secret";
    /// `client_secret_basic`; grants `urn:ietf:params:oauth:grant-type:device_code`,
    /// `refresh_token`; all scopes.
    pub const DEVICE_ID: &str = "device-client";
    pub const DEVICE_SECRET: &str = "device-secret";
    /// Public (`none`, `client_id` in the form); grants as [`DEVICE_ID`].
    pub const DEVICE_PUBLIC_ID: &str = "device-public";
    /// Public (`none`); grant `urn:ietf:params:oauth:grant-type:jwt-bearer` only, scope
    /// `api:read api:write`. A request may carry only `grant_type` and `assertion` (as for
    /// Salesforce and Google service accounts): the server takes the client from the assertion's
    /// `iss`. Assertions are verified with jwt-client's key (kid [`JWT_KID`]); see
    /// [`super::jwt_bearer_assertion`].
    pub const BEARER_ID: &str = "bearer-client";
    /// `client_secret_basic`; otherwise as [`BEARER_ID`].
    pub const BEARER_SECRET_ID: &str = "bearer-secret-client";
    pub const BEARER_SECRET: &str = "bearer-secret";
    /// `client_secret_basic`, may only call the introspection endpoint.
    pub const INTROSPECTOR_ID: &str = "introspector";
    pub const INTROSPECTOR_SECRET: &str = "introspector-secret";
    /// Every scope the server knows.
    pub const ALL_SCOPES: &str = "openid offline_access api:read api:write";
}

/// Counters kept by the server since start or the last [`OauthServer::reset_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Stats {
    /// `refresh_token` grants answered with 200 (grace-window acceptances included).
    pub refresh_ok: u64,
    /// `refresh_token` grants that presented a refresh token some other request had already
    /// consumed (rotated), before or concurrently, outside any grace window; whatever the
    /// outcome. The daemon must never cause one.
    pub refresh_reuse: u64,
    /// `refresh_token` grants that presented an already consumed refresh token inside the
    /// grace window ([`ServerOptions::rt_grace_secs`]) and were accepted.
    pub refresh_grace: u64,
    /// `refresh_token` grants that presented a refresh token an earlier `refresh_token` grant had
    /// already presented, whatever either's outcome, inside the grace window or not: refresh
    /// tokens presented twice. A request whose answer was lost counts as presented.
    pub refresh_repeated: u64,
    /// `refresh_token` grants answered with an error (reuses included).
    pub refresh_failed: u64,
    /// Grants revoked (by reuse detection or by the revocation endpoint).
    pub grants_revoked: u64,
    /// Every POST to the token endpoint, any grant type, any outcome.
    pub token_requests: u64,
    /// `jwt-bearer` grants answered with 200.
    pub jwt_bearer_ok: u64,
    /// `jwt-bearer` grants answered with an error (client authentication errors included).
    pub jwt_bearer_failed: u64,
    /// Token responses held back by [`OauthServer::hold`] right now (a gauge: not zeroed by
    /// [`OauthServer::reset_stats`]; a client that disconnects stops counting).
    pub held: u64,
}

/// How to start the server; [`Default`] is what [`OauthServer::start`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::struct_field_names,
    reason = "the unit in each name, as the environment variables it sets"
)]
pub struct ServerOptions {
    /// Lifetime of access tokens, client-credentials and jwt-bearer tokens (`AT_TTL`; >= 1).
    pub at_ttl_secs: u64,
    /// Refresh-token grace window (`RT_GRACE`; 0 = off): a refresh token consumed by a rotation
    /// at most this long ago is accepted again (a new rotation, counted in
    /// [`Stats::refresh_grace`]); later it is reuse and revokes the grant.
    pub rt_grace_secs: u64,
    /// Device code / user code lifetime (`DEVICE_CODE_TTL`; >= 1).
    pub device_code_ttl_secs: u64,
    /// Device-flow polling interval (`DEVICE_INTERVAL`; >= 1): announced as `interval`; a
    /// poll sooner than that after the previous one gets `slow_down` and 5 s more.
    pub device_interval_secs: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            at_ttl_secs: DEFAULT_AT_TTL_SECS,
            rt_grace_secs: 0,
            device_code_ttl_secs: 600,
            device_interval_secs: 5,
        }
    }
}

/// The device authorization response (RFC 8628 §3.2).
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// What the user does on the device pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    /// Confirm the code, sign in (any account: `device-user`), consent.
    Approve,
    /// Confirm page's "Abort".
    Deny,
}

/// Where the device pages ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOutcome {
    /// The success page: the next poll gets tokens.
    Approved,
    /// The code page again, with an error: `AbortedError` (after [`DeviceAction::Deny`]),
    /// `NotFoundError`, `ExpiredError`, `AlreadyUsedError`, `NoCodeError`.
    Rejected(String),
}

/// Claims of a jwt-bearer grant assertion (RFC 7523 §3); see [`jwt_bearer_assertion`].
#[derive(Debug, Clone, Serialize)]
pub struct AssertionClaims {
    pub iss: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl AssertionClaims {
    /// A valid assertion's claims: iss = `client_id`, the given `sub`, aud = `audience` (the
    /// issuer or the token endpoint URL), exp = now + 60 s, a random jti.
    #[must_use]
    pub fn new(client_id: &str, sub: &str, audience: &str) -> Self {
        let now = unix_now();
        Self {
            iss: client_id.to_owned(),
            sub: Some(sub.to_owned()),
            aud: audience.to_owned(),
            iat: now,
            exp: now + 60,
            jti: Some(random_jti()),
        }
    }
}

/// Tokens minted by `POST /test/mint`, as the authorization-code flow would have issued them.
#[derive(Debug, Clone, Deserialize)]
pub struct MintedTokens {
    pub refresh_token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
    pub grant_id: String,
    pub account_id: String,
}

/// The one JSON line the server prints on stdout once it listens.
#[derive(Debug, Deserialize)]
struct ReadyLine {
    issuer: String,
    port: u16,
    token_url: String,
    introspection_url: String,
    revocation_url: String,
    authorization_url: String,
    device_authorization_url: String,
}

/// Owns the node process: killed and reaped when dropped, also when `start` panics half-way.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Process {
    fn drop(&mut self) {
        // Closing stdin alone makes the server exit; kill so no test waits on that.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running test authorization server.
pub struct OauthServer {
    // Never read: dropping it kills and reaps the server (after `Drop::drop` printed the log).
    #[allow(dead_code, reason = "held for its Drop")]
    process: Process,
    ready: ReadyLine,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl OauthServer {
    /// Starts the server with [`ServerOptions::default`] (120 s access tokens, no grace window).
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default()).await
    }

    /// Starts the server; access tokens and client-credentials tokens live `at_ttl_secs`.
    pub async fn start_with_ttl(at_ttl_secs: u64) -> Self {
        Self::start_with(ServerOptions {
            at_ttl_secs,
            ..ServerOptions::default()
        })
        .await
    }

    /// Starts the server with `options`.
    pub async fn start_with(options: ServerOptions) -> Self {
        let ServerOptions {
            at_ttl_secs,
            rt_grace_secs,
            device_code_ttl_secs,
            device_interval_secs,
        } = options;
        assert!(at_ttl_secs > 0, "AT_TTL must be at least 1 second");
        assert!(
            device_code_ttl_secs > 0 && device_interval_secs > 0,
            "DEVICE_CODE_TTL and DEVICE_INTERVAL must be at least 1 second"
        );
        let dir = server_dir();
        let script = dir.join("server.js");
        assert!(script.is_file(), "{} is missing", script.display());
        let installed = dir.join("node_modules/oidc-provider/package.json");
        assert!(
            installed.is_file(),
            "the test OAuth server's npm packages are not installed ({} is missing): {NPM_HINT}",
            installed.display()
        );

        let started = Instant::now();
        let mut child = Command::new("node")
            .arg(&script)
            .current_dir(&dir)
            .env("AT_TTL", at_ttl_secs.to_string())
            .env("RT_GRACE", rt_grace_secs.to_string())
            .env("DEVICE_CODE_TTL", device_code_ttl_secs.to_string())
            .env("DEVICE_INTERVAL", device_interval_secs.to_string())
            .env("PORT", "0")
            .env_remove("OAUTH_SERVER_IGNORE_STDIN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `node {}`: {e} (is Node.js on PATH?)",
                    script.display()
                )
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let mut process = Process { child, stdin };

        let stderr = Arc::new(Mutex::new(String::new()));
        spawn_stderr_collector(stderr_pipe, Arc::clone(&stderr));
        let ready_rx = spawn_stdout_reader(stdout);

        let Ok(ready) = tokio::time::timeout(START_DEADLINE, ready_rx).await else {
            panic!(
                "the test OAuth server printed no ready line within {START_DEADLINE:?}; {NPM_HINT}\n--- server stderr ---\n{}",
                snapshot(&stderr)
            )
        };
        let line = match ready {
            Ok(line) => line,
            Err(_closed) => {
                let status = process
                    .child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                panic!(
                    "the test OAuth server exited before it was ready ({status}); if node_modules is stale, {NPM_HINT}\n--- server stderr ---\n{}",
                    wait_for_stderr(&stderr)
                );
            }
        };
        let ready: ReadyLine = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("the test OAuth server's ready line is not the expected JSON ({e}): {line:?}")
        });
        let startup = started.elapsed();
        if std::env::var_os("OAUTH_SERVER_TIMING").is_some() {
            eprintln!("test OAuth server {} ready in {startup:?}", ready.issuer);
        }

        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            // A proxy from the environment must never see loopback test traffic.
            .no_proxy()
            .build()
            .expect("reqwest client");

        Self {
            process,
            ready,
            stderr,
            http,
        }
    }

    /// `http://127.0.0.1:PORT`
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.ready.issuer
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.ready.port
    }

    #[must_use]
    pub fn token_url(&self) -> &str {
        &self.ready.token_url
    }

    #[must_use]
    pub fn revocation_url(&self) -> &str {
        &self.ready.revocation_url
    }

    #[must_use]
    pub fn introspection_url(&self) -> &str {
        &self.ready.introspection_url
    }

    #[must_use]
    pub fn authorization_url(&self) -> &str {
        &self.ready.authorization_url
    }

    /// The device authorization endpoint (RFC 8628 §3.1), `{issuer}/device/auth`.
    #[must_use]
    pub fn device_authorization_url(&self) -> &str {
        &self.ready.device_authorization_url
    }

    /// What the server wrote to stderr so far (warnings; per-request lines when the
    /// server runs with `OAUTH_SERVER_DEBUG=1` in the test's environment).
    #[must_use]
    pub fn stderr_log(&self) -> String {
        snapshot(&self.stderr)
    }

    /// Mints a grant plus refresh and access token for `client_id` (account `test-account`),
    /// as a completed authorization-code flow would. The refresh token works in a normal
    /// `refresh_token` grant by that client.
    pub async fn mint(&self, client_id: &str, scope: &str) -> MintedTokens {
        let body = json!({ "client_id": client_id, "scope": scope });
        let response = self
            .test_route(reqwest::Method::POST, "/test/mint", Some(&body))
            .await;
        serde_json::from_value(response).expect("mint response shape")
    }

    /// [`Self::mint`], refresh token only.
    pub async fn mint_refresh_token(&self, client_id: &str, scope: &str) -> String {
        self.mint(client_id, scope).await.refresh_token
    }

    /// Destroys one access token at the server (`POST /test/revoke-access-token`): introspection
    /// then calls it inactive, while its grant and refresh token stay valid (the revocation
    /// endpoint would revoke the whole grant). Whether the token existed.
    pub async fn revoke_access_token(&self, token: &str) -> bool {
        let body = json!({ "token": token });
        let response = self
            .test_route(
                reqwest::Method::POST,
                "/test/revoke-access-token",
                Some(&body),
            )
            .await;
        response["revoked"] == true
    }

    /// Asks the real introspection endpoint (as the `introspector` client) whether `token`
    /// (access, client-credentials or refresh token) is active.
    pub async fn introspect_active(&self, token: &str) -> bool {
        let response = self
            .http
            .post(self.introspection_url())
            .basic_auth(clients::INTROSPECTOR_ID, Some(clients::INTROSPECTOR_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("introspection request failed: {e}"));
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .expect("introspection response is JSON");
        assert_eq!(status, StatusCode::OK, "introspection failed: {body}");
        body["active"]
            .as_bool()
            .unwrap_or_else(|| panic!("introspection response without boolean `active`: {body}"))
    }

    /// From now on, answers to `refresh_token` grants wait (after the server processed them:
    /// the token is already rotated) until [`Self::release`] or until `seconds` have passed.
    /// Calling it again restarts the time from now.
    pub async fn hold(&self, seconds: u64) {
        self.test_route(
            reqwest::Method::POST,
            "/test/hold",
            Some(&json!({ "seconds": seconds })),
        )
        .await;
    }

    /// Ends a [`Self::hold`]: every held answer goes out now. Returns how many were held.
    pub async fn release(&self) -> u64 {
        let value = self
            .test_route(reqwest::Method::POST, "/test/release", None)
            .await;
        value["released"]
            .as_u64()
            .unwrap_or_else(|| panic!("release response without `released`: {value}"))
    }

    /// Polls the stats until at least `k` answers are held back; panics after `within`.
    pub async fn wait_held(&self, k: u64, within: Duration) -> Stats {
        let deadline = Instant::now() + within;
        loop {
            let stats = self.stats().await;
            if stats.held >= k {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "{k} held responses expected within {within:?}; last stats: {stats:?}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Starts a device authorization (RFC 8628 §3.1) as [`clients::DEVICE_ID`].
    pub async fn device_authorize(&self, scope: &str) -> DeviceAuthorization {
        let response = self
            .http
            .post(self.device_authorization_url())
            .basic_auth(clients::DEVICE_ID, Some(clients::DEVICE_SECRET))
            .form(&[("scope", scope)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("device authorization request failed: {e}"));
        let status = response.status();
        let text = response.text().await.expect("device authorization body");
        assert_eq!(
            status,
            StatusCode::OK,
            "device authorization answered {status}: {text}"
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("device authorization response shape ({e}): {text}"))
    }

    /// Plays the user on oidc-provider's real device pages, without a browser: opens the
    /// verification URI (`{issuer}/device`), types `user_code`, then confirms and signs in
    /// (any account, `device-user`) and consents, or aborts on the confirm page. Cookies are
    /// carried by hand; at most 20 pages.
    pub async fn device_user(&self, user_code: &str, action: DeviceAction) -> DeviceOutcome {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("reqwest client");
        let base = url::Url::parse(self.issuer()).expect("issuer is a URL");
        let mut cookies: Vec<(String, String)> = Vec::new();
        let mut next = http.get(format!("{}/device", self.issuer()));
        for _ in 0..20 {
            let cookie = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let response = next
                .header("Cookie", cookie)
                .send()
                .await
                .unwrap_or_else(|e| panic!("device page request failed: {e}"));
            for set in response.headers().get_all("set-cookie") {
                let set = set.to_str().expect("set-cookie is ASCII");
                let pair = set.split(';').next().unwrap_or_default();
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                cookies.retain(|(k, _)| k != name);
                if !value.is_empty() && !set.contains("expires=Thu, 01 Jan 1970") {
                    cookies.push((name.to_owned(), value.to_owned()));
                }
            }
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers()["location"]
                    .to_str()
                    .expect("location is ASCII");
                let location = base.join(location).expect("location is a URL");
                assert!(
                    location.as_str().starts_with(self.issuer()),
                    "the device pages redirected away from the server: {location}"
                );
                next = http.get(location);
                continue;
            }
            let page = response.text().await.expect("device page body");
            assert_eq!(status, StatusCode::OK, "unexpected device page: {page}");
            if page.contains("id=\"device-success\"") {
                return DeviceOutcome::Approved;
            }
            if let Some(rest) = page.split("id=\"device-error\"").nth(1) {
                let name = attribute(rest.split('>').next().unwrap_or_default(), "data-error")
                    .unwrap_or_default();
                return DeviceOutcome::Rejected(name);
            }
            let (action_url, mut fields) = first_form(&page);
            if page.contains("id=\"op.deviceInputForm\"") {
                fields.push(("user_code".to_owned(), user_code.to_owned()));
            } else if page.contains("id=\"op.deviceConfirmForm\"") && action == DeviceAction::Deny {
                fields.push(("abort".to_owned(), "yes".to_owned()));
            } else if page.contains("name=\"login\"") {
                fields.retain(|(k, _)| k != "login" && k != "password");
                fields.push(("login".to_owned(), "device-user".to_owned()));
                fields.push(("password".to_owned(), "anything".to_owned()));
            }
            let target = base.join(&action_url).expect("form action is a URL");
            next = http.post(target).form(&fields);
        }
        panic!("the device pages did not finish within 20 pages");
    }

    /// [`Self::device_user`] approving; panics unless the success page shows.
    pub async fn approve_device(&self, user_code: &str) {
        let outcome = self.device_user(user_code, DeviceAction::Approve).await;
        assert_eq!(outcome, DeviceOutcome::Approved, "approving {user_code}");
    }

    /// [`Self::device_user`] aborting; panics unless the pages report the abort.
    pub async fn deny_device(&self, user_code: &str) {
        let outcome = self.device_user(user_code, DeviceAction::Deny).await;
        assert_eq!(
            outcome,
            DeviceOutcome::Rejected("AbortedError".to_owned()),
            "denying {user_code}"
        );
    }

    pub async fn stats(&self) -> Stats {
        let value = self
            .test_route(reqwest::Method::GET, "/test/stats", None)
            .await;
        serde_json::from_value(value).expect("stats response shape")
    }

    pub async fn reset_stats(&self) {
        self.test_route(reqwest::Method::POST, "/test/reset-stats", None)
            .await;
    }

    async fn test_route(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.issuer());
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
        let status = response.status();
        let text = response.text().await.expect("test route body");
        assert_eq!(
            status,
            StatusCode::OK,
            "{method} {url} answered {status}: {text}"
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url}: body is not JSON ({e}): {text}"))
    }
}

impl Drop for OauthServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Shown with the failing test's output.
            eprintln!(
                "--- test OAuth server {} stderr ---\n{}",
                self.ready.issuer,
                snapshot(&self.stderr)
            );
        }
        // `self.process` is dropped next: stdin closed, killed, reaped.
    }
}

/// `tests/fixtures/jwt-client.key.pem`: the PKCS#8 RSA private key of `jwt-client`.
#[must_use]
pub fn jwt_client_key_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt-client.key.pem")
}

/// An RS256 jwt-bearer grant `assertion` with `claims`, kid `jwt-client-1`, signed with
/// [`jwt_client_key_path`] (the key the server holds for [`clients::BEARER_ID`] and
/// [`clients::BEARER_SECRET_ID`]).
#[must_use]
pub fn jwt_bearer_assertion(claims: &AssertionClaims) -> String {
    let pem = std::fs::read(jwt_client_key_path()).expect("read tests/fixtures/jwt-client.key.pem");
    let key = EncodingKey::from_rsa_pem(&pem).expect("jwt-client key is an RSA PEM");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(clients::JWT_KID.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("sign jwt-bearer assertion")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn random_jti() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The action and hidden fields of the first form on a page.
fn first_form(page: &str) -> (String, Vec<(String, String)>) {
    let form_tag = page
        .split("<form")
        .nth(1)
        .unwrap_or_else(|| panic!("no form on the page: {page}"));
    let action = attribute(form_tag.split('>').next().unwrap_or_default(), "action")
        .unwrap_or_else(|| panic!("form without action: {page}"));
    let fields = form_tag
        .split("<input")
        .skip(1)
        .filter_map(|tag| {
            let tag = tag.split('>').next()?;
            if !tag.contains("type=\"hidden\"") {
                return None;
            }
            Some((
                attribute(tag, "name")?,
                attribute(tag, "value").unwrap_or_default(),
            ))
        })
        .collect();
    (action, fields)
}

/// A double-quoted attribute's value in a tag, with the entities the server's pages use decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let raw = tag[start..].split('"').next()?;
    Some(
        raw.replace("&#34;", "\"")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&#60;", "<")
            .replace("&lt;", "<")
            .replace("&#62;", ">")
            .replace("&gt;", ">")
            .replace("&#38;", "&")
            .replace("&amp;", "&"),
    )
}

/// A fresh RS256 `client_assertion` for `private_key_jwt` (RFC 7523): iss = sub = `client_id`,
/// aud = `audience` (the token endpoint URL), random jti, exp = now + 60 s, kid `jwt-client-1`,
/// signed with [`jwt_client_key_path`].
#[must_use]
pub fn jwt_client_assertion(client_id: &str, audience: &str) -> String {
    #[derive(Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        jti: String,
        iat: u64,
        exp: u64,
    }
    let pem = std::fs::read(jwt_client_key_path()).expect("read tests/fixtures/jwt-client.key.pem");
    let key = EncodingKey::from_rsa_pem(&pem).expect("jwt-client key is an RSA PEM");
    let now = unix_now();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(clients::JWT_KID.to_owned());
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        jti: random_jti(),
        iat: now,
        exp: now + 60,
    };
    jsonwebtoken::encode(&header, &claims, &key).expect("sign client assertion")
}

fn server_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oauth-server")
}

/// Reads the ready line, then keeps draining stdout so the server never blocks on it.
fn spawn_stdout_reader(
    stdout: impl Read + Send + 'static,
) -> tokio::sync::oneshot::Receiver<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        // Skip anything that is not the JSON line (there should be nothing).
        let mut tx = Some(tx);
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.trim_start().starts_with('{')
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line);
            }
        }
        // EOF: a `tx` still held is dropped here, which tells `start` the server died.
    });
    rx
}

fn spawn_stderr_collector(stderr: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let mut log = sink
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if log.len() + line.len() > STDERR_CAP {
                        let cut = log.len().min(STDERR_CAP / 2);
                        let cut = (cut..=log.len())
                            .find(|&i| log.is_char_boundary(i))
                            .unwrap_or(log.len());
                        log.replace_range(..cut, "[...]\n");
                    }
                    let _ = write!(log, "{line}");
                }
            }
        }
        let mut log = sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.push_str("[stderr closed]\n");
    });
}

fn snapshot(stderr: &Arc<Mutex<String>>) -> String {
    stderr
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// After the process exited: its stderr is closed, wait (briefly) until the collector has it all.
fn wait_for_stderr(stderr: &Arc<Mutex<String>>) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let log = snapshot(stderr);
        if log.ends_with("[stderr closed]\n") || Instant::now() >= deadline {
            return log;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a client authenticates at the token endpoint.
    #[derive(Clone, Copy, Debug)]
    enum Auth {
        Basic(&'static str, &'static str),
        Post(&'static str, &'static str),
        PrivateKeyJwt(&'static str),
    }

    impl Auth {
        fn client_id(self) -> &'static str {
            match self {
                Auth::Basic(id, _) | Auth::Post(id, _) | Auth::PrivateKeyJwt(id) => id,
            }
        }
    }

    /// A plain token-endpoint POST, authenticated as `auth`.
    async fn token_request(
        server: &OauthServer,
        auth: Auth,
        params: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap();
        let mut form: Vec<(&str, String)> =
            params.iter().map(|&(k, v)| (k, v.to_owned())).collect();
        let mut request = http.post(server.token_url());
        match auth {
            Auth::Basic(id, secret) => request = request.basic_auth(id, Some(secret)),
            Auth::Post(id, secret) => {
                form.push(("client_id", id.to_owned()));
                form.push(("client_secret", secret.to_owned()));
            }
            Auth::PrivateKeyJwt(id) => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push((
                    "client_assertion",
                    jwt_client_assertion(id, server.token_url()),
                ));
            }
        }
        let response = request.form(&form).send().await.expect("token request");
        let status = response.status();
        let body = response.json().await.expect("token response is JSON");
        (status, body)
    }

    async fn refresh(server: &OauthServer, auth: Auth, refresh_token: &str) -> (StatusCode, Value) {
        token_request(
            server,
            auth,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// Refreshes and asserts success with a rotated refresh token; returns (new refresh token,
    /// new access token).
    async fn refresh_ok(server: &OauthServer, auth: Auth, refresh_token: &str) -> (String, String) {
        let (status, body) = refresh(server, auth, refresh_token).await;
        assert_eq!(status, StatusCode::OK, "{auth:?}: refresh failed: {body}");
        assert_eq!(body["token_type"], "Bearer", "{auth:?}: {body}");
        let access = body["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("{auth:?}: no access_token: {body}"))
            .to_owned();
        let rotated = body["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{auth:?}: no refresh_token in refresh response: {body}"))
            .to_owned();
        assert_ne!(
            rotated, refresh_token,
            "{auth:?}: refresh token was not rotated"
        );
        (rotated, access)
    }

    fn assert_invalid_grant(status: StatusCode, body: &Value, what: &str) {
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{what}: expected 400, got {status}: {body}"
        );
        assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
    }

    #[tokio::test]
    async fn oauth_server_rotates_and_counts_reuse() {
        let server = OauthServer::start().await;
        let issuer = server.issuer().to_owned();
        assert_eq!(issuer, format!("http://127.0.0.1:{}", server.port()));
        assert_eq!(server.token_url(), format!("{issuer}/token"));
        assert_eq!(
            server.introspection_url(),
            format!("{issuer}/token/introspection")
        );
        assert_eq!(
            server.revocation_url(),
            format!("{issuer}/token/revocation")
        );
        assert_eq!(server.authorization_url(), format!("{issuer}/auth"));
        assert_eq!(server.stats().await, Stats::default());

        let scope = "openid offline_access api:read";
        let auths = [
            Auth::Basic(clients::BASIC_ID, clients::BASIC_SECRET),
            Auth::Post(clients::POST_ID, clients::POST_SECRET),
            Auth::PrivateKeyJwt(clients::JWT_ID),
        ];

        // Per client: mint, refresh, refresh again with the rotated token.
        // Kept: (auth, first refresh token (consumed), latest refresh token, latest access token).
        let mut chains = Vec::new();
        for auth in auths {
            let first = server.mint_refresh_token(auth.client_id(), scope).await;
            let (second, _) = refresh_ok(&server, auth, &first).await;
            let (third, access) = refresh_ok(&server, auth, &second).await;
            assert!(
                server.introspect_active(&access).await,
                "{auth:?}: refreshed access token inactive"
            );
            chains.push((auth, first, third, access));
        }
        let counters = server.stats().await;
        assert_eq!(counters.refresh_reuse, 0, "{counters:?}");
        assert_eq!(counters.refresh_ok, 6, "{counters:?}");
        assert_eq!(counters.refresh_failed, 0, "{counters:?}");
        assert_eq!(counters.grants_revoked, 0, "{counters:?}");
        assert_eq!(counters.token_requests, 6, "{counters:?}");

        // A second grant of the same client, to show that revocation stays within one grant.
        let bystander = server.mint(clients::BASIC_ID, clients::ALL_SCOPES).await;
        assert_eq!(bystander.scope, clients::ALL_SCOPES);
        assert_eq!(bystander.account_id, "test-account");
        assert_eq!(bystander.expires_in, 120, "default AT_TTL");
        assert!(!bystander.grant_id.is_empty());
        assert!(
            server.introspect_active(&bystander.access_token).await,
            "minted access token inactive"
        );

        // Reuse a consumed refresh token: rejected, counted, its grant revoked.
        let (auth, consumed, latest, access) = chains[0].clone();
        let (status, body) = refresh(&server, auth, &consumed).await;
        assert_invalid_grant(status, &body, "reused refresh token");
        let counters = server.stats().await;
        assert_eq!(counters.refresh_reuse, 1, "{counters:?}");
        assert_eq!(counters.grants_revoked, 1, "{counters:?}");
        let (status, body) = refresh(&server, auth, &latest).await;
        assert_invalid_grant(status, &body, "latest refresh token of the revoked grant");
        assert!(
            !server.introspect_active(&access).await,
            "access token of the revoked grant still active"
        );
        assert!(
            !server.introspect_active(&latest).await,
            "refresh token of the revoked grant still active"
        );
        let counters = server.stats().await;
        assert_eq!(
            counters.refresh_reuse, 1,
            "a revoked, never consumed refresh token is no reuse: {counters:?}"
        );
        assert_eq!(counters.refresh_failed, 2, "{counters:?}");

        // Other grants, of this client and of the others, are untouched.
        assert!(
            server.introspect_active(&bystander.access_token).await,
            "bystander grant revoked"
        );
        refresh_ok(&server, auth, &bystander.refresh_token).await;
        for (auth, _, latest, _) in &chains[1..] {
            refresh_ok(&server, *auth, latest).await;
        }

        // client_credentials: an access token, no refresh token, active at introspection.
        let cc = Auth::Basic(clients::CC_ID, clients::CC_SECRET);
        let (status, body) = token_request(
            &server,
            cc,
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "client_credentials failed: {body}");
        assert!(
            body.get("refresh_token").is_none(),
            "client_credentials issued a refresh token: {body}"
        );
        assert_eq!(body["scope"], "api:read", "{body}");
        let cc_token = body["access_token"]
            .as_str()
            .expect("client_credentials access_token");
        assert!(
            server.introspect_active(cc_token).await,
            "client_credentials token inactive"
        );
        assert!(
            !server.introspect_active("not-a-token").await,
            "unknown token reported active"
        );

        assert_eq!(
            server.stats().await,
            Stats {
                refresh_ok: 9,
                refresh_reuse: 1,
                refresh_repeated: 1,
                refresh_failed: 2,
                grants_revoked: 1,
                token_requests: 12,
                ..Stats::default()
            }
        );
        server.reset_stats().await;
        assert_eq!(server.stats().await, Stats::default());
        let log = server.stderr_log();
        assert!(
            !log.contains("server_error"),
            "the server hit internal errors:\n{log}"
        );
    }

    #[tokio::test]
    async fn oauth_server_honours_at_ttl() {
        let server = OauthServer::start_with_ttl(7).await;
        let minted = server.mint(clients::POST_ID, "api:write").await;
        assert_eq!(minted.expires_in, 7, "{minted:?}");
        let cc = Auth::Basic(clients::CC_ID, clients::CC_SECRET);
        let (status, body) =
            token_request(&server, cc, &[("grant_type", "client_credentials")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["expires_in"], 7, "{body}");
        let post = Auth::Post(clients::POST_ID, clients::POST_SECRET);
        let (status, body) = refresh(&server, post, &minted.refresh_token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["expires_in"], 7, "{body}");
        assert_eq!(body["scope"], "api:write", "{body}");
    }
}
