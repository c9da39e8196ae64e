//! `tokenwarden doctor`: a preflight with a plain verdict per check, for each provider (endpoint
//! reachable, client authentication accepted, scopes that yield a refresh token) and credential
//! (status, what its last refresh showed, refresh-token expiry). It never uses a real refresh token:
//! the provider is probed with a made-up one, which a healthy provider refuses with invalid_grant.
//! Imports `domain`, `untrusted`, `provider`, `refresh` and `store`.

use std::fmt::Write as _;
use std::time::Instant;

use crate::domain::{self, GrantType, Outcome, Secret, Status, iso8601};
use crate::provider::Provider;
use crate::refresh::{Grant, RefreshOutcome, Refresher};
use crate::store::{CredentialSummary, RotationRecord};
use crate::untrusted::Escaped;

mod database;
mod proxy;
mod report;
mod sealing;
mod sinks;

pub use database::database_checks;
pub use proxy::proxy_checks;
pub use report::{Report, Scope, run};
pub use sealing::{encryption_checks, rekey_summary, sealing_summary};
pub use sinks::sink_checks;

/// The refresh token sent by the probe; no provider has issued it.
const PROBE_TOKEN: &str = "tokenwarden-doctor-probe-not-a-real-token";

/// How a check came out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    #[default]
    Ok,
    Info,
    Warn,
    Fail,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    pub verdict: Verdict,
    pub what: &'static str,
    pub detail: String,
}

/// A failed check.
#[must_use]
pub fn failed(what: &'static str, detail: impl Into<String>) -> Check {
    check(Verdict::Fail, what, detail)
}

fn check(verdict: Verdict, what: &'static str, detail: impl Into<String>) -> Check {
    Check {
        verdict,
        what,
        detail: detail.into(),
    }
}

/// Probes one provider: reachability and client authentication, then its scope settings. A
/// provider used only for client_credentials is probed with that grant (its token is dropped);
/// any other with a made-up refresh token.
pub async fn provider_checks(
    refresher: &Refresher,
    provider: &Provider,
    client_credentials_only: bool,
) -> Vec<Check> {
    let mut checks = vec![check(
        Verdict::Info,
        "token endpoint",
        provider.token_url.clone(),
    )];
    let probe = Secret::new(PROBE_TOKEN);
    let grant = if client_credentials_only {
        Grant::ClientCredentials { scopes: None }
    } else {
        Grant::RefreshToken {
            token: &probe,
            scopes: None,
        }
    };
    let started = Instant::now();
    let attempt = refresher.request(provider, grant, domain::now()).await;
    let ms = started.elapsed().as_millis();
    match (&attempt.outcome, attempt.http_status) {
        (RefreshOutcome::Transient { reason, .. }, None) => {
            checks.push(check(
                Verdict::Fail,
                "reachable",
                format!("no answer: {reason}"),
            ));
        }
        (_, Some(status)) => {
            checks.push(check(
                Verdict::Ok,
                "reachable",
                format!("answered {status} in {ms} ms"),
            ));
            checks.push(match &attempt.outcome {
                RefreshOutcome::GrantRejected { code, .. } => check(
                    Verdict::Ok,
                    "client auth",
                    format!("accepted (the made-up refresh token was refused with {code}, as it should be)"),
                ),
                RefreshOutcome::ClientRejected { reason, .. } => {
                    check(Verdict::Fail, "client auth", format!("rejected: {reason}"))
                }
                RefreshOutcome::Transient { reason, .. } => {
                    check(Verdict::Warn, "client auth", format!("not confirmed: {reason}"))
                }
                RefreshOutcome::Refused { reason } if client_credentials_only => check(
                    Verdict::Warn,
                    "client auth",
                    format!("accepted, but the token response would not be stored: {reason}"),
                ),
                RefreshOutcome::Refreshed(_) if client_credentials_only => {
                    check(Verdict::Ok, "client auth", "accepted (a client_credentials token was issued and dropped)")
                }
                RefreshOutcome::Refreshed(_) | RefreshOutcome::Refused { .. } => {
                    check(Verdict::Fail, "client auth", "the provider accepted a made-up refresh token")
                }
            });
        }
        (_, None) => checks.push(check(Verdict::Fail, "reachable", "no HTTP answer")),
    }
    let offline = provider.scopes.iter().any(|s| s == "offline_access");
    checks.push(check(
        Verdict::Info,
        "scopes",
        if provider.scopes.is_empty() {
            "none configured (the grant's own scopes apply)".to_owned()
        } else {
            format!("{}{}", provider.scopes.join(" "), if offline { "" } else { " (no offline_access: Microsoft, Okta and Auth0 issue no refresh token without it)" })
        },
    ));
    checks.push(check(
        Verdict::Info,
        "scope on refresh",
        if provider.scope_on_refresh {
            "sent (Microsoft requires it)"
        } else {
            "not sent"
        },
    ));
    if let Some(key) = &provider.grant_key {
        // The key of jwt-bearer assertions is read per request: say now whether it can be.
        checks.push(match provider.check_grant_key() {
            Ok(()) => check(
                Verdict::Ok,
                "assertion key",
                format!("{} readable ({:?})", key.path.display(), key.alg),
            ),
            Err(e) => check(Verdict::Fail, "assertion key", e.to_string()),
        });
    }
    checks
}

/// What the store says about one credential.
#[must_use]
pub fn credential_checks(
    c: &CredentialSummary,
    last: Option<&RotationRecord>,
    warning: i64,
    sweep_gap: i64,
    now: domain::UnixTime,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let left = c.access_token_expires_at.map(|t| t - now);
    checks.push(match (c.status.as_str(), left) {
        ("active", Some(s)) if s > 0 => check(
            Verdict::Ok,
            "status",
            format!("active; access token valid {s} s more"),
        ),
        ("active", Some(_)) => check(
            Verdict::Warn,
            "status",
            "active, but the stored access token has expired",
        ),
        ("active", None) => check(
            Verdict::Info,
            "status",
            "active; not refreshed yet (due at once)",
        ),
        (other, _) => check(
            Verdict::Fail,
            "status",
            format!(
                "{other}: {}",
                c.last_error.as_deref().unwrap_or("no error recorded")
            ),
        ),
    });
    if c.consecutive_failures > 0 && c.status == Status::Active {
        checks.push(check(
            Verdict::Warn,
            "failures",
            format!(
                "{} in a row: {}",
                c.consecutive_failures,
                c.last_error.as_deref().unwrap_or("-")
            ),
        ));
    }
    if let Some(r) = last {
        checks.push(match (r.outcome, r.refresh_token_rotated) {
            (Outcome::Refreshed, Some(true)) => check(
                Verdict::Ok,
                "last refresh",
                format!("{}: new refresh token returned and stored", iso8601(r.started_at)),
            ),
            (Outcome::Refreshed, _) => check(
                Verdict::Info,
                "last refresh",
                format!(
                    "{}: no new refresh token returned; the stored one is kept (normal for providers that do not rotate)",
                    iso8601(r.started_at)
                ),
            ),
            (outcome, _) => check(
                Verdict::Warn,
                "last refresh",
                format!("{}: {outcome} {}", iso8601(r.started_at), r.error_description.as_deref().unwrap_or("")),
            ),
        });
        checks.push(match r.expires_in_reported {
            Some(true) => check(Verdict::Ok, "expires_in", "sent by the provider"),
            Some(false) => check(
                Verdict::Warn,
                "expires_in",
                "not sent: default_expires_in is assumed; make sure it is not longer than the real lifetime",
            ),
            None => check(Verdict::Info, "expires_in", "unknown until a refresh succeeds"),
        });
    }
    if let Some(short) =
        domain::ShortLived::of(c.last_refreshed_at, c.access_token_expires_at, sweep_gap)
    {
        checks.push(check(Verdict::Warn, "lifetime", short.to_string()));
    }
    checks.push(match c.refresh_token_expires_at {
        Some(at) if domain::expires_within(Some(at), now, warning) => check(
            Verdict::Warn,
            "refresh token",
            format!("expires {}: authorize again before then", iso8601(at)),
        ),
        Some(at) => check(
            Verdict::Ok,
            "refresh token",
            format!("expires {}", iso8601(at)),
        ),
        None if c.grant_type == GrantType::ClientCredentials => check(
            Verdict::Ok,
            "refresh token",
            "none needed (client_credentials)",
        ),
        None => check(Verdict::Info, "refresh token", "no absolute expiry known"),
    });
    checks
}

/// Renders a block of checks under `title`; names and details from outside are escaped.
pub fn render(out: &mut String, title: &str, checks: &[Check]) {
    let _ = writeln!(out, "{}", Escaped(title));
    for c in checks {
        let _ = writeln!(
            out,
            "  {:<5} {:<17} {}",
            c.verdict.word(),
            c.what,
            Escaped(&c.detail)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(status: &str, expires: Option<i64>, rt_expires: Option<i64>) -> CredentialSummary {
        CredentialSummary {
            name: "c".into(),
            provider: "p".into(),
            owner: None,
            grant_type: GrantType::RefreshToken,
            status: status.parse().unwrap(),
            access_token_expires_at: expires,
            refresh_token_expires_at: rt_expires,
            refresh_due_at: 0,
            last_refreshed_at: None,
            consecutive_failures: 0,
            next_attempt_at: 0,
            last_error: Some("invalid_grant: revoked".into()),
            last_success_at: 0,
            instance_url: None,
            lease_owner: None,
            lease_expires_at: None,
            attempt_started_at: None,
            attempt_sent_at: None,
            refresh_token_key: None,
            access_token_key: None,
        }
    }

    #[test]
    fn an_assumed_lifetime_is_a_warning() {
        let last = RotationRecord {
            id: 1,
            credential_name: "c".into(),
            provider: "p".into(),
            trigger: "schedule".into(),
            started_at: 900,
            duration_ms: Some(5),
            outcome: Outcome::Refreshed,
            http_status: Some(200),
            error_code: None,
            error_description: None,
            old_expires_at: None,
            new_expires_at: Some(4500),
            refresh_token_rotated: Some(false),
            old_refresh_fingerprint: None,
            new_refresh_fingerprint: None,
            expires_in_reported: Some(false),
        };
        let checks = credential_checks(
            &summary("active", Some(4500), None),
            Some(&last),
            100,
            180,
            1000,
        );
        let lifetime = checks.iter().find(|c| c.what == "expires_in").unwrap();
        assert_eq!(lifetime.verdict, Verdict::Warn);
    }

    #[test]
    fn tokens_shorter_than_the_sweep_gap_warn() {
        let mut c = summary("active", Some(1060), None);
        c.last_refreshed_at = Some(1000);
        let checks = credential_checks(&c, None, 100, 180, 1000);
        let lifetime = checks.iter().find(|c| c.what == "lifetime").unwrap();
        assert_eq!(lifetime.verdict, Verdict::Warn);
        assert!(lifetime.detail.contains("live 1m"), "{}", lifetime.detail);
        let fine = credential_checks(&c, None, 100, 60, 1000);
        assert!(fine.iter().all(|c| c.what != "lifetime"));
    }

    #[test]
    fn a_dead_credential_fails_and_a_near_expiry_warns() {
        let dead = credential_checks(
            &summary("needs_reauthorization", None, None),
            None,
            100,
            180,
            1000,
        );
        assert_eq!(dead[0].verdict, Verdict::Fail);
        assert!(dead[0].detail.contains("invalid_grant: revoked"));
        let soon = credential_checks(
            &summary("active", Some(2000), Some(1050)),
            None,
            100,
            180,
            1000,
        );
        assert_eq!(
            (soon[0].verdict, soon.last().unwrap().verdict),
            (Verdict::Ok, Verdict::Warn)
        );
    }
}
