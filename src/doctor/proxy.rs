//! The checks of one `[[proxy]]` route: can it listen where it says (or is something, the daemon
//! perhaps, already there), is its credential stored and usable (with an `instance_url` when the
//! route forwards there), and does its upstream accept a connection.

use std::time::Duration;

use super::{Check, Verdict, check};
use crate::config::{ProxyCredential, ProxyListen, ProxySettings, ProxyUpstream};
use crate::domain::Status;
use crate::store::CredentialSummary;

/// Longest wait for the upstream's TCP connection.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// The route's checks; `rows` are the stored credentials (none without a database).
pub async fn proxy_checks(
    key: &str,
    route: &ProxySettings,
    rows: Option<&[CredentialSummary]>,
) -> Vec<Check> {
    let mut checks = vec![listen_check(key, route).await];
    let mut instance_url = None;
    match (route.which(key), rows) {
        (Ok(ProxyCredential::Named(name)), Some(rows)) => {
            match rows.iter().find(|r| r.name == name) {
                None => checks.push(check(
                    Verdict::Fail,
                    "credential",
                    format!("{name} is not stored: requests get 503 until it is added"),
                )),
                Some(row) if row.status != Status::Active => checks.push(check(
                    Verdict::Fail,
                    "credential",
                    format!(
                        "{name} is {}: requests get 503 once its token expires",
                        row.status
                    ),
                )),
                Some(row) => {
                    instance_url.clone_from(&row.instance_url);
                    checks.push(check(
                        Verdict::Ok,
                        "credential",
                        format!("{name} is active"),
                    ));
                }
            }
        }
        (Ok(ProxyCredential::Named(name)), None) => checks.push(check(
            Verdict::Warn,
            "credential",
            format!("{name}: no database to look in"),
        )),
        (Ok(ProxyCredential::OwnedAt(provider)), _) => checks.push(check(
            Verdict::Info,
            "credential",
            format!("the unix peer's own credential at provider {provider}"),
        )),
        (Err(e), _) => checks.push(check(Verdict::Fail, "credential", e.to_string())),
    }
    let upstream = match route.upstream(key) {
        Ok(ProxyUpstream::Url(url)) => Some(url),
        Ok(ProxyUpstream::InstanceUrl) => {
            let url = instance_url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok());
            let named = matches!(route.which(key), Ok(ProxyCredential::Named(_)));
            if url.is_none() && named && rows.is_some() {
                checks.push(check(
                    Verdict::Fail,
                    "upstream",
                    "upstream = \"instance_url\", but the credential has none",
                ));
            }
            url
        }
        Err(e) => {
            checks.push(check(Verdict::Fail, "upstream", e.to_string()));
            None
        }
    };
    if let Some(url) = upstream {
        checks.push(upstream_check(&url).await);
    }
    checks
}

async fn listen_check(key: &str, route: &ProxySettings) -> Check {
    match route.listen(key) {
        Err(e) => check(Verdict::Fail, "listen", e.to_string()),
        Ok(ProxyListen::Tcp(address)) => match crate::listener::bind_tcp(address).await {
            Ok(_) => check(Verdict::Ok, "listen", format!("{address} is free")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => check(
                Verdict::Warn,
                "listen",
                format!("{address} is in use (by the running daemon, or by another program)"),
            ),
            Err(e) => check(Verdict::Fail, "listen", format!("{address}: {e}")),
        },
        Ok(ProxyListen::Unix(path)) => match path.parent() {
            Some(dir) if dir.is_dir() => check(
                Verdict::Ok,
                "listen",
                format!("unix socket {}", path.display()),
            ),
            _ => check(
                Verdict::Fail,
                "listen",
                format!(
                    "unix socket {}: its directory does not exist (RuntimeDirectory= makes it)",
                    path.display()
                ),
            ),
        },
    }
}

async fn upstream_check(url: &url::Url) -> Check {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return check(Verdict::Fail, "upstream", format!("{url}: no host"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(CONNECT_WITHIN, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => check(
            Verdict::Ok,
            "upstream",
            format!("{url} accepts connections"),
        ),
        Ok(Err(e)) => check(Verdict::Fail, "upstream", format!("{url}: {e}")),
        Err(_) => check(
            Verdict::Fail,
            "upstream",
            format!("{url}: no connection within {}s", CONNECT_WITHIN.as_secs()),
        ),
    }
}
