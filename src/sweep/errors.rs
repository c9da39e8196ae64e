//! Failed refresh attempts counted per provider and class, for the metrics (the
//! `tokenwarden_refresh_errors_total` counter): what this process's attempts met since it started.
//! The class is decided here from the journal's outcome and the HTTP status (pure); the tally is a
//! map behind a mutex, written once per failed attempt and copied at scrape time.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::domain::Outcome;

/// What kind of failure an attempt met: the `class` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    /// HTTP 429: the provider is throttling us.
    RateLimited,
    /// HTTP 5xx.
    ServerError,
    /// No HTTP answer: connection, TLS, DNS or timeout.
    Network,
    /// Another transient answer (a 4xx with `temporarily_unavailable`, an oversized body).
    OtherTransient,
    /// The grant is dead (`invalid_grant` and the like): needs re-authorization.
    InvalidGrant,
    /// The provider rejected the client (`invalid_client`, `unauthorized_client`).
    ClientRejected,
    /// A token response refused by tokenwarden's own checks.
    BadResponse,
    /// The credential names a provider that is not configured.
    ProviderMissing,
    /// The refresh token is sealed under a key this process lacks.
    KeyMissing,
}

impl ErrorClass {
    pub const ALL: [Self; 9] = [
        Self::RateLimited,
        Self::ServerError,
        Self::Network,
        Self::OtherTransient,
        Self::InvalidGrant,
        Self::ClientRejected,
        Self::BadResponse,
        Self::ProviderMissing,
        Self::KeyMissing,
    ];

    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Network => "network",
            Self::OtherTransient => "other_transient",
            Self::InvalidGrant => "invalid_grant",
            Self::ClientRejected => "client_rejected",
            Self::BadResponse => "bad_response",
            Self::ProviderMissing => "provider_missing",
            Self::KeyMissing => "key_missing",
        }
    }

    /// The class of a failed attempt; `None` for outcomes that are no failure (refreshed,
    /// superseded, ...). A 429 or 5xx counts as such whatever the outcome made of it.
    #[must_use]
    pub fn of(outcome: Outcome, http_status: Option<u16>) -> Option<Self> {
        match (outcome, http_status) {
            (
                Outcome::Pending
                | Outcome::Refreshed
                | Outcome::Superseded
                | Outcome::Interrupted
                | Outcome::Authorized
                | Outcome::Revoked
                | Outcome::RevocationPending
                | Outcome::RevocationRefused,
                _,
            ) => None,
            (_, Some(429)) => Some(Self::RateLimited),
            (_, Some(500..=599)) => Some(Self::ServerError),
            (Outcome::Transient, None) => Some(Self::Network),
            (Outcome::Transient, Some(_)) => Some(Self::OtherTransient),
            (Outcome::NeedsReauthorization, _) => Some(Self::InvalidGrant),
            (Outcome::ClientRejected, _) => Some(Self::ClientRejected),
            (Outcome::RefusedResponse, _) => Some(Self::BadResponse),
            (Outcome::ProviderMissing, _) => Some(Self::ProviderMissing),
            (Outcome::KeyMissing, _) => Some(Self::KeyMissing),
        }
    }
}

/// Failed attempts so far, per provider and class.
#[derive(Debug, Default)]
pub struct ErrorTally {
    counts: Mutex<BTreeMap<(String, ErrorClass), u64>>,
}

impl ErrorTally {
    /// Counts one failed attempt at `provider`.
    pub fn count(&self, provider: &str, class: ErrorClass) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry((provider.to_owned(), class)).or_default() += 1;
    }

    /// A copy of the counts, by provider then class.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(String, ErrorClass, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|((provider, class), n)| (provider.clone(), *class, *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{ErrorClass, ErrorTally};
    use crate::domain::Outcome;

    #[test]
    fn classes_follow_the_status_first_then_the_outcome() {
        assert_eq!(
            ErrorClass::of(Outcome::Transient, Some(429)),
            Some(ErrorClass::RateLimited)
        );
        assert_eq!(
            ErrorClass::of(Outcome::ClientRejected, Some(503)),
            Some(ErrorClass::ServerError)
        );
        assert_eq!(
            ErrorClass::of(Outcome::Transient, None),
            Some(ErrorClass::Network)
        );
        assert_eq!(
            ErrorClass::of(Outcome::Transient, Some(400)),
            Some(ErrorClass::OtherTransient)
        );
        assert_eq!(
            ErrorClass::of(Outcome::NeedsReauthorization, Some(400)),
            Some(ErrorClass::InvalidGrant)
        );
        assert_eq!(ErrorClass::of(Outcome::Refreshed, Some(200)), None);
        assert_eq!(ErrorClass::of(Outcome::Superseded, Some(429)), None);
    }

    #[test]
    fn the_tally_counts_per_provider_and_class() {
        let tally = ErrorTally::default();
        tally.count("b", ErrorClass::RateLimited);
        tally.count("a", ErrorClass::Network);
        tally.count("b", ErrorClass::RateLimited);
        assert_eq!(
            tally.snapshot(),
            [
                ("a".to_owned(), ErrorClass::Network, 1),
                ("b".to_owned(), ErrorClass::RateLimited, 2)
            ]
        );
        let names: std::collections::BTreeSet<_> =
            ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorClass::ALL.len());
    }
}
