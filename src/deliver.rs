//! The consumer seam: which credential (by name, or its owner's at a provider), a token fresh
//! enough or renewed first under the lease (`renew`: waiting for another process's renewal
//! instead of racing it), and the header. `token`, `exec`, the token API, the file sinks and the
//! proxy all call [`deliver`]; none of them decides any of this on its own. Imports `domain`,
//! `untrusted`, `store`, `sweep` and `renew`.

use std::future::Future;
use std::time::Duration;

use crate::domain::{self, Secret, Status, UnixTime, iso8601};
use crate::renew::{self, Renewal};
use crate::store::{Store, StoreError, TokenState};
use crate::sweep::Sweeper;

pub mod header;

/// An error from setting up a renewal, of whatever type its maker has (it says its exit code).
pub type SetupError = crate::exit::Boxed;

/// Which credential a consumer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    Name(String),
    /// The one credential of `owner` at `provider`.
    Owner {
        provider: String,
        owner: String,
    },
}

/// How fresh the token must be.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// The token must stay valid this long; renewed first when it expires sooner.
    pub min_valid: Duration,
    /// Longest wait for a refresh that another process has in flight.
    pub wait: Duration,
}

/// Makes the sweeper a renewal runs through, only when one is needed: the CLI builds one for
/// the credential's provider (and guards the process against signals meanwhile), the daemon
/// hands out its own.
pub trait Renewer: Sync {
    fn sweeper(&self, provider: &str) -> impl Future<Output = Result<Sweeper, SetupError>>;
}

impl Renewer for Sweeper {
    async fn sweeper(&self, _: &str) -> Result<Sweeper, SetupError> {
        Ok(self.clone())
    }
}

/// A token handed out, with what the consumer should be told beside it.
#[derive(Debug)]
pub struct Delivered {
    pub state: TokenState,
    /// The access token (checked: visible ASCII, within the caps).
    pub token: Secret,
    /// Said on the side (stderr, a log line), never instead of the token.
    pub notices: Vec<Notice>,
}

/// Something the consumer should hear beside the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Still valid, but the credential is not refreshed (needs re-authorization, …): the token
    /// is not renewed after `until`.
    NotRenewed { status: Status, until: UnixTime },
    /// Its provider grants access tokens of about `granted` seconds, less than asked for: the
    /// freshest one is handed out, and not renewed again while it is young.
    ShortLived { granted: i64 },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRenewed { status, until } => write!(
                f,
                "is {status}; this access token is not renewed after {}",
                iso8601(*until)
            ),
            Self::ShortLived { granted } => write!(
                f,
                "gets access tokens of at most {} from its provider, less than asked for; this is the freshest one",
                humantime::format_duration(Duration::from_secs(
                    u64::try_from(*granted).unwrap_or(0)
                ))
            ),
        }
    }
}

/// Why no token was handed out. The messages are the CLI's, word for word.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("no credential named {0:?}")]
    UnknownCredential(String),
    #[error("provider {provider} has no credential of owner {owner:?}")]
    NoOwnerCredential { provider: String, owner: String },
    #[error("owner {owner:?} has several credentials of provider {provider} ({}); name one", names.join(", "))]
    Ambiguous {
        provider: String,
        owner: String,
        names: Vec<String>,
    },
    #[error("credential {name:?} has no valid access token (status {status}{})", expires_at.map(|t| if t > crate::domain::now() { format!(", it expires at {}, sooner than asked for", iso8601(t)) } else { format!(", expired at {}", iso8601(t)) }).unwrap_or_default())]
    NoValidToken {
        name: String,
        status: String,
        expires_at: Option<i64>,
    },
    #[error(
        "credential {name:?}: the stored access token {flaw}, so it is not printed; refresh or authorize the credential again"
    )]
    UnprintableToken {
        name: String,
        flaw: crate::untrusted::Flaw,
    },
    #[error("credential {name:?} was not renewed: {reason}")]
    RenewalFailed { name: String, reason: String },
    /// The token cannot be put in the form asked for (a header).
    #[error("credential {name:?}: {why}")]
    Unusable { name: String, why: String },
    #[error("{0}")]
    Store(#[source] StoreError),
    /// The renewal could not be set up (its provider's configuration, secrets, transport).
    #[error("{0}")]
    Setup(#[source] SetupError),
}

impl From<StoreError> for DeliverError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The name of the credential `which` asks for: by name, or the one credential of its owner at
/// the provider.
pub async fn resolve(store: &Store, which: &Which) -> Result<String, DeliverError> {
    let (provider, owner) = match which {
        Which::Name(name) => return Ok(name.clone()),
        Which::Owner { provider, owner } => (provider, owner),
    };
    let mut names = store.owned_by(provider, owner).await?;
    match names.len() {
        0 => Err(DeliverError::NoOwnerCredential {
            provider: provider.clone(),
            owner: owner.clone(),
        }),
        1 => Ok(names.remove(0)),
        _ => Err(DeliverError::Ambiguous {
            provider: provider.clone(),
            owner: owner.clone(),
            names,
        }),
    }
}

/// The access token of `which`, valid for at least `want.min_valid`: the stored one when it is,
/// else renewed first (through `renewer`'s sweeper, under the lease; another process's renewal
/// is waited for, at most `want.wait`).
pub async fn deliver(
    store: &Store,
    which: &Which,
    want: &Want,
    renewer: &impl Renewer,
) -> Result<Delivered, DeliverError> {
    let name = resolve(store, which).await?;
    let state = store
        .token_state(&name)
        .await?
        .ok_or_else(|| DeliverError::UnknownCredential(name.clone()))?;
    let min_secs = i64::try_from(want.min_valid.as_secs()).unwrap_or(i64::MAX);
    let now = domain::now();
    let mut notices = Vec::new();
    let state = if renew::fresh_enough(&state, now, min_secs) {
        state
    } else if state.status != Status::Active {
        return Err(no_valid_token(name, &state));
    } else if let Some(granted) = as_fresh_as_it_gets(store, &state, now, min_secs).await? {
        // Asked for more than this provider ever grants, and the token is still young: another
        // rotation would buy nothing.
        notices.push(Notice::ShortLived { granted });
        state
    } else {
        let sweeper = renewer
            .sweeper(&state.provider)
            .await
            .map_err(DeliverError::Setup)?;
        let renewal = renew::renew(&sweeper, &name, min_secs, want.wait).await?;
        let (state, notice) = renewed(renewal, name, want.min_valid, domain::now())?;
        notices.extend(notice);
        state
    };
    if state.status != Status::Active {
        notices.push(Notice::NotRenewed {
            status: state.status,
            until: state.access_token_expires_at.unwrap_or(now),
        });
    }
    let Some(token) = state.access_token.clone() else {
        return Err(DeliverError::UnknownCredential(state.name));
    };
    // A value from an older version, or written by another program, that fails the rule is
    // neither printed nor handed on.
    if let Err(flaw) = crate::untrusted::check_token(token.expose()) {
        return Err(DeliverError::UnprintableToken {
            name: state.name,
            flaw,
        });
    }
    Ok(Delivered {
        state,
        token,
        notices,
    })
}

impl Delivered {
    /// `Authorization: <type> <token>`.
    pub fn header(&self) -> Result<Secret, DeliverError> {
        header::authorization_header(self.state.token_type.as_deref(), &self.token).map_err(|why| {
            DeliverError::Unusable {
                name: self.state.name.clone(),
                why,
            }
        })
    }
}

fn no_valid_token(name: String, state: &TokenState) -> DeliverError {
    DeliverError::NoValidToken {
        name,
        status: state.status.as_str().to_owned(),
        expires_at: state.access_token_expires_at,
    }
}

/// When `min_valid` is more than the provider grants and the stored token still has at least
/// half the life its provider gave it: that lifetime (seconds). It is read from the journal row
/// of the rotation that brought the current token.
async fn as_fresh_as_it_gets(
    store: &Store,
    state: &TokenState,
    now: UnixTime,
    min_valid: i64,
) -> Result<Option<i64>, StoreError> {
    let Some(expires_at) = state.access_token_expires_at else {
        return Ok(None);
    };
    let rows = store
        .rotations(Some(&state.name), JOURNAL_LOOK_BACK)
        .await?;
    let Some(row) = rows.iter().find(|r| r.new_expires_at == Some(expires_at)) else {
        return Ok(None);
    };
    let obtained = row.started_at + row.duration_ms.unwrap_or(0) / 1000;
    let lifetime = expires_at - obtained;
    Ok(
        (lifetime > 0 && lifetime < min_valid && (expires_at - now) * 2 >= lifetime)
            .then_some(lifetime),
    )
}

/// Journal rows looked through for the rotation that brought the current token.
const JOURNAL_LOOK_BACK: u32 = 5;

/// What a renewal came to, for the consumer: the token, and a notice when it lives shorter
/// than asked for (the provider grants no more: the freshest token is still handed out).
fn renewed(
    renewal: Renewal,
    name: String,
    min_valid: Duration,
    now: UnixTime,
) -> Result<(TokenState, Option<Notice>), DeliverError> {
    let failed = |name: String, reason: String| DeliverError::RenewalFailed { name, reason };
    match renewal {
        Renewal::Fresh(state) => Ok((state, None)),
        Renewal::TooShort(state) if state.access_token_expires_at.is_some_and(|t| t > now) => {
            let granted = state.access_token_expires_at.unwrap_or(now) - now;
            Ok((state, Some(Notice::ShortLived { granted })))
        }
        Renewal::NotFound => Err(DeliverError::UnknownCredential(name)),
        Renewal::NotActive(state) => Err(no_valid_token(name, &state)),
        Renewal::Failed { state, .. } => {
            let why = state
                .last_error
                .unwrap_or_else(|| "see `tokenwarden status`".to_owned());
            Err(failed(name, why))
        }
        Renewal::TooShort(state) => {
            let until = iso8601(state.access_token_expires_at.unwrap_or(now));
            Err(failed(
                name,
                format!(
                    "the provider's new access token is valid until {until}, less than --min-valid {}",
                    humantime::format_duration(min_valid)
                ),
            ))
        }
        Renewal::BackingOff(state) => Err(failed(
            name,
            format!(
                "an earlier attempt failed ({}); not tried again before {}",
                state
                    .last_error
                    .as_deref()
                    .unwrap_or("see `tokenwarden status`"),
                iso8601(state.next_attempt_at)
            ),
        )),
        Renewal::GaveUp { waited } => Err(failed(
            name,
            format!(
                "another process is refreshing it; gave up waiting after {}s (--wait)",
                waited.as_secs()
            ),
        )),
    }
}

impl crate::exit::ExitStatus for DeliverError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Store(e) => e.exit_code(),
            Self::Setup(e) => e.0.exit_code(),
            Self::RenewalFailed { .. } => crate::exit::REFRESH_FAILED,
            _ => crate::exit::NOT_FOUND,
        }
    }
}
