//! The words a credential's row and its journal carry — grant type, status, trigger, outcome —
//! as enums, read from their stored text at the store's edge (`TryFrom<String>`).

use std::fmt;
use std::str::FromStr;

/// How a credential obtains new access tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantType {
    RefreshToken,
    ClientCredentials,
    /// RFC 7523 §2.1: each access token for a freshly signed assertion; no refresh token.
    JwtBearer,
}

impl GrantType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::JwtBearer => "jwt_bearer",
        }
    }
}

impl FromStr for GrantType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refresh_token" => Ok(Self::RefreshToken),
            "client_credentials" => Ok(Self::ClientCredentials),
            "jwt_bearer" => Ok(Self::JwtBearer),
            other => Err(format!(
                "unknown grant type {other:?} (expected refresh_token, client_credentials or jwt_bearer)"
            )),
        }
    }
}

/// As for [`Status`]: typed from the store's edge on.
impl TryFrom<String> for GrantType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl serde::Serialize for GrantType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where a credential stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Kept fresh by the sweep.
    Active,
    /// The provider rejected the grant for good; an admin must authorize again.
    NeedsReauthorization,
    /// Left alone by the sweep on purpose.
    Disabled,
}

impl Status {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedsReauthorization => "needs_reauthorization",
            Self::Disabled => "disabled",
        }
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "needs_reauthorization" => Ok(Self::NeedsReauthorization),
            "disabled" => Ok(Self::Disabled),
            other => Err(format!("unknown status {other:?}")),
        }
    }
}

/// Rows carry the status as text; `FromRow` reads it through this (`#[sqlx(try_from = "String")]`),
/// so a status is typed from the store's edge on.
impl TryFrom<String> for Status {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What started a refresh attempt; recorded in the rotation journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A tick of the daemon's schedule (and its sweep at start).
    Schedule,
    /// `tokenwarden run --once`.
    Once,
    /// `tokenwarden refresh NAME`.
    Manual,
}

impl Trigger {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Once => "once",
            Self::Manual => "manual",
        }
    }
}

/// How a journaled attempt ended: the `token_rotation.outcome` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Journaled before the request; not finished (yet).
    Pending,
    Refreshed,
    /// A transient failure: retried after backoff.
    Transient,
    /// A token response refused by its checks; nothing of it stored.
    RefusedResponse,
    NeedsReauthorization,
    ClientRejected,
    ProviderMissing,
    /// The refresh token is sealed under a key this process lacks: not sent.
    KeyMissing,
    /// The credential changed while the request was out; nothing stored.
    Superseded,
    /// Its process died before it finished.
    Interrupted,
    Authorized,
    Revoked,
    RevocationPending,
    RevocationRefused,
}

impl Outcome {
    const ALL: [Self; 14] = [
        Self::Pending,
        Self::Refreshed,
        Self::Transient,
        Self::RefusedResponse,
        Self::NeedsReauthorization,
        Self::ClientRejected,
        Self::ProviderMissing,
        Self::KeyMissing,
        Self::Superseded,
        Self::Interrupted,
        Self::Authorized,
        Self::Revoked,
        Self::RevocationPending,
        Self::RevocationRefused,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Refreshed => "refreshed",
            Self::Transient => "transient",
            Self::RefusedResponse => "refused_response",
            Self::NeedsReauthorization => "needs_reauthorization",
            Self::ClientRejected => "client_rejected",
            Self::ProviderMissing => "provider_missing",
            Self::KeyMissing => "key_missing",
            Self::Superseded => "superseded",
            Self::Interrupted => "interrupted",
            Self::Authorized => "authorized",
            Self::Revoked => "revoked",
            Self::RevocationPending => "revocation_pending",
            Self::RevocationRefused => "revocation_refused",
        }
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown journal outcome {s:?}"))
    }
}

/// Rows carry the outcome as text; `FromRow` reads it through this.
impl TryFrom<String> for Outcome {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_outcomes_round_trip_through_their_words() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
        }
        assert!("refreshd".parse::<Outcome>().is_err());
    }
}
