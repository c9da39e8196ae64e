//! Bad input at the command line: one clear line naming what is wrong, a documented exit code,
//! no panic, nothing half-written.

use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{CLIENT_SECRETS, Home, Run};

/// Nothing listens here: these tests never reach a token endpoint.
const NOWHERE: &str = "http://127.0.0.1:9/token";

fn assert_one_line_error(run: &Run, code: i32, needle: &str) {
    assert_eq!(run.code, Some(code), "{run:?}");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.contains(" WARN ") && !l.contains(" INFO "))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {run:?}");
    assert!(
        lines[0].starts_with("tokenwarden: error: ") && lines[0].contains(needle),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "{run:?}"
    );
    for secret in CLIENT_SECRETS {
        assert!(!run.all().contains(secret), "{run:?}");
    }
}

#[tokio::test]
async fn unknown_names_and_providers_are_named() {
    let home = Home::with_token_url(NOWHERE, "");
    home.add("known", "basic", "rt-known-0123456789").await;
    assert_one_line_error(
        &home
            .run(&["add", "x", "--provider", "nope"], "rt-x-0123456789")
            .await,
        2,
        "unknown provider \"nope\"",
    );
    assert_one_line_error(
        &home.run(&["token", "missing"], "").await,
        4,
        "no credential named \"missing\"",
    );
    assert_one_line_error(
        &home.run(&["refresh", "missing"], "").await,
        4,
        "no credential named \"missing\"",
    );
    assert_one_line_error(
        &home.run(&["log", "missing"], "").await,
        4,
        "no credential named \"missing\"",
    );
    // Never refreshed: renewed on demand, which cannot reach the provider.
    assert_one_line_error(
        &home.run(&["token", "known"], "").await,
        1,
        "credential \"known\" was not renewed: could not connect",
    );
    // Then backing off: not sent again before its next attempt.
    assert_one_line_error(
        &home.run(&["token", "known"], "").await,
        1,
        "not tried again before",
    );
    assert_one_line_error(
        &home
            .run(
                &["add", "known", "--provider", "basic"],
                "rt-again-0123456789",
            )
            .await,
        2,
        "already exists",
    );
    assert_one_line_error(
        &home
            .run(&["add", "empty", "--provider", "basic"], "  \n")
            .await,
        2,
        "expected one refresh token",
    );
}

#[tokio::test]
async fn refresh_tokens_come_from_stdin_or_a_file_never_argv() {
    let home = Home::with_token_url(NOWHERE, "");
    let file = home.path().join("rt.txt");
    std::fs::write(&file, "rt-from-file-0123456789\n").unwrap();
    let from_file = home
        .run(
            &[
                "add",
                "f",
                "--provider",
                "post",
                "--refresh-token-file",
                file.to_str().unwrap(),
            ],
            "",
        )
        .await;
    assert_eq!(from_file.code, Some(0), "{from_file:?}");
    let argv = home
        .run(
            &[
                "add",
                "g",
                "--provider",
                "post",
                "--refresh-token",
                "rt-on-argv",
            ],
            "",
        )
        .await;
    assert_eq!(argv.code, Some(2), "no such flag: {argv:?}");
    let db = home.db().await;
    let (rt,): (String,) =
        sqlx::query_as("SELECT refresh_token FROM oauth_credential WHERE name = 'f'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(rt, "rt-from-file-0123456789");
}

#[tokio::test]
async fn configuration_errors_name_the_key_or_file() {
    let home = Home::with_token_url(NOWHERE, "");
    let cfg = |text: &str| {
        let path = home.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |path: std::path::PathBuf| {
        let mut cmd = home.command(&["check-config"]);
        cmd.env("TOKENWARDEN_CONFIG", path);
        crate::harness::finish(cmd, "")
    };
    assert_one_line_error(&run(cfg("schedule = \n")).await, 2, "TOML parse error");
    assert_one_line_error(
        &run(cfg("refresh_margn = \"5m\"\n")).await,
        2,
        "refresh_margn",
    );
    assert_one_line_error(
        &run(home.path().join("absent.toml")).await,
        2,
        "absent.toml",
    );
    let remote = "[providers.x]\ntoken_url = \"http://login.example.com/token\"\nclient_id = \"a\"\nclient_secret_env = \"S\"\n";
    assert_one_line_error(&run(cfg(remote)).await, 2, "providers.x.token_url");
    let unset = "[providers.x]\ntoken_url = \"https://login.example.com/token\"\nclient_id = \"a\"\nclient_secret_env = \"TW_NOT_SET\"\n";
    assert_one_line_error(&run(cfg(unset)).await, 2, "TW_NOT_SET");
    let key = "[providers.x]\ntoken_url = \"https://login.example.com/token\"\nclient_id = \"a\"\nclient_auth = \"private_key_jwt\"\nprivate_key_file = \"/nonexistent/key.pem\"\n";
    assert_one_line_error(&run(cfg(key)).await, 2, "/nonexistent/key.pem");
    let good = home.run(&["check-config"], "").await;
    assert_eq!(good.code, Some(0), "{good:?}");
    assert!(
        good.stdout.contains("4 provider(s) [basic, cc, jwt, post]"),
        "{good:?}"
    );
}

#[tokio::test]
async fn names_are_checked_where_they_enter() {
    let home = Home::with_token_url(NOWHERE, "");
    let rule = "names are 1 to 128 characters of ASCII letters, digits and . _ @ + -";
    let long = "n".repeat(129);
    for (args, needle) in [
        (
            vec!["add", "a b", "--provider", "basic"],
            "credential name \"a b\" is not usable",
        ),
        (
            vec!["add", "x\u{1b}[2J", "--provider", "basic"],
            "credential name \"x\\u{1b}[2J\"",
        ),
        (
            vec!["add", &long, "--provider", "basic"],
            "credential name \"nnnn",
        ),
        (
            vec!["add", "", "--provider", "basic"],
            "credential name \"\"",
        ),
        (
            vec!["add", "ok", "--provider", "basic", "--owner", "bob\nsmith"],
            "owner \"bob\\nsmith\"",
        ),
        (
            vec!["authorize", "a/b", "--provider", "basic"],
            "credential name \"a/b\"",
        ),
        (
            vec!["authorize", "ok", "--provider", "basic", "--owner", "b c"],
            "owner \"b c\"",
        ),
    ] {
        let run = home.run(&args, "rt-never-stored-0123456789").await;
        assert_one_line_error(&run, 2, needle);
        assert!(run.stderr.contains(rule), "{run:?}");
        assert!(!run.stderr.contains('\u{1b}'), "{run:?}");
    }
    assert_one_line_error(
        &home
            .run(
                &["add", "ok", "--provider", "basic", "--scopes", "a\tb"],
                "rt-never-stored-0123456789",
            )
            .await,
        2,
        "--scopes \"a\\tb\" is not usable",
    );
    assert!(!home.db.exists(), "nothing was stored");
    home.append_config("[providers.\"bad name\"]\ntoken_url = \"https://login.example.com/token\"\nclient_id = \"a\"\nclient_secret_env = \"S\"\n");
    assert_one_line_error(
        &home.run(&["check-config"], "").await,
        2,
        "configuration key providers.\"bad name\": provider names are 1 to 128 characters",
    );
}

#[tokio::test]
async fn names_from_an_older_database_are_shown_escaped_one_line_each() {
    let fake = FakeEndpoint::start(Reply::json(
        200,
        r#"{"access_token":"at-hostile-0123456789","expires_in":3600}"#,
    ))
    .await;
    let home = Home::with_token_url(&fake.token_url(), "");
    home.add("plain", "basic", "rt-plain-0123456789").await;
    let evil = "evil\n\u{1b}[2J";
    let db = home.db().await;
    for (name, provider, owner) in [
        (evil, "basic", "own\u{7}er\r"),
        ("gone", "gone\u{1b}]0;pwned\u{7}", "x"),
    ] {
        sqlx::query(
            "INSERT INTO oauth_credential (name, provider, owner, refresh_token, refresh_due_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, 0, 1, 1)",
        )
        .bind(name)
        .bind(provider)
        .bind(owner)
        .bind(format!("rt-{}-0123456789", name.len()))
        .execute(&db)
        .await
        .unwrap();
    }
    let escaped = r"evil\n\u{1b}[2J";
    let raw = |c: char| move |text: &str| text.contains(c);
    let sweep = home.run(&["run", "--once"], "").await;
    assert_eq!(
        sweep.code,
        Some(1),
        "the unconfigured provider fails: {sweep:?}"
    );
    assert!(
        !raw('\u{1b}')(&sweep.stderr) && !raw('\u{7}')(&sweep.stderr),
        "{sweep:?}"
    );
    assert!(
        sweep.stderr.contains(&format!("credential={escaped}")),
        "{}",
        sweep.stderr
    );
    assert!(
        sweep.stderr.lines().all(|l| l.contains(" INFO ")
            || l.contains(" WARN ")
            || l.contains(" DEBUG ")
            || l.contains(" TRACE ")
            || l.contains(" ERROR ")),
        "every log line is a whole event: {}",
        sweep.stderr
    );

    let status = home.run(&["status"], "").await;
    assert_eq!(status.code, Some(0), "{status:?}");
    assert_eq!(
        status.stdout.lines().count(),
        4,
        "a header and one line per credential: {status:?}"
    );
    assert!(status.stdout.contains(escaped), "{}", status.stdout);
    assert!(status.stdout.contains(r"own\u{7}er\r"), "{}", status.stdout);
    assert!(
        status.stdout.contains(r"gone\u{1b}]0;pwned\u{7}"),
        "{}",
        status.stdout
    );
    assert!(
        !raw('\u{1b}')(&status.stdout)
            && !raw('\u{7}')(&status.stdout)
            && !raw('\r')(&status.stdout)
    );

    let log = home.run(&["log"], "").await;
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM token_rotation")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(log.stdout.lines().count() as i64, rows + 1, "{log:?}");
    assert!(log.stdout.contains(escaped), "{}", log.stdout);
    assert!(
        !raw('\u{1b}')(&log.stdout) && !raw('\u{7}')(&log.stdout),
        "{log:?}"
    );

    // JSON carries the name as it is, escaped by JSON itself.
    let json = home.run(&["status", "--json"], "").await;
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(
        rows.as_array().unwrap().iter().any(|r| r["name"] == evil),
        "{rows}"
    );
    let doctor = home.run(&["doctor"], "").await;
    assert!(
        doctor.stdout.contains(escaped) && !raw('\u{1b}')(&doctor.stdout),
        "{doctor:?}"
    );
}

#[tokio::test]
async fn secret_files_others_may_read_warn_and_world_writable_ones_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = Home::with_token_url(NOWHERE, "");
    let secret = home.path().join("post-client.secret");
    let key = home.path().join("jwt-client.key.pem");
    let quiet = home.run(&["check-config"], "").await;
    assert_eq!(quiet.code, Some(0), "{quiet:?}");
    assert!(!quiet.stderr.contains("WARN"), "0600 files: {quiet:?}");

    for (path, what) in [(&secret, "client_secret_file"), (&key, "private_key_file")] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warned = home.run(&["check-config"], "").await;
        assert_eq!(warned.code, Some(0), "{warned:?}");
        let line = format!(
            "{what} {} is accessible to group or others (mode 0644)",
            path.display()
        );
        assert!(warned.stderr.contains(&line), "{warned:?}");
        assert!(warned.stderr.contains(" WARN "), "{warned:?}");
        // Starting warns the same way.
        let started = home.run(&["run", "--once"], "").await;
        assert!(started.stderr.contains(&line), "{started:?}");

        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_one_line_error(
            &home.run(&["check-config"], "").await,
            2,
            &format!(
                "{what} {}: anyone may write to it (mode 0666)",
                path.display()
            ),
        );
        assert_one_line_error(
            &home.run(&["run", "--once"], "").await,
            2,
            "anyone may write to it",
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[tokio::test]
async fn a_secret_too_short_to_redact_safely_is_warned_about() {
    let home = Home::with_token_url(NOWHERE, "");
    let mut cmd = home.command(&["check-config"]);
    cmd.env("TW_TEST_BASIC_SECRET", "s");
    let run = crate::harness::finish(cmd, "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr
            .contains("provider basic: the client secret is 1 character(s) long, shorter than 8"),
        "{run:?}"
    );
}

#[tokio::test]
async fn database_problems_exit_3_and_lose_nothing() {
    let home = Home::with_token_url(NOWHERE, "");
    assert_one_line_error(&home.run(&["status"], "").await, 3, "does not exist");
    std::fs::write(
        &home.db,
        b"this is not a sqlite database, just some bytes that fill a page",
    )
    .unwrap();
    assert_one_line_error(&home.run(&["status"], "").await, 3, "database");
    assert_one_line_error(&home.run(&["run", "--once"], "").await, 3, "database");
    let after = std::fs::read(&home.db).unwrap();
    assert!(
        after.starts_with(b"this is not a sqlite database"),
        "the file was left as it was"
    );
}

#[tokio::test]
async fn a_database_locked_beyond_the_busy_timeout_exits_3_and_keeps_everything() {
    let home = Home::with_token_url(NOWHERE, "busy_timeout = \"1s\"");
    home.add("kept", "basic", "rt-kept-0123456789").await;
    let mut lock = home.write_lock().await;
    let started = std::time::Instant::now();
    assert_one_line_error(
        &home.run(&["run", "--once"], "").await,
        3,
        "database is locked",
    );
    assert_one_line_error(
        &home
            .run(&["add", "new", "--provider", "basic"], "rt-new-0123456789")
            .await,
        3,
        "database is locked",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "bounded by busy_timeout"
    );
    // Readers are not blocked by a writer (WAL).
    assert_eq!(home.run(&["status"], "").await.code, Some(0));
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let db = home.db().await;
    let names: Vec<(String, String)> =
        sqlx::query_as("SELECT name, refresh_token FROM oauth_credential")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        names,
        [("kept".to_owned(), "rt-kept-0123456789".to_owned())]
    );
    assert_eq!(
        crate::backends::count(&db, "SELECT count(*) FROM token_rotation").await,
        0,
        "nothing half-written"
    );
}

#[tokio::test]
async fn a_read_only_database_exits_3_with_one_line() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::with_token_url(NOWHERE, "");
    home.add("kept", "basic", "rt-kept-0123456789").await;
    // Root writes through file modes: run as nobody, who may read the file but not write it.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&home.db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(&home.db).unwrap();
    // A WAL database needs write access even to be read (its -shm index): both fail the same way.
    for args in [&["status"][..], &["add", "x", "--provider", "basic"]] {
        let mut cmd = tokio::process::Command::new("setpriv");
        let inner = home.command(args);
        let std_cmd = inner.as_std();
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(std_cmd.get_program())
            .args(std_cmd.get_args())
            .current_dir(home.path())
            .env_clear()
            .envs(std_cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let run = crate::harness::finish(cmd, "rt-x-0123456789").await;
        // "attempt to write a readonly database", or, when no -shm was left behind by the last
        // writer (the daemon closes its connections between sweeps), "unable to open database file".
        assert_one_line_error(&run, 3, "tokenwarden.db: ");
        assert!(
            run.stderr.contains("readonly database") || run.stderr.contains("unable to open"),
            "{run:?}"
        );
    }
    assert_eq!(
        std::fs::read(&home.db).unwrap(),
        before,
        "the file is untouched"
    );
}

#[tokio::test]
async fn usage_errors_are_one_line_with_exit_2() {
    let home = Home::with_token_url(NOWHERE, "");
    for (args, needle) in [
        (&["--bogus"][..], "unexpected argument '--bogus'"),
        (
            &["token"][..],
            "required arguments were not provided: <NAME>",
        ),
        (
            &["log", "--limit", "x"][..],
            "invalid value 'x' for '--limit <LIMIT>'",
        ),
        (
            &["nosuchcommand"][..],
            "unrecognized subcommand 'nosuchcommand'",
        ),
    ] {
        assert_one_line_error(&home.run(args, "").await, 2, needle);
    }
    let help = home.run(&["--help"], "").await;
    assert_eq!(help.code, Some(0), "{help:?}");
    assert!(help.stdout.contains("Exit codes:"), "{help:?}");
}

#[tokio::test]
async fn empty_journal_and_nothing_to_check_say_so() {
    let home = Home::with_token_url(NOWHERE, "");
    home.add("known", "basic", "rt-known-0123456789").await;
    let log = home.run(&["log", "--json"], "").await;
    assert_eq!(
        (log.code, log.stdout.as_str()),
        (Some(0), "[]\n"),
        "{log:?}"
    );
    let status = home.run(&["status", "--json"], "").await;
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{status:?}");

    let bare = tempfile::tempdir().unwrap();
    let empty = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .arg("doctor")
        .current_dir(bare.path())
        .env_remove("TOKENWARDEN_CONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(empty.status.code(), Some(0), "{empty:?}");
    assert!(
        String::from_utf8_lossy(&empty.stdout).starts_with("nothing to check: "),
        "{empty:?}"
    );
}

#[tokio::test]
async fn exec_checks_its_variable_name_before_asking_for_a_token() {
    let home = Home::with_token_url(NOWHERE, "");
    home.add("known", "basic", "rt-known-0123456789").await;
    // Locally, and over a token API socket that does not exist: the name is refused first
    // (exit 2), before the database or the socket is touched.
    for socket in [None, Some("/nonexistent/tokenwarden-api.sock")] {
        let mut args = vec!["exec", "known", "--env", "1BAD"];
        if let Some(socket) = socket {
            args.extend(["--socket", socket]);
        }
        args.extend(["--", "true"]);
        assert_one_line_error(
            &home.run(&args, "").await,
            2,
            "--env \"1BAD\" is not an environment variable name",
        );
    }
}
