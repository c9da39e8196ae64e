//! Group commit for new tokens and sent marks: successful refreshes and requests about to go out
//! (`sent`) queue here, and one task per backend (`group_writer` in `transactions/refresh.rs`)
//! applies every job waiting at that moment in a single transaction with a single commit (one
//! fsync), then answers each.

use tokio::sync::oneshot;

use super::sent::MarkJob;
use super::{StoreError, Stored};
use crate::domain::{Secret, TokenSet, UnixTime};

/// Most jobs committed in one transaction.
pub(super) const GROUP_MAX: usize = 64;

/// What the group writer applies. Most are refreshes: the channel's slots are as large as one,
/// rather than a box (an allocation) per refresh.
#[allow(clippy::large_enum_variant)]
pub(super) enum Job {
    /// A successful refresh to store.
    Store(StoreJob),
    /// A request to mark sent before it goes out.
    Mark(MarkJob),
}

/// One successful refresh waiting for the group commit.
pub(super) struct StoreJob {
    pub credential_id: i64,
    pub attempt_id: i64,
    /// The refresh token as it was stored when claimed: the row is updated only if it still
    /// holds exactly that text (compare-and-swap).
    pub stored_refresh_token: Option<Secret>,
    /// Whether the provider sent a refresh token other than the one that was sent.
    pub rotated: bool,
    /// What to store: the new (or the unchanged) refresh token and the new access token, each
    /// already in its stored form (sealed, or plaintext without a key). `tokens` keeps the
    /// plaintext, for the journal's fingerprints only.
    pub refresh_token: Option<Secret>,
    pub access_token: Secret,
    pub owner: String,
    pub now: UnixTime,
    pub tokens: TokenSet,
    pub refresh_due_at: UnixTime,
    pub http_status: Option<u16>,
    pub duration_ms: i64,
    pub reply: oneshot::Sender<Result<Stored, StoreError>>,
}

/// The jobs cut into runs, in order, in which no credential appears twice: each run's rows are
/// written by one statement, and a later refresh of the same credential must see the earlier one.
pub(super) fn distinct_runs(jobs: &[StoreJob]) -> impl Iterator<Item = &[StoreJob]> {
    let mut rest = jobs;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        let end = rest
            .iter()
            .position(|job| !seen.insert(job.credential_id))
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some(run)
    })
}
