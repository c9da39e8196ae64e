//! A token response read the way providers actually send it: `expires_in` as a number or a numeric
//! string, `token_type` missing or in any case, `refresh_token_expires_in` when offered.

use oauth2::basic::BasicTokenType;
use oauth2::{AccessToken, RefreshToken, Scope, TokenResponse};
use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use crate::domain::{Secret, TokenSet, UnixTime, clamp_lifetime};

/// The token response type handed to oauth2 in place of its strict `BasicTokenResponse`.
#[derive(Debug, Deserialize, Serialize)]
pub struct LenientTokenResponse {
    access_token: AccessToken,
    #[serde(default = "bearer", deserialize_with = "token_type")]
    token_type: BasicTokenType,
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<i64>,
    refresh_token: Option<RefreshToken>,
    #[serde(default, deserialize_with = "seconds")]
    refresh_token_expires_in: Option<i64>,
    #[serde(default, deserialize_with = "scope")]
    scope: Option<Vec<Scope>>,
    /// Salesforce's API host for this grant.
    #[serde(default, deserialize_with = "lenient_string")]
    instance_url: Option<String>,
}

impl TokenResponse for LenientTokenResponse {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<std::time::Duration> {
        self.expires_in
            .map(|s| std::time::Duration::from_secs(clamp_lifetime(s) as u64))
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scope.as_ref()
    }
}

impl LenientTokenResponse {
    /// The tokens with absolute expiry times. A missing `expires_in` falls back to the provider's
    /// `default_expires_in`, a new refresh token without `refresh_token_expires_in` to
    /// `refresh_token_lifetime` when known; every access-token lifetime is clamped to a sane range.
    #[must_use]
    pub fn into_token_set(
        self,
        now: UnixTime,
        default_expires_in: i64,
        refresh_token_lifetime: Option<i64>,
    ) -> TokenSet {
        let token_type = match self.token_type {
            BasicTokenType::Bearer => "Bearer".to_owned(),
            BasicTokenType::Mac => "MAC".to_owned(),
            BasicTokenType::Extension(other) => other,
        };
        let refresh_token = self
            .refresh_token
            .map(|t| Secret::new(t.into_secret()))
            .filter(|t| !t.expose().is_empty());
        let refresh_token_expires_at = self
            .refresh_token_expires_in
            .filter(|s| *s > 0)
            .or(refresh_token.as_ref().and(refresh_token_lifetime))
            .map(|s| now.saturating_add(s));
        TokenSet {
            access_token: Secret::new(self.access_token.into_secret()),
            token_type,
            expires_at: now + clamp_lifetime(self.expires_in.unwrap_or(default_expires_in)),
            refresh_token,
            refresh_token_expires_at,
            lifetime_reported: self.expires_in.is_some(),
            instance_url: self.instance_url.filter(|u| u.starts_with("https://")),
            scope: self
                .scope
                .map(|v| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        }
    }
}

fn bearer() -> BasicTokenType {
    BasicTokenType::Bearer
}

/// A string, or `None` for any other JSON type: a side field of an odd type must never make a
/// token response (and the refresh token it may carry) unreadable.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

fn token_type<'de, D: Deserializer<'de>>(d: D) -> Result<BasicTokenType, D::Error> {
    Ok(match lenient_string(d)? {
        None => BasicTokenType::Bearer,
        Some(t) if t.eq_ignore_ascii_case("bearer") || t.is_empty() => BasicTokenType::Bearer,
        Some(t) if t.eq_ignore_ascii_case("mac") => BasicTokenType::Mac,
        Some(t) => BasicTokenType::Extension(t),
    })
}

/// Seconds as a JSON number (integer or float) or a numeric string; anything else reads as absent.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    })
}

fn scope<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Scope>>, D::Error> {
    Ok(lenient_string(d)?.map(|s| {
        s.split_whitespace()
            .map(|s| Scope::new(s.to_owned()))
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MAX_LIFETIME_SECS, MIN_LIFETIME_SECS};

    fn parse(json: &str) -> TokenSet {
        serde_json::from_str::<LenientTokenResponse>(json)
            .unwrap()
            .into_token_set(1000, 3600, None)
    }

    #[test]
    fn expires_in_as_number_string_or_missing() {
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"Bearer","expires_in":3599}"#).expires_at,
            4599
        );
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"Bearer","expires_in":"3599"}"#).expires_at,
            4599
        );
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"Bearer"}"#).expires_at,
            4600
        );
    }

    #[test]
    fn strange_lifetimes_are_clamped() {
        assert_eq!(
            parse(r#"{"access_token":"a","expires_in":-5}"#).expires_at,
            1000 + MIN_LIFETIME_SECS
        );
        assert_eq!(
            parse(r#"{"access_token":"a","expires_in":0}"#).expires_at,
            1000 + MIN_LIFETIME_SECS
        );
        assert_eq!(
            parse(r#"{"access_token":"a","expires_in":1e12}"#).expires_at,
            1000 + MAX_LIFETIME_SECS
        );
    }

    #[test]
    fn token_type_missing_or_in_any_case() {
        assert_eq!(parse(r#"{"access_token":"a"}"#).token_type, "Bearer");
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"bearer"}"#).token_type,
            "Bearer"
        );
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"DPoP"}"#).token_type,
            "DPoP"
        );
    }

    #[test]
    fn refresh_token_kept_only_when_sent() {
        let t = parse(
            r#"{"access_token":"a","refresh_token":"r2","refresh_token_expires_in":"7776000","scope":"x y"}"#,
        );
        assert_eq!(t.refresh_token.unwrap().expose(), "r2");
        assert_eq!(t.refresh_token_expires_at, Some(1000 + 7_776_000));
        assert_eq!(t.scope.as_deref(), Some("x y"));
        assert!(
            parse(r#"{"access_token":"a","refresh_token":""}"#)
                .refresh_token
                .is_none()
        );
        assert!(parse(r#"{"access_token":"a"}"#).refresh_token.is_none());
    }

    #[test]
    fn a_known_refresh_token_lifetime_applies_to_new_refresh_tokens_only() {
        let known = |json: &str| {
            serde_json::from_str::<LenientTokenResponse>(json)
                .unwrap()
                .into_token_set(1000, 3600, Some(8_640_000))
        };
        assert_eq!(
            known(r#"{"access_token":"a","refresh_token":"r"}"#).refresh_token_expires_at,
            Some(8_641_000)
        );
        assert_eq!(
            known(r#"{"access_token":"a"}"#).refresh_token_expires_at,
            None
        );
        let reported =
            known(r#"{"access_token":"a","refresh_token":"r","refresh_token_expires_in":60}"#);
        assert_eq!(
            reported.refresh_token_expires_at,
            Some(1060),
            "the provider's word wins"
        );
    }

    #[test]
    fn salesforce_instance_url_and_a_missing_lifetime_are_noted() {
        let t = parse(
            r#"{"access_token":"a","instance_url":"https://acme.my.salesforce.com","issued_at":"1"}"#,
        );
        assert_eq!(
            t.instance_url.as_deref(),
            Some("https://acme.my.salesforce.com")
        );
        assert!(!t.lifetime_reported);
        assert!(parse(r#"{"access_token":"a","expires_in":"60"}"#).lifetime_reported);
    }

    #[test]
    fn odd_side_fields_do_not_lose_the_tokens() {
        let t = parse(
            r#"{"access_token":"a","refresh_token":"r2","token_type":7,"scope":["x"],"instance_url":{}}"#,
        );
        assert_eq!(
            (t.token_type.as_str(), t.refresh_token.unwrap().expose()),
            ("Bearer", "r2")
        );
        assert!(t.scope.is_none() && t.instance_url.is_none());
    }

    #[test]
    fn no_access_token_is_not_a_token_response() {
        assert!(
            serde_json::from_str::<LenientTokenResponse>(r#"{"error":"invalid_grant"}"#).is_err()
        );
    }
}
