//! The only module that speaks SQL. Opening the store creates the file 0600, sets WAL, FULL sync
//! and a busy timeout, and migrates it; `claim` holds the sweep's transactions and `records` the
//! reads and writes behind the CLI. Every token passes the store's [`Sealer`] (`seal`) on its way
//! in and out, so SQL only ever sees sealed text when a key is configured; `rekey` reports and
//! changes which key seals which row. Imports `domain` only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

mod assertion;
mod claim;
mod leases;
mod lookup;
mod records;
mod rekey;
pub mod seal;
mod writer;

pub use claim::{ClaimByName, Failure, FailureDetail, Refreshed, Stored};
pub use leases::{HeldElsewhere, HeldLease};
pub use lookup::TokenState;
pub use records::{
    Authorized, AuthorizedAs, CredentialSummary, NewCredential, RevocationClaim, RevocationClaimed,
    RevocationResult, RotationRecord, TokenRow,
};
pub use rekey::{ColumnUsage, KeyUsage, Pass, Target};
pub use seal::Sealer;

use crate::domain::Unreadable;

/// How often opening is tried again when another process is migrating the same new file.
const MIGRATE_ATTEMPTS: u32 = 3;

/// Why the database could not be used. Messages never carry a token: every value is bound.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path} does not exist")]
    Missing { path: PathBuf },
    #[error("database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("credential {0:?} already exists (use --replace to overwrite its tokens)")]
    Exists(String),
    /// A stored token this command needs cannot be opened.
    #[error("credential {name:?}: the stored {column} {reason}")]
    Unreadable {
        name: String,
        column: &'static str,
        reason: Unreadable,
    },
    /// Values are sealed under keys the configuration does not list (or it lists none).
    #[error("{0}")]
    KeysMissing(String),
    #[error("owner {owner:?} already has a credential of provider {provider} ({}); use --allow-same-owner to add another", names.join(", "))]
    OwnerTaken {
        provider: String,
        owner: String,
        names: Vec<String>,
    },
}

/// Whether a missing database file may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    CreateIfMissing,
    MustExist,
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// This process's write transactions queue here before `BEGIN IMMEDIATE` (see `writer`).
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Successful refreshes on their way to the group commit.
    jobs: tokio::sync::mpsc::UnboundedSender<writer::StoreJob>,
    /// Seals every token written and opens every token read.
    sealer: Sealer,
}

impl Store {
    /// Opens (and if allowed, creates) the database at `path`, then brings its schema up to date.
    /// Tokens are written and read through `sealer`.
    pub async fn open(
        path: &Path,
        mode: OpenMode,
        busy_timeout: Duration,
        connections: u32,
        sealer: Sealer,
    ) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        if !path.exists() {
            if mode == OpenMode::MustExist {
                return Err(StoreError::Missing {
                    path: path.to_owned(),
                });
            }
            create_private(path).map_err(|e| open_err(format!("cannot create: {e}")))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout)
            .foreign_keys(true)
            .create_if_missing(false);
        // With a key, deleted content is zeroed where that costs no extra I/O (inside b-tree
        // pages, where tokens live); the passes that replace plaintext (`rekey`) zero freed
        // pages as well, so a token once stored as plaintext leaves no copy in the file.
        let options = if sealer.keyring().is_some() {
            options.pragma("secure_delete", "fast")
        } else {
            options
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(busy_timeout + Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| open_err(sql_reason(&e)))?;
        let mut attempt = 1;
        loop {
            match sqlx::migrate!("./migrations").run(&pool).await {
                Ok(()) => break,
                // Two processes creating one new file race on the first migration; the loser
                // finds it applied when it looks again.
                Err(_) if attempt < MIGRATE_ATTEMPTS => attempt += 1,
                Err(e) => return Err(open_err(format!("cannot migrate the schema: {e}"))),
            }
        }
        let writer = std::sync::Arc::<tokio::sync::Mutex<()>>::default();
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(writer::group_writer(
            pool.clone(),
            std::sync::Arc::clone(&writer),
            queue,
        ));
        Ok(Self {
            pool,
            writer,
            jobs,
            sealer,
        })
    }

    /// The keys tokens are sealed with, if any.
    #[must_use]
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the connections sitting idle in the pool; the next query opens one again. Each holds
    /// a thread and a page cache, and SQLite checkpoints the WAL when the last one closes: the
    /// daemon calls this after every sweep, so that between sweeps it holds none.
    ///
    /// A connection given back goes idle a moment later (sqlx returns it from a task): those
    /// still on their way are waited for this long at most.
    pub async fn close_idle(&self) {
        const RETURNING: Duration = Duration::from_millis(500);
        const STEP: Duration = Duration::from_millis(5);
        let started = std::time::Instant::now();
        loop {
            while let Some(conn) = self.pool.try_acquire() {
                let _ = conn.close().await;
            }
            if self.pool.size() == 0 || started.elapsed() >= RETURNING {
                break;
            }
            tokio::time::sleep(STEP).await;
        }
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates an empty file readable by its owner only, so the -wal and -shm files SQLite makes beside
/// it (which copy its mode) are private too, whatever the umask.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn sql_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}
