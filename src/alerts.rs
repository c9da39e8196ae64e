//! Alerts: the operator's `on_event` command, run when a credential needs re-authorization, is
//! failing, recovers, or its refresh token nears its absolute expiry. It gets the event in `TOKENWARDEN_*` variables and nothing else of this
//! process's environment (which holds client secrets); never a token. With `[enroll]`, a
//! `needs_reauthorization` alert for a credential with an owner also gets a fresh one-time
//! re-authorization link in `TOKENWARDEN_REAUTH_URL` (made through [`ReauthLinks`], which
//! `enroll` implements), for the hook to send to the owner. Imports `domain` only.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::Secret;

use tokio::task::JoinSet;
use tracing::{info, warn};

/// What happened to a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The provider rejected the grant: someone must authorize again.
    NeedsReauthorization,
    /// Refreshes keep failing (reported on each slow retry while it lasts).
    Failing,
    /// A refresh succeeded after the credential was failing.
    Recovered,
    /// The refresh token's known absolute expiry came within `refresh_token_warning`.
    RefreshTokenExpiring,
}

impl Event {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeedsReauthorization => "needs_reauthorization",
            Self::Failing => "failing",
            Self::Recovered => "recovered",
            Self::RefreshTokenExpiring => "refresh_token_expiring",
        }
    }
}

/// Makes a fresh re-authorization link for a credential, when one can be made (the credential
/// exists and has an owner).
pub trait ReauthLinks: Send + Sync {
    fn link_for<'a>(
        &'a self,
        credential: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Secret>> + Send + 'a>>;
}

/// Runs the `on_event` command; cheap to clone. Without a command it does nothing.
#[derive(Clone, Default)]
pub struct Alerter {
    command: Option<Arc<[String]>>,
    timeout: Duration,
    running: Arc<Mutex<JoinSet<()>>>,
    reauth: Option<Arc<dyn ReauthLinks>>,
}

impl Alerter {
    /// `command` is an argv list (no shell); empty disables alerts.
    #[must_use]
    pub fn new(command: &[String], timeout: Duration) -> Self {
        Self {
            command: (!command.is_empty()).then(|| command.into()),
            timeout,
            running: Arc::default(),
            reauth: None,
        }
    }

    /// Adds a re-authorization link to `needs_reauthorization` alerts.
    #[must_use]
    pub fn with_reauth_links(mut self, links: Arc<dyn ReauthLinks>) -> Self {
        self.reauth = Some(links);
        self
    }

    /// Starts the command for one event; `drain` waits for it.
    pub fn fire(&self, event: Event, credential: &str, provider: &str, reason: &str) {
        let Some(argv) = self.command.clone() else {
            return;
        };
        let timeout = self.timeout;
        let reauth = self
            .reauth
            .clone()
            .filter(|_| event == Event::NeedsReauthorization);
        let vars = [
            ("TOKENWARDEN_EVENT", event.as_str().to_owned()),
            ("TOKENWARDEN_CREDENTIAL", credential.to_owned()),
            ("TOKENWARDEN_PROVIDER", provider.to_owned()),
            ("TOKENWARDEN_REASON", reason.to_owned()),
        ];
        let (credential, event_name) = (credential.to_owned(), event.as_str());
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        running.spawn(async move {
            let link = match &reauth {
                Some(links) => links.link_for(&credential).await,
                None => None,
            };
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .env_clear()
                .env(
                    "PATH",
                    std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
                )
                .envs(vars)
                .envs(
                    link.as_ref()
                        .map(|l| ("TOKENWARDEN_REAUTH_URL", l.expose())),
                )
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let outcome = match cmd.spawn() {
                Ok(mut child) => match tokio::time::timeout(timeout, child.wait()).await {
                    Ok(Ok(status)) if status.success() => Ok(()),
                    Ok(Ok(status)) => Err(format!("exited with {status}")),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "did not finish within {}",
                        humantime::format_duration(timeout)
                    )),
                },
                Err(e) => Err(format!("cannot start {:?}: {e}", argv[0])),
            };
            match outcome {
                Ok(()) => info!(credential, event = event_name, "alert sent"),
                Err(why) => warn!(credential, event = event_name, why, "alert command failed"),
            }
        });
    }

    /// Waits for every alert started so far (each bounded by the timeout).
    pub async fn drain(&self) {
        let mut running = std::mem::take(
            &mut *self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        while running.join_next().await.is_some() {}
    }
}
