//! `exec` against a command that prints its whole environment (`env`): none of the secrets the
//! configuration names (client secrets, the sealing keys current and retired, the PostgreSQL
//! password) nor libpq's PGPASSWORD/PGPASSFILE reach it; `--clean-env` hands over PATH, HOME,
//! LANG and the token only.

use crate::harness::{Home, finish};
use crate::oauth_server::{OauthServer, clients};

const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OLD_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const PG_PASSWORD: &str = "pg-password-canary-61";
const LIBPQ_PASSWORD: &str = "libpq-password-canary-62";

const SECRET_VARS: [(&str, &str); 7] = [
    ("TW_TEST_BASIC_SECRET", clients::BASIC_SECRET),
    ("TW_TEST_CC_SECRET", clients::CC_SECRET),
    ("TW_KEY", KEY),
    ("TW_OLD_KEY", OLD_KEY),
    ("TW_PG_PASSWORD", PG_PASSWORD),
    ("PGPASSWORD", LIBPQ_PASSWORD),
    ("PGPASSFILE", "/nonexistent/pgpass-canary"),
];

async fn env_of_child(home: &Home, args: &[&str]) -> Vec<(String, String)> {
    let mut cmd = home.command(args);
    for (var, value) in SECRET_VARS {
        cmd.env(var, value);
    }
    cmd.env("HOME", "/home/canary-home")
        .env("LANG", "C.UTF-8")
        .env("UNRELATED", "kept-unless-clean");
    let run = finish(cmd, "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    for (_, value) in SECRET_VARS {
        assert!(
            !run.all().contains(value),
            "the child saw a secret: {run:?}"
        );
    }
    run.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn exec_hands_no_configured_secret_to_the_child() {
    let server = OauthServer::start().await;
    let home = Home::new(
        &server,
        "[encryption]\nkey_env = \"TW_KEY\"\nretired_key_envs = [\"TW_OLD_KEY\"]\n\n\
         [postgres]\npassword_env = \"TW_PG_PASSWORD\"\n",
    );
    let minted = server
        .mint(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    let mut add = home.command(&["add", "web", "--provider", "basic"]);
    add.env("TW_KEY", KEY).env("TW_OLD_KEY", OLD_KEY);
    let added = finish(add, &minted.refresh_token).await;
    assert_eq!(added.code, Some(0), "{added:?}");

    let env = env_of_child(&home, &["exec", "web", "--", "env"]).await;
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    for (var, _) in SECRET_VARS {
        assert!(!names.contains(&var), "{var} reached the child: {names:?}");
    }
    assert!(names.contains(&"ACCESS_TOKEN"), "{names:?}");
    assert!(
        names.contains(&"UNRELATED"),
        "the rest is inherited: {names:?}"
    );

    let env = env_of_child(&home, &["exec", "web", "--clean-env", "--", "env"]).await;
    let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ACCESS_TOKEN", "HOME", "LANG", "PATH"]);
    let token = &env.iter().find(|(k, _)| k == "ACCESS_TOKEN").unwrap().1;
    assert!(!token.is_empty());
}
