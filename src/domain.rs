//! The vocabulary of tokenwarden and its arithmetic: credentials, token sets, statuses, due times,
//! backoff and fingerprints. Pure functions that take `now`; imports nothing from the crate.

use std::fmt;

mod secret;
mod states;

pub use secret::{MIN_REDACTABLE_CHARS, Secret, Unreadable, sanitize};
pub use states::{GrantType, Outcome, Status, Trigger};

/// Seconds since the Unix epoch, UTC. Every time in the database and in this module is one.
pub type UnixTime = i64;

/// The current time as [`UnixTime`].
#[must_use]
pub fn now() -> UnixTime {
    chrono::Utc::now().timestamp()
}

/// Milliseconds since the Unix epoch, now.
#[must_use]
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Renders a [`UnixTime`] as ISO-8601 UTC (`2026-11-23T13:19:41Z`).
#[must_use]
pub fn iso8601(t: UnixTime) -> String {
    chrono::DateTime::from_timestamp(t, 0).map_or_else(
        || t.to_string(),
        |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// A credential claimed for refreshing: what the refresh needs, nothing more.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub name: String,
    pub provider: String,
    pub grant_type: GrantType,
    /// Space-separated scopes stored with the credential, if any.
    pub scopes: Option<String>,
    /// The refresh token itself, opened: what a refresh sends.
    pub refresh_token: Option<Secret>,
    /// The refresh token exactly as the database held it when claimed (sealed text, or plaintext
    /// without a key): what the compare-and-swap writes compare against, since sealing the same
    /// token twice never gives the same text. Never sent anywhere.
    pub stored_refresh_token: Option<Secret>,
    /// Why the stored refresh token could not be opened (then `refresh_token` is `None`).
    pub unreadable: Option<Unreadable>,
    pub access_token_expires_at: Option<UnixTime>,
    pub consecutive_failures: u32,
    /// The journal row written for this attempt before the request.
    pub attempt_id: i64,
    /// An earlier attempt on this credential was journaled but never completed (its process died
    /// or stopped between claiming and storing): when it started, and whether its request went
    /// out. If it did, whether the provider rotated the refresh token is unknown.
    pub interrupted: Option<Interrupted>,
    /// The last successful refresh, or when the credential was added.
    pub last_success_at: UnixTime,
    /// When the stored refresh token expires for good, when known.
    pub refresh_token_expires_at: Option<UnixTime>,
    /// When this process's claim runs out: after it, another process may claim the credential.
    pub lease_expires_at: UnixTime,
    /// jwt_bearer: the assertion's `sub`, if any.
    pub subject: Option<String>,
}

/// An attempt that was journaled but never completed, as the claim that followed it found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    /// Its journal entry (`token_rotation.id`), now `interrupted`.
    pub attempt_id: i64,
    /// When it was journaled (claimed): a grace window is counted from here.
    pub started_at: UnixTime,
    /// Whether its request was sent (`token_rotation.sent_at`): only then may the provider have
    /// seen the refresh token, and sending it again would present it twice.
    pub sent: bool,
    /// The process that made it, in its stored form (`token_rotation.lease_owner`).
    pub holder: Option<String>,
}

/// Whether a provider accepts a refresh token presented a second time: `refresh_token_reuse` in
/// a provider block, or its preset's. A rotating provider that sees a consumed refresh token again
/// takes it for theft and revokes the whole grant, unless it declares a grace window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshTokenReuse {
    /// Never (`"none"`, the default): each refresh token is presented at most once.
    #[default]
    None,
    /// Within this many seconds of its first presentation (`"30s"`: a grace window).
    Within(i64),
    /// Always (`"stays-valid"`): refresh tokens stay valid after use, or do not rotate.
    StaysValid,
}

impl fmt::Display for RefreshTokenReuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Within(secs) => write!(f, "{secs}s"),
            Self::StaysValid => f.write_str("stays-valid"),
        }
    }
}

/// New tokens from a successful token response, with expiry resolved against `now`.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: Secret,
    pub token_type: String,
    pub expires_at: UnixTime,
    /// `None` when the response carried no refresh token: the stored one is kept.
    pub refresh_token: Option<Secret>,
    pub refresh_token_expires_at: Option<UnixTime>,
    pub scope: Option<String>,
    /// Whether the response carried `expires_in` (otherwise the provider's default was assumed).
    pub lifetime_reported: bool,
    /// The API host some providers name with the tokens (Salesforce's `instance_url`).
    pub instance_url: Option<String>,
}

/// Shortest access-token lifetime believed; shorter (zero, negative) values are raised to this.
pub const MIN_LIFETIME_SECS: i64 = 60;
/// Longest access-token lifetime believed; larger values are clamped to this.
pub const MAX_LIFETIME_SECS: i64 = 366 * 24 * 3600;

/// Clamps a provider's `expires_in` into `[MIN_LIFETIME_SECS, MAX_LIFETIME_SECS]`.
#[must_use]
pub fn clamp_lifetime(expires_in: i64) -> i64 {
    expires_in.clamp(MIN_LIFETIME_SECS, MAX_LIFETIME_SECS)
}

/// When a credential should next be refreshed: `margin` and its `spread` (see [`due_spread`])
/// before its access token expires, and no later than `max_idle` from now so an idle refresh token
/// is exercised before it can lapse. Never earlier than `now`: a token that lives shorter than the
/// margin is refreshed on the next sweep, not again by the sweep that just refreshed it.
#[must_use]
pub fn refresh_due_at(
    now: UnixTime,
    expires_at: UnixTime,
    margin: i64,
    max_idle: i64,
    spread: i64,
) -> UnixTime {
    (expires_at - margin - spread.max(0))
        .min(now + max_idle)
        .max(now)
}

/// A credential's stable offset in `[0, margin / 2)` seconds, taken off its due time so that
/// credentials imported (or authorized) together, whose tokens expire together, are not all due
/// in the same sweep: the provider sees their refreshes spread over half the margin. Only ever
/// earlier than the margin alone would make it, never later. A hash of the name (FNV-1a, then
/// SplitMix64's finalizer): the same on every host, in every version, across `migrate`.
#[must_use]
pub fn due_spread(name: &str, margin: i64) -> i64 {
    let Ok(half) = u64::try_from(margin / 2) else {
        return 0;
    };
    if half == 0 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    i64::try_from(h % half).unwrap_or(0)
}

/// Whether a refresh token expiring at `expires_at` is within `warning` seconds of `now`.
#[must_use]
pub fn expires_within(expires_at: Option<UnixTime>, now: UnixTime, warning: i64) -> bool {
    expires_at.is_some_and(|at| at - now < warning)
}

/// Access tokens that live shorter than the longest gap between two sweeps: every sweep refreshes
/// them, and they are expired part of the time between sweeps. Its `Display` says so, and what to
/// do, for a log line, `status` and `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortLived {
    /// Seconds an access token lived, as observed: expiry minus the refresh that got it.
    pub lifetime: i64,
    /// Seconds of the schedule's longest gap between sweeps.
    pub sweep_gap: i64,
}

impl ShortLived {
    /// The tokens of a credential refreshed at `refreshed_at` whose access token expires at
    /// `expires_at`, when they live shorter than `sweep_gap`.
    #[must_use]
    pub fn of(
        refreshed_at: Option<UnixTime>,
        expires_at: Option<UnixTime>,
        sweep_gap: i64,
    ) -> Option<Self> {
        let lifetime = (expires_at? - refreshed_at?).max(0);
        (lifetime < sweep_gap).then_some(Self {
            lifetime,
            sweep_gap,
        })
    }
}

impl fmt::Display for ShortLived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let human =
            |secs: i64| humantime::format_duration(std::time::Duration::from_secs(secs as u64));
        write!(
            f,
            "access tokens live {}, less than the longest gap between sweeps ({}): they are expired part of the time between sweeps; sweep more often (schedule) or renew on use (`tokenwarden refresh NAME` before use)",
            human(self.lifetime),
            human(self.sweep_gap)
        )
    }
}

/// When a credential that keeps failing is reported as failing (it is still retried, slowly).
#[derive(Debug, Clone, Copy)]
pub struct Failing {
    /// Consecutive failures.
    pub after_failures: u32,
    /// Seconds without a successful refresh (while failing).
    pub after_secs: i64,
}

impl Failing {
    /// Whether a credential with `failures` consecutive failures, last refreshed (or added) at
    /// `last_success_at`, counts as failing at `now`.
    #[must_use]
    pub fn is_failing(self, failures: u32, last_success_at: UnixTime, now: UnixTime) -> bool {
        failures >= self.after_failures
            || (failures > 0 && now - last_success_at >= self.after_secs)
    }
}

/// Tunables for retrying after transient failures.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay ceiling after the first failure, seconds.
    pub base: i64,
    /// Largest delay ceiling, seconds.
    pub cap: i64,
}

impl Backoff {
    /// Seconds to wait after the `failures`-th consecutive failure: exponential with full jitter
    /// (`jitter` in `[0, 1)` scales the ceiling), at least one second, and never sooner than the
    /// provider's `Retry-After`.
    #[must_use]
    pub fn delay(self, failures: u32, jitter: f64, retry_after: Option<i64>) -> i64 {
        let exponent = failures.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1_i64 << exponent).min(self.cap);
        #[allow(clippy::cast_precision_loss)] // ceilings are far below 2^52 seconds
        let jittered = (ceiling as f64 * jitter.clamp(0.0, 1.0)) as i64;
        jittered.max(1).max(retry_after.unwrap_or(0).min(self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_is_margin_before_expiry_or_max_idle() {
        assert_eq!(refresh_due_at(1000, 4600, 600, 86_400, 0), 4000);
        // A long-lived access token is still refreshed within max_idle.
        assert_eq!(refresh_due_at(1000, 1_000_000, 600, 86_400, 0), 87_400);
        // A token shorter than the margin is due at once, but not before now.
        assert_eq!(refresh_due_at(1000, 1300, 600, 86_400, 0), 1000);
    }

    #[test]
    fn spread_is_stable_inside_half_the_margin_and_only_earlier() {
        let margin = 600;
        assert_eq!(
            due_spread("user-001", margin),
            due_spread("user-001", margin)
        );
        assert_eq!(due_spread("x", 1), 0);
        assert_eq!(due_spread("x", 0), 0);
        assert_eq!(due_spread("x", -5), 0);
        // 1,000 credentials imported together (names as a bulk import makes them), due times
        // spread over the window [expiry - margin - margin/2, expiry - margin].
        let now = 1_000_000;
        let expires_at = now + 3600;
        let mut buckets = [0_u32; 10];
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let name = format!("user-{i:03}");
            let spread = due_spread(&name, margin);
            assert!((0..margin / 2).contains(&spread), "{name}: {spread}");
            let due = refresh_due_at(now, expires_at, margin, 86_400, spread);
            assert!(due <= refresh_due_at(now, expires_at, margin, 86_400, 0));
            assert!(due >= expires_at - margin - margin / 2);
            seen.insert(due);
            buckets[usize::try_from(spread * 10 / (margin / 2)).unwrap()] += 1;
        }
        // Uniform enough: every tenth of the window holds 100 ± 40, and at least 250 distinct
        // seconds of the 300 are used.
        assert!(
            buckets.iter().all(|b| (60..=140).contains(b)),
            "{buckets:?}"
        );
        assert!(seen.len() >= 250, "{}", seen.len());
        // The spread never pushes a due time past max_idle, nor before now.
        assert_eq!(refresh_due_at(now, now + 100, margin, 86_400, 299), now);
        assert_eq!(
            refresh_due_at(now, now + 10_000_000, margin, 86_400, 299),
            now + 86_400
        );
    }

    #[test]
    fn lifetime_is_clamped() {
        assert_eq!(clamp_lifetime(-5), MIN_LIFETIME_SECS);
        assert_eq!(clamp_lifetime(0), MIN_LIFETIME_SECS);
        assert_eq!(clamp_lifetime(3599), 3599);
        assert_eq!(clamp_lifetime(i64::MAX), MAX_LIFETIME_SECS);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let b = Backoff {
            base: 30,
            cap: 3600,
        };
        assert_eq!(b.delay(1, 0.999_999, None), 29);
        assert_eq!(b.delay(3, 0.999_999, None), 119);
        assert_eq!(b.delay(40, 0.999_999, None), 3599);
        assert_eq!(b.delay(1, 0.0, None), 1);
        assert_eq!(b.delay(1, 0.0, Some(120)), 120);
        assert_eq!(b.delay(1, 0.0, Some(1_000_000)), 3600);
    }

    #[test]
    fn failing_after_count_or_time_without_success() {
        let f = Failing {
            after_failures: 5,
            after_secs: 3600,
        };
        assert!(!f.is_failing(4, 1000, 2000));
        assert!(f.is_failing(5, 1000, 2000));
        assert!(f.is_failing(1, 1000, 4600));
        assert!(!f.is_failing(0, 1000, 1_000_000), "no failure, not failing");
    }

    #[test]
    fn tokens_shorter_than_the_sweep_gap_are_short_lived() {
        let short = ShortLived::of(Some(1000), Some(1060), 180).unwrap();
        assert_eq!((short.lifetime, short.sweep_gap), (60, 180));
        let text = short.to_string();
        assert!(text.contains("live 1m,") && text.contains("(3m)"), "{text}");
        assert_eq!(ShortLived::of(Some(1000), Some(4600), 180), None);
        assert_eq!(
            ShortLived::of(Some(1000), Some(1180), 180),
            None,
            "as long as the gap"
        );
        assert_eq!(
            ShortLived::of(None, Some(1060), 180),
            None,
            "never refreshed"
        );
        assert_eq!(ShortLived::of(Some(1000), None, 180), None);
        assert_eq!(
            ShortLived::of(Some(1000), Some(900), 180).unwrap().lifetime,
            0
        );
    }

    #[test]
    fn iso8601_renders_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
    }
}
