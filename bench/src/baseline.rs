//! The bare baseline: the same work as a tokenwarden sweep without tokenwarden. It reads the due
//! set, then `concurrency` workers each take the next credential, send one refresh_token grant
//! with reqwest (form body, HTTP Basic client authentication, the same client settings) and store
//! the response with one UPDATE, committed on its own, on a pool with the same durability settings
//! (WAL, synchronous=FULL). No lease, no journal, no retry logic. Run as a child process
//! (`tokenwarden-bench baseline ...`) so it is timed exactly like `tokenwarden run --once`.

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::task::JoinSet;

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<i64>,
    refresh_token: Option<String>,
}

struct Args {
    db: String,
    url: String,
    client_id: String,
    secret: String,
    concurrency: usize,
}

/// `baseline --db PATH --url URL --client-id ID --secret-env VAR --concurrency N`
pub fn main(args: &[String]) -> i32 {
    let mut db = None;
    let mut url = None;
    let mut client_id = None;
    let mut secret_env = None;
    let mut concurrency = 8usize;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--db" => db = Some(value),
            "--url" => url = Some(value),
            "--client-id" => client_id = Some(value),
            "--secret-env" => secret_env = Some(value),
            "--concurrency" => concurrency = value.parse().unwrap_or(8),
            other => {
                eprintln!("baseline: unknown argument {other}");
                return 2;
            }
        }
    }
    let (Some(db), Some(url), Some(client_id), Some(secret_env)) = (db, url, client_id, secret_env)
    else {
        eprintln!("baseline: --db, --url, --client-id and --secret-env are required");
        return 2;
    };
    let Ok(secret) = std::env::var(&secret_env) else {
        eprintln!("baseline: {secret_env} is not set");
        return 2;
    };
    let args = Args {
        db,
        url,
        client_id,
        secret,
        concurrency: concurrency.max(1),
    };
    // The same runtime tokenwarden's main builds.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(args)) {
        Ok((due, refreshed, failed, elapsed)) => {
            eprintln!(
                "baseline sweep finished due={due} refreshed={refreshed} failed={failed} duration_ms={}",
                elapsed.as_millis()
            );
            i32::from(failed > 0)
        }
        Err(e) => {
            eprintln!("baseline: error: {e}");
            3
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn run(args: Args) -> Result<(usize, usize, usize, Duration), Box<dyn Error + Send + Sync>> {
    let options = SqliteConnectOptions::new()
        .filename(&args.db)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        .create_if_missing(false);
    let pool = SqlitePoolOptions::new()
        .max_connections(args.concurrency as u32 + 1)
        .connect_with(options)
        .await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()?;
    let started = Instant::now();
    let now = unix_now();
    let due: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, refresh_token FROM oauth_credential \
         WHERE status = 'active' AND refresh_due_at < ?1 AND next_attempt_at <= ?1 ORDER BY refresh_due_at",
    )
    .bind(now)
    .fetch_all(&pool)
    .await?;
    let total = due.len();
    let queue = Arc::new(Mutex::new(due.into_iter()));
    let args = Arc::new(args);
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency {
        let (queue, pool, http, args) = (
            Arc::clone(&queue),
            pool.clone(),
            http.clone(),
            Arc::clone(&args),
        );
        workers.spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            loop {
                let next = queue.lock().expect("queue").next();
                let Some((id, refresh_token)) = next else {
                    break;
                };
                match refresh_one(&pool, &http, &args, id, &refresh_token).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        eprintln!("baseline: credential {id}: {e}");
                    }
                }
            }
            (ok, failed)
        });
    }
    let (mut refreshed, mut failed) = (0, 0);
    while let Some(joined) = workers.join_next().await {
        let (ok, bad) = joined?;
        refreshed += ok;
        failed += bad;
    }
    let elapsed = started.elapsed();
    pool.close().await;
    Ok((total, refreshed, failed, elapsed))
}

async fn refresh_one(
    pool: &sqlx::SqlitePool,
    http: &reqwest::Client,
    args: &Args,
    id: i64,
    refresh_token: &str,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let response = http
        .post(&args.url)
        .basic_auth(&args.client_id, Some(&args.secret))
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        return Err(format!(
            "token endpoint answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let t: TokenResponse = serde_json::from_slice(&body)?;
    let now = unix_now();
    let expires_at = now + t.expires_in.unwrap_or(3600);
    sqlx::query(
        "UPDATE oauth_credential SET access_token = ?1, token_type = ?2, access_token_expires_at = ?3, \
            refresh_token = COALESCE(?4, refresh_token), refresh_due_at = ?5, consecutive_failures = 0, \
            next_attempt_at = 0, last_error = NULL, last_refreshed_at = ?6, updated_at = ?6 WHERE id = ?7",
    )
    .bind(&t.access_token)
    .bind(t.token_type.as_deref().unwrap_or("Bearer"))
    .bind(expires_at)
    .bind(&t.refresh_token)
    .bind(expires_at - 600)
    .bind(now)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
