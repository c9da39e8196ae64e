//! Sealed tokens (`[encryption]`), end to end: the real binary against the real oidc-provider
//! server, each test on SQLite and on PostgreSQL but for those searching the bytes of SQLite's
//! files (the database, its -wal and -shm, a `VACUUM INTO` copy). Values are opened here with the library's own `Keyring`, to know which
//! tokens to look for.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenwarden::store::seal::{Column, Key, Keyring, Place};

use crate::backends::{Backend, BackendHome, Db, count, journal_text, on_both_backends};
use crate::fake_endpoint::FakeEndpoint;
use crate::fake_endpoint::Reply;
use crate::harness::{Home, assert_no_secrets, eventually, finish, signal, stop};
use crate::oauth_server::{OauthServer, clients};

const SCOPE: &str = "openid offline_access api:read";

/// A fresh random key, written as base64 to `dir/name` with mode 0400.
pub fn key_file(dir: &Path, name: &str) -> (PathBuf, Key, String) {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    (path, Key::from_bytes(&bytes), text)
}

/// An `[encryption]` table: `current`, then `retired`.
pub fn encryption(current: &Path, retired: &[&Path], seal_access_tokens: bool) -> String {
    let retired: Vec<String> = retired
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        "[encryption]\nkey_file = \"{}\"\nretired_key_files = [{}]\nseal_access_tokens = {seal_access_tokens}\n",
        current.display(),
        retired.join(", ")
    )
}

/// Replaces (or removes, with "") the configuration's `[encryption]` table.
fn set_encryption(home: &Home, table: &str) {
    let config = std::fs::read_to_string(&home.config).unwrap();
    let start = config.find("[encryption]").unwrap_or_else(|| {
        config
            .find("[log]")
            .expect("the harness configuration has [log]")
    });
    let end = config[start..]
        .find("[log]")
        .map(|i| start + i)
        .expect("[log] follows");
    let updated = format!("{}{table}\n{}", &config[..start], &config[end..]);
    std::fs::write(&home.config, updated).unwrap();
}

/// Every credential's name and its refresh and access tokens, opened with `ring` where sealed.
async fn opened(db: &Db, ring: &Keyring) -> Vec<(String, Option<String>, Option<String>)> {
    let rows: Vec<(i64, String, Option<String>, Option<String>)> = db
        .fetch_all(
            "SELECT id, name, refresh_token, access_token FROM oauth_credential ORDER BY name",
            &[],
        )
        .await;
    rows.into_iter()
        .map(|(id, name, rt, at)| {
            let open = |column, v: Option<String>| {
                v.map(|v| {
                    if v.starts_with("tw1:") {
                        let place = Place {
                            id,
                            name: &name,
                            column,
                        };
                        ring.open(place, &v)
                            .unwrap_or_else(|e| panic!("{name}: {e}"))
                            .expose()
                            .to_owned()
                    } else {
                        v
                    }
                })
            };
            let rt = open(Column::RefreshToken, rt);
            let at = open(Column::AccessToken, at);
            (name, rt, at)
        })
        .collect()
}

/// The stored heads (`tw1:<key id>:`, or the first characters of plaintext) per column.
async fn key_of_every_row(db: &Db) -> Vec<(String, Option<String>)> {
    db.fetch_all(
        "SELECT name, substr(refresh_token, 1, 13) FROM oauth_credential ORDER BY name",
        &[],
    )
    .await
}

fn head(key: &Key) -> String {
    format!("tw1:{}:", key.id())
}

/// The bytes of the database and its -wal and -shm files, and of `extra` files.
pub fn file_bytes(db: &Path, extra: &[&Path]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    for path in extra {
        out.push((path.display().to_string(), std::fs::read(path).unwrap()));
    }
    out
}

/// Fails if any of `tokens` occurs in any of `files`.
pub fn assert_not_in_files(files: &[(String, Vec<u8>)], tokens: &BTreeSet<String>) {
    assert!(!files.is_empty());
    for (path, bytes) in files {
        for token in tokens {
            assert!(token.len() >= 16, "token too short to search for");
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "{path} contains a token (fingerprint {})",
                crate::harness::fingerprint(token)
            );
        }
    }
}

#[tokio::test]
async fn after_sealed_sweeps_no_token_is_in_the_database_its_wal_shm_or_a_vacuum_copy() {
    let server = OauthServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, key, key_text) = key_file(dir.path(), "key");
    let home = Home::new(
        &server,
        &format!(
            "schedule = \"* * * * * *\"\n{}",
            encryption(&path, &[], true)
        ),
    );
    let ring = Keyring::new(key.clone(), vec![], true).unwrap();
    let mut tokens = BTreeSet::new();
    for (name, provider, client) in [
        ("sp-basic", "basic", clients::BASIC_ID),
        ("sp-post", "post", clients::POST_ID),
        ("sp-jwt", "jwt", clients::JWT_ID),
    ] {
        let rt = server.mint_refresh_token(client, SCOPE).await;
        home.add(name, provider, &rt).await;
        tokens.insert(rt);
    }
    let cc = home
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
    assert_eq!(cc.code, Some(0), "{cc:?}");

    let daemon = home.command(&["run"]).spawn().unwrap();
    let db = home.db().await;
    let both = Db::Sqlite(db.clone());
    // Every token the rows held along the way, opened: the rotated refresh tokens of each sweep.
    let mut seen = BTreeSet::new();
    let started = std::time::Instant::now();
    loop {
        for (_, rt, at) in opened(&both, &ring).await {
            seen.extend(rt.into_iter().chain(at));
        }
        let refreshed = count(
            &db,
            "SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'",
        )
        .await;
        if refreshed >= 12 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "three sweeps' refreshes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, rt, at) in opened(&both, &ring).await {
        seen.extend(rt.into_iter().chain(at));
    }
    tokens.extend(seen);
    let heads = key_of_every_row(&both).await;
    for (name, rt) in &heads {
        let expected = (name != "svc").then(|| head(&key));
        assert_eq!(rt, &expected, "{name}: sealed under the key");
    }
    // While the daemon runs, with its -wal and -shm in use; and a VACUUM INTO copy.
    let copy = dir.path().join("copy.db");
    sqlx::query("VACUUM INTO ?1")
        .bind(copy.display().to_string())
        .execute(&db)
        .await
        .unwrap();
    let files = file_bytes(&home.db, &[&copy]);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("-wal")),
        "the WAL is there"
    );
    assert_not_in_files(&files, &tokens);

    // current_token says the access token is sealed; `token` opens it.
    let (at, sealed): (Option<String>, bool) = sqlx::query_as(
        "SELECT access_token, access_token_sealed FROM current_token WHERE name = 'sp-jwt'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((at, sealed), (None, true));
    let token = home.run(&["token", "sp-jwt"], "").await;
    assert_eq!(token.code, Some(0), "{token:?}");
    assert!(
        server.introspect_active(token.stdout.trim()).await,
        "{token:?} {:?}",
        server.stats().await
    );

    let output = stop(daemon).await;
    assert_eq!(output.status.code(), Some(0));
    assert_not_in_files(&file_bytes(&home.db, &[]), &tokens);
    let stats = server.stats().await;
    assert_eq!(stats.refresh_reuse, 0, "{stats:?}");

    let status = home.run(&["status", "--json"], "").await;
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(rows[0]["refresh_token_key"], key.id(), "{rows}");
    let doctor = home.run(&["doctor"], "").await;
    assert!(
        doctor.stdout.contains("current key")
            && doctor
                .stdout
                .contains(&format!("{}: 3 refresh tokens, 4 access tokens", key.id())),
        "{doctor:?}"
    );
    let mut secrets: Vec<String> = tokens.into_iter().collect();
    secrets.push(key_text);
    let daemon_output = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for (what, text) in [
        ("daemon output", daemon_output),
        ("status", status.all()),
        ("doctor", doctor.all()),
        ("journal", journal_text(&db).await),
    ] {
        assert_no_secrets(what, &text, &secrets);
    }
}

async fn by_default_access_tokens_stay_readable_and_refresh_tokens_are_sealed(backend: Backend) {
    let server = OauthServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, key, _) = key_file(dir.path(), "key");
    let home = BackendHome::new(&server, backend, &encryption(&path, &[], false)).await;
    home.add(
        "c",
        "post",
        &server.mint_refresh_token(clients::POST_ID, SCOPE).await,
    )
    .await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let db = home.db().await;
    let (at, sealed, rt): (String, bool, String) = db
        .fetch_one(
            "SELECT t.access_token, t.access_token_sealed, c.refresh_token FROM current_token t \
             JOIN oauth_credential c USING (name) WHERE name = 'c'",
            &[],
        )
        .await;
    db.close().await;
    assert!(!sealed && server.introspect_active(&at).await);
    assert!(rt.starts_with(&head(&key)), "the refresh token is sealed");
    let token = home.run(&["token", "c"], "").await;
    assert_eq!(token.stdout.trim(), at);
    let check = home.run(&["check-config"], "").await;
    assert_eq!(check.code, Some(0), "{check:?}");
    assert!(
        check.stdout.contains(&format!(
            "encryption: refresh tokens sealed under key {}",
            key.id()
        )),
        "{check:?}"
    );
}
on_both_backends!(by_default_access_tokens_stay_readable_and_refresh_tokens_are_sealed);

async fn swapped_or_truncated_ciphertexts_flag_their_credentials_and_the_rest_go_on(
    backend: Backend,
) {
    let server = OauthServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = key_file(dir.path(), "key");
    let home = BackendHome::new(&server, backend, &encryption(&path, &[], false)).await;
    let mut minted = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
        home.add(name, "basic", &rt).await;
        minted.push(rt);
    }
    let db = home.db().await;
    let stored = async |name: &str| {
        db.fetch_one::<(String,)>(
            "SELECT refresh_token FROM oauth_credential WHERE name = $1",
            &[name],
        )
        .await
        .0
    };
    let (a, b) = (stored("a").await, stored("b").await);
    for (name, value) in [("a", &b), ("b", &a)] {
        db.execute(
            "UPDATE oauth_credential SET refresh_token = $1 WHERE name = $2",
            &[value, name],
        )
        .await;
    }
    db.execute(
        "UPDATE oauth_credential SET refresh_token = substr(refresh_token, 1, length(refresh_token) - 7) \
         WHERE name = 'c'",
        &[],
    )
    .await;

    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let stats = server.stats().await;
    assert_eq!(
        (stats.token_requests, stats.refresh_ok),
        (1, 1),
        "only d's token was sent: {stats:?}"
    );
    let rows: Vec<(String, String, Option<String>)> = db
        .fetch_all(
            "SELECT name, status, last_error FROM oauth_credential ORDER BY name",
            &[],
        )
        .await;
    db.close().await;
    for (name, status, last_error) in &rows {
        if name == "d" {
            assert_eq!(status, "active");
            assert_eq!(last_error, &None);
        } else {
            assert_eq!(status, "needs_reauthorization", "{name}");
            let e = last_error.as_deref().unwrap();
            assert!(
                e.contains("cannot be opened") && e.contains("not sent"),
                "{name}: {e}"
            );
        }
    }
    let token = home.run(&["token", "d"], "").await;
    assert_eq!(token.code, Some(0), "{token:?}");
    let doctor = home.run(&["doctor", "a"], "").await;
    assert!(doctor.stdout.contains("cannot be opened"), "{doctor:?}");
    assert_no_secrets("run", &run.all(), &minted);
}
on_both_backends!(swapped_or_truncated_ciphertexts_flag_their_credentials_and_the_rest_go_on);

async fn a_key_the_configuration_lacks_stops_every_command_before_anything_is_claimed(
    backend: Backend,
) {
    let server = OauthServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (k1, key1, _) = key_file(dir.path(), "k1");
    let (k2, _, _) = key_file(dir.path(), "k2");
    let home = BackendHome::new(&server, backend, &encryption(&k1, &[], false)).await;
    for name in ["a", "b"] {
        home.add(
            name,
            "basic",
            &server.mint_refresh_token(clients::BASIC_ID, SCOPE).await,
        )
        .await;
    }
    let db = home.db().await;
    let journal = db.count("SELECT count(*) FROM token_rotation").await;

    // The key replaced instead of retired: every command that needs it stops, naming the rows.
    set_encryption(&home, &encryption(&k2, &[], false));
    for args in [
        &["run", "--once"][..],
        &["check-config"],
        &["refresh", "a"],
        &["rekey"],
    ] {
        let run = home.run(args, "").await;
        assert_eq!(run.code, Some(5), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(key1.id()) && run.stderr.contains("2 credentials: a, b"),
            "{args:?}: {run:?}"
        );
    }
    let add = home
        .run(&["add", "x", "--provider", "basic"], "rt-x-0123456789")
        .await;
    assert_eq!(add.code, Some(5), "{add:?}");
    // No key at all: the same, and nothing is written as plaintext.
    set_encryption(&home, "");
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(run.stderr.contains("no [encryption] key"), "{run:?}");
    let add = home
        .run(
            &["add", "a", "--provider", "basic", "--replace"],
            "rt-plain-0123456789",
        )
        .await;
    assert_eq!(add.code, Some(5), "{add:?}");
    assert_eq!(server.stats().await.token_requests, 0, "nothing was sent");
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation").await,
        journal
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM oauth_credential WHERE substr(refresh_token, 1, 4) <> 'tw1:'"
        )
        .await,
        0
    );
    db.close().await;

    // A key file that is missing, or not a key: a configuration error (exit 2), in one line.
    set_encryption(&home, &encryption(&dir.path().join("nope"), &[], false));
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("encryption key file"), "{run:?}");
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "definitely-not-a-key").unwrap();
    set_encryption(&home, &encryption(&bad, &[], false));
    let run = home.run(&["check-config"], "").await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(!run.all().contains("definitely-not-a-key"), "{run:?}");
}
on_both_backends!(a_key_the_configuration_lacks_stops_every_command_before_anything_is_claimed);

/// On both backends: rekey beside the group writer is the PostgreSQL lock-order case too.
async fn rotation_with_two_keys_while_the_daemon_runs_loses_nothing(backend: Backend) {
    const CREDENTIALS: usize = 12;
    let server = OauthServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (k1, key1, _) = key_file(dir.path(), "k1");
    let (k2, key2, _) = key_file(dir.path(), "k2");
    let home = BackendHome::new(
        &server,
        backend,
        &format!(
            "schedule = \"* * * * * *\"\nconcurrency = 4\n{}",
            encryption(&k1, &[], true)
        ),
    )
    .await;
    for i in 0..CREDENTIALS {
        let (provider, client) = if i % 2 == 0 {
            ("basic", clients::BASIC_ID)
        } else {
            ("post", clients::POST_ID)
        };
        home.add(
            &format!("c{i:02}"),
            provider,
            &server.mint_refresh_token(client, SCOPE).await,
        )
        .await;
    }
    let first = home.run(&["run", "--once"], "").await;
    assert_eq!(first.code, Some(0), "{first:?}");

    // The new key becomes current, the old one retired; the daemon keeps refreshing (every
    // second: each credential every sweep) while rekey moves the rows over.
    set_encryption(&home, &encryption(&k2, &[&k1], true));
    let daemon = home.command(&["run"]).spawn().unwrap();
    let db = home.db().await;
    let refreshed = || db.count("SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed'");
    let before = refreshed().await;
    for _ in 0..3 {
        let rekey = home.run(&["rekey"], "").await;
        assert!(matches!(rekey.code, Some(0 | 1)), "{rekey:?}");
        assert!(rekey.stdout.contains("current key"), "{rekey:?}");
    }
    eventually(Duration::from_secs(40), "two more sweeps", || async {
        refreshed().await >= before + 2 * CREDENTIALS as i64
    })
    .await;
    let output = stop(daemon).await;
    assert_eq!(output.status.code(), Some(0));
    let rekey = home.run(&["rekey"], "").await;
    assert_eq!(rekey.code, Some(0), "{rekey:?}");
    assert!(
        rekey.stdout.contains(&format!(
            "{}: 0 refresh tokens, 0 access tokens; nothing needs it",
            key1.id()
        )),
        "{rekey:?}"
    );
    for (name, rt) in db
        .fetch_all::<(String, Option<String>)>(
            "SELECT name, substr(refresh_token, 1, 13) FROM oauth_credential ORDER BY name",
            &[],
        )
        .await
    {
        assert_eq!(rt, Some(head(&key2)), "{name}");
    }
    // The old key can go now; every credential still works.
    set_encryption(&home, &encryption(&k2, &[], true));
    let check = home.run(&["check-config"], "").await;
    assert_eq!(check.code, Some(0), "{check:?}");
    db.execute("UPDATE oauth_credential SET refresh_due_at = 0", &[])
        .await;
    let last = home.run(&["run", "--once"], "").await;
    assert_eq!(last.code, Some(0), "{last:?}");
    let stats = server.stats().await;
    assert_eq!(
        (stats.refresh_reuse, stats.refresh_failed),
        (0, 0),
        "{stats:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM token_rotation WHERE outcome <> 'refreshed'")
            .await,
        0
    );
}
on_both_backends!(rotation_with_two_keys_while_the_daemon_runs_loses_nothing);

async fn rekey_killed_half_way_and_run_again_ends_with_every_row_under_the_new_key(
    backend: Backend,
) {
    const REAL: usize = 6;
    const FILLER: i64 = 20_000;
    // Hour-long access tokens: nothing is due again after a sweep.
    let server = OauthServer::start_with_ttl(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let (k1, key1, _) = key_file(dir.path(), "k1");
    let (k2, key2, _) = key_file(dir.path(), "k2");
    let home = BackendHome::new(&server, backend, &encryption(&k1, &[], false)).await;
    for i in 0..REAL {
        home.add(
            &format!("real-{i}"),
            "basic",
            &server.mint_refresh_token(clients::BASIC_ID, SCOPE).await,
        )
        .await;
    }
    // Many more rows, written as another tool would (plaintext, disabled): the first start with
    // the key seals them.
    let db = home.db().await;
    let filler = match backend {
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < CAST($1 AS INTEGER)) \
             INSERT INTO oauth_credential (name, provider, status, refresh_token) \
             SELECT printf('filler-%06d', i), 'basic', 'disabled', printf('filler-refresh-token-%06d', i) FROM n"
        }
        Backend::Postgres => {
            "INSERT INTO oauth_credential (name, provider, status, refresh_token) \
             SELECT 'filler-' || lpad(i::text, 6, '0'), 'basic', 'disabled', \
                'filler-refresh-token-' || lpad(i::text, 6, '0') \
             FROM generate_series(1, CAST($1 AS BIGINT)) AS i"
        }
    };
    db.execute(filler, &[&FILLER.to_string()]).await;
    let first = home.run(&["run", "--once"], "").await;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(
        first.stderr.contains("plaintext tokens sealed"),
        "{first:?}"
    );
    let under = async |key: &Key| {
        db.fetch_one::<(i64,)>(
            "SELECT count(*) FROM oauth_credential WHERE substr(refresh_token, 1, 13) = $1",
            &[&head(key)],
        )
        .await
        .0
    };
    let total = FILLER + REAL as i64;
    assert_eq!(under(&key1).await, total);

    set_encryption(&home, &encryption(&k2, &[&k1], false));
    let mut rekey = home.command(&["rekey"]).spawn().unwrap();
    eventually(Duration::from_secs(30), "rekey to be under way", || async {
        under(&key2).await > 0
    })
    .await;
    signal(&rekey, "-KILL");
    assert_eq!(rekey.wait().await.unwrap().code(), None, "killed");
    let moved = under(&key2).await;
    assert!(
        0 < moved && moved < total,
        "killed half-way: {moved} of {total}"
    );
    assert_eq!(
        under(&key1).await + moved,
        total,
        "every row in one form or the other"
    );
    let ring = Keyring::new(key2.clone(), vec![key1.clone()], false).unwrap();
    for (name, rt, _) in opened(&db, &ring).await {
        if let Some(n) = name.strip_prefix("filler-") {
            assert_eq!(rt.unwrap(), format!("filler-refresh-token-{n}"));
        }
    }

    let again = home.run(&["rekey"], "").await;
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!((under(&key1).await, under(&key2).await), (0, total));
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(
        run.code,
        Some(0),
        "nothing due, the keys all there: {run:?}"
    );
    db.execute(
        "UPDATE oauth_credential SET refresh_due_at = 0 WHERE status = 'active'",
        &[],
    )
    .await;
    db.close().await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let stats = server.stats().await;
    assert_eq!(stats.refresh_ok, 2 * REAL as u64, "{stats:?}");
    assert_eq!(stats.refresh_reuse, 0, "{stats:?}");
}
on_both_backends!(rekey_killed_half_way_and_run_again_ends_with_every_row_under_the_new_key);

async fn turning_sealing_on_seals_a_plaintext_database_and_rekey_decrypt_turns_it_off(
    backend: Backend,
) {
    // Hour-long access tokens: nothing is due again after a sweep.
    let server = OauthServer::start_with_ttl(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, key, _) = key_file(dir.path(), "key");
    let home = BackendHome::new(&server, backend, "").await;
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
    let plain = home.run(&["run", "--once"], "").await;
    assert_eq!(plain.code, Some(0), "{plain:?}");
    let db = home.db().await;
    let ring = Keyring::new(key.clone(), vec![], false).unwrap();
    let before: BTreeSet<String> = opened(&db, &ring)
        .await
        .into_iter()
        .filter_map(|(_, rt, _)| rt)
        .collect();
    db.close().await;

    set_encryption(&home, &encryption(&path, &[], false));
    // A daemon start seals the rows before it claims any (nothing is due yet).
    let check = home.run(&["doctor"], "").await;
    assert!(
        check
            .stdout
            .contains("2 refresh tokens, 2 access tokens; the next start"),
        "{check:?}"
    );
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("plaintext tokens sealed"), "{run:?}");
    let db = home.db().await;
    for (name, rt) in key_of_every_row(&db).await {
        assert_eq!(rt, Some(head(&key)), "{name}");
    }
    let after: BTreeSet<String> = opened(&db, &ring)
        .await
        .into_iter()
        .filter_map(|(_, rt, _)| rt)
        .collect();
    assert_eq!(before, after, "the same tokens, sealed");
    db.close().await;
    if backend == Backend::Sqlite {
        // SQLite's files, searched byte by byte (PostgreSQL's are the server's).
        assert_not_in_files(&file_bytes(&home.db, &[]), &before);
    }

    // Off again: decrypt (with the key still configured), then drop the key.
    let decrypt = home.run(&["rekey", "--decrypt"], "").await;
    assert_eq!(decrypt.code, Some(0), "{decrypt:?}");
    set_encryption(&home, "");
    let db = home.db().await;
    assert_eq!(
        db.count(
            "SELECT count(*) FROM oauth_credential WHERE substr(refresh_token, 1, 4) = 'tw1:'"
        )
        .await,
        0
    );
    db.execute("UPDATE oauth_credential SET refresh_due_at = 0", &[])
        .await;
    db.close().await;
    let run = home.run(&["run", "--once"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(server.stats().await.refresh_reuse, 0);
}
on_both_backends!(turning_sealing_on_seals_a_plaintext_database_and_rekey_decrypt_turns_it_off);

async fn two_sealed_run_once_processes_on_one_database_never_reuse_a_refresh_token(
    backend: Backend,
) {
    const CREDENTIALS: usize = 30;
    // Hour-long tokens: once refreshed, a credential is not due again in the other process's
    // sweep, however much later it starts (120 s ones are due again at once: shorter than the
    // margin), so each is refreshed exactly once.
    let server = OauthServer::start_with_ttl(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = key_file(dir.path(), "key");
    let home = BackendHome::new(
        &server,
        backend,
        &format!("concurrency = 4\n{}", encryption(&path, &[], true)),
    )
    .await;
    for i in 0..CREDENTIALS {
        let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
        home.add(&format!("user-{i:03}"), "basic", &rt).await;
    }
    let (a, b) = tokio::join!(
        finish(home.command(&["run", "--once"]), ""),
        finish(home.command(&["run", "--once"]), "")
    );
    assert_eq!((a.code, b.code), (Some(0), Some(0)), "{a:?}\n{b:?}");
    let stats = server.stats().await;
    assert_eq!(stats.refresh_reuse, 0, "{stats:?}");
    assert_eq!(stats.refresh_ok, CREDENTIALS as u64, "{stats:?}");
}
on_both_backends!(two_sealed_run_once_processes_on_one_database_never_reuse_a_refresh_token);

async fn with_a_key_a_token_replaced_while_its_refresh_is_out_is_not_marked_dead(backend: Backend) {
    let dead = FakeEndpoint::start(Reply::json(400, r#"{"error":"invalid_grant"}"#)).await;
    let (proxy, gate) = FakeEndpoint::gated(&dead.token_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, key, _) = key_file(dir.path(), "key");
    let home =
        BackendHome::with_token_url(&proxy.token_url(), backend, &encryption(&path, &[], false))
            .await;
    home.add("c", "basic", "rt-old-0123456789").await;
    let child = home.command(&["run", "--once"]).spawn().unwrap();
    eventually(Duration::from_secs(10), "the request to go out", || async {
        proxy.requests() == 1
    })
    .await;
    let replace = home
        .run(
            &["add", "c", "--provider", "basic", "--replace"],
            "rt-new-0123456789",
        )
        .await;
    assert_eq!(replace.code, Some(0), "{replace:?}");
    gate.add_permits(1);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = home.db().await;
    let ring = Keyring::new(key, vec![], false).unwrap();
    let rows = opened(&db, &ring).await;
    assert_eq!(rows[0].1.as_deref(), Some("rt-new-0123456789"));
    let (status,): (String,) = db
        .fetch_one("SELECT status FROM oauth_credential", &[])
        .await;
    db.close().await;
    assert_eq!(status, "active", "the new grant is not marked dead");
}
on_both_backends!(with_a_key_a_token_replaced_while_its_refresh_is_out_is_not_marked_dead);
