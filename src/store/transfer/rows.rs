//! What `migrate --to` copies, column by column: the columns of both tables with their types, a
//! stored value (no `Debug`: it may be a token), reading rows from either backend in one order,
//! and comparing the copy with its source row by row.

use sqlx::Row;

use super::TransferError;

/// How a column is typed on both sides (SQLite's INTEGER booleans are PostgreSQL's `boolean`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Int,
    Text,
    Bool,
}

/// Every column of `oauth_credential`, as of migration 0006.
pub(super) const CREDENTIAL_COLUMNS: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("name", Kind::Text),
    ("provider", Kind::Text),
    ("grant_type", Kind::Text),
    ("scopes", Kind::Text),
    ("owner", Kind::Text),
    ("access_token", Kind::Text),
    ("token_type", Kind::Text),
    ("access_token_expires_at", Kind::Int),
    ("refresh_token", Kind::Text),
    ("refresh_token_expires_at", Kind::Int),
    ("status", Kind::Text),
    ("refresh_due_at", Kind::Int),
    ("consecutive_failures", Kind::Int),
    ("next_attempt_at", Kind::Int),
    ("last_error", Kind::Text),
    ("last_refreshed_at", Kind::Int),
    ("lease_owner", Kind::Text),
    ("lease_expires_at", Kind::Int),
    ("created_at", Kind::Int),
    ("updated_at", Kind::Int),
    ("revoke_pending", Kind::Bool),
    ("instance_url", Kind::Text),
    ("subject", Kind::Text),
];

/// Every column of `token_rotation`, as of migration 0008.
pub(super) const ROTATION_COLUMNS: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("credential_id", Kind::Int),
    ("credential_name", Kind::Text),
    ("provider", Kind::Text),
    ("trigger", Kind::Text),
    ("lease_owner", Kind::Text),
    ("started_at", Kind::Int),
    ("finished_at", Kind::Int),
    ("duration_ms", Kind::Int),
    ("outcome", Kind::Text),
    ("http_status", Kind::Int),
    ("error_code", Kind::Text),
    ("error_description", Kind::Text),
    ("old_expires_at", Kind::Int),
    ("new_expires_at", Kind::Int),
    ("refresh_token_rotated", Kind::Bool),
    ("old_refresh_fingerprint", Kind::Text),
    ("new_refresh_fingerprint", Kind::Text),
    ("new_access_fingerprint", Kind::Text),
    ("expires_in_reported", Kind::Bool),
    ("invite_id", Kind::Int),
    ("sent_at", Kind::Int),
];

/// The two tables copied, in the order they are written.
pub(super) const TABLES: [(&str, &[(&str, Kind)]); 2] = [
    ("oauth_credential", CREDENTIAL_COLUMNS),
    ("token_rotation", ROTATION_COLUMNS),
];

/// One stored value. No `Debug`: a value may be a token.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(Option<bool>),
}

/// One row, its values in the order of its table's column list.
pub(super) type Rows = Vec<Vec<Value>>;

/// The columns of `table` on PostgreSQL.
pub(super) async fn pg_columns(
    tx: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Vec<String>, TransferError> {
    Ok(sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(table)
    .fetch_all(tx)
    .await?)
}

/// Refuses a table whose columns are not exactly `columns`.
pub(super) fn check_columns(
    table: &'static str,
    columns: &[(&str, Kind)],
    side: &'static str,
    mut found: Vec<String>,
) -> Result<(), TransferError> {
    let mut expected: Vec<String> = columns.iter().map(|(n, _)| (*n).to_owned()).collect();
    found.sort();
    expected.sort();
    if found == expected {
        return Ok(());
    }
    let differ: Vec<String> = found
        .iter()
        .filter(|c| !expected.contains(c))
        .map(|c| format!("+{c}"))
        .chain(
            expected
                .iter()
                .filter(|c| !found.contains(c))
                .map(|c| format!("-{c}")),
        )
        .collect();
    Err(TransferError::Columns {
        table,
        side,
        columns: differ.join(", "),
    })
}

pub(super) fn column_list(columns: &[(&str, Kind)]) -> String {
    columns
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every row of `table`, by id.
pub(super) async fn read_rows<'c, DB, E>(
    executor: E,
    table: &str,
    columns: &[(&str, Kind)],
) -> Result<Rows, TransferError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'r> Option<i64>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> Option<String>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> Option<bool>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let sql = format!("SELECT {} FROM {table} ORDER BY id", column_list(columns));
    // Table and column names come from `TABLES`, never from input.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| {
                    Ok(match kind {
                        Kind::Int => Value::Int(row.try_get(i)?),
                        Kind::Text => Value::Text(row.try_get(i)?),
                        Kind::Bool => Value::Bool(row.try_get(i)?),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(TransferError::from)
        })
        .collect()
}

/// The first way `copied` differs from `source`, row by row and column by column.
pub(super) fn compare(
    table: &'static str,
    columns: &[(&str, Kind)],
    source: &Rows,
    copied: &Rows,
) -> Result<(), TransferError> {
    let id_of = |row: &[Value]| match row.first() {
        Some(Value::Int(Some(id))) => *id,
        _ => -1,
    };
    for (i, row) in source.iter().enumerate() {
        let Some(other) = copied.get(i) else {
            return Err(TransferError::Mismatch {
                table,
                id: id_of(row),
                what: "is missing".to_owned(),
            });
        };
        if let Some(((name, _), _)) = columns
            .iter()
            .zip(row.iter().zip(other))
            .find(|(_, (a, b))| a != b)
        {
            return Err(TransferError::Mismatch {
                table,
                id: id_of(row),
                what: format!("differs in column {name}"),
            });
        }
    }
    if let Some(extra) = copied.get(source.len()) {
        return Err(TransferError::Mismatch {
            table,
            id: id_of(extra),
            what: "is not in the source".to_owned(),
        });
    }
    Ok(())
}
