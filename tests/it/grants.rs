//! Grants beyond the refresh token, end to end against the test server: `authorize --device`
//! (RFC 8628, the user's approval driven over oidc-provider's real device pages) and the
//! jwt-bearer grant (RFC 7523 §2.1, the server verifying each assertion). Each test on a real
//! SQLite file and on a real PostgreSQL server (`on_both_backends!`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::backends::{Backend, BackendHome, on_both_backends};
use crate::harness::{Home, Run, assert_no_secrets};
use crate::oauth_server::{OauthServer, ServerOptions, clients};

const SCOPE: &str = "openid offline_access api:read";
/// Longest an `authorize --device` run may take in a test.
const DEADLINE: Duration = Duration::from_mins(1);

/// A home with providers `device` (device-client, client_secret_basic) and `public`
/// (device-public, client_auth = "none"), both finding their endpoints from the issuer.
async fn device_home(server: &OauthServer, backend: Backend) -> BackendHome {
    let home = BackendHome::new(server, backend, "").await;
    // Named for the client, not the secret: the path may appear in messages.
    let secret = home.path().join("device-client.secret");
    crate::harness::write_secret(&secret, clients::DEVICE_SECRET);
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

async fn authorize_device_stores_the_tokens_and_the_sweep_keeps_them(backend: Backend) {
    let server = OauthServer::start_with(fast_device_server()).await;
    let home = device_home(&server, backend).await;
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
    let rows: Vec<(String, Option<String>, String, Option<String>)> = db
        .fetch_all(
            "SELECT name, owner, grant_type, refresh_token FROM oauth_credential ORDER BY name",
            &[],
        )
        .await;
    assert_eq!(rows.len(), 2);
    for (name, owner, grant, refresh) in &rows {
        assert_eq!(owner.as_deref(), Some("bob"), "{name}");
        assert_eq!(grant, "refresh_token", "{name}");
        assert!(refresh.is_some(), "{name} has a refresh token");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'authorized'")
            .await,
        2
    );
    let before = db.stored_secrets().await;

    // The sweep rotates both, the public client with its client_id alone.
    db.execute("UPDATE oauth_credential SET refresh_due_at = 0", &[])
        .await;
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

    let mut secrets = db.stored_secrets().await;
    secrets.extend(before);
    secrets.push(clients::DEVICE_SECRET.to_owned());
    assert_no_secrets("run --once", &once.all(), &secrets);
    assert_no_secrets("journal", &db.journal_text().await, &secrets);
}
on_both_backends!(authorize_device_stores_the_tokens_and_the_sweep_keeps_them);

async fn a_denied_or_expired_device_code_stores_nothing(backend: Backend) {
    let server = OauthServer::start_with(ServerOptions {
        device_code_ttl_secs: 3,
        ..fast_device_server()
    })
    .await;
    let home = device_home(&server, backend).await;

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
    assert_eq!(db.count("SELECT count(*) FROM oauth_credential").await, 0);
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
on_both_backends!(a_denied_or_expired_device_code_stores_nothing);

/// A home whose jwt-bearer providers sign with the test key (a copy in `rotating`'s case, so the
/// test can take it away): `bearer` (assertion only), `bearer-basic` (client_secret_basic too),
/// `wrong-aud` (an audience the server refuses), `bad-key` (a kid the server does not know).
async fn bearer_home(server: &OauthServer, backend: Backend) -> BackendHome {
    let home = BackendHome::new(server, backend, "").await;
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt-client.key.pem");
    let copy = home.path().join("rotating.pem");
    std::fs::copy(&fixture, &copy).unwrap();
    let secret = home.path().join("bearer-client-secret");
    std::fs::write(&secret, clients::BEARER_SECRET).unwrap();
    let block = |name: &str, client: &str, auth: &str, key: &std::path::Path, extra: &str| {
        format!(
            "\n[providers.{name}]\ntoken_url = \"{}\"\nclient_id = \"{client}\"\n{auth}\nprivate_key_file = \"{}\"\nkid = \"{}\"\nscopes = \"api:read\"\n{extra}\n",
            server.token_url(),
            key.display(),
            clients::JWT_KID,
        )
    };
    let none = "client_auth = \"none\"";
    let basic = format!("client_secret_file = \"{}\"", secret.display());
    home.append_config(&block("bearer", clients::BEARER_ID, none, &fixture, ""));
    home.append_config(&block(
        "bearer-basic",
        clients::BEARER_SECRET_ID,
        &basic,
        &fixture,
        "",
    ));
    home.append_config(&block("rotating", clients::BEARER_ID, none, &copy, ""));
    home.append_config(&block(
        "wrong-aud",
        clients::BEARER_ID,
        none,
        &fixture,
        "assertion_audience = \"https://elsewhere.example/\"",
    ));
    let bad_kid = block("bad-key", clients::BEARER_ID, none, &fixture, "")
        .replace(clients::JWT_KID, "not-a-key-of-the-client");
    home.append_config(&bad_kid);
    home
}

/// name, grant_type, subject, access_token, refresh_token.
type BearerRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn add_bearer(home: &Home, name: &str, provider: &str, extra: &[&str]) -> Run {
    let mut args = vec!["add", name, "--provider", provider, "--grant", "jwt-bearer"];
    args.extend(extra);
    home.run(&args, "").await
}

async fn jwt_bearer_credentials_get_each_token_for_a_fresh_assertion(backend: Backend) {
    let server = OauthServer::start().await;
    let home = bearer_home(&server, backend).await;
    let add = add_bearer(
        &home,
        "sf-api",
        "bearer",
        &["--subject", "integration@acme.example"],
    )
    .await;
    assert_eq!(add.code, Some(0), "{add:?}");
    let add = add_bearer(&home, "reports", "bearer-basic", &["--owner", "bob"]).await;
    assert_eq!(add.code, Some(0), "{add:?}");

    let first = home.run(&["run", "--once"], "").await;
    assert_eq!(first.code, Some(0), "{first:?}");
    let stats = server.stats().await;
    assert_eq!(
        (stats.jwt_bearer_ok, stats.jwt_bearer_failed),
        (2, 0),
        "{stats:?}"
    );
    let db = home.db().await;
    let rows: Vec<BearerRow> = db
        .fetch_all(
            "SELECT name, grant_type, subject, access_token, refresh_token FROM oauth_credential ORDER BY name",
            &[],
        )
        .await;
    assert_eq!(
        rows[0].2.as_deref(),
        Some("bob"),
        "the owner is the subject"
    );
    assert_eq!(rows[1].2.as_deref(), Some("integration@acme.example"));
    for (name, grant, _, access, refresh) in &rows {
        assert_eq!(grant, "jwt_bearer", "{name}");
        assert!(
            server.introspect_active(access.as_deref().unwrap()).await,
            "{name}"
        );
        assert_eq!(refresh, &None, "{name}: no refresh token");
    }

    // Due again: new assertions (a reused jti would be refused), new tokens.
    db.execute("UPDATE oauth_credential SET refresh_due_at = 0", &[])
        .await;
    let second = home.run(&["run", "--once"], "").await;
    assert_eq!(second.code, Some(0), "{second:?}");
    // On demand, as any other credential.
    db.execute(
        "UPDATE oauth_credential SET access_token_expires_at = CAST($1 AS BIGINT) + 30 \
         WHERE name = 'sf-api'",
        &[&now().to_string()],
    )
    .await;
    let token = home
        .run(&["token", "sf-api", "--min-valid", "90s"], "")
        .await;
    assert_eq!(token.code, Some(0), "{token:?}");
    assert!(server.introspect_active(token.stdout.trim()).await);
    let stats = server.stats().await;
    assert_eq!(
        (stats.jwt_bearer_ok, stats.jwt_bearer_failed),
        (5, 0),
        "{stats:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'")
            .await,
        5
    );

    let mut secrets = db.stored_secrets().await;
    secrets.push(clients::BEARER_SECRET.to_owned());
    for (what, run) in [("first", &first), ("second", &second)] {
        assert_no_secrets(what, &run.all(), &secrets);
    }
    assert_no_secrets("token stderr", &token.stderr, &secrets);
    assert_no_secrets("journal", &db.journal_text().await, &secrets);
}
on_both_backends!(jwt_bearer_credentials_get_each_token_for_a_fresh_assertion);

/// Seconds since the Unix epoch, now.
fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

async fn refused_assertions_and_a_missing_key_fail_clearly(backend: Backend) {
    let server = OauthServer::start().await;
    let home = bearer_home(&server, backend).await;
    for (name, provider, extra) in [
        ("aud", "wrong-aud", &["--subject", "alice"][..]),
        ("kid", "bad-key", &["--subject", "alice"][..]),
        ("nosub", "bearer", &[][..]),
        ("rotating", "rotating", &["--subject", "alice"][..]),
    ] {
        let add = add_bearer(&home, name, provider, extra).await;
        assert_eq!(add.code, Some(0), "{add:?}");
    }
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(1), "{once:?}");
    let db = home.db().await;
    let state = |name: &'static str| {
        let db = &db;
        async move {
            db.fetch_one::<(String, Option<String>, i64, i64)>(
                "SELECT status, last_error, consecutive_failures, next_attempt_at FROM oauth_credential WHERE name = $1",
                &[name],
            )
            .await
        }
    };
    // The server's refusals are the credential's: each needs fixing, and says what.
    for (name, needle) in [("aud", "aud"), ("kid", "kid"), ("nosub", "sub")] {
        let (status, error, _, _) = state(name).await;
        let error = error.unwrap_or_default();
        assert_eq!(status, "needs_reauthorization", "{name}: {error}");
        assert!(
            error.contains("invalid_grant") && error.contains(needle),
            "{name}: {error}"
        );
    }
    let (status, _, _, _) = state("rotating").await;
    assert_eq!(status, "active");
    let stats = server.stats().await;
    assert_eq!(
        (stats.jwt_bearer_ok, stats.jwt_bearer_failed),
        (1, 3),
        "{stats:?}"
    );

    // The key file goes away: that credential backs off, with one clear line; nothing is sent.
    std::fs::remove_file(home.path().join("rotating.pem")).unwrap();
    db.execute(
        "UPDATE oauth_credential SET refresh_due_at = 0 WHERE name = 'rotating'",
        &[],
    )
    .await;
    let started = now();
    let gone = home.run(&["run", "--once"], "").await;
    assert_eq!(gone.code, Some(1), "{gone:?}");
    let (status, error, failures, next) = state("rotating").await;
    let error = error.unwrap_or_default();
    assert_eq!((status.as_str(), failures), ("active", 1), "{error}");
    assert!(error.contains(": cannot read it"), "{error}");
    assert!(next > started, "backs off: {next} vs {started}");
    assert_eq!(
        gone.stderr
            .lines()
            .filter(|l| l.contains(": cannot read it"))
            .count(),
        1,
        "{gone:?}"
    );
    assert_eq!(
        server.stats().await.jwt_bearer_ok,
        1,
        "nothing sent without a key"
    );
    let check = home.run(&["check-config"], "").await;
    assert_eq!(check.code, Some(2), "{check:?}");
    assert!(check.stderr.contains("rotating.pem"), "{check:?}");
    let doctor = home.run(&["doctor", "rotating"], "").await;
    assert_eq!(doctor.code, Some(1), "{doctor:?}");
    assert!(
        doctor
            .stdout
            .lines()
            .any(|l| l.contains("assertion key") && l.contains(": cannot read it")),
        "{doctor:?}"
    );

    // Usage: no key to sign with; a subject for another grant.
    let no_key = add_bearer(&home, "x", "basic", &[]).await;
    assert_eq!(no_key.code, Some(2), "{no_key:?}");
    assert!(no_key.stderr.contains("no private_key_file"), "{no_key:?}");
    let stray = home
        .run(
            &[
                "add",
                "y",
                "--provider",
                "cc",
                "--grant",
                "client-credentials",
                "--subject",
                "s",
            ],
            "",
        )
        .await;
    assert_eq!(stray.code, Some(2), "{stray:?}");

    let secrets = db.stored_secrets().await;
    for run in [&once, &gone, &check, &doctor] {
        assert_no_secrets("jwt-bearer failures", &run.all(), &secrets);
    }
    assert_no_secrets("journal", &db.journal_text().await, &secrets);
}
on_both_backends!(refused_assertions_and_a_missing_key_fail_clearly);
