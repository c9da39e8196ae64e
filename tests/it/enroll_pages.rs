//! The invitation pages over plain HTTP, served by the real `tokenwarden run` on `[enroll]
//! listen`, against the oidc-provider peer's real login and consent pages (this test playing the
//! browser, cookies carried by hand): a preview that spends nothing, the button, the callback
//! that stores; spent, expired, withdrawn and unknown links; a forged and a replayed callback; a
//! denied consent; another account; a link used twice at once; HTML injection in every field that
//! reaches a page; the security headers. Nothing secret in a page or the log.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::process::Child;

use crate::backends::{count, stored_secrets};
use crate::harness::{Home, assert_no_secrets, eventually, stop};
use crate::lifecycle::walk;
use crate::oauth_server::OauthServer;

/// A daemon serving the pages at `base` (`public_url`, its listener on the same port).
pub struct Enrolling {
    pub home: Home,
    pub daemon: Option<Child>,
    pub base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A browser that follows no redirect by itself.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

impl Enrolling {
    /// A home whose provider `basic` can authorize at `server`, `[enroll]` on a free port with
    /// `public_url` `http://127.0.0.1:PORT/enroll`, and `tokenwarden run` serving it.
    pub async fn start(server: &OauthServer, extra: &str) -> Self {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}/enroll");
        let home = Home::new(
            server,
            &format!("{extra}\n[enroll]\npublic_url = \"{base}\"\nlisten = \"127.0.0.1:{port}\"\n"),
        );
        home.append_to_provider(
            "basic",
            &format!(
                "authorization_url = \"{}\"\nscopes = \"openid offline_access api:read\"",
                server.authorization_url()
            ),
        );
        let daemon = home.command(&["run"]).spawn().expect("start the daemon");
        let http = browser();
        let probe = format!("{base}/");
        eventually(Duration::from_secs(30), "the pages' listener", || async {
            http.get(&probe).send().await.is_ok()
        })
        .await;
        Self {
            home,
            daemon: Some(daemon),
            base,
        }
    }

    /// `invite NAME --provider basic --owner OWNER [more]`: the printed link.
    pub async fn invite(&self, name: &str, owner: &str, more: &[&str]) -> String {
        let mut args = vec!["invite", name, "--provider", "basic", "--owner", owner];
        args.extend_from_slice(more);
        let run = self.home.run(&args, "").await;
        assert_eq!(run.code, Some(0), "{run:?}");
        let link = run.stdout.trim().to_owned();
        assert!(link.starts_with(&format!("{}/i/", self.base)), "{link}");
        link
    }

    /// Stops the daemon; its log (standard error).
    pub async fn stop(&mut self) -> String {
        let out = stop(self.daemon.take().expect("running")).await;
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// The button: POST to the link; the provider's URL it redirects to.
pub async fn press(link: &str) -> String {
    let response = browser().post(link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    response.headers()["location"].to_str().unwrap().to_owned()
}

async fn get(url: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = browser().get(url).send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn assert_strict_headers(headers: &reqwest::header::HeaderMap) {
    let h = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let csp = h("content-security-policy");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("base-uri 'none'"), "{csp}");
    assert!(
        !csp.contains("script-src") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("content-type"), "text/html; charset=utf-8");
}

/// A page holds no script and no external resource.
fn assert_plain(page: &str) {
    let lower = page.to_ascii_lowercase();
    for bad in [
        "<script",
        "<img",
        "<iframe",
        "<link",
        "<a ",
        "javascript:",
        "http://",
        "https://",
    ] {
        assert!(!lower.contains(bad), "{bad} on a page: {page}");
    }
}

#[tokio::test]
async fn an_owner_authorizes_through_the_link_and_it_works_once() {
    let server = OauthServer::start().await;
    let mut e = Enrolling::start(&server, "").await;
    let link = e.invite("mailbox", "alice@example.com", &[]).await;
    let secret = link.rsplit('/').next().unwrap().to_owned();
    let db = e.home.db().await;

    // Looking, twice, and a preview bot's HEAD: the link is not spent.
    for _ in 0..2 {
        let (status, headers, page) = get(&link).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_strict_headers(&headers);
        assert_plain(&page);
        for shown in [
            "basic",
            "alice@example.com",
            "openid offline_access api:read",
            "mailbox",
            "<form method=\"post\"",
        ] {
            assert!(page.contains(shown), "{shown} not on the page: {page}");
        }
    }
    let head = browser().head(&link).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM enroll_invite WHERE spent_at IS NOT NULL"
        )
        .await,
        0
    );

    // The button: to the provider with state, PKCE S256, the fixed redirect URI and the hint.
    let to_provider = press(&link).await;
    let url = url::Url::parse(&to_provider).unwrap();
    assert!(
        to_provider.starts_with(server.authorization_url()),
        "{to_provider}"
    );
    let param = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert!(param("state").is_some_and(|s| s.len() >= 22));
    assert_eq!(param("redirect_uri"), Some(format!("{}/callback", e.base)));
    assert_eq!(param("login_hint").as_deref(), Some("alice@example.com"));
    assert_eq!(param("client_id").as_deref(), Some("basic-client"));

    let callback = walk(&server, &to_provider, Some("alice@example.com")).await;
    assert!(
        callback.starts_with(&format!("{}/callback?", e.base)),
        "{callback}"
    );
    let (status, headers, page) = get(&callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_strict_headers(&headers);
    assert_plain(&page);
    assert!(page.contains("id=\"authorized\""), "{page}");
    assert!(page.contains("Signed in as"), "{page}");

    let (owner, trigger, invite_id, spent): (String, String, i64, i64) = sqlx::query_as(
        "SELECT c.owner, r.trigger, r.invite_id, i.spent_at FROM oauth_credential c \
         JOIN token_rotation r ON r.credential_id = c.id JOIN enroll_invite i ON i.id = r.invite_id \
         WHERE c.name = 'mailbox' AND r.outcome = 'authorized'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (owner.as_str(), trigger.as_str()),
        ("alice@example.com", "invite")
    );
    assert!(invite_id > 0 && spent > 0);

    // The same callback again (a replay), the link again, the button again: nothing more.
    let (status, _, page) = get(&callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("Nothing was stored"), "{page}");
    let (status, _, page) = get(&link).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("already used"), "{page}");
    let again = browser().post(&link).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::GONE);
    assert_eq!(count(&db, "SELECT count(*) FROM token_rotation").await, 1);

    // What the owner authorized refreshes.
    let log = e.stop().await;
    let refreshed = e.home.run(&["refresh", "mailbox"], "").await;
    assert_eq!(refreshed.code, Some(0), "{refreshed:?}");
    // No token, client secret or link secret in the log, the pages or the journal.
    let mut secrets = stored_secrets(&db).await;
    secrets.push(secret.clone());
    assert_no_secrets("the daemon's log", &log, &secrets);
    assert_no_secrets("the result page", &page, &secrets);
    let journal = crate::backends::journal_text(&db).await;
    assert_no_secrets("the journal", &journal, &secrets);
    assert!(
        log.contains("credential authorized through an invitation link"),
        "{log}"
    );
}

#[tokio::test]
async fn refused_forged_denied_and_stale_sign_ins_store_nothing() {
    let server = OauthServer::start().await;
    let mut e = Enrolling::start(&server, "").await;
    let db = e.home.db().await;
    let link = e.invite("crm", "alice@example.com", &[]).await;

    // A forged callback: no sign-in of this process has that state.
    let (status, headers, page) =
        get(&format!("{}/callback?code=stolen&state=forged", e.base)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert_strict_headers(&headers);
    assert!(page.contains("Nothing was stored"), "{page}");

    // Consent denied at the provider ([ Cancel ] on its login page).
    let callback = walk(&server, &press(&link).await, None).await;
    assert!(callback.contains("error=access_denied"), "{callback}");
    let (status, _, page) = get(&callback).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(
        page.contains("access_denied") && page.contains("Nothing was stored"),
        "{page}"
    );

    // Another account than the link's owner.
    let callback = walk(&server, &press(&link).await, Some("mallory@example.com")).await;
    let (status, _, page) = get(&callback).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(
        page.contains("mallory@example.com") && page.contains("alice@example.com"),
        "{page}"
    );

    assert_eq!(count(&db, "SELECT count(*) FROM oauth_credential").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM token_rotation").await, 0);
    // The link still works after all that.
    assert_eq!(get(&link).await.0, StatusCode::OK);

    // Expired, withdrawn, unknown, malformed; wrong methods.
    let expired = e.invite("old", "bob", &[]).await;
    sqlx::query("UPDATE enroll_invite SET expires_at = created_at - 1 WHERE name = 'old'")
        .execute(&db)
        .await
        .unwrap();
    let (status, _, page) = get(&expired).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("expired"), "{page}");
    assert_eq!(
        browser().post(&expired).send().await.unwrap().status(),
        StatusCode::GONE
    );
    let withdrawn = e.invite("gone", "bob", &[]).await;
    let list = e.home.run(&["invite", "--list", "--json"], "").await;
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "gone")
        .unwrap()["id"]
        .to_string();
    assert_eq!(
        e.home.run(&["invite", "--revoke", &id], "").await.code,
        Some(0)
    );
    let (status, _, page) = get(&withdrawn).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("withdrew"), "{page}");
    let unknown = format!("{}/i/{}", e.base, "A".repeat(43));
    assert_eq!(get(&unknown).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&format!("{}/i/..%2F..%2Fetc", e.base)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&format!("{}/", e.base)).await.0, StatusCode::NOT_FOUND);
    let put = browser().put(&link).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    let post_callback = browser()
        .post(format!("{}/callback", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(post_callback.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(count(&db, "SELECT count(*) FROM oauth_credential").await, 0);
    e.stop().await;
}

#[tokio::test]
async fn a_link_used_twice_at_once_stores_once() {
    let server = OauthServer::start().await;
    let mut e = Enrolling::start(&server, "").await;
    let db = e.home.db().await;
    let link = e.invite("twice", "alice@example.com", &[]).await;
    // Two browsers press the button and sign in; both come back with a code.
    let first = walk(&server, &press(&link).await, Some("alice@example.com")).await;
    let second = walk(&server, &press(&link).await, Some("alice@example.com")).await;
    let (a, b) = tokio::join!(get(&first), get(&second));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::GONE], "{a:?} {b:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM oauth_credential").await, 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM token_rotation WHERE trigger = 'invite'"
        )
        .await,
        1
    );
    e.stop().await;
}

#[tokio::test]
async fn everything_from_outside_is_escaped_on_the_pages() {
    let server = OauthServer::start().await;
    let mut e = Enrolling::start(&server, "").await;
    let db = e.home.db().await;
    let hostile = "<script>alert(1)</script><img/src=x/onerror=alert(2)>'&";
    // Scopes as the CLI lets them through; name and owner as a hostile database row holds them.
    let link = e
        .invite(
            "victim",
            "alice@example.com",
            &["--scopes", "openid <script>alert(1)</script> <img/src=x>"],
        )
        .await;
    sqlx::query("UPDATE enroll_invite SET owner = ?1 WHERE name = 'victim'")
        .bind(hostile)
        .execute(&db)
        .await
        .unwrap();
    let (status, _, page) = get(&link).await;
    assert_eq!(status, StatusCode::OK);
    assert_plain(&page);
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("&#39;&amp;"), "{page}");

    // The provider's error text in a callback of a real sign-in.
    sqlx::query("UPDATE enroll_invite SET owner = 'alice@example.com' WHERE name = 'victim'")
        .execute(&db)
        .await
        .unwrap();
    let to_provider = press(&link).await;
    let state = url::Url::parse(&to_provider)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let callback = format!(
        "{}/callback?state={state}&error=%3Cscript%3Ex%3C%2Fscript%3E&error_description=%3Cimg%20src%3Dx%20onerror%3Dalert(3)%3E",
        e.base
    );
    let (status, _, page) = get(&callback).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_plain(&page);
    assert!(
        page.contains("&lt;img src=x onerror=alert(3)&gt;"),
        "{page}"
    );
    // A path that is not a link is not echoed at all.
    let (_, _, page) = get(&format!("{}/%3Cscript%3E", e.base)).await;
    assert_plain(&page);
    e.stop().await;
}
