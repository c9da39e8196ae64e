//! Hostile actors on 127.0.0.1, one per finding of the second security review (issue 20): a
//! provider that quotes requests back, a child process that prints its environment, an absurd
//! Retry-After, files another user controls, plaintext left in the database's files after
//! sealing is turned on, a recording proxy, and a device-grant provider that sends terminal
//! escapes. Each checks that no secret reaches any output.

mod device;
mod echo;
mod exec_env;
mod files;
mod pg_tls;
mod proxy;
mod retry_after;
mod sealing;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::harness::Run;

/// Longest a spawned command may take here.
const DEADLINE: std::time::Duration = std::time::Duration::from_mins(1);

/// The first line a running command prints on standard output (the rest stays readable).
pub async fn first_line(child: &mut tokio::process::Child) -> String {
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, stdout.read_line(&mut line))
        .await
        .expect("a first line in time")
        .expect("read stdout");
    child.stdout = Some(stdout.into_inner());
    line.trim().to_owned()
}

/// Reads a spawned command's standard error to its end, in the background (so that a full pipe
/// never stalls it).
pub fn drain_stderr(child: &mut tokio::process::Child) -> tokio::task::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    })
}

/// Waits (bounded) for a spawned command and collects what it printed.
pub async fn finish_child(
    mut child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
) -> Run {
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("finished in time")
        .unwrap();
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).await.unwrap();
    }
    Run {
        code: status.code(),
        stdout,
        stderr: stderr.await.unwrap(),
    }
}
