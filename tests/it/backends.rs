//! One test body on both backends: [`on_both_backends!`] makes `NAME::sqlite` and
//! `NAME::postgres` tests of one `async fn NAME(backend: Backend)`; [`BackendHome`] is a
//! [`Home`] on either (a SQLite file, or a PostgreSQL server of its own, started for the test
//! and stopped with it); [`Db`] runs the test's own queries on either (`$n` parameters, which
//! both accept).

use std::ops::Deref;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, SqlitePool};

use crate::harness::{CLIENT_SECRETS, Home};
use crate::oauth_server::OauthServer;
use crate::postgres::{PASSWORD, PgServer};

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `on_both_backends!(NAME)` after `async fn NAME(backend: Backend)` makes `mod NAME { sqlite,
/// postgres }`: two tests running that body, one per backend.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::backends::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name($crate::backends::Backend::Postgres).await;
            }
        }
    };
}
pub(crate) use on_both_backends;

/// A [`Home`] on `backend`; with PostgreSQL, the server is this home's and stops with it.
pub struct BackendHome {
    home: Home,
    pg: Option<PgServer>,
}

impl BackendHome {
    /// A home like [`Home::new`], on `backend`.
    pub async fn new(server: &OauthServer, backend: Backend, extra: &str) -> Self {
        let (home, pg) = match backend {
            Backend::Sqlite => (Home::new(server, extra), None),
            Backend::Postgres => {
                let pg = PgServer::start().await;
                (Home::on_postgres(server, &pg, extra), Some(pg))
            }
        };
        Self { home, pg }
    }

    /// A home like [`Home::with_token_url`] (every provider at `token_url`: a fault-injecting
    /// fake, or nothing at all), on `backend`.
    pub async fn with_token_url(token_url: &str, backend: Backend, extra: &str) -> Self {
        let (home, pg) = match backend {
            Backend::Sqlite => (Home::with_token_url(token_url, extra), None),
            Backend::Postgres => {
                let pg = PgServer::start().await;
                (
                    Home::on_postgres_url(token_url, pg.url(), "", extra),
                    Some(pg),
                )
            }
        };
        Self { home, pg }
    }

    /// A transaction holding off every write to `oauth_credential` until rolled back: SQLite's
    /// write lock (`BEGIN IMMEDIATE`), or `LOCK TABLE oauth_credential IN EXCLUSIVE MODE` on
    /// PostgreSQL (which waits for it without a timeout, where SQLite's writers give up after
    /// `busy_timeout`).
    pub async fn write_lock(&self) -> WriteLock {
        match &self.pg {
            None => WriteLock::Sqlite(self.home.write_lock().await),
            Some(pg) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&pg.url_with_password())
                    .await
                    .expect("connect for the lock");
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("LOCK TABLE oauth_credential IN EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                WriteLock::Postgres(conn)
            }
        }
    }

    /// The library's own store on this home's database (plaintext sealing), for store-level
    /// checks the binary offers no command for.
    pub async fn store(&self) -> tokenwarden::store::Store {
        use tokenwarden::store::{Location, OpenMode, OpenOptions, PgOptions, Sealer, Store};
        let location = match &self.pg {
            None => Location::Sqlite(self.home.db.clone()),
            Some(pg) => Location::Postgres(PgOptions::new(pg.url_with_password(), None, None)),
        };
        let options = OpenOptions {
            mode: OpenMode::CreateIfMissing,
            busy_timeout: std::time::Duration::from_secs(5),
            connections: 4,
        };
        Store::open(&location, &options, Sealer::plaintext())
            .await
            .expect("open the store")
    }

    /// The test's own connection to this home's database.
    pub async fn db(&self) -> Db {
        match &self.pg {
            None => Db::Sqlite(self.home.db().await),
            Some(pg) => Db::Postgres(pg.pool().await),
        }
    }
}

impl Deref for BackendHome {
    type Target = Home;
    fn deref(&self) -> &Home {
        &self.home
    }
}

/// A connection holding off every write to `oauth_credential` (see [`BackendHome::write_lock`]).
pub enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    /// Rolls the locking transaction back and closes the connection.
    pub async fn release(self) {
        use sqlx::Connection;
        match self {
            Self::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            Self::Postgres(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
        }
    }
}

/// The test's own queries, on either backend.
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// Every row `sql` returns, `binds` bound to `$1`, `$2`, ….
    pub async fn fetch_all<T>(&self, sql: &'static str, binds: &[&str]) -> Vec<T>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        match self {
            Self::Sqlite(pool) => {
                let mut q = sqlx::query_as::<_, T>(sql);
                for b in binds {
                    q = q.bind(*b);
                }
                q.fetch_all(pool).await
            }
            Self::Postgres(pool) => {
                let mut q = sqlx::query_as::<_, T>(sql);
                for b in binds {
                    q = q.bind(*b);
                }
                q.fetch_all(pool).await
            }
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The one row `sql` returns.
    pub async fn fetch_one<T>(&self, sql: &'static str, binds: &[&str]) -> T
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let mut rows = self.fetch_all(sql, binds).await;
        assert_eq!(rows.len(), 1, "{sql}: one row");
        rows.pop().unwrap()
    }

    /// Runs a statement.
    pub async fn execute(&self, sql: &'static str, binds: &[&str]) {
        self.try_execute(sql, binds)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs a statement that may be refused.
    pub async fn try_execute(&self, sql: &'static str, binds: &[&str]) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(pool) => {
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = q.bind(*b);
                }
                q.execute(pool).await.map(|_| ())
            }
            Self::Postgres(pool) => {
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = q.bind(*b);
                }
                q.execute(pool).await.map(|_| ())
            }
        }
    }

    /// Closes the pool, its connections with it.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }

    /// `SELECT count(*) …`.
    pub async fn count(&self, sql: &'static str) -> i64 {
        self.fetch_one::<(i64,)>(sql, &[]).await.0
    }

    /// Every token value stored now, the client secrets and the PostgreSQL password.
    pub async fn stored_secrets(&self) -> Vec<String> {
        let rows: Vec<(Option<String>, Option<String>)> = self
            .fetch_all(
                "SELECT access_token, refresh_token FROM oauth_credential",
                &[],
            )
            .await;
        rows.into_iter()
            .flat_map(|(a, r)| [a, r])
            .flatten()
            .chain(CLIENT_SECRETS.iter().map(|s| (*s).to_owned()))
            .chain([PASSWORD.to_owned()])
            .collect()
    }

    /// Every text value of the rotation journal, one row per line.
    pub async fn journal_text(&self) -> String {
        let rows: Vec<(String,)> = self
            .fetch_all(
                "SELECT concat_ws('|', credential_name, provider, trigger, lease_owner, outcome, error_code, \
                    error_description, old_refresh_fingerprint, new_refresh_fingerprint, new_access_fingerprint) \
                 FROM token_rotation",
                &[],
            )
            .await;
        rows.into_iter()
            .map(|(r,)| r)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl From<&SqlitePool> for Db {
    fn from(pool: &SqlitePool) -> Self {
        Self::Sqlite(pool.clone())
    }
}

impl From<&PgPool> for Db {
    fn from(pool: &PgPool) -> Self {
        Self::Postgres(pool.clone())
    }
}

/// `SELECT count(*) …` on a test database of either backend (a pool, or a [`Db`]).
pub async fn count(db: impl Into<Db>, sql: &'static str) -> i64 {
    db.into().count(sql).await
}

/// Every token value stored in a test database of either backend now, the client secrets and the
/// PostgreSQL password.
pub async fn stored_secrets(db: impl Into<Db>) -> Vec<String> {
    db.into().stored_secrets().await
}

/// Every text value of the rotation journal of a test database of either backend, one row per
/// line.
pub async fn journal_text(db: impl Into<Db>) -> String {
    db.into().journal_text().await
}
