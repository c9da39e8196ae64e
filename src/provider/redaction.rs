//! The one redaction list of a provider: its client secret in every form it leaves tokenwarden in
//! (as it is, form-urlencoded in a `client_secret_post` body, percent-encoded, and inside the HTTP
//! Basic header as base64 of `id:secret`, raw and form-urlencoded as RFC 6749 §2.3.1 sends it), so
//! that a provider quoting a request back in its error text cannot put the secret into a log line,
//! the journal, `last_error` or a page. Every path that carries provider text (refresh, revoke,
//! the authorization code exchange, the device grant, doctor's probe) blanks these out with
//! [`crate::domain::sanitize`], beside the request's own tokens. Pure; imports `domain`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::domain::Secret;

/// Every form of `secret` (the client secret of `client_id`) that a request carries; no duplicates.
#[must_use]
pub fn secret_forms(client_id: &str, secret: &Secret) -> Vec<Secret> {
    let raw = secret.expose();
    if raw.is_empty() {
        return Vec::new();
    }
    let form = form_encode(raw);
    let forms = [
        raw.to_owned(),
        form.clone(),
        percent_encode(raw),
        STANDARD.encode(format!("{client_id}:{raw}")),
        STANDARD.encode(format!("{}:{form}", form_encode(client_id))),
    ];
    let mut out: Vec<Secret> = Vec::with_capacity(forms.len());
    for text in forms {
        if !out.iter().any(|s| s.expose() == text) {
            out.push(Secret::new(text));
        }
    }
    out
}

/// `application/x-www-form-urlencoded`, as a form body and RFC 6749's Basic header encode it.
fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// RFC 3986 percent-encoding: every byte but the unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sanitize;

    #[test]
    fn every_form_of_the_secret_is_listed_once() {
        let forms = secret_forms("my client", &Secret::new("s3cr3t+/ &=x"));
        let texts: Vec<&str> = forms.iter().map(Secret::expose).collect();
        assert_eq!(
            texts,
            [
                "s3cr3t+/ &=x",
                "s3cr3t%2B%2F+%26%3Dx",
                "s3cr3t%2B%2F%20%26%3Dx",
                STANDARD.encode("my client:s3cr3t+/ &=x").as_str(),
                STANDARD.encode("my+client:s3cr3t%2B%2F+%26%3Dx").as_str(),
            ]
        );
        let plain = secret_forms("c", &Secret::new("plain-secret-value"));
        assert_eq!(
            plain.len(),
            2,
            "the secret and one Basic form: the encoded ones are the same text"
        );
        assert!(secret_forms("c", &Secret::new("")).is_empty());
    }

    #[test]
    fn an_echoed_request_is_blanked_out() {
        let secret = Secret::new("s3cr3t+/ &=x");
        let forms = secret_forms("cid", &secret);
        let refs: Vec<&Secret> = forms.iter().collect();
        let basic = STANDARD.encode("cid:s3cr3t%2B%2F+%26%3Dx");
        let echo = format!(
            "bad request: client_secret=s3cr3t%2B%2F+%26%3Dx&grant_type=refresh_token; Authorization: Basic {basic}"
        );
        let shown = sanitize(&echo, &refs);
        assert!(
            !shown.contains("s3cr3t") && !shown.contains(&basic),
            "{shown}"
        );
    }
}
