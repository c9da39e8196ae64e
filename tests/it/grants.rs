//! Grants beyond the refresh token, end to end against the test server: `authorize --device`
//! (RFC 8628, the user's approval driven over oidc-provider's real device pages) and the
//! jwt-bearer grant (RFC 7523 §2.1, the server verifying each assertion).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::harness::{Home, Run, assert_no_secrets, count, journal_text, stored_secrets};
use crate::oauth_server::{OauthServer, ServerOptions, clients};

const SCOPE: &str = "openid offline_access api:read";
/// Longest an `authorize --device` run may take in a test.
const DEADLINE: Duration = Duration::from_mins(1);

/// A home with providers `device` (device-client, client_secret_basic) and `public`
/// (device-public, client_auth = "none"), both finding their endpoints from the issuer.
fn device_home(server: &OauthServer) -> Home {
    let home = Home::new(server, "");
    let secret = home.path().join("device-secret");
    std::fs::write(&secret, clients::DEVICE_SECRET).unwrap();
    home.append_config(&format!(
        r#"
[providers.device]
issuer = "{issuer}"
client_id = "{device}"
client_secret_file = "{secret}"
scopes = "{SCOPE}"

[providers.public]
issuer = "{issuer}"
client_id = "{public}"
client_auth = "none"
scopes = "{SCOPE}"
"#,
        issuer = server.issuer(),
        device = clients::DEVICE_ID,
        public = clients::DEVICE_PUBLIC_ID,
        secret = secret.display(),
    ));
    home
}

/// A running `authorize --device`: the URL from its first line of standard output.
struct Device {
    child: tokio::process::Child,
    url: String,
    stderr: tokio::task::JoinHandle<String>,
}

impl Device {
    async fn start(home: &Home, args: &[&str]) -> Self {
        let mut child = home.command(args).spawn().expect("spawn tokenwarden");
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut url = String::new();
        tokio::time::timeout(DEADLINE, stdout.read_line(&mut url))
            .await
            .expect("a URL in time")
            .unwrap();
        child.stdout = Some(stdout.into_inner());
        Self {
            child,
            url: url.trim().to_owned(),
            stderr,
        }
    }

    /// The user code the URL carries.
    fn user_code(&self) -> String {
        url::Url::parse(&self.url)
            .unwrap_or_else(|e| panic!("not a URL ({e}): {:?}", self.url))
            .query_pairs()
            .find(|(k, _)| k == "user_code")
            .map_or_else(
                || panic!("no user_code in {}", self.url),
                |(_, v)| v.into_owned(),
            )
    }

    async fn finish(mut self) -> Run {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("authorize --device finished in time")
            .unwrap();
        let mut rest = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut rest).await.unwrap();
        }
        Run {
            code: status.code(),
            stdout: format!("{}\n{rest}", self.url),
            stderr: self.stderr.await.unwrap(),
        }
    }
}

fn fast_device_server() -> ServerOptions {
    ServerOptions {
        device_interval_secs: 1,
        ..ServerOptions::default()
    }
}

#[tokio::test]
async fn authorize_device_stores_the_tokens_and_the_sweep_keeps_them() {
    let server = OauthServer::start_with(fast_device_server()).await;
    let home = device_home(&server);
    for (name, provider) in [("tv", "device"), ("kiosk", "public")] {
        let run = Device::start(
            &home,
            &[
                "authorize",
                name,
                "--provider",
                provider,
                "--device",
                "--owner",
                "bob",
            ],
        )
        .await;
        assert!(
            run.url.starts_with(&format!("{}/device", server.issuer())),
            "{}",
            run.url
        );
        let user_code = run.user_code();
        server.approve_device(&user_code).await;
        let done = run.finish().await;
        assert_eq!(done.code, Some(0), "{done:?}");
        assert!(
            done.stderr.contains(&user_code) && done.stderr.contains("/device"),
            "where to enter which code: {done:?}"
        );
        assert!(
            done.stdout
                .contains(&format!("credential {name} authorized")),
            "{done:?}"
        );
    }
    let db = home.db().await;
    let rows: Vec<(String, Option<String>, String, Option<String>)> = sqlx::query_as(
        "SELECT name, owner, grant_type, refresh_token FROM oauth_credential ORDER BY name",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for (name, owner, grant, refresh) in &rows {
        assert_eq!(owner.as_deref(), Some("bob"), "{name}");
        assert_eq!(grant, "refresh_token", "{name}");
        assert!(refresh.is_some(), "{name} has a refresh token");
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM token_rotation WHERE outcome = 'authorized'"
        )
        .await,
        2
    );
    let before = stored_secrets(&db).await;

    // The sweep rotates both, the public client with its client_id alone.
    sqlx::query("UPDATE oauth_credential SET refresh_due_at = 0")
        .execute(&db)
        .await
        .unwrap();
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(0), "{once:?}");
    let stats = server.stats().await;
    assert_eq!((stats.refresh_ok, stats.refresh_reuse), (2, 0), "{stats:?}");
    let token = home
        .run(&["token", "--provider", "public", "--owner", "bob"], "")
        .await;
    assert_eq!(token.code, Some(0), "{token:?}");
    assert!(server.introspect_active(token.stdout.trim()).await);

    // bob has a device credential already: a second one is refused before any code is shown.
    let again = home
        .run(
            &[
                "authorize",
                "tv-2",
                "--provider",
                "device",
                "--device",
                "--owner",
                "bob",
            ],
            "",
        )
        .await;
    assert_eq!(again.code, Some(2), "{again:?}");
    assert_eq!(again.stdout, "", "{again:?}");

    let mut secrets = stored_secrets(&db).await;
    secrets.extend(before);
    secrets.push(clients::DEVICE_SECRET.to_owned());
    assert_no_secrets("run --once", &once.all(), &secrets);
    assert_no_secrets("journal", &journal_text(&db).await, &secrets);
}

#[tokio::test]
async fn a_denied_or_expired_device_code_stores_nothing() {
    let server = OauthServer::start_with(ServerOptions {
        device_code_ttl_secs: 3,
        ..fast_device_server()
    })
    .await;
    let home = device_home(&server);

    let denied = Device::start(
        &home,
        &["authorize", "tv", "--provider", "device", "--device"],
    )
    .await;
    server.deny_device(&denied.user_code()).await;
    let denied = denied.finish().await;
    assert_eq!(denied.code, Some(1), "{denied:?}");
    assert!(
        denied.stderr.contains("denied") && denied.stderr.contains("nothing was stored"),
        "{denied:?}"
    );

    let expired = Device::start(
        &home,
        &["authorize", "tv", "--provider", "device", "--device"],
    )
    .await;
    let expired = expired.finish().await;
    assert_eq!(expired.code, Some(1), "{expired:?}");
    assert!(expired.stderr.contains("expired"), "{expired:?}");

    // --timeout shorter than the code's life.
    let waited = Device::start(
        &home,
        &[
            "authorize",
            "tv",
            "--provider",
            "device",
            "--device",
            "--timeout",
            "1s",
        ],
    )
    .await;
    let waited = waited.finish().await;
    assert_eq!(waited.code, Some(1), "{waited:?}");
    assert!(
        waited.stderr.contains("not approved within 1s"),
        "{waited:?}"
    );

    let db = home.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM oauth_credential").await, 0);
    for run in [&denied, &expired, &waited] {
        assert_no_secrets("device", &run.all(), &[clients::DEVICE_SECRET.to_owned()]);
    }

    // A provider without a device endpoint: one line, exit 2, before anything is sent.
    let no_endpoint = home
        .run(&["authorize", "x", "--provider", "basic", "--device"], "")
        .await;
    assert_eq!(no_endpoint.code, Some(2), "{no_endpoint:?}");
    assert!(
        no_endpoint.stderr.contains("no device_authorization_url"),
        "{no_endpoint:?}"
    );
}
