//! `tokenwarden invite` and the invitations in the store, on both backends: the link printed
//! under `[enroll] public_url`, stored only as a hash; `--list`, `--revoke`; re-authorization
//! links bound to the credential's provider and owner; a link spent exactly once when two uses
//! race.

use sha2::{Digest, Sha256};
use tokenwarden::domain::{Secret, TokenSet};
use tokenwarden::store::{Authorized, StoreError};

use crate::backends::{Backend, BackendHome, on_both_backends};
use crate::oauth_server::OauthServer;

/// The `[enroll]` table the tests here use.
pub const ENROLL: &str = "[enroll]\npublic_url = \"https://tw.example.com/enroll/\"\n";

/// The secret in a printed link (the part after `/i/`).
fn secret_of(link: &str) -> &str {
    link.trim()
        .strip_prefix("https://tw.example.com/enroll/i/")
        .unwrap_or_else(|| panic!("a link under public_url: {link:?}"))
}

async fn links_are_hashed_listed_and_revoked(backend: Backend) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, ENROLL).await;
    let run = home
        .run(
            &[
                "invite",
                "mailbox",
                "--provider",
                "basic",
                "--owner",
                "alice@example.com",
                "--scopes",
                "openid offline_access",
                "--valid",
                "2h",
            ],
            "",
        )
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.lines().count(), 1, "the link alone: {run:?}");
    let secret = secret_of(&run.stdout).to_owned();
    assert_eq!(secret.len(), 43, "256 bits, base64url");
    assert!(run.stderr.contains("valid until"), "{run:?}");

    let db = home.db().await;
    let (hash, name, provider, owner, scopes): (String, String, String, String, Option<String>) =
        db.fetch_one(
            "SELECT token_hash, name, provider, owner, scopes FROM enroll_invite",
            &[],
        )
        .await;
    assert_eq!(hash, hex::encode(Sha256::digest(secret.as_bytes())));
    assert_eq!(
        (name.as_str(), provider.as_str(), owner.as_str()),
        ("mailbox", "basic", "alice@example.com")
    );
    assert_eq!(scopes.as_deref(), Some("openid offline_access"));
    let (expires_in,): (i64,) = db
        .fetch_one("SELECT expires_at - created_at FROM enroll_invite", &[])
        .await;
    assert_eq!(expires_in, 7200);

    // The secret is nowhere but in the printed link: not in the table, not in --list.
    let (all,): (String,) = db
        .fetch_one(
            "SELECT concat_ws('|', token_hash, name, provider, owner, scopes) FROM enroll_invite",
            &[],
        )
        .await;
    assert!(!all.contains(&secret));
    let list = home.run(&["invite", "--list"], "").await;
    assert_eq!(list.code, Some(0), "{list:?}");
    assert!(list.stdout.contains("mailbox") && list.stdout.contains("alice@example.com"));
    assert!(!list.all().contains(&secret), "--list shows no secret");
    let json = home.run(&["invite", "--list", "--json"], "").await;
    let listed: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(listed[0]["name"], "mailbox");
    assert_eq!(listed[0]["reauthorize"], false);
    let id = listed[0]["id"].as_i64().unwrap().to_string();

    let revoked = home.run(&["invite", "--revoke", &id], "").await;
    assert_eq!(revoked.code, Some(0), "{revoked:?}");
    assert!(revoked.stdout.contains("revoked"), "{revoked:?}");
    let list = home.run(&["invite", "--list"], "").await;
    assert!(list.stdout.contains("no outstanding links"), "{list:?}");
    let again = home.run(&["invite", "--revoke", &id], "").await;
    assert!(again.stdout.contains("already revoked"), "{again:?}");
    let unknown = home.run(&["invite", "--revoke", "9999"], "").await;
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
    assert!(
        unknown.stderr.contains("no link with id 9999"),
        "{unknown:?}"
    );
}
on_both_backends!(links_are_hashed_listed_and_revoked);

async fn reauthorization_links_keep_provider_and_owner(backend: Backend) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, ENROLL).await;
    let added = home
        .run(
            &["add", "crm", "--provider", "basic", "--owner", "bob"],
            "rt-bob-canary",
        )
        .await;
    assert_eq!(added.code, Some(0), "{added:?}");
    for (provider, owner) in [("post", "bob"), ("basic", "carol")] {
        let run = home
            .run(
                &["invite", "crm", "--provider", provider, "--owner", owner],
                "",
            )
            .await;
        assert_eq!(run.code, Some(2), "{provider}/{owner}: {run:?}");
        assert!(
            run.stderr
                .contains("exists with provider basic and owner bob"),
            "{run:?}"
        );
        assert!(run.stdout.is_empty());
    }
    let run = home
        .run(
            &["invite", "crm", "--provider", "basic", "--owner", "bob"],
            "",
        )
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("re-authorize"), "{run:?}");
    let rows: Vec<(String, bool)> = home
        .db()
        .await
        .fetch_all("SELECT name, reauthorize FROM enroll_invite", &[])
        .await;
    assert_eq!(rows, [("crm".to_owned(), true)]);
}
on_both_backends!(reauthorization_links_keep_provider_and_owner);

/// Bad input is one line and exit 2, before the database: no [enroll], an unknown provider, a
/// name or owner outside the rules, a --valid out of range.
#[tokio::test]
async fn invite_refuses_bad_input_in_one_line() {
    let server = OauthServer::start().await;
    let bare = crate::harness::Home::new(&server, "");
    let run = bare
        .run(&["invite", "x", "--provider", "basic", "--owner", "o"], "")
        .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("[enroll]"), "{run:?}");
    let home = crate::harness::Home::new(&server, ENROLL);
    for args in [
        &["invite", "x", "--provider", "nope", "--owner", "o"][..],
        &["invite", "x<b>", "--provider", "basic", "--owner", "o"],
        &[
            "invite",
            "x",
            "--provider",
            "basic",
            "--owner",
            "o\"><script>",
        ],
        &[
            "invite",
            "x",
            "--provider",
            "basic",
            "--owner",
            "o",
            "--valid",
            "10s",
        ],
        &[
            "invite",
            "x",
            "--provider",
            "basic",
            "--owner",
            "o",
            "--valid",
            "400d",
        ],
        &["invite", "x", "--provider", "basic"],
    ] {
        let run = home.run(args, "").await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stderr.trim().lines().count(), 1, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty());
    }
    assert!(!home.db.exists(), "nothing was created");
}

async fn a_link_is_spent_exactly_once(backend: Backend) {
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, backend, ENROLL).await;
    let run = home
        .run(
            &["invite", "raced", "--provider", "basic", "--owner", "dora"],
            "",
        )
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let secret = secret_of(&run.stdout).to_owned();
    let store = home.store().await;
    let hash = hex::encode(Sha256::digest(secret.as_bytes()));
    let invite = store.invite_by_hash(&hash).await.unwrap().expect("found");
    let now = tokenwarden::domain::now();
    let tokens = |n: u32| TokenSet {
        access_token: Secret::new(format!("at-raced-{n}-canary")),
        token_type: "Bearer".to_owned(),
        expires_at: now + 3600,
        refresh_token: Some(Secret::new(format!("rt-raced-{n}-canary"))),
        refresh_token_expires_at: None,
        scope: None,
        lifetime_reported: true,
        instance_url: None,
    };
    let (a, b) = (tokens(1), tokens(2));
    let authorized = |t| Authorized {
        name: "raced",
        provider: "basic",
        scopes: None,
        owner: Some("dora"),
        tokens: t,
        refresh_due_at: now + 3000,
        http_status: Some(200),
        duration_ms: 5,
        actor: "test",
        invite: Some(invite.id),
    };
    let (first, second) = (authorized(&a), authorized(&b));
    let (one, two) = tokio::join!(
        store.store_authorized(&first, now),
        store.store_authorized(&second, now)
    );
    let won = [one.is_ok(), two.is_ok()];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "exactly one wins");
    for lost in [one, two].into_iter().filter_map(Result::err) {
        assert!(matches!(lost, StoreError::InviteGone(_)), "{lost}");
    }
    let db = home.db().await;
    let (n,): (i64,) = db
        .fetch_one(
            "SELECT count(*) FROM oauth_credential WHERE name = 'raced'",
            &[],
        )
        .await;
    assert_eq!(n, 1);
    let (trigger, invite_id, outcome): (String, Option<i64>, String) = db
        .fetch_one(
            "SELECT trigger, invite_id, outcome FROM token_rotation WHERE credential_name = 'raced'",
            &[],
        )
        .await;
    assert_eq!(
        (trigger.as_str(), outcome.as_str()),
        ("invite", "authorized")
    );
    assert_eq!(invite_id, Some(invite.id));
    let spent = store.invite_by_hash(&hash).await.unwrap().unwrap();
    assert!(spent.spent_at.is_some());
    // Spent: a third use stores nothing.
    let third = store.store_authorized(&first, now).await;
    assert!(matches!(third, Err(StoreError::InviteGone(_))), "{third:?}");
    // A re-authorization through a link replaces only a credential of the link's provider and
    // owner: one made for another owner is refused, nothing stored.
    let created = home
        .run(
            &["invite", "raced", "--provider", "basic", "--owner", "dora"],
            "",
        )
        .await;
    assert_eq!(created.code, Some(0), "{created:?}");
    let hash = hex::encode(Sha256::digest(secret_of(&created.stdout).as_bytes()));
    let again = store.invite_by_hash(&hash).await.unwrap().unwrap();
    assert!(again.reauthorize);
    db.execute(
        "UPDATE oauth_credential SET owner = 'eve' WHERE name = 'raced'",
        &[],
    )
    .await;
    let mut other = authorized(&a);
    other.invite = Some(again.id);
    let refused = store.store_authorized(&other, now).await;
    assert!(
        matches!(refused, Err(StoreError::InviteMismatch { .. })),
        "{refused:?}"
    );
    let unspent = store.invite_by_hash(&hash).await.unwrap().unwrap();
    assert!(unspent.spent_at.is_none(), "refused: the link is not spent");
    store.close().await;
}
on_both_backends!(a_link_is_spent_exactly_once);

async fn a_needs_reauthorization_alert_carries_a_fresh_link(backend: Backend) {
    use crate::fake_endpoint::{FakeEndpoint, Reply};
    let dead = FakeEndpoint::start(Reply::json(
        400,
        r#"{"error":"invalid_grant","error_description":"revoked"}"#,
    ))
    .await;
    let probe = tempfile::tempdir().unwrap();
    let prefix = probe.path().join("alert");
    let home = BackendHome::with_token_url(
        &dead.token_url(),
        backend,
        &format!(
            "[alerts]\non_event = [\"sh\", \"-c\", \"env > \\\"$0.$TOKENWARDEN_CREDENTIAL\\\"\", \"{}\"]\n{ENROLL}",
            prefix.display()
        ),
    )
    .await;
    for (name, owner) in [("mailbox", Some("alice@example.com")), ("shared", None)] {
        let mut args = vec![
            "add",
            name,
            "--provider",
            "basic",
            "--scopes",
            "openid offline_access",
        ];
        if let Some(owner) = owner {
            args.extend(["--owner", owner]);
        }
        let added = home.run(&args, "rt-dead-canary-1").await;
        assert_eq!(added.code, Some(0), "{added:?}");
    }
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(1), "{once:?}");
    let read = |name: &str| {
        std::fs::read_to_string(format!("{}.{name}", prefix.display())).unwrap_or_default()
    };
    let env = read("mailbox");
    assert!(
        env.contains("TOKENWARDEN_EVENT=needs_reauthorization"),
        "{env}"
    );
    let link = env
        .lines()
        .find_map(|l| l.strip_prefix("TOKENWARDEN_REAUTH_URL="))
        .unwrap_or_else(|| panic!("no link in the alert: {env}"));
    let secret = secret_of(link).to_owned();
    // Without an owner there is nobody to send a link to.
    let shared = read("shared");
    assert!(
        shared.contains("TOKENWARDEN_EVENT=needs_reauthorization"),
        "{shared}"
    );
    assert!(!shared.contains("TOKENWARDEN_REAUTH_URL"), "{shared}");

    let db = home.db().await;
    let rows: Vec<(String, String, String, Option<String>, bool, String)> = db
        .fetch_all(
            "SELECT name, provider, owner, scopes, reauthorize, token_hash FROM enroll_invite",
            &[],
        )
        .await;
    assert_eq!(rows.len(), 1, "one link, for the credential with an owner");
    let (name, provider, owner, scopes, reauthorize, hash) = &rows[0];
    assert_eq!(
        (name.as_str(), provider.as_str(), owner.as_str()),
        ("mailbox", "basic", "alice@example.com")
    );
    assert_eq!(scopes.as_deref(), Some("openid offline_access"));
    assert!(*reauthorize);
    assert_eq!(*hash, hex::encode(Sha256::digest(secret.as_bytes())));
    assert!(
        !once.all().contains(&secret),
        "the link is in the alert only"
    );

    let status = home.run(&["status"], "").await;
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(
        status.stdout.contains("outstanding invitation links")
            && status
                .stdout
                .contains("mailbox: 1 link for alice@example.com"),
        "{status:?}"
    );
    assert!(!status.all().contains(&secret));
}
on_both_backends!(a_needs_reauthorization_alert_carries_a_fresh_link);

/// Credential `a` of an old database (before 0007), both tokens set.
const OLD_CREDENTIAL: &str = "INSERT INTO oauth_credential (name, provider, refresh_token, \
     access_token, access_token_expires_at, refresh_due_at, status) VALUES \
     ('a', 'basic', 'rt-a-canary', 'at-a-canary', 4000000000, 3999999000, 'active')";
const OLD_REFRESH_TOKEN: &str = "rt-a-canary";

/// The trigger CHECK as 0007 widened it: `invite` (with its invite) is taken, a trigger it does
/// not name is not.
async fn the_trigger_check_takes_invite_only(db: &crate::backends::Db) {
    db.execute(
        "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, lease_owner, \
         started_at, outcome, invite_id) VALUES (1, 'a', 'basic', 'invite', 'x', 200, 'authorized', 1)",
        &[],
    )
    .await;
    assert!(
        db.try_execute(
            "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, \
             lease_owner, started_at) VALUES (1, 'a', 'basic', 'nonsense', 'x', 300)",
            &[],
        )
        .await
        .is_err()
    );
}

/// SQLite only (PostgreSQL alters the CHECK in place): a database as migrations 0001-0006 left
/// it, with a journal row whose every column is set, is upgraded by the binary on open. 0007
/// rebuilds `token_rotation` to widen its trigger CHECK and 0008 adds `sent_at`: every old
/// column keeps its value, the new ones are NULL, `rotation_log` reads it, the credential's
/// tokens are untouched, and the widened CHECK takes `invite`.
#[tokio::test]
async fn the_journal_rebuild_keeps_every_column_of_an_old_database() {
    use sqlx::migrate::Migrator;
    // Every column 0001-0006 gave token_rotation, as one literal for the static SQL below.
    macro_rules! columns {
        () => {
            "id, credential_id, credential_name, provider, trigger, lease_owner, \
        started_at, finished_at, duration_ms, outcome, http_status, error_code, error_description, \
        old_expires_at, new_expires_at, refresh_token_rotated, old_refresh_fingerprint, \
        new_refresh_fingerprint, new_access_fingerprint, expires_in_reported"
        };
    }
    let server = OauthServer::start().await;
    let home = crate::harness::Home::new(&server, "");
    let old = crate::harness::migrations_before("sqlite", "0007");
    std::fs::File::create(&home.db).unwrap();
    let db = home.db().await;
    Migrator::new(old.path())
        .await
        .unwrap()
        .run(&db)
        .await
        .unwrap();
    sqlx::query(OLD_CREDENTIAL).execute(&db).await.unwrap();
    sqlx::query(concat!(
        "INSERT INTO token_rotation (",
        columns!(),
        ") VALUES (7, 1, 'a', 'basic', 'manual', 'host pid 1', \
         100, 101, 1000, 'refreshed', 200, 'e', 'why', 50, 4000000000, 1, 'fp-old', 'fp-new', \
         'fp-at', 3600)"
    ))
    .execute(&db)
    .await
    .unwrap();
    let select = concat!(
        "SELECT json_array(",
        columns!(),
        ") FROM token_rotation ORDER BY id"
    );
    // Every column of every row as one JSON array (tuples stop at 16 columns).
    let before: Vec<(String,)> = sqlx::query_as(select).fetch_all(&db).await.unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(
        before[0].0.contains("fp-at") && before[0].0.contains("3600"),
        "{before:?}"
    );
    db.close().await;

    // The binary migrates it on open.
    let status = home.run(&["status"], "").await;
    assert_eq!(status.code, Some(0), "{status:?}");
    let db = home.db().await;
    let after: Vec<(String,)> = sqlx::query_as(select).fetch_all(&db).await.unwrap();
    assert_eq!(after, before);
    let (sent_at, invite_id): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT sent_at, invite_id FROM token_rotation WHERE id = 7")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((sent_at, invite_id), (None, None));
    let log = home.run(&["log", "a"], "").await;
    assert_eq!(log.code, Some(0), "{log:?}");
    assert!(log.stdout.contains("refreshed"), "{log:?}");
    let (outcome,): (String,) = sqlx::query_as("SELECT outcome FROM rotation_log WHERE id = 7")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(outcome, "refreshed");
    let token = home.run(&["token", "a"], "").await;
    assert_eq!(token.stdout.trim(), "at-a-canary", "{token:?}");
    let (refresh_token,): (String,) =
        sqlx::query_as("SELECT refresh_token FROM oauth_credential WHERE name = 'a'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(refresh_token, OLD_REFRESH_TOKEN);
    the_trigger_check_takes_invite_only(&(&db).into()).await;
}

/// PostgreSQL: a database as migrations 0001-0006 left it, with a credential and a journal row
/// whose every column is set, is upgraded by the binary on open (0007 alters the trigger CHECK and
/// adds `invite_id`, 0008 adds `sent_at`): the journal row keeps every value, the new columns are
/// NULL, the credential's tokens are untouched, and the widened CHECK takes `invite`.
#[tokio::test]
async fn an_old_postgres_database_upgrades_keeping_its_tokens_and_journal() {
    use sqlx::migrate::Migrator;
    let server = OauthServer::start().await;
    let home = BackendHome::new(&server, Backend::Postgres, "").await;
    let crate::backends::Db::Postgres(db) = home.db().await else {
        unreachable!("a PostgreSQL home")
    };
    let old = crate::harness::migrations_before("postgres", "0007");
    Migrator::new(old.path())
        .await
        .unwrap()
        .run(&db)
        .await
        .unwrap();
    sqlx::query(OLD_CREDENTIAL).execute(&db).await.unwrap();
    sqlx::query(
        "INSERT INTO token_rotation (id, credential_id, credential_name, provider, trigger, \
         lease_owner, started_at, finished_at, duration_ms, outcome, http_status, error_code, \
         error_description, old_expires_at, new_expires_at, refresh_token_rotated, \
         old_refresh_fingerprint, new_refresh_fingerprint, new_access_fingerprint) VALUES \
         (7, 1, 'a', 'basic', 'manual', 'host pid 1', 100, 101, 1000, 'refreshed', 200, 'e', \
         'why', 50, 4000000000, true, 'fp-old', 'fp-new', 'fp-at')",
    )
    .execute(&db)
    .await
    .unwrap();
    // Every column 0001-0006 gave the row, as JSON (the new columns left out).
    let select = "SELECT (to_jsonb(r) - 'invite_id' - 'sent_at')::text FROM token_rotation r \
                  ORDER BY id";
    let before: Vec<(String,)> = sqlx::query_as(select).fetch_all(&db).await.unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].0.contains("fp-at"), "{before:?}");

    // The binary migrates it on open.
    let status = home.run(&["status"], "").await;
    assert_eq!(status.code, Some(0), "{status:?}");
    let (migrations,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(migrations, 8, "0007 and 0008 ran");
    let after: Vec<(String,)> = sqlx::query_as(select).fetch_all(&db).await.unwrap();
    assert_eq!(after, before);
    let (sent_at, invite_id): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT sent_at, invite_id FROM token_rotation WHERE id = 7")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((sent_at, invite_id), (None, None));
    let (refresh_token, access_token): (String, String) =
        sqlx::query_as("SELECT refresh_token, access_token FROM oauth_credential WHERE name = 'a'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        (refresh_token.as_str(), access_token.as_str()),
        (OLD_REFRESH_TOKEN, "at-a-canary")
    );
    let token = home.run(&["token", "a"], "").await;
    assert_eq!(token.stdout.trim(), "at-a-canary", "{token:?}");
    the_trigger_check_takes_invite_only(&(&db).into()).await;
}
