//! The sealing part of `doctor`, `rekey` and `check-config`: per key, how many stored tokens it
//! still seals, and what needs doing (a key in use that the configuration lacks, plaintext left
//! under a key, a retired key nothing needs any more). Pure: takes what the store counted.

use std::fmt::Write as _;

use super::{Check, Verdict, check};
use crate::store::seal::Keyring;
use crate::store::{ColumnUsage, KeyUsage, Pass, Scrub};

fn counts(usage: &KeyUsage, pick: impl Fn(&ColumnUsage) -> i64) -> String {
    let (r, a) = (pick(&usage.refresh_tokens), pick(&usage.access_tokens));
    let plural = |n: i64| if n == 1 { "" } else { "s" };
    format!(
        "{r} refresh token{}, {a} access token{}",
        plural(r),
        plural(a)
    )
}

/// One check per key (listed or in use), then plaintext and malformed values.
#[must_use]
pub fn encryption_checks(usage: &KeyUsage, keyring: Option<&Keyring>) -> Vec<Check> {
    let under = |id: &str| counts(usage, |c| c.keys.get(id).copied().unwrap_or(0));
    let mut checks = Vec::new();
    if let Some(keyring) = keyring {
        let id = keyring.current_id();
        checks.push(check(
            Verdict::Ok,
            "current key",
            format!("{id}: {}", under(id)),
        ));
        for id in keyring.retired_ids() {
            let (verdict, note) = if usage.sealed_under(id) == 0 {
                (
                    Verdict::Info,
                    "; nothing needs it any more: it can be removed",
                )
            } else {
                (
                    Verdict::Warn,
                    "; still needed: run `tokenwarden rekey` before removing it",
                )
            };
            checks.push(check(
                verdict,
                "retired key",
                format!("{id}: {}{note}", under(id)),
            ));
        }
    }
    for id in usage.key_ids() {
        if keyring.is_none_or(|k| !k.knows(id)) {
            checks.push(check(
                Verdict::Fail,
                "unlisted key",
                format!(
                    "{id}: {}, sealed under a key the configuration does not list: add it to [encryption]",
                    under(id)
                ),
            ));
        }
    }
    let plain_refresh = usage.refresh_tokens.plaintext;
    let plain_access = usage.access_tokens.plaintext;
    match keyring {
        None => checks.push(check(
            Verdict::Info,
            "plaintext",
            format!(
                "{}: sealing is off (see [encryption] in the README)",
                counts(usage, |c| c.plaintext)
            ),
        )),
        Some(k) => {
            let left = plain_refresh > 0 || (k.seals_access_tokens() && plain_access > 0);
            let verdict = if left { Verdict::Warn } else { Verdict::Ok };
            let note = if left {
                "; the next start or `tokenwarden rekey` seals them"
            } else if plain_access > 0 {
                " (access tokens stay readable: seal_access_tokens = false)"
            } else {
                ""
            };
            checks.push(check(
                verdict,
                "plaintext",
                format!("{}{note}", counts(usage, |c| c.plaintext)),
            ));
        }
    }
    if usage.refresh_tokens.malformed + usage.access_tokens.malformed > 0 {
        checks.push(check(
            Verdict::Warn,
            "malformed",
            format!(
                "{}: look sealed but are not well-formed (altered or cut short); those credentials need re-authorization",
                counts(usage, |c| c.malformed)
            ),
        ));
    }
    checks
}

/// `check-config`'s line about sealing.
#[must_use]
pub fn sealing_summary(keyring: Option<&Keyring>) -> String {
    let Some(k) = keyring else {
        return "encryption: off (tokens are stored as they are)".to_owned();
    };
    let retired: Vec<&str> = k.retired_ids().collect();
    format!(
        "encryption: refresh tokens{} sealed under key {}; retired keys: {}",
        if k.seals_access_tokens() {
            " and access tokens"
        } else {
            ""
        },
        k.current_id(),
        if retired.is_empty() {
            "none".to_owned()
        } else {
            retired.join(", ")
        }
    )
}

/// `rekey`'s first lines: what it did and what it left.
#[must_use]
pub fn rekey_summary(pass: &Pass, keyring: Option<&Keyring>, decrypt: bool) -> String {
    let mut out = String::new();
    let target = match keyring {
        _ if decrypt => "as plaintext".to_owned(),
        Some(k) => format!("under key {}", k.current_id()),
        None => "as configured".to_owned(),
    };
    let _ = writeln!(out, "rows rewritten {target}: {}", pass.resealed);
    if pass.leased > 0 {
        let _ = writeln!(
            out,
            "rows left because another process held them throughout: {} (run rekey again)",
            pass.leased
        );
    }
    if !pass.unreadable.is_empty() {
        let _ = writeln!(
            out,
            "rows with a token that cannot be opened (left as they are; authorize them again): {}",
            pass.unreadable.join(", ")
        );
    }
    match &pass.scrub {
        Some(Scrub::Done) => {
            let _ = writeln!(
                out,
                "database file rebuilt (VACUUM) and its -wal file emptied: no old token is left in free space"
            );
        }
        Some(Scrub::WalInUse) => {
            let _ = writeln!(
                out,
                "database file rebuilt (VACUUM); its -wal file was in use by another process and still holds old page versions until it is reused (run rekey again when nothing else reads the database)"
            );
        }
        Some(Scrub::Failed(why)) => {
            let _ = writeln!(
                out,
                "the database file could not be rebuilt ({why}): old page contents may remain in free space; run rekey again"
            );
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::seal::Key;

    fn usage(keys: &[(&str, i64)], plaintext: i64) -> KeyUsage {
        KeyUsage {
            refresh_tokens: ColumnUsage {
                keys: keys.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
                plaintext,
                malformed: 0,
            },
            access_tokens: ColumnUsage {
                plaintext: 3,
                ..ColumnUsage::default()
            },
        }
    }

    #[test]
    fn keys_in_use_are_counted_and_unlisted_ones_fail() {
        let (cur, old) = (Key::from_bytes(&[1; 32]), Key::from_bytes(&[2; 32]));
        let (cur_id, old_id) = (cur.id().to_owned(), old.id().to_owned());
        let ring = Keyring::new(cur, vec![old], false).unwrap();
        let checks = encryption_checks(&usage(&[(&cur_id, 2), (&old_id, 1)], 0), Some(&ring));
        let verdicts: Vec<(Verdict, &str)> = checks.iter().map(|c| (c.verdict, c.what)).collect();
        assert_eq!(
            verdicts,
            [
                (Verdict::Ok, "current key"),
                (Verdict::Warn, "retired key"),
                (Verdict::Ok, "plaintext")
            ]
        );
        assert!(
            checks[0]
                .detail
                .contains("2 refresh tokens, 0 access tokens")
        );
        let checks = encryption_checks(&usage(&[(&cur_id, 3)], 1), Some(&ring));
        assert_eq!(checks[1].verdict, Verdict::Info, "{checks:?}");
        assert_eq!(
            checks[2].verdict,
            Verdict::Warn,
            "plaintext left: {checks:?}"
        );
        let checks = encryption_checks(&usage(&[("0badc0de", 4)], 0), None);
        assert_eq!(checks[0].verdict, Verdict::Fail);
        assert!(checks[0].detail.starts_with("0badc0de: 4 refresh tokens"));
    }
}
