//! Section 7, the token API beside a process per call: tokens per second and p50/p99 latency over
//! the daemon's unix socket (`[api] socket`) with 1, 8 and 64 concurrent clients, beside
//! `tokenwarden token NAME` run as a process per call (reading the database itself, as the
//! service user does), `tokenwarden token NAME --socket` as a process per call (as an
//! unprivileged user), and Debian's `sqlite3` command reading the `current_token` view, all in
//! one run, round-robin so that the machine's drift hits every way alike.
//!
//! The clients are a separate process (`tokenwarden-bench api-client`, one tokio thread) run as
//! `nobody` when the driver is root (an `[[access]]` rule grants it the benchmark's
//! credentials, so every request goes through the access rules), else as the driver's user. Each
//! client is closed-loop: one connection per request (`Connection: close`, as `curl
//! --unix-socket` does), the next request as soon as the answer is read; latency is connect to
//! the answer's last byte. Client `i` asks for `cred-{i % 1000 + 1}`; every answer must be 200,
//! and the first one's token must be the database's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::Due;
use crate::report::{fmt_ms, median};
use crate::{Bench, Error, note};

/// Concurrent clients of the socket.
pub const CLIENTS: [usize; 3] = [1, 8, 64];
/// Credentials in the benchmark's database (the clients spread over them).
const ROWS: u64 = 1_000;

/// One way of getting a token, measured over the rounds.
#[derive(Debug, Clone)]
pub struct Way {
    pub label: String,
    pub concurrency: usize,
    /// Tokens per second, one per round.
    pub rates: Vec<f64>,
    /// Every request's latency, microseconds, over all rounds.
    pub latencies_us: Vec<f64>,
    /// The daemon's CPU time per token, microseconds, one per round (socket ways only).
    pub daemon_cpu_us: Vec<f64>,
}

impl Way {
    fn new(label: &str, concurrency: usize) -> Self {
        Self {
            label: label.to_owned(),
            concurrency,
            rates: Vec::new(),
            latencies_us: Vec::new(),
            daemon_cpu_us: Vec::new(),
        }
    }
    pub fn rate(&self) -> f64 {
        median(self.rates.clone())
    }
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let mut v = self.latencies_us.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)] / 1e3
    }
}

/// The section's results.
pub struct ApiBench {
    /// `[1, 8, 64]` clients over the socket.
    pub socket: Vec<Way>,
    /// `token NAME`, `token NAME --socket`, `sqlite3`: one process per call, one at a time.
    pub processes: Vec<Way>,
    pub rounds: usize,
    pub window: Duration,
    pub calls: usize,
    /// Who the clients ran as.
    pub client_user: String,
    /// The sqlite3 command's version; `None` when it is not installed.
    pub sqlite3: Option<String>,
    /// /proc/loadavg at the start and the end of the section.
    pub load: (String, String),
}

/// The section's rounds, window per socket measurement and calls per process measurement.
fn plan(smoke: bool) -> (usize, Duration, usize) {
    if smoke {
        (1, Duration::from_millis(500), 5)
    } else {
        (3, Duration::from_secs(3), 40)
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// User and group ids of `name` from /etc/passwd.
fn ids_of(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// The daemon's user + system CPU time, in clock ticks (/proc/PID/stat).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// The daemon under test, stopped with SIGTERM on drop.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bench {
    /// Section 7.
    pub fn api(&self) -> Result<ApiBench, Error> {
        let (rounds, window, calls) = plan(self.o.plan.smoke);
        let load_start = loadavg();
        let template = self.template(ROWS, Due::None)?;
        let dir = self.runs.join("api");
        std::fs::create_dir_all(&dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // The socket's directory, reachable by the clients' user (as /run/tokenwarden is).
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let db = dir.join("api.db");
        crate::db::copy(&template, &db)?;
        let socket = dir.join("api.sock");
        let _ = std::fs::remove_file(&socket);

        // Who the clients are: nobody when the driver is root (so the access rules decide),
        // else the driver's own user, named by the rule.
        let root = first_line("id", &["-u"]) == "0";
        let (client_user, client_ids) = if root {
            let ids = ids_of("nobody").ok_or("no user nobody in /etc/passwd")?;
            ("nobody".to_owned(), Some(ids))
        } else {
            (first_line("id", &["-un"]), None)
        };
        let cfg = self.config("api", &db, None, true)?;
        let mut text = std::fs::read_to_string(&cfg)?;
        text.push_str(&format!(
            "\n[api]\nsocket = {:?}\n\n[[access]]\ncredentials = [\"cred-*\"]\nusers = [{client_user:?}]\n",
            socket.display().to_string()
        ));
        std::fs::write(&cfg, text)?;

        let log = dir.join("daemon.log");
        let mut cmd = self.command(&self.o.bin);
        cmd.arg("--config")
            .arg(&cfg)
            .arg("run")
            .stderr(std::fs::File::create(&log)?);
        let daemon = Daemon {
            child: cmd.spawn()?,
        };
        let pid = daemon.child.id();
        let start = Instant::now();
        while !(socket.exists()
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("sweep finished"))
        {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "the daemon did not serve {} within 60 s; log: {}",
                    socket.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let expected = self.rt.block_on(async {
            let mut conn = crate::db::open(&db).await?;
            sqlx::query_scalar::<_, String>(
                "SELECT access_token FROM oauth_credential WHERE name = 'cred-00000001'",
            )
            .fetch_one(&mut conn)
            .await
        })?;

        let mut socket_ways: Vec<Way> = CLIENTS
            .iter()
            .map(|&c| Way::new("token API, unix socket", c))
            .collect();
        let mut process_ways = vec![
            Way::new(
                "`tokenwarden token NAME`, a process per call (reads the database)",
                1,
            ),
            Way::new(
                &format!(
                    "`tokenwarden token NAME --socket`, a process per call (as {client_user})"
                ),
                1,
            ),
        ];
        // Debian's sqlite3 command; without it that row is left out, and the section says so.
        let sqlite3 = first_line("sqlite3", &["--version"])
            .split_whitespace()
            .next()
            .map(str::to_owned);
        if sqlite3.is_some() {
            process_ways.push(Way::new(
                "`sqlite3` reading `current_token`, a process per call",
                1,
            ));
        } else {
            note("no sqlite3 command: its row is left out of section 7");
        }
        let me = std::env::current_exe()?;
        let hz = ticks_per_second();
        for round in 0..rounds {
            for way in &mut socket_ways {
                let mut client = Command::new(&me);
                client
                    .arg("api-client")
                    .arg(&socket)
                    .arg(way.concurrency.to_string())
                    .arg(window.as_secs_f64().to_string())
                    .stdin(Stdio::null())
                    .stderr(Stdio::inherit());
                as_client(&mut client, client_ids);
                let cpu_before = cpu_ticks(pid);
                let out = client.output()?;
                let cpu_after = cpu_ticks(pid);
                if !out.status.success() {
                    return Err(format!("api-client exited {:?}", out.status.code()).into());
                }
                let report: ClientReport = serde_json::from_slice(&out.stdout)?;
                if report.first_token != expected {
                    return Err("the API answered another token than the database holds".into());
                }
                let rate = report.latencies_us.len() as f64 / report.wall_s;
                if let (Some(b), Some(a)) = (cpu_before, cpu_after) {
                    way.daemon_cpu_us
                        .push((a - b) as f64 / hz * 1e6 / report.latencies_us.len() as f64);
                }
                note(&format!(
                    "api round {}: {} clients: {rate:.0}/s, {} requests",
                    round + 1,
                    way.concurrency,
                    report.latencies_us.len()
                ));
                way.rates.push(rate);
                way.latencies_us.extend(report.latencies_us);
            }
            let name = "cred-00000001";
            for (k, way) in process_ways.iter_mut().enumerate() {
                let mut total = Duration::ZERO;
                for _ in 0..calls {
                    let mut c = match k {
                        0 => {
                            let mut c = self.command(&self.o.bin);
                            c.arg("--config").arg(&cfg).args(["token", name]);
                            c
                        }
                        1 => {
                            let mut c = Command::new(&self.o.bin);
                            c.env_clear()
                                .args(["token", name, "--socket"])
                                .arg(&socket)
                                .current_dir("/");
                            as_client(&mut c, client_ids);
                            c
                        }
                        _ => {
                            let mut c = Command::new("sqlite3");
                            c.arg(&db).arg(format!(
                                "SELECT access_token FROM current_token WHERE name = '{name}'"
                            ));
                            c
                        }
                    };
                    c.stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped());
                    let t = Instant::now();
                    let out = c.output()?;
                    let took = t.elapsed();
                    if !out.status.success()
                        || String::from_utf8_lossy(&out.stdout).trim() != expected
                    {
                        return Err(format!(
                            "{}: exit {:?}, not the database's token; stderr: {}",
                            way.label,
                            out.status.code(),
                            String::from_utf8_lossy(&out.stderr).trim()
                        )
                        .into());
                    }
                    total += took;
                    way.latencies_us.push(took.as_secs_f64() * 1e6);
                }
                let rate = calls as f64 / total.as_secs_f64();
                note(&format!(
                    "api round {}: {}: {rate:.0}/s",
                    round + 1,
                    way.label
                ));
                way.rates.push(rate);
            }
        }
        drop(daemon);
        crate::check_daemon_log(&log, &expected)?;
        Ok(ApiBench {
            socket: socket_ways,
            processes: process_ways,
            rounds,
            window,
            calls,
            client_user,
            sqlite3,
            load: (load_start, loadavg()),
        })
    }
}

/// Runs `cmd` as the clients' user (when the driver is root): std drops the supplementary groups.
fn as_client(cmd: &mut Command, ids: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
}

/// What `api-client` prints.
#[derive(serde::Serialize, serde::Deserialize)]
struct ClientReport {
    wall_s: f64,
    latencies_us: Vec<f64>,
    first_token: String,
}

/// One request on a new connection; its latency and the body of a 200 answer.
async fn request(socket: &Path, name: &str) -> Result<(f64, String), String> {
    let t = Instant::now();
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(
            format!("GET /v1/token/{name} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::with_capacity(1024);
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let took = t.elapsed().as_secs_f64() * 1e6;
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "answer: {}",
            text.lines().next().unwrap_or("(nothing)")
        ));
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((took, body))
}

/// `api-client SOCKET CLIENTS SECONDS`: CLIENTS closed-loop clients for SECONDS; prints a
/// [`ClientReport`] as JSON.
pub fn client_main(args: &[String]) -> i32 {
    let (Some(socket), Some(Ok(clients)), Some(Ok(seconds))) = (
        args.first().map(PathBuf::from),
        args.get(1).map(|s| s.parse::<usize>()),
        args.get(2).map(|s| s.parse::<f64>()),
    ) else {
        eprintln!("usage: tokenwarden-bench api-client SOCKET CLIENTS SECONDS");
        return 2;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 70;
    };
    let result: Result<ClientReport, String> = rt.block_on(async {
        let window = Duration::from_secs_f64(seconds);
        let socket = std::sync::Arc::new(socket);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..clients {
            let socket = std::sync::Arc::clone(&socket);
            tasks.spawn(async move {
                let name = format!("cred-{:08}", i as u64 % ROWS + 1);
                let mut latencies = Vec::new();
                let mut first = None;
                while start.elapsed() < window {
                    let (took, body) = request(&socket, &name).await?;
                    latencies.push(took);
                    if i == 0 && first.is_none() {
                        let v: serde_json::Value =
                            serde_json::from_str(body.trim()).map_err(|e| e.to_string())?;
                        first = v["access_token"].as_str().map(str::to_owned);
                    }
                }
                Ok::<_, String>((latencies, first))
            });
        }
        let mut all = Vec::new();
        let mut first_token = String::new();
        while let Some(joined) = tasks.join_next().await {
            let (latencies, first) = joined.map_err(|e| e.to_string())??;
            all.extend(latencies);
            if let Some(first) = first {
                first_token = first;
            }
        }
        Ok(ClientReport {
            wall_s: start.elapsed().as_secs_f64(),
            latencies_us: all,
            first_token,
        })
    });
    match result.and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string())) {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(e) => {
            eprintln!("api-client: {e}");
            1
        }
    }
}

/// The section's targets: (what, measured, pass).
pub fn targets(a: &ApiBench) -> Vec<(String, String, bool)> {
    let mut t = Vec::new();
    if let Some(w) = a.socket.iter().find(|w| w.concurrency == 64) {
        let p99 = w.percentile_ms(99.0);
        t.push((
            "token API p99 latency at 64 concurrent clients ≤ 2 ms".to_owned(),
            format!("{} ({:.0}/s)", fmt_ms(p99), w.rate()),
            p99 <= 2.0,
        ));
    }
    if let Some(process) = a.processes.first() {
        for w in &a.socket {
            let ratio = w.rate() / process.rate();
            t.push((
                format!(
                    "token API rate, {} client{}, ≥ 20× `tokenwarden token NAME` as a process per call",
                    w.concurrency,
                    if w.concurrency == 1 { "" } else { "s" }
                ),
                format!("{ratio:.0}× ({:.0}/s vs {:.1}/s)", w.rate(), process.rate()),
                ratio >= 20.0,
            ));
        }
    }
    t
}

pub fn render(a: &ApiBench) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### 7. The token API beside a process per call (1000 credentials, one daemon, same run)\n"
    );
    let _ = writeln!(
        s,
        "{} rounds, round-robin: each socket measurement a {:.1} s window of closed-loop clients (run as `{}`, granted by an `[[access]]` rule; one connection per request, as `curl --unix-socket` does; latency from connect to the answer's last byte), then {} calls one at a time of each process. Every answer checked (200, the database's token). `sqlite3`: {}. Load average (1, 5, 15 min) at the start: {}; at the end: {}.\n",
        a.rounds,
        a.window.as_secs_f64(),
        a.client_user,
        a.calls,
        a.sqlite3.as_deref().map_or_else(
            || "not installed, its row left out".to_owned(),
            |v| format!("the distribution's command, {v}")
        ),
        a.load.0,
        a.load.1
    );
    let _ = writeln!(
        s,
        "| way | concurrency | tokens/s | p50 | p99 | daemon CPU per token | runs (per s) |\n| --- | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for w in a.socket.iter().chain(&a.processes) {
        let cpu = if w.daemon_cpu_us.is_empty() {
            "–".to_owned()
        } else {
            format!("{:.0} µs", median(w.daemon_cpu_us.clone()))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0}/s | {} | {} | {cpu} | {} |",
            w.label,
            w.concurrency,
            w.rate(),
            fmt_ms(w.percentile_ms(50.0)),
            fmt_ms(w.percentile_ms(99.0)),
            w.rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(process) = a.processes.first() {
        let ratios: Vec<String> = a
            .socket
            .iter()
            .map(|w| format!("{} → {:.0}×", w.concurrency, w.rate() / process.rate()))
            .collect();
        let _ = writeln!(
            s,
            "\nThe socket's rate over `token NAME`'s (clients → ratio of medians): {}.",
            ratios.join(", ")
        );
    }
    s
}
