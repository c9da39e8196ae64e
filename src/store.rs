//! The only module that speaks SQL, behind one interface with two backends: `sqlite` (the
//! embedded default: a file created 0600, WAL, FULL sync, a busy timeout) and `postgres` (several
//! replicas on one server). Opening migrates the schema (`schema`: not when it is up to date). `claim` holds the sweep's transactions,
//! `records` the reads and writes behind the CLI, `leases` the view of other holders' claims, `transfer` the copy of a SQLite database into
//! PostgreSQL (`migrate --to`), `sent` the marks written just before requests go out.
//! Every token passes the store's [`Sealer`] (`seal`) on its way in and out, here, above the SQL,
//! so both backends see only stored (sealed) text; `rekey` reports and changes which key seals
//! which row. The statements both dialects accept are written once (`transactions.rs`, compiled
//! into each backend); `batch` carries many rows into one statement as a bound JSON array.
//! Imports `domain` only.

use std::path::PathBuf;
use std::time::Duration;

mod batch;
mod claim;
mod leases;
mod lookup;
mod postgres;
mod records;
mod rekey;
mod schema;
pub mod seal;
mod sent;
mod sqlite;
mod transfer;
mod writer;

pub use claim::{ClaimByName, Failure, FailureDetail, Refreshed, Stored};
pub use leases::{HeldElsewhere, HeldLease, PastLease};
pub use lookup::TokenState;
pub use postgres::PgOptions;
pub use records::{
    Aggregate, Authorized, AuthorizedAs, CredentialSummary, NewCredential, RevocationClaim,
    RevocationClaimed, RevocationResult, RotationRecord, TokenRow,
};
pub use rekey::{ColumnUsage, KeyUsage, Pass, Target};
pub use seal::Sealer;
pub use transfer::{Copied, TransferError};

use crate::domain::Unreadable;

/// What a transaction asks the store to do to a row it read (open its tokens) before going on.
pub(crate) type Open<'a, T> = dyn Fn(T) -> T + Sync + 'a;

/// Runs `$body` with `$db` bound to whichever backend `$store` has.
macro_rules! on_backend {
    ($store:expr, $db:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($db) => $body,
            $crate::store::Backend::Postgres($db) => $body,
        }
    };
}
pub(crate) use on_backend;

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
    /// This host's clock and the database server's disagree by more than leases allow.
    #[error(
        "this host's clock is {skew_ms} ms off the database server's (at most {max} s is allowed: leases are compared across hosts); synchronise the clocks (NTP)",
        max = MAX_CLOCK_SKEW_MS / 1000
    )]
    ClockSkew { skew_ms: i64 },
}

/// Most milliseconds this host's clock may differ from the database server's before claims are
/// refused: every replica writes and compares lease ends by its own clock, so a replica whose clock
/// runs ahead could take over a live claim.
pub const MAX_CLOCK_SKEW_MS: i64 = 5_000;

/// The schema's migrations: those this binary knows, and those the database has applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrations {
    pub known: Vec<(i64, String)>,
    pub applied: Vec<(i64, String)>,
}

/// Whether a missing database file may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    CreateIfMissing,
    MustExist,
}

/// Where the database is: a SQLite file, or a PostgreSQL server.
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PgOptions),
}

impl Location {
    /// How the database is named in messages: the file, or the URL without its password.
    #[must_use]
    pub fn shown(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(pg) => pg.shown(),
        }
    }
}

/// How a store is opened, besides where.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub mode: OpenMode,
    /// How long to wait for another process's lock (SQLite), or for a connection.
    pub busy_timeout: Duration,
    pub connections: u32,
}

/// One of the two implementations of the store's SQL.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(sqlite::Db),
    Postgres(postgres::Db),
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Successful refreshes on their way to the backend's group commit (see `writer`).
    jobs: tokio::sync::mpsc::UnboundedSender<writer::StoreJob>,
    /// Requests about to go out, on their way to being marked sent (see `sent`).
    marks: tokio::sync::mpsc::UnboundedSender<sent::MarkJob>,
    /// Seals every token written and opens every token read.
    sealer: Sealer,
}

impl Store {
    /// Opens (and if allowed, creates) the database at `location`, then brings its schema up to
    /// date. Tokens are written and read through `sealer`.
    pub async fn open(
        location: &Location,
        options: &OpenOptions,
        sealer: Sealer,
    ) -> Result<Self, StoreError> {
        let (backend, jobs) = match location {
            Location::Sqlite(path) => {
                let secure_delete = sealer.keyring().is_some();
                let (db, jobs) = sqlite::Db::open(path, options, secure_delete).await?;
                (Backend::Sqlite(db), jobs)
            }
            Location::Postgres(pg) => {
                let (db, jobs) = postgres::Db::open(pg, options).await?;
                (Backend::Postgres(db), jobs)
            }
        };
        let marks = sent::spawn(backend.clone());
        Ok(Self {
            backend,
            jobs,
            marks,
            sealer,
        })
    }

    /// The keys tokens are sealed with, if any.
    #[must_use]
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Which backend this is: `sqlite` or `postgres`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Milliseconds this host's clock is ahead of the database server's (negative: behind),
    /// measured against the middle of the round trip. 0 for SQLite: its file has no clock.
    pub async fn clock_skew_ms(&self) -> Result<i64, StoreError> {
        let Backend::Postgres(db) = &self.backend else {
            return Ok(0);
        };
        let before = crate::domain::now_ms();
        let server = db.clock_ms().await?;
        let after = crate::domain::now_ms();
        Ok(i64::midpoint(before, after) - server)
    }

    /// Refuses (with [`StoreError::ClockSkew`]) when this host's clock is too far off the
    /// database server's for leases to be compared.
    pub async fn check_clock(&self) -> Result<(), StoreError> {
        let skew_ms = self.clock_skew_ms().await?;
        if skew_ms.abs() > MAX_CLOCK_SKEW_MS {
            return Err(StoreError::ClockSkew { skew_ms });
        }
        Ok(())
    }

    /// The migrations this binary knows and those the database has applied.
    pub async fn migrations(&self) -> Result<Migrations, StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite(_) => &sqlite::MIGRATOR,
            Backend::Postgres(_) => &postgres::MIGRATOR,
        };
        let known = migrator
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect();
        let applied = on_backend!(self, db => db.applied_migrations().await)?;
        Ok(Migrations { known, applied })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, db => db.ping().await)
    }

    /// Closes the connections sitting idle in the pool; the next query opens one again. Each holds
    /// resources (for SQLite a thread and a page cache, and the WAL is checkpointed when the last
    /// one closes): the daemon calls this after every sweep, so that between sweeps it holds none.
    pub async fn close_idle(&self) {
        on_backend!(self, db => db.close_idle().await);
    }

    /// Closes every connection (for SQLite, checkpointing the WAL).
    pub async fn close(&self) {
        on_backend!(self, db => db.close().await);
    }
}

fn sql_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}
