//! What a sweep (or one named refresh) came to: per credential, and the counts logged as the
//! sweep's summary line.

use crate::domain::{self};

/// What happened to one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Refreshed,
    /// A transient failure; retried after backoff.
    Retrying,
    /// The grant is dead; marked needs_reauthorization.
    NeedsReauthorization,
    /// The provider rejected the client (its configuration is wrong); retried slowly.
    ClientRejected,
    /// Its refresh token changed while the request was out; nothing stored.
    Superseded,
}

/// Counts of one sweep, logged as its summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepSummary {
    /// Credentials claimed as due.
    pub due: usize,
    pub refreshed: usize,
    /// Transient failures and client rejections.
    pub failed: usize,
    pub needs_reauthorization: usize,
    pub superseded: usize,
    /// Claimed but given back unattempted (shutdown).
    pub released: usize,
}

impl SweepSummary {
    pub(super) fn record(&mut self, handled: Handled) {
        match handled {
            Handled::Refreshed => self.refreshed += 1,
            Handled::Retrying | Handled::ClientRejected => self.failed += 1,
            Handled::NeedsReauthorization => self.needs_reauthorization += 1,
            Handled::Superseded => self.superseded += 1,
        }
    }

    /// Whether every due credential was refreshed.
    #[must_use]
    pub fn all_refreshed(&self) -> bool {
        self.failed == 0 && self.needs_reauthorization == 0 && self.released == 0
    }
}

/// What `refresh_named` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedRefresh {
    Done(Handled),
    NotFound,
    NotActive(domain::Status),
    Busy,
}
