//! `migrate --to postgres://…` on a real server: a SQLite database with sealed tokens, a gap in
//! its ids and a journal copied into an empty PostgreSQL database; every column of every row
//! compared here (independently of the binary's own check), the source file's bytes unchanged,
//! the copy working (sealed tokens open under their kept ids, the next id past the largest), and
//! every refusal: a claim held in the source, a destination that holds credentials, a source that
//! is not SQLite, a URL that is not PostgreSQL's.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::backends::stored_secrets;
use crate::harness::{Home, assert_no_secrets, write_secret};
use crate::oauth_server::{OauthServer, clients};
use crate::postgres::{PASSWORD, PgServer};

const SCOPE: &str = "openid offline_access api:read";

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Every row of `table` by id, every column (SQLite's own list of them) as text; booleans as 0/1.
async fn sqlite_rows(
    db: &sqlx::SqlitePool,
    table: &str,
) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
        .bind(table)
        .fetch_all(db)
        .await
        .unwrap();
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST({c} AS TEXT)"))
        .collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY id", select.join(", "));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(db)
        .await
        .unwrap();
    let values = rows
        .iter()
        .map(|r| {
            (0..columns.len())
                .map(|i| r.get::<Option<String>, _>(i))
                .collect()
        })
        .collect();
    (columns, values)
}

/// The same columns of `table` on PostgreSQL, as text; booleans as 0/1.
async fn pg_rows(db: &sqlx::PgPool, table: &str, columns: &[String]) -> Vec<Vec<Option<String>>> {
    let mut pg_columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1",
    )
    .bind(table)
    .fetch_all(db)
    .await
    .unwrap();
    let mut mine = columns.to_vec();
    pg_columns.sort();
    mine.sort();
    assert_eq!(pg_columns, mine, "{table}: the same columns on both sides");
    let select: Vec<String> = columns
        .iter()
        .map(|c| {
            format!("CASE {c}::text WHEN 'true' THEN '1' WHEN 'false' THEN '0' ELSE {c}::text END")
        })
        .collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY id", select.join(", "));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(db)
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (0..columns.len())
                .map(|i| r.get::<Option<String>, _>(i))
                .collect()
        })
        .collect()
}

/// Points the configuration's `database` at `database`.
fn set_database(home: &Home, database: &str) {
    let text = std::fs::read_to_string(&home.config).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("database = ") {
                format!("database = \"{database}\"")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&home.config, text.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn migrate_copies_sqlite_into_an_empty_postgres_row_by_row_and_refuses_what_it_must() {
    let pg = PgServer::start().await;
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    let password = home.path().join("pg.password");
    write_secret(&password, &format!("{PASSWORD}\n"));
    let key = home.path().join("seal.key");
    {
        use base64::Engine as _;
        let bytes: [u8; 32] = rand::random();
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        std::fs::write(&key, format!("{text}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    home.append_config(&format!(
        "[postgres]\npassword_file = \"{}\"\n\n[encryption]\nkey_file = \"{}\"\n",
        password.display(),
        key.display()
    ));
    let mut minted = Vec::new();
    for (name, client, provider) in [
        ("a", clients::BASIC_ID, "basic"),
        ("b", clients::POST_ID, "post"),
        ("c", clients::JWT_ID, "jwt"),
    ] {
        let rt = server.mint_refresh_token(client, SCOPE).await;
        home.add(name, provider, &rt).await;
        minted.push(rt);
    }
    let once = home.run(&["run", "--once"], "").await;
    assert_eq!(once.code, Some(0), "{once:?}");
    let db = home.db().await;
    // A gap in the ids: "c" keeps id 3 on PostgreSQL, and its sealed tokens (bound to it) open.
    sqlx::query("DELETE FROM oauth_credential WHERE name = 'b'")
        .execute(&db)
        .await
        .unwrap();
    let sealed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM oauth_credential WHERE refresh_token LIKE 'tw1:%'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(sealed, 2, "the refresh tokens are sealed");
    let mut secrets = stored_secrets(&db).await;
    secrets.extend(minted.iter().cloned());
    secrets.push(PASSWORD.to_owned());
    let mut outputs = Vec::new();

    // A claim running in the source: refused, exit 6, one line naming how many.
    sqlx::query("UPDATE oauth_credential SET lease_owner = 'x', lease_expires_at = CAST(strftime('%s','now') AS INTEGER) + 600 WHERE name = 'a'")
        .execute(&db)
        .await
        .unwrap();
    let claimed = home.run(&["migrate", "--to", &pg.url()], "").await;
    assert_eq!(claimed.code, Some(6), "{claimed:?}");
    assert_eq!(claimed.stderr.trim().lines().count(), 1, "{claimed:?}");
    assert!(
        claimed
            .stderr
            .contains("1 credential(s) in the source database are claimed"),
        "{claimed:?}"
    );
    outputs.push(claimed.all());
    let pool = pg.pool().await;
    let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM oauth_credential")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(copied, 0, "nothing copied while a claim runs");
    // An expired lease is no claim: a process that died left it.
    sqlx::query("UPDATE oauth_credential SET lease_expires_at = 1 WHERE name = 'a'")
        .execute(&db)
        .await
        .unwrap();
    let (columns, credentials) = sqlite_rows(&db, "oauth_credential").await;
    let (journal_columns, journal) = sqlite_rows(&db, "token_rotation").await;
    assert_eq!(credentials.len(), 2);
    assert!(journal.len() >= 3, "{}", journal.len());
    db.close().await;
    let before = sha256_of(&home.db);
    let wal = home.db.with_extension("db-wal");
    let wal_before = wal.exists().then(|| sha256_of(&wal));

    let migrate = home.run(&["migrate", "--to", &pg.url()], "").await;
    assert_eq!(migrate.code, Some(0), "{migrate:?}");
    assert!(
        migrate.stdout.contains(&format!(
            "copied 2 credential(s) and {} journal row(s)",
            journal.len()
        )),
        "{migrate:?}"
    );
    outputs.push(migrate.all());
    assert_eq!(sha256_of(&home.db), before, "the source file is unchanged");
    // A reader of a WAL database (this read-only one too) may leave an empty -wal beside it: no
    // frame in it, so nothing written.
    match wal_before {
        Some(hash) => assert_eq!(sha256_of(&wal), hash),
        None => assert!(
            !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
            "the source's -wal holds no frames"
        ),
    }

    // Every column of every row, as this test reads them on each side.
    assert_eq!(
        pg_rows(&pool, "oauth_credential", &columns).await,
        credentials
    );
    assert_eq!(
        pg_rows(&pool, "token_rotation", &journal_columns).await,
        journal
    );

    // Into a database that holds credentials: refused, exit 2, nothing changed.
    let again = home.run(&["migrate", "--to", &pg.url()], "").await;
    assert_eq!(again.code, Some(2), "{again:?}");
    assert!(
        again
            .stderr
            .contains("the destination already holds 2 credential(s)"),
        "{again:?}"
    );
    outputs.push(again.all());
    assert_eq!(
        pg_rows(&pool, "oauth_credential", &columns).await,
        credentials
    );

    // A URL that is not PostgreSQL's: exit 2, the URL (and its password) not echoed.
    let bad = home
        .run(
            &["migrate", "--to", "mysql://u:hunter2-pw-77@127.0.0.1/db"],
            "",
        )
        .await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(!bad.all().contains("hunter2-pw-77"), "{bad:?}");

    // The copy in use: sealed tokens open under their kept ids, a new row gets the next id.
    set_database(&home, &pg.url());
    // Due now (their due time may be this very second, and a sweep takes what is due before it).
    sqlx::query("UPDATE oauth_credential SET refresh_due_at = 0")
        .execute(&pool)
        .await
        .unwrap();
    let on_pg = home.run(&["run", "--once"], "").await;
    assert_eq!(on_pg.code, Some(0), "{on_pg:?}");
    let refreshed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM token_rotation WHERE outcome = 'refreshed' AND credential_id IN (1, 3) \
         AND id > (SELECT max(id) FROM token_rotation) - 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(refreshed, 2, "{on_pg:?}");
    let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("d", "basic", &rt).await;
    secrets.push(rt);
    let id: i64 = sqlx::query_scalar("SELECT id FROM oauth_credential WHERE name = 'd'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(id, 4, "the identity moved past the largest id copied");
    let stats = server.stats().await;
    assert_eq!(stats.refresh_reuse, 0);

    // From PostgreSQL: migrate copies a SQLite database only.
    let from_pg = home.run(&["migrate", "--to", &pg.url()], "").await;
    assert_eq!(from_pg.code, Some(2), "{from_pg:?}");
    assert!(
        from_pg.stderr.contains("migrate copies a SQLite database"),
        "{from_pg:?}"
    );
    outputs.push(from_pg.all());
    for output in &outputs {
        assert_no_secrets("migrate's output", output, &secrets);
    }
}

#[tokio::test]
async fn migrate_with_a_wrong_password_is_one_line_exit_3_and_shows_no_password() {
    let pg = PgServer::start().await;
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    let password = home.path().join("pg.password");
    write_secret(&password, "wrong-password-3c9d1e\n");
    home.append_config(&format!(
        "[postgres]\npassword_file = \"{}\"\n",
        password.display()
    ));
    let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("a", "basic", &rt).await;
    let before = sha256_of(&home.db);
    let run = home.run(&["migrate", "--to", &pg.url()], "").await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.contains("postgres://postgres@127.0.0.1:"),
        "{run:?}"
    );
    assert_no_secrets(
        "migrate's output",
        &run.all(),
        &[
            "wrong-password-3c9d1e".to_owned(),
            PASSWORD.to_owned(),
            rt.clone(),
        ],
    );
    // A password in the URL itself is not shown either.
    let url = pg.url().replace("postgres@", "postgres:url-password-77aa@");
    let run = home.run(&["migrate", "--to", &url], "").await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(!run.all().contains("url-password-77aa"), "{run:?}");
    assert_eq!(sha256_of(&home.db), before, "the source is unchanged");
}
