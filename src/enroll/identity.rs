//! Which account consented, and whether it is the one a link was made for. The ID token of the
//! code exchange (sent straight from the token endpoint, over the transport's TLS: OpenID Connect
//! Core 3.1.3.7 lets that stand in for its signature) names the account in `email`,
//! `preferred_username`, `upn` (Entra) or `sub`. When the link's owner looks like an email
//! address (it is then sent as `login_hint` too), an account that the token names with an email
//! address only, and a different one, is refused: the guard against authorizing the wrong
//! mailbox. A provider that names the account with no email address at all cannot be compared:
//! the account is shown, and the authorization stands. Pure. Imports `domain` and `lifecycle`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::lifecycle::authorize::Obtained;

/// Longest account name shown (claims are the provider's text, capped before a page shows it).
const MAX_ACCOUNT_CHARS: usize = 256;

/// The claims that may name the account, in the order they are shown.
const ACCOUNT_CLAIMS: [&str; 4] = ["email", "preferred_username", "upn", "sub"];

/// Whether `text` has the shape of an email address (`local@domain.tld`).
#[must_use]
pub fn looks_like_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        }
        None => false,
    }
}

/// The `login_hint` to send for `owner`: the owner itself when it looks like an email address.
#[must_use]
pub fn login_hint(owner: &str) -> Option<&str> {
    looks_like_email(owner).then_some(owner)
}

/// The account an exchange names (`None`: no ID token, or one that names none), or why it is
/// not the owner's (a sentence for the page).
pub fn check(
    obtained: &Obtained,
    owner: &str,
    login_hint: Option<&str>,
) -> Result<Option<String>, String> {
    let claims = obtained
        .id_token
        .as_ref()
        .and_then(|t| claims(t.expose()))
        .unwrap_or_default();
    let named: Vec<String> = ACCOUNT_CLAIMS
        .iter()
        .filter_map(|k| claims.get(*k)?.as_str())
        .filter(|v| !v.is_empty())
        .map(|v| v.chars().take(MAX_ACCOUNT_CHARS).collect())
        .collect();
    let account = named.first().cloned();
    let expected = login_hint.or_else(|| self::login_hint(owner));
    let Some(expected) = expected else {
        return Ok(account);
    };
    let emails: Vec<&String> = named.iter().filter(|v| looks_like_email(v)).collect();
    if emails.is_empty() || emails.iter().any(|e| e.eq_ignore_ascii_case(expected)) {
        return Ok(account);
    }
    Err(format!(
        "You signed in as {}, but this link is for {expected}.",
        emails[0]
    ))
}

/// The payload of a JWT as a JSON object (no signature check: see the module's header).
fn claims(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Secret, TokenSet};

    fn with_claims(claims: &serde_json::Value) -> Obtained {
        let jwt = format!(
            "eyJhbGciOiJub25lIn0.{}.sig",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        Obtained {
            tokens: TokenSet {
                access_token: Secret::new("at"),
                token_type: "Bearer".to_owned(),
                expires_at: 0,
                refresh_token: None,
                refresh_token_expires_at: None,
                scope: None,
                lifetime_reported: true,
                instance_url: None,
            },
            http_status: Some(200),
            duration_ms: 1,
            id_token: Some(Secret::new(jwt)),
        }
    }

    #[test]
    fn the_owners_mailbox_is_accepted_another_refused() {
        let owner = "Alice@Example.com";
        let ok = with_claims(&serde_json::json!({"sub": "0a1b", "email": "alice@example.com"}));
        assert_eq!(
            check(&ok, owner, None).unwrap().as_deref(),
            Some("alice@example.com")
        );
        let wrong = with_claims(&serde_json::json!({"sub": "0a1b", "upn": "bob@example.com"}));
        let refusal = check(&wrong, owner, None).unwrap_err();
        assert!(refusal.contains("bob@example.com"), "{refusal}");
        // No email-shaped claim: nothing to compare, the account is shown.
        let opaque = with_claims(&serde_json::json!({"sub": "0a1b"}));
        assert_eq!(
            check(&opaque, owner, None).unwrap().as_deref(),
            Some("0a1b")
        );
        // An owner that is no email address is not compared.
        assert!(check(&wrong, "crm-bot", None).is_ok());
    }

    #[test]
    fn hints_go_only_to_email_owners() {
        assert_eq!(login_hint("alice@example.com"), Some("alice@example.com"));
        assert_eq!(login_hint("alice"), None);
        assert_eq!(login_hint("a@b"), None);
        assert!(!looks_like_email("@example.com"));
    }
}
