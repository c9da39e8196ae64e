//! Secrets in memory and in text: [`Secret`] (no `Display`, `Debug` redacted, a fingerprint
//! for the journal), why a stored one is unreadable, and [`sanitize`] for provider text.

use std::fmt;

use sha2::{Digest, Sha256};

/// A token or other secret value. `Debug` prints `[redacted]` and there is no `Display`: the only
/// way to the value is [`Secret::expose`], so a secret never reaches a log line by accident. Its
/// memory is overwritten with zeros when it is dropped (copies made from `expose` are not).
#[derive(Clone, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself, for the one place that must send or print it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short SHA-256 fingerprint (16 hex digits) that identifies the value without revealing it.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..8])
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a stored secret could not be read back. The messages name no key and no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// Sealed under a key this process was not given: it may belong to a newer configuration, so
    /// the credential waits for it instead of being condemned.
    #[error("is sealed under key {0}, which the configuration does not list")]
    UnknownKey(String),
    /// Not a well-formed sealed value: cut short, or edited.
    #[error("cannot be opened: truncated or altered")]
    Malformed,
    /// Authentication failed: altered, copied from another row or column, or sealed under a
    /// different key with the same id.
    #[error(
        "cannot be opened: tampered, moved from another row or column, or sealed under another key"
    )]
    Tampered,
}

/// Secrets shorter than this many characters cannot be told apart from ordinary text: they are
/// redacted only where they stand as a whole token of it (see [`sanitize`]), and `check-config`
/// warns about them.
pub const MIN_REDACTABLE_CHARS: usize = 8;

/// Shortens free text from a provider for storage and logs, and blanks out any of `secrets` in it.
/// A secret of at least [`MIN_REDACTABLE_CHARS`] is blanked out wherever it occurs; a shorter one
/// only where it stands as a whole token (`token=s&x`, `"s"`, `Bearer s`), so that a one-letter
/// secret does not turn every `s` of the text into `[redacted]`.
#[must_use]
pub fn sanitize(text: &str, secrets: &[&Secret]) -> String {
    const MAX_CHARS: usize = 300;
    // Redact before cutting: a secret straddling the cut must not survive as a prefix.
    let mut redacted = text.to_owned();
    for secret in secrets {
        let value = secret.expose();
        if value.is_empty() {
            continue;
        }
        redacted = if value.chars().count() >= MIN_REDACTABLE_CHARS {
            redacted.replace(value, "[redacted]")
        } else {
            replace_whole_tokens(&redacted, value)
        };
    }
    redacted
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_CHARS)
        .collect()
}

/// Characters that make up a token in provider text (RFC 6750's b64token, without its trailing
/// `=` padding, which is handled on the right side only).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/')
}

/// Whether `side` (the characters next to an occurrence, nearest first) continues the token the
/// occurrence stands in. A letter or digit does; a punctuation character of a token (`.`, `-`…)
/// only when a token character follows it, so that `SECRET.` at the end of a sentence counts as
/// standing alone while `SECRET.x` does not. `=` continues only to the right (base64 padding).
fn continues_token(mut side: impl Iterator<Item = char>, right: bool) -> bool {
    let punct = |c: char| is_token_char(c) || (right && c == '=');
    match side.next() {
        Some(c) if c.is_ascii_alphanumeric() => true,
        Some(c) if punct(c) => side.next().is_some_and(punct),
        _ => false,
    }
}

/// `text` with every occurrence of `value` that stands as a whole token replaced by `[redacted]`.
fn replace_whole_tokens(text: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find(value) {
        let start = from + found;
        let end = start + value.len();
        let alone = !continues_token(text[..start].chars().rev(), false)
            && !continues_token(text[end..].chars(), true);
        if alone {
            out.push_str(&text[rest..start]);
            out.push_str("[redacted]");
            rest = end;
            from = end;
        } else {
            // Step one character on: overlapping occurrences are looked at too.
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    out.push_str(&text[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_hides_value() {
        let s = Secret::new("canary-value");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "canary-value");
    }

    #[test]
    fn fingerprint_is_short_stable_and_not_the_value() {
        let a = Secret::new("abc").fingerprint();
        assert_eq!(a, "ba7816bf8f01cfea");
        assert_eq!(a, Secret::new("abc").fingerprint());
        assert_ne!(a, Secret::new("abd").fingerprint());
    }

    #[test]
    fn sanitize_redacts_and_truncates() {
        let s = Secret::new("tok123");
        assert_eq!(sanitize("bad tok123\nhere", &[&s]), "bad [redacted] here");
        assert_eq!(sanitize(&"x".repeat(1000), &[]).len(), 300);
        let long = Secret::new("z".repeat(40));
        let text = format!("{}{}", "x".repeat(280), long.expose());
        assert!(
            !sanitize(&text, &[&long]).contains("zzzzz"),
            "no prefix of a secret survives the cut"
        );
    }

    #[test]
    fn a_one_letter_secret_leaves_prose_intact() {
        let s = Secret::new("s");
        let prose = "error sending request: Connection refused (os error 111)";
        assert_eq!(sanitize(prose, &[&s]), prose);
    }

    #[test]
    fn a_short_secret_standing_as_a_token_is_still_redacted() {
        let s = Secret::new("s3c");
        for (text, expected) in [
            ("bad ?token=s3c&x=1", "bad ?token=[redacted]&x=1"),
            (
                r#"{"client_secret":"s3c"}"#,
                r#"{"client_secret":"[redacted]"}"#,
            ),
            (
                "Authorization: Bearer s3c",
                "Authorization: Bearer [redacted]",
            ),
            ("s3c was refused", "[redacted] was refused"),
            ("refused: s3c", "refused: [redacted]"),
            ("unknown secret s3c.", "unknown secret [redacted]."),
            ("s3c s3c", "[redacted] [redacted]"),
        ] {
            assert_eq!(sanitize(text, &[&s]), expected, "{text}");
        }
        // Part of a longer token: another value, left alone.
        for text in ["xs3c", "s3cx", "a.s3c", "s3c.b", "s3c==", "a-s3c"] {
            assert_eq!(sanitize(text, &[&s]), text);
        }
    }

    #[test]
    fn a_long_secret_is_redacted_wherever_it_occurs() {
        let s = Secret::new("rt-canary-123");
        assert_eq!(
            sanitize("xrt-canary-123y", &[&s]),
            "x[redacted]y",
            "no part of a long secret is ever shown"
        );
    }
}
