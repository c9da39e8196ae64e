//! Whether an interrupted attempt may be taken over, and whether its refresh token may be sent
//! again: a refresh token is presented to a provider at most once, unless the provider declares
//! that it accepts a repeat (`refresh_token_reuse`), and then only inside the declared window,
//! counted from the interrupted attempt's start. A live process on this host whose request is out
//! keeps its credential even past its lease: it will store the answer when it runs again. Pure;
//! imports `domain` and `holder`.

use crate::domain::{GrantType, Interrupted, RefreshTokenReuse, UnixTime, iso8601};
use crate::holder::Liveness;

/// Seconds a repeat may take to reach the provider after it is decided: a grace window is used
/// only while at least this much of it is left.
pub(super) const REPEAT_MARGIN_SECS: i64 = 2;

/// What to do with a credential whose earlier attempt never completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Takeover {
    /// Its process is alive on this host and its request went out: leave the credential to it,
    /// even past its lease (it stores the answer when it runs again).
    Leave,
    /// Send: nothing was presented before (the request never went out, or the grant has no
    /// refresh token), or the provider accepts this repeat (`repeat`).
    Send { repeat: bool },
    /// Sending would present the refresh token a second time where the provider does not accept
    /// it: nothing is sent, and the credential needs re-authorization for this reason.
    Flag { reason: String },
}

/// Decides for an interrupted attempt, made by a process judged `owner` from here, of a
/// credential of `grant` whose provider (`provider`) declares `reuse`, at `now`.
pub(super) fn decide(
    owner: Liveness,
    attempt: &Interrupted,
    grant: GrantType,
    provider: &str,
    reuse: RefreshTokenReuse,
    now: UnixTime,
) -> Takeover {
    if grant != GrantType::RefreshToken {
        // A fresh client-credentials or jwt-bearer request presents nothing twice.
        return Takeover::Send { repeat: false };
    }
    if !attempt.sent {
        return Takeover::Send { repeat: false };
    }
    if owner == Liveness::Alive {
        return Takeover::Leave;
    }
    let since = now.saturating_sub(attempt.started_at);
    let sent = format!(
        "refresh token already sent by an attempt started at {} that never completed (its process died, stopped or lost the database), so the provider may have rotated it",
        iso8601(attempt.started_at)
    );
    match reuse {
        RefreshTokenReuse::StaysValid => Takeover::Send { repeat: true },
        RefreshTokenReuse::Within(window) if since + REPEAT_MARGIN_SECS <= window => {
            Takeover::Send { repeat: true }
        }
        RefreshTokenReuse::Within(window) => Takeover::Flag {
            reason: format!(
                "{sent}; provider {provider} accepts it again only within {window} s and {since} s have passed: not sent again. If that process comes back with the answer the credential becomes active again; otherwise authorize again"
            ),
        },
        RefreshTokenReuse::None => Takeover::Flag {
            reason: format!(
                "{sent}; provider {provider} does not accept a refresh token twice (refresh_token_reuse = \"none\"): not sent again. If that process comes back with the answer the credential becomes active again; otherwise authorize again (or set refresh_token_reuse if the provider has a grace window)"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = 1_000_000;

    fn attempt(sent: bool, age: i64) -> Interrupted {
        Interrupted {
            attempt_id: 1,
            started_at: NOW - age,
            sent,
            holder: None,
        }
    }

    /// Every owner state × provider tolerance × time since the attempt, for a sent refresh
    /// token: what a process taking the credential over does.
    #[test]
    fn the_decision_table() {
        use Liveness::{Alive, Gone, Unknown};
        use RefreshTokenReuse::{None as Strict, StaysValid, Within};
        #[derive(Debug, PartialEq)]
        enum D {
            Leave,
            Repeat,
            Flag,
        }
        let table = [
            // owner,  tolerance,   age, decision
            (Alive, Strict, 5, D::Leave),
            (Alive, Strict, 600, D::Leave),
            (Alive, Within(30), 5, D::Leave),
            (Alive, Within(30), 600, D::Leave),
            (Alive, StaysValid, 5, D::Leave),
            (Alive, StaysValid, 600, D::Leave),
            (Gone, Strict, 5, D::Flag),
            (Gone, Strict, 600, D::Flag),
            (Gone, Within(30), 5, D::Repeat),
            (Gone, Within(30), 28, D::Repeat),
            (Gone, Within(30), 29, D::Flag),
            (Gone, Within(30), 600, D::Flag),
            (Gone, StaysValid, 5, D::Repeat),
            (Gone, StaysValid, 600, D::Repeat),
            (Unknown, Strict, 5, D::Flag),
            (Unknown, Strict, 600, D::Flag),
            (Unknown, Within(30), 5, D::Repeat),
            (Unknown, Within(30), 600, D::Flag),
            (Unknown, StaysValid, 5, D::Repeat),
            (Unknown, StaysValid, 600, D::Repeat),
        ];
        for (owner, reuse, age, expected) in table {
            let got = match decide(
                owner,
                &attempt(true, age),
                GrantType::RefreshToken,
                "p",
                reuse,
                NOW,
            ) {
                Takeover::Leave => D::Leave,
                Takeover::Send { repeat: true } => D::Repeat,
                Takeover::Send { repeat: false } => panic!("a sent token sent as new"),
                Takeover::Flag { .. } => D::Flag,
            };
            assert_eq!(got, expected, "{owner:?} × {reuse} × {age} s");
        }
    }

    #[test]
    fn an_attempt_never_sent_is_taken_over_whoever_made_it() {
        for owner in [Liveness::Alive, Liveness::Gone, Liveness::Unknown] {
            for reuse in [
                RefreshTokenReuse::None,
                RefreshTokenReuse::Within(30),
                RefreshTokenReuse::StaysValid,
            ] {
                assert_eq!(
                    decide(
                        owner,
                        &attempt(false, 600),
                        GrantType::RefreshToken,
                        "p",
                        reuse,
                        NOW
                    ),
                    Takeover::Send { repeat: false }
                );
            }
        }
    }

    #[test]
    fn grants_without_a_refresh_token_are_always_sent_again() {
        for grant in [GrantType::ClientCredentials, GrantType::JwtBearer] {
            for owner in [Liveness::Alive, Liveness::Gone, Liveness::Unknown] {
                assert_eq!(
                    decide(
                        owner,
                        &attempt(true, 600),
                        grant,
                        "p",
                        RefreshTokenReuse::None,
                        NOW
                    ),
                    Takeover::Send { repeat: false }
                );
            }
        }
    }

    #[test]
    fn a_flag_says_what_happened_and_what_to_do() {
        let Takeover::Flag { reason } = decide(
            Liveness::Unknown,
            &attempt(true, 75),
            GrantType::RefreshToken,
            "okta",
            RefreshTokenReuse::Within(30),
            NOW,
        ) else {
            panic!("not flagged")
        };
        assert!(
            reason.starts_with("refresh token already sent by an attempt started at "),
            "{reason}"
        );
        assert!(
            reason.contains("provider okta accepts it again only within 30 s and 75 s have passed: not sent again"),
            "{reason}"
        );
        assert!(reason.ends_with("otherwise authorize again"), "{reason}");
        let Takeover::Flag { reason } = decide(
            Liveness::Gone,
            &attempt(true, 1),
            GrantType::RefreshToken,
            "idp",
            RefreshTokenReuse::None,
            NOW,
        ) else {
            panic!("not flagged")
        };
        assert!(
            reason.contains("provider idp does not accept a refresh token twice"),
            "{reason}"
        );
    }
}
