//! PostgreSQL reached without certificate checks: a URL to another host without
//! `sslmode=verify-full` draws a warning at every start and in `doctor`'s report (a server, or
//! a man in the middle, that declines TLS would otherwise get the password in clear); loopback
//! and `verify-full` do not.

use crate::harness::Home;

#[tokio::test]
async fn postgres_elsewhere_without_verify_full_is_warned_at_start_and_in_doctor() {
    let home = Home::with_token_url("http://127.0.0.1:9/token", "");
    let config = std::fs::read_to_string(&home.config).unwrap();
    let with_url = |url: &str| {
        config.replacen(
            &format!("database = \"{}\"", home.db.display()),
            &format!("database = \"{url}\"\n[postgres]\npassword_env = \"TW_TEST_CC_SECRET\"\n"),
            1,
        )
    };
    std::fs::write(
        &home.config,
        with_url("postgres://tw@db.example.invalid:5432/tw"),
    )
    .unwrap();
    // The server cannot be reached (exit 3): the warning comes first.
    let start = home.run(&["run", "--once"], "").await;
    assert_eq!(start.code, Some(3), "{start:?}");
    assert!(
        start.stderr.contains(" WARN ") && start.stderr.contains("sslmode=prefer (the default)"),
        "{start:?}"
    );
    let doctor = home.run(&["doctor"], "").await;
    assert!(
        doctor.stdout.contains("access") && doctor.stdout.contains("sslmode=verify-full"),
        "{doctor:?}"
    );

    for quiet in [
        "postgres://tw@db.example.invalid/tw?sslmode=verify-full",
        "postgres://tw@127.0.0.1:5432/tw",
        "postgresql://tw@localhost/tw?host=/nonexistent/socket-dir",
    ] {
        std::fs::write(&home.config, with_url(quiet)).unwrap();
        let start = home.run(&["run", "--once"], "").await;
        assert_eq!(start.code, Some(3), "{start:?}");
        assert!(
            !start.stderr.contains("certificate is not checked"),
            "{quiet}: {start:?}"
        );
    }
}
