//! Child processes, measured: wall time from spawn to reap and peak RSS (`ru_maxrss` of `wait4`),
//! with a watchdog that kills a child running past its time limit.
//!
//! A measured child is started through a launcher (`tokenwarden-bench launch PROGRAM ARGS…`, a
//! fresh exec of this binary, [`launch_main`]) that spawns it, reaps it and writes what `wait4`
//! said into the file named by [`LAUNCH_OUT`]. Linux folds the peak RSS of the address space a
//! process leaves at `exec` into its `ru_maxrss` (`exec_mmap`: `setmax_mm_hiwater_rss`), and a
//! child that `posix_spawn` (vfork) starts leaves its parent's: spawned straight from the driver,
//! every child's "peak" was at least the driver's own peak so far (the instant endpoint's memory
//! of 100k presented refresh tokens made that 63.5 MB). The launcher is small, so its children's
//! figures are theirs: the floor left is the launcher's own few MB.

use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// One finished child.
#[derive(Debug, Clone)]
pub struct Measured {
    pub wall: Duration,
    /// Peak resident set size, KiB.
    pub maxrss_kib: u64,
    /// User + system CPU time.
    pub cpu: Duration,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// VmRSS samples (milliseconds since start, KiB) when sampling was asked for.
    pub samples: Vec<(u64, u64)>,
}

/// The environment variable naming the file where the launcher writes its child's figures.
pub const LAUNCH_OUT: &str = "BENCH_LAUNCH_OUT";

/// A command that runs `program` through the launcher: give it to [`run`] or [`run_together`].
/// Arguments, environment and standard streams set on it reach `program`.
pub fn measured(program: &Path) -> io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("launch").arg(program);
    Ok(cmd)
}

/// `launch PROGRAM ARGS…`: runs PROGRAM (dying with this process: `PR_SET_PDEATHSIG`, so the
/// driver's watchdog stops both), reaps it and writes `pid wall_ns maxrss_kib cpu_us code` to the
/// file [`LAUNCH_OUT`] names (code -1: killed by a signal). Exits with its exit code.
pub fn launch_main(args: &[String]) -> i32 {
    let Some(out) = std::env::var_os(LAUNCH_OUT) else {
        eprintln!("tokenwarden-bench launch: {LAUNCH_OUT} is not set");
        return 2;
    };
    let Some((program, rest)) = args.split_first() else {
        eprintln!("tokenwarden-bench launch: no program given");
        return 2;
    };
    let mut cmd = Command::new(program);
    cmd.args(rest).env_remove(LAUNCH_OUT);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("tokenwarden-bench launch: cannot start {program}: {e}");
            return 2;
        }
    };
    let pid = child.id() as libc::pid_t;
    let (status, rusage) = match wait4(pid, 0) {
        Ok(Some(got)) => got,
        Ok(None) | Err(_) => return 2,
    };
    let wall = start.elapsed();
    drop(child);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let cpu = timeval(rusage.ru_utime) + timeval(rusage.ru_stime);
    let line = format!(
        "{pid} {} {} {} {}\n",
        wall.as_nanos(),
        rusage.ru_maxrss,
        cpu.as_micros(),
        code.unwrap_or(-1)
    );
    if let Err(e) = std::fs::write(&out, line) {
        eprintln!(
            "tokenwarden-bench launch: cannot write {}: {e}",
            out.to_string_lossy()
        );
        return 2;
    }
    code.unwrap_or(2)
}

/// A fresh file name for one launcher's figures.
fn launch_out() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "tokenwarden-bench-{}-{}.launch",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// What the launcher wrote: the child's own figures.
fn launched(out: &Path) -> io::Result<Measured> {
    let text = std::fs::read_to_string(out)
        .map_err(|e| io::Error::other(format!("the launcher left no figures: {e}")))?;
    let _ = std::fs::remove_file(out);
    let f: Vec<i128> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| io::Error::other(format!("the launcher's figures {text:?}: {e}")))?;
    let [_pid, wall_ns, maxrss, cpu_us, code] = f[..] else {
        return Err(io::Error::other(format!("the launcher's figures {text:?}")));
    };
    Ok(Measured {
        wall: Duration::from_nanos(wall_ns as u64),
        maxrss_kib: maxrss as u64,
        cpu: Duration::from_micros(cpu_us as u64),
        code: (code >= 0).then_some(code as i32),
        samples: Vec::new(),
    })
}

fn is_launcher(cmd: &Command) -> bool {
    cmd.get_args().next().is_some_and(|a| a == "launch")
}

/// The launcher's child, once it has started (`None` after it is gone).
fn child_of(launcher: libc::pid_t) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text =
            std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
        if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return Some(pid);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `cmd` (made by [`measured`]) to completion; kills it after `limit`. `sample_every`
/// samples the child's VmRSS meanwhile.
pub fn run(
    cmd: &mut Command,
    limit: Duration,
    sample_every: Option<Duration>,
) -> io::Result<Measured> {
    if !is_launcher(cmd) {
        return Err(io::Error::other(
            "proc::run needs a command made by proc::measured",
        ));
    }
    let out = launch_out();
    cmd.env(LAUNCH_OUT, &out);
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(limit) {
            // SAFETY: the child has not been reaped yet (the main thread is in wait4), so `pid` is
            // still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_every.map(|every| {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut samples = Vec::new();
            let Some(child) = child_of(pid) else {
                return samples;
            };
            while !stop.load(Ordering::Relaxed) {
                match status_kib(child, "VmRSS:") {
                    Some(kib) => samples.push((start.elapsed().as_millis() as u64, kib)),
                    None => break,
                }
                thread::sleep(every);
            }
            samples
        })
    });
    let (status, _) = wait4(pid, 0)?.expect("blocking wait4 returns the child");
    stop.store(true, Ordering::Relaxed);
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap_or(false);
    let samples = sampler
        .map(|s| s.join().unwrap_or_default())
        .unwrap_or_default();
    drop(child); // already reaped; std's Child does not wait on drop
    if killed {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("child ran longer than {limit:?} and was killed"),
        ));
    }
    let launched = launched(&out).map_err(|e| {
        io::Error::other(format!(
            "{e} (launcher status {status:#x}, after {:?})",
            start.elapsed()
        ))
    })?;
    Ok(Measured {
        samples,
        ..launched
    })
}

/// Resident memory of a long-running child once it is idle.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// VmRSS after `settle`, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak so far) at that moment, KiB.
    pub hwm_kib: u64,
    /// From spawn until `marker` appeared in the log.
    pub ready: Duration,
}

/// Starts `cmd` (whose log goes to `log`), waits until `marker` appears in the log, lets it settle,
/// reads its memory, then stops it with SIGTERM (SIGKILL after 10 s) and reaps it.
pub fn idle(
    cmd: &mut Command,
    log: &Path,
    marker: &str,
    settle: Duration,
    limit: Duration,
) -> io::Result<Idle> {
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let result = (|| {
        loop {
            if std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains(marker)
            {
                break;
            }
            if let Some((status, _)) = wait4(pid, libc::WNOHANG)? {
                return Err(io::Error::other(format!(
                    "daemon exited early (status {status:#x})"
                )));
            }
            if start.elapsed() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no {marker:?} within {limit:?}"),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
        let ready = start.elapsed();
        thread::sleep(settle);
        let rss_kib =
            status_kib(pid as u32, "VmRSS:").ok_or_else(|| io::Error::other("no VmRSS"))?;
        let hwm_kib =
            status_kib(pid as u32, "VmHWM:").ok_or_else(|| io::Error::other("no VmHWM"))?;
        Ok(Idle {
            rss_kib,
            hwm_kib,
            ready,
        })
    })();
    // Stop and reap, whatever happened above.
    // SAFETY: not reaped yet.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match wait4(pid, libc::WNOHANG) {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() > deadline => {
                // SAFETY: not reaped yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = wait4(pid, 0);
                break;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
        }
    }
    drop(child);
    result
}

/// `wait4(pid, options)`: `None` when WNOHANG found the child still running.
fn wait4(
    pid: libc::pid_t,
    options: libc::c_int,
) -> io::Result<Option<(libc::c_int, libc::rusage)>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data; wait4 fills it.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &raw mut status, options, &raw mut rusage) };
        if r == pid {
            return Ok(Some((status, rusage)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// A `kB` field of /proc/PID/status.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Several children started together: the wall time from the first spawn to the last reap.
#[derive(Debug, Clone)]
pub struct Together {
    pub wall: Duration,
    /// Each child as [`run`] measures it (its wall from its own spawn, by its launcher).
    pub each: Vec<Measured>,
}

/// Starts every command at once and waits for all; kills every one still running after `limit`
/// (and the ones already started when a later spawn fails).
pub fn run_together(cmds: &mut [Command], limit: Duration) -> io::Result<Together> {
    if !cmds.iter().all(is_launcher) {
        return Err(io::Error::other(
            "proc::run_together needs commands made by proc::measured",
        ));
    }
    let start = Instant::now();
    let mut children = Vec::with_capacity(cmds.len());
    for cmd in cmds.iter_mut() {
        let out = launch_out();
        cmd.env(LAUNCH_OUT, &out);
        match cmd.spawn() {
            Ok(child) => children.push((Instant::now(), child, out)),
            Err(e) => {
                for (_, child, _) in &children {
                    // SAFETY: not reaped yet.
                    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
                    let _ = wait4(child.id() as libc::pid_t, 0);
                }
                return Err(e);
            }
        }
    }
    let pids: Vec<libc::pid_t> = children
        .iter()
        .map(|(_, c, _)| c.id() as libc::pid_t)
        .collect();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let reaped = Arc::new(std::sync::Mutex::new(vec![false; pids.len()]));
    let watchdog = {
        let (pids, reaped) = (pids.clone(), Arc::clone(&reaped));
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(limit) {
                let reaped = reaped
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (pid, done) in pids.iter().zip(reaped.iter()) {
                    if !done {
                        // SAFETY: not reaped (the flag is set under this lock before reaping).
                        unsafe { libc::kill(*pid, libc::SIGKILL) };
                    }
                }
                return true;
            }
            false
        })
    };
    let waiters: Vec<_> = children
        .into_iter()
        .enumerate()
        .map(|(i, (_, child, out))| {
            let reaped = Arc::clone(&reaped);
            thread::spawn(move || -> io::Result<(Instant, Measured)> {
                let pid = child.id() as libc::pid_t;
                wait_reaping(pid, &reaped, i)?;
                let ended = Instant::now();
                drop(child);
                Ok((ended, launched(&out)?))
            })
        })
        .collect();
    let mut each = Vec::with_capacity(waiters.len());
    let mut last = start;
    let mut failed = None;
    for w in waiters {
        match w.join() {
            Ok(Ok((ended, m))) => {
                last = last.max(ended);
                each.push(m);
            }
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(io::Error::other("a waiter thread panicked")),
        }
    }
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap_or(false);
    if let Some(e) = failed {
        return Err(e);
    }
    if killed {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("children ran longer than {limit:?} and were killed"),
        ));
    }
    Ok(Together {
        wall: last - start,
        each,
    })
}

/// `wait4(pid)` that marks child `i` reaped, under the lock the watchdog kills under, the moment
/// it has exited: the watchdog never signals a pid that may have been reused.
fn wait_reaping(
    pid: libc::pid_t,
    reaped: &std::sync::Mutex<Vec<bool>>,
    i: usize,
) -> io::Result<(libc::c_int, libc::rusage)> {
    // Wait without reaping (WNOWAIT), then reap under the lock.
    loop {
        // SAFETY: siginfo_t is plain old data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a local.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &raw mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let mut reaped = reaped
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let got = wait4(pid, 0)?.expect("blocking wait4 returns the child");
    reaped[i] = true;
    Ok(got)
}
