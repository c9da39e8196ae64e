//! A PostgreSQL server for the benchmark, as tests/it/postgres.rs starts one: `initdb` and
//! `pg_ctl` from the newest /usr/lib/postgresql/*/bin, run as the unprivileged `postgres` user (the
//! server refuses root), listening on 127.0.0.1 on a free port with unix sockets off, every
//! connection authenticated by password (scram-sha-256). Unlike the tests' server its cluster is
//! kept in the work directory, so the generated databases in it are cached between benchmark runs
//! like the SQLite templates; and it keeps PostgreSQL's durability defaults (fsync on, synchronous
//! commit), as a deployment would. Stopped (`-m fast`) on drop, on every path out of the section.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::Error;

/// The cluster's superuser password: a benchmark-only secret, never printed; the daemon reads it
/// from [`PASSWORD_ENV`].
const PASSWORD: &str = "tw-bench-pg-3b9e71d2";
/// The variable the daemon under test reads the password from (`[postgres] password_env`).
pub const PASSWORD_ENV: &str = "TW_BENCH_PG_PASSWORD";
/// Longest `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "120";

/// One running server; stopped when dropped.
pub struct PgServer {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    pub version: String,
}

/// Where the server binaries are: the newest /usr/lib/postgresql/*/bin with initdb and pg_ctl;
/// `None` when PostgreSQL is not installed, or it cannot be run here: no `postgres` user, or this
/// process is not root (`runuser` needs it).
pub fn bin_dir() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    let (_, bin) = found.pop()?;
    id("-u").ok()?;
    Some(bin)
}

impl PgServer {
    /// Starts the cluster kept under `root` (created when missing, or when it does not start),
    /// on a free port.
    pub fn start(bin: &Path, root: &Path) -> Result<Self, Error> {
        let mut server = Self {
            bin: bin.to_owned(),
            root: root.to_owned(),
            port: free_port()?,
            version: String::new(),
        };
        let fresh = !server.data().join("PG_VERSION").is_file();
        if fresh {
            server.init()?;
        }
        if let Err(e) = server.pg_ctl(&["start"]) {
            if fresh {
                return Err(e);
            }
            // A cached cluster that does not come up (another major version, a damaged copy) is
            // rebuilt: it holds nothing but regenerable templates.
            crate::note(&format!(
                "the cached PostgreSQL cluster did not start ({e}); recreating it"
            ));
            server.init()?;
            server.pg_ctl(&["start"])?;
        }
        server.version = std::fs::read_to_string(server.data().join("PG_VERSION"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A new cluster under `root`, owned by `postgres`.
    fn init(&self) -> Result<(), Error> {
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root)?;
        }
        std::fs::create_dir_all(&self.root)?;
        let (uid, gid) = (id("-u")?, id("-g")?);
        std::os::unix::fs::chown(&self.root, Some(uid), Some(gid))?;
        let pwfile = self.root.join("pwfile");
        std::fs::write(&pwfile, PASSWORD)?;
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        let data = self.data();
        let result = as_postgres(
            &self.bin.join("initdb"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile",
                &pwfile.to_string_lossy(),
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
        );
        std::fs::remove_file(&pwfile)?;
        result
    }

    /// `pg_ctl ACTION`, listening on 127.0.0.1 only (no unix sockets), bounded by
    /// [`PG_CTL_WAIT_SECS`].
    fn pg_ctl(&self, action: &[&str]) -> Result<(), Error> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='' -c max_connections=200",
            self.port
        );
        let (data, log) = (self.data(), self.root.join("server.log"));
        let mut args = vec![
            "-D".to_owned(),
            data.to_string_lossy().into_owned(),
            "-l".to_owned(),
            log.to_string_lossy().into_owned(),
            "-o".to_owned(),
            options,
            "-w".to_owned(),
            "-t".to_owned(),
            PG_CTL_WAIT_SECS.to_owned(),
        ];
        args.extend(action.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        as_postgres(&self.bin.join("pg_ctl"), &args)
    }

    /// The URL of database `db`, without the password (the daemon reads [`PASSWORD_ENV`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A small pool on database `db`, for the driver's own statements.
    pub async fn pool(&self, db: &str) -> Result<PgPool, sqlx::Error> {
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .password(PASSWORD)
            .database(db)
            .application_name("tokenwarden-bench")
            .disable_statement_logging();
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options)
            .await
    }

    /// The password, for the environment of the processes under test only.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.pg_ctl(&["-m", "fast", "stop"]) {
            crate::note(&format!("stopping the PostgreSQL server failed: {e}"));
        }
    }
}

/// Runs `program args` as the `postgres` user; its output in the error when it fails.
fn as_postgres(program: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} {}: {}{}",
        program.display(),
        args.last().unwrap_or(&""),
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
    .into())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `id FLAG postgres`: the postgres user's uid (`-u`) or gid (`-g`).
fn id(flag: &str) -> Result<u32, Error> {
    let out = Command::new("id").args([flag, "postgres"]).output()?;
    if !out.status.success() {
        return Err("no postgres user".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}
