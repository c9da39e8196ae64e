//! `tokenwarden exec`: runs a command with an access token in its environment — never on its
//! command line, where `ps` would show it — with standard input, output and error passed
//! through, and passes its exit status on (128 + the signal's number when a signal ended it, as
//! shells report it). The child inherits this process's environment without the secrets the
//! configuration names (or, clean, only `PATH`, `HOME`, `LANG`). While it runs, SIGTERM and
//! SIGHUP are forwarded to it; SIGINT and SIGQUIT, which a terminal sends to the child as well,
//! are left to it. Imports `domain` and `exit` only.

use std::os::unix::process::ExitStatusExt as _;

use tokio::signal::unix::{SignalKind, signal};

use crate::domain::Secret;

/// The exit code when the command cannot be found (as shells use it).
pub const NOT_FOUND: u8 = 127;
/// The exit code when the command exists but cannot be run (as shells use it).
pub const CANNOT_RUN: u8 = 126;
/// What a clean environment (`exec --clean-env`) keeps of this process's, beside the variables
/// set for the child.
pub const CLEAN_KEEPS: [&str; 3] = ["PATH", "HOME", "LANG"];

/// Why the command did not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("command {program:?} not found")]
    NotFound { program: String },
    #[error("command {program:?} cannot be run: {source}")]
    CannotRun {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot watch for signals while the command runs: {0}")]
    Signals(std::io::Error),
    #[error("waiting for the command failed: {0}")]
    Wait(std::io::Error),
}

impl ExecError {
    /// The exit code a shell would give for this failure, if it is one a shell knows.
    #[must_use]
    pub fn shell_code(&self) -> Option<u8> {
        match self {
            Self::NotFound { .. } => Some(NOT_FOUND),
            Self::CannotRun { .. } => Some(CANNOT_RUN),
            Self::Signals(_) | Self::Wait(_) => None,
        }
    }
}

/// What to run, and the environment to run it in.
#[derive(Debug)]
pub struct Child<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    /// Variables set for the child only (the token among them).
    pub set: Vec<(&'a str, &'a Secret)>,
    /// Variables of this process that the child must not inherit (the secrets the configuration
    /// names, tokenwarden's own settings).
    pub remove: Vec<&'a str>,
    /// Start from an empty environment: only [`CLEAN_KEEPS`] and `set` reach the child.
    pub clean: bool,
}

/// Runs `child` to its end and returns its exit code.
pub async fn run(child: &Child<'_>) -> Result<u8, ExecError> {
    let mut command = tokio::process::Command::new(child.program);
    command.args(child.args);
    if child.clean {
        command.env_clear();
        for var in CLEAN_KEEPS {
            if let Some(value) = std::env::var_os(var) {
                command.env(var, value);
            }
        }
    }
    for var in &child.remove {
        command.env_remove(var);
    }
    for (var, value) in &child.set {
        command.env(var, value.expose());
    }
    let mut term = signal(SignalKind::terminate()).map_err(ExecError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ExecError::Signals)?;
    // Handled, so they no longer end this process: the child decides what they mean.
    let _int = signal(SignalKind::interrupt()).map_err(ExecError::Signals)?;
    let _quit = signal(SignalKind::quit()).map_err(ExecError::Signals)?;
    let mut running = command.spawn().map_err(|source| {
        let program = child.program.to_owned();
        if source.kind() == std::io::ErrorKind::NotFound {
            ExecError::NotFound { program }
        } else {
            ExecError::CannotRun { program, source }
        }
    })?;
    let pid = running
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?));
    let forward = |sig: rustix::process::Signal| {
        if let Some(pid) = pid {
            // It may have just exited: then there is no one left to tell.
            let _ = rustix::process::kill_process(pid, sig);
        }
    };
    let status = loop {
        tokio::select! {
            status = running.wait() => break status.map_err(ExecError::Wait)?,
            _ = term.recv() => forward(rustix::process::Signal::TERM),
            _ = hup.recv() => forward(rustix::process::Signal::HUP),
        }
    };
    Ok(exit_code(status))
}

/// The code a shell reports for `status`: the exit code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(u8::MAX),
        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(u8::MAX),
        // Neither exited nor signalled: not a status `wait` returns on Unix.
        (None, None) => u8::MAX,
    }
}

/// Whether `name` can be an environment variable's name: a letter or `_`, then letters, digits
/// and `_`.
#[must_use]
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl crate::exit::ExitStatus for ExecError {
    fn exit_code(&self) -> u8 {
        self.shell_code().unwrap_or(crate::exit::INTERNAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_as_a_shell_reports_them() {
        use std::process::ExitStatus;
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }

    #[test]
    fn variable_names() {
        assert!(is_variable_name("ACCESS_TOKEN"));
        assert!(is_variable_name("_x1"));
        assert!(!is_variable_name("1X"));
        assert!(!is_variable_name("A-B"));
        assert!(!is_variable_name(""));
        assert!(!is_variable_name("A=B"));
    }
}
