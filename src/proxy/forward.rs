//! What a forwarded request and its answer carry: the upstream URL for a request target, the
//! headers sent upstream (hop-by-hop dropped per RFC 9110 §7.6.1, the client's Authorization and
//! Host replaced) and the headers passed back. Pure.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use hyper::body::Bytes;

/// Hop-by-hop fields (RFC 9110 §7.6.1, plus the `Proxy-*` and `Keep-Alive` fields of older
/// practice): meaningful for one connection only, never forwarded either way.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Why a request target cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target must be a path starting with /")]
    NotOriginForm,
    #[error("the request path leaves the route's upstream base path")]
    OutsideBase,
}

/// An upstream base URL as requests are sent to it: its scheme and authority, and its path as a
/// prefix of every request's path.
#[derive(Debug, Clone)]
pub struct Base {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing `/` (empty for the root).
    prefix: String,
}

impl Base {
    /// `url`'s scheme, authority (host and port as written) and path; `None` for a URL without
    /// a host.
    #[must_use]
    pub fn new(url: &url::Url) -> Option<Self> {
        let scheme = Scheme::try_from(url.scheme()).ok()?;
        let authority =
            Authority::try_from(&url[url::Position::BeforeHost..url::Position::BeforePath]).ok()?;
        Some(Self {
            scheme,
            authority,
            prefix: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// A copy that shares no memory with this one: each client connection takes its own, so
    /// that building a request's URI touches nothing another thread does.
    #[must_use]
    pub fn copy(&self) -> Self {
        Self {
            scheme: self.scheme.clone(),
            authority: Authority::from_maybe_shared(Bytes::copy_from_slice(
                self.authority.as_str().as_bytes(),
            ))
            .unwrap_or_else(|_| self.authority.clone()),
            prefix: self.prefix.clone(),
        }
    }
}

/// The upstream URI for a request target `path_and_query` (origin form, `/v1.0/sites/root?x=1`):
/// the base's path, then the target's, as the client wrote it. Dot segments, which would climb
/// out of the base path, are refused whatever their spelling.
pub fn target(base: &Base, path_and_query: &str) -> Result<http::Uri, TargetError> {
    if !path_and_query.starts_with('/') {
        return Err(TargetError::NotOriginForm);
    }
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    if has_dot_segment(path) {
        return Err(TargetError::OutsideBase);
    }
    let joined = if base.prefix.is_empty() {
        PathAndQuery::try_from(path_and_query)
    } else {
        PathAndQuery::try_from(format!("{}{path_and_query}", base.prefix))
    }
    .map_err(|_| TargetError::NotOriginForm)?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(base.scheme.clone());
    parts.authority = Some(base.authority.clone());
    parts.path_and_query = Some(joined);
    http::Uri::from_parts(parts).map_err(|_| TargetError::NotOriginForm)
}

/// Whether a path has a `.` or `..` segment, its dots percent-encoded or not (`%2e`), between
/// separators of any spelling an upstream may take for one: `/`, `\\`, `%2f`, `%5c` (an upstream
/// on Windows, or one that decodes before it resolves dot segments, would climb out of the base
/// path on any of them).
fn has_dot_segment(path: &str) -> bool {
    let mut rest = path.as_bytes();
    let (mut dots, mut only_dots) = (0, true);
    loop {
        let (separator, width, dot) = match rest {
            [] => (true, 0, false),
            [b'/' | b'\\', ..] => (true, 1, false),
            [b'%', b'2', x, ..] if x | 0x20 == b'f' => (true, 3, false),
            [b'%', b'5', x, ..] if x | 0x20 == b'c' => (true, 3, false),
            [b'%', b'2', x, ..] if x | 0x20 == b'e' => (false, 3, true),
            [b'.', ..] => (false, 1, true),
            _ => (false, 1, false),
        };
        if separator {
            if only_dots && (dots == 1 || dots == 2) {
                return true;
            }
            if rest.is_empty() {
                return false;
            }
            (dots, only_dots) = (0, true);
        } else if dot {
            dots += 1;
        } else {
            only_dots = false;
        }
        rest = &rest[width..];
    }
}

/// Whether the request asks to switch protocols (WebSocket and the like), which is not proxied.
#[must_use]
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The field names listed in `Connection`, as written (no copy is made: most messages have no
/// such field, or only `keep-alive` or `close`).
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether `name` is a hop-by-hop field of [`HOP_BY_HOP`].
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// `headers` without the hop-by-hop fields and those `Connection` names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    // Looked up once: most requests have no `Connection` field.
    let listed = headers.contains_key(header::CONNECTION);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if is_hop_by_hop(name)
            || (listed && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name.as_str())))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// What `X-Forwarded-*` says, when a route is configured to add it.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The client's address (`X-Forwarded-For`); none for a unix socket peer.
    pub client: Option<std::net::IpAddr>,
    /// The Host the client asked for (`X-Forwarded-Host`).
    pub host: Option<HeaderValue>,
}

/// The headers sent upstream: the client's end-to-end fields without its `Authorization` and
/// `Host` (the client sets Host from the upstream URL), with `authorization` set, and
/// `X-Forwarded-For/-Proto/-Host` only when `forwarded` is given.
#[must_use]
pub fn request_headers(
    client: &HeaderMap,
    authorization: HeaderValue,
    forwarded: Option<&Forwarded>,
) -> HeaderMap {
    let mut out = end_to_end(client);
    out.remove(header::AUTHORIZATION);
    out.remove(header::HOST);
    let mut authorization = authorization;
    authorization.set_sensitive(true);
    out.insert(header::AUTHORIZATION, authorization);
    if let Some(forwarded) = forwarded {
        if let Some(ip) = forwarded.client {
            let value = match client.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(value) = HeaderValue::from_str(&value) {
                out.insert("x-forwarded-for", value);
            }
        }
        out.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        if let Some(host) = &forwarded.host {
            out.insert("x-forwarded-host", host.clone());
        }
    }
    out
}

/// The headers passed back to the client: the upstream's end-to-end fields (the hop-by-hop
/// ones removed in place: an answer usually has none but `Connection`, and then nothing is
/// copied and nothing looked up again).
#[must_use]
pub fn response_headers(mut upstream: HeaderMap) -> HeaderMap {
    // Names that are not fields (`close`, `keep-alive`: removed below anyway) are most of what
    // `Connection` says: only the others are copied, to remove them.
    let named: Vec<HeaderName> = connection_tokens(&upstream)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    let present: Vec<HeaderName> = upstream
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in present.iter().chain(&named) {
        upstream.remove(name);
    }
    upstream
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> Base {
        Base::new(&url::Url::parse(s).unwrap()).unwrap()
    }

    #[test]
    fn targets_join_the_base_path() {
        let graph = base("https://graph.microsoft.com");
        assert_eq!(
            target(&graph, "/v1.0/sites/root?$select=id").unwrap(),
            "https://graph.microsoft.com/v1.0/sites/root?$select=id"
        );
        let api = base("https://example.com/api/");
        assert_eq!(
            target(&api, "/v2/x").unwrap(),
            "https://example.com/api/v2/x"
        );
        assert_eq!(
            target(&base("http://127.0.0.1:9/base"), "/").unwrap(),
            "http://127.0.0.1:9/base/"
        );
        assert_eq!(
            target(&base("https://[::1]:8443/a").copy(), "/b?c=d%20e").unwrap(),
            "https://[::1]:8443/a/b?c=d%20e"
        );
    }

    #[test]
    fn targets_never_leave_the_base() {
        let api = base("https://example.com/api");
        for bad in [
            "/../admin",
            "/x/%2e%2E/../y",
            "/./x",
            "/a/%2e/b",
            "/a/.%2E",
            "/%2E.",
            "/a/..?x=1",
            "/..\\..\\admin",
            "/a/..%5cb",
            "/a/%5C..%5Cb",
            "/a/%2e%2e%2fadmin",
            "/a/.%2F",
        ] {
            assert_eq!(target(&api, bad), Err(TargetError::OutsideBase), "{bad}");
        }
        for bad in ["http://evil.example/", "*", "", "evil.example:443"] {
            assert_eq!(target(&api, bad), Err(TargetError::NotOriginForm), "{bad}");
        }
        // Dots that are not a dot segment are a name.
        for good in [
            "/a/.../b",
            "/.well-known/x",
            "/a/..b",
            "/%2e%2e%2e",
            "/a/%2f",
            "/a?x=/../y",
            "/a\\b/c..d",
            "/%5c/x",
        ] {
            assert!(target(&api, good).is_ok(), "{good}");
        }
        // A host in the path stays a path.
        let uri = target(&api, "//evil.example/x").unwrap();
        assert_eq!(uri.host(), Some("example.com"));
        assert_eq!(uri.path(), "/api//evil.example/x");
    }

    #[test]
    fn hop_by_hop_and_the_clients_authorization_are_dropped() {
        let mut client = HeaderMap::new();
        client.insert(header::AUTHORIZATION, "Bearer client-own".parse().unwrap());
        client.insert(header::HOST, "127.0.0.1:8081".parse().unwrap());
        client.insert(
            header::CONNECTION,
            "keep-alive, X-Secret-Hop".parse().unwrap(),
        );
        client.insert("x-secret-hop", "1".parse().unwrap());
        client.insert(header::TE, "trailers".parse().unwrap());
        client.insert("proxy-authorization", "Basic x".parse().unwrap());
        client.insert(header::ACCEPT, "application/json".parse().unwrap());
        client.append("x-multi", "a".parse().unwrap());
        client.append("x-multi", "b".parse().unwrap());
        let out = request_headers(&client, "Bearer ours".parse().unwrap(), None);
        assert_eq!(out[header::AUTHORIZATION], "Bearer ours");
        assert!(out[header::AUTHORIZATION].is_sensitive());
        for gone in [
            "host",
            "connection",
            "x-secret-hop",
            "te",
            "proxy-authorization",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
        assert_eq!(out[header::ACCEPT], "application/json");
        assert_eq!(out.get_all("x-multi").iter().count(), 2);
        assert!(!out.keys().any(|k| k.as_str().starts_with("x-forwarded")));
    }

    #[test]
    fn x_forwarded_only_when_configured() {
        let mut client = HeaderMap::new();
        client.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        let forwarded = Forwarded {
            client: Some("127.0.0.1".parse().unwrap()),
            host: Some("localhost:8081".parse().unwrap()),
        };
        let out = request_headers(&client, "Bearer t".parse().unwrap(), Some(&forwarded));
        assert_eq!(out["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "localhost:8081");
    }

    #[test]
    fn upgrades_are_recognized() {
        let mut h = HeaderMap::new();
        assert!(!wants_upgrade(&h));
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        assert!(wants_upgrade(&h));
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
    }

    #[test]
    fn answers_lose_their_hop_by_hop_fields() {
        let mut up = HeaderMap::new();
        up.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        up.insert(header::LOCATION, "https://elsewhere/".parse().unwrap());
        up.insert("keep-alive", "timeout=5".parse().unwrap());
        up.insert(header::CONNECTION, "X-Hop".parse().unwrap());
        up.insert("x-hop", "1".parse().unwrap());
        let out = response_headers(up);
        assert!(!out.contains_key(header::CONNECTION));
        assert!(!out.contains_key("x-hop"));
        assert!(!out.contains_key(header::TRANSFER_ENCODING));
        assert!(!out.contains_key("keep-alive"));
        assert_eq!(out[header::LOCATION], "https://elsewhere/");
    }
}
