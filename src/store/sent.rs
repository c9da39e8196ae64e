//! Marking a request sent, immediately before it goes out: each mark is committed before its
//! request, and the marks waiting at one moment share one transaction and one commit (one fsync),
//! as the group writer's refreshes do — a sweep's requests leave together, and a mark per request
//! in its own transaction would cost a commit and a connection each.

use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::backend::Db;
use super::writer::GROUP_MAX;
use crate::domain::UnixTime;

/// One request about to go out.
pub(super) struct MarkJob {
    pub attempt_id: i64,
    pub now: UnixTime,
    /// Whether its journal entry was still pending, and so is marked sent now.
    pub reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// Starts the task that writes the marks; it ends when every sender is gone.
pub(super) fn spawn(db: Db) -> mpsc::UnboundedSender<MarkJob> {
    let (marks, mut queue) = mpsc::unbounded_channel::<MarkJob>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(GROUP_MAX);
        while queue.recv_many(&mut batch, GROUP_MAX).await > 0 {
            let ids: Vec<i64> = batch.iter().map(|job| job.attempt_id).collect();
            let now = batch.iter().map(|job| job.now).max().unwrap_or_default();
            let result = db.mark_sent(&ids, now).await;
            match result {
                Ok(marked) => {
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Ok(marked.contains(&job.attempt_id)));
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    for job in batch.drain(..) {
                        let _ = job
                            .reply
                            .send(Err(StoreError::Sql(sqlx::Error::Protocol(reason.clone()))));
                    }
                }
            }
        }
    });
    marks
}
