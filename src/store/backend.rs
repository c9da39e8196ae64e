//! The store's interface to a database. [`Db`] is one of the two backends (`sqlite`, `postgres`),
//! and everything the transactions (`transactions/`) need of it is here: a write transaction
//! ([`Db::write`], the one way into one), a connection for a read ([`Db::read`]), the statements
//! of its dialect (`dialect`), its migrations, and its pool's upkeep. Statements run on a
//! [`Conn`] (`statement`), the same code for both drivers. A new backend is a module with `open`,
//! `write` and `read`, a variant in each enum here, and a [`Dialect`](super::dialect::Dialect)
//! value. Imports nothing outside the store.

use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use tokio::sync::mpsc;

use super::dialect::{self, Dialect};
use super::statement::Conn;
use super::writer::Job;
use super::{Location, OpenOptions, StoreError, postgres, sqlite};

/// One of the two backends: its pool, and what its write transactions queue on.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(sqlite::Db),
    Postgres(postgres::Db),
}

/// A write transaction of either backend, holding whatever the backend queues writes on until it
/// ends (dropped without a commit, it rolls back).
pub(in crate::store) enum Write {
    Sqlite(sqlite::Write),
    Postgres(postgres::Write),
}

/// A connection of either backend for reads outside a transaction.
pub(in crate::store) enum Read {
    Sqlite(PoolConnection<sqlx::Sqlite>),
    Postgres(postgres::Held),
}

impl Db {
    /// Opens the database at `location` as `options` say (for SQLite, zeroing deleted content when
    /// `secure_delete`), brings its schema up to date, and starts its group writer: the jobs sent
    /// on the returned channel (refreshes to store, requests to mark sent) are written in groups,
    /// one transaction each (`writer`).
    pub(in crate::store) async fn open(
        location: &Location,
        options: &OpenOptions,
        secure_delete: bool,
    ) -> Result<(Self, mpsc::UnboundedSender<Job>), StoreError> {
        let db = match location {
            Location::Sqlite(path) => {
                Self::Sqlite(sqlite::Db::open(path, options, secure_delete).await?)
            }
            Location::Postgres(pg) => Self::Postgres(postgres::Db::open(pg, options).await?),
        };
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(super::transactions::group_writer(db.clone(), queue));
        Ok((db, jobs))
    }

    /// Which backend this is: `sqlite` or `postgres`.
    pub(in crate::store) fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The statements of this backend's dialect.
    pub(in crate::store) fn dialect(&self) -> &'static Dialect {
        match self {
            Self::Sqlite(_) => &dialect::SQLITE,
            Self::Postgres(_) => &dialect::POSTGRES,
        }
    }

    /// The migrations this binary embeds for this backend.
    pub(in crate::store) fn migrator(&self) -> &'static Migrator {
        match self {
            Self::Sqlite(_) => &sqlite::MIGRATOR,
            Self::Postgres(_) => &postgres::MIGRATOR,
        }
    }

    /// The one way into a write transaction: SQLite queues on this process's writer mutex, then
    /// `BEGIN IMMEDIATE`; PostgreSQL a plain `BEGIN` (READ COMMITTED), its claims locking rows.
    pub(in crate::store) async fn write(&self) -> Result<Write, StoreError> {
        Ok(match self {
            Self::Sqlite(db) => Write::Sqlite(db.write().await?),
            Self::Postgres(db) => Write::Postgres(db.write().await?),
        })
    }

    /// A connection for a read outside any transaction.
    pub(in crate::store) async fn read(&self) -> Result<Read, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(db) => Read::Sqlite(db.read().await?),
            Self::Postgres(db) => Read::Postgres(db.read().await?),
        })
    }

    /// Closes every connection (for SQLite, checkpointing the WAL).
    pub(in crate::store) async fn close(&self) {
        match self {
            Self::Sqlite(db) => db.pool().close().await,
            Self::Postgres(db) => db.pool().close().await,
        }
    }

    /// Closes the pool's idle connections. A connection given back goes idle a moment later (sqlx
    /// returns it from a task): those still on their way are waited for this long at most.
    pub(in crate::store) async fn close_idle(&self) {
        match self {
            Self::Sqlite(db) => close_idle(db.pool()).await,
            Self::Postgres(db) => close_idle(db.pool()).await,
        }
    }
}

/// Closes `pool`'s idle connections, waiting [`RETURNING`] at most for those on their way back.
async fn close_idle<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) {
    /// Longest wait for connections on their way back to the pool.
    const RETURNING: Duration = Duration::from_millis(500);
    /// How often the pool is looked at meanwhile.
    const STEP: Duration = Duration::from_millis(5);
    let started = Instant::now();
    loop {
        while let Some(conn) = pool.try_acquire() {
            let _ = conn.close().await;
        }
        if pool.size() == 0 || started.elapsed() >= RETURNING {
            break;
        }
        tokio::time::sleep(STEP).await;
    }
}

impl Write {
    /// The transaction's connection, for its next statement.
    pub(in crate::store) fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Sqlite(w) => Conn::Sqlite(&mut w.tx),
            Self::Postgres(w) => Conn::Postgres(&mut w.tx),
        }
    }

    /// Commits, then gives the backend's queue place back.
    pub(in crate::store) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(w) => w.tx.commit().await?,
            Self::Postgres(w) => w.tx.commit().await?,
        }
        Ok(())
    }

    /// Rolls back, then gives the backend's queue place back.
    pub(in crate::store) async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(w) => w.tx.rollback().await?,
            Self::Postgres(w) => w.tx.rollback().await?,
        }
        Ok(())
    }
}

impl Read {
    /// The connection, for the read's statement.
    pub(in crate::store) fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Sqlite(c) => Conn::Sqlite(c),
            Self::Postgres(c) => Conn::Postgres(c),
        }
    }
}
