//! `migrate --to postgres://…`: a SQLite database copied into an empty PostgreSQL one, every row
//! with its id (sealed values are bound to their row id), tokens in their stored form (sealed stays
//! sealed: no key is needed), identity sequences moved past the largest id, and each row read back
//! and compared column by column before the copy commits. The source is opened read-only and read
//! in one transaction; it is refused while any claim in it runs. The columns copied are listed
//! in `transfer/rows.rs`: a table whose columns differ from the list on either side is refused, so a later
//! migration cannot add a column that is silently left behind.

use std::path::Path;
use std::time::Duration;

use sqlx::QueryBuilder;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

mod rows;

use rows::{Rows, TABLES, Value, check_columns, column_list, compare, pg_columns, read_rows};

use super::{Db, Store, StoreError, sql_reason};
use crate::domain::UnixTime;

/// Rows per INSERT statement (25 columns: far below PostgreSQL's 65,535 parameters).
const INSERT_BATCH: usize = 500;

/// What was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub credentials: usize,
    pub rotations: usize,
}

/// Why the copy was refused or failed. Messages name rows by id and columns by name, never a value.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// `migrate` copies a SQLite database: the configured one is not.
    #[error("migrate copies a SQLite database, and the configured database is {0}")]
    SourceNotSqlite(String),
    /// (The value is not shown: it may hold a password.)
    #[error("migrate --to: not a usable postgres:// or postgresql:// URL")]
    NotPostgresUrl,
    #[error(
        "the source database is at migration {source_at}, this tokenwarden's schema at {known}: open it once with this version (tokenwarden status) and run migrate again"
    )]
    SourceSchema { source_at: i64, known: i64 },
    /// Claims run in the source: a daemon or a command is using it.
    #[error(
        "{count} credential(s) in the source database are claimed until {until} (a daemon or a command is using it): stop every tokenwarden on it and run migrate again",
        until = crate::domain::iso8601(*until)
    )]
    Claimed { count: i64, until: UnixTime },
    #[error(
        "the destination already holds {credentials} credential(s) and {rotations} journal row(s): migrate copies into an empty database only"
    )]
    NotEmpty { credentials: i64, rotations: i64 },
    #[error(
        "table {table}: the {side} has columns this tokenwarden does not copy or lacks ({columns})"
    )]
    Columns {
        table: &'static str,
        side: &'static str,
        columns: String,
    },
    /// A row read back from the destination differs from the source's: nothing was committed.
    #[error(
        "table {table}: row {id} {what} after the copy; nothing was committed to the destination"
    )]
    Mismatch {
        table: &'static str,
        id: i64,
        what: String,
    },
    #[error("source database {path}: {reason}")]
    Source { path: String, reason: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for TransferError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Sql(e))
    }
}

impl Store {
    /// Copies the SQLite database at `source` into this (PostgreSQL, migrated, empty) store and
    /// verifies the copy; the source is only read. `now` decides which claims still run.
    pub async fn copy_from_sqlite(
        &self,
        source: &Path,
        busy_timeout: Duration,
        now: UnixTime,
    ) -> Result<Copied, TransferError> {
        let Db::Postgres(db) = &self.db else {
            return Err(TransferError::NotPostgresUrl);
        };
        let tables = read_source(source, busy_timeout, now).await?;
        let pool = db.pool();
        let mut tx = pool.begin().await?;
        // Another migrate, or a tokenwarden already started on the destination, waits until
        // this copy commits or rolls back (and then finds the tables not empty).
        sqlx::query("LOCK TABLE oauth_credential, token_rotation IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        for (table, columns) in TABLES {
            check_columns(
                table,
                columns,
                "destination",
                pg_columns(&mut tx, table).await?,
            )?;
        }
        let (credentials, rotations): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM oauth_credential), (SELECT count(*) FROM token_rotation)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if credentials > 0 || rotations > 0 {
            return Err(TransferError::NotEmpty {
                credentials,
                rotations,
            });
        }
        for ((table, columns), rows) in TABLES.iter().zip(&tables) {
            let names = column_list(columns);
            for chunk in rows.chunks(INSERT_BATCH) {
                let mut insert = QueryBuilder::new(format!("INSERT INTO {table} ({names}) "));
                insert.push_values(chunk, |mut b, row| {
                    for value in row {
                        match value {
                            Value::Int(v) => b.push_bind(*v),
                            Value::Text(v) => b.push_bind(v.clone()),
                            Value::Bool(v) => b.push_bind(*v),
                        };
                    }
                });
                insert.build().execute(&mut *tx).await?;
            }
            // Ids were given: the identity's sequence never moved. Past the largest id, or the
            // next row added would collide. (No rows: setval(NULL) leaves the sequence alone.)
            // Table names come from `TABLES`, never from input.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )))
            .execute(&mut *tx)
            .await?;
            let copied = read_rows(&mut *tx, table, columns).await?;
            compare(table, columns, rows, &copied)?;
        }
        tx.commit().await?;
        Ok(Copied {
            credentials: tables[0].len(),
            rotations: tables[1].len(),
        })
    }
}

/// Reads both tables from the SQLite file at `path`, opened read-only, in one transaction; refused
/// while claims run or when its schema is not this binary's.
async fn read_source(
    path: &Path,
    busy_timeout: Duration,
    now: UnixTime,
) -> Result<[Rows; 2], TransferError> {
    let source_err = |reason: String| TransferError::Source {
        path: path.display().to_string(),
        reason,
    };
    if !path.is_file() {
        return Err(StoreError::Missing {
            path: path.to_owned(),
        }
        .into());
    }
    let connect = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(busy_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(connect)
        .await
        .map_err(|e| source_err(sql_reason(&e)))?;
    let result = async {
        let mut tx = pool.begin().await?;
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| source_err(format!("not a tokenwarden database ({})", sql_reason(&e))))?;
        let known = super::sqlite::MIGRATOR
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        let source_at = applied.unwrap_or(0);
        if source_at != known {
            return Err(TransferError::SourceSchema { source_at, known });
        }
        let (count, until): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), max(lease_expires_at) FROM oauth_credential WHERE lease_expires_at > $1",
        )
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if let (1.., Some(until)) = (count, until) {
            return Err(TransferError::Claimed { count, until });
        }
        let mut tables = [Rows::new(), Rows::new()];
        for ((table, columns), rows) in TABLES.iter().zip(&mut tables) {
            let found: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                    .bind(table)
                    .fetch_all(&mut *tx)
                    .await?;
            check_columns(table, columns, "source", found)?;
            *rows = read_rows(&mut *tx, table, columns).await?;
        }
        tx.rollback().await?;
        Ok(tables)
    }
    .await;
    pool.close().await;
    result
}

impl crate::exit::ExitStatus for TransferError {
    fn exit_code(&self) -> u8 {
        use crate::exit::{BUSY, CONFIG, DATABASE};
        match self {
            Self::Store(e) => e.exit_code(),
            Self::Claimed { .. } => BUSY,
            Self::SourceNotSqlite(_) | Self::NotPostgresUrl | Self::NotEmpty { .. } => CONFIG,
            _ => DATABASE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rows::Kind;
    use super::*;

    fn row(id: i64, token: &str) -> Vec<Value> {
        vec![Value::Int(Some(id)), Value::Text(Some(token.to_owned()))]
    }

    const COLUMNS: &[(&str, Kind)] = &[("id", Kind::Int), ("refresh_token", Kind::Text)];

    #[test]
    fn comparison_names_the_row_and_column_never_the_value() {
        let source = vec![row(1, "rt-secret-a"), row(4, "rt-secret-b")];
        assert!(compare("t", COLUMNS, &source, &source.clone()).is_ok());
        let changed = vec![row(1, "rt-secret-a"), row(4, "rt-secret-c")];
        let e = compare("t", COLUMNS, &source, &changed)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "table t: row 4 differs in column refresh_token after the copy; nothing was committed to the destination"
        );
        let short = vec![row(1, "rt-secret-a")];
        let e = compare("t", COLUMNS, &source, &short)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 4 is missing"), "{e}");
        let e = compare("t", COLUMNS, &short, &source)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 4 is not in the source"), "{e}");
    }

    #[test]
    fn a_column_not_in_the_list_is_refused() {
        let found = vec![
            "id".to_owned(),
            "refresh_token".to_owned(),
            "new".to_owned(),
        ];
        let e = check_columns("t", COLUMNS, "source", found)
            .unwrap_err()
            .to_string();
        assert!(e.contains("+new"), "{e}");
        let found = vec!["id".to_owned()];
        let e = check_columns("t", COLUMNS, "source", found)
            .unwrap_err()
            .to_string();
        assert!(e.contains("-refresh_token"), "{e}");
    }
}
