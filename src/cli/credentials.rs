//! The commands that bring credentials in and take them out: `add`, `authorize` (browser or
//! device), `revoke`, `rekey`; and the checks on what a user types for them.

use std::path::Path;
use std::time::Duration;

use tracing::warn;

use super::exit::{self, CommandError, Failure};
use super::{AddArgs, GrantArg};
use crate::doctor;
use crate::domain::{self, GrantType, Secret};
use crate::enroll;
use crate::lifecycle::{self, authorize::Prompt};
use crate::provider::Provider;
use crate::startup::Ctx;
use crate::store::{NewCredential, OpenMode, Target};
use crate::sweep::Revoked;
use crate::untrusted::Escaped;

pub(super) async fn add(ctx: &Ctx, args: &AddArgs) -> Result<u8, Failure> {
    let grant_type = match args.grant {
        GrantArg::RefreshToken => GrantType::RefreshToken,
        GrantArg::ClientCredentials => GrantType::ClientCredentials,
        GrantArg::JwtBearer => GrantType::JwtBearer,
    };
    let mut new = NewCredential {
        name: &args.name,
        provider: &args.provider,
        grant_type,
        scopes: args.scopes.as_deref(),
        owner: args.owner.as_deref(),
        refresh_token: None,
        // The assertion's subject: --subject, else the owner (a user name, say), else none.
        subject: (grant_type == GrantType::JwtBearer)
            .then(|| args.subject.as_deref().or(args.owner.as_deref()))
            .flatten(),
    };
    check_input(new.name, new.owner, new.scopes)?;
    let Some(provider) = ctx.settings.providers.get(new.provider) else {
        let known = ctx.settings.providers.keys().cloned().collect();
        return Err(CommandError::UnknownProvider {
            name: new.provider.to_owned(),
            known,
        }
        .into());
    };
    if args.subject.is_some() && grant_type != GrantType::JwtBearer {
        return Err(
            CommandError::Input("--subject goes with --grant jwt-bearer".to_owned()).into(),
        );
    }
    if grant_type == GrantType::JwtBearer && provider.private_key_file.is_none() {
        return Err(CommandError::Input(format!(
            "provider {} has no private_key_file to sign jwt-bearer assertions with",
            new.provider
        ))
        .into());
    }
    let refresh_token = match new.grant_type {
        GrantType::RefreshToken => Some(read_refresh_token(args.refresh_token_file.as_deref())?),
        GrantType::ClientCredentials | GrantType::JwtBearer => None,
    };
    new.refresh_token = refresh_token.as_ref();
    let store = ctx.open_checked(OpenMode::CreateIfMissing).await?;
    if let Some(owner) = new.owner
        && !args.allow_same_owner
    {
        store
            .ensure_owner_free(new.provider, owner, new.name)
            .await?;
    }
    store.add(&new, args.replace, domain::now()).await?;
    store.close().await;
    println!(
        "credential {} added; it is refreshed on the next sweep",
        new.name
    );
    Ok(exit::OK)
}

pub(super) async fn authorize(ctx: &Ctx, args: AuthorizeArgs<'_>) -> Result<u8, Failure> {
    check_input(args.name, args.owner, args.scopes)?;
    let Some(provider_settings) = ctx.settings.providers.get(args.provider) else {
        let known = ctx.settings.providers.keys().cloned().collect();
        return Err(CommandError::UnknownProvider {
            name: args.provider.to_owned(),
            known,
        }
        .into());
    };
    let refresher = ctx.refresher()?;
    let transport = refresher.transport();
    let provider = Provider::resolve(args.provider, provider_settings, &ctx.env, transport).await?;
    for warning in &provider.warnings {
        warn!("{warning}");
    }
    let store = ctx.open_checked(OpenMode::CreateIfMissing).await?;
    if let Some(owner) = args.owner
        && !args.allow_same_owner
    {
        // Before the browser: nobody signs in for a credential that would be refused.
        store
            .ensure_owner_free(args.provider, owner, args.name)
            .await?;
    }
    let target = enroll::Target {
        name: args.name,
        provider: &provider.name,
        scopes: args.scopes,
        owner: args.owner,
        policy: &ctx.policy,
    };
    if args.device {
        let request = lifecycle::authorize::DeviceRequest {
            provider: &provider,
            scopes: args.scopes,
            timeout: args.timeout.unwrap_or(Duration::MAX),
        };
        let show = |prompt: &lifecycle::device::UserPrompt| {
            // The provider's words, escaped: nothing in them may act on the terminal.
            eprintln!(
                "tokenwarden: on any device with a browser, open {} and enter the code {} (valid for {}){}",
                Escaped(&prompt.verification_uri),
                Escaped(&prompt.user_code),
                humantime::format_duration(prompt.expires_in),
                if prompt.verification_uri_complete.is_some() {
                    ", or open this URL, which carries the code:"
                } else {
                    ":"
                }
            );
            println!(
                "{}",
                Escaped(
                    prompt
                        .verification_uri_complete
                        .as_deref()
                        .unwrap_or(&prompt.verification_uri)
                )
            );
        };
        let result = enroll::authorize_device(&store, transport, &request, &target, show).await;
        store.close().await;
        return Ok(report_authorized(args.name, &result?));
    }
    let timeout = args.timeout.unwrap_or(AUTHORIZE_TIMEOUT);
    let request = lifecycle::authorize::Request {
        name: args.name,
        provider: &provider,
        redirect_uri: provider.redirect_uri.as_deref(),
        scopes: args.scopes,
        manual: args.manual,
        timeout,
    };
    let show = |prompt: &Prompt| {
        let how = match (prompt.listening, prompt.reading_stdin) {
            (true, false) => format!("waiting for the redirect to {}", prompt.redirect_uri),
            (true, true) => format!(
                "waiting for the redirect to {}, or paste the URL the browser ends on (or just its code) here",
                prompt.redirect_uri
            ),
            (false, _) => "paste the URL the browser ends on (or just its code) here".to_owned(),
        };
        eprintln!(
            "tokenwarden: open this URL in a browser and sign in; {how} (timeout {}):",
            humantime::format_duration(timeout)
        );
        println!("{}", prompt.url);
    };
    let result = enroll::authorize(&store, transport, &request, &target, show).await;
    store.close().await;
    Ok(report_authorized(args.name, &result?))
}

/// `authorize`'s arguments.
pub(super) struct AuthorizeArgs<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub owner: Option<&'a str>,
    pub scopes: Option<&'a str>,
    pub manual: bool,
    pub device: bool,
    pub timeout: Option<Duration>,
    pub allow_same_owner: bool,
}

/// How long `authorize` waits for a redirect by default.
pub(super) const AUTHORIZE_TIMEOUT: Duration = Duration::from_mins(5);

/// Says how an authorization ended: on standard output, and a warning when it cannot be kept.
pub(super) fn report_authorized(name: &str, done: &enroll::Authorization) -> u8 {
    if !done.has_refresh_token {
        eprintln!(
            "tokenwarden: warning: no refresh token returned: add offline_access to the scopes (or the provider's equivalent) and authorize {name} again; until then it cannot be refreshed"
        );
    }
    let again = match &done.how {
        enroll::AuthorizedAs::Created => String::new(),
        enroll::AuthorizedAs::Replaced { status, .. } => {
            format!(" again (was {status})")
        }
    };
    println!(
        "credential {name} authorized{again}; access token valid until {}",
        domain::iso8601(done.expires_at)
    );
    exit::OK
}

pub(super) async fn revoke(ctx: &Ctx, name: &str) -> Result<u8, Failure> {
    let sweeper = ctx.sweeper(OpenMode::MustExist).await?;
    let result = sweeper.revoke_named(name).await;
    sweeper.store().close().await;
    let name = Escaped(name);
    match result? {
        Revoked::Done => {
            println!("credential {name} revoked at the provider and deleted");
            Ok(exit::OK)
        }
        Revoked::Pending { reason } => {
            eprintln!(
                "tokenwarden: credential {name} is not revoked yet ({reason}); it is disabled, and the revocation is sent again by the sweep or by running `tokenwarden revoke {name}` again"
            );
            Ok(exit::REFRESH_FAILED)
        }
    }
}

/// Brings every stored token under the current key (or to plaintext), then reports the keys.
pub(super) async fn rekey(ctx: &Ctx, decrypt: bool) -> Result<u8, Failure> {
    let store = ctx.open_checked(OpenMode::MustExist).await?;
    if !decrypt && store.sealer().keyring().is_none() {
        store.close().await;
        return Err(CommandError::Input(
            "rekey seals under the [encryption] key, and none is configured".to_owned(),
        )
        .into());
    }
    let target = if decrypt {
        Target::Plaintext
    } else {
        Target::Current
    };
    let result = store.rekey(target, ctx.settings.lease()).await;
    let usage = store.key_usage().await;
    store.close().await;
    let (pass, usage) = (result?, usage?);
    let mut out = doctor::rekey_summary(&pass, store.sealer().keyring(), decrypt);
    let checks = doctor::encryption_checks(&usage, store.sealer().keyring());
    doctor::render(&mut out, "tokens by key", &checks);
    print!("{out}");
    Ok(if pass.leased == 0 && pass.unreadable.is_empty() {
        exit::OK
    } else {
        exit::REFRESH_FAILED
    })
}

/// Checks the credential name, owner and scopes that `add` and `authorize` would store.
pub(super) fn check_input(
    name: &str,
    owner: Option<&str>,
    scopes: Option<&str>,
) -> Result<(), CommandError> {
    use crate::untrusted::{NAME_RULE, is_valid_name, is_valid_scope_list, quoted};
    let bad = |what: &str, value: &str| {
        CommandError::Input(format!(
            "{what} {} is not usable: names are {NAME_RULE}",
            quoted(value)
        ))
    };
    if !is_valid_name(name) {
        return Err(bad("credential name", name));
    }
    if let Some(owner) = owner
        && !is_valid_name(owner)
    {
        return Err(bad("owner", owner));
    }
    if let Some(scopes) = scopes
        && !is_valid_scope_list(scopes)
    {
        return Err(CommandError::Input(format!(
            "--scopes {} is not usable: scopes are visible ASCII but \" and \\, separated by spaces",
            quoted(scopes)
        )));
    }
    Ok(())
}

/// Reads a refresh token from `file` or standard input, never from the command line.
pub(super) fn read_refresh_token(file: Option<&Path>) -> Result<Secret, CommandError> {
    use std::io::Read;
    let mut text = String::new();
    match file {
        Some(path) => {
            text = std::fs::read_to_string(path)
                .map_err(|e| CommandError::Input(format!("cannot read {}: {e}", path.display())))?;
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CommandError::Input(format!("cannot read standard input: {e}")))?;
        }
    }
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(CommandError::Input(
            "expected one refresh token (on standard input or in --refresh-token-file)".to_owned(),
        ));
    }
    Ok(Secret::new(token))
}
