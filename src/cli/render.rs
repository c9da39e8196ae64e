//! Text and JSON renderings of `status` and `log`. Rows carry no token: there is none to print.
//! Text from outside (names, owners, providers' error descriptions, from this version or an older
//! one) is escaped in the tables, so every row stays one line; JSON is escaped by serde.

use std::fmt::Write;

use crate::domain::{Failing, ShortLived, Status, UnixTime, expires_within, iso8601};
use crate::holder::{AttemptState, Holder, attempt_state};
use crate::store::{CredentialSummary, RotationRecord};
use crate::untrusted::escape;

/// What `status` judges rows by.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub now: UnixTime,
    pub failing: Failing,
    /// Seconds before a refresh token's expiry to flag it.
    pub refresh_token_warning: i64,
    /// Seconds of the schedule's longest gap between sweeps: shorter-lived tokens are flagged.
    pub sweep_gap: i64,
}

/// `status` as an aligned table.
pub fn status_table(rows: &[CredentialSummary], view: View) -> String {
    let now = view.now;
    let me = Holder::this_process();
    let mut table = vec![
        [
            "NAME",
            "PROVIDER",
            "OWNER",
            "STATUS",
            "EXPIRES IN",
            "LAST REFRESH",
            "FAILURES",
            "LAST ERROR",
        ]
        .map(str::to_owned),
    ];
    for r in rows {
        table.push([
            escape(&r.name).into_owned(),
            escape(&r.provider).into_owned(),
            r.owner
                .as_deref()
                .map_or_else(|| "-".to_owned(), |o| escape(o).into_owned()),
            escape(&status_word(r, view, &attempt(&me, r, now))).into_owned(),
            r.access_token_expires_at
                .map_or_else(|| "-".to_owned(), |t| relative(t - now)),
            r.last_refreshed_at.map_or_else(
                || "never".to_owned(),
                |t| format!("{} ago", relative(now - t)),
            ),
            r.consecutive_failures.to_string(),
            r.last_error.as_deref().map_or_else(|| "-".to_owned(), cell),
        ]);
    }
    let mut out = align(&table);
    // What the short notes in STATUS mean, once per affected credential.
    for r in rows {
        if let Some(short) = short_lived(r, view) {
            let _ = writeln!(out, "note: {}: {short}", escape(&r.name));
        }
    }
    out
}

/// `status --json`: one object per credential, times in ISO-8601 UTC.
pub fn status_json(rows: &[CredentialSummary], view: View) -> String {
    let now = view.now;
    let me = Holder::this_process();
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "attempt": attempt_json(&attempt(&me, r, now)),
                "name": r.name,
                "provider": r.provider,
                "owner": r.owner,
                "grant_type": r.grant_type,
                "status": r.status,
                "failing": is_failing(r, view),
                "refresh_token_expiring": expires_within(r.refresh_token_expires_at, now, view.refresh_token_warning),
                "access_token_expires_at": r.access_token_expires_at.map(iso8601),
                "seconds_left": r.access_token_expires_at.map(|t| t - now),
                "refresh_token_expires_at": r.refresh_token_expires_at.map(iso8601),
                "refresh_due_at": iso8601(r.refresh_due_at),
                "last_refreshed_at": r.last_refreshed_at.map(iso8601),
                "consecutive_failures": r.consecutive_failures,
                "next_attempt_at": (r.next_attempt_at > 0).then(|| iso8601(r.next_attempt_at)),
                "last_error": r.last_error,
                "instance_url": r.instance_url,
                "expires_between_sweeps": short_lived(r, view).is_some(),
                "access_token_lifetime_secs": r.access_token_expires_at.zip(r.last_refreshed_at).map(|(e, l)| e - l),
                "refresh_token_key": r.refresh_token_key,
                "access_token_key": r.access_token_key,
            })
        })
        .collect();
    format!("{}\n", serde_json::Value::Array(items))
}

fn is_failing(r: &CredentialSummary, view: View) -> bool {
    let failures = u32::try_from(r.consecutive_failures).unwrap_or(u32::MAX);
    r.status == Status::Active
        && view
            .failing
            .is_failing(failures, r.last_success_at, view.now)
}

fn attempt(me: &Holder, r: &CredentialSummary, now: UnixTime) -> AttemptState {
    attempt_state(
        me,
        r.lease_owner.as_deref(),
        r.lease_expires_at,
        r.attempt_started_at,
        r.attempt_sent_at.is_some(),
        now,
    )
}

/// `status --json`'s `attempt`: `null`, or where a refresh attempt under way stands.
fn attempt_json(state: &AttemptState) -> serde_json::Value {
    match state {
        AttemptState::Idle => serde_json::Value::Null,
        AttemptState::InFlight {
            holder,
            since,
            until,
        } => serde_json::json!({
            "state": "in_flight",
            "holder": holder,
            "since": since.map(iso8601),
            "resolved_by": iso8601(*until),
        }),
        AttemptState::HeldPastLease {
            holder,
            since,
            lease_ended,
        } => serde_json::json!({
            "state": "held_past_lease",
            "holder": holder,
            "since": since.map(iso8601),
            "lease_ended": iso8601(*lease_ended),
        }),
        AttemptState::Interrupted { holder, since, at } => serde_json::json!({
            "state": "interrupted",
            "holder": holder,
            "since": since.map(iso8601),
            "resolved_by": iso8601(*at),
        }),
    }
}

/// The status column's note on an attempt under way.
fn attempt_note(state: &AttemptState) -> Option<String> {
    let since = |s: &Option<i64>| {
        s.map(|t| format!(" since {}", iso8601(t)))
            .unwrap_or_default()
    };
    match state {
        AttemptState::Idle => None,
        AttemptState::InFlight {
            holder,
            since: s,
            until,
        } => Some(format!(
            "refreshing: {holder}{}, resolved by {}",
            since(s),
            iso8601(*until)
        )),
        AttemptState::HeldPastLease {
            holder,
            since: s,
            lease_ended,
        } => Some(format!(
            "held past its lease: {holder}{}, alive but not running since its lease ended at {}; left to it",
            since(s),
            iso8601(*lease_ended)
        )),
        AttemptState::Interrupted {
            holder, since: s, ..
        } => Some(format!(
            "interrupted: {}{}, resolved by the next sweep",
            holder.as_deref().unwrap_or("a process that is gone"),
            since(s)
        )),
    }
}

/// Whether an active credential's access tokens live shorter than the longest sweep gap.
fn short_lived(r: &CredentialSummary, view: View) -> Option<ShortLived> {
    (r.status == Status::Active)
        .then(|| {
            ShortLived::of(
                r.last_refreshed_at,
                r.access_token_expires_at,
                view.sweep_gap,
            )
        })
        .flatten()
}

/// The status with what needs attention: `active (failing)`, `active (re-authorize by …)`,
/// `active (expires between sweeps)`, `active (refreshing: host pid 12 since …, resolved by …)`.
fn status_word(r: &CredentialSummary, view: View, attempt: &AttemptState) -> String {
    let mut notes: Vec<String> = attempt_note(attempt).into_iter().collect();
    if is_failing(r, view) {
        notes.push("failing".to_owned());
    }
    if short_lived(r, view).is_some() {
        notes.push("expires between sweeps".to_owned());
    }
    if r.status == Status::Active
        && expires_within(
            r.refresh_token_expires_at,
            view.now,
            view.refresh_token_warning,
        )
    {
        let by = r.refresh_token_expires_at.map(iso8601).unwrap_or_default();
        notes.push(format!("re-authorize by {by}"));
    }
    if notes.is_empty() {
        r.status.to_string()
    } else {
        format!("{} ({})", r.status, notes.join(", "))
    }
}

/// `log` as an aligned table, oldest first.
pub fn log_table(rows: &[RotationRecord]) -> String {
    let mut table = vec![
        [
            "STARTED",
            "CREDENTIAL",
            "PROVIDER",
            "TRIGGER",
            "OUTCOME",
            "HTTP",
            "MS",
            "ROTATED",
            "NEW EXPIRY",
            "ERROR",
        ]
        .map(str::to_owned),
    ];
    for r in rows {
        table.push([
            iso8601(r.started_at),
            escape(&r.credential_name).into_owned(),
            escape(&r.provider).into_owned(),
            escape(&r.trigger).into_owned(),
            r.outcome.to_string(),
            r.http_status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            r.duration_ms
                .map_or_else(|| "-".to_owned(), |d| d.to_string()),
            match r.refresh_token_rotated {
                Some(true) => "yes".to_owned(),
                Some(false) => "no".to_owned(),
                None => "-".to_owned(),
            },
            r.new_expires_at.map_or_else(|| "-".to_owned(), iso8601),
            r.error_description
                .as_deref()
                .map_or_else(|| "-".to_owned(), cell),
        ]);
    }
    align(&table)
}

/// `log --json`: one JSON array of journal entries, oldest first (`[]` when there are none), as
/// `status --json` is one array of credentials.
pub fn log_json(rows: &[RotationRecord]) -> String {
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut value = serde_json::to_value(r).unwrap_or_default();
            if let Some(obj) = value.as_object_mut() {
                obj.insert("started_at".to_owned(), iso8601(r.started_at).into());
                obj.insert(
                    "new_expires_at".to_owned(),
                    r.new_expires_at.map(iso8601).into(),
                );
                obj.insert(
                    "old_expires_at".to_owned(),
                    r.old_expires_at.map(iso8601).into(),
                );
            }
            value
        })
        .collect();
    format!("{}\n", serde_json::Value::Array(items))
}

/// Free text for a table cell: its first 80 characters, escaped.
fn cell(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    escape(&cut).into_owned()
}

/// A duration in seconds as `3d4h`, `52m`, `40s`, negative as `-5m`.
fn relative(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let text = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    };
    format!("{sign}{text}")
}

fn align<const N: usize>(table: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// `status`'s closing lines: the outstanding invitation links per credential (never their
/// secrets).
pub fn invites_by_credential(invites: &[crate::store::Invite]) -> String {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&crate::store::Invite>> =
        std::collections::BTreeMap::new();
    for invite in invites {
        by_name.entry(&invite.name).or_default().push(invite);
    }
    let mut out = String::from("\noutstanding invitation links (tokenwarden invite --list):\n");
    for (name, links) in by_name {
        let latest = links.iter().map(|i| i.expires_at).max().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}: {} link{} for {}, valid until {}",
            escape(name),
            links.len(),
            if links.len() == 1 { "" } else { "s" },
            escape(&links[0].owner),
            iso8601(latest)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_durations() {
        assert_eq!(relative(42), "42s");
        assert_eq!(relative(3120), "52m");
        assert_eq!(relative(-300), "-5m");
        assert_eq!(relative(90_000), "1d1h");
    }

    #[test]
    fn table_columns_align() {
        let t = align(&[
            ["a".to_owned(), "bb".to_owned()],
            ["ccc".to_owned(), "d".to_owned()],
        ]);
        assert_eq!(t, "a    bb\nccc  d\n");
    }
}
