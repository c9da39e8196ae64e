//! systemd/: the units pass `systemd-analyze verify`, their exposure stays below 2, their command
//! lines parse, the oneshot shares the daemon's user and sandbox, the timer's schedule, the
//! sysusers user, and credentials reaching the configuration.

#[allow(clippy::wildcard_imports)] // the parent holds this suite's shared runners
use super::*;

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
pub(super) fn exec_start(unit: &str) -> Vec<String> {
    unit_value(unit, "Service", "ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Copies a directory tree, symlinks as symlinks.
pub(super) fn copy_tree(from: &Path, to: &Path) {
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
    // RuntimeDirectory: the token API's socket, which `run --once` does not serve.
    const DAEMON_ONLY: [&str; 11] = [
        "Type",
        "NotifyAccess",
        "WatchdogSec",
        "ExecStart",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
        "TimeoutStopSec",
        "TimeoutStartSec",
        "RuntimeDirectory",
        "RuntimeDirectoryMode",
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
pub(super) fn service_user() -> String {
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
        // systemd hands credentials over as 0400 files.
        crate::harness::write_secret(&credentials.join(id), value);
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
