//! The sweep schedule: a cron expression in 5 fields (crontab) or 6 (with seconds), normalised to
//! the 6-field form tokio-cron-scheduler wants, and the longest gap between two of its ticks.
//!
//! tokio-cron-scheduler owns the schedule while the daemon runs (`daemon::ticker`: its job names
//! every next tick). This module also parses the expression with croner, for two things the
//! scheduler does not offer: an error that says what is wrong with an expression (the scheduler
//! only answers `ParseSchedule`), given when the configuration is loaded, before any scheduler
//! exists; and the ticks beyond the next one, which [`Schedule::longest_gap`] walks (the
//! scheduler names only the next). It is not a second cron dialect: croner is the parser
//! tokio-cron-scheduler itself runs (its dependency, the same major version, pinned by
//! Cargo.lock), with the scheduler's own parser settings (seconds required, day-of-month AND
//! day-of-week), and a test checks that the scheduler takes every expression this accepts and
//! names the same next tick. Imports nothing of the crate.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// How many upcoming ticks are examined to find the longest gap between sweeps.
const GAP_SAMPLE_TICKS: usize = 1_000;

/// A parsed, validated cron schedule (UTC).
#[derive(Clone)]
pub struct Schedule {
    six_fields: String,
    cron: Cron,
}

impl Schedule {
    /// The expression with a seconds field, as tokio-cron-scheduler takes it.
    #[must_use]
    pub fn six_fields(&self) -> &str {
        &self.six_fields
    }

    /// The longest wait between two consecutive ticks over the next [`GAP_SAMPLE_TICKS`] ticks after
    /// `from`: the worst case time a credential can wait for its next sweep.
    #[must_use]
    pub fn longest_gap(&self, from: DateTime<Utc>) -> Duration {
        let mut previous = from;
        let mut longest = chrono::TimeDelta::zero();
        for tick in self.cron.iter_after(from).take(GAP_SAMPLE_TICKS) {
            longest = longest.max(tick - previous);
            previous = tick;
        }
        longest.to_std().unwrap_or(Duration::ZERO)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.six_fields)
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(expr: &str) -> Result<Self, Self::Err> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let six_fields = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 => fields.join(" "),
            n => {
                return Err(format!(
                    "cron expression {expr:?} has {n} fields; expected 5 (crontab) or 6 (with seconds)"
                ));
            }
        };
        // The same parser settings tokio-cron-scheduler uses, so what passes here runs there.
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&six_fields)
            .map_err(|e| format!("cron expression {expr:?} is invalid: {e}"))?;
        if cron.iter_after(Utc::now()).next().is_none() {
            return Err(format!("cron expression {expr:?} never fires"));
        }
        Ok(Self { six_fields, cron })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crontab_gets_a_seconds_field() {
        let s: Schedule = "*/3 * * * *".parse().unwrap();
        assert_eq!(s.six_fields(), "0 */3 * * * *");
        assert_eq!(s.longest_gap(Utc::now()), Duration::from_mins(3));
    }

    #[test]
    fn six_fields_are_kept() {
        let s: Schedule = "*/20 * * * * *".parse().unwrap();
        assert_eq!(s.six_fields(), "*/20 * * * * *");
        assert_eq!(s.longest_gap(Utc::now()), Duration::from_secs(20));
    }

    #[test]
    fn irregular_schedules_report_the_longest_gap() {
        let s: Schedule = "0 9,17 * * *".parse().unwrap();
        assert_eq!(s.longest_gap(Utc::now()), Duration::from_hours(16));
    }

    /// The contract the module header states: what this accepts, tokio-cron-scheduler runs, to
    /// the same next tick.
    #[test]
    fn the_scheduler_takes_every_expression_and_names_the_same_next_tick() {
        use tokio_cron_scheduler::Job;
        for expr in [
            "*/3 * * * *",
            "0 9,17 * * *",
            "*/20 * * * * *",
            "0 0 1 1 *",
            "30 2 * * 1-5",
            "0 0 12 1 * MON",
        ] {
            let s: Schedule = expr.parse().unwrap();
            let before = Utc::now();
            let mut job = Job::new_async(s.six_fields(), |_, _| Box::pin(async {})).unwrap();
            let after = Utc::now();
            let next = job
                .job_data()
                .unwrap()
                .next_tick_utc()
                .expect("a next tick");
            // Either side of a tick boundary that passed while the job was made.
            let ours = [before, after].map(|t| s.cron.iter_after(t).next().unwrap().timestamp());
            assert!(
                ours.contains(&next.timestamp()),
                "{expr}: {next} not in {ours:?}"
            );
        }
    }

    #[test]
    fn bad_expressions_are_named() {
        let e = "* * *".parse::<Schedule>().unwrap_err();
        assert!(e.contains("has 3 fields"), "{e}");
        let e = "61 * * * *".parse::<Schedule>().unwrap_err();
        assert!(e.contains("\"61 * * * *\" is invalid"), "{e}");
    }
}
