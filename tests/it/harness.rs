//! Runs the real tokenwarden binary in a private temporary directory, with a configuration whose
//! providers point at the test OAuth server, and reads the database it writes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use tokio::io::AsyncWriteExt;

use crate::oauth_server::{OauthServer, clients};
use crate::postgres::PgServer;

/// Longest a single command of the binary may take in a test.
const COMMAND_DEADLINE: Duration = Duration::from_mins(1);

/// The secrets every configuration here holds; none may ever be printed.
pub const CLIENT_SECRETS: [&str; 3] = [
    clients::BASIC_SECRET,
    clients::POST_SECRET,
    clients::CC_SECRET,
];

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both streams, for searching.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A temporary home for one test: configuration, secret files, database.
pub struct Home {
    dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The SQLite file (with PostgreSQL: where it would be, never created).
    pub db: PathBuf,
}

impl Home {
    /// A home whose providers `basic`, `post`, `jwt` (the three client authentication methods)
    /// and `cc` (client credentials) point at `server`. `extra` is appended to the top level of
    /// the configuration (before the provider tables).
    pub fn new(server: &OauthServer, extra: &str) -> Self {
        Self::with_token_url(server.token_url(), extra)
    }

    /// A home whose providers all use `token_url` (a fault-injecting fake, or nothing at all).
    pub fn with_token_url(token_url: &str, extra: &str) -> Self {
        Self::build(token_url, extra, None)
    }

    /// A home like [`Home::new`] whose database is `pg`'s, its password in `[postgres]
    /// password_file`.
    pub fn on_postgres(server: &OauthServer, pg: &PgServer, extra: &str) -> Self {
        Self::build(server.token_url(), extra, Some((pg.url(), "")))
    }

    /// A home whose providers use `token_url` and whose `database` is `url` (a server's, with
    /// `sslmode` and the like), with `postgres` (TOML lines) added to its `[postgres]` table.
    pub fn on_postgres_url(token_url: &str, url: String, postgres: &str, extra: &str) -> Self {
        Self::build(token_url, extra, Some((url, postgres)))
    }

    fn build(token_url: &str, extra: &str, pg: Option<(String, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("tokenwarden.db");
        let (database, pg_table) = match pg {
            None => (db.display().to_string(), String::new()),
            Some((url, lines)) => {
                let password = dir.path().join("pg.password");
                write_secret(&password, &format!("{}\n", crate::postgres::PASSWORD));
                let table = format!(
                    "[postgres]\npassword_file = \"{}\"\n{lines}\n",
                    password.display()
                );
                (url, table)
            }
        };
        // Not named after the secret: its path shows in messages, the secret never may.
        let post_secret = dir.path().join("post-client.secret");
        write_secret(&post_secret, &format!("{}\n", clients::POST_SECRET));
        // The checked-out fixture is 0644, which tokenwarden warns about: use a private copy.
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt-client.key.pem");
        let key = dir.path().join("jwt-client.key.pem");
        write_secret(&key, &std::fs::read_to_string(fixture).unwrap());
        let config = dir.path().join("tokenwarden.toml");
        let text = format!(
            r#"database = "{database}"
{extra}

[log]
level = "trace"

{pg_table}

[providers.basic]
token_url = "{token_url}"
client_id = "{basic}"
client_secret_env = "TW_TEST_BASIC_SECRET"
client_auth = "client_secret_basic"

[providers.post]
token_url = "{token_url}"
client_id = "{post}"
client_secret_file = "{post_secret}"
client_auth = "client_secret_post"

[providers.jwt]
token_url = "{token_url}"
client_id = "{jwt}"
client_auth = "private_key_jwt"
private_key_file = "{key}"
kid = "{kid}"

[providers.cc]
token_url = "{token_url}"
client_id = "{cc}"
client_secret_env = "TW_TEST_CC_SECRET"
scopes = "api:read"
"#,
            basic = clients::BASIC_ID,
            post = clients::POST_ID,
            post_secret = post_secret.display(),
            jwt = clients::JWT_ID,
            key = key.display(),
            kid = clients::JWT_KID,
            cc = clients::CC_ID,
        );
        std::fs::write(&config, text).unwrap();
        Self { dir, config, db }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Appends `text` (more provider tables, say) to the configuration.
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        config.push('\n');
        config.push_str(text);
        std::fs::write(&self.config, config).unwrap();
    }

    /// Points every provider at `token_url` from now on.
    pub fn retarget(&self, token_url: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("token_url = ") {
                    format!("token_url = \"{token_url}\"")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        std::fs::write(&self.config, text.join("\n") + "\n").unwrap();
    }

    /// Adds `text` (TOML lines) to the `[providers.PROVIDER]` table, right after its header.
    pub fn append_to_provider(&self, provider: &str, text: &str) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let header = format!("[providers.{provider}]\n");
        assert!(
            config.contains(&header),
            "no {header:?} in the configuration"
        );
        let updated = config.replacen(&header, &format!("{header}{}\n", text.trim_end()), 1);
        std::fs::write(&self.config, updated).unwrap();
    }

    /// The binary with this home's configuration and secrets in its environment, under umask 022
    /// (so the database's 0600 mode is tokenwarden's doing, not the test's).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        self.command_in("umask 022 && exec \"$0\" \"$@\"", args)
    }

    /// As [`Home::command`], with the process's descriptor limit (soft and hard) lowered to
    /// `nofile` by `prlimit`: a daemon whose `ulimit -n` a hostile client can reach.
    pub fn command_with_nofile(&self, nofile: u32, args: &[&str]) -> tokio::process::Command {
        self.command_in(
            &format!("umask 022 && exec prlimit --nofile={nofile}:{nofile} \"$0\" \"$@\""),
            args,
        )
    }

    /// As [`Home::command`], in a PID namespace of its own (`unshare --pid --fork`, as root): a
    /// process there cannot see this host's other processes, as one on another host could not.
    pub fn command_in_new_pid_namespace(&self, args: &[&str]) -> tokio::process::Command {
        self.command_in("umask 022 && exec unshare --pid --fork \"$0\" \"$@\"", args)
    }

    fn command_in(&self, script: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", script, env!("CARGO_BIN_EXE_tokenwarden")])
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TOKENWARDEN_CONFIG", &self.config)
            .env("TW_TEST_BASIC_SECRET", clients::BASIC_SECRET)
            .env("TW_TEST_CC_SECRET", clients::CC_SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the binary to completion (bounded by a deadline), feeding `stdin`.
    pub async fn run(&self, args: &[&str], stdin: &str) -> Run {
        finish(self.command(args), stdin).await
    }

    /// `add NAME --provider P` with the refresh token on standard input.
    pub async fn add(&self, name: &str, provider: &str, refresh_token: &str) {
        let run = self
            .run(&["add", name, "--provider", provider], refresh_token)
            .await;
        assert_eq!(run.code, Some(0), "add {name}: {run:?}");
    }

    /// A connection holding this home's database write lock (`BEGIN IMMEDIATE`) until dropped or
    /// rolled back.
    pub async fn write_lock(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.db.display()))
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut lock)
            .await
            .unwrap();
        lock
    }

    /// A connection pool on this home's database.
    pub async fn db(&self) -> SqlitePool {
        SqlitePool::connect(&format!("sqlite://{}", self.db.display()))
            .await
            .expect("open test database")
    }
}

/// Writes a secret file the way an operator should: mode 0600, whatever the umask.
pub fn write_secret(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// Polls `check` every 50 ms until it holds, failing the test after `deadline`.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` (`-TERM`, `-KILL`) to a running child.
pub fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("child still running").to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Sends SIGTERM to a running daemon and waits (bounded) for it to exit.
pub async fn stop(daemon: tokio::process::Child) -> std::process::Output {
    signal(&daemon, "-TERM");
    tokio::time::timeout(Duration::from_secs(20), daemon.wait_with_output())
        .await
        .expect("the daemon exits within 20 s of SIGTERM")
        .expect("wait for the daemon")
}

/// Runs a prepared command to completion, bounded by [`COMMAND_DEADLINE`].
pub async fn finish(mut cmd: tokio::process::Command, stdin: &str) -> Run {
    let mut child = cmd.spawn().expect("spawn tokenwarden");
    let mut pipe = child.stdin.take().expect("stdin piped");
    // A command that fails before it reads its input (a database it cannot open) may exit
    // before this is written: its exit code and stderr are what the test looks at.
    match pipe.write_all(stdin.as_bytes()).await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.expect("write stdin"),
    }
    drop(pipe);
    let output = tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output())
        .await
        .expect("tokenwarden finished within the deadline")
        .expect("wait for tokenwarden");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The journal's fingerprint of a token: the first 16 hex digits of its SHA-256.
pub fn fingerprint(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

/// Fails if any of `secrets` occurs in `text`; `what` names the text in the failure.
pub fn assert_no_secrets(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            secret.len() >= 8,
            "secret canary too short to search for: {secret:?}"
        );
        assert!(
            !text.contains(secret.as_str()),
            "{what} contains a secret value"
        );
    }
}

/// `dialect`'s migrations (`sqlite`, `postgres`) numbered before `first_left_out` (`"0007"`), in
/// a directory of their own: a database as an older release left it.
pub fn migrations_before(dialect: &str, first_left_out: &str) -> tempfile::TempDir {
    let old = tempfile::tempdir().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    for file in std::fs::read_dir(dir).unwrap() {
        let file = file.unwrap();
        let name = file.file_name().into_string().unwrap();
        if name.as_str() < first_left_out {
            std::fs::copy(file.path(), old.path().join(&name)).unwrap();
        }
    }
    old
}
