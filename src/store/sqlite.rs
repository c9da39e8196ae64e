//! The SQLite backend, the embedded default: one file created 0600, WAL, FULL sync, a busy
//! timeout, foreign keys; migrated from `migrations/sqlite`. Every write transaction of this
//! process enters through [`Db::write`]: it queues on one mutex, then `BEGIN IMMEDIATE`, so that
//! transactions of this process wait in order instead of in SQLite's sleeping busy handler
//! (`busy_timeout` is then only ever spent on other processes). Its statements where the
//! dialects differ are `dialect::SQLITE`: the claims are plain `UPDATE … RETURNING`, the write
//! lock already makes each claim exclusive.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::statement::Conn;
use super::{OpenMode, OpenOptions, StoreError, schema, sql_reason};

/// The schema's migrations, embedded.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How often opening is tried again when another process is migrating the same new file.
const MIGRATE_ATTEMPTS: u32 = 3;

/// The pool, and the mutex this process's write transactions queue on.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pool: SqlitePool,
    writer: Arc<Mutex<()>>,
}

/// A write transaction, holding this process's place in the write queue until it ends.
pub(super) struct Write {
    pub(super) tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _queued: OwnedMutexGuard<()>,
}

impl Db {
    /// Opens (creating it 0600 when allowed) and migrates the file at `path`. `secure_delete` zeroes deleted content (with a key, so that a token once
    /// stored as plaintext leaves no copy in the file's free space).
    pub(super) async fn open(
        path: &Path,
        options: &OpenOptions,
        secure_delete: bool,
    ) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        if !path.exists() {
            if options.mode == OpenMode::MustExist {
                return Err(StoreError::Missing {
                    path: path.to_owned(),
                });
            }
            create_private(path).map_err(|e| open_err(format!("cannot create: {e}")))?;
        }
        check_ownership(path).map_err(open_err)?;
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            // Statement journals (a multi-row UPDATE inside a transaction keeps one) and the
            // claim's sorting stay in memory: on disk, each one past 64 KiB was a temp file
            // created, written and unlinked, for every group of stored refreshes.
            .pragma("temp_store", "memory")
            .create_if_missing(false)
            // sqlx's own "slow statement" warnings (a statement waiting on another process's
            // lock) would come before a command's one error line.
            .disable_statement_logging();
        // With a key, deleted content is zeroed where that costs no extra I/O (inside b-tree
        // pages, where tokens live); the passes that replace plaintext (`reseal_batch`) zero
        // freed pages as well, so a token once stored as plaintext leaves no copy in the file.
        let connect = if secure_delete {
            connect.pragma("secure_delete", "fast")
        } else {
            connect
        };
        // No ping before each use: a connection to a local file does not break in between, and
        // the ping is one more round trip to the connection's worker thread per transaction.
        let pool = SqlitePoolOptions::new()
            .max_connections(options.connections.max(1))
            .acquire_timeout(options.busy_timeout + Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(|e| open_err(sql_reason(&e)))?;
        let mut attempt = 1;
        loop {
            let migrated = match pool.acquire().await {
                Ok(mut conn) => schema::migrate(Conn::Sqlite(&mut conn), &MIGRATOR).await,
                Err(e) => Err(e.into()),
            };
            match migrated {
                Ok(()) => break,
                // Two processes creating one new file race on the first migration; the loser
                // finds it applied when it looks again.
                Err(_) if attempt < MIGRATE_ATTEMPTS => attempt += 1,
                Err(e) => return Err(open_err(format!("cannot migrate the schema: {e}"))),
            }
        }
        Ok(Self {
            pool,
            writer: Arc::default(),
        })
    }

    /// The pool.
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Clears what old pages and old log frames still hold after plaintext was replaced: `VACUUM`
    /// rebuilds the file from the live rows only (no free page, no freeblock inside a page keeps
    /// a deleted value, and every page of the file is rewritten), then
    /// `wal_checkpoint(TRUNCATE)` copies the rebuilt pages into the file and empties the `-wal`
    /// file, whose old frames held earlier versions of the pages. Whether the log was emptied: a
    /// reader in another process can keep it from being emptied. Holds this
    /// process's write queue throughout; other processes wait on the busy timeout. Cost: about
    /// 1.7 s and twice the file's size in temporary disk space per 100k credentials (200 MiB).
    pub(super) async fn scrub(&self) -> Result<bool, StoreError> {
        let _queued = Arc::clone(&self.writer).lock_owned().await;
        let mut conn = self.read().await?;
        // VACUUM builds the new file in a temporary database first: on disk (the system's temp
        // directory), not in memory, where it would take as much memory as the file is large.
        sqlx::raw_sql("PRAGMA temp_store = FILE")
            .execute(&mut *conn)
            .await?;
        let vacuumed = sqlx::raw_sql("VACUUM").execute(&mut *conn).await;
        sqlx::raw_sql("PRAGMA temp_store = MEMORY")
            .execute(&mut *conn)
            .await?;
        vacuumed?;
        let (busy, _log, _checkpointed): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await?;
        Ok(busy == 0)
    }

    /// A connection for the next statement: the pool's acquire, as it always was.
    pub(super) async fn read(
        &self,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// The one way into a write transaction: this process's queue, then `BEGIN IMMEDIATE`.
    pub(super) async fn write(&self) -> Result<Write, StoreError> {
        let queued = Arc::clone(&self.writer).lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Write {
            tx,
            _queued: queued,
        })
    }
}

/// Refuses a database file, or its `-wal` or `-shm` beside it, that another user could read or
/// change: owned by a user other than this process's and root (pre-created in a shared directory,
/// say, to read every token written to it), or writable by anyone. Checked before SQLite opens
/// them; a file that is not there yet is SQLite's to create, with the database's mode.
fn check_ownership(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let me = rustix::process::geteuid().as_raw();
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let meta = match std::fs::metadata(&file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => continue,
            Err(e) => return Err(format!("cannot inspect {}: {e}", file.display())),
        };
        let owner = meta.uid();
        if owner != me && owner != 0 {
            return Err(format!(
                "{} belongs to another user (uid {owner}), who could read every token in it; run tokenwarden as that user, or remove the file",
                file.display()
            ));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o002 != 0 {
            return Err(format!(
                "anyone may write to {} (mode {mode:04o}); chmod 0600 it",
                file.display()
            ));
        }
    }
    Ok(())
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
