//! A real PostgreSQL server for one test: `initdb` and `pg_ctl` in a temporary directory, run as
//! the unprivileged `postgres` user (the server refuses root), listening on 127.0.0.1 on a free
//! port with unix sockets off, the superuser's password set (scram-sha-256, so every connection
//! authenticates). Stopped (`-m immediate`) and removed on drop. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The superuser's password: a canary that must never be printed.
pub const PASSWORD: &str = "pg-test-password-5f1c2a";
/// Longest `pg_ctl` waits for the server to start, stop or restart.
const PG_CTL_WAIT_SECS: &str = "60";

/// One running server.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// Where the server binaries are: the newest /usr/lib/postgresql/*/bin with initdb.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (/usr/lib/postgresql; scripts/test.sh installs it)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// Runs `program args` as the `postgres` user, failing the test with its output if it fails.
fn as_postgres(program: &Path, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("run runuser");
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl PgServer {
    /// Creates a cluster and starts it.
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("start PostgreSQL")
    }

    fn start_blocking() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("tw-pg-")
            .tempdir()
            .expect("temp dir");
        let uid = id("-u");
        let gid = id("-g");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the cluster dir");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
        );
        std::fs::remove_file(&pwfile).unwrap();
        let server = Self {
            dir,
            bin,
            port: free_port(),
        };
        server.pg_ctl(&["start"]);
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `pg_ctl ACTION` with this server's options, waiting at most [`PG_CTL_WAIT_SECS`].
    fn pg_ctl(&self, action: &[&str]) {
        pg_ctl(&self.bin, self.dir.path(), self.port, action);
    }

    /// Runs `pg_ctl ACTION` off the async runtime.
    async fn pg_ctl_async(&self, action: &'static [&'static str]) {
        let (bin, root, port) = (self.bin.clone(), self.dir.path().to_owned(), self.port);
        tokio::task::spawn_blocking(move || pg_ctl(&bin, &root, port, action))
            .await
            .expect("pg_ctl");
    }

    /// The URL of database `postgres`, without the password (it comes from a file or variable).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL with the password in it, for the test's own connections.
    pub fn url_with_password(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A pool for the test's own queries.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&self.url_with_password())
            .await
            .expect("connect to the test PostgreSQL")
    }

    /// `pg_ctl restart -m fast`: every connection is dropped, the server comes back on its port.
    pub async fn restart_fast(&self) {
        self.pg_ctl_async(&["-m", "fast", "restart"]).await;
    }

    /// `pg_ctl stop -m fast`: the server is down until [`PgServer::start_again`].
    pub async fn stop_fast(&self) {
        self.pg_ctl_async(&["-m", "fast", "stop"]).await;
    }

    /// Starts the stopped server again, on the same port.
    pub async fn start_again(&self) {
        self.pg_ctl_async(&["start"]).await;
    }
}

/// `pg_ctl ACTION` on the cluster under `root`, listening on 127.0.0.1:`port` only (unix sockets
/// off), durability traded for speed, waiting at most [`PG_CTL_WAIT_SECS`].
fn pg_ctl(bin: &Path, root: &Path, port: u16, action: &[&str]) {
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    );
    let data = root.join("data");
    let log = root.join("server.log");
    let mut args = vec![
        "-D",
        data.to_str().unwrap(),
        "-l",
        log.to_str().unwrap(),
        "-o",
        &options,
        "-w",
        "-t",
        PG_CTL_WAIT_SECS,
    ];
    args.extend_from_slice(action);
    as_postgres(&bin.join("pg_ctl"), &args);
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", self.data().to_str().unwrap_or_default()])
            .args(["-m", "immediate", "-w", "-t", PG_CTL_WAIT_SECS, "stop"])
            .output();
    }
}

/// `id FLAG postgres`: the postgres user's uid (`-u`) or gid (`-g`).
fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("run id");
    assert!(out.status.success(), "no postgres user");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric id")
}
