//! Which HTTP proxy the transport uses: the one the environment names, as curl reads it
//! (`HTTPS_PROXY` for https URLs, `HTTP_PROXY` for http ones, `ALL_PROXY` for both, each also in
//! lower case; `NO_PROXY` lists hosts, domains and networks to reach directly), with loopback
//! (127.0.0.0/8, `::1`, `localhost`) always reached directly: a token request to this machine
//! never passes through a proxy, whatever the environment says. Pure but for reading `env`.

use std::collections::BTreeMap;

use super::HttpError;

/// Makes a proxy for one scheme (or all) from its URL.
type Make = fn(&str) -> reqwest::Result<reqwest::Proxy>;

/// Hosts never proxied, in `NO_PROXY`'s syntax.
const LOOPBACK: &str = "localhost, 127.0.0.0/8, ::1";

/// The proxies `env` asks for (none when it names none), each bypassed for loopback and for
/// what `NO_PROXY` lists.
pub fn from_env(env: &BTreeMap<String, String>) -> Result<Vec<reqwest::Proxy>, HttpError> {
    let var = |names: [&'static str; 2]| -> Option<(&'static str, &str)> {
        names
            .iter()
            .find_map(|n| env.get(*n).filter(|v| !v.trim().is_empty()))
            .map(|v| (names[0], v.trim()))
    };
    let no_proxy = match var(["NO_PROXY", "no_proxy"]) {
        Some((_, list)) => format!("{list}, {LOOPBACK}"),
        None => LOOPBACK.to_owned(),
    };
    let mut proxies = Vec::new();
    let kinds: [([&'static str; 2], Make); 3] = [
        (["HTTPS_PROXY", "https_proxy"], |url| {
            reqwest::Proxy::https(url)
        }),
        (["HTTP_PROXY", "http_proxy"], |url| {
            reqwest::Proxy::http(url)
        }),
        (["ALL_PROXY", "all_proxy"], |url| reqwest::Proxy::all(url)),
    ];
    for (names, make) in kinds {
        let Some((name, url)) = var(names) else {
            continue;
        };
        // The value is not shown: a proxy URL may carry a password.
        let proxy = make(url).map_err(|_| HttpError::Proxy(name))?;
        proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&no_proxy)));
    }
    Ok(proxies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn proxies_come_from_the_environment_only() {
        assert!(from_env(&env(&[])).unwrap().is_empty());
        assert_eq!(
            from_env(&env(&[
                ("https_proxy", "http://proxy:3128"),
                ("HTTP_PROXY", "http://proxy:3128"),
                ("ALL_PROXY", " "),
            ]))
            .unwrap()
            .len(),
            2
        );
        let e = from_env(&env(&[("HTTPS_PROXY", "http://user:pw@[bad")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTPS_PROXY") && !e.contains("pw"), "{e}");
    }
}
