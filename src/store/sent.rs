//! Marking a request sent, immediately before it goes out: each mark is committed before its
//! request, and the marks waiting at one moment share one transaction and one commit (one fsync)
//! with the refreshes waiting then: the group writer (`writer`) takes both — a sweep's requests
//! leave together, and a mark per request in its own transaction would cost a commit and a
//! connection each.

use tokio::sync::oneshot;

use super::StoreError;
use crate::domain::UnixTime;

/// One request about to go out.
pub(super) struct MarkJob {
    pub attempt_id: i64,
    pub now: UnixTime,
    /// Whether its journal entry was still pending, and so is marked sent now.
    pub reply: oneshot::Sender<Result<bool, StoreError>>,
}
