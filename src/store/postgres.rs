//! The PostgreSQL backend, for several replicas on one server: migrated from
//! `migrations/postgres` when there is anything to migrate (`schema`: then sqlx takes an advisory
//! lock, so replicas starting together migrate once). Write transactions enter through
//! [`Db::write`] (a plain `BEGIN`, READ COMMITTED); the claims (`dialect::POSTGRES`) lock the rows
//! they take with `FOR UPDATE SKIP LOCKED`, so replicas claiming at the same moment divide the due credentials between them instead of waiting on each other, and the lease
//! then keeps each claimed row out of every other replica's claims until it is stored or runs
//! out. The pool reconnects by itself: a connection that broke is tested and dropped before use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;

use super::location::{PgOptions, strip_url};
use super::statement::Conn;
use super::{OpenOptions, StoreError, schema, sql_reason};

/// Longest a statement waits for a connection on its way back to the pool before the pool opens
/// another (`Db::await_returning`): that way back is one round trip to the server, a new
/// connection several and a server process (TCP, start-up, scram-sha-256 on both sides).
const RETURNING_WAIT: Duration = Duration::from_millis(50);

/// The schema's migrations, embedded.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The pool.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pool: PgPool,
    /// Connections statements of this process hold right now (`Held`, `Write`).
    in_use: Arc<AtomicU32>,
}

/// A write transaction.
pub(super) struct Write {
    pub(super) tx: sqlx::Transaction<'static, sqlx::Postgres>,
    _use: InUse,
}

/// A connection a statement of this process is using (counted in `Db::in_use` until dropped).
pub(super) struct Held {
    conn: PoolConnection<sqlx::Postgres>,
    _use: InUse,
}

impl std::ops::Deref for Held {
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &sqlx::PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
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
    /// Connects and migrates.
    pub(super) async fn open(pg: &PgOptions, options: &OpenOptions) -> Result<Self, StoreError> {
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
        schema::migrate(Conn::Postgres(&mut conn), &MIGRATOR)
            .await
            .map_err(|e| open_err(format!("cannot migrate the schema: {e}")))?;
        drop(conn);
        Ok(Self {
            pool,
            in_use: Arc::default(),
        })
    }

    /// The one way into a write transaction.
    pub(super) async fn write(&self) -> Result<Write, StoreError> {
        self.await_returning().await;
        let tx = self.pool.begin().await?;
        Ok(Write {
            tx,
            _use: InUse::count(&self.in_use),
        })
    }

    /// A connection for the next statement (see [`Db::await_returning`]).
    pub(super) async fn read(&self) -> Result<Held, sqlx::Error> {
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

    /// The pool (and for `transfer`'s copy: its own transaction, locking both tables).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The server's clock, in milliseconds since the Unix epoch.
    pub(super) async fn clock_ms(&self) -> Result<i64, StoreError> {
        let (ms,): (i64,) =
            sqlx::query_as("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(&mut *self.read().await?)
                .await?;
        Ok(ms)
    }
}
