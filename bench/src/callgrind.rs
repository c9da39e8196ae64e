//! Instructions per request of one server process, counted by valgrind's callgrind: a figure the
//! machine's noise does not move, where requests per second on a shared 2-core machine move by
//! ±10% between runs. Section 8 reads it for the proxy route and for nginx.
//!
//! The server starts under callgrind with instrumentation off (start-up is not counted), is
//! warmed, and is counted only while one closed-loop client sends it requests
//! (`callgrind_control -i on`, then `off`); the total of the profile it writes when stopped,
//! over the requests answered, is the figure.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::Error;

/// What one counted server did.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    pub instructions: u64,
    pub requests: u64,
}

impl Counted {
    pub fn per_request(&self) -> f64 {
        self.instructions as f64 / self.requests.max(1) as f64
    }
}

/// Whether valgrind and callgrind_control are on PATH.
pub fn available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `server` (program and arguments) run under callgrind by `valgrind` (a command for the
/// `valgrind` program, its environment the server's), listening on `port`, its profile written
/// to `out`; `load` sends requests and says how many were answered (called twice: to warm the
/// server, then counted).
pub fn count(
    mut valgrind: Command,
    server: &[&std::ffi::OsStr],
    port: u16,
    out: &Path,
    log: &Path,
    mut load: impl FnMut(bool) -> Result<u64, Error>,
) -> Result<Counted, Error> {
    let _ = std::fs::remove_file(out);
    valgrind
        .arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args(server)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    let mut child = crate::proxy::Stopped(valgrind.spawn()?);
    crate::proxy::wait_listening(port, "a server under callgrind", &mut child.0)?;
    load(false)?;
    let pid = child.0.id().to_string();
    instrument(&pid, "on")?;
    let requests = load(true)?;
    instrument(&pid, "off")?;
    drop(child);
    let profile = std::fs::read_to_string(out)
        .map_err(|e| format!("callgrind's profile {}: {e}", out.display()))?;
    let instructions = profile
        .lines()
        .find_map(|l| l.strip_prefix("totals: "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("callgrind's profile {} has no totals", out.display()))?;
    Ok(Counted {
        instructions,
        requests,
    })
}

/// `callgrind_control -i on|off PID`; it returns once the server has switched.
fn instrument(pid: &str, state: &str) -> Result<(), Error> {
    let status = Command::new("callgrind_control")
        .arg("-i")
        .arg(state)
        .arg(pid)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("callgrind_control -i {state} {pid} exited {status}").into());
    }
    Ok(())
}
