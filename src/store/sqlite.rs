//! The SQLite backend, the embedded default: one file created 0600, WAL, FULL sync, a busy
//! timeout, foreign keys; migrated from `migrations/sqlite`. Every write transaction of this
//! process enters through [`Db::write`]: it queues on one mutex, then `BEGIN IMMEDIATE`, so that
//! transactions of this process wait in order instead of in SQLite's sleeping busy handler
//! (`busy_timeout` is then only ever spent on other processes). The claims are plain `UPDATE …
//! RETURNING`: the write lock already makes each claim exclusive.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};

use super::{OpenMode, OpenOptions, sql_reason};

type Conn = sqlx::SqliteConnection;

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
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _queued: OwnedMutexGuard<()>,
}

impl Db {
    /// Opens (creating it 0600 when allowed) and migrates the file at `path`, and starts the
    /// group writer. `secure_delete` zeroes deleted content (with a key, so that a token once
    /// stored as plaintext leaves no copy in the file's free space).
    pub(super) async fn open(
        path: &Path,
        options: &OpenOptions,
        secure_delete: bool,
    ) -> Result<(Self, mpsc::UnboundedSender<StoreJob>), StoreError> {
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
                Ok(mut conn) => migrate_schema(&mut conn).await,
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
        let db = Self {
            pool,
            writer: Arc::default(),
        };
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(group_writer(db.clone(), queue));
        Ok((db, jobs))
    }

    /// A connection for the next statement: the pool's acquire, as it always was.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// The one way into a write transaction: this process's queue, then `BEGIN IMMEDIATE`.
    async fn write(&self) -> Result<Write, StoreError> {
        let queued = Arc::clone(&self.writer).lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Write {
            tx,
            _queued: queued,
        })
    }
}

/// SQLite takes no row locks: the transaction's write lock already keeps every row read in it
/// from changing before the commit.
macro_rules! lock_rows {
    () => {
        ""
    };
}

/// Run before and after a batch that replaces stored values: plaintext replaced there is zeroed
/// wherever it was, freed overflow pages included; then back to the steady state's FAST.
const RESEAL_PRAGMAS: Option<(&str, &str)> =
    Some(("PRAGMA secure_delete = ON", "PRAGMA secure_delete = FAST"));

include!("transactions.rs");

/// SQLite takes no row locks (the write lock covers the file): nothing to lock first.
const LOCK_GROUP: Option<&str> = None;

/// Claims due credentials: `$1` owner, `$2` lease end, `$3` now, `$4` limit, `$5` sweep start,
/// `$6` a JSON array of ids to leave alone (held by a live process past its lease).
/// Due and out of backoff as the sweep started: a row that failed during this sweep (its backoff
/// may end before the sweep does) waits for the next one, so one sweep sends each at most once.
const CLAIM_DUE: &str = concat!(
    "UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 \
    WHERE id IN (SELECT id FROM oauth_credential \
        WHERE status = 'active' AND refresh_due_at < $5 AND next_attempt_at <= $5 \
          AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
          AND id NOT IN (SELECT value FROM json_each($6)) \
        ORDER BY refresh_due_at LIMIT $4)",
    claim_returning!()
);

/// Claims one active credential: `$1` owner, `$2` lease end, `$3` name, `$4` now, `$5` a JSON
/// array of ids to leave alone.
const CLAIM_BY_NAME: &str = concat!(
    "UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 \
    WHERE name = $3 AND status = 'active' AND (lease_expires_at IS NULL OR lease_expires_at <= $4) \
      AND id NOT IN (SELECT value FROM json_each($5))",
    claim_returning!()
);

/// Claims one credential for revocation, whatever its status: `$1` owner, `$2` lease end, `$3`
/// name, `$4` now.
const CLAIM_FOR_REVOCATION: &str = concat!(
    "UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 \
     WHERE name = $3 AND (lease_expires_at IS NULL OR lease_expires_at <= $4)",
    revocation_returning!()
);

/// Claims pending revocations due again: `$1` owner, `$2` lease end, `$3` now, `$4` limit.
/// `revoke_pending = 1`, as the partial index says, so that SQLite uses it.
const CLAIM_PENDING_REVOCATIONS: &str = concat!(
    "UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 \
     WHERE id IN (SELECT id FROM oauth_credential \
        WHERE revoke_pending = 1 AND status = 'disabled' AND next_attempt_at <= $3 \
          AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
        ORDER BY next_attempt_at LIMIT $4)",
    revocation_returning!()
);

/// Marks the pending journal entries of the credentials in the array `$2` (objects with an
/// `id`, as `batch::Started`) interrupted at `$1`; returns their ids and their credentials', when each
/// started, whether and when it was sent, and by whom. `+outcome` keeps SQLite on the
/// per-credential index: after a crash the pending entries can be many.
const JOURNAL_INTERRUPT: &str = "UPDATE token_rotation SET outcome = 'interrupted', finished_at = $1 \
     WHERE +outcome = 'pending' \
       AND credential_id IN (SELECT json_extract(value, '$.id') FROM json_each($2)) \
     RETURNING id, credential_id, started_at, sent_at, lease_owner";

/// Opens a journal entry for each of the array `$4` (`batch::Started`): `$1` trigger, `$2`
/// owner, `$3` now. Returns each entry's id with its credential's.
const JOURNAL_START: &str = "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, \
        lease_owner, started_at, old_expires_at, old_refresh_fingerprint) \
     SELECT json_extract(value, '$.id'), json_extract(value, '$.name'), json_extract(value, '$.provider'), \
        $1, $2, $3, json_extract(value, '$.expires_at'), json_extract(value, '$.fingerprint') \
     FROM json_each($4) \
     RETURNING id, credential_id";

/// Stores new tokens from the array `$1` (`batch::Tokens`, distinct ids) in every row that still
/// holds the refresh token it was claimed with, lease or not (a process that stopped past its
/// lease: nobody else sent that token meanwhile); a row flagged `needs_reauthorization` meanwhile
/// becomes active again. Returns the ids of the rows written.
const STORE_TOKENS: &str = "UPDATE oauth_credential SET access_token = j.access_token, token_type = j.token_type, \
        status = CASE WHEN oauth_credential.status = 'needs_reauthorization' THEN 'active' \
            ELSE oauth_credential.status END, \
        access_token_expires_at = j.expires_at, \
        refresh_token = COALESCE(j.refresh_token, oauth_credential.refresh_token), \
        refresh_token_expires_at = CASE WHEN j.rotated THEN j.refresh_expires_at \
            ELSE COALESCE(j.refresh_expires_at, oauth_credential.refresh_token_expires_at) END, \
        refresh_due_at = j.due_at, consecutive_failures = 0, next_attempt_at = 0, last_error = NULL, \
        instance_url = COALESCE(j.instance_url, oauth_credential.instance_url), \
        last_refreshed_at = j.stored_at, updated_at = j.stored_at, \
        lease_owner = CASE WHEN oauth_credential.lease_owner = j.holder THEN NULL \
            ELSE oauth_credential.lease_owner END, \
        lease_expires_at = CASE WHEN oauth_credential.lease_owner = j.holder THEN NULL \
            ELSE oauth_credential.lease_expires_at END \
     FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.stored') AS stored, \
            json_extract(value, '$.access_token') AS access_token, \
            json_extract(value, '$.token_type') AS token_type, \
            json_extract(value, '$.expires_at') AS expires_at, \
            json_extract(value, '$.refresh_token') AS refresh_token, \
            json_extract(value, '$.refresh_expires_at') AS refresh_expires_at, \
            json_extract(value, '$.rotated') AS rotated, json_extract(value, '$.due_at') AS due_at, \
            json_extract(value, '$.stored_at') AS stored_at, json_extract(value, '$.holder') AS holder, \
            json_extract(value, '$.instance_url') AS instance_url \
          FROM json_each($1)) AS j \
     WHERE oauth_credential.id = j.id AND oauth_credential.refresh_token IS NOT DISTINCT FROM j.stored \
     RETURNING oauth_credential.id";

/// Completes the journal entries in the array `$1` (`batch::Completed`).
const JOURNAL_FINISH: &str = "UPDATE token_rotation SET finished_at = j.finished_at, duration_ms = j.duration_ms, \
        outcome = j.outcome, http_status = j.http_status, new_expires_at = j.expires_at, \
        refresh_token_rotated = j.rotated, new_refresh_fingerprint = j.refresh_fingerprint, \
        new_access_fingerprint = j.access_fingerprint, expires_in_reported = j.reported \
     FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.finished_at') AS finished_at, \
            json_extract(value, '$.duration_ms') AS duration_ms, json_extract(value, '$.outcome') AS outcome, \
            json_extract(value, '$.http_status') AS http_status, \
            json_extract(value, '$.expires_at') AS expires_at, json_extract(value, '$.rotated') AS rotated, \
            json_extract(value, '$.refresh_fingerprint') AS refresh_fingerprint, \
            json_extract(value, '$.access_fingerprint') AS access_fingerprint, \
            json_extract(value, '$.reported') AS reported \
          FROM json_each($1)) AS j \
     WHERE token_rotation.id = j.id";

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
