//! When the daemon's next sweep is due. tokio-cron-scheduler holds the schedule: a `Job` of the
//! configured cron expression, added to a `JobScheduler`, computes every next tick (croner, with
//! the parser settings `schedule` checks against). The scheduler's own loop is never started: it
//! would wake every 500 ms whatever the schedule (`JobScheduler::start`, `src/scheduler.rs` of
//! 0.15: two wake-ups of tokio's timer per turn). The daemon instead sleeps until the tick the
//! scheduler names and then steps the job itself (`Job::tick`), so an idle daemon wakes about once
//! per tick. Imports `schedule`.

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::schedule::Schedule;

/// The longest single sleep. Sleeps run on the monotonic clock while the schedule is wall-clock
/// time: after the wall clock steps forward, or the machine resumes from a suspend, a tick that
/// came due meanwhile is seen at most this late (and a backward step only makes the sleep start
/// again from the recomputed tick). Costs a few wake-ups per sleep (tokio's timer wheel moves a
/// long sleep down its levels before it fires): 0.08 a second in all, idle (BENCHMARKS.md).
pub const LONGEST_SLEEP: Duration = Duration::from_mins(1);

/// Capacity of the scheduler's internal channels: they carry one job, added again after each tick.
const CHANNEL_SIZE: usize = 8;

/// The schedule, stepped by the daemon.
pub struct Ticker {
    scheduler: JobScheduler,
    job: Job,
}

impl Ticker {
    /// The schedule's job, added to a scheduler that is never started; ticks count from now.
    pub async fn new(schedule: &Schedule) -> Result<Self, JobSchedulerError> {
        let scheduler = JobScheduler::new_with_channel_size(CHANNEL_SIZE).await?;
        // Its run closure never runs: the scheduler's loop, the only caller, is never started.
        let mut job = Job::new_async(schedule.six_fields(), |_, _| Box::pin(async {}))?;
        // A cron job's first tick only notes the time it was looked at, from which ticks count.
        job.tick()?;
        scheduler.add(job.clone()).await?;
        Ok(Self { scheduler, job })
    }

    /// Whether a tick of the schedule has passed since the last call (several count as one, as
    /// they collapse into one sweep). When one has, the job moves to its first tick after now and
    /// the scheduler is told (adding a job again under its id replaces it).
    pub async fn take_due(&mut self) -> Result<bool, JobSchedulerError> {
        match self.job.tick() {
            Ok(true) => {
                self.scheduler.add(self.job.clone()).await?;
                Ok(true)
            }
            Ok(false) | Err(JobSchedulerError::NoNextTick) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// When to look again: the scheduler's next tick of the job, at most [`LONGEST_SLEEP`] away;
    /// `None` when the schedule has no tick left. Ticks are whole seconds, so the scheduler's
    /// `next_tick_for_job` is exact; its `time_till_next_job` rounds down to whole seconds and
    /// says `None` during the second of a tick as well, which would lose that tick.
    pub async fn wake_at(&mut self) -> Result<Option<Instant>, JobSchedulerError> {
        let Some(next) = self.scheduler.next_tick_for_job(self.job.guid()).await? else {
            return Ok(None);
        };
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Ok(Some(Instant::now() + wait.min(LONGEST_SLEEP)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tick_is_due_once_it_has_passed_and_then_the_next_one_is_named() {
        let schedule: Schedule = "* * * * * *".parse().unwrap();
        let mut ticker = Ticker::new(&schedule).await.unwrap();
        let first = ticker.wake_at().await.unwrap().expect("a tick");
        assert!(
            first <= Instant::now() + Duration::from_secs(1),
            "within a second"
        );
        tokio::time::sleep_until(first).await;
        assert!(ticker.take_due().await.unwrap(), "the tick has passed");
        assert!(!ticker.take_due().await.unwrap(), "and counts once");
        let second = ticker.wake_at().await.unwrap().expect("a tick");
        assert!(second > first, "the next tick");
        assert!(second <= Instant::now() + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_distant_tick_is_looked_at_again_after_the_longest_sleep() {
        let schedule: Schedule = "0 0 1 1 *".parse().unwrap();
        let mut ticker = Ticker::new(&schedule).await.unwrap();
        let at = ticker.wake_at().await.unwrap().expect("a tick");
        assert!(at <= Instant::now() + LONGEST_SLEEP);
        assert!(!ticker.take_due().await.unwrap());
    }
}
