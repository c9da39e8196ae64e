//! tokenwarden's performance benchmark. Run it with `bench/run.sh` (full: release build, writes
//! BENCHMARKS.md) or `bench/run.sh --smoke` (dev build, tiny sizes, one run each, seconds; CI).
//!
//! Measured, each as the median of several runs of the real binary as a child process:
//! 1. sweep cost against table size: `run --once` wall time and peak RSS on tables of growing size
//!    with none and 1% due, against an instant token endpoint served from this process;
//! 2. refresh throughput: one sweep of N due credentials against the instant endpoint and against
//!    the repository's oidc-provider test server, beside a bare baseline (`baseline.rs`);
//! 3. footprint: the daemon's idle RSS after start, and the peak RSS of a large all-due sweep;
//! 4. sealing: the none-due sweeps (smallest and largest table) and the instant-endpoint
//!    throughput with `[encryption]` on, each beside the same run with it off, interleaved;
//! 5. the idle footprint side by side (`side.rs`): tokenwarden beside pizauth (`PIZAUTH_BIN`) and
//!    an earlier tokenwarden (`TOKENWARDEN_BASE_BIN`): RSS, wake-ups, threads, ready, binary size;
//! 6. PostgreSQL beside SQLite (`postgres.rs`, its server `pgserver.rs`): the none-due sweeps on
//!    both, and the throughput of one replica against three on one PostgreSQL database, with
//!    refresh-token reuse counted; skipped with a note when PostgreSQL is not installed;
//! 7. the token API (`api.rs`): tokens per second and p50/p99 latency over the daemon's unix
//!    socket with 1, 8 and 64 clients, beside `tokenwarden token` and `sqlite3` as a process per
//!    call.
//! 8. the proxy route (`proxy.rs`): requests per second and p50/p99 latency of small GETs at 1, 16
//!    and 64 keep-alive clients through a `[[proxy]]` route, through nginx and direct, and the
//!    route's and nginx's instructions per request under callgrind (`callgrind.rs`, when valgrind
//!    is installed); only with `--only proxy` (not part of the default run or `--smoke`).
//!
//! Usage: tokenwarden-bench --bin PATH --repo DIR [--smoke] [--out FILE] [--work DIR] [--skip-oidc]
//!            [--only sweep,throughput,oidc,footprint,sealed,side,postgres,api,proxy]
//!        tokenwarden-bench baseline ... (the bare baseline; see baseline.rs)
//!        tokenwarden-bench launch PROGRAM ARGS... (runs and measures one child; see proc.rs)
//!        tokenwarden-bench api-client SOCKET CLIENTS SECONDS (section 7's clients; see api.rs)
//!        tokenwarden-bench proxy-client ADDR CLIENTS SECONDS (section 8's clients; see proxy.rs)
//!        tokenwarden-bench serve [SECONDS] (the instant endpoint alone, for profiling by hand)

mod api;
mod baseline;
mod callgrind;
mod db;
mod instant;
mod oidc;
mod pgserver;
mod postgres;
mod proc;
mod proxy;
mod report;
mod side;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use db::Due;
use report::{DueAmong, Footprint, Idle, Results, Run, Sealing, Series, SweepRow, Throughput};

const BENCH_SECRET_ENV: &str = "TW_BENCH_CLIENT_SECRET";
const OIDC_SECRET_ENV: &str = "TW_BENCH_OIDC_SECRET";
const CONCURRENCY: usize = 8;

type Error = Box<dyn std::error::Error>;

/// Sizes and repetitions of one mode.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub table_sizes: Vec<u64>,
    pub part_due: Due,
    pub throughput_n: u64,
    pub oidc_n: u64,
    pub footprint_n: u64,
    /// Runs per measurement for quick cases, and for the big ones (>= `big_rows` rows or due).
    pub runs_small: usize,
    pub runs_big: usize,
    /// Runs of each none-due sweep (milliseconds each).
    pub runs_none: usize,
    pub big_rows: u64,
    pub limit: Duration,
    pub settle: Duration,
}

impl Plan {
    fn full() -> Self {
        Self {
            smoke: false,
            table_sizes: vec![1_000, 100_000, 1_000_000],
            part_due: Due::EveryNth(100),
            throughput_n: 10_000,
            oidc_n: 10_000,
            footprint_n: 100_000,
            runs_small: 5,
            runs_big: 3,
            runs_none: 15,
            big_rows: 1_000_000,
            limit: Duration::from_secs(900),
            settle: Duration::from_secs(1),
        }
    }

    fn smoke() -> Self {
        Self {
            smoke: true,
            table_sizes: vec![200, 2_000],
            part_due: Due::EveryNth(100),
            throughput_n: 200,
            oidc_n: 30,
            footprint_n: 300,
            runs_small: 1,
            runs_big: 1,
            runs_none: 1,
            big_rows: 2_000,
            limit: Duration::from_secs(60),
            settle: Duration::from_millis(200),
        }
    }
}

struct Opts {
    plan: Plan,
    bin: PathBuf,
    repo: PathBuf,
    work: PathBuf,
    out: PathBuf,
    skip_oidc: bool,
    /// Sections to run (sweep, throughput, oidc, footprint, sealed, side, postgres, api); all when
    /// empty.
    only: Vec<String>,
}

impl Opts {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("launch") {
        std::process::exit(proc::launch_main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("baseline") {
        std::process::exit(baseline::main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("api-client") {
        std::process::exit(api::client_main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("proxy-client") {
        std::process::exit(proxy::client_main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("serve") {
        std::process::exit(serve(&args[1..]));
    }
    let code = match parse(&args).and_then(drive) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tokenwarden-bench: error: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// `serve [SECONDS]`: the instant endpoint on its own, for profiling by hand. Prints its token URL,
/// serves until standard input closes or SECONDS (default 600) pass, then prints the request count.
fn serve(args: &[String]) -> i32 {
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(600);
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    else {
        return 70;
    };
    rt.block_on(async {
        let Ok(endpoint) = instant::start().await else {
            return 70;
        };
        println!("{}", endpoint.token_url);
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        let _ = tokio::time::timeout(Duration::from_secs(seconds), stdin_closed).await;
        eprintln!(
            "served {} requests",
            endpoint.requests.load(std::sync::atomic::Ordering::Relaxed)
        );
        0
    })
}

fn parse(args: &[String]) -> Result<Opts, Error> {
    let mut smoke = false;
    let mut skip_oidc = false;
    let mut only = Vec::new();
    let (mut bin, mut repo, mut work, mut out) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--smoke" => smoke = true,
            "--skip-oidc" => skip_oidc = true,
            "--bin" => bin = Some(value()?),
            "--repo" => repo = Some(value()?),
            "--work" => work = Some(value()?),
            "--out" => out = Some(value()?),
            "--only" => {
                let list = value()?;
                only.extend(list.to_string_lossy().split(',').map(str::to_owned));
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let repo = repo.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let repo = repo.canonicalize()?;
    let bin = bin
        .ok_or("--bin PATH (the tokenwarden binary) is required")?
        .canonicalize()?;
    let plan = if smoke { Plan::smoke() } else { Plan::full() };
    let work = work.unwrap_or_else(|| {
        repo.join("target")
            .join(if smoke { "bench-smoke" } else { "bench" })
    });
    let out = out.unwrap_or_else(|| {
        if smoke {
            work.join("BENCHMARKS.smoke.md")
        } else {
            repo.join("BENCHMARKS.md")
        }
    });
    Ok(Opts {
        plan,
        bin,
        repo,
        work,
        out,
        skip_oidc,
        only,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn note(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// Fails when a daemon's `log` panicked or holds `token` (a missing log holds neither).
fn check_daemon_log(log: &Path, token: &str) -> Result<(), Error> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if text.contains("panicked") || text.contains(token) {
        return Err(format!(
            "the daemon's log {} panicked or holds a token",
            log.display()
        )
        .into());
    }
    Ok(())
}

struct Bench {
    o: Opts,
    /// The `[encryption]` key of the sealed runs (a fixed benchmark key, so sealed templates can be
    /// cached).
    key: PathBuf,
    rt: tokio::runtime::Runtime,
    instant_url: String,
    /// The instant endpoint's record of presented refresh tokens (reuse).
    presented: std::sync::Arc<instant::Presented>,
    templates: PathBuf,
    runs: PathBuf,
    empty: PathBuf,
    signature: String,
}

fn drive(o: Opts) -> Result<(), Error> {
    let started = std::time::Instant::now();
    // One worker thread serves the instant endpoint (and the driver's own async work); the measured
    // processes get the rest of the machine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let endpoint = rt.block_on(instant::start())?;
    let templates = o.work.join("templates");
    let runs = o.work.join("runs");
    std::fs::create_dir_all(&templates)?;
    std::fs::create_dir_all(&runs)?;
    let key = o.work.join("bench-encryption.key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&key, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n")?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut b = Bench {
        key,
        instant_url: endpoint.token_url.clone(),
        presented: std::sync::Arc::clone(&endpoint.presented),
        empty: templates.join("empty.db"),
        templates,
        runs,
        signature: String::new(),
        rt,
        o,
    };
    b.make_empty()?;
    note(&format!(
        "binary {} ; schema {}",
        b.o.bin.display(),
        b.signature
    ));

    let plan = b.o.plan.clone();
    let mut results = Results {
        plan: plan.clone(),
        machine: report::machine(
            &b.o.bin,
            b.rt.block_on(db::sqlite_version()).unwrap_or_default(),
        ),
        sweeps: Vec::new(),
        due_among: None,
        throughput: Vec::new(),
        footprint: None,
        oidc_stats: None,
        sealing: Vec::new(),
        side: None,
        postgres: None,
        api: None,
        proxy: None,
        total: Duration::ZERO,
    };

    // 1. Sweep cost against table size. The none-due runs take milliseconds, so they get more runs,
    //    round-robin over the sizes so that the machine's drift hits every size alike.
    if b.o.runs("sweep") {
        let sizes = &plan.table_sizes;
        let none_templates = sizes
            .iter()
            .map(|&rows| b.template(rows, Due::None))
            .collect::<Result<Vec<_>, _>>()?;
        let mut none_series = vec![Series::default(); sizes.len()];
        for i in 0..plan.runs_none {
            for (k, &rows) in sizes.iter().enumerate() {
                let run = b.tw_once(&none_templates[k], "sweep", 0, None)?;
                note(&format!(
                    "sweep rows={rows} due=none run {}/{}: {:.1} ms, {} KiB",
                    i + 1,
                    plan.runs_none,
                    run.wall_ms,
                    run.rss_kib
                ));
                none_series[k].push(run);
            }
        }
        for (k, &rows) in sizes.iter().enumerate() {
            results.sweeps.push(SweepRow {
                rows,
                due: Due::None,
                due_count: 0,
                tw: none_series[k].clone(),
            });
            let due = plan.part_due;
            let template = b.template(rows, due)?;
            let n = if rows >= plan.big_rows {
                plan.runs_big
            } else {
                plan.runs_small
            };
            // The largest table's due rows alternate with as many due alone (a table of only
            // those rows, every one due): what the rest of the table costs.
            let due_count = due.count(rows);
            let alone = (k + 1 == sizes.len() && due_count > 0)
                .then(|| b.template(due_count, Due::All))
                .transpose()?;
            let mut series = Series::default();
            let mut alone_series = Series::default();
            for i in 0..n {
                let run = b.tw_once(&template, "sweep", due_count, None)?;
                note(&format!(
                    "sweep rows={rows} due={} run {}/{n}: {:.1} ms, {} KiB",
                    due.label(),
                    i + 1,
                    run.wall_ms,
                    run.rss_kib
                ));
                series.push(run);
                if let Some(alone) = &alone {
                    let run = b.tw_once(alone, "sweep", due_count, None)?;
                    note(&format!(
                        "sweep rows={due_count} due=all run {}/{n}: {:.1} ms, {} KiB",
                        i + 1,
                        run.wall_ms,
                        run.rss_kib
                    ));
                    alone_series.push(run);
                }
            }
            let row = SweepRow {
                rows,
                due,
                due_count,
                tw: series,
            };
            if alone.is_some() {
                results.due_among = Some(DueAmong {
                    among: row.clone(),
                    alone: SweepRow {
                        rows: due_count,
                        due: Due::All,
                        due_count,
                        tw: alone_series,
                    },
                });
            }
            results.sweeps.push(row);
        }
    }

    // 2a. Throughput against the instant endpoint, beside the bare baseline; alternating order.
    if b.o.runs("throughput") {
        let n = plan.throughput_n;
        let template = b.template(n, Due::All)?;
        let (mut tw, mut base) = (Series::default(), Series::default());
        for i in 0..plan.runs_small {
            for which in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                if which == 0 {
                    let run = b.tw_once(&template, "tput", n, None)?;
                    note(&format!(
                        "throughput instant tokenwarden run {}: {:.0}/s",
                        i + 1,
                        run.rate()
                    ));
                    tw.push(run);
                } else {
                    let run = b.baseline_once(
                        &template,
                        &b.instant_url.clone(),
                        "bench-client",
                        BENCH_SECRET_ENV,
                        n,
                    )?;
                    note(&format!(
                        "throughput instant baseline run {}: {:.0}/s",
                        i + 1,
                        run.rate()
                    ));
                    base.push(run);
                }
            }
        }
        results.throughput.push(Throughput {
            endpoint: "instant (in-process, 127.0.0.1)".into(),
            n,
            tw,
            base,
        });
    }

    // 2b. Throughput against oidc-provider.
    if b.o.skip_oidc {
        note("skipping the oidc-provider measurement (--skip-oidc)");
    } else if b.o.runs("oidc") {
        let (t, stats) = b.oidc_throughput()?;
        results.throughput.push(t);
        results.oidc_stats = Some(stats);
    }

    // 3. Footprint.
    if b.o.runs("footprint") {
        let mut idle_empty = Vec::new();
        for _ in 0..plan.runs_small {
            idle_empty.push(b.idle(&b.empty.clone())?);
        }
        let big = *plan.table_sizes.last().expect("sizes");
        let big_template = b.template(big, Due::None)?;
        let mut idle_big = Vec::new();
        for _ in 0..plan.runs_big {
            idle_big.push(b.idle(&big_template)?);
        }
        note(&format!(
            "idle RSS: empty db {:?} ; {big} rows {:?}",
            idle_empty.iter().map(|i| i.rss_kib).collect::<Vec<_>>(),
            idle_big.iter().map(|i| i.rss_kib).collect::<Vec<_>>()
        ));
        let n = plan.footprint_n;
        let template = b.template(n, Due::All)?;
        let mut sweep = Series::default();
        for i in 0..plan.runs_big {
            let run = b.tw_once(
                &template,
                "footprint",
                n,
                Some(Duration::from_millis(if plan.smoke { 20 } else { 100 })),
            )?;
            note(&format!(
                "footprint sweep of {n} due run {}: peak {} KiB, {:.0}/s",
                i + 1,
                run.rss_kib,
                run.rate()
            ));
            sweep.push(run);
        }
        results.footprint = Some(Footprint {
            idle_empty,
            idle_big,
            big_rows: big,
            sweep_n: n,
            sweep,
        });
    }

    // 4. Sealing on against off: the same runs, interleaved.
    if b.o.runs("sealed") {
        b.sealing(&mut results.sealing)?;
    }

    // 5. The idle footprint side by side with pizauth (PIZAUTH_BIN) and an earlier build.
    if b.o.runs("side") {
        results.side = Some(b.side_by_side()?);
    }

    // 6. PostgreSQL beside SQLite: none due at every size, and one replica against three.
    if b.o.runs("postgres") {
        results.postgres = b.postgres()?;
    }

    // 7. The token API over its socket, beside a process per call.
    if b.o.runs("api") {
        results.api = Some(b.api()?);
    }

    // 8. The proxy route beside nginx and direct: only when named (`--only proxy`).
    if b.o.only.iter().any(|s| s == "proxy") {
        results.proxy = b.proxy()?;
    }

    results.total = started.elapsed();
    let block = report::render(&results);
    report::write(&b.o.out, &block, plan.smoke)?;
    println!("{block}");
    note(&format!(
        "wrote {} in {:.1} s",
        b.o.out.display(),
        started.elapsed().as_secs_f64()
    ));
    if !plan.smoke {
        let misses = report::misses(&results);
        if !misses.is_empty() {
            note(&format!("targets missed: {}", misses.join("; ")));
        }
    }
    Ok(())
}

impl Bench {
    fn command(&self, program: &Path) -> Command {
        self.prepared(Command::new(program))
    }

    /// [`Bench::command`] through the launcher that measures it (`proc::measured`): for
    /// `proc::run` and `proc::run_together`.
    fn measured(&self, program: &Path) -> Result<Command, Error> {
        Ok(self.prepared(proc::measured(program)?))
    }

    /// The environment and standard input and output of every child.
    fn prepared(&self, mut cmd: Command) -> Command {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TOKENWARDEN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env(BENCH_SECRET_ENV, "bench-secret")
            .env(OIDC_SECRET_ENV, oidc::CLIENT_SECRET)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// A configuration for `db` with the instant provider `bench` (and `oidc` when given).
    fn config(
        &self,
        name: &str,
        db: &Path,
        oidc_url: Option<&str>,
        daemon: bool,
    ) -> Result<PathBuf, Error> {
        self.config_with(name, db, oidc_url, daemon, false)
    }

    /// [`Bench::config`], with `[encryption]` (the benchmark key) when `sealed`.
    fn config_with(
        &self,
        name: &str,
        db: &Path,
        oidc_url: Option<&str>,
        daemon: bool,
        sealed: bool,
    ) -> Result<PathBuf, Error> {
        let mut text = format!(
            "database = {:?}\nconcurrency = {CONCURRENCY}\n",
            db.display().to_string()
        );
        if daemon {
            // A schedule far away: the daemon sweeps at start, then idles.
            text.push_str(
                "schedule = \"0 0 1 * *\"\nrefresh_margin = \"40d\"\nmax_idle = \"60d\"\n",
            );
        }
        text.push_str(&format!(
            "\n[providers.bench]\ntoken_url = {:?}\nclient_id = \"bench-client\"\nclient_secret_env = \"{BENCH_SECRET_ENV}\"\n",
            self.instant_url
        ));
        if let Some(url) = oidc_url {
            text.push_str(&format!(
                "\n[providers.oidc]\ntoken_url = {url:?}\nclient_id = \"{}\"\nclient_secret_env = \"{OIDC_SECRET_ENV}\"\n",
                oidc::CLIENT_ID
            ));
        }
        if sealed {
            text.push_str(&format!(
                "\n[encryption]\nkey_file = {:?}\n",
                self.key.display().to_string()
            ));
        }
        let path = self.runs.join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The empty, migrated database the binary under test creates; its migrations sign templates.
    fn make_empty(&mut self) -> Result<(), Error> {
        db::remove(&self.empty)?;
        let cfg = self.config("empty", &self.empty, None, false)?;
        let log = self.runs.join("empty.log");
        let mut cmd = self.measured(&self.o.bin)?;
        cmd.arg("--config")
            .arg(&cfg)
            .args(["run", "--once"])
            .stderr(std::fs::File::create(&log)?);
        let m = proc::run(&mut cmd, self.o.plan.limit, None)?;
        if m.code != Some(0) {
            return Err(format!(
                "creating the empty database failed: {}",
                std::fs::read_to_string(&log)?
            )
            .into());
        }
        self.signature = self.rt.block_on(db::migration_signature(&self.empty))?;
        Ok(())
    }

    /// A template with `rows` credentials of the instant provider; reused while the schema matches
    /// and, when it holds not-due rows (they fall due an hour after generation), for
    /// [`db::NOT_DUE_FRESH_SECS`] after it was generated.
    fn template(&self, rows: u64, due: Due) -> Result<PathBuf, Error> {
        let tag = match due {
            Due::None => "none".to_owned(),
            Due::EveryNth(n) => format!("every{n}"),
            Due::All => "all".to_owned(),
        };
        let path = self.templates.join(format!("bench-{rows}-{tag}.db"));
        let sig_path = path.with_extension("sig");
        let young = due == Due::All
            || std::fs::metadata(&sig_path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() < db::NOT_DUE_FRESH_SECS);
        if path.exists()
            && young
            && std::fs::read_to_string(&sig_path).ok().as_deref() == Some(self.signature.as_str())
        {
            return Ok(path);
        }
        let t = std::time::Instant::now();
        db::copy(&self.empty, &path)?;
        self.rt
            .block_on(db::fill(&path, rows, due, "bench", unix_now()))?;
        std::fs::write(&sig_path, &self.signature)?;
        note(&format!(
            "generated {} in {:.1} s",
            path.display(),
            t.elapsed().as_secs_f64()
        ));
        Ok(path)
    }

    /// One `tokenwarden run --once` on a fresh copy of `template`, checked: exit 0, `expect_due`
    /// claimed and refreshed, nothing left due or pending.
    fn tw_once(
        &self,
        template: &Path,
        name: &str,
        expect_due: u64,
        sample: Option<Duration>,
    ) -> Result<Run, Error> {
        let db = self.runs.join(format!("{name}.db"));
        db::copy(template, &db)?;
        self.tw_on(&db, name, expect_due, sample, None)
    }

    fn tw_on(
        &self,
        db: &Path,
        name: &str,
        expect_due: u64,
        sample: Option<Duration>,
        oidc_url: Option<&str>,
    ) -> Result<Run, Error> {
        self.tw_on_with(db, name, expect_due, sample, oidc_url, false)
    }

    /// `run --once` on a fresh copy of `template`, sealed or not.
    fn tw_once_sealed(
        &self,
        template: &Path,
        name: &str,
        expect_due: u64,
        sealed: bool,
    ) -> Result<Run, Error> {
        let db = self.runs.join(format!("{name}.db"));
        db::copy(template, &db)?;
        self.tw_on_with(&db, name, expect_due, None, None, sealed)
    }

    fn tw_on_with(
        &self,
        db: &Path,
        name: &str,
        expect_due: u64,
        sample: Option<Duration>,
        oidc_url: Option<&str>,
        sealed: bool,
    ) -> Result<Run, Error> {
        let cfg = self.config_with(name, db, oidc_url, false, sealed)?;
        let log = self.runs.join(format!("{name}.log"));
        let mut cmd = self.measured(&self.o.bin)?;
        cmd.arg("--config")
            .arg(&cfg)
            .args(["run", "--once"])
            .stderr(std::fs::File::create(&log)?);
        let before = unix_now();
        let m = proc::run(&mut cmd, self.o.plan.limit, sample)?;
        let text = std::fs::read_to_string(&log)?;
        let run = Run::from(&m, &text);
        self.verify("tokenwarden", db, &m, &run, &text, &log, expect_due, before)?;
        Ok(run)
    }

    fn baseline_once(
        &self,
        template: &Path,
        url: &str,
        client_id: &str,
        secret_env: &str,
        expect: u64,
    ) -> Result<Run, Error> {
        let db = self.runs.join("baseline.db");
        db::copy(template, &db)?;
        self.baseline_on(&db, url, client_id, secret_env, expect)
    }

    fn baseline_on(
        &self,
        db: &Path,
        url: &str,
        client_id: &str,
        secret_env: &str,
        expect: u64,
    ) -> Result<Run, Error> {
        let log = self.runs.join("baseline.log");
        let me = std::env::current_exe()?;
        let mut cmd = self.measured(&me)?;
        cmd.arg("baseline")
            .arg("--db")
            .arg(db)
            .args([
                "--url",
                url,
                "--client-id",
                client_id,
                "--secret-env",
                secret_env,
            ])
            .args(["--concurrency", &CONCURRENCY.to_string()])
            .stderr(std::fs::File::create(&log)?);
        let before = unix_now();
        let m = proc::run(&mut cmd, self.o.plan.limit, None)?;
        let text = std::fs::read_to_string(&log)?;
        let run = Run::from(&m, &text);
        self.verify("baseline", db, &m, &run, &text, &log, expect, before)?;
        Ok(run)
    }

    #[allow(clippy::too_many_arguments)]
    fn verify(
        &self,
        who: &str,
        db: &Path,
        m: &proc::Measured,
        run: &Run,
        text: &str,
        log: &Path,
        expect: u64,
        before: i64,
    ) -> Result<(), Error> {
        let fail = |why: String| -> Error {
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            format!(
                "{who} on {}: {why} (log {}; last lines: {:?})",
                db.display(),
                log.display(),
                tail
            )
            .into()
        };
        if m.code != Some(0) {
            return Err(fail(format!("exit {:?}", m.code)));
        }
        if run.due != Some(expect) || run.refreshed != Some(expect) || run.failed != Some(0) {
            return Err(fail(format!(
                "expected {expect} due and refreshed, got due={:?} refreshed={:?} failed={:?}",
                run.due, run.refreshed, run.failed
            )));
        }
        let (left, refreshed, pending) = self.rt.block_on(db::check(db, before, before))?;
        if left != 0 || refreshed != expect as i64 || (who == "tokenwarden" && pending != 0) {
            return Err(fail(format!(
                "database after the run: {left} still due, {refreshed} refreshed, {pending} journal rows pending"
            )));
        }
        Ok(())
    }

    /// A plaintext template, every token then sealed under the benchmark key by `tokenwarden
    /// rekey` (so the sealed runs start from what a sealed deployment holds); cached like the
    /// plaintext ones.
    fn sealed_template(&self, rows: u64, due: Due) -> Result<PathBuf, Error> {
        let plain = self.template(rows, due)?;
        let path = plain.with_file_name(format!(
            "{}-sealed.db",
            plain.file_stem().unwrap_or_default().to_string_lossy()
        ));
        let sig_path = path.with_extension("sig");
        let signature = format!("{};sealed", self.signature);
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let newer = modified(&sig_path) >= modified(&plain.with_extension("sig"));
        if path.exists()
            && newer
            && std::fs::read_to_string(&sig_path).ok().as_deref() == Some(signature.as_str())
        {
            return Ok(path);
        }
        let t = std::time::Instant::now();
        db::copy(&plain, &path)?;
        let cfg = self.config_with("rekey", &path, None, false, true)?;
        let log = self.runs.join("rekey.log");
        let mut cmd = self.measured(&self.o.bin)?;
        cmd.arg("--config")
            .arg(&cfg)
            .arg("rekey")
            .stderr(std::fs::File::create(&log)?);
        let m = proc::run(&mut cmd, self.o.plan.limit, None)?;
        if m.code != Some(0) {
            return Err(format!(
                "sealing the template {} failed (exit {:?}): {}",
                path.display(),
                m.code,
                std::fs::read_to_string(&log)?
            )
            .into());
        }
        std::fs::write(&sig_path, &signature)?;
        note(&format!(
            "sealed {} in {:.1} s",
            path.display(),
            t.elapsed().as_secs_f64()
        ));
        Ok(path)
    }

    /// Section 4: each measurement with sealing off and on, alternating which goes first.
    fn sealing(&self, out: &mut Vec<Sealing>) -> Result<(), Error> {
        let plan = self.o.plan.clone();
        let mut sizes = vec![*plan.table_sizes.first().expect("sizes")];
        sizes.extend(plan.table_sizes.last().filter(|&&big| big != sizes[0]));
        let mut cases = Vec::new();
        for rows in sizes {
            cases.push((rows, Due::None, plan.runs_none));
        }
        cases.push((plan.throughput_n, Due::All, plan.runs_small));
        for (rows, due, runs) in cases {
            let templates = [self.template(rows, due)?, self.sealed_template(rows, due)?];
            let expect = due.count(rows);
            let mut series = [Series::default(), Series::default()];
            for i in 0..runs {
                let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
                for which in order {
                    let run =
                        self.tw_once_sealed(&templates[which], "sealed", expect, which == 1)?;
                    note(&format!(
                        "sealing {} rows={rows} due={} run {}/{runs}: {:.1} ms, {:.0}/s",
                        ["off", "on"][which],
                        due.label(),
                        i + 1,
                        run.wall_ms,
                        run.rate()
                    ));
                    series[which].push(run);
                }
            }
            let [plain, sealed] = series;
            out.push(Sealing {
                rows,
                due,
                plain,
                sealed,
            });
        }
        Ok(())
    }

    fn idle(&self, template: &Path) -> Result<Idle, Error> {
        let db = self.runs.join("idle.db");
        db::copy(template, &db)?;
        let cfg = self.config("idle", &db, None, true)?;
        let log = self.runs.join("idle.log");
        let mut cmd = self.command(&self.o.bin);
        cmd.arg("--config")
            .arg(&cfg)
            .arg("run")
            .stderr(std::fs::File::create(&log)?);
        let i = proc::idle(
            &mut cmd,
            &log,
            "sweep finished",
            self.o.plan.settle,
            Duration::from_secs(60),
        )
        .map_err(|e| {
            format!(
                "idle daemon: {e}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
        Ok(Idle {
            rss_kib: i.rss_kib,
            hwm_kib: i.hwm_kib,
            ready_ms: i.ready.as_secs_f64() * 1e3,
        })
    }

    fn oidc_throughput(&self) -> Result<(Throughput, oidc::Stats), Error> {
        let plan = &self.o.plan;
        let n = plan.oidc_n;
        let server = oidc::start(&self.o.repo, &self.runs.join("oidc-server.log"), 3600)?;
        let t = std::time::Instant::now();
        let tokens = self.rt.block_on(server.mint(n as usize, CONCURRENCY))?;
        note(&format!(
            "minted {n} grants at oidc-provider in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        let db = self.runs.join("oidc.db");
        db::copy(&self.empty, &db)?;
        self.rt
            .block_on(db::fill_tokens(&db, &tokens, "oidc", unix_now()))?;
        drop(tokens);
        let (mut tw, mut base) = (Series::default(), Series::default());
        let runs = if plan.smoke { 1 } else { plan.runs_big };
        for i in 0..runs {
            // The same live grants each run: the refresh tokens the previous run stored.
            for which in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                self.rt.block_on(db::make_all_due(&db))?;
                if which == 0 {
                    let run = self.tw_on(&db, "oidc", n, None, Some(&server.token_url))?;
                    note(&format!(
                        "throughput oidc tokenwarden run {}: {:.0}/s",
                        i + 1,
                        run.rate()
                    ));
                    tw.push(run);
                } else {
                    let run = self.baseline_on(
                        &db,
                        &server.token_url,
                        oidc::CLIENT_ID,
                        OIDC_SECRET_ENV,
                        n,
                    )?;
                    note(&format!(
                        "throughput oidc baseline run {}: {:.0}/s",
                        i + 1,
                        run.rate()
                    ));
                    base.push(run);
                }
            }
        }
        let stats = self.rt.block_on(server.stats())?;
        drop(server);
        let expected = n * runs as u64 * 2;
        if stats.refresh_reuse != 0 || stats.refresh_failed != 0 || stats.refresh_ok != expected {
            return Err(format!("oidc-provider counters after the runs: {stats:?}; expected {expected} refresh_ok and no failure or reuse").into());
        }
        Ok((
            Throughput {
                endpoint: "oidc-provider (tests/oauth-server, Node)".into(),
                n,
                tw,
                base,
            },
            stats,
        ))
    }
}
