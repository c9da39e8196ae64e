//! On-demand renewal, for `token --min-valid` and `exec`: an access token that stays valid for
//! at least a given time. When the stored one expires sooner it is renewed now, through the
//! sweep's own path (`Sweeper::refresh_named`: the same lease, journal and compare-and-swap
//! store); when another process holds the credential's lease, its refresh is waited for instead
//! of raced, for a bounded time. Imports `domain`, `store` and `sweep`.

use std::time::{Duration, Instant};

use crate::domain::{self, Status, UnixTime};
use crate::store::{StoreError, TokenState};
use crate::sweep::{Handled, NamedRefresh, Sweeper};

/// How often the row is read again while another process refreshes the credential.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// Whether `state`'s access token is valid for at least `min_valid` seconds after `now` (and at
/// all: a `min_valid` of 0 still wants an unexpired token), on a credential that is not disabled.
#[must_use]
pub fn fresh_enough(state: &TokenState, now: UnixTime, min_valid: i64) -> bool {
    state.status != Status::Disabled
        && state.access_token.is_some()
        && state
            .access_token_expires_at
            .is_some_and(|at| at - now >= min_valid.max(1))
}

/// Whether another process holds `state`'s lease at `now`.
#[must_use]
pub fn held(state: &TokenState, now: UnixTime) -> bool {
    state.lease_expires_at.is_some_and(|until| until > now)
}

/// How a renewal ended.
#[derive(Debug)]
pub enum Renewal {
    /// A token valid for long enough: renewed by this process, or by another one meanwhile.
    Fresh(TokenState),
    NotFound,
    /// The credential is not active (needs re-authorization, disabled): it cannot be renewed.
    NotActive(TokenState),
    /// This process's refresh did not produce tokens; `state.last_error` says why.
    Failed {
        handled: Handled,
        state: TokenState,
    },
    /// Renewed, but the provider's new token lives shorter than asked for.
    TooShort(TokenState),
    /// Another process held the credential for longer than the wait allowed.
    GaveUp {
        waited: Duration,
    },
    /// A recent attempt failed and the credential waits until `state.next_attempt_at` (backoff,
    /// the provider's Retry-After): renewing on demand does not hammer a provider that is down.
    BackingOff(TokenState),
}

/// Renews `name` until its token is valid for `min_valid` seconds: refreshes it under the lease,
/// or — while another process holds the lease — waits (at most `wait`) for that refresh to end
/// and looks again. Never sends a refresh while another holder has the credential.
pub async fn renew(
    sweeper: &Sweeper,
    name: &str,
    min_valid: i64,
    wait: Duration,
) -> Result<Renewal, StoreError> {
    let store = sweeper.store();
    let started = Instant::now();
    loop {
        let Some(state) = store.token_state(name).await? else {
            return Ok(Renewal::NotFound);
        };
        let now = domain::now();
        if fresh_enough(&state, now, min_valid) {
            return Ok(Renewal::Fresh(state));
        }
        if state.next_attempt_at > now && !held(&state, now) {
            return Ok(Renewal::BackingOff(state));
        }
        match sweeper.refresh_named(name).await? {
            NamedRefresh::Done(Handled::Refreshed) => {
                let Some(state) = store.token_state(name).await? else {
                    return Ok(Renewal::NotFound);
                };
                return Ok(if fresh_enough(&state, domain::now(), min_valid) {
                    Renewal::Fresh(state)
                } else {
                    Renewal::TooShort(state)
                });
            }
            // Re-authorized while the request was out: look at the new tokens.
            NamedRefresh::Done(Handled::Superseded) => {}
            NamedRefresh::Done(handled) => {
                let Some(state) = store.token_state(name).await? else {
                    return Ok(Renewal::NotFound);
                };
                return Ok(Renewal::Failed { handled, state });
            }
            NamedRefresh::NotFound => return Ok(Renewal::NotFound),
            NamedRefresh::NotActive(_) => {
                let Some(state) = store.token_state(name).await? else {
                    return Ok(Renewal::NotFound);
                };
                return Ok(Renewal::NotActive(state));
            }
            NamedRefresh::Busy => {
                // Another process refreshes it: wait for its lease to end, or its new token.
                loop {
                    if started.elapsed() >= wait {
                        return Ok(Renewal::GaveUp {
                            waited: started.elapsed(),
                        });
                    }
                    tokio::time::sleep(POLL_EVERY).await;
                    let Some(state) = store.token_state(name).await? else {
                        return Ok(Renewal::NotFound);
                    };
                    let now = domain::now();
                    if fresh_enough(&state, now, min_valid) {
                        return Ok(Renewal::Fresh(state));
                    }
                    if !held(&state, now) {
                        break;
                    }
                }
            }
        }
        if started.elapsed() >= wait {
            return Ok(Renewal::GaveUp {
                waited: started.elapsed(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Secret;

    fn state(status: &str, expires_at: Option<i64>, lease: Option<i64>) -> TokenState {
        TokenState {
            id: 1,
            name: "n".to_owned(),
            provider: "p".to_owned(),
            status: status.parse().unwrap(),
            access_token: Some(Secret::new("at")),
            token_type: Some("Bearer".to_owned()),
            access_token_expires_at: expires_at,
            instance_url: None,
            lease_expires_at: lease,
            last_error: None,
            next_attempt_at: 0,
        }
    }

    #[test]
    fn fresh_enough_wants_min_valid_seconds_left_on_a_usable_credential() {
        assert!(fresh_enough(&state("active", Some(1100), None), 1000, 60));
        assert!(fresh_enough(&state("active", Some(1060), None), 1000, 60));
        assert!(!fresh_enough(&state("active", Some(1059), None), 1000, 60));
        // 0 still wants an unexpired token.
        assert!(!fresh_enough(&state("active", Some(1000), None), 1000, 0));
        assert!(fresh_enough(&state("active", Some(1001), None), 1000, 0));
        assert!(!fresh_enough(&state("active", None, None), 1000, 0));
        // needs_reauthorization keeps serving its last token; disabled never does.
        assert!(fresh_enough(
            &state("needs_reauthorization", Some(2000), None),
            1000,
            60
        ));
        assert!(!fresh_enough(
            &state("disabled", Some(2000), None),
            1000,
            60
        ));
        let mut none = state("active", Some(2000), None);
        none.access_token = None;
        assert!(!fresh_enough(&none, 1000, 60));
    }

    #[test]
    fn a_lease_holds_until_it_runs_out() {
        assert!(held(&state("active", None, Some(1001)), 1000));
        assert!(!held(&state("active", None, Some(1000)), 1000));
        assert!(!held(&state("active", None, None), 1000));
    }
}
