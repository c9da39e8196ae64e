//! A real PostgreSQL server for one test: `initdb` and `pg_ctl` in a temporary directory, run as
//! the unprivileged `postgres` user (the server refuses root), listening on 127.0.0.1 on a free
//! port with unix sockets off, the superuser's password set (scram-sha-256, so every connection
//! authenticates). Stopped (`-m immediate`) and removed on drop. Every wait is bounded.
//! [`TestCa`] (the `openssl` command) makes a throwaway CA and server certificates for a server
//! started with TLS on ([`PgServer::start_tls`]).

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
        tokio::task::spawn_blocking(|| Self::start_blocking(None))
            .await
            .expect("start PostgreSQL")
    }

    /// Creates a cluster with TLS on (`ssl = on`), serving a certificate `ca` issues for `names`
    /// (`subjectAltName` entries: `DNS:localhost,IP:127.0.0.1`), and starts it.
    pub async fn start_tls(ca: &TestCa, names: &str) -> Self {
        let (cert, key) = ca.issue(names);
        tokio::task::spawn_blocking(move || Self::start_blocking(Some((cert, key))))
            .await
            .expect("start PostgreSQL")
    }

    /// Serves a certificate `ca` issues for `names` from now on (`pg_ctl reload`: new
    /// connections get it; the reload completes asynchronously, so poll for it).
    pub async fn serve_cert(&self, ca: &TestCa, names: &str) {
        let (cert, key) = ca.issue(names);
        self.install_cert(&cert, &key);
        self.pg_ctl_async(&["reload"]).await;
    }

    /// Turns TLS off (`ssl = off`, `pg_ctl reload`; poll for it).
    pub async fn tls_off(&self) {
        self.append_conf("ssl = off\n");
        self.pg_ctl_async(&["reload"]).await;
    }

    /// Copies a certificate and its key to where the configuration names them, owned by the
    /// postgres user, the key 0600 (the server refuses a key others can read).
    fn install_cert(&self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        for (from, to, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
            let to = self.data().join(to);
            std::fs::copy(from, &to).expect("copy a certificate file");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(&to, Some(id("-u")), Some(id("-g"))).unwrap();
        }
    }

    fn append_conf(&self, lines: &str) {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .and_then(|mut f| f.write_all(lines.as_bytes()))
            .expect("append to postgresql.conf");
    }

    fn start_blocking(tls: Option<(PathBuf, PathBuf)>) -> Self {
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
        if let Some((cert, key)) = tls {
            server.install_cert(&cert, &key);
            // In the file, not on the command line: a reload can change them then.
            server.append_conf(
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
        }
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

    /// The URL of database `postgres` at `host` (`127.0.0.1` or `localhost`), with `query`.
    pub fn url_at(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    /// Whether a connection with `query` (`sslmode=verify-full&sslrootcert=…`) succeeds now.
    pub async fn connects_with(&self, query: &str) -> bool {
        use sqlx::ConnectOptions as _;
        let url = format!("{}?{query}", self.url_with_password());
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a URL");
        match options.connect().await {
            Ok(conn) => {
                let _ = sqlx::Connection::close(conn).await;
                true
            }
            Err(_) => false,
        }
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

/// A throwaway certificate authority made with the `openssl` command (P-256, valid for a day),
/// and the server certificates it issues, in a temporary directory removed on drop.
pub struct TestCa {
    dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what a client trusts.
    pub cert: PathBuf,
    key: PathBuf,
    issued: std::sync::atomic::AtomicU32,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tw-ca-")
            .tempdir()
            .expect("temp dir");
        let cert = dir.path().join("ca.crt");
        let key = dir.path().join("ca.key");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            path_str(&key),
            "-out",
            path_str(&cert),
        ]);
        Self {
            dir,
            cert,
            key,
            issued: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// A new server certificate and key for `names` (`subjectAltName` entries).
    pub fn issue(&self, names: &str) -> (PathBuf, PathBuf) {
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = self.dir.path().join(format!("server-{n}"));
        let (key, csr, cert, ext) = (
            base.with_extension("key"),
            base.with_extension("csr"),
            base.with_extension("crt"),
            base.with_extension("ext"),
        );
        std::fs::write(
            &ext,
            format!(
                "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = serverAuth\nsubjectAltName = {names}\n"
            ),
        )
        .unwrap();
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=tokenwarden test server",
            "-keyout",
            path_str(&key),
            "-out",
            path_str(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            path_str(&csr),
            "-CA",
            path_str(&self.cert),
            "-CAkey",
            path_str(&self.key),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            path_str(&ext),
            "-out",
            path_str(&cert),
        ]);
        (cert, key)
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Runs `openssl ARGS`, failing the test with its output if it fails.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (the TLS tests need the openssl command)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
