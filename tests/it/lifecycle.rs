//! `authorize` and `revoke` end to end: the real binary against the test OAuth server, with this
//! test playing the browser (oidc-provider's development login and consent pages, cookies carried
//! by hand), and a fake revocation endpoint for outages.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use sqlx::SqlitePool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr};

use crate::backends::{count, journal_text, stored_secrets};
use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{Home, Run, assert_no_secrets};
use crate::oauth_server::{OauthServer, clients};

/// Longest an `authorize` run may take in a test.
const DEADLINE: Duration = Duration::from_mins(1);

/// A home whose providers can authorize and revoke at `server`.
fn home(server: &OauthServer) -> Home {
    let home = Home::new(server, "");
    for provider in ["basic", "post", "jwt"] {
        home.append_to_provider(
            provider,
            &format!(
                "authorization_url = \"{}\"\nrevocation_url = \"{}\"",
                server.authorization_url(),
                server.revocation_url()
            ),
        );
    }
    home
}

/// A running `tokenwarden authorize`, its URL read from standard output.
struct Authorizing {
    child: Child,
    url: String,
    stderr: tokio::task::JoinHandle<String>,
}

impl Authorizing {
    async fn start(home: &Home, args: &[&str]) -> Self {
        Self::spawn(home.command(args)).await
    }

    async fn spawn(mut command: tokio::process::Command) -> Self {
        let mut child = command.spawn().expect("spawn tokenwarden");
        let stderr = drain(child.stderr.take().expect("stderr piped"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut url = String::new();
        tokio::time::timeout(DEADLINE, stdout.read_line(&mut url))
            .await
            .expect("authorize printed its URL in time")
            .expect("read stdout");
        let url = url.trim().to_owned();
        assert!(
            url.starts_with("http://"),
            "first line is not a URL: {url:?}"
        );
        child.stdout = Some(stdout.into_inner());
        Self { child, url, stderr }
    }

    /// A query parameter of the authorization URL.
    fn param(&self, name: &str) -> String {
        url::Url::parse(&self.url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == name)
            .map_or_else(
                || panic!("no {name} in {}", self.url),
                |(_, v)| v.into_owned(),
            )
    }

    /// Writes `line` to the process's standard input.
    async fn paste(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn finish(mut self) -> Run {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("authorize finished in time")
            .unwrap();
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).await.unwrap();
        }
        Run {
            code: status.code(),
            stdout: format!("{}\n{stdout}", self.url),
            stderr: self.stderr.await.unwrap(),
        }
    }
}

fn drain(mut stderr: ChildStderr) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    })
}

/// Plays the browser: follows redirects from `url` through oidc-provider's login (any account)
/// and consent pages, carrying cookies, until a redirect leaves the server. Returns that URL (the
/// callback with code and state), not yet visited.
async fn sign_in(server: &OauthServer, url: &str) -> String {
    walk(server, url, Some("alice@example.com")).await
}

/// As [`sign_in`], signing in as `login`; with `None`, pressing the login page's "[ Cancel ]"
/// instead (the callback then carries `error=access_denied`).
pub(crate) async fn walk(server: &OauthServer, url: &str, login: Option<&str>) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    let base = url::Url::parse(server.issuer()).unwrap();
    let mut next = http.get(url);
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
            .expect("browser request");
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || set.contains("expires=Thu, 01 Jan 1970") {
                cookies.remove(name);
            } else {
                cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status();
        if status.is_redirection() {
            let location = response.headers()["location"].to_str().unwrap();
            let location = base.join(location).unwrap().to_string();
            if !location.starts_with(server.issuer()) {
                return location;
            }
            next = http.get(location);
            continue;
        }
        let page = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "unexpected page: {page}");
        let Some(login) = login else {
            let cancel = page
                .split("<a href=\"")
                .skip(1)
                .find_map(|a| {
                    let (href, rest) = a.split_once('"')?;
                    rest.starts_with(">[ Cancel ]").then(|| href.to_owned())
                })
                .unwrap_or_else(|| panic!("no [ Cancel ] link on the page: {page}"));
            next = http.get(base.join(&cancel).unwrap());
            continue;
        };
        let (action, mut fields) = form(&page);
        if fields.iter().any(|(k, _)| k == "login") || page.contains("name=\"login\"") {
            fields.retain(|(k, _)| k != "login" && k != "password");
            fields.push(("login".to_owned(), login.to_owned()));
            fields.push(("password".to_owned(), "anything".to_owned()));
        }
        next = http.post(base.join(&action).unwrap()).form(&fields);
    }
    panic!("no redirect out of the authorization server after 20 steps");
}

/// The action and hidden fields of the first form on a page.
fn form(page: &str) -> (String, Vec<(String, String)>) {
    let attr = |tag: &str, name: &str| {
        let key = format!("{name}=\"");
        let start = tag.find(&key)? + key.len();
        Some(tag[start..].split('"').next()?.to_owned())
    };
    let form_tag = page
        .split("<form")
        .nth(1)
        .unwrap_or_else(|| panic!("no form on the page: {page}"));
    let action = attr(form_tag.split('>').next().unwrap(), "action").expect("form action");
    let fields = form_tag
        .split("<input")
        .skip(1)
        .filter_map(|tag| {
            let tag = tag.split('>').next()?;
            tag.contains("type=\"hidden\"")
                .then(|| Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default())))?
        })
        .collect();
    (action, fields)
}

/// Visits the callback as the browser would; returns the page's status.
async fn visit(url: &str) -> StatusCode {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .expect("callback answered")
        .status()
}

/// The stored tokens of `name`.
async fn tokens(db: &SqlitePool, name: &str) -> (Option<String>, Option<String>) {
    sqlx::query_as("SELECT access_token, refresh_token FROM oauth_credential WHERE name = ?1")
        .bind(name)
        .fetch_one(db)
        .await
        .unwrap()
}

/// A refresh_token grant as basic-client, straight to the server.
async fn refresh_status(server: &OauthServer, refresh_token: &str) -> (StatusCode, String) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(server.token_url())
        .basic_auth(clients::BASIC_ID, Some(clients::BASIC_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn authorize_in_a_browser_then_serve_refresh_and_revoke() {
    let server = OauthServer::start().await;
    let home = home(&server);
    let run = Authorizing::start(
        &home,
        &[
            "authorize",
            "web",
            "--provider",
            "basic",
            "--owner",
            "alice",
            "--scopes",
            "openid offline_access api:read",
        ],
    )
    .await;
    assert_eq!(run.param("code_challenge_method"), "S256");
    assert_eq!(run.param("client_id"), clients::BASIC_ID);
    assert!(
        run.param("redirect_uri").starts_with("http://127.0.0.1:")
            && run.param("redirect_uri").ends_with("/callback"),
        "{}",
        run.url
    );
    let callback = sign_in(&server, &run.url).await;
    assert!(callback.contains("code="), "{callback}");
    assert_eq!(visit(&callback).await, StatusCode::OK);
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(
        done.stdout.contains("credential web authorized"),
        "{done:?}"
    );

    let db = home.db().await;
    let (access, refresh) = tokens(&db, "web").await;
    let (access, refresh) = (
        access.expect("access token"),
        refresh.expect("refresh token"),
    );
    let row: (String, Option<String>, Option<String>, i64) = sqlx::query_as(
        "SELECT status, owner, scopes, refresh_due_at - access_token_expires_at FROM oauth_credential WHERE name = 'web'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(row.0, "active");
    assert_eq!(row.1.as_deref(), Some("alice"));
    assert_eq!(row.2.as_deref(), Some("openid offline_access api:read"));
    assert!(row.3 < 0, "due before expiry: {row:?}");

    let token = home.run(&["token", "web"], "").await;
    assert_eq!(token.code, Some(0), "{token:?}");
    assert_eq!(token.stdout.trim(), access);
    assert!(server.introspect_active(&access).await);

    // A sweep rotates the authorized tokens.
    sqlx::query("UPDATE oauth_credential SET refresh_due_at = 0")
        .execute(&db)
        .await
        .unwrap();
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(0), "{once:?}");
    let (new_access, new_refresh) = tokens(&db, "web").await;
    let (new_access, new_refresh) = (new_access.unwrap(), new_refresh.unwrap());
    assert_ne!(new_refresh, refresh, "refresh token not rotated");
    assert!(server.introspect_active(&new_access).await);
    assert_eq!(
        count(&db, "SELECT count(*) FROM token_rotation WHERE outcome = 'authorized' AND trigger = 'manual'").await,
        1
    );

    // Revocation: the provider forgets the grant, the row goes, the journal stays.
    let mut secrets = stored_secrets(&db).await;
    let revoke = home.run(&["revoke", "web"], "").await;
    assert_eq!(revoke.code, Some(0), "{revoke:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM oauth_credential").await, 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM token_rotation WHERE outcome = 'revoked'"
        )
        .await,
        1
    );
    let (status, body) = refresh_status(&server, &new_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("invalid_grant"), "{body}");
    assert!(!server.introspect_active(&new_access).await);
    assert!(!server.introspect_active(&new_refresh).await);

    secrets.extend([access, refresh]);
    for (what, text) in [
        ("authorize", done.all()),
        ("run --once", once.all()),
        ("revoke", revoke.all()),
    ] {
        assert_no_secrets(what, &text, &secrets);
    }
    assert_no_secrets("journal", &journal_text(&db).await, &secrets);
}

#[tokio::test]
async fn a_forged_redirect_is_refused_and_the_real_one_still_completes() {
    let server = OauthServer::start().await;
    let home = home(&server);
    let run = Authorizing::start(
        &home,
        &[
            "authorize",
            "forged",
            "--provider",
            "basic",
            "--scopes",
            "openid offline_access api:read",
        ],
    )
    .await;
    let redirect = run.param("redirect_uri");
    for _ in 0..3 {
        let status = visit(&format!("{redirect}?code=stolen-code&state=not-the-state")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        visit(&format!("{redirect}?code=x&state=forged")).await,
        StatusCode::BAD_REQUEST
    );
    // The flow is still waiting: the real redirect completes it.
    let callback = sign_in(&server, &run.url).await;
    let status = visit(&callback).await;
    let done = run.finish().await;
    assert_eq!(status, StatusCode::OK, "{done:?}");
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(
        done.stderr.matches("was refused").count(),
        1,
        "said once: {done:?}"
    );
    let db = home.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM oauth_credential").await, 1);
    assert_no_secrets("stderr", &done.all(), &stored_secrets(&db).await);
}

#[tokio::test]
async fn a_forged_redirect_alone_stores_nothing_and_the_flow_times_out() {
    let server = OauthServer::start().await;
    let home = home(&server);
    let run = Authorizing::start(
        &home,
        &[
            "authorize",
            "forged",
            "--provider",
            "post",
            "--timeout",
            "3s",
        ],
    )
    .await;
    let redirect = run.param("redirect_uri");
    let status = visit(&format!("{redirect}?code=x&state=forged")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let done = run.finish().await;
    assert_eq!(done.code, Some(1), "{done:?}");
    assert!(
        done.stderr.contains("no redirect arrived within 3s"),
        "{done:?}"
    );
    assert!(done.stderr.contains("was refused"), "{done:?}");
    assert_eq!(
        count(&home.db().await, "SELECT count(*) FROM oauth_credential").await,
        0
    );
}

#[tokio::test]
async fn the_callback_listener_survives_descriptor_exhaustion() {
    let server = OauthServer::start().await;
    let home = home(&server);
    // 48 descriptors, 200 idle connections: the unfixed listener ran out, its accept loop ended
    // and the flow panicked (exit 101).
    let run = Authorizing::spawn(home.command_with_nofile(
        48,
        &[
            "authorize",
            "crowded",
            "--provider",
            "basic",
            "--scopes",
            "openid offline_access api:read",
        ],
    ))
    .await;
    let redirect = url::Url::parse(&run.param("redirect_uri")).unwrap();
    let address = (
        redirect.host_str().unwrap().to_owned(),
        redirect.port().unwrap(),
    );
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(
            tokio::net::TcpStream::connect((address.0.as_str(), address.1))
                .await
                .expect("connect"),
        );
    }
    drop(idle);
    let callback = sign_in(&server, &run.url).await;
    let status = visit(&callback).await;
    let done = run.finish().await;
    assert_eq!(status, StatusCode::OK, "{done:?}");
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(!done.stderr.contains("internal error"), "{done:?}");
    assert_eq!(
        count(&home.db().await, "SELECT count(*) FROM oauth_credential").await,
        1
    );
}

#[tokio::test]
async fn a_denied_authorization_is_reported() {
    let server = OauthServer::start().await;
    let home = home(&server);
    let run = Authorizing::start(&home, &["authorize", "denied", "--provider", "post"]).await;
    let url = format!(
        "{}?error=access_denied&error_description=End-User+aborted&state={}",
        run.param("redirect_uri"),
        run.param("state")
    );
    assert_eq!(visit(&url).await, StatusCode::BAD_REQUEST);
    let done = run.finish().await;
    assert_eq!(done.code, Some(1), "{done:?}");
    assert!(done.stderr.contains("access_denied"), "{done:?}");
    assert_eq!(
        count(&home.db().await, "SELECT count(*) FROM oauth_credential").await,
        0
    );
}

#[tokio::test]
async fn manual_authorization_reads_the_pasted_redirect() {
    let server = OauthServer::start().await;
    let home = home(&server);
    let mut run = Authorizing::start(
        &home,
        &[
            "authorize",
            "headless",
            "--provider",
            "jwt",
            "--manual",
            "--scopes",
            "openid offline_access api:write",
        ],
    )
    .await;
    let callback = sign_in(&server, &run.url).await;
    // A pasted URL with a wrong state would be refused; this one is right.
    run.paste(&callback).await;
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(done.stderr.contains("paste"), "{done:?}");
    let db = home.db().await;
    let (access, refresh) = tokens(&db, "headless").await;
    assert!(server.introspect_active(&access.unwrap()).await);
    assert!(refresh.is_some());
}

#[tokio::test]
async fn authorizing_again_revives_a_credential_that_needs_it() {
    let server = OauthServer::start().await;
    let home = home(&server);
    home.add("crm", "post", "rt-long-gone-0000").await;
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(1), "{once:?}");
    let db = home.db().await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM oauth_credential WHERE status = 'needs_reauthorization'"
        )
        .await,
        1
    );

    let run = Authorizing::start(
        &home,
        &[
            "authorize",
            "crm",
            "--provider",
            "post",
            "--scopes",
            "openid offline_access",
        ],
    )
    .await;
    let callback = sign_in(&server, &run.url).await;
    let page = visit(&callback).await;
    let done = run.finish().await;
    assert_eq!(page, StatusCode::OK, "{done:?}");
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(
        done.stdout
            .contains("authorized again (was needs_reauthorization)"),
        "{done:?}"
    );
    let row: (String, i64, Option<String>) = sqlx::query_as(
        "SELECT status, consecutive_failures, last_error FROM oauth_credential WHERE name = 'crm'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(row, ("active".to_owned(), 0, None));
    let token = home.run(&["token", "crm"], "").await;
    assert_eq!(token.code, Some(0), "{token:?}");
    assert!(server.introspect_active(token.stdout.trim()).await);
}

#[tokio::test]
async fn a_revocation_the_provider_cannot_take_stays_pending() {
    let server = OauthServer::start().await;
    let down = FakeEndpoint::start(
        Reply::json(503, r#"{"error":"temporarily_unavailable"}"#).with_header("Retry-After", "30"),
    )
    .await;
    let home = Home::new(&server, "");
    home.append_to_provider(
        "basic",
        &format!("revocation_url = \"{}\"", down.token_url()),
    );
    let minted = server
        .mint(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("files", "basic", &minted.refresh_token).await;

    let revoke = home.run(&["revoke", "files"], "").await;
    assert_eq!(revoke.code, Some(1), "{revoke:?}");
    assert!(revoke.stderr.contains("not revoked yet"), "{revoke:?}");
    assert_eq!(down.requests(), 1);
    let db = home.db().await;
    let row: (String, i64, Option<String>, i64) = sqlx::query_as(
        "SELECT status, revoke_pending, last_error, next_attempt_at - CAST(strftime('%s','now') AS INTEGER) \
         FROM oauth_credential WHERE name = 'files'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(row.0, "disabled");
    assert_eq!(row.1, 1);
    assert!(
        row.2
            .as_deref()
            .unwrap()
            .starts_with("revocation pending: "),
        "{row:?}"
    );
    assert!(row.3 >= 25, "Retry-After honoured: {row:?}");
    let token = home.run(&["token", "files"], "").await;
    assert_eq!(token.code, Some(4), "{token:?}");
    // The sweep leaves it alone.
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(0), "{once:?}");
    assert_eq!(down.requests(), 1);

    // The provider is back: the sweep's retry revokes and deletes it.
    let text = std::fs::read_to_string(&home.config).unwrap();
    std::fs::write(
        &home.config,
        text.replace(&down.token_url(), server.revocation_url()),
    )
    .unwrap();
    sqlx::query("UPDATE oauth_credential SET next_attempt_at = 0")
        .execute(&db)
        .await
        .unwrap();
    let retried = home.run(&["run", "--once"], "").await;
    assert_eq!(retried.code, Some(0), "{retried:?}");
    assert!(
        retried
            .stderr
            .contains("pending revocation done; credential deleted"),
        "{retried:?}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM oauth_credential").await, 0);
    let (status, body) = refresh_status(&server, &minted.refresh_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(!server.introspect_active(&minted.access_token).await);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM token_rotation WHERE outcome IN ('revocation_pending', 'revoked')"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn revoke_needs_a_revocation_url() {
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    home.add("plain", "basic", "rt-some-token-0000").await;
    let revoke = home.run(&["revoke", "plain"], "").await;
    assert_eq!(revoke.code, Some(2), "{revoke:?}");
    assert!(revoke.stderr.contains("no revocation_url"), "{revoke:?}");
    assert_eq!(
        count(&home.db().await, "SELECT count(*) FROM oauth_credential").await,
        1
    );
    let missing = home.run(&["revoke", "nobody"], "").await;
    assert_eq!(missing.code, Some(4), "{missing:?}");
}

#[tokio::test]
async fn a_configured_loopback_redirect_uri_is_listened_on() {
    let server = OauthServer::start().await;
    let home = home(&server);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fixed = format!("http://127.0.0.1:{port}/callback");
    home.append_to_provider("post", &format!("redirect_uri = \"{fixed}\""));
    let run = Authorizing::start(
        &home,
        &[
            "authorize",
            "fixed",
            "--provider",
            "post",
            "--scopes",
            "openid offline_access api:read",
        ],
    )
    .await;
    assert_eq!(run.param("redirect_uri"), fixed);
    let callback = sign_in(&server, &run.url).await;
    assert!(callback.starts_with(&fixed), "{callback}");
    assert_eq!(visit(&callback).await, StatusCode::OK);
    let done = run.finish().await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let (access, refresh) = tokens(&home.db().await, "fixed").await;
    assert!(access.is_some() && refresh.is_some());
}
