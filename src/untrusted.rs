//! Text that comes from outside (a provider's token response, the command line, an older
//! database): the rules a value must pass before it is stored, and how any text is shown on a
//! terminal or in a log line so that none of it can act on the terminal. Pure functions; imports
//! nothing from the crate.

use std::borrow::Cow;
use std::fmt;

/// Longest access or refresh token accepted, in bytes. Real ones are far shorter (Microsoft's
/// JWT access tokens run to a few KiB with many group claims); a longer one is refused.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `token_type` accepted (`Bearer`, `DPoP`, `N_A`…).
pub const MAX_TOKEN_TYPE_BYTES: usize = 64;
/// Longest `instance_url` accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// What is wrong with a value. Its `Display` ("holds a control character") never shows the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    Empty,
    NotString,
    /// Longer than the cap, in bytes.
    TooLong(usize),
    ControlCharacter,
    Space,
    NonAscii,
    NotHttpsUrl,
    /// Neither https nor plain http to a loopback host.
    NotHttpsOrLoopbackUrl,
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
            Self::NotString => f.write_str("is not a string"),
            Self::TooLong(cap) => write!(f, "is longer than {cap} bytes"),
            Self::ControlCharacter => f.write_str("holds a control character"),
            Self::Space => f.write_str("holds a space"),
            Self::NonAscii => f.write_str("holds a character outside ASCII"),
            Self::NotHttpsUrl => f.write_str("is not an https URL"),
            Self::NotHttpsOrLoopbackUrl => {
                f.write_str("is not an https URL (plain http only to 127.0.0.1, ::1 or localhost)")
            }
        }
    }
}

/// Checks that `value` is 1 to `cap` bytes of visible ASCII (0x21–0x7E): what a header value, a
/// shell word and a terminal line can all carry unchanged. RFC 6750's `b64token` is stricter;
/// real providers are not (Salesforce access tokens contain `!`).
pub fn check_visible_ascii(value: &str, cap: usize) -> Result<(), Flaw> {
    if value.is_empty() {
        return Err(Flaw::Empty);
    }
    if value.len() > cap {
        return Err(Flaw::TooLong(cap));
    }
    // Control characters first: they are the dangerous ones, and the reason should say so.
    if value.chars().any(char::is_control) {
        return Err(Flaw::ControlCharacter);
    }
    if value.chars().any(char::is_whitespace) {
        return Err(Flaw::Space);
    }
    if !value.is_ascii() {
        return Err(Flaw::NonAscii);
    }
    Ok(())
}

/// Checks an access or refresh token: visible ASCII, at most [`MAX_TOKEN_BYTES`].
pub fn check_token(value: &str) -> Result<(), Flaw> {
    check_visible_ascii(value, MAX_TOKEN_BYTES)
}

/// Checks a URL a provider names for its API (`instance_url`): visible ASCII, at most
/// [`MAX_URL_BYTES`], an absolute `https` URL with a host.
pub fn check_https_url(value: &str) -> Result<(), Flaw> {
    check_visible_ascii(value, MAX_URL_BYTES)?;
    match url::Url::parse(value) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() => Ok(()),
        _ => Err(Flaw::NotHttpsUrl),
    }
}

/// Checks a URL a provider tells a person to open (the device grant's `verification_uri`):
/// visible ASCII, at most [`MAX_URL_BYTES`], `https` with a host, or plain `http` to a loopback
/// host (a provider on this machine).
pub fn check_browser_url(value: &str) -> Result<(), Flaw> {
    check_visible_ascii(value, MAX_URL_BYTES)?;
    match url::Url::parse(value) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() => Ok(()),
        Ok(url) if url.scheme() == "http" && is_loopback(&url) => Ok(()),
        _ => Err(Flaw::NotHttpsOrLoopbackUrl),
    }
}

/// Whether `url`'s host is this machine: 127.0.0.0/8, `::1` or `localhost`.
#[must_use]
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Longest credential, owner or provider name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// The rule for names, as error messages and the README state it.
pub const NAME_RULE: &str = "1 to 128 characters of ASCII letters, digits and . _ @ + -";

/// Whether `name` (of a credential, an owner, a provider) follows [`NAME_RULE`]: something a
/// shell, a URL path, a log line and a metrics label all carry unchanged.
#[must_use]
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'))
}

/// Whether `scopes` is a space-separated list of RFC 6749 scope tokens (visible ASCII but `"` and
/// `\`), at least one.
#[must_use]
pub fn is_valid_scope_list(scopes: &str) -> bool {
    scopes.split(' ').any(|s| !s.is_empty())
        && scopes
            .bytes()
            .all(|b| b == b' ' || (b.is_ascii_graphic() && b != b'"' && b != b'\\'))
}

/// A name or value to put in an error message: escaped and quoted (`"a\nb"`), cut after 64
/// characters so that a huge argument cannot flood the line.
#[must_use]
pub fn quoted(value: &str) -> String {
    const SHOWN_CHARS: usize = 64;
    let shown: String = value.chars().take(SHOWN_CHARS).collect();
    let more = if shown.len() < value.len() { "…" } else { "" };
    format!("{shown:?}{more}")
}

/// Characters a terminal may act on, or that hide what a line says: control characters (C0, DEL,
/// C1), and the invisible and bidirectional formatting characters of "Trojan Source" text.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `text` with every character a terminal could act on written out as Rust writes it in a
/// string literal (`\n`, `\t`, `\u{1b}`, `\u{202e}`); everything else, `\` included, as it is.
#[must_use]
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Displays a string [`escape`]d: `credential = %Escaped(&name)`, `"{}"` in a table cell.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_urls_are_https_or_loopback_http() {
        for good in [
            "https://microsoft.com/devicelogin",
            "http://127.0.0.1:8080/device",
            "http://[::1]/device",
            "http://localhost/device",
        ] {
            assert_eq!(check_browser_url(good), Ok(()), "{good}");
        }
        for bad in [
            "http://example.com/device",
            "https://ex\u{1b}[2Jample.com",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "",
        ] {
            let bad = bad.replace("\\u{1b}", "\u{1b}");
            assert!(check_browser_url(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_visible_ascii_within_the_cap() {
        for good in [
            "a",
            "eyJhbGciOi.eyJzdWIiOi.c2ln",
            "00D5g000!AQ4AQ.x_y-z~+/=",
            &"x".repeat(MAX_TOKEN_BYTES),
        ] {
            assert_eq!(check_token(good), Ok(()), "{good}");
        }
        for (bad, flaw) in [
            ("", Flaw::Empty),
            ("a\nb", Flaw::ControlCharacter),
            ("a\x1b[2J", Flaw::ControlCharacter),
            ("a\x7f", Flaw::ControlCharacter),
            ("a\u{85}", Flaw::ControlCharacter),
            ("a b", Flaw::Space),
            ("a\u{a0}b", Flaw::Space),
            ("caf\u{e9}", Flaw::NonAscii),
            ("a\u{202e}b", Flaw::NonAscii),
            (
                &"x".repeat(MAX_TOKEN_BYTES + 1),
                Flaw::TooLong(MAX_TOKEN_BYTES),
            ),
        ] {
            assert_eq!(check_token(bad), Err(flaw), "{bad:?}");
        }
    }

    #[test]
    fn a_flaw_never_shows_the_value() {
        assert_eq!(
            Flaw::ControlCharacter.to_string(),
            "holds a control character"
        );
        assert_eq!(
            Flaw::TooLong(MAX_TOKEN_BYTES).to_string(),
            "is longer than 16384 bytes"
        );
    }

    #[test]
    fn names_follow_one_rule() {
        for good in [
            "sharepoint",
            "a",
            "alice@example.com",
            "svc.sp-1_x+y",
            &"n".repeat(128),
        ] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a\nb",
            "a\u{1b}[2J",
            "caf\u{e9}",
            "a/b",
            "a:b",
            "'a'",
            &"n".repeat(129),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn scopes_are_rfc_6749_scope_tokens() {
        assert!(is_valid_scope_list(
            "offline_access https://graph.microsoft.com/.default"
        ));
        for bad in ["", " ", "a\nb", "a\tb", "a\"b", "a\\b", "caf\u{e9}"] {
            assert!(!is_valid_scope_list(bad), "{bad:?}");
        }
    }

    #[test]
    fn escaping_shows_what_a_terminal_would_act_on() {
        assert_eq!(
            escape("plain: text / with \\ and é"),
            "plain: text / with \\ and é"
        );
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("evil\n\u{1b}[2J"), "evil\\n\\u{1b}[2J");
        assert_eq!(escape("a\tb\r\u{7f}\u{85}"), "a\\tb\\r\\u{7f}\\u{85}");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(Escaped("x\ny").to_string(), "x\\ny");
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        assert_eq!(quoted(&"n".repeat(100)), format!("\"{}\"…", "n".repeat(64)));
    }

    #[test]
    fn instance_urls_are_https_with_a_host() {
        assert_eq!(check_https_url("https://acme.my.salesforce.com"), Ok(()));
        for (bad, flaw) in [
            ("http://acme.my.salesforce.com", Flaw::NotHttpsUrl),
            ("acme.my.salesforce.com", Flaw::NotHttpsUrl),
            ("https://", Flaw::NotHttpsUrl),
            ("https://a\n.example.com", Flaw::ControlCharacter),
            ("", Flaw::Empty),
        ] {
            assert_eq!(check_https_url(bad), Err(flaw), "{bad:?}");
        }
    }
}
