//! The access token as an HTTP Authorization header line (`token --header`, a sink of format
//! `header`, the proxy). Imports `domain`.

use crate::domain::Secret;

/// `Authorization: <type> <token>`. The type is the stored `token_type` (any case of `bearer`
/// becomes `Bearer`; none is `Bearer`); a type or token that could break the header line
/// (spaces, control characters, anything but visible ASCII) is refused, and never shown.
pub fn authorization_header(token_type: Option<&str>, token: &Secret) -> Result<Secret, String> {
    let kind = match token_type.map(str::trim) {
        None | Some("") => "Bearer",
        Some(t) if t.eq_ignore_ascii_case("bearer") => "Bearer",
        Some(t) => t,
    };
    if !kind
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(c))
    {
        return Err("its token_type cannot be put in an Authorization header".to_owned());
    }
    let value = token.expose();
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "its access token has characters that cannot go into an Authorization header"
                .to_owned(),
        );
    }
    Ok(Secret::new(format!("Authorization: {kind} {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_in_any_case_or_missing_is_bearer() {
        let t = Secret::new("abc.def-123");
        for kind in [
            None,
            Some("bearer"),
            Some("BEARER"),
            Some("Bearer"),
            Some(""),
        ] {
            assert_eq!(
                authorization_header(kind, &t).unwrap().expose(),
                "Authorization: Bearer abc.def-123"
            );
        }
        assert_eq!(
            authorization_header(Some("DPoP"), &t).unwrap().expose(),
            "Authorization: DPoP abc.def-123"
        );
    }

    #[test]
    fn nothing_that_breaks_the_line_and_no_token_in_the_reason() {
        let t = Secret::new("secret-canary");
        assert!(authorization_header(Some("Bearer\r\nX-Evil: 1"), &t).is_err());
        let bad = Secret::new("tok en\nX-Evil: 1");
        let why = authorization_header(None, &bad).unwrap_err();
        assert!(!why.contains("tok en"), "{why}");
        assert!(authorization_header(None, &Secret::new("")).is_err());
        assert!(
            !authorization_header(Some("a b"), &t)
                .unwrap_err()
                .contains("secret-canary")
        );
    }
}
