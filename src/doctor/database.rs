//! The database checks of `doctor`: it answers, its migrations are the ones this binary knows,
//! and (PostgreSQL) this host's clock agrees with the server's, which leases depend on.

use super::{Check, Verdict, check};
use crate::store::{MAX_CLOCK_SKEW_MS, Migrations, Store};

/// Connection, migrations and clock skew of an opened store.
pub async fn database_checks(store: &Store) -> Vec<Check> {
    let mut checks = Vec::new();
    match store.ping().await {
        Ok(()) => checks.push(check(
            Verdict::Ok,
            "connection",
            format!("{} answers", store.backend()),
        )),
        Err(e) => {
            checks.push(check(Verdict::Fail, "connection", e.to_string()));
            return checks;
        }
    }
    checks.push(match store.migrations().await {
        Ok(m) => migration_check(&m),
        Err(e) => check(Verdict::Fail, "migrations", e.to_string()),
    });
    if store.backend() == "postgres" {
        checks.push(match store.clock_skew_ms().await {
            Ok(ms) => skew_check(ms),
            Err(e) => check(Verdict::Fail, "clock", e.to_string()),
        });
    }
    checks
}

/// Every known migration applied, none unknown.
fn migration_check(m: &Migrations) -> Check {
    let unknown: Vec<i64> = m
        .applied
        .iter()
        .filter(|a| !m.known.iter().any(|k| k.0 == a.0))
        .map(|a| a.0)
        .collect();
    let missing: Vec<i64> = m
        .known
        .iter()
        .filter(|k| !m.applied.iter().any(|a| a.0 == k.0))
        .map(|k| k.0)
        .collect();
    let latest = m.applied.last().map_or(0, |a| a.0);
    if !unknown.is_empty() {
        return check(
            Verdict::Warn,
            "migrations",
            format!(
                "applied {unknown:?}, which this binary does not know: a newer tokenwarden migrated this database; upgrade this host too"
            ),
        );
    }
    if !missing.is_empty() {
        return check(
            Verdict::Fail,
            "migrations",
            format!("{missing:?} not applied"),
        );
    }
    check(
        Verdict::Ok,
        "migrations",
        format!("{} applied, the latest {latest}", m.applied.len()),
    )
}

/// This host's clock against the server's: claims are refused past [`MAX_CLOCK_SKEW_MS`].
fn skew_check(ms: i64) -> Check {
    let detail = format!("this host's clock is {ms} ms off the database server's");
    if ms.abs() > MAX_CLOCK_SKEW_MS {
        check(
            Verdict::Fail,
            "clock",
            format!(
                "{detail}: over {} s, so `run` and `refresh` refuse to claim anything; synchronise the clocks (NTP)",
                MAX_CLOCK_SKEW_MS / 1000
            ),
        )
    } else if ms.abs() > MAX_CLOCK_SKEW_MS / 5 {
        check(
            Verdict::Warn,
            "clock",
            format!(
                "{detail}: leases tolerate up to {} s",
                MAX_CLOCK_SKEW_MS / 1000
            ),
        )
    } else {
        check(Verdict::Ok, "clock", detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_and_migrations_are_judged() {
        assert_eq!(skew_check(120).verdict, Verdict::Ok);
        assert_eq!(skew_check(-2_500).verdict, Verdict::Warn);
        assert_eq!(skew_check(6_000).verdict, Verdict::Fail);
        let m = |known: &[i64], applied: &[i64]| Migrations {
            known: known.iter().map(|v| (*v, String::new())).collect(),
            applied: applied.iter().map(|v| (*v, String::new())).collect(),
        };
        assert_eq!(migration_check(&m(&[1, 2], &[1, 2])).verdict, Verdict::Ok);
        assert_eq!(migration_check(&m(&[1, 2], &[1])).verdict, Verdict::Fail);
        assert_eq!(migration_check(&m(&[1], &[1, 2])).verdict, Verdict::Warn);
    }
}
