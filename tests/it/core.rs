//! The core, end to end: the real binary against the real oidc-provider server with refresh-token
//! rotation on, each test on a real SQLite file and on a real PostgreSQL server
//! (`on_both_backends!`).

use std::time::Duration;

use crate::backends::{Backend, BackendHome, on_both_backends};
use crate::harness::{Home, assert_no_secrets, eventually, fingerprint, finish, stop};
use crate::oauth_server::{OauthServer, clients};

const SCOPE: &str = "openid offline_access api:read";

async fn run_once_rotates_every_client_auth_method_and_the_rotated_tokens_work(backend: Backend) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, "").await;
    let mut minted = Vec::new();
    for (name, provider, client) in [
        ("sp-basic", "basic", clients::BASIC_ID),
        ("sp-post", "post", clients::POST_ID),
        ("sp-jwt", "jwt", clients::JWT_ID),
    ] {
        let rt = server.mint_refresh_token(client, SCOPE).await;
        home.add(name, provider, &rt).await;
        minted.push((name, rt));
    }
    let add_cc = home
        .run(
            &[
                "add",
                "svc",
                "--provider",
                "cc",
                "--grant",
                "client-credentials",
            ],
            "",
        )
        .await;
    assert_eq!(add_cc.code, Some(0), "{add_cc:?}");

    let first = home.run(&["run", "--once"], "").await;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert_eq!(
        first.stderr.matches("access token refreshed").count(),
        4,
        "{}",
        first.stderr
    );

    let db = home.db().await;
    for (name, old) in &minted {
        let (rt, at, status): (String, String, String) = db
            .fetch_one(
                "SELECT refresh_token, access_token, status FROM oauth_credential WHERE name = $1",
                &[name],
            )
            .await;
        assert_eq!(status, "active");
        assert_ne!(&rt, old, "{name}: the rotated refresh token was stored");
        let (outcome, rotated, old_fp, new_fp): (String, bool, String, String) = db
            .fetch_one(
                "SELECT outcome, refresh_token_rotated, old_refresh_fingerprint, new_refresh_fingerprint \
                 FROM token_rotation WHERE credential_name = $1",
                &[name],
            )
            .await;
        assert_eq!((outcome.as_str(), rotated), ("refreshed", true));
        assert_eq!(old_fp, fingerprint(old));
        assert_eq!(new_fp, fingerprint(&rt));
        // `token NAME` prints the stored access token, and the provider says it is active.
        let token = home.run(&["token", name], "").await;
        assert_eq!(token.code, Some(0), "{token:?}");
        assert_eq!(token.stdout.trim(), at);
        assert!(
            server.introspect_active(token.stdout.trim()).await,
            "{name}: token is active at the provider"
        );
    }
    let cc = home.run(&["token", "svc"], "").await;
    assert_eq!(cc.code, Some(0), "{cc:?}");
    assert!(server.introspect_active(cc.stdout.trim()).await);

    // Make everything due again: the second refresh must use the rotated refresh tokens.
    db.execute("UPDATE oauth_credential SET refresh_due_at = 0", &[])
        .await;
    let second = home.run(&["run", "--once"], "").await;
    assert_eq!(second.code, Some(0), "{second:?}");
    let stats = server.stats().await;
    assert_eq!(
        stats.refresh_reuse, 0,
        "no refresh token was ever used twice"
    );
    assert_eq!(stats.refresh_ok, 6, "{stats:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'")
            .await,
        8
    );

    let status = home.run(&["status"], "").await;
    let log = home.run(&["log"], "").await;
    assert_eq!((status.code, log.code), (Some(0), Some(0)));
    assert!(
        status.stdout.contains("sp-jwt") && log.stdout.contains("refreshed"),
        "{status:?}\n{log:?}"
    );
    let mut secrets = db.stored_secrets().await;
    secrets.extend(minted.iter().map(|(_, rt)| rt.clone()));
    for (what, run) in [
        ("first run", &first),
        ("second run", &second),
        ("status", &status),
        ("log", &log),
    ] {
        assert_no_secrets(what, &run.all(), &secrets);
    }
    assert_no_secrets("rotation journal", &db.journal_text().await, &secrets);
}
on_both_backends!(run_once_rotates_every_client_auth_method_and_the_rotated_tokens_work);

async fn two_run_once_processes_on_one_database_never_reuse_a_refresh_token(backend: Backend) {
    const CREDENTIALS: usize = 40;
    // Hour-long tokens: once refreshed, a credential is not due again in the other process's
    // sweep, however much later it starts (120 s ones are due again at once: shorter than the
    // margin), so each is refreshed exactly once.
    let server = OauthServer::start_with_ttl(3600).await;
    let home = BackendHome::new(&server, backend, "concurrency = 4").await;
    for i in 0..CREDENTIALS {
        let (provider, client) = if i % 2 == 0 {
            ("basic", clients::BASIC_ID)
        } else {
            ("post", clients::POST_ID)
        };
        let rt = server.mint_refresh_token(client, SCOPE).await;
        home.add(&format!("user-{i:03}"), provider, &rt).await;
    }
    let (a, b) = tokio::join!(
        finish(home.command(&["run", "--once"]), ""),
        finish(home.command(&["run", "--once"]), "")
    );
    assert_eq!((a.code, b.code), (Some(0), Some(0)), "{a:?}\n{b:?}");
    let stats = server.stats().await;
    assert_eq!(stats.refresh_reuse, 0, "{stats:?}");
    assert_eq!(
        stats.refresh_ok, CREDENTIALS as u64,
        "each credential refreshed exactly once: {stats:?}"
    );
    let db = home.db().await;
    let per_credential: Vec<(String, i64)> = db
        .fetch_all(
            "SELECT credential_name, count(*) FROM token_rotation WHERE outcome = 'refreshed' GROUP BY credential_name",
            &[],
        )
        .await;
    assert_eq!(per_credential.len(), CREDENTIALS);
    assert!(
        per_credential.iter().all(|(_, n)| *n == 1),
        "{per_credential:?}"
    );
}
on_both_backends!(two_run_once_processes_on_one_database_never_reuse_a_refresh_token);

async fn the_daemon_sweeps_on_its_schedule_and_stops_cleanly_on_sigterm(backend: Backend) {
    let server = OauthServer::start().await;
    // Every second: tokens living 120 s are always inside the 10-minute margin, so every
    // sweep refreshes every credential once.
    let home = BackendHome::new(&server, backend, "schedule = \"* * * * * *\"").await;
    for (name, provider, client) in [
        ("a", "basic", clients::BASIC_ID),
        ("b", "jwt", clients::JWT_ID),
    ] {
        home.add(
            name,
            provider,
            &server.mint_refresh_token(client, SCOPE).await,
        )
        .await;
    }
    let daemon = home.command(&["run"]).spawn().expect("start daemon");
    let db = home.db().await;
    eventually(
        Duration::from_secs(30),
        "three sweeps' rotations",
        || async {
            db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'")
                .await
                >= 6
        },
    )
    .await;
    // While it runs, the database and its -wal and -shm files are private to the owner.
    let files: &[&str] = match backend {
        Backend::Sqlite => &["", "-wal", "-shm"],
        Backend::Postgres => &[],
    };
    for suffix in files {
        use std::os::unix::fs::PermissionsExt;
        let path = format!("{}{suffix}", home.db.display());
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600), "{path}");
    }
    let output = stop(daemon).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("SIGTERM") && stderr.contains("tokenwarden stopped"),
        "{stderr}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'pending'")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM oauth_credential WHERE lease_owner IS NOT NULL")
            .await,
        0
    );
    assert_eq!(server.stats().await.refresh_reuse, 0);
    assert_no_secrets("daemon output", &stderr, &db.stored_secrets().await);
}
on_both_backends!(the_daemon_sweeps_on_its_schedule_and_stops_cleanly_on_sigterm);

async fn a_dead_grant_is_flagged_for_reauthorization_and_not_retried(backend: Backend) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, "").await;
    home.add("dead", "basic", "not-a-refresh-token-the-server-knows")
        .await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("invalid_grant"), "{}", run.stderr);

    let status = home.run(&["status", "--json"], "").await;
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(rows[0]["status"], "needs_reauthorization");
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{rows}"
    );

    let token = home.run(&["token", "dead"], "").await;
    assert_eq!(token.code, Some(4), "{token:?}");
    assert_eq!(token.stderr.lines().count(), 1, "{token:?}");
    assert!(token.stdout.is_empty());

    let requests = server.stats().await.token_requests;
    let again = home.run(&["run", "--once"], "").await;
    assert_eq!(again.code, Some(0), "nothing is due: {again:?}");
    assert_eq!(
        server.stats().await.token_requests,
        requests,
        "a dead grant is not retried"
    );
    assert_no_secrets(
        "output",
        &format!("{}{}", run.all(), status.all()),
        &["not-a-refresh-token-the-server-knows".to_owned()],
    );
}
on_both_backends!(a_dead_grant_is_flagged_for_reauthorization_and_not_retried);

async fn a_row_written_by_another_tool_with_only_a_refresh_token_is_refreshed_at_once(
    backend: Backend,
) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, "").await;
    // Create the schema, then insert the way another program would.
    assert_eq!(home.run(&["run", "--once"], "").await.code, Some(0));
    let db = home.db().await;
    let rt = server.mint_refresh_token(clients::POST_ID, SCOPE).await;
    db.execute(
        "INSERT INTO oauth_credential (name, provider, refresh_token) VALUES ('imported', 'post', $1)",
        &[&rt],
    )
    .await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let (seconds_left,): (i64,) = db
        .fetch_one(
            "SELECT seconds_left FROM current_token WHERE name = 'imported'",
            &[],
        )
        .await;
    assert!(seconds_left > 60, "{seconds_left}");
}
on_both_backends!(a_row_written_by_another_tool_with_only_a_refresh_token_is_refreshed_at_once);

/// Opening skips the migrator when the file records exactly this binary's migrations; one
/// recorded migration changed or unknown to this binary is still refused with the migrator's
/// one-line error, and the file opens again once it is put back.
#[tokio::test]
async fn a_changed_or_unknown_recorded_migration_is_refused_on_sqlite() {
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let db = home.db().await;
    // Kept aside and put back after each case.
    sqlx::query("CREATE TABLE kept AS SELECT * FROM _sqlx_migrations")
        .execute(&db)
        .await
        .unwrap();
    for (change, message) in [
        (
            "UPDATE _sqlx_migrations SET checksum = zeroblob(48) WHERE version = 1",
            "migration 1 was previously applied but has been modified",
        ),
        (
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from a newer binary', 1, zeroblob(48), 0)",
            "migration 9999 was previously applied but is missing",
        ),
    ] {
        sqlx::query(change).execute(&db).await.unwrap();
        let run = home.run(&["status"], "").await;
        sqlx::raw_sql(
            "DELETE FROM _sqlx_migrations; INSERT INTO _sqlx_migrations SELECT * FROM kept",
        )
        .execute(&db)
        .await
        .unwrap();
        assert_eq!(run.code, Some(3), "{run:?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
        assert!(run.stderr.contains("cannot migrate the schema"), "{run:?}");
        assert!(run.stderr.contains(message), "{run:?}");
    }
    let run = home.run(&["status"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
}
