//! Text that comes from outside (a provider's token response, an older database): the rules a
//! value must pass before it is stored or printed. Pure functions; imports nothing from the crate.

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

#[cfg(test)]
mod tests {
    use super::*;

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
