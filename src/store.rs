//! The only module that speaks SQL, behind one interface with two backends: `sqlite` (the
//! embedded default: a file created 0600, WAL, FULL sync, a busy timeout) and `postgres` (several
//! replicas on one server). Opening migrates the schema (`schema`: not when it is up to date). `claim` holds the sweep's transactions,
//! `records` the reads and writes behind the CLI, `leases` the view of other holders' claims, `transfer` the copy of a SQLite database into
//! PostgreSQL (`migrate --to`), `invites` the one-time links of `tokenwarden invite`, `sent` the
//! marks written just before requests go out.
//! Every token passes the store's [`Sealer`] (`seal`) on its way in and out, here, above the SQL,
//! so both backends see only stored (sealed) text; `rekey` reports and changes which key seals
//! which row. Below the `Store`, one interface to either database (`backend`: `Db` gives write
//! transactions and read connections); the transactions are written once against it
//! (`transactions`), each statement a `statement` both drivers run; the statements whose text
//! differs sit side by side in `dialect`; `batch` carries many rows into one statement as a bound
//! JSON array; `location` says where the database is (read from the settings). Imports
//! `domain` and `exit`, and `config` and `secret_file` for `location`.

use std::path::PathBuf;
use std::time::Duration;

mod backend;
mod batch;
mod claim;
mod dialect;
mod invites;
mod leases;
mod location;
mod lookup;
mod postgres;
mod records;
mod rekey;
mod schema;
pub mod seal;
mod sent;
mod sqlite;
mod statement;
mod transactions;
mod transfer;
mod writer;

pub use claim::{ClaimByName, Failure, FailureDetail, Refreshed, Stored};
pub use invites::{Invite, InviteState, NewInvite};
pub use leases::{HeldElsewhere, HeldLease, PastLease};
pub use location::{Location, LocationError, PgOptions, postgres_options};
pub use lookup::TokenState;
pub use records::{
    Aggregate, AggregateWindow, Authorized, AuthorizedAs, CredentialSummary, NewCredential,
    RevocationClaim, RevocationClaimed, RevocationResult, RotationRecord,
};
pub use rekey::{ColumnUsage, KeyUsage, Pass, Scrub, Target};
pub use seal::Sealer;
pub use transfer::{Copied, TransferError};

use crate::domain::Unreadable;
use backend::Db;

/// What a transaction asks the store to do to a row it read (open its tokens) before going on.
pub(crate) type Open<'a, T> = dyn Fn(T) -> T + Sync + 'a;

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
    /// An invitation for an existing credential names another provider or owner than it has.
    #[error("credential {name:?} exists with provider {provider} and owner {}; a link re-authorizes it only with those", owner.as_deref().unwrap_or("(none)"))]
    InviteMismatch {
        name: String,
        provider: String,
        owner: Option<String>,
    },
    /// The invitation was spent, revoked or expired before its tokens could be stored.
    #[error(
        "the link for credential {0:?} was used, revoked or expired meanwhile; nothing was stored"
    )]
    InviteGone(String),
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

/// How a store is opened, besides where.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub mode: OpenMode,
    /// How long to wait for another process's lock (SQLite), or for a connection.
    pub busy_timeout: Duration,
    pub connections: u32,
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    /// Successful refreshes, and requests about to go out to be marked sent (`sent`), on their
    /// way to the backend's group commit (see `writer`).
    jobs: tokio::sync::mpsc::UnboundedSender<writer::Job>,
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
        let secure_delete = sealer.keyring().is_some();
        let (db, jobs) = Db::open(location, options, secure_delete).await?;
        Ok(Self { db, jobs, sealer })
    }

    /// The keys tokens are sealed with, if any.
    #[must_use]
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Which backend this is: `sqlite` or `postgres`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        self.db.name()
    }

    /// Milliseconds this host's clock is ahead of the database server's (negative: behind),
    /// measured against the middle of the round trip. 0 for SQLite: its file has no clock.
    pub async fn clock_skew_ms(&self) -> Result<i64, StoreError> {
        let Db::Postgres(db) = &self.db else {
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
        let known = self
            .db
            .migrator()
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect();
        let applied = self.db.applied_migrations().await?;
        Ok(Migrations { known, applied })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    /// Closes the connections sitting idle in the pool; the next query opens one again. Each holds
    /// resources (for SQLite a thread and a page cache, and the WAL is checkpointed when the last
    /// one closes): the daemon calls this after every sweep, so that between sweeps it holds none.
    pub async fn close_idle(&self) {
        self.db.close_idle().await;
    }

    /// Closes every connection (for SQLite, checkpointing the WAL).
    pub async fn close(&self) {
        self.db.close().await;
    }
}

fn sql_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

impl crate::exit::ExitStatus for StoreError {
    fn exit_code(&self) -> u8 {
        use crate::exit::{CONFIG, DATABASE, SEALING};
        match self {
            Self::Exists(_) | Self::OwnerTaken { .. } | Self::InviteMismatch { .. } => CONFIG,
            Self::KeysMissing(_) | Self::Unreadable { .. } => SEALING,
            _ => DATABASE,
        }
    }
}
