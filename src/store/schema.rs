//! The schema at opening: whether sqlx's migrator has anything to do. Both backends read
//! `_sqlx_migrations` once ([`Recorded`], in one round trip); when every embedded migration is
//! recorded, applied successfully and with the checksum this binary has, and the database records
//! none this binary lacks, the migrator would only look and leave, and it is not run — on
//! PostgreSQL that look is an advisory lock, a create-if-missing of its table, two reads and the
//! unlock, about ten round trips before the first statement of the command. In every other case
//! (a new database, a migration to apply, one recorded dirty, changed or unknown, a table that
//! cannot be read) it runs as before, under its lock, and decides: applies what is missing, or
//! refuses with its own error. Imports `statement` only.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{Decode, Row, Type};

use super::statement::Conn;

/// One row of `_sqlx_migrations`, as the fast path reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recorded {
    pub version: i64,
    pub checksum: Vec<u8>,
    pub success: bool,
}

/// Brings the schema on `conn` up to date: one read of `_sqlx_migrations` when it already is
/// ([`up_to_date`]), else the migrator as it always ran, with its lock and its refusals.
pub(super) async fn migrate(conn: Conn<'_>, migrator: &Migrator) -> Result<(), MigrateError> {
    // Any error here (no table yet, a column of another type) leaves the decision to the migrator.
    match conn {
        Conn::Sqlite(conn) => {
            let rows = sqlx::raw_sql(RECORDED).fetch_all(&mut *conn).await;
            if rows_up_to_date(migrator, rows) {
                return Ok(());
            }
            migrator.run(conn).await
        }
        Conn::Postgres(conn) => {
            let rows = sqlx::raw_sql(RECORDED).fetch_all(&mut *conn).await;
            if rows_up_to_date(migrator, rows) {
                return Ok(());
            }
            migrator.run(conn).await
        }
    }
}

/// Whether `rows` (of [`RECORDED`]) could be read and say [`up_to_date`].
fn rows_up_to_date<R>(migrator: &Migrator, rows: Result<Vec<R>, sqlx::Error>) -> bool
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let Ok(rows) = rows else {
        return false;
    };
    let recorded: Result<Vec<Recorded>, sqlx::Error> = rows
        .iter()
        .map(|row| {
            Ok(Recorded {
                version: row.try_get(0)?,
                checksum: row.try_get(1)?,
                success: row.try_get(2)?,
            })
        })
        .collect();
    recorded.is_ok_and(|recorded| up_to_date(migrator, &recorded))
}

/// Reads every recorded migration, oldest first; `$1`-free, so that it goes in one round trip
/// (PostgreSQL's simple protocol: nothing to prepare).
const RECORDED: &str = "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version";

/// Whether the migrator has nothing to do with a database that records `recorded`: exactly this
/// binary's migrations (the up ones), each successful and with the same checksum.
pub(super) fn up_to_date(migrator: &Migrator, recorded: &[Recorded]) -> bool {
    let mut known = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration());
    let mut recorded = recorded.iter();
    loop {
        match (known.next(), recorded.next()) {
            (None, None) => return true,
            (Some(m), Some(r))
                if r.success && r.version == m.version && *r.checksum == *m.checksum => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Recorded, up_to_date};

    static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

    fn as_recorded() -> Vec<Recorded> {
        MIGRATOR
            .iter()
            .map(|m| Recorded {
                version: m.version,
                checksum: m.checksum.to_vec(),
                success: true,
            })
            .collect()
    }

    #[test]
    fn only_exactly_the_embedded_migrations_applied_skip_the_migrator() {
        assert!(
            MIGRATOR.iter().count() >= 2,
            "the test needs two migrations"
        );
        let all = as_recorded();
        assert!(up_to_date(&MIGRATOR, &all));
        // A new database, or one a migration short: the migrator applies.
        assert!(!up_to_date(&MIGRATOR, &[]));
        assert!(!up_to_date(&MIGRATOR, &all[..all.len() - 1]));
        // A changed checksum, a dirty one: the migrator refuses.
        let mut changed = all.clone();
        changed[0].checksum[0] ^= 1;
        assert!(!up_to_date(&MIGRATOR, &changed));
        let mut dirty = all.clone();
        dirty.last_mut().unwrap().success = false;
        assert!(!up_to_date(&MIGRATOR, &dirty));
        // One this binary does not know (a newer binary migrated it): the migrator refuses.
        let mut newer = all.clone();
        newer.push(Recorded {
            version: all.last().unwrap().version + 1,
            checksum: vec![0; 48],
            success: true,
        });
        assert!(!up_to_date(&MIGRATOR, &newer));
        // Versions out of place (not in order, one missing in between).
        let mut gap = all.clone();
        gap.remove(0);
        gap.push(all[0].clone());
        assert!(!up_to_date(&MIGRATOR, &gap));
    }
}
