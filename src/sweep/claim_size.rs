//! How many due credentials one claim takes. Each claim is a write transaction with its own
//! commit, so claiming only as many as run at once (`concurrency`) costs one commit per
//! `concurrency` refreshes. A claim may take more, queued to start as slots free up, but a queued
//! claim's lease keeps running: one whose request could no longer finish and be stored before the
//! lease ends is given back unsent (the sweep checks each before it starts). So a claim takes what
//! this sweep has been getting through in half of that slack, measured, between `concurrency`
//! and [`CLAIM_MAX`]. Pure: the sweep passes in what it counted. Imports nothing of ours.

use std::time::Duration;

/// Most credentials one claim takes: the claim's transaction holds the write lock while it
/// journals them, and a shutdown gives back what is still queued.
pub(super) const CLAIM_MAX: usize = 256;

/// How many to claim next: `done` refreshes finished in `elapsed` so far, `slack` seconds for a
/// claimed credential to wait before its request must start (`lease - request_timeout -
/// store_window`). Nothing finished yet: `concurrency`, no more.
pub(super) fn next(concurrency: usize, done: usize, elapsed: Duration, slack: i64) -> usize {
    let concurrency = concurrency.max(1);
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs <= 0.0 || slack <= 0 {
        return concurrency;
    }
    let count = |n: usize| f64::from(u32::try_from(n).unwrap_or(u32::MAX));
    let slack = f64::from(i32::try_from(slack).unwrap_or(i32::MAX));
    let fits = count(done) / secs * slack / 2.0;
    let most = CLAIM_MAX.max(concurrency);
    if fits >= count(most) {
        most
    } else {
        (fits as usize).clamp(concurrency, most)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CLAIM_MAX, next};

    #[test]
    fn the_first_claim_takes_what_runs_at_once() {
        assert_eq!(next(8, 0, Duration::ZERO, 40), 8);
        assert_eq!(next(8, 0, Duration::from_secs(3), 40), 8);
        assert_eq!(next(0, 0, Duration::ZERO, 40), 1);
    }

    #[test]
    fn later_claims_take_what_starts_in_half_the_slack() {
        // 8 started in 1 s, 40 s of slack: 8/s * 20 s.
        assert_eq!(next(8, 8, Duration::from_secs(1), 40), 160);
        // Fast: capped.
        assert_eq!(next(8, 800, Duration::from_millis(500), 40), CLAIM_MAX);
        // Slow (one request per 10 s and slot): never fewer than run at once.
        assert_eq!(next(8, 8, Duration::from_secs(80), 40), 8);
    }

    #[test]
    fn no_slack_means_no_queue() {
        assert_eq!(next(8, 1000, Duration::from_secs(1), 0), 8);
        assert_eq!(next(8, 1000, Duration::from_secs(1), -5), 8);
    }

    #[test]
    fn a_concurrency_above_the_cap_is_still_claimed_whole() {
        assert_eq!(next(300, 0, Duration::ZERO, 40), 300);
        assert_eq!(next(300, 10, Duration::from_secs(100), 40), 300);
        assert_eq!(
            next(300, 10_000, Duration::from_secs(1), 40),
            CLAIM_MAX.max(300)
        );
    }
}
