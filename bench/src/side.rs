//! Section 5, the footprint side by side: tokenwarden's idle daemon beside pizauth's server (any binary given
//! as `PIZAUTH_BIN`, configured with one account and with 100), and beside an earlier tokenwarden
//! when `TOKENWARDEN_BASE_BIN` names one. Per subject: time from spawn to ready, idle VmRSS and
//! threads (several sequential runs), the binary's size; then every subject at once, idle, over
//! one window (60 s full): wake-ups per second, counted as the voluntary + involuntary context
//! switches of all its threads (`/proc/PID/task/*/status`), and VmRSS at the window's end.
//!
//! Ready means what each program tells systemd: tokenwarden's `tokenwarden started` line (it sends
//! READY=1 right there), pizauth's control socket accepting a connection (it sends READY=1 right
//! after binding it). Idle means tokenwarden's startup sweep has logged `sweep finished`; pizauth
//! has nothing to do at start.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use crate::db::Due;
use crate::{Bench, Error, note, proc};

/// Accounts in pizauth's larger configuration.
pub const PIZAUTH_MANY: usize = 100;

/// How a subject shows it is ready, and then idle.
#[derive(Debug, Clone)]
enum Ready {
    /// Lines of its log: ready, then idle.
    Log {
        log: PathBuf,
        ready: &'static str,
        idle: &'static str,
    },
    /// A unix socket that accepts a connection (ready and idle at once).
    Socket(PathBuf),
}

/// One program, configured, to start as many times as needed.
struct Subject {
    label: String,
    binary: PathBuf,
    /// Builds a fresh command (fresh database copy, fresh log) for each start.
    make: Box<dyn Fn() -> Result<(Command, Ready), Error>>,
}

/// One start: ready time, and memory and threads once idle and settled.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub ready_ms: f64,
    pub rss_kib: u64,
    pub threads: usize,
}

/// The shared idle window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub wakeups_per_s: f64,
    pub voluntary_per_s: f64,
    pub threads: usize,
    /// Threads that exited during the window (their switches after its start are not counted).
    pub threads_gone: usize,
    pub rss_kib: u64,
    /// Per thread name: wake-ups per second.
    pub by_thread: Vec<(String, f64)>,
}

pub struct SideRow {
    pub label: String,
    pub binary_bytes: u64,
    /// Bytes of the sections loaded into memory (SHF_ALLOC with contents): the binary without
    /// symbols and debug information.
    pub loaded_bytes: Option<u64>,
    pub starts: Vec<Start>,
    pub window: Window,
}

pub struct Side {
    pub rows: Vec<SideRow>,
    pub window_secs: u64,
    /// What was measured as pizauth (binary, and its commit when `PIZAUTH_COMMIT` says it), or why
    /// it was not.
    pub pizauth: String,
    pub base: Option<String>,
    /// How many of `link/symbol-order.txt`'s functions the binary under test has, of how many
    /// (build.rs links them side by side; a stale file shows as a low count), or why not known.
    pub link_order: Result<(usize, usize), String>,
}

impl Bench {
    /// Section 5 (`--only side`).
    pub fn side_by_side(&self) -> Result<Side, Error> {
        let plan = &self.o.plan;
        let big = *plan.table_sizes.last().expect("sizes");
        let big_template = self.template(big, Due::None)?;
        let mut subjects = vec![
            self.tw_subject(
                "tokenwarden, empty database",
                "side-tw-empty",
                &self.o.bin,
                &self.empty,
            )?,
            self.tw_subject(
                &format!(
                    "tokenwarden, {} credentials none due",
                    crate::report::fmt_rows(big)
                ),
                "side-tw-big",
                &self.o.bin,
                &big_template,
            )?,
        ];
        let base = std::env::var_os("TOKENWARDEN_BASE_BIN").map(PathBuf::from);
        if let Some(base) = &base {
            subjects.push(self.tw_subject(
                "earlier tokenwarden (TOKENWARDEN_BASE_BIN), empty database",
                "side-base-empty",
                base,
                &self.empty,
            )?);
        }
        let pizauth = match std::env::var_os("PIZAUTH_BIN").map(PathBuf::from) {
            Some(bin) => {
                let bin = bin.canonicalize()?;
                subjects.push(self.pizauth_subject(&bin, 1)?);
                subjects.push(self.pizauth_subject(&bin, PIZAUTH_MANY)?);
                let commit = std::env::var("PIZAUTH_COMMIT")
                    .unwrap_or_else(|_| "commit not given (PIZAUTH_COMMIT)".into());
                format!("`{}` ({commit})", bin.display())
            }
            None => "not measured: PIZAUTH_BIN was not set".into(),
        };
        let runs = plan.runs_small;
        let mut rows = Vec::new();
        for s in &subjects {
            let mut starts = Vec::new();
            for _ in 0..runs {
                starts.push(start_once(s, plan.settle)?);
            }
            note(&format!(
                "side: {} ready {:?} ms, RSS {:?} KiB",
                s.label,
                starts
                    .iter()
                    .map(|x| x.ready_ms.round())
                    .collect::<Vec<_>>(),
                starts.iter().map(|x| x.rss_kib).collect::<Vec<_>>()
            ));
            let binary_bytes = std::fs::metadata(&s.binary)?.len();
            rows.push(SideRow {
                label: s.label.clone(),
                binary_bytes,
                loaded_bytes: elf_loaded_bytes(&s.binary),
                starts,
                window: Window::default(),
            });
        }
        let window_secs = if plan.smoke { 2 } else { 60 };
        let windows = idle_window(&subjects, plan.settle, Duration::from_secs(window_secs))?;
        for (row, w) in rows.iter_mut().zip(windows) {
            note(&format!(
                "side: {} {:.2} wake-ups/s over {window_secs} s, {} threads, RSS {} KiB",
                row.label, w.wakeups_per_s, w.threads, w.rss_kib
            ));
            row.window = w;
        }
        // build.rs orders release builds only: the smoke mode's dev build is not checked.
        let link_order = if plan.smoke {
            Err("a dev build: build.rs orders release builds only".to_owned())
        } else {
            link_order(&self.o.repo.join("link/symbol-order.txt"), &self.o.bin)
        };
        match &link_order {
            Ok((found, named)) if *found * 10 < *named * 9 => note(&format!(
                "side: the binary has only {found} of the {named} functions link/symbol-order.txt names: \
                 run scripts/symbol-order.sh and rebuild (the idle RSS depends on it)"
            )),
            Ok(_) => {}
            Err(why) => note(&format!("side: link order not checked: {why}")),
        }
        Ok(Side {
            rows,
            window_secs,
            pizauth,
            base: base.map(|b| b.display().to_string()),
            link_order,
        })
    }

    /// The idle daemon of section 3 (a schedule weeks away) on a fresh copy of `template`.
    fn tw_subject(
        &self,
        label: &str,
        name: &str,
        bin: &Path,
        template: &Path,
    ) -> Result<Subject, Error> {
        let db = self.runs.join(format!("{name}.db"));
        let log = self.runs.join(format!("{name}.log"));
        let cfg = self.config(name, &db, None, true)?;
        let template = template.to_owned();
        let mut cmd_base = self.command(bin);
        cmd_base
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC");
        let envs: Vec<(OsString, Option<OsString>)> = cmd_base
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
            .collect();
        let bin = bin.to_owned();
        Ok(Subject {
            label: label.to_owned(),
            binary: bin.clone(),
            make: Box::new(move || {
                crate::db::copy(&template, &db)?;
                let mut cmd = Command::new(&bin);
                apply_envs(&mut cmd, &envs);
                cmd.arg("--config")
                    .arg(&cfg)
                    .arg("run")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::fs::File::create(&log)?);
                Ok((
                    cmd,
                    Ready::Log {
                        log: log.clone(),
                        ready: "tokenwarden started",
                        idle: "sweep finished",
                    },
                ))
            }),
        })
    }

    /// `pizauth server -d -c FILE` with `accounts` accounts (never authorized: nothing to refresh),
    /// its runtime directory (`XDG_RUNTIME_DIR`) its own.
    fn pizauth_subject(&self, bin: &Path, accounts: usize) -> Result<Subject, Error> {
        let name = format!("side-pizauth-{accounts}");
        let conf = self.runs.join(format!("{name}.conf"));
        let mut text = String::new();
        for i in 1..=accounts {
            text.push_str(&format!(
                "account \"bench{i:03}\" {{\n    auth_uri = \"{}/authorize\";\n    token_uri = {:?};\n    client_id = \"bench-client\";\n}}\n",
                self.instant_url.trim_end_matches("/token"),
                self.instant_url
            ));
        }
        std::fs::write(&conf, text)?;
        let runtime = self.runs.join(format!("{name}.run"));
        let log = self.runs.join(format!("{name}.log"));
        let bin = bin.to_owned();
        let label = if accounts == 1 {
            "pizauth, 1 account".to_owned()
        } else {
            format!("pizauth, {accounts} accounts")
        };
        Ok(Subject {
            label,
            binary: bin.clone(),
            make: Box::new(move || {
                let _ = std::fs::remove_dir_all(&runtime);
                std::fs::create_dir_all(&runtime)?;
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700))?;
                }
                let mut cmd = Command::new(&bin);
                cmd.env("XDG_RUNTIME_DIR", &runtime)
                    .env_remove("NOTIFY_SOCKET")
                    .env_remove("WATCHDOG_USEC")
                    .args(["server", "-d", "-c"])
                    .arg(&conf)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::fs::File::create(&log)?);
                Ok((
                    cmd,
                    Ready::Socket(runtime.join("pizauth").join("pizauth.sock")),
                ))
            }),
        })
    }
}

fn apply_envs(cmd: &mut Command, envs: &[(OsString, Option<OsString>)]) {
    for (k, v) in envs {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
}

/// A started subject.
struct Running {
    child: Child,
    started: Instant,
    ready: Ready,
    label: String,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until ready (returns how long that took from spawn), then until idle.
    fn wait_ready(&mut self, limit: Duration) -> Result<Duration, Error> {
        let seen = |what: &str| -> bool {
            match &self.ready {
                Ready::Log { log, .. } => std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains(what),
                Ready::Socket(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
            }
        };
        let (ready, idle) = match &self.ready {
            Ready::Log { ready, idle, .. } => (*ready, *idle),
            Ready::Socket(_) => ("", ""),
        };
        let mut ready_at = None;
        loop {
            if ready_at.is_none() && seen(ready) {
                ready_at = Some(self.started.elapsed());
            }
            if ready_at.is_some() && seen(idle) {
                return Ok(ready_at.unwrap_or_default());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("{} exited early ({status})", self.label).into());
            }
            if self.started.elapsed() > limit {
                return Err(format!("{} not ready within {limit:?}", self.label).into());
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; reaped.
    fn stop(mut self) {
        // SAFETY: not reaped yet, so the pid is still this child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(s: &Subject) -> Result<Running, Error> {
    let (mut cmd, ready) = (s.make)()?;
    let started = Instant::now();
    let child = cmd.spawn()?;
    Ok(Running {
        child,
        started,
        ready,
        label: s.label.clone(),
    })
}

const READY_LIMIT: Duration = Duration::from_secs(60);

fn start_once(s: &Subject, settle: Duration) -> Result<Start, Error> {
    let mut r = spawn(s)?;
    let result = (|| {
        let ready = r.wait_ready(READY_LIMIT)?;
        thread::sleep(settle);
        let pid = r.pid();
        Ok(Start {
            ready_ms: ready.as_secs_f64() * 1e3,
            rss_kib: proc::status_kib(pid, "VmRSS:").ok_or("no VmRSS")?,
            threads: threads(pid).len(),
        })
    })();
    r.stop();
    result
}

/// Every subject started at once, idle; their context switches over `window`.
fn idle_window(
    subjects: &[Subject],
    settle: Duration,
    window: Duration,
) -> Result<Vec<Window>, Error> {
    let mut running = Vec::new();
    let result = (|| {
        for s in subjects {
            running.push(spawn(s)?);
        }
        for r in &mut running {
            r.wait_ready(READY_LIMIT)?;
        }
        thread::sleep(settle);
        let before: Vec<_> = running.iter().map(|r| threads(r.pid())).collect();
        let t = Instant::now();
        thread::sleep(window);
        let after: Vec<_> = running.iter().map(|r| threads(r.pid())).collect();
        let secs = t.elapsed().as_secs_f64();
        let mut out = Vec::new();
        for (k, r) in running.iter().enumerate() {
            let (b, a) = (&before[k], &after[k]);
            let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
            let (mut total, mut voluntary) = (0, 0);
            for (tid, t) in a {
                let (v0, n0) = b.get(tid).map_or((0, 0), |x| (x.voluntary, x.involuntary));
                let d = (t.voluntary - v0) + (t.involuntary - n0);
                total += d;
                voluntary += t.voluntary - v0;
                *by_name.entry(t.name.clone()).or_default() += d;
            }
            let mut by_thread: Vec<(String, f64)> = by_name
                .into_iter()
                .map(|(n, d)| (n, d as f64 / secs))
                .filter(|(_, r)| *r > 0.0)
                .collect();
            by_thread.sort_by(|x, y| y.1.total_cmp(&x.1));
            out.push(Window {
                wakeups_per_s: total as f64 / secs,
                voluntary_per_s: voluntary as f64 / secs,
                threads: a.len(),
                threads_gone: b.keys().filter(|tid| !a.contains_key(tid)).count(),
                rss_kib: proc::status_kib(r.pid(), "VmRSS:").ok_or("no VmRSS")?,
                by_thread,
            });
        }
        Ok(out)
    })();
    for r in running {
        r.stop();
    }
    result
}

struct ThreadCount {
    name: String,
    voluntary: u64,
    involuntary: u64,
}

/// Every thread of `pid` with its context switches so far.
fn threads(pid: u32) -> BTreeMap<u32, ThreadCount> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        out.insert(
            tid,
            ThreadCount {
                name: field("Name:"),
                voluntary: field("voluntary_ctxt_switches:").parse().unwrap_or(0),
                involuntary: field("nonvoluntary_ctxt_switches:").parse().unwrap_or(0),
            },
        );
    }
    out
}

/// The bytes an ELF64 little-endian file loads: its SHF_ALLOC sections that have contents.
fn elf_loaded_bytes(path: &Path) -> Option<u64> {
    let data = std::fs::read(path).ok()?;
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    if data.get(0..4)? != b"\x7fELF" || data.get(4)? != &2 || data.get(5)? != &1 {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let mut total = 0;
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let kind = u32_at(sh + 4)?;
        let flags = u64_at(sh + 8)?;
        const SHF_ALLOC: u64 = 2;
        const SHT_NOBITS: u32 = 8;
        if flags & SHF_ALLOC != 0 && kind != SHT_NOBITS {
            total += u64_at(sh + 0x20)?;
        }
    }
    Some(total)
}

/// How many of the functions `order` names are symbols of `bin` (`nm`), of how many.
fn link_order(order: &Path, bin: &Path) -> Result<(usize, usize), String> {
    let named = std::fs::read_to_string(order).map_err(|e| format!("{}: {e}", order.display()))?;
    let out = Command::new("nm")
        .arg("--defined-only")
        .arg(bin)
        .output()
        .map_err(|e| format!("nm: {e}"))?;
    if !out.status.success() {
        return Err(format!("nm {}: {}", bin.display(), out.status));
    }
    let symbols = String::from_utf8_lossy(&out.stdout);
    let have: std::collections::HashSet<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let named: Vec<&str> = named.lines().filter(|l| !l.is_empty()).collect();
    Ok((
        named.iter().filter(|n| have.contains(*n)).count(),
        named.len(),
    ))
}

/// The idle targets of issues 14 and 25: (what, limit, measured, pass), for the first two rows
/// (tokenwarden with an empty database: ≤ 8 MB, and with the largest table: ≤ 9 MB).
pub fn targets(side: &Side) -> Vec<(String, String, bool)> {
    let mut t = Vec::new();
    for row in side
        .rows
        .iter()
        .filter(|r| r.label.starts_with("tokenwarden"))
    {
        let w = &row.window;
        t.push((
            format!(
                "idle wake-ups ≤ 2.2/s over {} s, watchdog off ({})",
                side.window_secs, row.label
            ),
            format!("{:.2}/s", w.wakeups_per_s),
            w.wakeups_per_s <= 2.2,
        ));
        let rss = median_rss(row);
        let limit = if row.label.ends_with("empty database") {
            8.0
        } else {
            9.0
        };
        t.push((
            format!("idle RSS ≤ {limit:.0} MB ({})", row.label),
            format!("{:.1} MB", mb(rss)),
            mb(rss) <= limit,
        ));
    }
    t
}

fn mb(kib: f64) -> f64 {
    kib * 1024.0 / 1e6
}

fn median_rss(row: &SideRow) -> f64 {
    crate::report::median(row.starts.iter().map(|s| s.rss_kib as f64).collect())
}

/// The section's Markdown.
pub fn render(side: &Side, settle: Duration) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "\n### 5. Footprint side by side (idle)\n");
    let _ = writeln!(
        s,
        "pizauth: {}.{} Idle RSS and threads: median of the runs, {:.0} ms after ready and idle (tokenwarden: its startup sweep logged `sweep finished`). Wake-ups: voluntary + involuntary context switches of all threads, all subjects running at once over one {} s window (VmRSS read at its end). Ready: tokenwarden's `tokenwarden started` (where it sends READY=1), pizauth's control socket accepting (where it sends READY=1). Binary: file size / bytes loaded (allocated ELF sections: the binary without symbols and debug information). Link order (build.rs): {}.\n",
        side.pizauth,
        side.base
            .as_ref()
            .map(|b| format!(" Earlier tokenwarden: `{b}`."))
            .unwrap_or_default(),
        settle.as_secs_f64() * 1e3,
        side.window_secs,
        match &side.link_order {
            Ok((found, named)) => format!(
                "the binary has {found} of the {named} functions `link/symbol-order.txt` names"
            ),
            Err(why) => format!("not checked ({why})"),
        }
    );
    let _ = writeln!(
        s,
        "| subject | idle RSS | wake-ups per s (voluntary) | threads | RSS after the window | ready after | binary | runs (RSS MB / ready ms) |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for row in &side.rows {
        let w = &row.window;
        let med =
            |f: &dyn Fn(&Start) -> f64| crate::report::median(row.starts.iter().map(f).collect());
        let runs = row
            .starts
            .iter()
            .map(|x| format!("{:.1}/{:.0}", mb(x.rss_kib as f64), x.ready_ms))
            .collect::<Vec<_>>()
            .join(", ");
        let loaded = row
            .loaded_bytes
            .map(|b| format!(" / {:.1} MB", b as f64 / 1e6))
            .unwrap_or_default();
        let gone = if w.threads_gone > 0 {
            format!(" ({} exited during the window)", w.threads_gone)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {} | {:.1} MB | {:.2} ({:.2}) | {:.0}{gone} | {:.1} MB | {:.1} ms | {:.1} MB{loaded} | {runs} |",
            row.label,
            mb(median_rss(row)),
            w.wakeups_per_s,
            w.voluntary_per_s,
            med(&|x| x.threads as f64),
            mb(w.rss_kib as f64),
            med(&|x| x.ready_ms),
            row.binary_bytes as f64 / 1e6,
        );
    }
    let _ = writeln!(s, "\nWake-ups per second by thread name over the window:\n");
    for row in &side.rows {
        let parts: Vec<String> = row
            .window
            .by_thread
            .iter()
            .map(|(n, r)| format!("`{n}` {r:.2}"))
            .collect();
        let _ = writeln!(
            s,
            "- {}: {}",
            row.label,
            if parts.is_empty() {
                "none".into()
            } else {
                parts.join(", ")
            }
        );
    }
    s
}
