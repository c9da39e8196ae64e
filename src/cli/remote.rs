//! `token --socket` and `exec --socket`: the token from the daemon's token API instead of the
//! database, for a user who may read neither the configuration's secrets nor the database. No
//! configuration is read; output and exit codes are those of the local commands.

use std::path::Path;

use super::exit::{self, Failure};
use super::{RenewArgs, Which};
use crate::api::client::{self, Answer};
use crate::domain::Secret;

/// Longest a request to the API may take beyond `--wait`.
const SLACK: std::time::Duration = std::time::Duration::from_secs(30);

async fn fetch(socket: &Path, which: &Which, args: &RenewArgs) -> Result<Answer, Failure> {
    let which = super::token::which(which)?;
    let route = client::route(&which, args.min_valid, args.wait);
    let answer = client::fetch(socket, &route, args.wait + SLACK).await?;
    for notice in &answer.notices {
        eprintln!(
            "tokenwarden: warning: {}",
            crate::untrusted::Escaped(notice)
        );
    }
    Ok(answer)
}

pub(super) async fn token(
    socket: &Path,
    which: &Which,
    args: &RenewArgs,
    header: bool,
) -> Result<u8, Failure> {
    let answer = fetch(socket, which, args).await?;
    if header {
        println!("{}", answer.header()?.expose());
    } else {
        println!("{}", answer.token.expose());
    }
    Ok(exit::OK)
}

pub(super) async fn exec(
    socket: &Path,
    which: &Which,
    args: &RenewArgs,
    var: &str,
    clean: bool,
    command: &[String],
) -> Result<u8, Failure> {
    let (program, command_args) = super::token::command_line(var, command)?;
    let answer = fetch(socket, which, args).await?;
    let instance_url = answer.instance_url.clone().map(Secret::new);
    let mut set = vec![(var, &answer.token)];
    if let Some(url) = &instance_url {
        set.push(("INSTANCE_URL", url));
    }
    let env = crate::startup::environment();
    // Without a configuration there are no secrets named in it to remove; libpq's password
    // variables go, tokenwarden's own, and a stale INSTANCE_URL (with --clean-env, everything
    // but PATH, HOME and LANG).
    let mut remove: Vec<&str> = env
        .keys()
        .map(String::as_str)
        .filter(|k| {
            k.starts_with("TOKENWARDEN_")
                && *k != crate::config::CONFIG_PATH_VAR
                && *k != crate::config::SOCKET_VAR
        })
        .chain(crate::config::LIBPQ_SECRET_VARS)
        .collect();
    if instance_url.is_none() {
        remove.push("INSTANCE_URL");
    }
    let child = crate::exec::Child {
        program,
        args: command_args,
        set,
        remove,
        clean,
    };
    Ok(crate::exec::run(&child).await?)
}
