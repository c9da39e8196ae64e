//! TLS to PostgreSQL with certificate verification, against a real server serving a certificate
//! from a throwaway CA (`postgres::TestCa`): `sslmode=verify-full` with the CA file (configured,
//! or in the URL), with the CA made the "system" roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`), and
//! the refusals: another host's certificate, another CA, no TLS at the server. Each refusal is
//! one line and exit 3, without the password.

use std::time::Duration;

use crate::harness::{Home, Run, eventually, finish};
use crate::oauth_server::{OauthServer, clients};
use crate::postgres::{PASSWORD, PgServer, TestCa};

const SCOPE: &str = "openid offline_access api:read";
/// What the server's certificate names: this test's host, by address and by name.
const OURS: &str = "DNS:localhost,IP:127.0.0.1";

/// A refusal: exit 3, one line on stderr naming the database, nothing on stdout, no password.
fn assert_refused(run: &Run, why: &str) {
    assert_eq!(run.code, Some(3), "{why}: {run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{why}: {run:?}");
    assert!(
        run.stderr.contains("postgres://postgres@"),
        "{why}: {run:?}"
    );
    assert!(
        !run.all().contains(PASSWORD),
        "{why}: the password is shown"
    );
    assert!(!run.all().contains("panicked"), "{why}: {run:?}");
}

#[tokio::test]
async fn verify_full_with_the_ca_file_works_and_another_name_ca_or_no_tls_is_refused() {
    let ca = TestCa::new("tokenwarden test CA");
    let pg = PgServer::start_tls(&ca, OURS).await;
    let server = OauthServer::start().await;
    let ca_file = ca.cert.display().to_string();

    // The CA file as `[postgres] ssl_root_cert`: the CLI works end to end.
    let home = Home::on_postgres_url(
        server.token_url(),
        pg.url_at("127.0.0.1", "sslmode=verify-full"),
        &format!("ssl_root_cert = \"{ca_file}\""),
        "",
    );
    let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("c", "basic", &rt).await;
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(0), "{once:?}");
    let token = home.run(&["token", "c"], "").await;
    assert_eq!(token.code, Some(0), "{token:?}");
    assert!(server.introspect_active(token.stdout.trim()).await);
    let status = home.run(&["status"], "").await;
    assert_eq!(status.code, Some(0), "{status:?}");
    // (verify-full cannot succeed without TLS: no separate check that TLS is on.)

    // The CA file in the URL (`sslrootcert=`), by host name as well as by address.
    for host in ["127.0.0.1", "localhost"] {
        let in_url = Home::on_postgres_url(
            server.token_url(),
            pg.url_at(host, &format!("sslmode=verify-full&sslrootcert={ca_file}")),
            "",
            "",
        );
        let run = in_url.run(&["status"], "").await;
        assert_eq!(run.code, Some(0), "{host}: {run:?}");
    }

    // Another CA's file: refused.
    let other_ca = TestCa::new("some other CA");
    let wrong_ca = Home::on_postgres_url(
        server.token_url(),
        pg.url_at("127.0.0.1", "sslmode=verify-full"),
        &format!("ssl_root_cert = \"{}\"", other_ca.cert.display()),
        "",
    );
    let run = wrong_ca.run(&["status"], "").await;
    assert_refused(&run, "another CA");
    assert!(run.stderr.contains("invalid peer certificate"), "{run:?}");
    let run = wrong_ca.run(&["run", "--once"], "").await;
    assert_refused(&run, "another CA, run --once");

    // `sslmode=require` does not verify; it connects.
    let require = Home::on_postgres_url(
        server.token_url(),
        pg.url_at("127.0.0.1", "sslmode=require"),
        "",
        "",
    );
    assert_eq!(require.run(&["status"], "").await.code, Some(0));

    // The server now serves a certificate of our CA for another host name: refused.
    pg.serve_cert(&ca, "DNS:db.elsewhere.example").await;
    let verify = format!("sslmode=verify-full&sslrootcert={ca_file}");
    eventually(
        Duration::from_secs(20),
        "the other certificate to be served",
        || {
            let verify = verify.clone();
            let pg = &pg;
            async move { !pg.connects_with(&verify).await }
        },
    )
    .await;
    let run = home.run(&["status"], "").await;
    assert_refused(&run, "another host's certificate");
    assert!(run.stderr.contains("not valid for name"), "{run:?}");
    let run = home.run(&["token", "c"], "").await;
    assert_refused(&run, "another host's certificate, token");

    // No TLS at the server: `sslmode=require` (and verify-full) refuse, in one line.
    pg.tls_off().await;
    eventually(Duration::from_secs(20), "TLS to be off", || {
        let pg = &pg;
        async move {
            pg.connects_with("sslmode=disable").await && !pg.connects_with("sslmode=require").await
        }
    })
    .await;
    let run = require.run(&["status"], "").await;
    assert_refused(&run, "sslmode=require, no TLS at the server");
    assert!(run.stderr.contains("does not support TLS"), "{run:?}");
    let run = home.run(&["status"], "").await;
    assert_refused(&run, "sslmode=verify-full, no TLS at the server");
    for run in [&once, &status] {
        assert!(!run.all().contains(PASSWORD) && !run.all().contains(&rt));
    }
}

/// The "system roots" path: rustls-native-certs reads `SSL_CERT_FILE` and `SSL_CERT_DIR` instead
/// of the system's store, so the throwaway CA stands in for a CA installed on the host.
#[tokio::test]
async fn verify_full_uses_the_system_roots_ssl_cert_file_and_dir() {
    let ca = TestCa::new("tokenwarden test CA");
    let pg = PgServer::start_tls(&ca, OURS).await;
    let server = OauthServer::start().await;
    let home = Home::on_postgres_url(
        server.token_url(),
        pg.url_at("127.0.0.1", "sslmode=verify-full"),
        "",
        "",
    );
    let roots = home.path().join("roots");
    std::fs::create_dir(&roots).unwrap();
    std::fs::copy(&ca.cert, roots.join("test-ca.pem")).unwrap();

    let mut with_file = home.command(&["status"]);
    with_file.env("SSL_CERT_FILE", &ca.cert);
    let run = finish(with_file, "").await;
    assert_eq!(run.code, Some(0), "SSL_CERT_FILE: {run:?}");
    let mut with_dir = home.command(&["doctor"]);
    with_dir.env("SSL_CERT_DIR", &roots);
    let run = finish(with_dir, "").await;
    assert!(
        run.stdout.contains("postgres answers"),
        "SSL_CERT_DIR: {run:?}"
    );
    assert!(!run.all().contains(PASSWORD));

    // Without them, the system's own store does not hold the throwaway CA.
    let run = home.run(&["status"], "").await;
    assert_refused(&run, "the system's roots lack the CA");
}
