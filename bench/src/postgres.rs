//! Section 6, PostgreSQL beside SQLite, in one run: the none-due sweep (`run --once` wall and its
//! own duration_ms) at every table size on both backends, interleaved; and the throughput of N due
//! credentials on the instant endpoint, one replica against three (`run --once` processes started
//! together on one database; rate = N / wall from the first spawn to the last exit), with SQLite's
//! single process beside it. Every replica run is checked: each process exits 0, their `sweep
//! finished` lines add up to N due and N refreshed, the journal holds exactly one `refreshed`
//! attempt per credential and nothing else, none is left due, and the endpoint saw N refresh
//! grants and no refresh token twice (reuse).
//!
//! The server is `pgserver.rs`'s; its generated databases are cached in its cluster like the
//! SQLite templates (one database per template, the binary's migration checksums in its comment),
//! and each throughput run gets a fresh `CREATE DATABASE … TEMPLATE` copy. Its statements on the server
//! are in `postgres/databases.rs`, its tables and targets in `postgres/report.rs`.

mod databases;
mod report;

use databases::{check, fill, recreate};
pub use report::{render, targets};

use std::path::PathBuf;
use std::process::Command;

use sqlx::AssertSqlSafe;

use crate::db::{self, Due};
use crate::instant::Counts;
use crate::pgserver::{self, PgServer};
use crate::report::{Run, Series, median};
use crate::{BENCH_SECRET_ENV, Bench, CONCURRENCY, Error, note, proc, unix_now};

/// Bumped when the generated rows change shape, invalidating cached databases.
const GENERATOR_VERSION: u32 = 1;
/// Replicas of the scaled-out case.
pub const REPLICAS: usize = 3;

/// One none-due size on both backends.
pub struct NoneRow {
    pub rows: u64,
    pub sqlite: Series,
    pub pg: Series,
}

/// One throughput run of one or more processes together.
#[derive(Debug, Clone)]
pub struct Together {
    pub wall_ms: f64,
    /// Each process's run (its log's summary, its own wall, CPU and RSS).
    pub each: Vec<Run>,
    pub counts: Counts,
    /// Credentials whose journal does not hold exactly one `refreshed` attempt, plus journal rows
    /// with any other outcome.
    pub not_once: i64,
}

impl Together {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / (self.wall_ms / 1e3)
    }

    fn cpu_us_each(&self, n: u64) -> f64 {
        self.each.iter().map(|r| r.cpu_ms).sum::<f64>() * 1e3 / n.max(1) as f64
    }
}

/// The section's figures.
pub struct Pg {
    pub version: String,
    pub none: Vec<NoneRow>,
    pub n: u64,
    pub sqlite: Series,
    pub one: Vec<Together>,
    pub many: Vec<Together>,
}

impl Pg {
    fn rate(&self, runs: &[Together]) -> f64 {
        median(runs.iter().map(|t| t.rate(self.n)).collect())
    }

    /// 3 replicas' median rate over one replica's.
    pub fn ratio(&self) -> f64 {
        self.rate(&self.many) / self.rate(&self.one)
    }

    fn reuse(&self) -> (u64, i64) {
        self.one
            .iter()
            .chain(&self.many)
            .fold((0, 0), |(r, o), t| (r + t.counts.reused, o + t.not_once))
    }
}

/// The server and what the section made in it.
struct Cluster {
    server: PgServer,
    /// The binary's migrations, as recorded in the empty database it migrated.
    signature: String,
}

impl Bench {
    /// Section 6; `None` (and one line saying so) when PostgreSQL is not installed.
    pub fn postgres(&self) -> Result<Option<Pg>, Error> {
        let Some(bin) = pgserver::bin_dir() else {
            note(
                "PostgreSQL not usable here (no /usr/lib/postgresql/*/bin, no postgres user, or not root): skipping the PostgreSQL section",
            );
            return Ok(None);
        };
        let server = PgServer::start(&bin, &self.templates.join("pg-cluster"))?;
        note(&format!(
            "PostgreSQL {} started on {}",
            server.version,
            server.url("")
        ));
        // From here the server stops when `cluster` drops, whatever happens.
        let mut cluster = Cluster {
            server,
            signature: String::new(),
        };
        cluster.signature = self.pg_make_empty(&cluster)?;
        Ok(Some(self.pg_measure(&cluster)?))
    }

    fn pg_measure(&self, c: &Cluster) -> Result<Pg, Error> {
        let plan = self.o.plan.clone();
        let sizes = &plan.table_sizes;
        let mut none: Vec<NoneRow> = Vec::new();
        let mut dbs = Vec::new();
        for &rows in sizes {
            let sqlite = self.template(rows, Due::None)?;
            dbs.push((sqlite, self.pg_template(c, rows, Due::None)?));
            none.push(NoneRow {
                rows,
                sqlite: Series::default(),
                pg: Series::default(),
            });
        }
        // Round-robin over the sizes, alternating which backend goes first.
        for i in 0..plan.runs_none {
            for (k, (sqlite, pg)) in dbs.iter().enumerate() {
                for which in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                    let run = if which == 0 {
                        self.tw_once(sqlite, "pg-beside-sqlite", 0, None)?
                    } else {
                        let t = self.pg_together(c, pg, 1, 0, false)?;
                        t.each.into_iter().next().ok_or("no run")?
                    };
                    note(&format!(
                        "none due rows={} {} run {}/{}: {:.1} ms (sweep {:?} ms)",
                        none[k].rows,
                        ["SQLite", "PostgreSQL"][which],
                        i + 1,
                        plan.runs_none,
                        run.wall_ms,
                        run.sweep_ms
                    ));
                    if which == 0 {
                        none[k].sqlite.push(run);
                    } else {
                        none[k].pg.push(run);
                    }
                }
            }
        }

        let n = plan.throughput_n;
        let sqlite_all = self.template(n, Due::All)?;
        let pg_all = self.pg_template(c, n, Due::All)?;
        let (mut sqlite, mut one, mut many) = (Series::default(), Vec::new(), Vec::new());
        for i in 0..plan.runs_small {
            for which in [0, 1, 2].iter().cycle().skip(i % 3).take(3) {
                match which {
                    0 => {
                        let run = self.tw_once(&sqlite_all, "pg-beside-tput", n, None)?;
                        note(&format!(
                            "throughput SQLite 1 process run {}: {:.0}/s",
                            i + 1,
                            run.rate()
                        ));
                        sqlite.push(run);
                    }
                    _ => {
                        let k = if *which == 1 { 1 } else { REPLICAS };
                        let t = self.pg_together(c, &pg_all, k, n, true)?;
                        note(&format!(
                            "throughput PostgreSQL {k} replica(s) run {}: {:.0}/s (due {:?}; reused {}; not once {})",
                            i + 1,
                            t.rate(n),
                            t.each
                                .iter()
                                .map(|r| r.due.unwrap_or(0))
                                .collect::<Vec<_>>(),
                            t.counts.reused,
                            t.not_once
                        ));
                        if k == 1 { one.push(t) } else { many.push(t) }
                    }
                }
            }
        }
        Ok(Pg {
            version: c.server.version.clone(),
            none,
            n,
            sqlite,
            one,
            many,
        })
    }

    /// `bench_empty`, created afresh and migrated by the binary under test; its migrations' sign.
    fn pg_make_empty(&self, c: &Cluster) -> Result<String, Error> {
        self.rt.block_on(async {
            let admin = c.server.pool("postgres").await?;
            recreate(&admin, "bench_empty", None).await?;
            admin.close().await;
            Ok::<_, Error>(())
        })?;
        let cfg = self.pg_config(c, "pg-empty", "bench_empty")?;
        let log = self.runs.join("pg-empty.log");
        let mut cmd = self.pg_command(c)?;
        cmd.arg("--config")
            .arg(&cfg)
            .args(["run", "--once"])
            .stderr(std::fs::File::create(&log)?);
        let m = proc::run(&mut cmd, self.o.plan.limit, None)?;
        if m.code != Some(0) {
            return Err(format!(
                "migrating the empty PostgreSQL database failed: {}",
                std::fs::read_to_string(&log)?
            )
            .into());
        }
        self.rt.block_on(async {
            let pool = c.server.pool("bench_empty").await?;
            let (sig,): (Option<String>,) = sqlx::query_as(
                "SELECT string_agg(version || ':' || encode(checksum, 'hex'), ',' ORDER BY version) FROM _sqlx_migrations",
            )
            .fetch_one(&pool)
            .await?;
            pool.close().await;
            Ok(format!("pggen{GENERATOR_VERSION};{}", sig.unwrap_or_default()))
        })
    }

    /// The database `tpl_ROWS_TAG`: reused while its comment names these migrations (and, when it
    /// holds not-due rows, for [`db::NOT_DUE_FRESH_SECS`] after it was generated); else generated
    /// from `bench_empty`.
    fn pg_template(&self, c: &Cluster, rows: u64, due: Due) -> Result<String, Error> {
        let tag = match due {
            Due::None => "none".to_owned(),
            Due::EveryNth(n) => format!("every{n}"),
            Due::All => "all".to_owned(),
        };
        let name = format!("tpl_{rows}_{tag}");
        let now = unix_now();
        self.rt.block_on(async {
            let admin = c.server.pool("postgres").await?;
            let comment: Option<(Option<String>,)> = sqlx::query_as(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            )
            .bind(&name)
            .fetch_optional(&admin)
            .await?;
            let fresh = comment
                .and_then(|(text,)| text)
                .and_then(|text| {
                    let (sig, made) = text.rsplit_once(";made=")?;
                    let made: i64 = made.parse().ok()?;
                    let young = due == Due::All || now.abs_diff(made) < db::NOT_DUE_FRESH_SECS;
                    (sig == c.signature && young).then_some(())
                })
                .is_some();
            if fresh {
                admin.close().await;
                return Ok(name.clone());
            }
            let t = std::time::Instant::now();
            recreate(&admin, &name, Some("bench_empty")).await?;
            let pool = c.server.pool(&name).await?;
            fill(&pool, rows, due, now).await?;
            pool.close().await;
            // The signature is hex, digits and separators: nothing to quote.
            sqlx::query(AssertSqlSafe(format!(
                "COMMENT ON DATABASE {name} IS '{};made={now}'",
                c.signature
            )))
            .execute(&admin)
            .await?;
            admin.close().await;
            note(&format!(
                "generated PostgreSQL database {name} in {:.1} s",
                t.elapsed().as_secs_f64()
            ));
            Ok::<_, Error>(name.clone())
        })
    }

    /// `k` `run --once` processes together on database `db` (on a fresh copy `run_tput` of it when
    /// `copy`), expecting `expect` due credentials between them; checked.
    fn pg_together(
        &self,
        c: &Cluster,
        db: &str,
        k: usize,
        expect: u64,
        copy: bool,
    ) -> Result<Together, Error> {
        let target = if copy { "run_tput" } else { db };
        if copy {
            self.rt.block_on(async {
                let admin = c.server.pool("postgres").await?;
                recreate(&admin, target, Some(db)).await?;
                admin.close().await;
                Ok::<_, Error>(())
            })?;
        }
        let mut cmds = Vec::with_capacity(k);
        let mut logs = Vec::with_capacity(k);
        for i in 0..k {
            let name = format!("pg-{}-{k}x-{i}", if copy { "tput" } else { "none" });
            let cfg = self.pg_config(c, &name, target)?;
            let log = self.runs.join(format!("{name}.log"));
            let mut cmd = self.pg_command(c)?;
            cmd.arg("--config")
                .arg(&cfg)
                .args(["run", "--once"])
                .stderr(std::fs::File::create(&log)?);
            cmds.push(cmd);
            logs.push(log);
        }
        let presented = &self.presented;
        presented.reset();
        let before = unix_now();
        let together = proc::run_together(&mut cmds, self.o.plan.limit)?;
        let counts = presented.counts();
        let mut each = Vec::with_capacity(k);
        for (m, log) in together.each.iter().zip(&logs) {
            let text = std::fs::read_to_string(log)?;
            let run = Run::from(m, &text);
            if m.code != Some(0) || run.failed != Some(0) {
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                return Err(format!(
                    "PostgreSQL replica on {target}: exit {:?}, failed {:?} (log {}; last lines: {tail:?})",
                    m.code,
                    run.failed,
                    log.display()
                )
                .into());
            }
            each.push(run);
        }
        let sum = |f: fn(&Run) -> Option<u64>| each.iter().map(|r| f(r).unwrap_or(0)).sum::<u64>();
        let (due, refreshed) = (sum(|r| r.due), sum(|r| r.refreshed));
        let (left, since, pending, not_once) = self.rt.block_on(async {
            let pool = c.server.pool(target).await?;
            let r = check(&pool, before).await;
            pool.close().await;
            r
        })?;
        if due != expect
            || refreshed != expect
            || left != 0
            || since != expect as i64
            || pending != 0
        {
            return Err(format!(
                "PostgreSQL, {k} replica(s) on {target}: expected {expect} due and refreshed; the replicas logged due={due} refreshed={refreshed}, the database has {left} still due, {since} refreshed, {pending} journal rows pending (logs {})",
                logs.iter().map(|l| l.display().to_string()).collect::<Vec<_>>().join(", ")
            )
            .into());
        }
        Ok(Together {
            wall_ms: together.wall.as_secs_f64() * 1e3,
            each,
            counts,
            not_once,
        })
    }

    /// The binary under test, with the server's password in its environment.
    /// A measured `tokenwarden` (`proc::measured`) with the cluster's password.
    fn pg_command(&self, c: &Cluster) -> Result<Command, Error> {
        let mut cmd = self.measured(&self.o.bin)?;
        cmd.env(pgserver::PASSWORD_ENV, c.server.password());
        Ok(cmd)
    }

    /// A configuration for database `db` of the cluster, with the instant provider `bench`.
    fn pg_config(&self, c: &Cluster, name: &str, db: &str) -> Result<PathBuf, Error> {
        let text = format!(
            "database = {:?}\nconcurrency = {CONCURRENCY}\n\n[postgres]\npassword_env = \"{}\"\n\n[providers.bench]\ntoken_url = {:?}\nclient_id = \"bench-client\"\nclient_secret_env = \"{BENCH_SECRET_ENV}\"\n",
            c.server.url(db),
            pgserver::PASSWORD_ENV,
            self.instant_url
        );
        let path = self.runs.join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }
}
