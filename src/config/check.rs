//! The checks a loaded configuration must pass before anything runs: margins against the sweep
//! gap, limits, URLs, names, and every provider block.

use std::time::Duration;

use super::{ConfigError, Settings, invalid};

impl Settings {
    /// The token API, its access rules and the file sinks.
    fn validate_consumers(&self) -> Result<(), ConfigError> {
        for (i, rule) in self.access.iter().enumerate() {
            if rule.credentials.is_empty() || rule.credentials.iter().any(String::is_empty) {
                return Err(invalid(
                    format!("access[{i}].credentials"),
                    "name at least one credential (or a glob such as \"sf-*\")",
                ));
            }
            if rule.users.is_empty() && rule.groups.is_empty() {
                return Err(invalid(
                    format!("access[{i}]"),
                    "name users or groups: a rule for nobody grants nothing",
                ));
            }
        }
        for (i, sink) in self.sink.iter().enumerate() {
            if !sink.path.is_absolute() {
                return Err(invalid(
                    format!("sink[{i}].path"),
                    format!("{} is not an absolute path", sink.path.display()),
                ));
            }
            if sink.mode & 0o002 != 0 {
                return Err(invalid(
                    format!("sink[{i}].mode"),
                    "a token file anyone may write is refused",
                ));
            }
        }
        if let Some(socket) = &self.api.socket
            && !socket.is_absolute()
        {
            return Err(invalid(
                "api.socket",
                format!("{} is not an absolute path", socket.display()),
            ));
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let schedule = self.schedule()?;
        let gap = schedule.longest_gap(chrono::Utc::now());
        if self.refresh_margin <= gap + self.http.request_timeout {
            return Err(invalid(
                "refresh_margin",
                format!(
                    "{} must be larger than the longest gap between sweeps ({}) plus http.request_timeout ({}), or tokens lapse between sweeps",
                    humantime::format_duration(self.refresh_margin),
                    humantime::format_duration(gap),
                    humantime::format_duration(self.http.request_timeout),
                ),
            ));
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err(invalid("concurrency", "must be between 1 and 256"));
        }
        if self.max_idle < Duration::from_mins(1) {
            return Err(invalid("max_idle", "must be at least 1m"));
        }
        if self.http.max_response_bytes < 1024 {
            return Err(invalid("http.max_response_bytes", "must be at least 1024"));
        }
        if self.http.request_timeout.is_zero() || self.http.connect_timeout.is_zero() {
            return Err(invalid("http", "timeouts must be larger than zero"));
        }
        if self.retry.base.is_zero() || self.retry.max < self.retry.base {
            return Err(invalid(
                "retry",
                "base must be positive and max at least base",
            ));
        }
        if self.log.level.parse::<tracing::Level>().is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not one of error, warn, info, debug, trace",
                    self.log.level
                ),
            ));
        }
        if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "metrics.listen",
                format!(
                    "{:?} is not an address such as 127.0.0.1:9464",
                    self.metrics.listen
                ),
            ));
        }
        self.validate_consumers()?;
        if let Some(encryption) = &self.encryption {
            encryption.validate()?;
        }
        if let Some(enroll) = &self.enroll {
            enroll.validate()?;
        }
        // With a SQLite database, `[postgres]` is what `migrate --to postgres://…` connects with.
        if let Some(pg) = &self.postgres
            && pg.password_file.is_some()
            && pg.password_env.is_some()
        {
            return Err(invalid(
                "postgres",
                "password_file and password_env are alternatives: set one",
            ));
        }
        for (name, provider) in &self.providers {
            if !crate::untrusted::is_valid_name(name) {
                return Err(invalid(
                    format!("providers.{}", crate::untrusted::quoted(name)),
                    format!("provider names are {}", crate::untrusted::NAME_RULE),
                ));
            }
            provider.validate(&format!("providers.{name}"))?;
        }
        super::proxy::validate_all(&self.proxy, &self.providers)?;
        Ok(())
    }
}
