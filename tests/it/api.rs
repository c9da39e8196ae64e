//! The token API end to end: the daemon serves it on a unix socket, and a real unprivileged user
//! (`nobody`, group `nogroup`, through `runuser`) asks for tokens with `token --socket` and
//! `exec --socket`, which read no configuration. Allowed by user, by group and by the owner
//! rule; refused otherwise with no token on stdout; `min_valid` renews; the database stays
//! unreadable to that user throughout.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backends::count;
use crate::harness::{Home, Run, assert_no_secrets, eventually, finish, stop};
use crate::oauth_server::{OauthServer, clients};

const SCOPE: &str = "openid offline_access api:read";

/// `tokenwarden ARGS` run as `nobody` with an empty environment but PATH and `env`.
fn as_nobody(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("runuser");
    cmd.args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_tokenwarden")])
        .args(args)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn nobody(args: &[&str], env: &[(&str, &str)]) -> Run {
    finish(as_nobody(args, env), "").await
}

async fn access_token(db: &sqlx::SqlitePool, name: &str) -> String {
    sqlx::query_as::<_, (String,)>("SELECT access_token FROM oauth_credential WHERE name = ?")
        .bind(name)
        .fetch_one(db)
        .await
        .unwrap()
        .0
}

/// One raw request on the socket (as this test's user, root); the status and the body.
pub async fn raw(socket: &Path, target: &str) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    stream
        .write_all(
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body.trim()).unwrap())
}

#[tokio::test]
async fn an_unprivileged_user_gets_exactly_the_tokens_the_rules_give_it() {
    let server = OauthServer::start().await;
    // The socket's directory is reachable by anyone (as /run/tokenwarden is); the home with the
    // configuration and the database is root's alone (tempfile makes it 0700).
    let run_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(run_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket: PathBuf = run_dir.path().join("api.sock");
    let home = Home::new(
        &server,
        &format!(
            r#"
[api]
socket = "{}"
owners_read_own = true

[[access]]
credentials = ["shared-*"]
users = ["nobody"]

[[access]]
credentials = ["by-group"]
groups = ["nogroup"]

[[access]]
credentials = ["nobody-else"]
users = ["no-such-user-here"]
"#,
            socket.display()
        ),
    );
    for (name, owner) in [
        ("shared-a", None),
        ("by-group", None),
        ("secret", None),
        ("mine", Some("nobody")),
        ("theirs", Some("root")),
    ] {
        let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
        let mut args = vec!["add", name, "--provider", "basic"];
        if let Some(owner) = owner {
            args.extend(["--owner", owner, "--allow-same-owner"]);
        }
        let run = home.run(&args, &rt).await;
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    // check-config names the rule's unknown user as a warning, and passes.
    let checked = home.run(&["check-config"], "").await;
    assert_eq!(checked.code, Some(0), "{checked:?}");
    assert!(
        checked
            .stderr
            .contains("no user named \"no-such-user-here\""),
        "{checked:?}"
    );

    let daemon = home.command(&["run"]).spawn().unwrap();
    let db = home.db().await;
    eventually(
        Duration::from_secs(30),
        "the first sweep and the socket",
        || async {
            socket.exists()
                && count(
                    &db,
                    "SELECT count(*) FROM oauth_credential WHERE access_token IS NOT NULL",
                )
                .await
                    == 5
        },
    )
    .await;
    let s = socket.to_str().unwrap();

    // Allowed by user, by group, by the owner rule (by name and by provider + owner).
    for name in ["shared-a", "by-group", "mine"] {
        let run = nobody(&["token", name, "--socket", s], &[]).await;
        assert_eq!(run.code, Some(0), "{name}: {run:?}");
        assert_eq!(run.stdout.trim(), access_token(&db, name).await, "{name}");
    }
    let by_owner = nobody(
        &["token", "--provider", "basic", "--owner", "nobody"],
        &[("TOKENWARDEN_SOCKET", s)],
    )
    .await;
    assert_eq!(by_owner.code, Some(0), "{by_owner:?}");
    assert_eq!(by_owner.stdout.trim(), access_token(&db, "mine").await);
    let header = nobody(&["token", "shared-a", "--socket", s, "--header"], &[]).await;
    assert_eq!(
        header.stdout.trim(),
        format!(
            "Authorization: Bearer {}",
            access_token(&db, "shared-a").await
        )
    );

    // Refused: another's personal credential, one no rule grants, one that does not exist (the
    // refused user does not learn that); no token on stdout, exit 4.
    for name in ["theirs", "secret", "no-such-credential", "nobody-else"] {
        let run = nobody(&["token", name, "--socket", s], &[]).await;
        assert_eq!(run.code, Some(4), "{name}: {run:?}");
        assert_eq!(run.stdout, "", "{name}");
        assert_eq!(
            run.stderr.trim(),
            "tokenwarden: error: not allowed",
            "{name}"
        );
    }
    // Root may know that one does not exist: the local command's message.
    let (status, body) = raw(&socket, "/v1/token/no-such-credential").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["reason"], "no credential named \"no-such-credential\"");
    let (status, body) = raw(&socket, "/v1/token/shared-a?colour=red").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = raw(&socket, "/v1/token/shared-a").await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_at"].is_string(), "{body}");

    // min_valid: a token that expires sooner is renewed first, through the daemon.
    let before = access_token(&db, "shared-a").await;
    sqlx::query(
        "UPDATE oauth_credential SET access_token_expires_at = unixepoch() + 30 WHERE name = 'shared-a'",
    )
    .execute(&db)
    .await
    .unwrap();
    let renewed = nobody(
        &["token", "shared-a", "--socket", s, "--min-valid", "90s"],
        &[],
    )
    .await;
    assert_eq!(renewed.code, Some(0), "{renewed:?}");
    let after = access_token(&db, "shared-a").await;
    assert_ne!(before, after, "renewed");
    assert_eq!(renewed.stdout.trim(), after);

    // exec --socket hands the token to the command.
    let exec = nobody(
        &[
            "exec",
            "by-group",
            "--socket",
            s,
            "--",
            "printenv",
            "ACCESS_TOKEN",
        ],
        &[],
    )
    .await;
    assert_eq!(exec.code, Some(0), "{exec:?}");
    assert_eq!(exec.stdout.trim(), access_token(&db, "by-group").await);
    let refused = nobody(
        &[
            "exec",
            "secret",
            "--socket",
            s,
            "--",
            "printenv",
            "ACCESS_TOKEN",
        ],
        &[],
    )
    .await;
    assert_eq!(refused.code, Some(4), "{refused:?}");
    assert_eq!(refused.stdout, "");

    // The database (and its -wal) and the secret files stay out of reach of that user.
    let wal = PathBuf::from(format!("{}-wal", home.db.display()));
    let secret = home.path().join("post-client.secret");
    for path in [&home.db, &wal, &secret] {
        let cat = finish(
            {
                let mut c = tokio::process::Command::new("runuser");
                c.args(["-u", "nobody", "--", "cat"])
                    .arg(path)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                c
            },
            "",
        )
        .await;
        assert_ne!(cat.code, Some(0), "nobody read {}", path.display());
    }

    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(!socket.exists(), "the socket is removed at stop");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("token API: refused"),
        "debug lines at trace level"
    );
    assert!(log.contains("token API: granted"));
    let secrets = crate::backends::stored_secrets(&db).await;
    assert_no_secrets("daemon log", &log, &secrets);
    assert_no_secrets("refused output", &by_owner.stderr, &secrets);
}

#[tokio::test]
async fn a_sink_follows_rotations_by_any_process_and_goes_when_the_token_does() {
    use std::os::unix::fs::MetadataExt;
    let server = OauthServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.token");
    let json = dir.path().join("web.json");
    let home = Home::new(
        &server,
        &format!(
            "[[sink]]\ncredential = \"web\"\npath = \"{}\"\nmode = \"0640\"\ngroup = \"nogroup\"\n\n\
             [[sink]]\ncredential = \"web\"\npath = \"{}\"\nformat = \"json\"\n\n\
             [[sink]]\ncredential = \"web\"\npath = \"/nonexistent-dir/web.token\"\n",
            path.display(),
            json.display()
        ),
    );
    let rt = server.mint_refresh_token(clients::BASIC_ID, SCOPE).await;
    home.add("web", "basic", &rt).await;
    let daemon = home.command(&["run"]).spawn().unwrap();
    let db = home.db().await;
    let holds = |token: String| {
        let path = path.clone();
        async move { std::fs::read_to_string(&path).is_ok_and(|t| t == format!("{token}\n")) }
    };
    eventually(
        Duration::from_secs(30),
        "the sink after the first sweep",
        || async {
            let token = sqlx::query_as::<_, (Option<String>,)>(
                "SELECT access_token FROM oauth_credential WHERE name = 'web'",
            )
            .fetch_one(&db)
            .await
            .unwrap()
            .0;
            match token {
                Some(token) => holds(token).await,
                None => false,
            }
        },
    )
    .await;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!(meta.gid(), 65534, "group nogroup");
    let first = access_token(&db, "web").await;
    // The sinks are written one after another: the JSON one may follow the first by a moment.
    let json_holds = |token: String| {
        let json = json.clone();
        async move {
            std::fs::read_to_string(&json)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .is_some_and(|body| body["access_token"] == token.as_str())
        }
    };
    eventually(
        Duration::from_secs(10),
        "the JSON sink after the first sweep",
        || json_holds(first.clone()),
    )
    .await;

    // Rotated by another process (`refresh`): the sink follows within seconds.
    let refreshed = home.run(&["refresh", "web"], "").await;
    assert_eq!(refreshed.code, Some(0), "{refreshed:?}");
    let second = access_token(&db, "web").await;
    assert_ne!(first, second);
    eventually(
        Duration::from_secs(20),
        "the sink after the rotation",
        || holds(second.clone()),
    )
    .await;

    // No valid token (needs re-authorization): the file goes, so a consumer fails fast.
    sqlx::query("UPDATE oauth_credential SET status = 'needs_reauthorization' WHERE name = 'web'")
        .execute(&db)
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "the sink removed", || async {
        !path.exists() && !json.exists()
    })
    .await;

    let out = stop(daemon).await;
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        log.matches("cannot write the sink").count(),
        1,
        "one line for the unwritable sink: {log}"
    );
    // doctor names the sink it cannot write, and fails.
    let doctor = home.run(&["doctor"], "").await;
    assert_eq!(doctor.code, Some(1), "{doctor:?}");
    assert!(
        doctor
            .stdout
            .contains("/nonexistent-dir/web.token: the directory /nonexistent-dir does not exist"),
        "{doctor:?}"
    );
    let secrets = crate::backends::stored_secrets(&db).await;
    assert_no_secrets("daemon log", &log, &secrets);
    assert_no_secrets("doctor", &doctor.all(), &secrets);
}
