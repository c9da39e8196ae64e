//! The PostgreSQL backend, for several replicas on one server: migrated from
//! `migrations/postgres` when there is anything to migrate (`schema`: then sqlx takes an advisory
//! lock, so replicas starting together migrate once). Write transactions enter through
//! [`Db::write`] (a plain `BEGIN`, READ COMMITTED); the claims lock the rows they take with `FOR UPDATE SKIP LOCKED`, so replicas claiming at the same
//! moment divide the due credentials between them instead of waiting on each other, and the lease
//! then keeps each claimed row out of every other replica's claims until it is stored or runs
//! out. The pool reconnects by itself: a connection that broke is tested and dropped before use.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::mpsc;

use super::{OpenOptions, sql_reason};

type Conn = sqlx::PgConnection;

/// Longest a statement waits for a connection on its way back to the pool before the pool opens
/// another (`Db::await_returning`): that way back is one round trip to the server, a new
/// connection several and a server process (TCP, start-up, scram-sha-256 on both sides).
const RETURNING_WAIT: Duration = Duration::from_millis(50);

/// The schema's migrations, embedded.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How to reach the server: its URL (`postgres://` or `postgresql://`, with `sslmode`, host,
/// port, user, database), and the password and CA file when they are configured apart from it.
/// `Debug` and [`PgOptions::shown`] never show a password.
#[derive(Clone)]
pub struct PgOptions {
    url: String,
    password: Option<Secret>,
    ssl_root_cert: Option<PathBuf>,
}

impl PgOptions {
    /// Whether `text` names a PostgreSQL database rather than a SQLite file.
    #[must_use]
    pub fn is_url(text: &str) -> bool {
        crate::domain::is_postgres_url(text)
    }

    #[must_use]
    pub fn new(url: String, password: Option<Secret>, ssl_root_cert: Option<PathBuf>) -> Self {
        Self {
            url,
            password,
            ssl_root_cert,
        }
    }

    /// The URL without any password (in its user part or its query), for messages.
    #[must_use]
    pub fn shown(&self) -> String {
        shown_url(&self.url)
    }

    /// The connect options: the URL's, then the configured password and CA file.
    pub fn connect_options(&self) -> Result<PgConnectOptions, String> {
        let mut options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| format!("not a usable PostgreSQL URL: {}", strip_url(&e.to_string())))?
            .application_name("tokenwarden")
            // sqlx's own "slow statement" warnings would come before a command's one error line.
            .disable_statement_logging();
        if let Some(password) = &self.password {
            options = options.password(password.expose());
        }
        if let Some(ca) = &self.ssl_root_cert {
            options = options.ssl_root_cert(ca);
        }
        Ok(options)
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.shown())
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("ssl_root_cert", &self.ssl_root_cert)
            .finish()
    }
}

/// `url` with the password of its user part and any `password` query parameter left out.
fn shown_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "postgres://(an unreadable URL)".to_owned();
    };
    let _ = parsed.set_password(None);
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("password"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    parsed.to_string()
}

/// An error text with anything URL-like cut down to its scheme (a parser's message might quote it).
fn strip_url(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if PgOptions::is_url(w) {
                "postgres://…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pool.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pool: PgPool,
    /// Connections statements of this process hold right now (`Held`, `Write`).
    in_use: Arc<AtomicU32>,
}

/// A write transaction.
pub(super) struct Write {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    _use: InUse,
}

/// A connection a statement of this process is using (counted in `Db::in_use` until dropped).
pub(super) struct Held {
    conn: PoolConnection<sqlx::Postgres>,
    _use: InUse,
}

impl std::ops::Deref for Held {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// One connection counted as in use; the count drops with it (after the connection it guards,
/// which is declared before it and so dropped first: from then on it is on its way back).
pub(super) struct InUse(Arc<AtomicU32>);

impl InUse {
    fn count(in_use: &Arc<AtomicU32>) -> Self {
        in_use.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(in_use))
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Db {
    /// Connects, migrates, and starts the group writer.
    pub(super) async fn open(
        pg: &PgOptions,
        options: &OpenOptions,
    ) -> Result<(Self, mpsc::UnboundedSender<StoreJob>), StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: pg.shown().into(),
            reason,
        };
        let connect = pg.connect_options().map_err(open_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.connections.max(2))
            .acquire_timeout(options.busy_timeout + Duration::from_secs(5))
            .test_before_acquire(true)
            .connect_with(connect)
            .await
            .map_err(|e| open_err(strip_url(&sql_reason(&e))))?;
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| open_err(strip_url(&sql_reason(&e))))?;
        migrate_schema(&mut conn)
            .await
            .map_err(|e| open_err(format!("cannot migrate the schema: {e}")))?;
        drop(conn);
        let db = Self {
            pool,
            in_use: Arc::default(),
        };
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(group_writer(db.clone(), queue));
        Ok((db, jobs))
    }

    /// The one way into a write transaction.
    async fn write(&self) -> Result<Write, StoreError> {
        self.await_returning().await;
        let tx = self.pool.begin().await?;
        Ok(Write {
            tx,
            _use: InUse::count(&self.in_use),
        })
    }

    /// A connection for the next statement (see [`Db::await_returning`]).
    async fn conn(&self) -> Result<Held, sqlx::Error> {
        self.await_returning().await;
        let conn = self.pool.acquire().await?;
        Ok(Held {
            conn,
            _use: InUse::count(&self.in_use),
        })
    }

    /// sqlx gives a connection back to the pool from a task, after a round trip that tests it: the
    /// one a statement of this process let go of a moment ago is not idle yet, and the pool would
    /// open (connect and authenticate) another beside it for the next statement — the second
    /// connection of every start-up, and of every sweep with nothing to do. So while the pool could
    /// still open more, none of its connections is idle and some are neither idle nor in use here
    /// (on their way back), this waits for them, [`RETURNING_WAIT`] at most; then the pool's
    /// acquire takes one (and tests it as before), or opens one as before. When every connection
    /// is in use, nothing is waited for.
    async fn await_returning(&self) {
        let deadline = tokio::time::Instant::now() + RETURNING_WAIT;
        loop {
            let size = self.pool.size();
            let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
            let in_use = self.in_use.load(Ordering::Acquire);
            let returning = size.saturating_sub(idle.saturating_add(in_use));
            if size >= self.pool.options().get_max_connections()
                || idle > 0
                || returning == 0
                || tokio::time::Instant::now() >= deadline
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// The pool, for `transfer`'s copy (its own transaction, locking both tables).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The server's clock, in milliseconds since the Unix epoch.
    pub(super) async fn clock_ms(&self) -> Result<i64, StoreError> {
        let (ms,): (i64,) =
            sqlx::query_as("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(&mut *self.conn().await?)
                .await?;
        Ok(ms)
    }
}

/// Rows read to be rewritten are locked until the commit: a claim skips them meanwhile.
macro_rules! lock_rows {
    () => {
        " FOR UPDATE"
    };
}

/// PostgreSQL has no free-page residue to zero: nothing to run around a re-seal batch.
const RESEAL_PRAGMAS: Option<(&str, &str)> = None;

include!("transactions.rs");

/// Locks the rows of a group of stored refreshes, the JSON array of ids `$1`, in id order.
const LOCK_GROUP: Option<&str> = Some(
    "SELECT id FROM oauth_credential \
     WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint) ORDER BY id FOR UPDATE",
);

/// Claims due credentials: `$1` owner, `$2` lease end, `$3` now, `$4` limit, `$5` sweep start,
/// `$6` a JSON array of ids to leave alone (held by a live process past its lease).
/// Due and out of backoff as the sweep started: a row that failed during this sweep (its backoff
/// may end before the sweep does) waits for the next one, so one sweep sends each at most once.
/// Rows another replica is claiming at this moment are skipped, not waited for.
const CLAIM_DUE: &str = concat!(
    "WITH due AS (SELECT id AS due_id FROM oauth_credential \
        WHERE status = 'active' AND refresh_due_at < $5 AND next_attempt_at <= $5 \
          AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
          AND id NOT IN (SELECT jsonb_array_elements_text($6::jsonb)::bigint) \
        ORDER BY refresh_due_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
     UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 FROM due WHERE id = due_id",
    claim_returning!()
);

/// Claims one active credential: `$1` owner, `$2` lease end, `$3` name, `$4` now, `$5` a JSON
/// array of ids to leave alone.
const CLAIM_BY_NAME: &str = concat!(
    "WITH one AS (SELECT id AS one_id FROM oauth_credential \
        WHERE name = $3 AND status = 'active' AND (lease_expires_at IS NULL OR lease_expires_at <= $4) \
          AND id NOT IN (SELECT jsonb_array_elements_text($5::jsonb)::bigint) \
        FOR UPDATE SKIP LOCKED) \
     UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 FROM one WHERE id = one_id",
    claim_returning!()
);

/// Claims one credential for revocation, whatever its status: `$1` owner, `$2` lease end, `$3`
/// name, `$4` now.
const CLAIM_FOR_REVOCATION: &str = concat!(
    "WITH one AS (SELECT id AS one_id FROM oauth_credential \
        WHERE name = $3 AND (lease_expires_at IS NULL OR lease_expires_at <= $4) \
        FOR UPDATE SKIP LOCKED) \
     UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 FROM one WHERE id = one_id",
    revocation_returning!()
);

/// Claims pending revocations due again: `$1` owner, `$2` lease end, `$3` now, `$4` limit.
const CLAIM_PENDING_REVOCATIONS: &str = concat!(
    "WITH due AS (SELECT id AS due_id FROM oauth_credential \
        WHERE revoke_pending AND status = 'disabled' AND next_attempt_at <= $3 \
          AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
        ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
     UPDATE oauth_credential SET lease_owner = $1, lease_expires_at = $2 FROM due WHERE id = due_id",
    revocation_returning!()
);

/// Marks the pending journal entries of the credentials in the array `$2` (objects with an
/// `id`, as `batch::Started`) interrupted at `$1`; returns their ids and their credentials', when each
/// started, whether and when it was sent, and by whom.
const JOURNAL_INTERRUPT: &str = "UPDATE token_rotation SET outcome = 'interrupted', finished_at = $1 \
     WHERE outcome = 'pending' \
       AND credential_id IN (SELECT (e ->> 'id')::bigint FROM jsonb_array_elements($2::jsonb) AS e) \
     RETURNING id, credential_id, started_at, sent_at, lease_owner";

/// Opens a journal entry for each of the array `$4` (`batch::Started`): `$1` trigger, `$2`
/// owner, `$3` now. Returns each entry's id with its credential's.
const JOURNAL_START: &str = "INSERT INTO token_rotation (credential_id, credential_name, provider, trigger, \
        lease_owner, started_at, old_expires_at, old_refresh_fingerprint) \
     SELECT j.id, j.name, j.provider, $1, $2, $3, j.expires_at, j.fingerprint \
     FROM jsonb_to_recordset($4::jsonb) \
        AS j(id bigint, name text, provider text, expires_at bigint, fingerprint text) \
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
     FROM jsonb_to_recordset($1::jsonb) AS j(id bigint, stored text, access_token text, token_type text, \
        expires_at bigint, refresh_token text, refresh_expires_at bigint, rotated boolean, due_at bigint, \
        stored_at bigint, holder text, instance_url text) \
     WHERE oauth_credential.id = j.id AND oauth_credential.refresh_token IS NOT DISTINCT FROM j.stored \
     RETURNING oauth_credential.id";

/// Completes the journal entries in the array `$1` (`batch::Completed`).
const JOURNAL_FINISH: &str = "UPDATE token_rotation SET finished_at = j.finished_at, duration_ms = j.duration_ms, \
        outcome = j.outcome, http_status = j.http_status, new_expires_at = j.expires_at, \
        refresh_token_rotated = j.rotated, new_refresh_fingerprint = j.refresh_fingerprint, \
        new_access_fingerprint = j.access_fingerprint, expires_in_reported = j.reported \
     FROM jsonb_to_recordset($1::jsonb) AS j(id bigint, finished_at bigint, duration_ms bigint, \
        outcome text, http_status bigint, expires_at bigint, rotated boolean, refresh_fingerprint text, \
        access_fingerprint text, reported boolean) \
     WHERE token_rotation.id = j.id";

#[cfg(test)]
mod tests {
    use super::{PgOptions, shown_url};

    #[test]
    fn urls_are_recognised_and_shown_without_passwords() {
        assert!(PgOptions::is_url("postgres://h/db"));
        assert!(PgOptions::is_url("PostgreSQL://h/db"));
        assert!(!PgOptions::is_url("/var/lib/tokenwarden/tokenwarden.db"));
        assert!(!PgOptions::is_url("postgres.db"));
        let shown = shown_url(
            "postgres://tw:s3cr3t-pw@db.example:5432/tw?sslmode=verify-full&password=other-pw",
        );
        assert!(
            !shown.contains("s3cr3t-pw") && !shown.contains("other-pw"),
            "{shown}"
        );
        assert!(
            shown.contains("sslmode=verify-full") && shown.contains("tw@db.example:5432/tw"),
            "{shown}"
        );
        let debug = format!(
            "{:?}",
            PgOptions::new(
                "postgres://u:pw-123456@h/d".into(),
                Some(crate::domain::Secret::new("pw-abcdef")),
                None
            )
        );
        assert!(
            !debug.contains("pw-123456") && !debug.contains("pw-abcdef"),
            "{debug}"
        );
    }
}
