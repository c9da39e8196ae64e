//! Section 8, the authenticating proxy beside nginx: requests per second and p50/p99 latency of
//! small GETs at 1, 16 and 64 concurrent clients, through a tokenwarden `[[proxy]]` route (the
//! binary's `run`, credential `cred-00000001` with a token valid for over an hour, so no renewal
//! happens), through Debian's nginx (`proxy_pass` with the same `Authorization` header set as a
//! fixed value, keep-alive to the upstream), and direct to the upstream, all in one run,
//! round-robin so that the machine's drift hits every setup alike.
//!
//! The upstream is a fixed-answer HTTP/1.1 server on 127.0.0.1 in this process (the driver's one
//! tokio worker): it answers 200 with a 2-byte body to a request carrying the credential's
//! `Authorization` and 401 to any other, so every measured answer proves the header was set. The
//! load generator is a separate process (`tokenwarden-bench proxy-client`, one tokio thread), the
//! same for all three setups: each client keeps one connection alive and sends its next request
//! as soon as the answer is read (closed loop), bounded by a window and a request count; latency
//! is the write of the request to the answer's last byte. Direct clients send the header
//! themselves. Without nginx the section is skipped with one line saying so.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::Due;
use crate::report::{fmt_ms, median};
use crate::{Bench, Error, note};

/// Concurrent clients.
pub const CLIENTS: [usize; 3] = [1, 16, 64];
/// Connections of the paced phase (the added latency's target at more than one client).
pub const PACED_CLIENTS: [usize; 2] = [16, 64];
/// Requests per second of the paced phase, all clients together: well below what any setup
/// serves here, so that its latencies are the setups' own and not a queue's.
pub const PACED_RATE: f64 = 5000.0;
/// Requests one client sends at most in one window.
const MAX_PER_CLIENT: usize = 200_000;
const CREDENTIAL: &str = "cred-00000001";

/// One setup at one concurrency, measured over the rounds.
#[derive(Debug, Clone)]
pub struct Way {
    pub setup: &'static str,
    pub concurrency: usize,
    /// Requests per second, one per round.
    pub rates: Vec<f64>,
    /// Every request's latency, microseconds, over all rounds.
    pub latencies_us: Vec<f64>,
    /// New connections the clients had to open beyond one each (the server closed one).
    pub reconnects: u64,
}

impl Way {
    pub fn rate(&self) -> f64 {
        median(self.rates.clone())
    }
    pub fn percentile_us(&self, p: f64) -> f64 {
        let mut v = self.latencies_us.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

pub struct ProxyBench {
    /// Every setup × concurrency, tokenwarden's first, then nginx's, then direct.
    pub ways: Vec<Way>,
    /// The same at [`PACED_RATE`] over [`PACED_CLIENTS`] connections (open loop).
    pub paced: Vec<Way>,
    pub rounds: usize,
    pub window: Duration,
    pub nginx: String,
    /// /proc/loadavg at the start and the end of the section.
    pub load: (String, String),
    /// Instructions per request under callgrind, or why they were not counted.
    pub instructions: Result<Instructions, String>,
}

/// The route's and nginx's instructions per request, one client, each process alone under
/// callgrind (`callgrind.rs`).
pub struct Instructions {
    pub tw: crate::callgrind::Counted,
    pub nginx: crate::callgrind::Counted,
}

const SETUPS: [&str; 3] = ["tokenwarden route", "nginx proxy_pass", "direct"];

fn plan(smoke: bool) -> (usize, Duration) {
    if smoke {
        (1, Duration::from_millis(300))
    } else {
        (5, Duration::from_secs(2))
    }
}

fn setups_at(concurrencies: &[usize]) -> Vec<Way> {
    SETUPS
        .iter()
        .flat_map(|&setup| {
            concurrencies.iter().map(move |&c| Way {
                setup,
                concurrency: c,
                rates: Vec::new(),
                latencies_us: Vec::new(),
                reconnects: 0,
            })
        })
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A free port on 127.0.0.1 (bound and released; the child binds it right after).
fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child stopped with SIGTERM (then SIGKILL after 10 s) on drop.
pub struct Stopped(pub Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `port` on 127.0.0.1 accepts a connection.
pub fn wait_listening(port: u16, what: &str, child: &mut Child) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited before listening: {status}").into());
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("{what} did not listen on 127.0.0.1:{port} within 60 s").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The fixed-answer upstream: 200 `ok` for `expected` Authorization, 401 otherwise.
async fn upstream(listener: tokio::net::TcpListener, expected: Arc<String>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let expected = Arc::clone(&expected);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.len() > 64 * 1024 {
                        return;
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                let ok = head.lines().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.eq_ignore_ascii_case("authorization") && v.trim() == expected.as_str()
                    })
                });
                let answer: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
                } else {
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
                };
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// nginx's configuration: `workers` is `auto`, or `1` with `master_process off` (one process
/// doing everything, for callgrind).
fn nginx_conf(
    prefix: &std::path::Path,
    port: u16,
    upstream: u16,
    auth: &str,
    workers: &str,
) -> String {
    let p = prefix.display();
    let master = if workers == "1" {
        "master_process off;\n"
    } else {
        ""
    };
    format!(
        "daemon off;\n{master}worker_processes {workers};\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n\
         \x20 fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n\
         \x20 keepalive_requests 1000000;\n\
         \x20 upstream up {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 1000000; }}\n\
         \x20 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://up;\n\
         \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         \x20     proxy_set_header Authorization \"{auth}\";\n    }}\n  }}\n}}\n"
    )
}

impl Bench {
    /// Section 8; `None` (with a note) when nginx is not installed.
    pub fn proxy(&self) -> Result<Option<ProxyBench>, Error> {
        let nginx_bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(nginx_bin) = nginx_bin else {
            note("no nginx (Debian's `nginx` package): section 8 is skipped");
            return Ok(None);
        };
        let nginx_version = Command::new(nginx_bin)
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
            .unwrap_or_default();
        let (rounds, window) = plan(self.o.plan.smoke);
        let load_start = loadavg();
        let template = self.template(1_000, Due::None)?;
        let dir = self.runs.join("proxy");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("nginx/tmp"))?;
        let db = dir.join("proxy.db");
        crate::db::copy(&template, &db)?;
        let (token, token_type) = self.rt.block_on(async {
            let mut conn = crate::db::open(&db).await?;
            sqlx::query_as::<_, (String, String)>(
                "SELECT access_token, token_type FROM oauth_credential WHERE name = ?1",
            )
            .bind(CREDENTIAL)
            .fetch_one(&mut conn)
            .await
        })?;
        let auth = format!("{token_type} {token}");

        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let up_port = listener.local_addr()?.port();
        let upstream_task = self.rt.spawn(upstream(listener, Arc::new(auth.clone())));

        // tokenwarden: one route to the upstream, the daemon otherwise idle.
        let tw_port = free_port()?;
        let cfg = self.config("proxy", &db, None, true)?;
        let mut text = std::fs::read_to_string(&cfg)?;
        text.push_str(&format!(
            "\n[[proxy]]\nlisten = \"127.0.0.1:{tw_port}\"\ncredential = \"{CREDENTIAL}\"\nupstream = \"http://127.0.0.1:{up_port}\"\n"
        ));
        std::fs::write(&cfg, text)?;
        let log = dir.join("daemon.log");
        let mut cmd = self.command(&self.o.bin);
        cmd.arg("--config")
            .arg(&cfg)
            .arg("run")
            .stderr(std::fs::File::create(&log)?);
        let mut tw = Stopped(cmd.spawn()?);
        wait_listening(tw_port, "tokenwarden run", &mut tw.0)?;

        // nginx: a non-daemon child with its own prefix and configuration.
        let ng_port = free_port()?;
        let prefix = dir.join("nginx");
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&prefix, ng_port, up_port, &auth, "auto"))?;
        let mut ng = Stopped(
            Command::new(nginx_bin)
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(prefix.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(prefix.join("stderr.log"))?)
                .spawn()?,
        );
        wait_listening(ng_port, "nginx", &mut ng.0)?;

        let ports = [tw_port, ng_port, up_port];
        let mut ways = setups_at(&CLIENTS);
        let mut paced = setups_at(&PACED_CLIENTS);
        let me = std::env::current_exe()?;
        let result = (|| -> Result<(), Error> {
            for round in 0..rounds {
                for (way, rate) in ways
                    .iter_mut()
                    .map(|w| (w, None))
                    .chain(paced.iter_mut().map(|w| (w, Some(PACED_RATE))))
                {
                    let k = SETUPS.iter().position(|s| *s == way.setup).unwrap_or(0);
                    let report = run_client(
                        &me,
                        ports[k],
                        way.concurrency,
                        window,
                        rate,
                        (k == 2).then_some(auth.as_str()),
                    )
                    .map_err(|e| format!("proxy-client ({}): {e}", way.setup))?;
                    let measured = report.latencies_us.len() as f64 / report.wall_s;
                    note(&format!(
                        "proxy round {}: {}, {} clients{}: {measured:.0}/s, {} requests",
                        round + 1,
                        way.setup,
                        way.concurrency,
                        if rate.is_some() { " (paced)" } else { "" },
                        report.latencies_us.len()
                    ));
                    way.rates.push(measured);
                    way.reconnects += report.reconnects;
                    way.latencies_us.extend(report.latencies_us);
                }
            }
            Ok(())
        })();
        drop(ng);
        drop(tw);
        let instructions = match result {
            Ok(()) if self.o.plan.smoke => Err("not in --smoke".to_owned()),
            Ok(()) if !crate::callgrind::available() => {
                Err("valgrind (Debian's `valgrind` package) is not installed".to_owned())
            }
            Ok(()) => {
                let counted = (|| -> Result<Instructions, Error> {
                    let load = |port: u16| {
                        let me = &me;
                        move |counted: bool| -> Result<u64, Error> {
                            let window = Duration::from_secs(if counted { 4 } else { 1 });
                            let report = run_client(me, port, 1, window, None, None)?;
                            Ok(report.latencies_us.len() as u64)
                        }
                    };
                    // `server` under callgrind on `port`; its profile and log are `file`.*.
                    let count = |what: &str, file: &str, server: &[&std::ffi::OsStr], port| {
                        let counted = crate::callgrind::count(
                            self.command(std::path::Path::new("valgrind")),
                            server,
                            port,
                            &dir.join(format!("{file}.callgrind")),
                            &dir.join(format!("{file}.valgrind.log")),
                            load(port),
                        )?;
                        note(&format!(
                            "proxy under callgrind: {what}, {:.0} instructions per request",
                            counted.per_request()
                        ));
                        Ok::<_, Error>(counted)
                    };
                    let tw = count(
                        "tokenwarden route",
                        "tokenwarden",
                        &[
                            self.o.bin.as_os_str(),
                            "--config".as_ref(),
                            cfg.as_os_str(),
                            "run".as_ref(),
                        ],
                        tw_port,
                    )?;
                    std::fs::write(&conf, nginx_conf(&prefix, ng_port, up_port, &auth, "1"))?;
                    let error_log = prefix.join("error.log");
                    let nginx = count(
                        "nginx",
                        "nginx",
                        &[
                            nginx_bin.as_ref(),
                            "-p".as_ref(),
                            prefix.as_os_str(),
                            "-c".as_ref(),
                            conf.as_os_str(),
                            "-e".as_ref(),
                            error_log.as_os_str(),
                        ],
                        ng_port,
                    )?;
                    Ok(Instructions { tw, nginx })
                })();
                counted.map_err(|e| e.to_string())
            }
            Err(_) => Err("the rounds failed".to_owned()),
        };
        upstream_task.abort();
        result?;
        crate::check_daemon_log(&log, &token)?;
        crate::check_daemon_log(&dir.join("tokenwarden.valgrind.log"), &token)?;
        Ok(Some(ProxyBench {
            ways,
            paced,
            rounds,
            window,
            nginx: nginx_version,
            load: (load_start, loadavg()),
            instructions,
        }))
    }
}

/// One `proxy-client` pass: `clients` at `port` for `window` (paced at `rate`), `auth` sent by
/// the clients themselves (direct to the upstream).
fn run_client(
    me: &std::path::Path,
    port: u16,
    clients: usize,
    window: Duration,
    rate: Option<f64>,
    auth: Option<&str>,
) -> Result<ClientReport, Error> {
    let mut client = Command::new(me);
    client
        .arg("proxy-client")
        .arg(format!("127.0.0.1:{port}"))
        .arg(clients.to_string())
        .arg(window.as_secs_f64().to_string())
        .args(rate.map(|r| r.to_string()))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(auth) = auth {
        client.env("TW_BENCH_PROXY_AUTH", auth);
    }
    let out = client.output()?;
    if !out.status.success() {
        return Err(format!("proxy-client exited {:?}", out.status.code()).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// What `proxy-client` prints.
#[derive(serde::Serialize, serde::Deserialize)]
struct ClientReport {
    wall_s: f64,
    latencies_us: Vec<f64>,
    reconnects: u64,
}

/// Reads one answer from `stream` (Content-Length or chunked); `Ok(None)` when the peer closed
/// the connection before an answer began.
async fn read_answer(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<u16>, String> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err("connection closed within an answer's head".into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an answer: {}", head.lines().next().unwrap_or("")))?;
    let field = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        })
    };
    if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Small bodies only: read to the last chunk and its empty trailer.
        loop {
            if let Some(end) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                buf.drain(..end + 5);
                break;
            }
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed within a chunked body".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = field("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed within a body".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..len);
    }
    Ok(Some(status))
}

/// `proxy-client ADDR CLIENTS SECONDS`: CLIENTS closed-loop keep-alive clients for SECONDS (at
/// most 200,000 requests each), `Authorization` from `TW_BENCH_PROXY_AUTH` when set; every answer
/// must be 200. Prints a [`ClientReport`] as JSON.
pub fn client_main(args: &[String]) -> i32 {
    let (Some(addr), Some(Ok(clients)), Some(Ok(seconds)), Ok(rate)) = (
        args.first().cloned(),
        args.get(1).map(|s| s.parse::<usize>()),
        args.get(2).map(|s| s.parse::<f64>()),
        args.get(3).map(|s| s.parse::<f64>()).transpose(),
    ) else {
        eprintln!("usage: tokenwarden-bench proxy-client ADDR CLIENTS SECONDS [RATE]");
        return 2;
    };
    // Paced: each client sends on its own schedule (RATE / CLIENTS per second, the clients
    // staggered); a request that fell due while the last answer was awaited is timed from when
    // it was due, so that a late answer delays no measurement (no coordinated omission).
    let every = rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(clients as f64 / r));
    let auth = std::env::var("TW_BENCH_PROXY_AUTH")
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = Arc::new(format!(
        "GET /v1/ping?x=1 HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n{auth}\r\n"
    ));
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 70;
    };
    let result: Result<ClientReport, String> = rt.block_on(async {
        let window = Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..clients {
            let (addr, request) = (addr.clone(), Arc::clone(&request));
            tasks.spawn(async move {
                let connect = || async {
                    let s = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| format!("connect {addr}: {e}"))?;
                    let _ = s.set_nodelay(true);
                    Ok::<_, String>(s)
                };
                let mut stream = connect().await?;
                let mut buf = Vec::with_capacity(8192);
                let mut latencies = Vec::new();
                let mut reconnects = 0u64;
                let mut due = every.map(|e| start + e.mul_f64(i as f64 / clients as f64));
                while start.elapsed() < window && latencies.len() < MAX_PER_CLIENT {
                    let t = match (due, every) {
                        (Some(at), Some(e)) => {
                            due = Some(at + e);
                            if Instant::now() > at {
                                // Due while the last answer was awaited: timed from when due.
                                at
                            } else {
                                // Timed from the write, not from when due: the timer wakes
                                // up to a millisecond late, which is this client's, not the
                                // server's.
                                tokio::time::sleep_until(at.into()).await;
                                Instant::now()
                            }
                        }
                        _ => Instant::now(),
                    };
                    stream
                        .write_all(request.as_bytes())
                        .await
                        .map_err(|e| format!("write: {e}"))?;
                    match read_answer(&mut stream, &mut buf).await? {
                        Some(200) => latencies.push(t.elapsed().as_secs_f64() * 1e6),
                        Some(status) => return Err(format!("answer {status}, not 200")),
                        None => {
                            // The server closed the kept connection: open another, not timed.
                            reconnects += 1;
                            if reconnects > 1000 {
                                return Err("the server keeps closing connections".into());
                            }
                            buf.clear();
                            stream = connect().await?;
                        }
                    }
                }
                Ok::<_, String>((latencies, reconnects))
            });
        }
        let mut all = Vec::new();
        let mut reconnects = 0;
        while let Some(joined) = tasks.join_next().await {
            let (latencies, r) = joined.map_err(|e| e.to_string())??;
            all.extend(latencies);
            reconnects += r;
        }
        Ok(ClientReport {
            wall_s: start.elapsed().as_secs_f64(),
            latencies_us: all,
            reconnects,
        })
    });
    match result.and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string())) {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(e) => {
            eprintln!("proxy-client: {e}");
            1
        }
    }
}

fn find<'a>(p: &'a ProxyBench, setup: &str, c: usize) -> Option<&'a Way> {
    p.ways
        .iter()
        .find(|w| w.setup == setup && w.concurrency == c)
}

/// The section's targets, per concurrency: (what, measured, pass).
pub fn targets(p: &ProxyBench) -> Vec<(String, String, bool)> {
    let mut t = Vec::new();
    for c in CLIENTS {
        let (Some(tw), Some(ng), Some(direct)) = (
            find(p, SETUPS[0], c),
            find(p, SETUPS[1], c),
            find(p, SETUPS[2], c),
        ) else {
            continue;
        };
        let ratio = tw.rate() / ng.rate();
        t.push((
            format!("proxy route throughput, {c} clients, ≥ 0.9× nginx"),
            format!("{ratio:.2}× ({:.0}/s vs {:.0}/s)", tw.rate(), ng.rate()),
            ratio >= 0.9,
        ));
        let (a, b) = (tw.percentile_us(99.0), ng.percentile_us(99.0));
        t.push((
            format!("proxy route p99, {c} clients, ≤ 1.2× nginx"),
            format!("{:.2}× ({} vs {})", a / b, fmt_ms(a / 1e3), fmt_ms(b / 1e3)),
            a <= 1.2 * b,
        ));
        // Closed-loop clients at more than one: the p50 is the clients over the rate (Little's
        // law), a second reading of the throughput; the latency added is measured paced.
        if c == 1 {
            t.push(added_p50(tw, direct, "1 client"));
        }
    }
    for c in PACED_CLIENTS {
        let find = |setup| {
            p.paced
                .iter()
                .find(|w| w.setup == setup && w.concurrency == c)
        };
        if let (Some(tw), Some(direct)) = (find(SETUPS[0]), find(SETUPS[2])) {
            t.push(added_p50(
                tw,
                direct,
                &format!("{c} connections at {PACED_RATE:.0} requests/s"),
            ));
        }
    }
    t
}

fn added_p50(tw: &Way, direct: &Way, what: &str) -> (String, String, bool) {
    let added = tw.percentile_us(50.0) - direct.percentile_us(50.0);
    (
        format!("proxy route p50 added over direct, {what}, ≤ 100 µs"),
        format!(
            "{added:.0} µs ({:.0} vs {:.0} µs)",
            tw.percentile_us(50.0),
            direct.percentile_us(50.0)
        ),
        added <= 100.0,
    )
}

pub fn render(p: &ProxyBench) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### 8. The proxy route beside nginx and direct (small GETs to a local upstream, same run)\n"
    );
    let _ = writeln!(
        s,
        "{} rounds, round-robin over the nine setups × concurrencies and the six paced ones: each a {:.1} s window of closed-loop clients, one keep-alive connection each (latency from writing the request to the answer's last byte), the same load generator for all. Every answer checked: 200 from an upstream that answers 401 without the credential's header. nginx: {}, `worker_processes auto`, upstream `keepalive 128`. Load average (1, 5, 15 min) at the start: {}; at the end: {}.\n",
        p.rounds,
        p.window.as_secs_f64(),
        p.nginx,
        p.load.0,
        p.load.1
    );
    let _ = writeln!(
        s,
        "| setup | clients | requests/s | p50 | p99 | runs (per s) | reconnects |\n| --- | ---: | ---: | ---: | ---: | --- | ---: |"
    );
    for c in CLIENTS {
        for setup in SETUPS {
            let Some(w) = find(p, setup, c) else { continue };
            row(&mut s, w);
        }
    }
    let _ = writeln!(
        s,
        "\nPaced (open loop), in the same rounds: {PACED_RATE:.0} requests/s over {} keep-alive connections, each sending on its own schedule and timed from when its request was due; the added latency's target at more than one client is read here, since a closed-loop p50 at 16 or 64 clients is the clients over the rate (Little's law).\n",
        PACED_CLIENTS.map(|c| c.to_string()).join(" or ")
    );
    let _ = writeln!(
        s,
        "| setup | connections | requests/s | p50 | p99 | runs (per s) | reconnects |\n| --- | ---: | ---: | ---: | ---: | --- | ---: |"
    );
    for c in PACED_CLIENTS {
        for w in p.paced.iter().filter(|w| w.concurrency == c) {
            row(&mut s, w);
        }
    }
    match &p.instructions {
        Ok(i) => {
            let _ = writeln!(
                s,
                "\nInstructions per request, counted by callgrind (valgrind) in user space while one closed-loop client sent them, each server alone in one process (nginx with `master_process off`), start-up not counted: a figure this machine's noise does not move.\n\n| setup | requests counted | instructions per request | vs nginx |\n| --- | ---: | ---: | ---: |\n| tokenwarden route | {} | {:.0} | {:.2}× |\n| nginx proxy_pass | {} | {:.0} | 1.00× |",
                i.tw.requests,
                i.tw.per_request(),
                i.tw.per_request() / i.nginx.per_request(),
                i.nginx.requests,
                i.nginx.per_request(),
            );
        }
        Err(why) => {
            let _ = writeln!(
                s,
                "\nInstructions per request (callgrind): not counted: {why}."
            );
        }
    }
    s
}

fn row(s: &mut String, w: &Way) {
    let _ = writeln!(
        s,
        "| {} | {} | {:.0}/s | {:.0} µs | {:.0} µs | {} | {} |",
        w.setup,
        w.concurrency,
        w.rate(),
        w.percentile_us(50.0),
        w.percentile_us(99.0),
        w.rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        w.reconnects
    );
}
