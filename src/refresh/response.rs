//! A token response read the way providers actually send it: `expires_in` as a number or a numeric
//! string, `token_type` missing or in any case, `refresh_token_expires_in` when offered — and
//! checked before anything of it is stored: a token, `token_type` or `instance_url` that is present
//! but not what it must be refuses the whole response (see [`crate::untrusted`]).

use oauth2::basic::BasicTokenType;
use oauth2::{AccessToken, RefreshToken, Scope, TokenResponse};
use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use crate::domain::{Secret, TokenSet, UnixTime, clamp_lifetime};
use crate::untrusted::{self, Flaw, MAX_TOKEN_TYPE_BYTES};

/// The token response type handed to oauth2 in place of its strict `BasicTokenResponse`. Reading
/// it never fails over a member's content (only a missing `access_token` makes a body "not a token
/// response"): what is wrong is kept, and [`LenientTokenResponse::into_token_set`] refuses it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(from = "RawResponse")]
pub struct LenientTokenResponse {
    access_token: AccessToken,
    token_type: BasicTokenType,
    expires_in: Option<i64>,
    refresh_token: Option<RefreshToken>,
    refresh_token_expires_in: Option<i64>,
    scope: Option<Vec<Scope>>,
    /// Salesforce's API host for this grant.
    instance_url: Option<String>,
    /// An OpenID Connect ID token, when the provider sent one (a string within the token cap):
    /// the invitation pages read which account consented from it. Never stored.
    #[serde(skip_serializing)]
    id_token: Option<String>,
    /// The first member that failed its check, if any.
    #[serde(skip_serializing)]
    refused: Option<Refused>,
}

/// Why a token response was refused: nothing of it is stored. The message names the member and
/// what is wrong with it, never its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("token response refused: {member} {flaw}")]
pub struct Refused {
    pub member: &'static str,
    pub flaw: Flaw,
}

/// The members as they came, before their checks.
#[derive(Deserialize)]
struct RawResponse {
    /// Required: a body without it is not a token response at all.
    access_token: serde_json::Value,
    /// `null` reads as absent, here and for the other optional members.
    #[serde(default)]
    token_type: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<i64>,
    #[serde(default)]
    refresh_token: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "seconds")]
    refresh_token_expires_in: Option<i64>,
    #[serde(default, deserialize_with = "scope")]
    scope: Option<Vec<Scope>>,
    #[serde(default)]
    instance_url: Option<serde_json::Value>,
    #[serde(default)]
    id_token: Option<serde_json::Value>,
}

impl From<RawResponse> for LenientTokenResponse {
    fn from(raw: RawResponse) -> Self {
        let mut refused = None;
        let mut note = |member: &'static str, flaw: Flaw| {
            refused.get_or_insert(Refused { member, flaw });
        };
        let access_token =
            checked(raw.access_token, untrusted::check_token).unwrap_or_else(|flaw| {
                note("access_token", flaw);
                String::new()
            });
        let refresh_token = raw.refresh_token.and_then(|v| {
            checked(v, untrusted::check_token)
                .map_err(|flaw| note("refresh_token", flaw))
                .ok()
        });
        let token_type = match raw.token_type {
            None => BasicTokenType::Bearer,
            // An empty token_type is read as absent, like a missing one.
            Some(serde_json::Value::String(t)) if t.is_empty() => BasicTokenType::Bearer,
            Some(v) => checked(v, |t| {
                untrusted::check_visible_ascii(t, MAX_TOKEN_TYPE_BYTES)
            })
            .map_or_else(
                |flaw| {
                    note("token_type", flaw);
                    BasicTokenType::Bearer
                },
                token_type,
            ),
        };
        let instance_url = raw.instance_url.and_then(|v| {
            checked(v, untrusted::check_https_url)
                .map_err(|flaw| note("instance_url", flaw))
                .ok()
        });
        Self {
            access_token: AccessToken::new(access_token),
            token_type,
            expires_in: raw.expires_in,
            refresh_token: refresh_token.map(RefreshToken::new),
            refresh_token_expires_in: raw.refresh_token_expires_in,
            scope: raw.scope,
            instance_url,
            id_token: raw
                .id_token
                .and_then(|v| checked(v, untrusted::check_token).ok()),
            refused,
        }
    }
}

impl LenientTokenResponse {
    /// The ID token, when the provider sent a usable one.
    #[must_use]
    pub fn id_token(&self) -> Option<&str> {
        self.id_token.as_deref()
    }
}

/// A JSON string that passes `check`.
fn checked(
    value: serde_json::Value,
    check: impl Fn(&str) -> Result<(), Flaw>,
) -> Result<String, Flaw> {
    match value {
        serde_json::Value::String(s) => check(&s).map(|()| s),
        _ => Err(Flaw::NotString),
    }
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
    /// The tokens with absolute expiry times, or why the response is refused. A missing
    /// `expires_in` falls back to the provider's `default_expires_in`, a new refresh token without
    /// `refresh_token_expires_in` to `refresh_token_lifetime` when known; every access-token
    /// lifetime is clamped to a sane range, and shortened to the token's own `exp` claim when it
    /// is a JWT that expires earlier.
    pub fn into_token_set(
        self,
        now: UnixTime,
        default_expires_in: i64,
        refresh_token_lifetime: Option<i64>,
    ) -> Result<TokenSet, Refused> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        let token_type = match self.token_type {
            BasicTokenType::Bearer => "Bearer".to_owned(),
            BasicTokenType::Mac => "MAC".to_owned(),
            BasicTokenType::Extension(other) => other,
        };
        let refresh_token = self.refresh_token.map(|t| Secret::new(t.into_secret()));
        let refresh_token_expires_at = self
            .refresh_token_expires_in
            .filter(|s| *s > 0)
            .or(refresh_token.as_ref().and(refresh_token_lifetime))
            .map(|s| now.saturating_add(s));
        let expires_at = now + clamp_lifetime(self.expires_in.unwrap_or(default_expires_in));
        // An access token that is a JWT knows its own expiry; when it is earlier (a replayed
        // response with a fresh expires_in), it wins. It never lengthens the lifetime.
        let expires_at = super::jwt::expiry(self.access_token.secret())
            .map_or(expires_at, |exp| expires_at.min(exp));
        Ok(TokenSet {
            access_token: Secret::new(self.access_token.into_secret()),
            token_type,
            expires_at,
            refresh_token,
            refresh_token_expires_at,
            lifetime_reported: self.expires_in.is_some(),
            instance_url: self.instance_url,
            scope: self
                .scope
                .map(|v| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        })
    }
}

/// A string, or `None` for any other JSON type: a side field of an odd type must never make a
/// token response (and the refresh token it may carry) unreadable.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// `Bearer` and `MAC` in any case; any other (checked) value as it came.
fn token_type(t: String) -> BasicTokenType {
    if t.eq_ignore_ascii_case("bearer") {
        BasicTokenType::Bearer
    } else if t.eq_ignore_ascii_case("mac") {
        BasicTokenType::Mac
    } else {
        BasicTokenType::Extension(t)
    }
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
            .unwrap()
    }

    fn refused(json: &str) -> String {
        serde_json::from_str::<LenientTokenResponse>(json)
            .unwrap()
            .into_token_set(1000, 3600, None)
            .unwrap_err()
            .to_string()
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
            parse(r#"{"access_token":"a","refresh_token":null}"#)
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
                .unwrap()
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
    fn an_odd_scope_does_not_lose_the_tokens() {
        let t =
            parse(r#"{"access_token":"a","refresh_token":"r2","scope":["x"],"token_type":null}"#);
        assert_eq!(
            (t.token_type.as_str(), t.refresh_token.unwrap().expose()),
            ("Bearer", "r2")
        );
        assert!(t.scope.is_none());
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":""}"#).token_type,
            "Bearer"
        );
    }

    #[test]
    fn tokens_that_are_not_visible_ascii_refuse_the_response() {
        for (json, reason) in [
            (r#"{"access_token":""}"#, "access_token is empty"),
            (r#"{"access_token":null}"#, "access_token is not a string"),
            (r#"{"access_token":12345}"#, "access_token is not a string"),
            (
                r#"{"access_token":"a\nb"}"#,
                "access_token holds a control character",
            ),
            (
                r#"{"access_token":"a\u001b[2Jb"}"#,
                "access_token holds a control character",
            ),
            (r#"{"access_token":"a b"}"#, "access_token holds a space"),
            (
                r#"{"access_token":"caf\u00e9"}"#,
                "access_token holds a character outside ASCII",
            ),
            (
                r#"{"access_token":"a","refresh_token":""}"#,
                "refresh_token is empty",
            ),
            (
                r#"{"access_token":"a","refresh_token":["r"]}"#,
                "refresh_token is not a string",
            ),
            (
                r#"{"access_token":"a","refresh_token":"r\r\n"}"#,
                "refresh_token holds a control character",
            ),
        ] {
            assert_eq!(
                refused(json),
                format!("token response refused: {reason}"),
                "{json}"
            );
        }
        let long = format!(r#"{{"access_token":"{}"}}"#, "x".repeat(16 * 1024 + 1));
        assert_eq!(
            refused(&long),
            "token response refused: access_token is longer than 16384 bytes"
        );
        let at_cap = format!(r#"{{"access_token":"{}"}}"#, "x".repeat(16 * 1024));
        assert_eq!(parse(&at_cap).access_token.expose().len(), 16 * 1024);
        // Salesforce's access tokens hold '!'.
        assert_eq!(
            parse(r#"{"access_token":"00D5g!AQ4AQ.x"}"#)
                .access_token
                .expose(),
            "00D5g!AQ4AQ.x"
        );
    }

    #[test]
    fn a_bad_token_type_or_instance_url_refuses_the_response() {
        for (json, reason) in [
            (
                r#"{"access_token":"a","token_type":7}"#,
                "token_type is not a string",
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer\n"}"#,
                "token_type holds a control character",
            ),
            (
                r#"{"access_token":"a","token_type":"Be arer"}"#,
                "token_type holds a space",
            ),
            (
                r#"{"access_token":"a","instance_url":{}}"#,
                "instance_url is not a string",
            ),
            (
                r#"{"access_token":"a","instance_url":"http://acme.my.salesforce.com"}"#,
                "instance_url is not an https URL",
            ),
            (
                r#"{"access_token":"a","instance_url":"https://acme\u001b.com"}"#,
                "instance_url holds a control character",
            ),
        ] {
            assert_eq!(
                refused(json),
                format!("token response refused: {reason}"),
                "{json}"
            );
        }
        let long = format!(
            r#"{{"access_token":"a","token_type":"{}"}}"#,
            "x".repeat(65)
        );
        assert_eq!(
            refused(&long),
            "token response refused: token_type is longer than 64 bytes"
        );
        assert!(
            parse(r#"{"access_token":"a","instance_url":null}"#)
                .instance_url
                .is_none()
        );
    }

    #[test]
    fn the_first_flaw_is_named_and_no_value_is() {
        let reason = refused(r#"{"access_token":"at-canary x","refresh_token":"rt-canary\n"}"#);
        assert_eq!(reason, "token response refused: access_token holds a space");
        assert!(!reason.contains("canary"));
    }

    #[test]
    fn a_jwt_access_token_that_expires_earlier_shortens_the_expiry() {
        // {"sub":"x","exp":2000}: the replayed original token, sent with a fresh expires_in.
        let replayed = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjoyMDAwfQ.c2ln";
        let json = |expires_in: i64| {
            format!(r#"{{"access_token":"{replayed}","expires_in":{expires_in}}}"#)
        };
        assert_eq!(parse(&json(3600)).expires_at, 2000, "exp is earlier");
        assert_eq!(parse(&json(600)).expires_at, 1600, "expires_in is earlier");
        // Without expires_in, the default lifetime is shortened the same way.
        let no_lifetime = format!(r#"{{"access_token":"{replayed}"}}"#);
        assert_eq!(parse(&no_lifetime).expires_at, 2000);
        // Not a JWT, or a JWT without a usable exp: expires_in alone.
        for token in ["a.b.c", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"] {
            let json = format!(r#"{{"access_token":"{token}","expires_in":3600}}"#);
            assert_eq!(parse(&json).expires_at, 4600, "{token}");
        }
    }

    #[test]
    fn no_access_token_is_not_a_token_response() {
        assert!(
            serde_json::from_str::<LenientTokenResponse>(r#"{"error":"invalid_grant"}"#).is_err()
        );
    }
}
