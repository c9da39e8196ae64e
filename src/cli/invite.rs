//! `invite`: make a one-time link for an owner to authorize (or re-authorize) a credential in a
//! browser, list the outstanding links, revoke one. The link goes alone to standard output.

use std::time::Duration;

use super::InviteArgs;
use super::credentials::check_input;
use super::exit::{self, CommandError, Failure};
use crate::config::EnrollSettings;
use crate::domain::{self, iso8601};
use crate::enroll::invite::{LinkRequest, make_link};
use crate::startup::Ctx;
use crate::store::{Invite, InviteState, OpenMode};
use crate::untrusted::Escaped;

/// What `invite` was asked.
#[derive(Debug)]
enum InviteAction<'a> {
    Make {
        name: &'a str,
        provider: &'a str,
        owner: &'a str,
        scopes: Option<&'a str>,
        valid: Option<Duration>,
    },
    List {
        json: bool,
    },
    Revoke(i64),
}

pub(super) async fn invite(ctx: &Ctx, args: &InviteArgs) -> Result<u8, Failure> {
    let action = match (
        args.revoke,
        args.list,
        &args.name,
        &args.provider,
        &args.owner,
    ) {
        (Some(id), ..) => InviteAction::Revoke(id),
        (None, true, ..) => InviteAction::List { json: args.json },
        (None, false, Some(name), Some(provider), Some(owner)) => InviteAction::Make {
            name,
            provider,
            owner,
            scopes: args.scopes.as_deref(),
            valid: args.valid,
        },
        _ => {
            return Err(CommandError::Input(
                "invite needs NAME, --provider and --owner (or --list, or --revoke ID)".to_owned(),
            )
            .into());
        }
    };
    run(ctx, action).await
}

async fn run(ctx: &Ctx, action: InviteAction<'_>) -> Result<u8, Failure> {
    let settings = enroll_settings(ctx)?;
    match action {
        InviteAction::Make {
            name,
            provider,
            owner,
            scopes,
            valid,
        } => {
            check_input(name, Some(owner), scopes)?;
            if !ctx.settings.providers.contains_key(provider) {
                let known = ctx.settings.providers.keys().cloned().collect();
                return Err(CommandError::UnknownProvider {
                    name: provider.to_owned(),
                    known,
                }
                .into());
            }
            let valid = valid.unwrap_or(settings.link_valid);
            if valid < Duration::from_mins(1) || valid > Duration::from_hours(30 * 24) {
                return Err(
                    CommandError::Input("--valid must be between 1m and 30d".to_owned()).into(),
                );
            }
            let store = ctx.open_checked(OpenMode::CreateIfMissing).await?;
            let link = make_link(
                &store,
                settings.base_url(),
                &LinkRequest {
                    name,
                    provider,
                    owner,
                    scopes,
                    valid_secs: i64::try_from(valid.as_secs()).unwrap_or(i64::MAX),
                },
                domain::now(),
            )
            .await?;
            store.close().await;
            eprintln!(
                "link {} for {} to {} credential {name} (provider {provider}), valid until {}; send it to the owner, it works once:",
                link.invite.id,
                Escaped(owner),
                if link.invite.reauthorize {
                    "re-authorize"
                } else {
                    "authorize"
                },
                iso8601(link.invite.expires_at),
            );
            println!("{}", link.url.expose());
            Ok(exit::OK)
        }
        InviteAction::List { json } => {
            let store = ctx.open(OpenMode::MustExist).await?;
            let invites = store.outstanding_invites(None, domain::now()).await?;
            if json {
                // Serializing plain structs of strings and integers cannot fail.
                println!(
                    "{}",
                    serde_json::to_string_pretty(&invites).unwrap_or_default()
                );
            } else {
                print!("{}", invite_table(&invites));
            }
            Ok(exit::OK)
        }
        InviteAction::Revoke(id) => {
            let store = ctx.open(OpenMode::MustExist).await?;
            let now = domain::now();
            match store.revoke_invite(id, now).await? {
                None => Err(CommandError::Input(format!("no link with id {id}")).into()),
                Some((invite, true)) => {
                    println!("link {id} for credential {} revoked", invite.name);
                    Ok(exit::OK)
                }
                Some((invite, false)) => {
                    let state = match invite.state(now) {
                        InviteState::Spent => "used",
                        InviteState::Revoked => "revoked",
                        InviteState::Expired | InviteState::Usable => "expired",
                    };
                    println!(
                        "link {id} for credential {} was already {state}",
                        invite.name
                    );
                    Ok(exit::OK)
                }
            }
        }
    }
}

fn enroll_settings(ctx: &Ctx) -> Result<&EnrollSettings, CommandError> {
    ctx.settings.enroll.as_ref().ok_or_else(|| {
        CommandError::Input(
            "invitations need an [enroll] table with public_url in the configuration".to_owned(),
        )
    })
}

/// The outstanding links as a table (names and owners escaped).
fn invite_table(invites: &[Invite]) -> String {
    use std::fmt::Write as _;
    if invites.is_empty() {
        return "no outstanding links\n".to_owned();
    }
    let mut out = format!(
        "{:<6} {:<24} {:<14} {:<28} {:<15} {}\n",
        "ID", "NAME", "PROVIDER", "OWNER", "KIND", "EXPIRES"
    );
    for i in invites {
        let _ = writeln!(
            out,
            "{:<6} {:<24} {:<14} {:<28} {:<15} {}",
            i.id,
            Escaped(&i.name).to_string(),
            Escaped(&i.provider).to_string(),
            Escaped(&i.owner).to_string(),
            if i.reauthorize {
                "reauthorize"
            } else {
                "authorize"
            },
            iso8601(i.expires_at)
        );
    }
    out
}
