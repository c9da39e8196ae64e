//! Files another user controls: a world-writable configuration file (it names programs to run and
//! where secrets go), a database file pre-created by another user in a shared sticky directory
//! (`nobody`, mode 0666: they would read every token written to it), a `-wal` of another user, a
//! database anyone may write to; and encryption key files (group-writable: a warning; 32 raw
//! bytes: accepted; anything else: refused, naming the formats).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use crate::harness::{Home, Run};
use crate::oauth_server::OauthServer;

/// One line on standard error, nothing on standard output.
fn assert_one_line(run: &Run, code: i32, says: &str) {
    assert_eq!(run.code, Some(code), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains(says), "{run:?}");
    assert!(!run.all().contains("panicked"), "{run:?}");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `script` with `sh -c` as the user `nobody`, umask 0.
fn as_nobody(script: &str) {
    let status = std::process::Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            "sh",
            "-c",
            &format!("umask 0 && {script}"),
        ])
        .status()
        .expect("runuser");
    assert!(status.success(), "as nobody: {script}");
}

#[tokio::test]
async fn a_world_writable_configuration_file_is_refused() {
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    chmod(&home.config, 0o666);
    for args in [&["check-config"][..], &["run", "--once"], &["status"]] {
        let run = home.run(args, "").await;
        assert_one_line(&run, 2, "anyone may write to it (mode 0666)");
    }
    assert!(!home.db.exists(), "nothing was opened");
    chmod(&home.config, 0o644);
    let run = home.run(&["check-config"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
}

#[tokio::test]
async fn a_database_another_user_pre_created_is_refused_and_left_empty() {
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    // A shared directory, as /tmp is: anyone may create files in it, only their owner remove them.
    chmod(home.path(), 0o755);
    let shared = home.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let planted = shared.join("tokenwarden.db");
    as_nobody(&format!("touch '{}'", planted.display()));
    assert_eq!(std::fs::metadata(&planted).unwrap().mode() & 0o777, 0o666);
    let config = std::fs::read_to_string(&home.config).unwrap();
    std::fs::write(
        &home.config,
        config.replacen(
            &format!("database = \"{}\"", home.db.display()),
            &format!("database = \"{}\"", planted.display()),
            1,
        ),
    )
    .unwrap();
    for args in [&["run", "--once"][..], &["status"]] {
        let run = home.run(args, "").await;
        assert_one_line(&run, 3, "belongs to another user (uid 65534)");
    }
    let add = home
        .run(
            &["add", "victim", "--provider", "basic"],
            "rt-planted-canary-1",
        )
        .await;
    assert_one_line(&add, 3, "belongs to another user");
    assert_eq!(
        std::fs::metadata(&planted).unwrap().len(),
        0,
        "nothing written"
    );
    assert!(!shared.join("tokenwarden.db-wal").exists());
}

#[tokio::test]
async fn a_wal_of_another_user_or_a_database_anyone_may_write_is_refused() {
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    home.add("mine", "basic", "rt-wal-canary-0001").await;
    let run = home.run(&["status"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");

    // Another user's -wal beside it (SQLite would read its frames as the database's).
    chmod(home.path(), 0o1777);
    let wal = format!("{}-wal", home.db.display());
    let _ = std::fs::remove_file(&wal);
    as_nobody(&format!("touch '{wal}'"));
    let run = home.run(&["status"], "").await;
    assert_one_line(&run, 3, "-wal belongs to another user");
    std::fs::remove_file(&wal).unwrap();
    chmod(home.path(), 0o700);

    chmod(&home.db, 0o666);
    let run = home.run(&["status"], "").await;
    assert_one_line(&run, 3, "anyone may write to");
    chmod(&home.db, 0o600);
    let run = home.run(&["status"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
}

#[tokio::test]
async fn key_files_group_writable_warned_raw_bytes_accepted_others_refused_naming_formats() {
    let server = OauthServer::start().await;
    let home = Home::new(&server, "");
    let key = home.path().join("encryption.key");
    let config = std::fs::read_to_string(&home.config).unwrap();
    std::fs::write(
        &home.config,
        config.replacen(
            "[log]",
            &format!("[encryption]\nkey_file = \"{}\"\n\n[log]", key.display()),
            1,
        ),
    )
    .unwrap();

    // 32 raw bytes, a newline byte last: `head -c 32 /dev/urandom > key` may end so.
    let raw: [u8; 32] = std::array::from_fn(|i| if i == 31 { b'\n' } else { 0x80 | i as u8 });
    std::fs::write(&key, raw).unwrap();
    chmod(&key, 0o400);
    let run = home.run(&["check-config"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(!run.stderr.contains("WARN"), "{run:?}");

    chmod(&key, 0o620);
    let run = home.run(&["check-config"], "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.all()
            .contains("accessible to group or others (mode 0620)"),
        "{run:?}"
    );

    std::fs::write(&key, [0xff_u8; 31]).unwrap();
    chmod(&key, 0o400);
    let run = home.run(&["check-config"], "").await;
    assert_one_line(&run, 2, "or in a file also the 32 raw bytes");
}
