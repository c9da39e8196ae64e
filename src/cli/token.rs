//! `token` and `exec`: the credential asked for (by name, or by owner), its access token renewed
//! first when it expires too soon, printed (or as a header) or handed to a command's environment.

use super::exit::{self, CommandError};
use super::{RenewArgs, Which, header};
use crate::daemon;
use crate::domain::{self, Secret, Status};
use crate::renew::{self, Renewal};
use crate::startup::Ctx;
use crate::store::{OpenMode, Store, TokenState};

/// The credential `which` names: by name, or the one credential of its owner at the provider.
pub(super) async fn which_name(store: &Store, which: &Which) -> anyhow::Result<String> {
    if let Some(name) = &which.name {
        return Ok(name.clone());
    }
    let (Some(provider), Some(owner)) = (&which.provider, &which.owner) else {
        return Err(CommandError::Input(
            "name a credential, or give --provider and --owner".to_owned(),
        )
        .into());
    };
    let mut names = store.owned_by(provider, owner).await?;
    match names.len() {
        0 => Err(CommandError::NoOwnerCredential {
            provider: provider.clone(),
            owner: owner.clone(),
        }
        .into()),
        1 => Ok(names.remove(0)),
        _ => Err(CommandError::Ambiguous {
            provider: provider.clone(),
            owner: owner.clone(),
            names,
        }
        .into()),
    }
}

/// The access token of `which`, valid for at least `--min-valid`: renewed first if need be.
pub(super) async fn fresh_token(
    ctx: &Ctx,
    which: &Which,
    args: &RenewArgs,
) -> anyhow::Result<TokenState> {
    let store = ctx.open(OpenMode::MustExist).await?;
    let result = fresh_from(ctx, &store, which, args).await;
    store.close().await;
    let state = result?;
    // One line, nothing a terminal would act on: a value from an older version, or written by
    // another program, that fails the rule is neither printed nor handed to a command.
    if let Some(token) = &state.access_token
        && let Err(flaw) = crate::untrusted::check_token(token.expose())
    {
        return Err(CommandError::UnprintableToken {
            name: state.name,
            flaw,
        }
        .into());
    }
    Ok(state)
}

pub(super) async fn fresh_from(
    ctx: &Ctx,
    store: &Store,
    which: &Which,
    args: &RenewArgs,
) -> anyhow::Result<TokenState> {
    let name = which_name(store, which).await?;
    let state = store
        .token_state(&name)
        .await?
        .ok_or_else(|| CommandError::UnknownCredential(name.clone()))?;
    let min_valid = args.min_valid.unwrap_or(ctx.settings.token_min_valid);
    let min_secs = i64::try_from(min_valid.as_secs()).unwrap_or(i64::MAX);
    let now = domain::now();
    let state = if renew::fresh_enough(&state, now, min_secs) {
        state
    } else if state.status != Status::Active {
        return Err(CommandError::NoValidToken {
            name,
            status: state.status.as_str().to_owned(),
            expires_at: state.access_token_expires_at,
        }
        .into());
    } else {
        let sweeper = ctx
            .sweeper_with(store.clone(), Some(&state.provider))
            .await?;
        // As `refresh`: a signal mid-request must not end the process before the new tokens are
        // stored.
        let _signals = daemon::shutdown_on_signals()?;
        let failed = |reason: String| CommandError::RenewalFailed {
            name: name.clone(),
            reason,
        };
        match renew::renew(&sweeper, &name, min_secs, args.wait).await? {
            Renewal::Fresh(state) => state,
            Renewal::NotFound => return Err(CommandError::UnknownCredential(name).into()),
            Renewal::NotActive(state) => {
                return Err(CommandError::NoValidToken {
                    name,
                    status: state.status.as_str().to_owned(),
                    expires_at: state.access_token_expires_at,
                }
                .into());
            }
            Renewal::Failed { state, .. } => {
                let why = state
                    .last_error
                    .unwrap_or_else(|| "see `tokenwarden status`".to_owned());
                return Err(failed(why).into());
            }
            Renewal::TooShort(state) => {
                let until = domain::iso8601(state.access_token_expires_at.unwrap_or(now));
                return Err(failed(format!(
                    "the provider's new access token is valid until {until}, less than --min-valid {}",
                    humantime::format_duration(min_valid)
                ))
                .into());
            }
            Renewal::BackingOff(state) => {
                return Err(failed(format!(
                    "an earlier attempt failed ({}); not tried again before {}",
                    state
                        .last_error
                        .as_deref()
                        .unwrap_or("see `tokenwarden status`"),
                    domain::iso8601(state.next_attempt_at)
                ))
                .into());
            }
            Renewal::GaveUp { waited } => {
                return Err(failed(format!(
                    "another process is refreshing it; gave up waiting after {}s (--wait)",
                    waited.as_secs()
                ))
                .into());
            }
        }
    };
    if state.status != Status::Active {
        // Still valid, but the credential will not be refreshed: say so where scripts don't read.
        eprintln!(
            "tokenwarden: warning: credential {name} is {}; this access token is not renewed after {}",
            state.status,
            domain::iso8601(state.access_token_expires_at.unwrap_or(now))
        );
    }
    Ok(state)
}

pub(super) async fn token(
    ctx: &Ctx,
    which: &Which,
    args: &RenewArgs,
    header: bool,
) -> anyhow::Result<u8> {
    let state = fresh_token(ctx, which, args).await?;
    let Some(token) = &state.access_token else {
        return Err(CommandError::UnknownCredential(state.name).into());
    };
    if header {
        let line =
            header::authorization_header(state.token_type.as_deref(), token).map_err(|why| {
                CommandError::Unusable {
                    name: state.name.clone(),
                    why,
                }
            })?;
        println!("{}", line.expose());
    } else {
        println!("{}", token.expose());
    }
    Ok(exit::OK)
}

pub(super) async fn exec(
    ctx: &Ctx,
    which: &Which,
    args: &RenewArgs,
    var: &str,
    clean: bool,
    command: &[String],
) -> anyhow::Result<u8> {
    if !crate::exec::is_variable_name(var) {
        return Err(CommandError::Input(format!(
            "--env {var:?} is not an environment variable name (letters, digits and _)"
        ))
        .into());
    }
    let Some((program, command_args)) = command.split_first() else {
        return Err(CommandError::Input("no command given after --".to_owned()).into());
    };
    let state = fresh_token(ctx, which, args).await?;
    let Some(token) = &state.access_token else {
        return Err(CommandError::UnknownCredential(state.name).into());
    };
    let instance_url = state.instance_url.clone().map(Secret::new);
    let mut set = vec![(var, token)];
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
