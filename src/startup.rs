//! Wiring: from the settings to the running parts every command works from — the transport and
//! token requests, the providers (secrets and endpoints resolved), the store (opened, migrated,
//! sealing with the configured keys) and the sweeper with its policy. Logs the warnings each part
//! has about how it is configured. Imports `exit`, `config`, `http`, `keys`, `provider`, `refresh`,
//! `store`, `alerts` and `sweep`.

use std::collections::BTreeMap;
use std::path::Path;

use tracing::warn;

use crate::alerts::Alerter;
use crate::config::{ConfigError, Settings};
use crate::http::{HttpError, Transport};
use crate::keys::{self, KeysError};
use crate::provider::{ProviderError, Providers};
use crate::refresh::Refresher;
use crate::store::{
    Location, LocationError, OpenMode, OpenOptions, Scrub, Sealer, Store, StoreError,
};
use crate::sweep::{Policy, Sweeper};

/// Why the running parts could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(#[source] Box<ConfigError>),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] HttpError),
    #[error("{0}")]
    Provider(#[from] ProviderError),
    #[error("{0}")]
    Keys(#[from] KeysError),
    #[error("{0}")]
    Location(#[from] LocationError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<ConfigError> for StartupError {
    fn from(e: ConfigError) -> Self {
        Self::Config(Box::new(e))
    }
}

/// What every command works from: the settings, the environment they were read with, and the
/// database they name (a SQLite file, or a PostgreSQL server).
pub struct Ctx {
    pub settings: Settings,
    pub env: BTreeMap<String, String>,
    pub location: Location,
    /// Settings that work but should change (an inline secret or password, a password file
    /// others can read): logged once telemetry is up, and shown by `doctor`.
    pub warnings: Vec<String>,
    /// The settings' durations in seconds, converted once, and the due-time rule.
    pub policy: Policy,
}

impl Ctx {
    /// Settings from `file` (or the embedded defaults) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, StartupError> {
        let env = environment();
        let settings = Settings::load(file, &env)?;
        let (location, mut warnings) = Location::from_settings(&settings, &env)?;
        warnings.extend(settings.warnings());
        let policy = Policy::from_settings(&settings)?;
        Ok(Self {
            settings,
            env,
            location,
            warnings,
            policy,
        })
    }

    /// The one transport, wrapped for token requests.
    pub fn refresher(&self) -> Result<Refresher, StartupError> {
        let http = &self.settings.http;
        let transport = Transport::new(
            http.connect_timeout,
            http.request_timeout,
            http.max_response_bytes,
            &self.env,
        )
        .map_err(StartupError::Http)?;
        Ok(Refresher::new(transport))
    }

    /// Every provider, endpoints discovered and secrets read.
    pub async fn providers(&self, refresher: &Refresher) -> Result<Providers, ProviderError> {
        let settings = &self.settings.providers;
        let providers = Providers::resolve(settings, &self.env, refresher.transport()).await?;
        for warning in providers.warnings() {
            warn!("{warning}");
        }
        Ok(providers)
    }
    /// The `[encryption]` keys, read and checked; warnings about how they are kept are logged.
    pub fn sealer(&self) -> Result<Sealer, KeysError> {
        let (sealer, warnings) = keys::load(self.settings.encryption.as_ref(), &self.env)?;
        for warning in warnings {
            warn!("{warning}");
        }
        Ok(sealer)
    }

    /// The store, opened (created when `mode` allows) and migrated, sealing with the configured keys.
    pub async fn open(&self, mode: OpenMode) -> Result<Store, StartupError> {
        let connections = u32::try_from(self.settings.concurrency)
            .unwrap_or(8)
            .saturating_add(1);
        let options = OpenOptions {
            mode,
            busy_timeout: self.settings.busy_timeout,
            connections,
        };
        Ok(Store::open(&self.location, &options, self.sealer()?).await?)
    }

    /// The store for a command that writes tokens: every key it is sealed under is listed.
    pub async fn open_checked(&self, mode: OpenMode) -> Result<Store, StartupError> {
        let store = self.open(mode).await?;
        store.check_keys().await?;
        Ok(store)
    }

    /// A sweeper on the store opened with `mode`, with every provider.
    pub async fn sweeper(&self, mode: OpenMode) -> Result<Sweeper, StartupError> {
        let store = self.open(mode).await?;
        self.sweeper_with(store, None).await
    }

    /// A sweeper on `store`, with every provider or `only` the one named.
    pub async fn sweeper_with(
        &self,
        store: Store,
        only: Option<&str>,
    ) -> Result<Sweeper, StartupError> {
        let settings = &self.settings;
        let refresher = self.refresher()?;
        let providers = match only {
            None => self.providers(&refresher).await?,
            Some(name) => {
                let wanted = settings.providers.iter().filter(|(n, _)| *n == name);
                Providers::resolve(wanted, &self.env, refresher.transport()).await?
            }
        };
        // Before anything is claimed: every key the database needs is here, and with a key,
        // plaintext left from before is sealed.
        let sealed = store.prepare().await?;
        if sealed.resealed > 0 || sealed.leased > 0 || !sealed.unreadable.is_empty() {
            tracing::info!(
                sealed = sealed.resealed,
                in_use_elsewhere = sealed.leased,
                unreadable = sealed.unreadable.len(),
                "plaintext tokens sealed under the current key"
            );
        }
        match &sealed.scrub {
            Some(Scrub::Done) => tracing::info!(
                "database file rebuilt (VACUUM) and its -wal file emptied: no plaintext token left in free space"
            ),
            Some(Scrub::WalInUse) => tracing::warn!(
                "database file rebuilt (VACUUM), but another process was reading it: its -wal file still holds old page versions; run `tokenwarden rekey` when nothing else reads the database"
            ),
            Some(Scrub::Failed(why)) => tracing::warn!(
                why,
                "the database file could not be rebuilt after sealing: old plaintext may remain in free space; run `tokenwarden rekey`"
            ),
            None => {}
        }
        let mut alerter = Alerter::new(&settings.alerts.on_event, settings.alerts.timeout);
        if let Some(enroll) = &settings.enroll {
            let links = crate::enroll::invite::ReauthLinkMaker::new(store.clone(), enroll);
            alerter = alerter.with_reauth_links(std::sync::Arc::new(links));
        }
        Ok(Sweeper::new(
            store,
            providers,
            refresher,
            self.policy,
            alerter,
        ))
    }
}

/// The process environment. Variables that are not UTF-8 cannot be settings or secrets here:
/// they are skipped rather than panicked on.
#[must_use]
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

impl crate::exit::ExitStatus for StartupError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(e) => e.exit_code(),
            // A proxy variable that is not a URL is the operator's to fix.
            Self::Http(HttpError::Proxy(_)) => crate::exit::CONFIG,
            Self::Http(_) => crate::exit::INTERNAL,
            Self::Provider(e) => e.exit_code(),
            Self::Keys(e) => e.exit_code(),
            Self::Location(e) => e.exit_code(),
            Self::Store(e) => e.exit_code(),
        }
    }
}
