//! One SQL statement and the values bound to it, run on a connection of either backend
//! ([`Conn`]): the transactions are written once against this, and the compiler checks them
//! against both drivers. Values are integers, booleans and text (a [`Secret`] binds as its stored
//! text), each possibly NULL, bound as sqlx binds them (`i64` as INT8, `bool` as BOOL, `&str` as
//! TEXT); rows come back as any [`Record`]. Imports `domain` only.

use std::borrow::Cow;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Arguments, Database, Encode, FromRow, Type};

use super::dialect::{self, Dialect};
use crate::domain::Secret;

/// A connection of either backend, with or without a transaction open on it.
pub(in crate::store) enum Conn<'a> {
    Sqlite(&'a mut sqlx::SqliteConnection),
    Postgres(&'a mut sqlx::PgConnection),
}

impl Conn<'_> {
    /// The same connection, borrowed again for the next statement.
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Self::Sqlite(c) => Conn::Sqlite(c),
            Self::Postgres(c) => Conn::Postgres(c),
        }
    }

    /// The statements of this connection's dialect.
    pub fn dialect(&self) -> &'static Dialect {
        match self {
            Self::Sqlite(_) => &dialect::SQLITE,
            Self::Postgres(_) => &dialect::POSTGRES,
        }
    }
}

/// A row type both drivers can read (every `#[derive(FromRow)]` of the store, and tuples).
pub(in crate::store) trait Record:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Record for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// One bound value (no `Debug`: it may be a token's stored text).
pub(in crate::store) enum Value<'a> {
    Int(Option<i64>),
    Bool(Option<bool>),
    Text(Option<Cow<'a, str>>),
}

/// A statement (its text is a `'static` constant: SQL is never assembled at run time) and its
/// values, `$1` first (no `Debug`: the values may be tokens' stored text).
pub(in crate::store) struct Statement<'a> {
    sql: &'static str,
    values: Vec<Value<'a>>,
}

/// The statement `text`, nothing bound yet.
pub(in crate::store) fn sql<'a>(text: &'static str) -> Statement<'a> {
    Statement {
        sql: text,
        values: Vec::new(),
    }
}

impl<'a> Statement<'a> {
    /// Binds the next parameter.
    #[must_use]
    pub fn bind(mut self, value: impl Into<Value<'a>>) -> Self {
        self.values.push(value.into());
        self
    }

    /// Runs the statement; how many rows it changed.
    pub async fn execute(self, conn: Conn<'_>) -> Result<u64, sqlx::Error> {
        Ok(match conn {
            Conn::Sqlite(c) => sqlx::query_with(self.sql, arguments::<sqlx::Sqlite>(&self.values)?)
                .execute(c)
                .await?
                .rows_affected(),
            Conn::Postgres(c) => {
                sqlx::query_with(self.sql, arguments::<sqlx::Postgres>(&self.values)?)
                    .execute(c)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// Every row the statement returns.
    pub async fn fetch_all<T: Record>(self, conn: Conn<'_>) -> Result<Vec<T>, sqlx::Error> {
        match conn {
            Conn::Sqlite(c) => {
                sqlx::query_as_with(self.sql, arguments::<sqlx::Sqlite>(&self.values)?)
                    .fetch_all(c)
                    .await
            }
            Conn::Postgres(c) => {
                sqlx::query_as_with(self.sql, arguments::<sqlx::Postgres>(&self.values)?)
                    .fetch_all(c)
                    .await
            }
        }
    }

    /// The first row the statement returns, if any.
    pub async fn fetch_optional<T: Record>(self, conn: Conn<'_>) -> Result<Option<T>, sqlx::Error> {
        match conn {
            Conn::Sqlite(c) => {
                sqlx::query_as_with(self.sql, arguments::<sqlx::Sqlite>(&self.values)?)
                    .fetch_optional(c)
                    .await
            }
            Conn::Postgres(c) => {
                sqlx::query_as_with(self.sql, arguments::<sqlx::Postgres>(&self.values)?)
                    .fetch_optional(c)
                    .await
            }
        }
    }

    /// The one row the statement returns (`RowNotFound` when there is none).
    pub async fn fetch_one<T: Record>(self, conn: Conn<'_>) -> Result<T, sqlx::Error> {
        self.fetch_optional(conn)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

/// The values as `DB`'s arguments, in order.
fn arguments<'q, DB>(values: &'q [Value<'_>]) -> Result<DB::Arguments, sqlx::Error>
where
    DB: Database,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    Option<bool>: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
{
    let mut args = DB::Arguments::default();
    for value in values {
        match value {
            Value::Int(v) => args.add(*v),
            Value::Bool(v) => args.add(*v),
            Value::Text(v) => args.add(v.as_deref()),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<&i64> for Value<'_> {
    fn from(v: &i64) -> Self {
        Self::Int(Some(*v))
    }
}

impl From<&Option<i64>> for Value<'_> {
    fn from(v: &Option<i64>) -> Self {
        Self::Int(*v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Self::Bool(Some(v))
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(Some(Cow::Borrowed(v)))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Self::Text(v.map(Cow::Borrowed))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(Some(Cow::Borrowed(v)))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Self::Text(Some(Cow::Owned(v)))
    }
}

impl<'a> From<&'a Option<String>> for Value<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Self::Text(v.as_deref().map(Cow::Borrowed))
    }
}

impl From<Option<String>> for Value<'_> {
    fn from(v: Option<String>) -> Self {
        Self::Text(v.map(Cow::Owned))
    }
}

impl<'a> From<&'a Secret> for Value<'a> {
    fn from(v: &'a Secret) -> Self {
        Self::Text(Some(Cow::Borrowed(v.expose())))
    }
}

impl<'a> From<Option<&'a Secret>> for Value<'a> {
    fn from(v: Option<&'a Secret>) -> Self {
        Self::Text(v.map(|s| Cow::Borrowed(s.expose())))
    }
}

impl<'a> From<&'a Option<Secret>> for Value<'a> {
    fn from(v: &'a Option<Secret>) -> Self {
        Self::from(v.as_ref())
    }
}

impl From<Secret> for Value<'_> {
    fn from(v: Secret) -> Self {
        Self::Text(Some(Cow::Owned(v.expose().to_owned())))
    }
}

impl From<Option<Secret>> for Value<'_> {
    fn from(v: Option<Secret>) -> Self {
        Self::Text(v.map(|s| Cow::Owned(s.expose().to_owned())))
    }
}
