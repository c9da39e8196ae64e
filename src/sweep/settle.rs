//! What one refresh attempt comes to, decided without doing anything: [`setback`] turns an outcome
//! without tokens into a journal outcome, a reason and an action; [`failure`] decides what a
//! setback stores (backoff or re-authorization) and which alert follows; [`success`] what new
//! tokens mean (the next due time, rotation, the refresh token's expiry and its warning, recovery).
//! Pure functions of the claim, the outcome, the policy and `now`; the sweep stores, logs and
//! alerts what they decide. Imports `alerts`, `domain` and `refresh`.

use crate::alerts::Event;
use crate::domain::{self, Claimed, Outcome, ShortLived, TokenSet, UnixTime};
use crate::refresh::RefreshOutcome;

use super::{Handled, Policy};

/// What to do about an attempt that produced no tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Retry after backoff, and not before `not_before` (a provider's Retry-After).
    Retry { not_before: Option<UnixTime> },
    /// The grant is dead.
    Reauthorize,
    /// The provider rejected our client: leave the credential until `until`.
    ClientRejected { until: UnixTime },
}

/// A failed or skipped attempt, as it is logged and journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Setback {
    pub action: Action,
    /// The journal's outcome word.
    pub outcome: Outcome,
    pub reason: String,
    pub code: Option<String>,
    pub http_status: Option<u16>,
}

impl Setback {
    pub fn new(action: Action, outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            action,
            outcome,
            reason: reason.into(),
            code: None,
            http_status: None,
        }
    }
}

/// New tokens, or the setback an outcome without them is. A rejected grant after an interrupted
/// attempt that was sent (a repeat the provider declared it accepts) says that the provider may
/// have rotated the token whose answer was lost; a rejected
/// client quarantines `provider` until the longest backoff from `now`.
pub(super) fn setback(
    claimed: &Claimed,
    outcome: RefreshOutcome,
    http_status: Option<u16>,
    provider: &str,
    policy: &Policy,
    now: UnixTime,
) -> Result<TokenSet, Setback> {
    let setback = match outcome {
        RefreshOutcome::Refreshed(tokens) => return Ok(tokens),
        RefreshOutcome::Transient {
            retry_after,
            code,
            reason,
        } => Setback {
            code,
            ..Setback::new(
                Action::Retry {
                    not_before: retry_after.map(|s| now.saturating_add(s)),
                },
                Outcome::Transient,
                reason,
            )
        },
        // A response refused by its checks: nothing of it kept, so retried like a malformed one.
        RefreshOutcome::Refused { reason } => Setback::new(
            Action::Retry { not_before: None },
            Outcome::RefusedResponse,
            reason,
        ),
        RefreshOutcome::GrantRejected { code, reason } => {
            let reason = if claimed.interrupted.as_ref().is_some_and(|i| i.sent) {
                format!("refresh outcome unknown after interruption: {reason}")
            } else {
                reason
            };
            Setback {
                code: Some(code),
                ..Setback::new(Action::Reauthorize, Outcome::NeedsReauthorization, reason)
            }
        }
        RefreshOutcome::ClientRejected { code, reason } => {
            let until = now + policy.backoff.cap;
            let reason = format!(
                "provider {provider} rejected the client ({reason}): check its client_id, secret and client_auth"
            );
            Setback {
                code: Some(code),
                ..Setback::new(
                    Action::ClientRejected { until },
                    Outcome::ClientRejected,
                    reason,
                )
            }
        }
    };
    Err(Setback {
        http_status,
        ..setback
    })
}

/// What a setback writes to the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailureWrite {
    /// Count the failure and try again from `next_attempt_at`.
    Retry { next_attempt_at: UnixTime },
    /// Status needs_reauthorization (unless the refresh token changed meanwhile).
    Reauthorize,
}

/// What a setback comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FailureDecision {
    pub write: FailureWrite,
    pub handled: Handled,
    /// The alert to fire once it is stored.
    pub event: Option<Event>,
    /// Whether the credential now counts as failing (retried slowly).
    pub failing: bool,
    /// Consecutive failures, this one included.
    pub failures: u32,
}

/// Decides what `action` stores: a retry after exponential backoff with full jitter (`jitter` in
/// `[0, 1)`), never before a provider's Retry-After (itself clamped to `retry.max`) — in the upper half of the longest backoff once
/// the credential is failing; re-authorization; or a rejected client's quarantine.
pub(super) fn failure(
    claimed: &Claimed,
    action: Action,
    policy: &Policy,
    now: UnixTime,
    jitter: f64,
) -> FailureDecision {
    let failures = claimed.consecutive_failures.saturating_add(1);
    match action {
        Action::Retry { not_before } => {
            let failing = policy
                .failing
                .is_failing(failures, claimed.last_success_at, now);
            // A failing credential is still retried, slowly: in the upper half of the cap.
            let (exponent, jitter) = if failing {
                (u32::MAX, 0.5 + jitter / 2.0)
            } else {
                (failures, jitter)
            };
            let delay = policy.backoff.delay(exponent, jitter, None);
            // A provider's Retry-After is honoured up to `retry.max`, as revocation does: an
            // absurd one (years) must not park the credential past any use.
            let not_before =
                not_before.map_or(0, |t| t.min(now.saturating_add(policy.backoff.cap)));
            FailureDecision {
                write: FailureWrite::Retry {
                    next_attempt_at: (now + delay).max(not_before),
                },
                handled: Handled::Retrying,
                event: failing.then_some(Event::Failing),
                failing,
                failures,
            }
        }
        Action::Reauthorize => FailureDecision {
            write: FailureWrite::Reauthorize,
            handled: Handled::NeedsReauthorization,
            event: Some(Event::NeedsReauthorization),
            failing: false,
            failures,
        },
        Action::ClientRejected { until } => FailureDecision {
            write: FailureWrite::Retry {
                next_attempt_at: until,
            },
            handled: Handled::ClientRejected,
            event: None,
            failing: false,
            failures,
        },
    }
}

/// A refresh token that expires within the warning window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expiring {
    pub at: UnixTime,
    /// Whether this refresh entered the window (alert once), rather than found it entered.
    pub alert: bool,
}

/// What new tokens mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SuccessDecision {
    pub refresh_due_at: UnixTime,
    /// Whether the provider sent a new refresh token.
    pub rotated: bool,
    /// When the refresh token in use now expires for good, when known.
    pub refresh_token_expires_at: Option<UnixTime>,
    /// The credential was failing: alert that it recovered.
    pub recovered: bool,
    pub expiring: Option<Expiring>,
    /// Access tokens that live shorter than the longest gap between sweeps.
    pub short_lived: Option<ShortLived>,
}

/// Decides what new `tokens`, received at `finished`, mean for `claimed`.
pub(super) fn success(
    claimed: &Claimed,
    tokens: &TokenSet,
    policy: &Policy,
    finished: UnixTime,
) -> SuccessDecision {
    let rotated = tokens.refresh_token.is_some() && tokens.refresh_token != claimed.refresh_token;
    let refresh_token_expires_at = if rotated {
        tokens.refresh_token_expires_at
    } else {
        tokens
            .refresh_token_expires_at
            .or(claimed.refresh_token_expires_at)
    };
    let warning = policy.refresh_token_warning;
    let expiring =
        domain::expires_within(refresh_token_expires_at, finished, warning).then(|| Expiring {
            at: refresh_token_expires_at.unwrap_or(finished),
            alert: !domain::expires_within(
                refresh_token_expires_at,
                claimed.last_success_at,
                warning,
            ),
        });
    SuccessDecision {
        refresh_due_at: policy.due_at(&claimed.name, finished, tokens.expires_at),
        rotated,
        refresh_token_expires_at,
        recovered: policy.failing.is_failing(
            claimed.consecutive_failures,
            claimed.last_success_at,
            finished,
        ),
        expiring,
        short_lived: ShortLived::of(Some(finished), Some(tokens.expires_at), policy.sweep_gap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Backoff, Failing, GrantType, Secret};

    const NOW: UnixTime = 1_000_000;

    fn policy() -> Policy {
        Policy {
            margin: 600,
            max_idle: 86_400,
            backoff: Backoff {
                base: 30,
                cap: 3600,
            },
            failing: Failing {
                after_failures: 5,
                after_secs: 6 * 3600,
            },
            refresh_token_warning: 7 * 86_400,
            concurrency: 8,
            lease: 120,
            request_timeout: 30,
            store_window: 50,
            sweep_gap: 180,
        }
    }

    fn claimed() -> Claimed {
        Claimed {
            id: 1,
            name: "c".into(),
            provider: "p".into(),
            grant_type: GrantType::RefreshToken,
            scopes: None,
            refresh_token: Some(Secret::new("rt-old")),
            stored_refresh_token: Some(Secret::new("rt-old")),
            unreadable: None,
            access_token_expires_at: Some(NOW + 100),
            consecutive_failures: 0,
            attempt_id: 7,
            interrupted: None,
            last_success_at: NOW - 3000,
            refresh_token_expires_at: None,
            lease_expires_at: NOW + 120,
            subject: None,
        }
    }

    fn tokens(refresh: Option<&str>, expires_in: i64) -> TokenSet {
        TokenSet {
            access_token: Secret::new("at-new"),
            token_type: "Bearer".into(),
            expires_at: NOW + expires_in,
            refresh_token: refresh.map(Secret::new),
            refresh_token_expires_at: None,
            scope: None,
            lifetime_reported: true,
            instance_url: None,
        }
    }

    fn setback_of(claimed: &Claimed, outcome: RefreshOutcome) -> Setback {
        setback(claimed, outcome, Some(400), "p", &policy(), NOW).unwrap_err()
    }

    #[test]
    fn every_outcome_without_tokens_has_its_journal_word_and_action() {
        let c = claimed();
        let transient = setback_of(
            &c,
            RefreshOutcome::Transient {
                retry_after: Some(90),
                code: Some("temporarily_unavailable".into()),
                reason: "down".into(),
            },
        );
        assert_eq!(transient.outcome, Outcome::Transient);
        assert_eq!(
            transient.action,
            Action::Retry {
                not_before: Some(NOW + 90)
            }
        );
        assert_eq!(transient.http_status, Some(400));
        let refused = setback_of(
            &c,
            RefreshOutcome::Refused {
                reason: "token response refused: access_token is empty".into(),
            },
        );
        assert_eq!(
            (refused.outcome, refused.action),
            (Outcome::RefusedResponse, Action::Retry { not_before: None })
        );
        let rejected = setback_of(
            &c,
            RefreshOutcome::GrantRejected {
                code: "invalid_grant".into(),
                reason: "invalid_grant: expired".into(),
            },
        );
        assert_eq!(
            (rejected.outcome, rejected.action, rejected.code.as_deref()),
            (
                Outcome::NeedsReauthorization,
                Action::Reauthorize,
                Some("invalid_grant")
            )
        );
        assert_eq!(rejected.reason, "invalid_grant: expired");
        let client = setback_of(
            &c,
            RefreshOutcome::ClientRejected {
                code: "invalid_client".into(),
                reason: "bad secret".into(),
            },
        );
        assert_eq!(client.outcome, Outcome::ClientRejected);
        assert_eq!(client.action, Action::ClientRejected { until: NOW + 3600 });
        assert!(
            client
                .reason
                .starts_with("provider p rejected the client (bad secret)")
        );
        let ok = setback(
            &c,
            RefreshOutcome::Refreshed(tokens(None, 3600)),
            Some(200),
            "p",
            &policy(),
            NOW,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn a_rejection_after_an_interruption_says_the_outcome_was_unknown() {
        let c = Claimed {
            interrupted: Some(crate::domain::Interrupted {
                attempt_id: 6,
                started_at: NOW - 10,
                sent: true,
                holder: None,
            }),
            ..claimed()
        };
        let rejected = setback_of(
            &c,
            RefreshOutcome::GrantRejected {
                code: "invalid_grant".into(),
                reason: "invalid_grant: reused".into(),
            },
        );
        assert_eq!(
            rejected.reason,
            "refresh outcome unknown after interruption: invalid_grant: reused"
        );
    }

    #[test]
    fn retries_back_off_honour_retry_after_and_slow_down_once_failing() {
        let c = claimed();
        let first = failure(
            &c,
            Action::Retry { not_before: None },
            &policy(),
            NOW,
            0.999,
        );
        let FailureWrite::Retry { next_attempt_at } = first.write else {
            panic!("{first:?}")
        };
        assert!((NOW + 1..=NOW + 30).contains(&next_attempt_at), "{first:?}");
        assert_eq!(
            (first.handled, first.event, first.failures),
            (Handled::Retrying, None, 1)
        );
        let patient = failure(
            &c,
            Action::Retry {
                not_before: Some(NOW + 900),
            },
            &policy(),
            NOW,
            0.0,
        );
        assert_eq!(
            patient.write,
            FailureWrite::Retry {
                next_attempt_at: NOW + 900
            }
        );
        let absurd = failure(
            &c,
            Action::Retry {
                not_before: Some(NOW.saturating_add(99_999_999_999)),
            },
            &policy(),
            NOW,
            0.0,
        );
        assert_eq!(
            absurd.write,
            FailureWrite::Retry {
                next_attempt_at: NOW + 3600
            },
            "Retry-After is clamped to retry.max"
        );
        let failing = failure(
            &Claimed {
                consecutive_failures: 4,
                ..c
            },
            Action::Retry { not_before: None },
            &policy(),
            NOW,
            0.0,
        );
        assert!(failing.failing);
        assert_eq!(failing.event, Some(Event::Failing));
        assert_eq!(
            failing.write,
            FailureWrite::Retry {
                next_attempt_at: NOW + 1800
            },
            "the upper half of the cap"
        );
    }

    #[test]
    fn reauthorization_and_rejected_clients() {
        let c = claimed();
        let dead = failure(&c, Action::Reauthorize, &policy(), NOW, 0.5);
        assert_eq!(
            (dead.write, dead.handled, dead.event),
            (
                FailureWrite::Reauthorize,
                Handled::NeedsReauthorization,
                Some(Event::NeedsReauthorization)
            )
        );
        let client = failure(
            &c,
            Action::ClientRejected { until: NOW + 77 },
            &policy(),
            NOW,
            0.5,
        );
        assert_eq!(
            (client.write, client.handled, client.event),
            (
                FailureWrite::Retry {
                    next_attempt_at: NOW + 77
                },
                Handled::ClientRejected,
                None
            )
        );
    }

    #[test]
    fn new_tokens_set_the_due_time_and_say_whether_they_rotated() {
        let c = claimed();
        let rotated = success(&c, &tokens(Some("rt-new"), 3600), &policy(), NOW);
        // The margin, and the name's spread on top: never later than the margin alone.
        let spread = domain::due_spread("c", 600);
        assert!(spread > 0);
        assert_eq!(rotated.refresh_due_at, NOW + 3600 - 600 - spread);
        assert!(rotated.rotated && !rotated.recovered);
        assert_eq!(rotated.expiring, None);
        assert_eq!(rotated.short_lived, None);
        let same = success(&c, &tokens(Some("rt-old"), 3600), &policy(), NOW);
        assert!(!same.rotated, "the same refresh token sent back");
        let none = success(&c, &tokens(None, 3600), &policy(), NOW);
        assert!(!none.rotated);
        let short = success(&c, &tokens(None, 60), &policy(), NOW);
        assert_eq!(short.refresh_due_at, NOW, "never earlier than now");
        assert_eq!(
            short.short_lived,
            Some(ShortLived {
                lifetime: 60,
                sweep_gap: 180
            })
        );
    }

    #[test]
    fn refresh_token_expiry_is_kept_warned_and_alerted_once() {
        let day = 86_400;
        let c = Claimed {
            refresh_token_expires_at: Some(NOW + 3 * day),
            // Eight days before the expiry: outside the 7-day window then.
            last_success_at: NOW - 5 * day,
            ..claimed()
        };
        // Not rotated: the known expiry stays and is inside the 7-day window.
        let kept = success(&c, &tokens(None, 3600), &policy(), NOW);
        assert_eq!(kept.refresh_token_expires_at, Some(NOW + 3 * day));
        assert_eq!(
            kept.expiring,
            Some(Expiring {
                at: NOW + 3 * day,
                alert: true
            }),
            "the last success was outside the window: alert"
        );
        let again = Claimed {
            last_success_at: NOW - 60,
            ..c.clone()
        };
        assert_eq!(
            success(&again, &tokens(None, 3600), &policy(), NOW)
                .expiring
                .map(|e| e.alert),
            Some(false),
            "already inside the window at the last success: no second alert"
        );
        // Rotated: the old expiry no longer applies.
        let rotated = success(&c, &tokens(Some("rt-new"), 3600), &policy(), NOW);
        assert_eq!(
            (rotated.refresh_token_expires_at, rotated.expiring),
            (None, None)
        );
    }

    #[test]
    fn a_success_after_failing_is_a_recovery() {
        let c = Claimed {
            consecutive_failures: 6,
            ..claimed()
        };
        assert!(success(&c, &tokens(None, 3600), &policy(), NOW).recovered);
    }
}
