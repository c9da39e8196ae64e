//! How settings' values are read from TOML and the environment: durations as seconds or
//! humantime text, word lists as arrays or space-separated strings, `refresh_token_reuse` as a
//! word or a grace window.

use std::fmt;
use std::time::Duration;

use serde::de;
use serde::{Deserialize, Deserializer};

use crate::domain::RefreshTokenReuse;

/// A duration as whole seconds (`600`) or a humantime string (`"10m"`, `"1h 30m"`).
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"10m\" or a number of seconds")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            let v = v.trim();
            if let Ok(secs) = v.parse::<u64>() {
                return Ok(Duration::from_secs(secs));
            }
            humantime::parse_duration(v)
                .map_err(|e| E::custom(format!("{v:?} is not a duration: {e}")))
        }
    }
    d.deserialize_any(Visitor)
}

/// An optional [`duration`].
pub(super) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A TOML list of strings, or one space-separated string (handy in environment variables).
pub(super) fn words<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scopes {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Scopes::deserialize(d)? {
        Scopes::One(s) => s.split_whitespace().map(str::to_owned).collect(),
        Scopes::Many(v) => v,
    })
}

/// Longest grace window `refresh_token_reuse` accepts: providers document seconds to minutes
/// (Okta 30 s to 60 s, Cognito up to 60 s); a longer one is a mistake or means `"stays-valid"`.
const MAX_REUSE_WINDOW_SECS: u64 = 24 * 3600;

/// `refresh_token_reuse`: `"none"`, `"stays-valid"`, or a grace window (`"30s"`, `30`); a zero
/// window is `"none"`.
pub(super) fn reuse<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<RefreshTokenReuse>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(i64),
        Text(String),
    }
    let window = |secs: u64| -> Result<RefreshTokenReuse, D::Error> {
        if secs > MAX_REUSE_WINDOW_SECS {
            return Err(de::Error::custom(format!(
                "a grace window of {secs} s is longer than a day; use \"stays-valid\" if refresh tokens stay valid after use"
            )));
        }
        Ok(match i64::try_from(secs) {
            Ok(0) | Err(_) => RefreshTokenReuse::None,
            Ok(s) => RefreshTokenReuse::Within(s),
        })
    };
    let expected = "\"none\", \"stays-valid\" or a grace window such as \"30s\"";
    match Raw::deserialize(d)? {
        Raw::Secs(secs) => window(
            u64::try_from(secs)
                .map_err(|_| de::Error::custom("a grace window cannot be negative"))?,
        )
        .map(Some),
        Raw::Text(text) => match text.trim() {
            "none" => Ok(Some(RefreshTokenReuse::None)),
            "stays-valid" => Ok(Some(RefreshTokenReuse::StaysValid)),
            other if other.parse::<u64>().is_ok() => window(other.parse().unwrap_or(0)).map(Some),
            other => match humantime::parse_duration(other) {
                Ok(d) => window(d.as_secs()).map(Some),
                Err(_) => Err(de::Error::custom(format!("{other:?} is not {expected}"))),
            },
        },
    }
}

/// A file mode as an octal string (`"0640"`, `"640"`), at most `0777`.
pub fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let text = String::deserialize(d)?;
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a file mode such as \"0640\""))
        })
}
