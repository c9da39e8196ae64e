//! The /etc/cron.d example: one sweep as the service user, silent when all is well, mail on failure.

use super::systemd::{exec_start, service_user};
#[allow(clippy::wildcard_imports)] // the parent holds this suite's shared runners
use super::*;

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
    crate::harness::write_secret(&secret, "client-secret-value\n");
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
