//! Section 6's tables and targets, from the figures `postgres.rs` measured.

use std::fmt::Write as _;

use super::{Pg, REPLICAS, Series};
use crate::CONCURRENCY;
use crate::report::{fmt_ms, fmt_rows, median};

/// The section's tables.
pub fn render(pg: &Pg) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### 6. PostgreSQL beside SQLite (PostgreSQL {}, same run; instant endpoint, concurrency {CONCURRENCY})\n",
        pg.version
    );
    let _ = writeln!(
        s,
        "The server: the distribution's PostgreSQL as the `postgres` user on 127.0.0.1 (password authentication, fsync and synchronous commit on: its defaults), on the same 2 cores as everything else. Both backends' none-due runs alternate, round-robin over the sizes.\n"
    );
    let _ = writeln!(
        s,
        "| credentials, none due | SQLite `run --once` wall | SQLite sweep (duration_ms) | PostgreSQL `run --once` wall | PostgreSQL sweep (duration_ms) | runs (SQLite / PostgreSQL wall) |"
    );
    let _ = writeln!(s, "| ---: | ---: | ---: | ---: | ---: | --- |");
    for row in &pg.none {
        let walls = |x: &Series| {
            x.runs
                .iter()
                .map(|r| fmt_ms(r.wall_ms))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} / {} |",
            fmt_rows(row.rows),
            fmt_ms(row.sqlite.wall_ms()),
            fmt_ms(row.sqlite.sweep_ms()),
            fmt_ms(row.pg.wall_ms()),
            fmt_ms(row.pg.sweep_ms()),
            walls(&row.sqlite),
            walls(&row.pg)
        );
    }
    let _ = writeln!(
        s,
        "\nThroughput, {} due: credentials per second of wall time from the first process's start to the last one's exit. Three replicas are three `run --once` processes started together on one PostgreSQL database (each with concurrency {CONCURRENCY}).\n",
        fmt_rows(pg.n)
    );
    let _ = writeln!(
        s,
        "| backend, processes | rate | wall | CPU per credential (all processes) | due per process (each run) | refresh grants / reused | runs (per s) |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | --- | --- | --- |");
    let sq = &pg.sqlite;
    let _ = writeln!(
        s,
        "| SQLite, 1 | {:.0}/s | {} | {:.0} µs | {} | – | {} |",
        sq.rate(),
        fmt_ms(sq.wall_ms()),
        sq.cpu_us_each(),
        fmt_rows(pg.n),
        sq.runs
            .iter()
            .map(|r| format!("{:.0}", r.rate()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (k, runs) in [(1, &pg.one), (REPLICAS, &pg.many)] {
        let splits = runs
            .iter()
            .map(|t| {
                t.each
                    .iter()
                    .map(|r| r.due.unwrap_or(0).to_string())
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let grants: u64 = runs.iter().map(|t| t.counts.refresh_grants).sum();
        let reused: u64 = runs.iter().map(|t| t.counts.reused).sum();
        let _ = writeln!(
            s,
            "| PostgreSQL, {k} | {:.0}/s | {} | {:.0} µs | {splits} | {grants} / {reused} | {} |",
            pg.rate(runs),
            fmt_ms(median(runs.iter().map(|t| t.wall_ms).collect())),
            median(runs.iter().map(|t| t.cpu_us_each(pg.n)).collect()),
            runs.iter()
                .map(|t| format!("{:.0}", t.rate(pg.n)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let (reused, not_once) = pg.reuse();
    let _ = writeln!(
        s,
        "\n{REPLICAS} replicas / 1: {:.2}× (medians). Over all {} PostgreSQL throughput runs: refresh tokens presented twice {reused}; credentials not refreshed exactly once (or journal rows other than `refreshed`) {not_once}.",
        pg.ratio(),
        pg.one.len() + pg.many.len()
    );
    s
}

/// The section's targets: (what, measured, pass).
pub fn targets(pg: &Pg) -> Vec<(String, String, bool)> {
    let mut t = Vec::new();
    if let Some(big) = pg.none.last() {
        let b = big.pg.wall_ms();
        t.push((
            format!(
                "PostgreSQL `run --once`, {} credentials, none due: ≤ 50 ms",
                fmt_rows(big.rows)
            ),
            format!("{} (SQLite {})", fmt_ms(b), fmt_ms(big.sqlite.wall_ms())),
            b <= 50.0,
        ));
    }
    let ratio = pg.ratio();
    t.push((
        format!(
            "PostgreSQL, {REPLICAS} replicas together ≥ 0.8× the throughput of one ({} due, instant)",
            fmt_rows(pg.n)
        ),
        format!(
            "{ratio:.2}× ({:.0}/s vs {:.0}/s)",
            pg.rate(&pg.many),
            pg.rate(&pg.one)
        ),
        ratio >= 0.8,
    ));
    let (reused, not_once) = pg.reuse();
    t.push((
        "PostgreSQL replicas: refresh-token reuse 0, every credential refreshed exactly once"
            .into(),
        format!("{reused} reused, {not_once} not exactly once"),
        reused == 0 && not_once == 0,
    ));
    t
}
