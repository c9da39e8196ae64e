//! The Debian package, built, linted and installed as CI can: `scripts/deb.sh --dev --no-build`
//! packages the debug binaries this test run already built (a release build takes about 20
//! minutes on the project's 2 cores; the package's layout does not depend on the profile), lintian
//! must report no error or warning (each override in debian/lintian-overrides says why), and
//! `dpkg --root` installs it into a throwaway root with `--force-script-chrootless` (the
//! maintainer scripts run on this host with DPKG_ROOT set, and act inside the root only) and
//! `--force-depends` (the root has no libc6 or systemd packages; the tools come from this host).
//! Then: every file is where the units expect it, with the owners and modes the units and README
//! promise; `systemd-analyze verify --root` accepts the installed units; the conffile survives a
//! reinstall with the administrator's edits; purge keeps the state unless
//! TOKENWARDEN_PURGE_STATE=yes.

use std::os::unix::fs::MetadataExt as _;

#[allow(clippy::wildcard_imports)] // the parent holds this suite's shared runners
use super::*;

const PACKAGING_INSTALL: &str = "scripts/test.sh installs them: `cargo install cargo-deb \
--locked`, `apt-get install -y lintian`";

/// Longest the packaging and linting may take.
const PACKAGING_DEADLINE: Duration = Duration::from_mins(5);

/// Runs `cmd` bounded by [`PACKAGING_DEADLINE`] and fails the test unless it exits 0.
fn succeed(what: &str, cmd: &mut Command) -> Ran {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed: {PACKAGING_INSTALL}")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > PACKAGING_DEADLINE {
            let _ = child.kill();
            panic!("{what} did not finish within {PACKAGING_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let ran = Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(ran.code, Some(0), "{what}: {ran:?}");
    ran
}

/// `dpkg` on `root` (its own database), scripts run chrootless, dependencies not enforced.
fn dpkg(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-confold",
            "--log=/dev/null",
        ])
        .env_remove("TOKENWARDEN_PURGE_STATE");
    cmd
}

/// An empty root dpkg can install into.
fn empty_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc",
    ] {
        fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        fs::write(root.path().join(file), "").unwrap();
    }
    root
}

/// The uid and gid `name` has in `root`'s /etc/passwd.
fn ids_in(root: &Path, name: &str) -> (u32, u32) {
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == name)
        .unwrap_or_else(|| panic!("no user {name} in the root's /etc/passwd: {passwd}"));
    assert_eq!(fields[5], "/var/lib/tokenwarden", "{passwd}");
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// (mode, uid, gid) of `path` in `root`.
fn owner_and_mode(root: &Path, path: &str) -> (u32, u32, u32) {
    let meta = fs::metadata(root.join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{path} in the root: {e}"));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

#[test]
fn the_debian_package_lints_installs_and_purges_as_documented() {
    // scripts/deb.sh packages target/debug, which must be this run's build.
    let debug = repo("target/debug/tokenwarden");
    assert_eq!(
        fs::canonicalize(BIN).unwrap(),
        fs::canonicalize(&debug).unwrap_or(debug),
        "scripts/deb.sh --dev packages target/debug/: run the tests without CARGO_TARGET_DIR"
    );
    let out = tempfile::tempdir().unwrap();
    let mut script = Command::new(repo("scripts/deb.sh"));
    script
        .args(["--dev", "--no-build", "--output"])
        .arg(out.path())
        // cargo-deb installed by scripts/test.sh or by hand.
        .env(
            "PATH",
            format!(
                "{}/.cargo/bin:{}",
                std::env::var("HOME").unwrap_or_default(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    succeed("scripts/deb.sh", &mut script);
    let debs: Vec<PathBuf> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];

    let lint = succeed(
        "lintian",
        Command::new("lintian")
            .args(["--no-cfg", "--fail-on", "error,warning"])
            .arg(deb),
    );
    for line in lint.stdout.lines() {
        assert!(
            !(line.starts_with("E: ") || line.starts_with("W: ")),
            "lintian: {line}"
        );
    }

    let root = empty_root();
    let r = root.path();
    succeed("dpkg -i", dpkg(r).arg("-i").arg(deb));

    // The units, and what they name.
    let units = r.join("lib/systemd/system");
    for unit in UNITS {
        assert_eq!(
            fs::read_to_string(units.join(unit)).unwrap(),
            read(&format!("systemd/{unit}")),
            "{unit} as in systemd/"
        );
    }
    let exec = super::systemd::exec_start(DAEMON_UNIT);
    assert_eq!(exec[0], "/usr/bin/tokenwarden");
    assert_eq!(owner_and_mode(r, &exec[0]), (0o755, 0, 0));
    let config = exec
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .expect("--config in ExecStart");
    assert_eq!(config, "/etc/tokenwarden/tokenwarden.toml");

    // The user and group (sysusers.d), the directories (tmpfiles.d), the conffile's owner.
    let (uid, gid) = ids_in(r, &super::systemd::service_user());
    assert!(uid > 0 && gid > 0);
    assert_eq!(
        owner_and_mode(r, "/var/lib/tokenwarden"),
        (0o700, uid, gid),
        "StateDirectoryMode=0700"
    );
    assert_eq!(owner_and_mode(r, "/etc/tokenwarden"), (0o750, 0, gid));
    assert_eq!(owner_and_mode(r, "/run/tokenwarden"), (0o750, uid, gid));
    assert_eq!(owner_and_mode(r, &config), (0o640, 0, gid));
    let conffiles = fs::read_to_string(r.join("var/lib/dpkg/info/tokenwarden.conffiles")).unwrap();
    assert_eq!(conffiles.trim(), config);
    let packaged = fs::read_to_string(r.join(config.trim_start_matches('/'))).unwrap();
    assert_eq!(
        packaged,
        read("config/tokenwarden.example.toml").replacen(
            "# database = \"/var/lib/tokenwarden/tokenwarden.db\"",
            "database = \"/var/lib/tokenwarden/tokenwarden.db\"",
            1
        ),
        "the example, with database set"
    );
    for file in [
        "usr/lib/sysusers.d/tokenwarden.conf",
        "usr/lib/tmpfiles.d/tokenwarden.conf",
        "usr/share/man/man1/tokenwarden.1.gz",
        "usr/share/man/man1/tokenwarden-run.1.gz",
        "usr/share/man/man5/tokenwarden.toml.5.gz",
        "usr/share/bash-completion/completions/tokenwarden",
        "usr/share/zsh/vendor-completions/_tokenwarden",
        "usr/share/fish/vendor_completions.d/tokenwarden.fish",
        "usr/share/doc/tokenwarden/copyright",
        "usr/share/doc/tokenwarden/examples/tokenwarden.example.toml",
    ] {
        assert!(r.join(file).is_file(), "{file} not installed");
    }
    // The installed binary accepts the installed configuration.
    succeed(
        "the installed check-config",
        Command::new(r.join("usr/bin/tokenwarden"))
            .arg("--config")
            .arg(r.join(config.trim_start_matches('/')))
            .arg("check-config")
            .env_clear(),
    );

    // systemd-analyze verify on the installed units (the system's own units for the defaults).
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .unwrap_or_else(|| panic!("no systemd unit directory: {SYSTEMD_INSTALL}"));
    super::systemd::copy_tree(system_units, &r.join("usr/lib/systemd/system"));
    let verify = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", r.display()))
            .args(UNITS),
        "",
        SYSTEMD_INSTALL,
    );
    assert_eq!(verify.code, Some(0), "systemd-analyze verify: {verify:?}");
    assert!(verify.output().trim().is_empty(), "{verify:?}");

    // A reinstall keeps the administrator's configuration.
    let edited = format!("{packaged}\n# edited by the administrator\n");
    fs::write(r.join(config.trim_start_matches('/')), &edited).unwrap();
    succeed("dpkg -i again", dpkg(r).arg("-i").arg(deb));
    assert_eq!(
        fs::read_to_string(r.join(config.trim_start_matches('/'))).unwrap(),
        edited
    );

    // Purge keeps the state unless asked.
    let db = r.join("var/lib/tokenwarden/tokenwarden.db");
    fs::write(&db, "state").unwrap();
    let purged = succeed("dpkg --purge", dpkg(r).args(["--purge", "tokenwarden"]));
    assert!(db.exists(), "purge removed the state: {purged:?}");
    assert!(
        purged.stderr.contains("TOKENWARDEN_PURGE_STATE=yes"),
        "{purged:?}"
    );
    assert!(
        !r.join("etc/tokenwarden").exists(),
        "the configuration stays after purge"
    );
    assert!(!r.join("usr/bin/tokenwarden").exists());
    succeed("dpkg -i after purge", dpkg(r).arg("-i").arg(deb));
    succeed(
        "dpkg --purge with TOKENWARDEN_PURGE_STATE=yes",
        dpkg(r)
            .args(["--purge", "tokenwarden"])
            .env("TOKENWARDEN_PURGE_STATE", "yes"),
    );
    assert!(
        !r.join("var/lib/tokenwarden").exists(),
        "the state was asked to go"
    );
}
