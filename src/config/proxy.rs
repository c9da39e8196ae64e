//! A `[[proxy]]` block: one authenticating route (where it listens, which credential's header it
//! adds, where it forwards) and its checks. Read here, served by `crate::proxy`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, de, invalid};

/// `upstream = "instance_url"`: the credential's own API host (Salesforce's `instance_url`).
pub const UPSTREAM_INSTANCE_URL: &str = "instance_url";
/// Largest `retry_body_max` accepted: kept bodies are held in memory per request.
pub const RETRY_BODY_CEILING: usize = 64 * 1024 * 1024;

/// One `[[proxy]]` route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// Names the route in log lines, metrics and error bodies; defaults to the credential's name
    /// (or the provider's).
    pub name: Option<String>,
    /// `HOST:PORT` (loopback unless `allow_remote`), or `unix:/absolute/path`.
    pub listen: String,
    /// Accept a TCP `listen` address that is not loopback: anyone who can reach it uses the
    /// credential.
    #[serde(default)]
    pub allow_remote: bool,
    /// The credential whose token is added.
    pub credential: Option<String>,
    /// Instead of `credential`: this provider's credential owned by the unix peer's user name
    /// (unix `listen` only).
    pub provider: Option<String>,
    /// Base URL requests are forwarded to (`https://`; `http://` to loopback or with
    /// `allow_insecure_http`), or `"instance_url"` for the credential's own.
    pub upstream: String,
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Add `X-Forwarded-For`, `-Proto` and `-Host` to forwarded requests.
    #[serde(default)]
    pub x_forwarded: bool,
    /// Renew before sending when the token expires sooner than this.
    #[serde(default = "default_min_valid", deserialize_with = "de::duration")]
    pub min_valid: Duration,
    /// Longest wait for a connection to the upstream.
    #[serde(default = "default_connect_timeout", deserialize_with = "de::duration")]
    pub connect_timeout: Duration,
    /// Longest silence while reading the upstream's answer.
    #[serde(default = "default_idle_timeout", deserialize_with = "de::duration")]
    pub idle_timeout: Duration,
    /// Longest a whole exchange may take, the last byte of the answer included.
    #[serde(default = "default_request_timeout", deserialize_with = "de::duration")]
    pub request_timeout: Duration,
    /// Longest a client may take to send a request head.
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "de::duration"
    )]
    pub header_read_timeout: Duration,
    /// Request bodies up to this size (declared by Content-Length) are kept so that the request
    /// can be sent again after a renewal on 401; larger ones are streamed and cannot be.
    #[serde(default = "default_retry_body_max")]
    pub retry_body_max: usize,
    /// Most client connections served at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_min_valid() -> Duration {
    Duration::from_mins(1)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_mins(1)
}
fn default_request_timeout() -> Duration {
    Duration::from_mins(5)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_body_max() -> usize {
    1024 * 1024
}
fn default_max_connections() -> usize {
    256
}

/// Where a route listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Which credential a route uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyCredential {
    Named(String),
    /// The credential of this provider whose owner is the unix peer's user name.
    OwnedAt(String),
}

/// Where a route forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyUpstream {
    Url(url::Url),
    /// The credential's `instance_url`.
    InstanceUrl,
}

impl ProxySettings {
    /// The route's name (validated by `check`).
    #[must_use]
    pub fn route_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.credential.as_deref())
            .or(self.provider.as_deref())
            .unwrap_or("proxy")
    }

    /// The parsed `listen` (validated by `check`).
    pub fn listen(&self, key: &str) -> Result<ProxyListen, ConfigError> {
        if let Some(path) = self.listen.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(invalid(
                    format!("{key}.listen"),
                    format!("{:?}: a unix socket path must be absolute", self.listen),
                ));
            }
            return Ok(ProxyListen::Unix(path));
        }
        let address: SocketAddr = self.listen.parse().map_err(|_| {
            invalid(
                format!("{key}.listen"),
                format!(
                    "{:?} is not an address such as 127.0.0.1:8081 or unix:/run/tokenwarden/graph.sock",
                    self.listen
                ),
            )
        })?;
        if !address.ip().is_loopback() && !self.allow_remote {
            return Err(invalid(
                format!("{key}.listen"),
                format!(
                    "{address} is not a loopback address: anyone who reaches it calls the API as the credential; set allow_remote = true if you mean it"
                ),
            ));
        }
        Ok(ProxyListen::Tcp(address))
    }

    /// The credential, by name or by provider and peer.
    pub fn which(&self, key: &str) -> Result<ProxyCredential, ConfigError> {
        match (&self.credential, &self.provider) {
            (Some(name), None) => Ok(ProxyCredential::Named(name.clone())),
            (None, Some(provider)) => Ok(ProxyCredential::OwnedAt(provider.clone())),
            _ => Err(invalid(
                key,
                "set exactly one of credential (a name) or provider (the unix peer's own credential)",
            )),
        }
    }

    /// The parsed `upstream`.
    pub fn upstream(&self, key: &str) -> Result<ProxyUpstream, ConfigError> {
        if self.upstream == UPSTREAM_INSTANCE_URL {
            return Ok(ProxyUpstream::InstanceUrl);
        }
        let key = format!("{key}.upstream");
        super::check_endpoint(&key, &self.upstream, self.allow_insecure_http)?;
        let url = url::Url::parse(&self.upstream)
            .map_err(|e| invalid(&key, format!("{:?} is not a URL: {e}", self.upstream)))?;
        if url.host().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(invalid(
                &key,
                "a base URL has a host and no user, password, query or fragment",
            ));
        }
        Ok(ProxyUpstream::Url(url))
    }

    /// Every check of one block; `key` is `proxy[N]`.
    pub(super) fn validate(
        &self,
        key: &str,
        providers: &std::collections::BTreeMap<String, super::ProviderSettings>,
    ) -> Result<(), ConfigError> {
        if !crate::untrusted::is_valid_name(self.route_name()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("route names are {}", crate::untrusted::NAME_RULE),
            ));
        }
        let listen = self.listen(key)?;
        match self.which(key)? {
            ProxyCredential::Named(name) if !crate::untrusted::is_valid_name(&name) => {
                return Err(invalid(
                    format!("{key}.credential"),
                    format!("credential names are {}", crate::untrusted::NAME_RULE),
                ));
            }
            ProxyCredential::OwnedAt(provider) => {
                if !providers.contains_key(&provider) {
                    return Err(invalid(
                        format!("{key}.provider"),
                        format!(
                            "no [providers.{}] is configured",
                            crate::untrusted::quoted(&provider)
                        ),
                    ));
                }
                if matches!(listen, ProxyListen::Tcp(_)) {
                    return Err(invalid(
                        format!("{key}.provider"),
                        "a route by provider takes the owner from the unix peer: listen on unix:/path, or name a credential",
                    ));
                }
            }
            ProxyCredential::Named(_) => {}
        }
        self.upstream(key)?;
        for (what, value) in [
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
            ("header_read_timeout", self.header_read_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(format!("{key}.{what}"), "must be larger than zero"));
            }
        }
        if self.retry_body_max > RETRY_BODY_CEILING {
            return Err(invalid(
                format!("{key}.retry_body_max"),
                format!("at most {RETRY_BODY_CEILING} bytes (kept in memory per request)"),
            ));
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err(invalid(
                format!("{key}.max_connections"),
                "must be between 1 and 65536",
            ));
        }
        Ok(())
    }
}

/// Checks across routes: every block, then unique names and addresses.
pub(super) fn validate_all(
    routes: &[ProxySettings],
    providers: &std::collections::BTreeMap<String, super::ProviderSettings>,
) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    let mut listens = std::collections::BTreeSet::new();
    for (i, route) in routes.iter().enumerate() {
        let key = format!("proxy[{i}]");
        route.validate(&key, providers)?;
        if !names.insert(route.route_name()) {
            return Err(invalid(
                format!("{key}.name"),
                format!(
                    "another route is named {:?}; give each route its own name",
                    route.route_name()
                ),
            ));
        }
        if !listens.insert(route.listen.as_str()) {
            return Err(invalid(
                format!("{key}.listen"),
                format!("another route listens on {:?}", route.listen),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;

    use super::*;
    use crate::config::Settings;

    const PROVIDER: &str = r#"
[providers.entra]
token_url = "https://login.example.com/token"
client_id = "000123"
client_secret_env = "ENTRA_SECRET"
"#;

    fn load(routes: &str) -> Result<Settings, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(format!("{PROVIDER}\n{routes}").as_bytes())
            .unwrap();
        Settings::load(Some(file.path()), &BTreeMap::new())
    }

    fn error(routes: &str) -> String {
        let e = load(routes).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    }

    #[test]
    fn a_route_by_name_with_defaults() {
        let s = load(
            r#"[[proxy]]
listen = "127.0.0.1:8081"
credential = "sharepoint"
upstream = "https://graph.microsoft.com"
"#,
        )
        .unwrap();
        let route = &s.proxy[0];
        assert_eq!(route.route_name(), "sharepoint");
        assert_eq!(
            route.listen("proxy[0]").unwrap(),
            ProxyListen::Tcp("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(route.retry_body_max, 1024 * 1024);
        assert!(!route.x_forwarded);
        assert_eq!(route.min_valid, Duration::from_mins(1));
        let salesforce = load(
            r#"[[proxy]]
name = "crm"
listen = "unix:/run/tokenwarden/crm.sock"
credential = "salesforce"
upstream = "instance_url"
"#,
        )
        .unwrap();
        assert_eq!(
            salesforce.proxy[0].upstream("proxy[0]").unwrap(),
            ProxyUpstream::InstanceUrl
        );
    }

    #[test]
    fn remote_listeners_and_plain_http_need_opting_in() {
        let remote = r#"[[proxy]]
listen = "0.0.0.0:8081"
credential = "x"
upstream = "https://api.example.com"
"#;
        let e = error(remote);
        assert!(
            e.contains("proxy[0].listen") && e.contains("allow_remote"),
            "{e}"
        );
        load(&format!("{remote}allow_remote = true\n")).unwrap();
        let plain = r#"[[proxy]]
listen = "127.0.0.1:8081"
credential = "x"
upstream = "http://api.example.com"
"#;
        let e = error(plain);
        assert!(
            e.contains("proxy[0].upstream") && e.contains("plain http"),
            "{e}"
        );
        load(&format!("{plain}allow_insecure_http = true\n")).unwrap();
        load(&plain.replace("api.example.com", "127.0.0.1:9000")).unwrap();
    }

    #[test]
    fn bad_routes_are_named() {
        for (route, key) in [
            (
                "listen = \"127.0.0.1:1\"\nupstream = \"https://a.example\"\n",
                "exactly one of credential",
            ),
            (
                "listen = \"127.0.0.1:1\"\ncredential = \"x\"\nprovider = \"entra\"\nupstream = \"https://a.example\"\n",
                "exactly one of credential",
            ),
            (
                "listen = \"127.0.0.1:1\"\nprovider = \"entra\"\nupstream = \"https://a.example\"\n",
                "listen on unix:/path",
            ),
            (
                "listen = \"unix:/s\"\nprovider = \"nope\"\nupstream = \"https://a.example\"\n",
                "no [providers.\"nope\"]",
            ),
            (
                "listen = \"unix:relative\"\ncredential = \"x\"\nupstream = \"https://a.example\"\n",
                "must be absolute",
            ),
            (
                "listen = \"localhost\"\ncredential = \"x\"\nupstream = \"https://a.example\"\n",
                "is not an address",
            ),
            (
                "listen = \"127.0.0.1:1\"\ncredential = \"x\"\nupstream = \"https://a.example/?q=1\"\n",
                "no user, password, query",
            ),
            (
                "listen = \"127.0.0.1:1\"\ncredential = \"x\"\nupstream = \"ftp://a.example\"\n",
                "expected https",
            ),
            (
                "listen = \"127.0.0.1:1\"\ncredential = \"x\"\nupstream = \"https://a.example\"\nretry_body_max = 999999999\n",
                "retry_body_max",
            ),
            (
                "listen = \"127.0.0.1:1\"\ncredential = \"x\"\nupstream = \"https://a.example\"\nidle_timeout = 0\n",
                "idle_timeout",
            ),
            (
                "listen = \"127.0.0.1:1\"\ncredential = \"x\"\nupstream = \"https://a.example\"\nupstreem = 1\n",
                "upstreem",
            ),
        ] {
            let e = error(&format!("[[proxy]]\n{route}"));
            assert!(e.contains(key), "{route}: {e}");
        }
        let twice = "[[proxy]]\nlisten = \"127.0.0.1:1\"\ncredential = \"x\"\nupstream = \"https://a.example\"\n";
        let e = error(&format!("{twice}{twice}"));
        assert!(e.contains("proxy[1].name"), "{e}");
        let e = error(&format!(
            "{twice}{}",
            twice.replace("credential = \"x\"", "credential = \"x\"\nname = \"y\"")
        ));
        assert!(e.contains("proxy[1].listen"), "{e}");
        load(
            "[[proxy]]\nlisten = \"unix:/run/tw/own.sock\"\nprovider = \"entra\"\nupstream = \"https://a.example\"\n",
        )
        .unwrap();
    }
}
