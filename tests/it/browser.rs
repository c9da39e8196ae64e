//! The whole invitation flow in a real browser: headless Chromium (Debian's `chromium`) driven
//! through WebDriver (`chromedriver`, with the `fantoccini` crate) from the link `invite` printed,
//! through the oidc-provider peer's real login and consent pages, to the result page; then the
//! daemon's next sweep refreshes the stored credential. Screenshots of the pages are kept in
//! `CARGO_TARGET_TMPDIR` (target/tmp/) so that a failing run can be looked at. Every process the
//! test starts, it stops: chromedriver (which stops its Chromium with the session), the daemon,
//! the OAuth server.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::backends::count;
use crate::enroll_pages::Enrolling;
use crate::harness::eventually;
use crate::oauth_server::OauthServer;

/// Longest any one page may take to appear.
const PAGE_WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = free_port();
        let child = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (scripts/test.sh installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let http = crate::enroll_pages::browser();
        eventually(Duration::from_secs(30), "chromedriver", || async {
            http.get(&status).send().await.is_ok()
        })
        .await;
        Self { child, url }
    }

    /// A headless Chromium session with a fresh profile in `profile`, and no traffic of its own
    /// (the machine's closed network would otherwise see it retried).
    async fn session(&self, profile: &std::path::Path) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--disable-crash-reporter",
            "--disable-breakpad",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Saves a screenshot of the current page as `name` under target/tmp/; returns its path.
async fn screenshot(browser: &Client, name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("enroll-{}-{name}.png", std::process::id()));
    if let Ok(png) = browser.screenshot().await {
        let _ = std::fs::write(&path, png);
    }
    path
}

/// The flow from the link to the result page; the result page's text.
async fn authorize_in_the_browser(browser: &Client, link: &str) -> Result<String, String> {
    let step = |what: &'static str| move |e: fantoccini::error::CmdError| format!("{what}: {e}");
    browser.goto(link).await.map_err(step("open the link"))?;
    let page = browser.source().await.map_err(step("read the page"))?;
    if !page.contains("alice@example.com") {
        return Err(format!("the link's page does not name the owner: {page}"));
    }
    browser
        .find(Locator::Css("form button[type=submit]"))
        .await
        .map_err(step("the button"))?
        .click()
        .await
        .map_err(step("press the button"))?;
    // oidc-provider's development login page, the login prefilled from login_hint (kept as it
    // is, as an owner would): any password.
    let login = browser
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css("input[name=login]"))
        .await
        .map_err(step("the provider's login page"))?;
    let hinted = login.prop("value").await.map_err(step("read the login"))?;
    if hinted.as_deref() != Some("alice@example.com") {
        return Err(format!(
            "the login is not prefilled from login_hint: {hinted:?}"
        ));
    }
    browser
        .find(Locator::Css("input[name=password]"))
        .await
        .map_err(step("the password field"))?
        .send_keys("anything")
        .await
        .map_err(step("type the password"))?;
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .map_err(step("the sign-in button"))?
        .click()
        .await
        .map_err(step("sign in"))?;
    // The consent page (oidc-provider's heading says "Authorize"), then back to tokenwarden.
    let deadline = std::time::Instant::now() + PAGE_WAIT;
    loop {
        let heading = match browser.find(Locator::Css("h1")).await {
            Ok(h1) => h1.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if heading == "Authorize" {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err("the provider's consent page did not appear".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consent = browser
        .find(Locator::Css("form button[type=submit]"))
        .await
        .map_err(step("the provider's consent button"))?;
    consent.click().await.map_err(step("consent"))?;
    let result = browser
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Id("authorized"))
        .await
        .map_err(step("tokenwarden's result page"))?;
    let _ = result;
    browser.source().await.map_err(step("read the result page"))
}

#[tokio::test]
async fn an_owner_authorizes_in_a_real_browser_and_the_next_sweep_refreshes() {
    let server = OauthServer::start().await;
    // A sweep every second: the one after the authorization refreshes it (the peer's access
    // tokens live 120 s, inside the 10-minute margin).
    let mut e = Enrolling::start(&server, "schedule = \"* * * * * *\"").await;
    let link = e.invite("sharepoint", "alice@example.com", &[]).await;
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(profile.path()).await;
    let outcome = authorize_in_the_browser(&browser, &link).await;
    let shot = screenshot(&browser, if outcome.is_ok() { "result" } else { "failure" }).await;
    let _ = browser.close().await;
    driver.stop().await;
    let page = outcome.unwrap_or_else(|e| panic!("{e} (screenshot: {})", shot.display()));
    assert!(
        page.contains("Credential sharepoint is authorized"),
        "{page}"
    );
    assert!(
        page.contains("<dd>alice@example.com</dd>"),
        "signed in as the owner: {page}"
    );
    assert!(
        shot.is_file(),
        "a screenshot of the result page at {}",
        shot.display()
    );

    let db = e.home.db().await;
    eventually(Duration::from_mins(1), "the next sweep's refresh", || {
        let db = db.clone();
        async move {
            count(
                &db,
                "SELECT count(*) FROM token_rotation WHERE credential_name = 'sharepoint' \
                 AND trigger = 'schedule' AND outcome = 'refreshed'",
            )
            .await
                > 0
        }
    })
    .await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM token_rotation WHERE trigger = 'invite' AND outcome = 'authorized'"
        )
        .await,
        1
    );
    e.stop().await;
    assert_eq!(server.stats().await.refresh_reuse, 0);
}
