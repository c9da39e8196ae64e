//! The sweep's tunables, read once from the settings (every duration converted to seconds here,
//! once): concurrency, lease, request timeout and store window, margin and idle limit, backoff,
//! when a credential counts as failing; and [`Policy::due_at`], the one rule for when a credential
//! is next due, which the sweep and `enroll` both store. Imports `config` and `domain`.

use std::time::Duration;

use crate::config::{ConfigError, Settings};
use crate::domain::{self, Backoff, Failing, UnixTime};

/// The sweep's tunables, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Seconds before expiry to refresh.
    pub margin: i64,
    /// Refresh at least this often (seconds).
    pub max_idle: i64,
    pub backoff: Backoff,
    pub failing: Failing,
    /// Seconds before a refresh token's absolute expiry to warn.
    pub refresh_token_warning: i64,
    pub concurrency: usize,
    /// Seconds a claim lasts.
    pub lease: i64,
    /// Seconds a whole token request may take (`http.request_timeout`).
    pub request_timeout: i64,
    /// Seconds new tokens may take to be stored (`Settings::store_window`).
    pub store_window: i64,
    /// Seconds of the schedule's longest gap between sweeps: access tokens that live shorter are
    /// expired part of the time, which is worth a warning.
    pub sweep_gap: i64,
}

impl Policy {
    /// The sweep's tunables from the configuration, in whole seconds.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let gap = settings.schedule()?.longest_gap(chrono::Utc::now());
        Ok(Self {
            margin: secs(settings.refresh_margin),
            max_idle: secs(settings.max_idle),
            backoff: Backoff {
                base: secs(settings.retry.base),
                cap: secs(settings.retry.max),
            },
            failing: Failing {
                after_failures: settings.retry.failing_after_failures.max(1),
                after_secs: secs(settings.retry.failing_after),
            },
            refresh_token_warning: secs(settings.refresh_token_warning),
            concurrency: settings.concurrency,
            lease: secs(settings.lease()),
            request_timeout: secs(settings.http.request_timeout),
            store_window: secs(settings.store_window()),
            sweep_gap: secs(gap),
        })
    }

    /// When credential `name`, whose access token expires at `expires_at`, is next due as of
    /// `now`: the margin and the credential's spread before the expiry, no later than `max_idle`
    /// from now, never earlier than now (`domain::refresh_due_at`, `domain::due_spread`).
    #[must_use]
    pub fn due_at(&self, name: &str, now: UnixTime, expires_at: UnixTime) -> UnixTime {
        domain::refresh_due_at(
            now,
            expires_at,
            self.margin,
            self.max_idle,
            domain::due_spread(name, self.margin),
        )
    }
}
