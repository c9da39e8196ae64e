//! Benchmark databases. The schema always comes from the tokenwarden binary under test (it creates
//! and migrates an empty file); rows are generated in one INSERT … SELECT over a recursive CTE.
//! Generated databases are templates, kept in the work directory and reused while the binary's
//! migrations are unchanged; each measured run gets a fresh copy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

/// Bumped when the generated rows change shape, invalidating cached templates.
const GENERATOR_VERSION: u32 = 1;
/// Not-due rows fall due from an hour after generation ([`fill`]): a cached template holding such
/// rows is reused for this long only.
pub const NOT_DUE_FRESH_SECS: u64 = 3000;

/// Which credentials of a generated table are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    None,
    /// Every `n`th row is due (100 = 1%).
    EveryNth(u32),
    All,
}

impl Due {
    pub fn count(self, rows: u64) -> u64 {
        match self {
            Due::None => 0,
            Due::EveryNth(n) => rows / u64::from(n),
            Due::All => rows,
        }
    }

    fn modulus(self) -> i64 {
        match self {
            Due::None => 0,
            Due::EveryNth(n) => i64::from(n),
            Due::All => 1,
        }
    }

    pub fn label(self) -> String {
        match self {
            Due::None => "none".into(),
            Due::EveryNth(n) => format!("1/{n}"),
            Due::All => "all".into(),
        }
    }
}

pub async fn open(path: &Path) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(5))
            .create_if_missing(false),
    )
    .await
}

/// The migrations recorded in a database: what a template must match to be reused.
pub async fn migration_signature(path: &Path) -> Result<String, sqlx::Error> {
    let mut conn = open(path).await?;
    let (sig,): (Option<String>,) = sqlx::query_as(
        "SELECT group_concat(version || ':' || hex(checksum), ',') FROM (SELECT version, checksum FROM _sqlx_migrations ORDER BY version)",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(format!(
        "gen{GENERATOR_VERSION};{}",
        sig.unwrap_or_default()
    ))
}

/// Fills the empty, migrated database at `path` with `rows` credentials of `provider`.
/// Not-due rows are due 1 to 25 hours from `now`, spread evenly; due rows are due at 0 ("now").
/// Tokens are about the size of real ones (access 500+, refresh 200+ characters).
pub async fn fill(
    path: &Path,
    rows: u64,
    due: Due,
    provider: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut conn = open(path).await?;
    // Generation is not measured: no WAL and no fsync while writing, WAL again afterwards (the
    // journal mode is persistent, so copies open in WAL mode like a real database).
    sqlx::query("PRAGMA journal_mode = DELETE")
        .execute(&mut conn)
        .await?;
    sqlx::query("PRAGMA synchronous = OFF")
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1) \
         INSERT INTO oauth_credential (name, provider, owner, access_token, token_type, access_token_expires_at, \
             refresh_token, refresh_due_at, last_refreshed_at, created_at, updated_at) \
         SELECT printf('cred-%08d', i), ?2, 'user-' || i, printf('at%010d%.500c', i, 'a'), 'Bearer', \
             CASE WHEN ?3 > 0 AND i % ?3 = 0 THEN ?4 - 60 ELSE ?4 + 4200 + (i * 7919) % 86400 END, \
             printf('rt%010d%.200c', i, 'r'), \
             CASE WHEN ?3 > 0 AND i % ?3 = 0 THEN 0 ELSE ?4 + 3600 + (i * 7919) % 86400 END, \
             ?4 - 3000, ?4 - 86400, ?4 - 3000 \
         FROM c",
    )
    .bind(rows as i64)
    .bind(provider)
    .bind(due.modulus())
    .bind(now)
    .execute(&mut conn)
    .await?;
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Inserts one due credential per refresh token (for the real OAuth server, whose tokens cannot
/// be generated).
pub async fn fill_tokens(
    path: &Path,
    tokens: &[String],
    provider: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut conn = open(path).await?;
    let mut tx = conn.begin().await?;
    for (i, token) in tokens.iter().enumerate() {
        sqlx::query(
            "INSERT INTO oauth_credential (name, provider, owner, refresh_token, refresh_due_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
        )
        .bind(format!("oidc-{i:08}"))
        .bind(provider)
        .bind(format!("user-{i}"))
        .bind(token)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Makes every credential due again and empties the journal, so the same (live) tokens can be
/// refreshed by the next run.
pub async fn make_all_due(path: &Path) -> Result<(), sqlx::Error> {
    let mut conn = open(path).await?;
    sqlx::query(
        "UPDATE oauth_credential SET refresh_due_at = 0, next_attempt_at = 0, lease_owner = NULL, lease_expires_at = NULL",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query("DELETE FROM token_rotation")
        .execute(&mut conn)
        .await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Counts of a database after a run: (credentials due before `before`, rows refreshed at or after
/// `since`, pending journal rows).
pub async fn check(path: &Path, before: i64, since: i64) -> Result<(i64, i64, i64), sqlx::Error> {
    let mut conn = open(path).await?;
    let r: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM oauth_credential WHERE status = 'active' AND refresh_due_at < ?1), \
                (SELECT count(*) FROM oauth_credential WHERE last_refreshed_at >= ?2), \
                (SELECT count(*) FROM token_rotation WHERE outcome = 'pending')",
    )
    .bind(before)
    .bind(since)
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(r)
}

/// The SQLite library version (bundled by sqlx, as in tokenwarden).
pub async fn sqlite_version() -> Result<String, sqlx::Error> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .in_memory(true)
                .journal_mode(SqliteJournalMode::Memory)
                .synchronous(SqliteSynchronous::Off),
        )
        .await?;
    let (v,): (String,) = sqlx::query_as("SELECT sqlite_version()")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(v)
}

/// Copies a template to `dst`, removing any WAL/SHM left beside `dst` by an earlier run.
pub fn copy(template: &Path, dst: &Path) -> std::io::Result<()> {
    remove(dst)?;
    std::fs::copy(template, dst)?;
    Ok(())
}

/// Removes a database and its WAL and SHM files.
pub fn remove(path: &Path) -> std::io::Result<()> {
    for p in [
        path.to_path_buf(),
        suffixed(path, "-wal"),
        suffixed(path, "-shm"),
    ] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
