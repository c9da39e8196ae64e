//! The invitation pages' HTML and headers: one plain server-rendered document per answer, no
//! script, no external resource, every text from outside escaped; a Content-Security-Policy that
//! allows nothing but the page's own style (by hash) and the form's targets. Pure.

use std::fmt::Write as _;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The one style sheet, inline; allowed by its hash, so `style-src` needs no 'unsafe-inline'.
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}\
h1{font-size:1.4rem}dl{display:grid;grid-template-columns:max-content auto;gap:.3rem 1rem}dt{font-weight:600}\
dd{margin:0;word-break:break-all}button{font-size:1rem;padding:.6rem 1.2rem;margin-top:1rem;cursor:pointer}\
.note{color:#555;font-size:.9rem}";

/// Escapes `text` for HTML element content and attribute values.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A whole document: `title` (escaped here) and `body` (HTML the caller built, escaping what it
/// put in).
#[must_use]
pub fn document(title: &str, body: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <meta name=\"robots\" content=\"noindex, nofollow\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><h1>{title}</h1>\n{body}\n</body></html>\n"
    )
}

/// A definition list of `(term, value)`, both escaped.
#[must_use]
pub fn facts(rows: &[(&str, &str)]) -> String {
    let mut out = String::from("<dl>");
    for (term, value) in rows {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(term), escape(value));
    }
    out.push_str("</dl>");
    out
}

/// A paragraph of `text`, escaped.
#[must_use]
pub fn para(text: &str) -> String {
    format!("<p>{}</p>", escape(text))
}

/// The headers every answer carries. `form_to`: the origins a form may be sent to (and the
/// redirect after it followed), besides the page's own.
#[must_use]
pub fn security_headers(form_to: Option<&str>) -> Vec<(&'static str, String)> {
    let style_hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
    let form_action = match form_to {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    vec![
        (
            "Content-Security-Policy",
            format!(
                "default-src 'none'; style-src 'sha256-{style_hash}'; img-src 'none'; \
                 form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
            ),
        ),
        ("X-Frame-Options", "DENY".to_owned()),
        ("X-Content-Type-Options", "nosniff".to_owned()),
        ("Referrer-Policy", "no-referrer".to_owned()),
        ("Cache-Control", "no-store".to_owned()),
        ("Pragma", "no-cache".to_owned()),
        ("Cross-Origin-Opener-Policy", "same-origin".to_owned()),
        ("Cross-Origin-Resource-Policy", "same-origin".to_owned()),
        ("X-Robots-Tag", "noindex, nofollow".to_owned()),
    ]
}

/// The origin (`scheme://host[:port]`) of `url`, for `form-action`; `None` when it has none.
#[must_use]
pub fn origin_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    match url.origin() {
        url::Origin::Tuple(..) => Some(url.origin().ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_outside_is_escaped() {
        assert_eq!(
            escape("<script>\"x\"&'y'</script>\u{7}"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;\u{fffd}"
        );
        let page = document(
            "<b>t</b>",
            &facts(&[("Owner", "<img src=x onerror=alert(1)>")]),
        );
        assert!(!page.contains("<img"));
        assert!(!page.contains("<b>t"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }

    #[test]
    fn the_policy_allows_the_style_by_hash_and_nothing_else() {
        let headers = security_headers(Some("https://login.example.com"));
        let csp = &headers[0].1;
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(csp.contains("form-action 'self' https://login.example.com"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe"));
        assert_eq!(
            origin_of("https://login.example.com:8443/oauth2/authorize?x=1").as_deref(),
            Some("https://login.example.com:8443")
        );
    }
}
