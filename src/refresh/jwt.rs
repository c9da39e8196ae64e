//! The `exp` claim of an access token that is a JWT, read without checking its signature: a
//! response's `expires_in` is not always true (a server replaying a response inside its grace
//! window may send the original access token with a fresh `expires_in`), and the token itself
//! knows better. Only ever used to shorten the expiry; anything that is not a readable JWT is
//! ignored.

use crate::domain::UnixTime;

/// The `exp` claim (seconds since the epoch) of `token` when it is a JWT (three base64url
/// segments) whose payload is a JSON object with a numeric `exp`; `None` for anything else.
#[must_use]
pub fn expiry(token: &str) -> Option<UnixTime> {
    let mut segments = token.split('.');
    let (_header, payload, _signature) = (segments.next()?, segments.next()?, segments.next()?);
    if segments.next().is_some() || payload.is_empty() {
        return None;
    }
    let claims: serde_json::Value = serde_json::from_slice(&base64url(payload)?).ok()?;
    let exp = claims.as_object()?.get("exp")?;
    exp.as_i64()
        .or_else(|| exp.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// Decodes unpadded (or padded) base64url; `None` on any other character.
fn base64url(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWT with `payload` (JSON) as its claims and a made-up signature.
    fn jwt(payload: &str) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJl",
            encode(payload.as_bytes())
        )
    }

    fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn base64url_round_trips() {
        for text in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "{\"exp\":1}",
            "\u{ff}\u{fe}?>",
        ] {
            assert_eq!(
                base64url(&encode(text.as_bytes())).unwrap(),
                text.as_bytes()
            );
        }
        assert_eq!(base64url("YWJj").unwrap(), b"abc");
        assert_eq!(base64url("YQ==").unwrap(), b"a");
        assert!(
            base64url("YW+j").is_none(),
            "standard base64 is not base64url"
        );
    }

    #[test]
    fn exp_of_a_jwt() {
        assert_eq!(
            expiry(&jwt(r#"{"sub":"x","exp":1700003600}"#)),
            Some(1_700_003_600)
        );
        assert_eq!(expiry(&jwt(r#"{"exp":1700003600.5}"#)), Some(1_700_003_600));
    }

    #[test]
    fn anything_else_is_ignored() {
        for token in [
            "opaque-access-token".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "h..s".to_owned(),
            "h.!!!.s".to_owned(),
            jwt("not json"),
            jwt(r#"["exp",1]"#),
            jwt(r#"{"sub":"x"}"#),
            jwt(r#"{"exp":"1700003600"}"#),
            jwt(r#"{"exp":null}"#),
            // A JWE has five segments.
            "a.b.c.d.e".to_owned(),
        ] {
            assert_eq!(expiry(&token), None, "{token}");
        }
    }
}
