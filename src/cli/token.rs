//! `token` and `exec`: parse which credential, ask `deliver` for its token (renewed there when it
//! expires too soon), print it (or the header) or hand it to a command's environment.

use super::exit::{self, CommandError, Failure};
use super::{RenewArgs, Which};
use crate::daemon;
use crate::deliver::{self, Delivered, Renewer, SetupError, Want};
use crate::domain::Secret;
use crate::startup::Ctx;
use crate::store::{OpenMode, Store};
use crate::sweep::Sweeper;

/// The credential `which` names, as the library asks for it.
pub(super) fn which(which: &Which) -> Result<deliver::Which, CommandError> {
    if let Some(name) = &which.name {
        return Ok(deliver::Which::Name(name.clone()));
    }
    let (Some(provider), Some(owner)) = (&which.provider, &which.owner) else {
        return Err(CommandError::Input(
            "name a credential, or give --provider and --owner".to_owned(),
        ));
    };
    Ok(deliver::Which::Owner {
        provider: provider.clone(),
        owner: owner.clone(),
    })
}

/// A sweeper for the one provider a renewal needs, built only then; while it is in use, a
/// signal does not end the process before the new tokens are stored (as `refresh`).
struct CliRenewer<'a> {
    ctx: &'a Ctx,
    store: &'a Store,
    signals: std::sync::Mutex<Option<tokio_util::sync::CancellationToken>>,
}

impl Renewer for CliRenewer<'_> {
    async fn sweeper(&self, provider: &str) -> Result<Sweeper, SetupError> {
        let sweeper = self
            .ctx
            .sweeper_with(self.store.clone(), Some(provider))
            .await?;
        let guard = daemon::shutdown_on_signals()?;
        *self
            .signals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(guard);
        Ok(sweeper)
    }
}

/// The access token of `which`, valid for at least `--min-valid`: renewed first if need be.
/// Notices (a credential no longer refreshed) go to standard error.
pub(super) async fn fresh_token(
    ctx: &Ctx,
    which_args: &Which,
    args: &RenewArgs,
) -> Result<Delivered, Failure> {
    let which = which(which_args)?;
    let store = ctx.open(OpenMode::MustExist).await?;
    let want = Want {
        min_valid: args.min_valid.unwrap_or(ctx.settings.token_min_valid),
        wait: args.wait,
    };
    let renewer = CliRenewer {
        ctx,
        store: &store,
        signals: std::sync::Mutex::new(None),
    };
    let result = deliver::deliver(&store, &which, &want, &renewer).await;
    store.close().await;
    let delivered = result?;
    for notice in &delivered.notices {
        eprintln!(
            "tokenwarden: warning: credential {} {notice}",
            delivered.state.name
        );
    }
    Ok(delivered)
}

pub(super) async fn token(
    ctx: &Ctx,
    which: &Which,
    args: &RenewArgs,
    header: bool,
) -> Result<u8, Failure> {
    let delivered = fresh_token(ctx, which, args).await?;
    if header {
        println!("{}", delivered.header()?.expose());
    } else {
        println!("{}", delivered.token.expose());
    }
    Ok(exit::OK)
}

/// `exec`'s `--env VAR` and `-- COMMAND ARGS…`, checked before any token is asked for: the
/// program and its arguments.
pub(super) fn command_line<'a>(
    var: &str,
    command: &'a [String],
) -> Result<(&'a String, &'a [String]), CommandError> {
    if !crate::exec::is_variable_name(var) {
        return Err(CommandError::Input(format!(
            "--env {var:?} is not an environment variable name (letters, digits and _)"
        )));
    }
    command
        .split_first()
        .ok_or_else(|| CommandError::Input("no command given after --".to_owned()))
}

pub(super) async fn exec(
    ctx: &Ctx,
    which: &Which,
    args: &RenewArgs,
    var: &str,
    clean: bool,
    command: &[String],
) -> Result<u8, Failure> {
    let (program, command_args) = command_line(var, command)?;
    let delivered = fresh_token(ctx, which, args).await?;
    let instance_url = delivered.state.instance_url.clone().map(Secret::new);
    let mut set = vec![(var, &delivered.token)];
    if let Some(url) = &instance_url {
        set.push(("INSTANCE_URL", url));
    }
    // The child gets this process's environment without the secrets the configuration names
    // (client secrets, sealing keys, the database password, libpq's), tokenwarden's settings, and
    // a stale INSTANCE_URL.
    let mut remove: Vec<&str> =
        ctx.settings
            .secret_variables()
            .into_iter()
            .chain(
                ctx.env.keys().map(String::as_str).filter(|k| {
                    k.starts_with("TOKENWARDEN_") && *k != crate::config::CONFIG_PATH_VAR
                }),
            )
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
