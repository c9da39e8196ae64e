//! The consumers of tokens, end to end: `token --min-valid` (renewal under the sweep's lease,
//! waiting for another process's refresh), `token --header`, lookup by owner, `exec`, and the
//! migration that made room for them, against the real test server. Each test of the store on a
//! real SQLite file and on a real PostgreSQL server (`on_both_backends!`); the migration of an
//! old SQLite database on SQLite only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backends::{Backend, BackendHome, Db, count, on_both_backends};
use crate::harness::{Home, Run, assert_no_secrets, finish};
use crate::oauth_server::{OauthServer, clients};

const SCOPE: &str = "openid offline_access api:read";

/// A home with credential `name` of provider `basic`, swept once: it holds an access token
/// that lives the server's 120 s.
async fn swept(server: &OauthServer, backend: Backend, name: &str) -> BackendHome {
    let home = BackendHome::new(server, backend, "").await;
    let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add(name, "basic", &rt).await;
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(0), "{once:?}");
    home
}

/// Makes `name`'s access token expire in 30 s: stale for a --min-valid of 90 s, which the
/// server's 120 s tokens meet.
async fn expire_soon(db: &Db, name: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    db.execute(
        "UPDATE oauth_credential SET access_token_expires_at = CAST($1 AS BIGINT) + 30 WHERE name = $2",
        &[&now.to_string(), name],
    )
    .await;
}

async fn access_token(db: &Db, name: &str) -> String {
    let (token,): (String,) = db
        .fetch_one(
            "SELECT access_token FROM oauth_credential WHERE name = $1",
            &[name],
        )
        .await;
    token
}

/// The secrets this home has seen so far, plus `more`.
async fn secrets(db: &Db, more: &[&str]) -> Vec<String> {
    let mut all = db.stored_secrets().await;
    all.extend(more.iter().map(|s| (*s).to_owned()));
    all
}

/// Fails if `run` printed a token or secret anywhere but `token`'s standard output.
fn assert_quiet(what: &str, run: &Run, secrets: &[String]) {
    assert_no_secrets(&format!("{what} stderr"), &run.stderr, secrets);
}

async fn token_renews_when_it_expires_within_min_valid_and_journals_it(backend: Backend) {
    let server = OauthServer::start().await;
    let home = swept(&server, backend, "web").await;
    let db = home.db().await;
    let before = access_token(&db, "web").await;
    server.reset_stats().await;

    // 120 s left, more than the default 60 s: served as stored, nothing sent.
    let plain = home.run(&["token", "web"], "").await;
    assert_eq!(plain.code, Some(0), "{plain:?}");
    assert_eq!(plain.stdout.trim(), before);
    assert_eq!(server.stats().await.refresh_ok, 0);

    // Asked for more than is left: renewed now, through the lease and the journal.
    expire_soon(&db, "web").await;
    let renewed = home.run(&["token", "web", "--min-valid", "90s"], "").await;
    assert_eq!(renewed.code, Some(0), "{renewed:?}");
    let after = access_token(&db, "web").await;
    assert_ne!(after, before, "not renewed");
    assert_eq!(
        renewed.stdout,
        format!("{after}\n"),
        "only the token on stdout"
    );
    assert!(server.introspect_active(&after).await);
    let stats = server.stats().await;
    assert_eq!((stats.refresh_ok, stats.refresh_reuse), (1, 0), "{stats:?}");
    assert_eq!(
        db.count(
            "SELECT count(*) FROM token_rotation WHERE trigger = 'manual' AND outcome = 'refreshed'"
        )
        .await,
        1
    );
    // The provider's tokens live 120 s: asking for more gets the freshest token and says so
    // once, and a token that young is not renewed again (no rotation burnt per call).
    let long = home.run(&["token", "web", "--min-valid", "1h"], "").await;
    assert_eq!(long.code, Some(0), "{long:?}");
    assert_eq!(long.stdout.trim(), after, "{long:?}");
    assert_eq!(
        long.stderr.matches("less than asked for").count(),
        1,
        "{long:?}"
    );
    assert_eq!(server.stats().await.refresh_ok, 1, "not renewed again");
    // Once it is older than half its life, asking for more renews it (once), and the renewed
    // one, still shorter than asked for, is handed out.
    expire_soon(&db, "web").await;
    let again = home.run(&["token", "web", "--min-valid", "1h"], "").await;
    assert_eq!(again.code, Some(0), "{again:?}");
    let newest = access_token(&db, "web").await;
    assert_ne!(newest, after);
    assert_eq!(again.stdout.trim(), newest);
    assert!(again.stderr.contains("less than asked for"), "{again:?}");
    assert_eq!(server.stats().await.refresh_ok, 2);

    // The configured default applies without the flag.
    let config = std::fs::read_to_string(&home.config).unwrap();
    std::fs::write(
        &home.config,
        config.replacen("\n[log]", "token_min_valid = \"10m\"\n\n[log]", 1),
    )
    .unwrap();
    let by_default = home.run(&["token", "web"], "").await;
    assert_eq!(by_default.code, Some(0), "{by_default:?}");
    assert_eq!(by_default.stdout.trim(), newest);
    assert!(
        by_default.stderr.contains("less than asked for"),
        "{by_default:?}"
    );
    assert_eq!(server.stats().await.refresh_ok, 2, "not renewed again");

    // A credential that cannot be renewed serves its token while it lasts long enough, only.
    db.execute(
        "UPDATE oauth_credential SET status = 'needs_reauthorization'",
        &[],
    )
    .await;
    expire_soon(&db, "web").await;
    let stale = home.run(&["token", "web", "--min-valid", "90s"], "").await;
    assert_eq!(stale.code, Some(4), "{stale:?}");
    assert_eq!(stale.stdout, "");
    assert!(stale.stderr.contains("sooner than asked for"), "{stale:?}");
    let short = home.run(&["token", "web", "--min-valid", "10s"], "").await;
    assert_eq!(short.code, Some(0), "{short:?}");
    assert_eq!(short.stdout.trim(), access_token(&db, "web").await);
    assert!(
        short
            .stderr
            .contains("warning: credential web is needs_reauthorization"),
        "{short:?}"
    );

    let secrets = secrets(&db, &[&before]).await;
    for (what, run) in [("plain", &plain), ("renewed", &renewed), ("stale", &stale)] {
        assert_quiet(what, run, &secrets);
    }
    assert_no_secrets("journal", &db.journal_text().await, &secrets);
}
on_both_backends!(token_renews_when_it_expires_within_min_valid_and_journals_it);

async fn token_waits_for_a_refresh_another_process_has_in_flight(backend: Backend) {
    let server = OauthServer::start().await;
    let home = swept(&server, backend, "web").await;
    let db = home.db().await;
    let before = access_token(&db, "web").await;
    expire_soon(&db, "web").await;
    server.reset_stats().await;

    // Another process refreshes; the server rotated, its answer is held back.
    server.hold(30).await;
    let other = home.command(&["refresh", "web"]).spawn().unwrap();
    server.wait_held(1, Duration::from_secs(20)).await;

    // A short wait gives up, printing nothing, and sends nothing.
    let impatient = home
        .run(&["token", "web", "--min-valid", "90s", "--wait", "1s"], "")
        .await;
    assert_eq!(impatient.code, Some(1), "{impatient:?}");
    assert_eq!(impatient.stdout, "");
    assert!(
        impatient
            .stderr
            .contains("another process is refreshing it"),
        "{impatient:?}"
    );

    // A patient one waits for the other's tokens instead of racing it.
    let patient = home.command(&["token", "web", "--min-valid", "90s"]);
    let patient = tokio::spawn(finish(patient, ""));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.release().await, 1);
    let other = other.wait_with_output().await.unwrap();
    assert!(other.status.success(), "{other:?}");
    let patient = patient.await.unwrap();
    assert_eq!(patient.code, Some(0), "{patient:?}");
    let after = access_token(&db, "web").await;
    assert_ne!(after, before);
    assert_eq!(patient.stdout.trim(), after);
    let stats = server.stats().await;
    assert_eq!(
        (stats.refresh_ok, stats.refresh_reuse, stats.refresh_failed),
        (1, 0, 0),
        "one refresh, by the other process: {stats:?}"
    );
    let secrets = secrets(&db, &[&before]).await;
    assert_quiet("impatient", &impatient, &secrets);
    assert_quiet("patient", &patient, &secrets);
}
on_both_backends!(token_waits_for_a_refresh_another_process_has_in_flight);

async fn a_renewal_that_fails_prints_nothing_and_says_why(backend: Backend) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, "").await;
    // A refresh token the provider never issued: renewing is refused for good.
    home.add("dead", "basic", "not-a-refresh-token-canary")
        .await;
    let dead = home.run(&["token", "dead"], "").await;
    assert_eq!(dead.code, Some(1), "{dead:?}");
    assert_eq!(dead.stdout, "");
    assert!(
        dead.stderr.contains("was not renewed") && dead.stderr.contains("invalid_grant"),
        "{dead:?}"
    );
    // Now it needs re-authorization: no valid token, nothing sent.
    let again = home.run(&["token", "dead"], "").await;
    assert_eq!(again.code, Some(4), "{again:?}");
    assert!(again.stderr.contains("needs_reauthorization"), "{again:?}");

    // The provider is down: transient, the old token (none here) is not touched.
    let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("down", "basic", &rt).await;
    home.retarget("http://127.0.0.1:9/token");
    let down = home.run(&["token", "down"], "").await;
    assert_eq!(down.code, Some(1), "{down:?}");
    assert_eq!(down.stdout, "");
    assert!(down.stderr.contains("was not renewed"), "{down:?}");
    let db = home.db().await;
    let (failures, stored): (i64, Option<String>) = db
        .fetch_one(
            "SELECT consecutive_failures, refresh_token FROM oauth_credential WHERE name = 'down'",
            &[],
        )
        .await;
    assert_eq!((failures, stored.as_deref()), (1, Some(rt.as_str())));

    let secrets = secrets(&db, &["not-a-refresh-token-canary", &rt]).await;
    for (what, run) in [("dead", &dead), ("again", &again), ("down", &down)] {
        assert_no_secrets(what, &run.all(), &secrets);
    }
    assert_no_secrets("journal", &db.journal_text().await, &secrets);
}
on_both_backends!(a_renewal_that_fails_prints_nothing_and_says_why);

async fn header_prints_an_authorization_line(backend: Backend) {
    let server = OauthServer::start().await;
    let home = swept(&server, backend, "web").await;
    let db = home.db().await;
    db.execute("UPDATE oauth_credential SET token_type = 'bearer'", &[])
        .await;
    let token = access_token(&db, "web").await;
    let run = home.run(&["token", "web", "--header"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, format!("Authorization: Bearer {token}\n"));
    // A token_type that would break the line is refused without showing anything.
    db.execute(
        "UPDATE oauth_credential SET token_type = 'Bearer x: y'",
        &[],
    )
    .await;
    let bad = home.run(&["token", "web", "--header"], "").await;
    assert_eq!(bad.code, Some(4), "{bad:?}");
    assert_eq!(bad.stdout, "");
    assert_no_secrets("bad header", &bad.all(), &secrets(&db, &[]).await);
}
on_both_backends!(header_prints_an_authorization_line);

async fn personal_credentials_by_owner_one_per_provider_unless_asked(backend: Backend) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, "").await;
    let add = |name: &'static str, owner: &'static str, extra: &'static [&'static str]| {
        let home = &home;
        let server = &server;
        async move {
            let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
            let mut args = vec!["add", name, "--provider", "basic", "--owner", owner];
            args.extend(extra);
            home.run(&args, &rt).await
        }
    };
    assert_eq!(add("alice-mail", "alice", &[]).await.code, Some(0));
    assert_eq!(add("bob-mail", "bob", &[]).await.code, Some(0));
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(0), "{once:?}");
    let db = home.db().await;

    let alice = home
        .run(&["token", "--provider", "basic", "--owner", "alice"], "")
        .await;
    assert_eq!(alice.code, Some(0), "{alice:?}");
    assert_eq!(alice.stdout.trim(), access_token(&db, "alice-mail").await);

    // A second credential for alice at basic is refused, and allowed when asked.
    let second = add("alice-2", "alice", &[]).await;
    assert_eq!(second.code, Some(2), "{second:?}");
    assert!(
        second.stderr.contains("alice-mail") && second.stderr.contains("--allow-same-owner"),
        "{second:?}"
    );
    // Replacing the same name is not a second credential.
    assert_eq!(
        add("alice-mail", "alice", &["--replace"]).await.code,
        Some(0)
    );
    assert_eq!(
        add("alice-2", "alice", &["--allow-same-owner"]).await.code,
        Some(0)
    );

    // Now the lookup is ambiguous: an error naming both, not a guess.
    let ambiguous = home
        .run(&["token", "--provider", "basic", "--owner", "alice"], "")
        .await;
    assert_eq!(ambiguous.code, Some(4), "{ambiguous:?}");
    assert_eq!(ambiguous.stdout, "");
    assert!(
        ambiguous.stderr.contains("alice-2, alice-mail"),
        "{ambiguous:?}"
    );
    let nobody = home
        .run(&["token", "--provider", "basic", "--owner", "carol"], "")
        .await;
    assert_eq!(nobody.code, Some(4), "{nobody:?}");
    let usage = home.run(&["token", "--owner", "carol"], "").await;
    assert_eq!(usage.code, Some(2), "{usage:?}");
    let both = home
        .run(
            &["token", "bob-mail", "--provider", "basic", "--owner", "bob"],
            "",
        )
        .await;
    assert_eq!(both.code, Some(2), "{both:?}");

    // current_token carries the owner for programs that read the database.
    let (name,): (String,) = db
        .fetch_one(
            "SELECT name FROM current_token WHERE provider = 'basic' AND owner = 'bob' AND seconds_left > 60",
            &[],
        )
        .await;
    assert_eq!(name, "bob-mail");
}
on_both_backends!(personal_credentials_by_owner_one_per_provider_unless_asked);

async fn exec_hands_the_token_to_the_command_and_passes_its_exit_code_on(backend: Backend) {
    let server = OauthServer::start().await;
    let home = swept(&server, backend, "web").await;
    let db = home.db().await;
    db.execute(
        "UPDATE oauth_credential SET instance_url = 'https://acme.my.salesforce.com'",
        &[],
    )
    .await;
    let out = home.path().join("child");
    let script = format!(
        "printf '%s' \"$ACCESS_TOKEN\" > '{out}.token'; printf '%s' \"$INSTANCE_URL\" > '{out}.url'; env > '{out}.env'; exit 7",
        out = out.display()
    );
    let run = home
        .run(&["exec", "web", "--", "sh", "-c", &script], "")
        .await;
    assert_eq!(run.code, Some(7), "{run:?}");
    let token = access_token(&db, "web").await;
    let read = |ext: &str| std::fs::read_to_string(format!("{}.{ext}", out.display())).unwrap();
    assert_eq!(read("token"), token);
    assert_eq!(read("url"), "https://acme.my.salesforce.com");
    let env = read("env");
    assert!(
        !env.contains("TW_TEST_BASIC_SECRET") && !env.contains(clients::BASIC_SECRET),
        "the client secret's variable reached the command"
    );
    assert!(
        env.contains("TOKENWARDEN_CONFIG="),
        "the configuration stays"
    );

    // Another variable; renewal first (as `token --min-valid`); stdin and stdout passed through.
    expire_soon(&db, "web").await;
    let run = home
        .run(
            &[
                "exec",
                "web",
                "--env",
                "GRAPH_TOKEN",
                "--min-valid",
                "90s",
                "--",
                "sh",
                "-c",
                "read line; echo \"$line ${#GRAPH_TOKEN}\"; test -z \"$ACCESS_TOKEN\"",
            ],
            "hello\n",
        )
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let renewed = access_token(&db, "web").await;
    assert_ne!(renewed, token, "renewed first");
    assert_eq!(run.stdout, format!("hello {}\n", renewed.len()));

    // A signal is reported as a shell does; a missing command is 127.
    let killed = home
        .run(&["exec", "web", "--", "sh", "-c", "kill -TERM $$"], "")
        .await;
    assert_eq!(killed.code, Some(143), "{killed:?}");
    let missing = home
        .run(&["exec", "web", "--", "no-such-command-here"], "")
        .await;
    assert_eq!(missing.code, Some(127), "{missing:?}");
    assert!(missing.stderr.contains("not found"), "{missing:?}");
    let bad_var = home
        .run(&["exec", "web", "--env", "NOT-A-NAME", "--", "true"], "")
        .await;
    assert_eq!(bad_var.code, Some(2), "{bad_var:?}");

    // A renewal that fails runs nothing.
    home.retarget("http://127.0.0.1:9/token");
    expire_soon(&db, "web").await;
    let marker = home.path().join("ran");
    let failed = home
        .run(
            &[
                "exec",
                "web",
                "--min-valid",
                "90s",
                "--",
                "touch",
                &marker.display().to_string(),
            ],
            "",
        )
        .await;
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert!(!marker.exists(), "the command ran without a fresh token");

    let secrets = secrets(&db, &[&token]).await;
    for (what, run) in [
        ("missing", &missing),
        ("failed", &failed),
        ("killed", &killed),
    ] {
        assert_no_secrets(what, &run.all(), &secrets);
    }
}
on_both_backends!(exec_hands_the_token_to_the_command_and_passes_its_exit_code_on);

/// SQLite only: an old SQLite database (migrations 0001-0004 of migrations/sqlite) and the
/// table rebuild SQLite needs to widen a CHECK; PostgreSQL alters it in place.
#[tokio::test]
async fn the_grants_migration_keeps_every_row_of_an_old_database() {
    use sqlx::migrate::Migrator;
    /// id, name, grant_type, owner, refresh_token, status, revoke_pending.
    type Row = (
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        i64,
    );
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    // A database as 0001-0004 left it, with two credentials of one owner and provider.
    let old = crate::harness::migrations_before("sqlite", "0005");
    std::fs::File::create(&home.db).unwrap();
    let db = home.db().await;
    Migrator::new(old.path())
        .await
        .unwrap()
        .run(&db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO oauth_credential (name, provider, grant_type, owner, refresh_token, access_token, \
            access_token_expires_at, refresh_due_at, status, instance_url, revoke_pending) VALUES \
         ('a', 'basic', 'refresh_token', 'alice', 'rt-a-canary', 'at-a-canary', 4000000000, 3999999000, 'active', 'https://x', 0), \
         ('b', 'basic', 'refresh_token', 'alice', 'rt-b-canary', NULL, NULL, 0, 'needs_reauthorization', NULL, 0), \
         ('c', 'cc', 'client_credentials', NULL, NULL, NULL, NULL, 0, 'disabled', NULL, 1)",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, started_at, outcome) \
         VALUES (1, 'a', 'basic', 'schedule', 'x', 1, 'refreshed')",
    )
    .execute(&db)
    .await
    .unwrap();
    let before: Vec<Row> =
        sqlx::query_as(
            "SELECT id, name, grant_type, owner, refresh_token, status, revoke_pending FROM oauth_credential ORDER BY id",
        )
        .fetch_all(&db)
        .await
        .unwrap();
    db.close().await;

    // The new binary migrates it on open.
    let status = home.run(&["status", "--json"], "").await;
    assert_eq!(status.code, Some(0), "{status:?}");
    let db = home.db().await;
    let after: Vec<Row> =
        sqlx::query_as(
            "SELECT id, name, grant_type, owner, refresh_token, status, revoke_pending FROM oauth_credential ORDER BY id",
        )
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(count(&db, "SELECT count(*) FROM token_rotation").await, 1);
    // The table was rebuilt: every index of the migrations before it is there again.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN \
             ('oauth_credential_due', 'oauth_credential_revoke_pending', 'oauth_credential_leased', \
              'oauth_credential_refresh_key', 'oauth_credential_access_key', 'oauth_credential_owner')"
        )
        .await,
        6
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pragma_table_info('current_token') WHERE name = 'access_token_sealed'").await,
        1,
        "current_token as the sealing migration left it"
    );
    let token = home.run(&["token", "a"], "").await;
    assert_eq!(token.stdout.trim(), "at-a-canary", "{token:?}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM current_token WHERE instance_url = 'https://x'"
        )
        .await,
        1
    );
    for index in [
        "oauth_credential_due",
        "oauth_credential_revoke_pending",
        "oauth_credential_leased",
        "oauth_credential_owner",
    ] {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1")
                .bind(index)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(n, 1, "index {index}");
    }
    // The widened CHECK takes jwt_bearer and still refuses nonsense.
    sqlx::query("INSERT INTO oauth_credential (name, provider, grant_type, subject) VALUES ('j', 'p', 'jwt_bearer', 'u')")
        .execute(&db)
        .await
        .unwrap();
    assert!(
        sqlx::query("INSERT INTO oauth_credential (name, provider, grant_type) VALUES ('k', 'p', 'nonsense')")
            .execute(&db)
            .await
            .is_err()
    );
    // The duplicate owners survived: a lookup reports them.
    let ambiguous = home
        .run(&["token", "--provider", "basic", "--owner", "alice"], "")
        .await;
    assert_eq!(ambiguous.code, Some(4), "{ambiguous:?}");
    assert!(ambiguous.stderr.contains("a, b"), "{ambiguous:?}");
}
