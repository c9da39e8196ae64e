//! The `[enroll]` table: where the invitation pages are served and under which public URL their
//! links are printed (`tokenwarden invite`, the pages of `tokenwarden run`). Absent: no links, no
//! pages.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, de, invalid};

/// Where `run` listens for the pages when `listen` is not given: loopback, behind the operator's
/// HTTPS reverse proxy.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";

/// `[enroll]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollSettings {
    /// The pages' address as the owner's browser reaches it (the reverse proxy's): links are
    /// printed under it, and the provider redirects to it + `/callback`. https (http only for a
    /// loopback host); no query or fragment.
    pub public_url: String,
    /// Address `run` serves the pages on; loopback unless you mean it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How long a link lives when `invite` is given no `--valid`.
    #[serde(default = "default_link_valid", deserialize_with = "de::duration")]
    pub link_valid: Duration,
    /// How long an owner has between the page's button and the provider's redirect back.
    #[serde(default = "default_sign_in_timeout", deserialize_with = "de::duration")]
    pub sign_in_timeout: Duration,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

fn default_link_valid() -> Duration {
    Duration::from_hours(24)
}

fn default_sign_in_timeout() -> Duration {
    Duration::from_mins(15)
}

impl EnrollSettings {
    /// `public_url` without a trailing slash: links are `{base}/i/{secret}`.
    #[must_use]
    pub fn base_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// The redirect URI the provider must allow: `public_url` + `/callback`.
    #[must_use]
    pub fn callback_url(&self) -> String {
        format!("{}/callback", self.base_url())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.public_url).map_err(|e| {
            invalid(
                "enroll.public_url",
                format!("{:?} is not a URL: {e}", self.public_url),
            )
        })?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(invalid(
                "enroll.public_url",
                "must be https (plain http only for a loopback host): owners sign in through it",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(invalid(
                "enroll.public_url",
                "must have no user, query or fragment",
            ));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "enroll.listen",
                format!(
                    "{:?} is not an address such as {DEFAULT_LISTEN}",
                    self.listen
                ),
            ));
        }
        if self.link_valid < Duration::from_mins(1)
            || self.link_valid > Duration::from_hours(30 * 24)
        {
            return Err(invalid("enroll.link_valid", "must be between 1m and 30d"));
        }
        if self.sign_in_timeout < Duration::from_mins(1)
            || self.sign_in_timeout > Duration::from_hours(1)
        {
            return Err(invalid(
                "enroll.sign_in_timeout",
                "must be between 1m and 1h",
            ));
        }
        Ok(())
    }
}
