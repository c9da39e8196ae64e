//! Figures: medians of runs, the machine, the targets, and the generated block of BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::Plan;
use crate::db::Due;
use crate::oidc;
use crate::proc::Measured;

pub const BEGIN: &str = "<!-- bench/run.sh: generated figures begin -->";
pub const END: &str = "<!-- bench/run.sh: generated figures end -->";

/// One run of a sweep (tokenwarden or the baseline).
#[derive(Debug, Clone)]
pub struct Run {
    pub wall_ms: f64,
    pub rss_kib: u64,
    pub cpu_ms: f64,
    pub due: Option<u64>,
    pub refreshed: Option<u64>,
    pub failed: Option<u64>,
    /// The sweep's own duration from its summary line.
    pub sweep_ms: Option<f64>,
    pub samples: Vec<(u64, u64)>,
}

impl Run {
    /// From the measured child and its log's "sweep finished" line.
    pub fn from(m: &Measured, log: &str) -> Self {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("sweep finished"))
            .unwrap_or("");
        let field = |key: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|tok| tok.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.trim_matches('"').parse().ok())
        };
        Self {
            wall_ms: m.wall.as_secs_f64() * 1e3,
            rss_kib: m.maxrss_kib,
            cpu_ms: m.cpu.as_secs_f64() * 1e3,
            due: field("due"),
            refreshed: field("refreshed"),
            failed: field("failed"),
            sweep_ms: field("duration_ms").map(|v| v as f64),
            samples: m.samples.clone(),
        }
    }

    /// Credentials refreshed per second of process wall time.
    pub fn rate(&self) -> f64 {
        self.refreshed.unwrap_or(0) as f64 / (self.wall_ms / 1e3)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Series {
    pub runs: Vec<Run>,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl Series {
    pub fn push(&mut self, r: Run) {
        self.runs.push(r);
    }
    pub fn wall_ms(&self) -> f64 {
        median(self.runs.iter().map(|r| r.wall_ms).collect())
    }
    pub fn sweep_ms(&self) -> f64 {
        median(self.runs.iter().filter_map(|r| r.sweep_ms).collect())
    }
    pub fn rss_kib(&self) -> f64 {
        median(self.runs.iter().map(|r| r.rss_kib as f64).collect())
    }
    pub fn rate(&self) -> f64 {
        median(self.runs.iter().map(Run::rate).collect())
    }
    /// CPU time (user + system) per refreshed credential, microseconds.
    pub fn cpu_us_each(&self) -> f64 {
        median(
            self.runs
                .iter()
                .map(|r| r.cpu_ms * 1e3 / r.refreshed.unwrap_or(0).max(1) as f64)
                .collect(),
        )
    }
    fn walls(&self) -> String {
        self.runs
            .iter()
            .map(|r| fmt_ms(r.wall_ms))
            .collect::<Vec<_>>()
            .join(", ")
    }
    fn rates(&self) -> String {
        self.runs
            .iter()
            .map(|r| format!("{:.0}", r.rate()))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// The run with the highest peak RSS (for its RSS samples).
    fn peak_run(&self) -> Option<&Run> {
        self.runs.iter().max_by_key(|r| r.rss_kib)
    }
}

#[derive(Clone)]
pub struct SweepRow {
    pub rows: u64,
    pub due: Due,
    pub due_count: u64,
    pub tw: Series,
}

/// The largest table's due share against the same number due in a table of only those rows, run
/// alternately: what the rest of the table costs a sweep.
pub struct DueAmong {
    /// The largest table and its due rows, as in [`Results::sweeps`].
    pub among: SweepRow,
    /// The same number due, every row due.
    pub alone: SweepRow,
}

pub struct Throughput {
    pub endpoint: String,
    pub n: u64,
    pub tw: Series,
    pub base: Series,
}

#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub ready_ms: f64,
}

pub struct Footprint {
    pub idle_empty: Vec<Idle>,
    pub idle_big: Vec<Idle>,
    pub big_rows: u64,
    pub sweep_n: u64,
    pub sweep: Series,
}

pub struct Machine {
    pub lines: Vec<(String, String)>,
}

/// One measurement with sealing (`[encryption]`) off and on.
pub struct Sealing {
    pub rows: u64,
    pub due: Due,
    pub plain: Series,
    pub sealed: Series,
}

pub struct Results {
    pub plan: Plan,
    pub machine: Machine,
    pub sweeps: Vec<SweepRow>,
    /// Section 1's second table: N due among the largest table against N due alone.
    pub due_among: Option<DueAmong>,
    pub throughput: Vec<Throughput>,
    pub footprint: Option<Footprint>,
    pub oidc_stats: Option<oidc::Stats>,
    pub sealing: Vec<Sealing>,
    /// Section 5, the idle footprint side by side (`side.rs`).
    pub side: Option<crate::side::Side>,
    /// Section 6, PostgreSQL beside SQLite (`postgres.rs`).
    pub postgres: Option<crate::postgres::Pg>,
    /// Section 7, the token API beside a process per call (`api.rs`).
    pub api: Option<crate::api::ApiBench>,
    /// Section 8, the proxy route beside nginx and direct (`proxy.rs`).
    pub proxy: Option<crate::proxy::ProxyBench>,
    pub total: Duration,
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

pub fn machine(bin: &Path, sqlite: String) -> Machine {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| "?".into());
    let mut lines = vec![
        (
            "date".into(),
            first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        ),
        (
            "CPU".into(),
            format!(
                "{} × {} (nproc {})",
                std::thread::available_parallelism().map_or(0, usize::from),
                proc_field("/proc/cpuinfo", "model name"),
                first_line("nproc", &[])
            ),
        ),
        ("memory".into(), proc_field("/proc/meminfo", "MemTotal")),
        (
            "kernel".into(),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        ("rustc".into(), first_line("rustc", &["-V"])),
        ("node".into(), first_line("node", &["--version"])),
        ("SQLite (bundled by sqlx)".into(), sqlite),
        (
            "tokenwarden".into(),
            format!(
                "{} (commit {}, profile {})",
                bin.display(),
                env("BENCH_COMMIT"),
                env("BENCH_PROFILE")
            ),
        ),
    ];
    if let Ok(v) = std::fs::read_to_string("/sys/fs/cgroup/cpu.max") {
        lines.push(("cgroup cpu.max".into(), v.trim().to_owned()));
    }
    Machine { lines }
}

pub(crate) fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1e3)
    }
}

/// Decimal megabytes, from KiB.
fn mb(kib: f64) -> f64 {
    kib * 1024.0 / 1e6
}

pub(crate) fn fmt_rows(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// A target: what, measured, limit, pass.
struct Target {
    what: String,
    measured: String,
    pass: bool,
}

fn targets(r: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    let none: Vec<&SweepRow> = r.sweeps.iter().filter(|s| s.due == Due::None).collect();
    if let (Some(small), Some(big)) = (none.first(), none.last()) {
        let (s, b) = (small.tw.wall_ms(), big.tw.wall_ms());
        t.push(Target {
            what: format!(
                "`run --once`, {} credentials, none due: ≤ 100 ms",
                fmt_rows(big.rows)
            ),
            measured: fmt_ms(b),
            pass: b <= 100.0,
        });
        t.push(Target {
            what: format!("… and ≤ 2× the {} case", fmt_rows(small.rows)),
            measured: format!("{:.2}× ({} / {})", b / s, fmt_ms(b), fmt_ms(s)),
            pass: b <= 2.0 * s,
        });
    }
    if let Some(d) = &r.due_among {
        let (among, alone) = (d.among.tw.wall_ms(), d.alone.tw.wall_ms());
        t.push(Target {
            what: format!(
                "`run --once`, {} due among {} credentials: ≤ 2× {} due among {}",
                fmt_rows(d.among.due_count),
                fmt_rows(d.among.rows),
                fmt_rows(d.alone.due_count),
                fmt_rows(d.alone.rows)
            ),
            measured: format!(
                "{:.2}× ({} / {})",
                among / alone,
                fmt_ms(among),
                fmt_ms(alone)
            ),
            pass: among <= 2.0 * alone,
        });
    }
    for tp in &r.throughput {
        let ratio = tp.tw.rate() / tp.base.rate();
        t.push(Target {
            what: format!(
                "refresh throughput ≥ 80% of the bare baseline, {}",
                tp.endpoint
            ),
            measured: format!(
                "{:.0}% ({:.0}/s vs {:.0}/s)",
                ratio * 100.0,
                tp.tw.rate(),
                tp.base.rate()
            ),
            pass: ratio >= 0.8,
        });
    }
    let last_none = r.sealing.iter().rfind(|x| x.due == Due::None);
    for x in &r.sealing {
        if x.due == Due::All {
            let ratio = x.sealed.rate() / x.plain.rate();
            t.push(Target {
                what: format!(
                    "sealed refresh throughput ≥ 0.95× plaintext ({} due, instant)",
                    fmt_rows(x.rows)
                ),
                measured: format!(
                    "{ratio:.2}× ({:.0}/s vs {:.0}/s)",
                    x.sealed.rate(),
                    x.plain.rate()
                ),
                pass: ratio >= 0.95,
            });
        } else if last_none.is_some_and(|l| std::ptr::eq(l, x)) {
            let b = x.sealed.wall_ms();
            t.push(Target {
                what: format!(
                    "sealed `run --once`, {} credentials, none due: ≤ 100 ms",
                    fmt_rows(x.rows)
                ),
                measured: format!("{} ({:.2}× plaintext)", fmt_ms(b), b / x.plain.wall_ms()),
                pass: b <= 100.0,
            });
        }
    }
    if let Some(f) = &r.footprint {
        let idle = median(f.idle_empty.iter().map(|i| i.rss_kib as f64).collect());
        t.push(Target {
            what: "idle RSS after start (empty database) ≤ 20 MB".into(),
            measured: format!("{:.1} MB", mb(idle)),
            pass: mb(idle) <= 20.0,
        });
        let idle_big = median(f.idle_big.iter().map(|i| i.rss_kib as f64).collect());
        t.push(Target {
            what: format!(
                "idle RSS after start ({} credentials) ≤ 20 MB",
                fmt_rows(f.big_rows)
            ),
            measured: format!("{:.1} MB", mb(idle_big)),
            pass: mb(idle_big) <= 20.0,
        });
        let peak = f.sweep.rss_kib();
        t.push(Target {
            what: format!(
                "peak RSS during a {}-due sweep ≤ 100 MB",
                fmt_rows(f.sweep_n)
            ),
            measured: format!("{:.1} MB", mb(peak)),
            pass: mb(peak) <= 100.0,
        });
    }
    let side = r.side.iter().flat_map(crate::side::targets);
    let pg = r.postgres.iter().flat_map(crate::postgres::targets);
    let api = r.api.iter().flat_map(crate::api::targets);
    let proxy = r.proxy.iter().flat_map(crate::proxy::targets);
    for (what, measured, pass) in side.chain(pg).chain(api).chain(proxy) {
        t.push(Target {
            what,
            measured,
            pass,
        });
    }
    t
}

/// The targets missed, one phrase each.
pub fn misses(r: &Results) -> Vec<String> {
    targets(r)
        .into_iter()
        .filter(|t| !t.pass)
        .map(|t| format!("{}: {}", t.what, t.measured))
        .collect()
}

pub fn render(r: &Results) -> String {
    let p = &r.plan;
    let mut s = String::new();
    let mode = if p.smoke {
        "smoke (`bench/run.sh --smoke`: dev profile, tiny sizes, one run; figures mean nothing)"
    } else {
        "full (`bench/run.sh`)"
    };
    let _ = writeln!(
        s,
        "Mode: {mode}. Medians of {} runs ({} for the none-due sweeps, run round-robin over the sizes; {} for the {}-row cases, the oidc-provider runs and the footprint sweep); every run checked (exit 0, every due credential refreshed, none left due, no pending journal rows). Whole benchmark: {:.0} s.\n",
        p.runs_small,
        p.runs_none,
        p.runs_big,
        fmt_rows(p.big_rows),
        r.total.as_secs_f64()
    );
    let _ = writeln!(s, "| machine | |\n| --- | --- |");
    for (k, v) in &r.machine.lines {
        let _ = writeln!(s, "| {k} | {v} |");
    }

    // Sections 1 and 2 only when they ran (`--only` may leave them out).
    if !r.sweeps.is_empty() {
        render_sweeps(&mut s, r);
    }
    if !r.throughput.is_empty() {
        render_throughput(&mut s, r);
    }
    if let Some(st) = &r.oidc_stats {
        let _ = writeln!(
            s,
            "\noidc-provider counters after its runs: refresh_ok {}, refresh_failed {}, refresh_reuse {}, grants_revoked {}, token_requests {}.",
            st.refresh_ok,
            st.refresh_failed,
            st.refresh_reuse,
            st.grants_revoked,
            st.token_requests
        );
    }

    if let Some(f) = &r.footprint {
        let _ = writeln!(s, "\n### 3. Footprint\n");
        let _ = writeln!(s, "| measurement | median | runs |\n| --- | ---: | --- |");
        let idle_row = |s: &mut String, label: String, v: &[Idle]| {
            let med = median(v.iter().map(|i| i.rss_kib as f64).collect());
            let runs = v
                .iter()
                .map(|i| format!("{:.1}", mb(i.rss_kib as f64)))
                .collect::<Vec<_>>()
                .join(", ");
            let hwm = median(v.iter().map(|i| i.hwm_kib as f64).collect());
            let ready = median(v.iter().map(|i| i.ready_ms).collect());
            let _ = writeln!(
                s,
                "| {label} | {:.1} MB (VmHWM {:.1} MB; startup sweep done after {}) | {runs} |",
                mb(med),
                mb(hwm),
                fmt_ms(ready)
            );
        };
        idle_row(
            &mut s,
            format!(
                "daemon idle VmRSS, empty database, {} after its startup sweep",
                fmt_ms(p.settle.as_secs_f64() * 1e3)
            ),
            &f.idle_empty,
        );
        idle_row(
            &mut s,
            format!(
                "daemon idle VmRSS, {} credentials none due",
                fmt_rows(f.big_rows)
            ),
            &f.idle_big,
        );
        let _ = writeln!(
            s,
            "| peak RSS of `run --once` refreshing {} due credentials | {:.1} MB ({:.0}/s, {}) | {} |",
            fmt_rows(f.sweep_n),
            mb(f.sweep.rss_kib()),
            f.sweep.rate(),
            fmt_ms(f.sweep.wall_ms()),
            f.sweep
                .runs
                .iter()
                .map(|r| format!("{:.1}", mb(r.rss_kib as f64)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(run) = f.sweep.peak_run() {
            let n = run.samples.len();
            if n >= 4 {
                let at = |q: usize| run.samples[(n - 1) * q / 100];
                let pts: Vec<String> = [10, 25, 50, 75, 100]
                    .iter()
                    .map(|&q| {
                        let (ms, kib) = at(q);
                        format!("{} {:.1} MB", fmt_ms(ms as f64), mb(kib as f64))
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "\nVmRSS sampled during the run with the highest peak: {} (peak {:.1} MB).",
                    pts.join(" → "),
                    mb(run.rss_kib as f64)
                );
            }
        }
    }

    if !r.sealing.is_empty() {
        let _ = writeln!(
            s,
            "\n### 4. Sealing on vs off (`[encryption]` key set, instant endpoint, concurrency {})\n",
            crate::CONCURRENCY
        );
        let _ = writeln!(
            s,
            "The same template, plaintext and sealed by `tokenwarden rekey` (refresh tokens sealed, access tokens readable: the default), run alternately. Ratio: sealed / plaintext (wall time for the none-due sweeps, rate for the throughput).\n"
        );
        let _ = writeln!(
            s,
            "| measurement | plaintext | sealed | ratio | CPU per credential (plaintext / sealed) | runs (plaintext / sealed) |"
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | --- |");
        for x in &r.sealing {
            if x.due == Due::All {
                let _ = writeln!(
                    s,
                    "| throughput, {} due | {:.0}/s | {:.0}/s | {:.2} | {:.0} µs / {:.0} µs | {} / {} |",
                    fmt_rows(x.rows),
                    x.plain.rate(),
                    x.sealed.rate(),
                    x.sealed.rate() / x.plain.rate(),
                    x.plain.cpu_us_each(),
                    x.sealed.cpu_us_each(),
                    x.plain.rates(),
                    x.sealed.rates()
                );
            } else {
                let _ = writeln!(
                    s,
                    "| `run --once`, {} credentials, none due | {} | {} | {:.2} | – | {} / {} |",
                    fmt_rows(x.rows),
                    fmt_ms(x.plain.wall_ms()),
                    fmt_ms(x.sealed.wall_ms()),
                    x.sealed.wall_ms() / x.plain.wall_ms(),
                    x.plain.walls(),
                    x.sealed.walls()
                );
            }
        }
    }

    if let Some(side) = &r.side {
        s.push_str(&crate::side::render(side, p.settle));
    }
    if let Some(pg) = &r.postgres {
        s.push_str(&crate::postgres::render(pg));
    }
    if let Some(api) = &r.api {
        s.push_str(&crate::api::render(api));
    }
    if let Some(proxy) = &r.proxy {
        s.push_str(&crate::proxy::render(proxy));
    }

    if !p.smoke {
        let _ = writeln!(
            s,
            "\n### Targets (this machine)\n\n| target | measured | |\n| --- | --- | --- |"
        );
        for t in targets(r) {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                t.what,
                t.measured,
                if t.pass { "pass" } else { "**MISS**" }
            );
        }
    }
    s
}

/// Writes the block: the smoke report on its own; the full one between the markers of
/// BENCHMARKS.md, keeping the hand-written text around them (or a new file).
pub fn write(out: &Path, block: &str, smoke: bool) -> std::io::Result<()> {
    let generated = format!("{BEGIN}\n{block}{END}");
    let text = match std::fs::read_to_string(out) {
        Ok(old) if !smoke => match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{generated}{}", &old[..b], &old[e + END.len()..])
            }
            _ => format!("{old}\n{generated}\n"),
        },
        _ => format!("# tokenwarden benchmarks\n\n{generated}\n"),
    };
    std::fs::write(out, text)
}

/// Section 1's table.
fn render_sweeps(s: &mut String, r: &Results) {
    let _ = writeln!(
        s,
        "\n### 1. Sweep cost against table size (instant endpoint, concurrency {})\n",
        crate::CONCURRENCY
    );
    let _ = writeln!(
        s,
        "| credentials | due | `run --once` wall | sweep (its log's duration_ms) | peak RSS | runs (wall) |"
    );
    let _ = writeln!(s, "| ---: | ---: | ---: | ---: | ---: | --- |");
    for row in &r.sweeps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} MB | {} |",
            fmt_rows(row.rows),
            if row.due_count == 0 {
                "0".to_owned()
            } else {
                format!("{} (1%)", row.due_count)
            },
            fmt_ms(row.tw.wall_ms()),
            fmt_ms(row.tw.sweep_ms()),
            mb(row.tw.rss_kib()),
            row.tw.walls()
        );
    }
    if let Some(d) = &r.due_among {
        let _ = writeln!(
            s,
            "\nThe same number due, among the largest table's rows and alone (a table of only those rows), run alternately:\n"
        );
        let _ = writeln!(
            s,
            "| due | credentials | `run --once` wall | sweep (its log's duration_ms) | peak RSS | runs (wall) |"
        );
        let _ = writeln!(s, "| ---: | ---: | ---: | ---: | ---: | --- |");
        for row in [&d.among, &d.alone] {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} MB | {} |",
                row.due_count,
                fmt_rows(row.rows),
                fmt_ms(row.tw.wall_ms()),
                fmt_ms(row.tw.sweep_ms()),
                mb(row.tw.rss_kib()),
                row.tw.walls()
            );
        }
        let (among, alone) = (d.among.tw.wall_ms(), d.alone.tw.wall_ms());
        let _ = writeln!(
            s,
            "| ratio | | {:.2}× | {:.2}× | | |",
            among / alone,
            d.among.tw.sweep_ms() / d.alone.tw.sweep_ms()
        );
    }
}

/// Section 2's table (the oidc-provider counters follow it in `render`).
fn render_throughput(s: &mut String, r: &Results) {
    let _ = writeln!(
        s,
        "\n### 2. Refresh throughput (one sweep of N due credentials, concurrency {})\n",
        crate::CONCURRENCY
    );
    let _ = writeln!(
        s,
        "Credentials refreshed per second of process wall time (start to exit, both processes).\n"
    );
    let _ = writeln!(
        s,
        "| endpoint | N | tokenwarden | bare baseline | ratio | CPU per credential (tokenwarden / baseline) | peak RSS (tokenwarden / baseline) | runs (tokenwarden / baseline, per s) |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for t in &r.throughput {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0}/s | {:.0}/s | {:.2} | {:.0} µs / {:.0} µs | {:.1} MB / {:.1} MB | {} / {} |",
            t.endpoint,
            fmt_rows(t.n),
            t.tw.rate(),
            t.base.rate(),
            t.tw.rate() / t.base.rate(),
            t.tw.cpu_us_each(),
            t.base.cpu_us_each(),
            mb(t.tw.rss_kib()),
            mb(t.base.rss_kib()),
            t.tw.rates(),
            t.base.rates()
        );
    }
}
