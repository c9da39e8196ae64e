//! The one transport to providers: a reqwest client that follows no redirects, times out and caps
//! every body; the adapter that hands it to oauth2 and records the status, Retry-After and body
//! that oauth2's errors do not keep; and OAuth error bodies (RFC 6749 §5.2). Every request to a
//! provider — token, revocation, metadata — goes through [`Transport`]. Its TLS settings
//! ([`tls_config`]) are also the proxy routes' toward their upstreams. Imports nothing from the
//! crate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

pub mod proxy;

/// `client_assertion_type` of a private_key_jwt client assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why the HTTP exchange itself failed. Messages name no token.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request timed out")]
    Timeout,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("endpoint answered with a redirect ({0}), which is never followed")]
    Redirect(u16),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Transport(String),
    /// An environment variable names a proxy that cannot be used (a configuration error).
    #[error("{0} is not a usable proxy URL")]
    Proxy(&'static str),
}

impl From<reqwest::Error> for HttpError {
    fn from(e: reqwest::Error) -> Self {
        let e = e.without_url();
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_connect() {
            Self::Connect(error_chain(&e))
        } else {
            Self::Transport(error_chain(&e))
        }
    }
}

/// `e` and its causes, `: `-separated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What an endpoint answered.
#[derive(Debug, Default, Clone)]
pub struct Exchange {
    pub status: Option<u16>,
    /// Retry-After in seconds, when given as seconds.
    pub retry_after: Option<i64>,
    pub body: Vec<u8>,
}

impl Exchange {
    /// The OAuth error in the body, if it is one.
    #[must_use]
    pub fn error_body(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }

    /// What the body is, for a message that must not quote it: `an empty body`, `JSON that is not
    /// a token response`, `123 bytes that are not JSON`.
    #[must_use]
    pub fn body_shape(&self, expected: &str) -> String {
        if self.body.is_empty() {
            "an empty body".to_owned()
        } else if serde_json::from_slice::<serde_json::Value>(&self.body).is_ok() {
            format!("JSON that is not {expected}")
        } else {
            format!("{} bytes that are not JSON", self.body.len())
        }
    }
}

/// An OAuth error body (RFC 6749 §5.2); Microsoft puts its AADSTS code in the description.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub error_description: Option<String>,
}

impl ErrorBody {
    /// `error: description`, or the error code alone.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.error_description {
            Some(d) => format!("{}: {d}", self.error),
            None => self.error.clone(),
        }
    }
}

/// The TLS settings of every HTTPS request tokenwarden makes (the token endpoints' transport
/// and the proxy routes' upstreams): rustls with the `ring` provider (or the process's default,
/// when one was installed), TLS 1.2 and 1.3, the Mozilla roots built in (`webpki-roots`) and the
/// system's root certificates (`rustls-native-certs`: `SSL_CERT_FILE` and `SSL_CERT_DIR` are
/// honoured; certificates that do not parse are skipped, a store with none usable is an error),
/// server names verified, ALPN `http/1.1`. These are the choices reqwest's own rustls set-up makes
/// with the features this crate asks of it; building them here gives both clients one root store
/// and one verifier.
pub fn tls_config() -> Result<rustls::ClientConfig, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let loaded = rustls_native_certs::load_native_certs();
    let (mut valid, mut invalid) = (0usize, 0usize);
    for cert in loaded.certs {
        if roots.add(cert).is_ok() {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    if valid == 0 && invalid > 0 {
        return Err(HttpError::Transport(
            "no usable certificate in the system's root store".to_owned(),
        ));
    }
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| std::sync::Arc::new(rustls::crypto::ring::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| HttpError::Transport(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A deadline noticed at least this late was passed while this process was not running (stopped
/// by SIGSTOP, a paused VM or container, a stalled host): a timer fires within milliseconds of its
/// deadline otherwise.
const NOTICED_LATE: Duration = Duration::from_secs(1);
/// How long such a request may still deliver what arrived while the process was not running: a
/// provider's answer waiting unread is the only copy of a rotated refresh token.
const LAST_LOOK: Duration = Duration::from_secs(2);

/// How long an idle connection to a provider is kept for the next request: shorter than common
/// servers' keep-alive (Node's 5 s), so a request never goes out on a connection the server is
/// closing at that moment ("connection closed before message completed": a transient failure, and
/// a refresh token perhaps presented for nothing). A sweep's requests follow each other closer than
/// this; between sweeps the connections close anyway.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Sends requests to providers; cheap to clone.
///
/// The reqwest client (its connection pool and TLS configuration, with the system's root
/// certificates read and parsed) is built on the first request, not at start: a daemon with
/// nothing due never pays for it (BENCHMARKS.md, "Footprint, second pass").
#[derive(Clone)]
pub struct Transport {
    client: Arc<tokio::sync::OnceCell<reqwest::Client>>,
    setup: Arc<Setup>,
    max_body: usize,
    request_timeout: Duration,
}

/// What the client is built from.
struct Setup {
    connect_timeout: Duration,
    proxies: Vec<reqwest::Proxy>,
}

impl Transport {
    /// A client that follows no redirects, gives up connecting after `connect_timeout` and on the
    /// whole request after `request_timeout`, and refuses bodies larger than `max_body` bytes.
    /// It goes through the proxies `env` names ([`proxy::from_env`]), never for loopback.
    pub fn new(
        connect_timeout: Duration,
        request_timeout: Duration,
        max_body: usize,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, HttpError> {
        Ok(Self {
            client: Arc::new(tokio::sync::OnceCell::new()),
            setup: Arc::new(Setup {
                connect_timeout,
                proxies: proxy::from_env(env)?,
            }),
            max_body,
            request_timeout,
        })
    }

    /// The client, built on first use (the first requests of a sweep wait for one build; a
    /// build that failed is tried again by the next request).
    async fn client(&self) -> Result<&reqwest::Client, HttpError> {
        self.client.get_or_try_init(|| async { self.build() }).await
    }

    fn build(&self) -> Result<reqwest::Client, HttpError> {
        // `no_proxy` first: reqwest's own reading of the environment would proxy loopback too.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls(tls_config()?)
            .connect_timeout(self.setup.connect_timeout)
            .pool_idle_timeout(POOL_IDLE)
            .user_agent(concat!("tokenwarden/", env!("CARGO_PKG_VERSION")));
        for proxy in &self.setup.proxies {
            builder = builder.proxy(proxy.clone());
        }
        builder.build().map_err(|e| {
            HttpError::Transport(format!("cannot build the HTTP client: {}", error_chain(&e)))
        })
    }

    /// GETs `url` and reads the whole (capped) answer.
    pub async fn get(&self, url: &str) -> Result<Exchange, HttpError> {
        self.send(self.client().await?.get(url)).await
    }

    /// POSTs `form` to `url`, with HTTP Basic client authentication when `basic` is given (id and
    /// secret form-urlencoded first, as RFC 6749 §2.3.1 asks).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Exchange, HttpError> {
        let mut builder = self
            .client()
            .await?
            .post(url)
            .header(http::header::ACCEPT, "application/json")
            .form(form);
        if let Some((id, secret)) = basic {
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            builder = builder.basic_auth(encode(id), Some(encode(secret)));
        }
        self.send(builder).await
    }

    /// An oauth2 HTTP client that sends through this transport and records what it saw.
    #[must_use]
    pub fn recording<'a>(&'a self, exchange: &'a Mutex<Exchange>) -> Recording<'a> {
        Recording {
            transport: self,
            exchange,
        }
    }

    /// Sends a request and reads the whole answer: a redirect is refused (never followed), and a
    /// body larger than `max_body` is refused as it streams in.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Exchange, HttpError> {
        self.send_noting_head(request, &mut Exchange::default())
            .await
    }

    /// As [`Self::send`]; the status and Retry-After are noted in `head` as soon as they arrive,
    /// so that they are known even when the body is then refused. The whole exchange gives up after
    /// `request_timeout` — unless that deadline passed while this process was not running: then
    /// what already arrived gets [`LAST_LOOK`] to be read, rather than dropping an answer that
    /// waits in the socket (for a rotating provider, the only copy of the new refresh token).
    async fn send_noting_head(
        &self,
        request: reqwest::RequestBuilder,
        head: &mut Exchange,
    ) -> Result<Exchange, HttpError> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let exchange = self.exchange(request, head);
        tokio::pin!(exchange);
        tokio::select! {
            biased;
            result = &mut exchange => return result,
            () = tokio::time::sleep_until(deadline) => {}
        }
        if tokio::time::Instant::now() >= deadline + NOTICED_LATE
            && let Ok(result) = tokio::time::timeout(LAST_LOOK, &mut exchange).await
        {
            return result;
        }
        Err(HttpError::Timeout)
    }

    /// The exchange itself, without a deadline.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        head: &mut Exchange,
    ) -> Result<Exchange, HttpError> {
        let mut response = request.send().await?;
        let status = response.status().as_u16();
        head.status = Some(status);
        head.retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        if response.status().is_redirection() {
            return Err(HttpError::Redirect(status));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > self.max_body {
                return Err(HttpError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Exchange {
            body,
            ..head.clone()
        })
    }

    async fn send_recorded(
        &self,
        request: oauth2::HttpRequest,
        exchange: &Mutex<Exchange>,
    ) -> Result<oauth2::HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let request = self
            .client()
            .await?
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body);
        let mut head = Exchange::default();
        let result = self.send_noting_head(request, &mut head).await;
        let seen = result.as_ref().map_or(head, Clone::clone);
        *exchange
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = seen;
        let seen = result?;
        // Some providers send JSON labelled text/plain or text/javascript, which oauth2 refuses:
        // a body that looks like a JSON object is labelled as one, and nothing else is kept.
        let mut builder = http::Response::builder().status(seen.status.unwrap_or(500));
        if seen.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        builder
            .body(seen.body)
            .map_err(|e| HttpError::Transport(e.to_string()))
    }
}

/// The HTTP client handed to oauth2. A named type with a boxed `Send` future rather than a closure:
/// a closure's future borrows with a lifetime the compiler cannot prove `Send` for every caller
/// (which `tokio::spawn` needs).
pub struct Recording<'a> {
    transport: &'a Transport,
    exchange: &'a Mutex<Exchange>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Recording<'_> {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.transport.send_recorded(request, self.exchange))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(body: &str) -> Exchange {
        Exchange {
            status: Some(400),
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn error_bodies_and_body_shapes() {
        let e = exchange(r#"{"error":"invalid_grant","error_description":"AADSTS70008"}"#);
        assert_eq!(
            e.error_body().unwrap().describe(),
            "invalid_grant: AADSTS70008"
        );
        assert_eq!(
            exchange(r#"{"error":"x"}"#)
                .error_body()
                .unwrap()
                .describe(),
            "x"
        );
        assert!(exchange("<html>").error_body().is_none());
        assert_eq!(exchange("").body_shape("a token response"), "an empty body");
        assert_eq!(
            exchange("{}").body_shape("a token response"),
            "JSON that is not a token response"
        );
        assert_eq!(
            exchange("<html>").body_shape("x"),
            "6 bytes that are not JSON"
        );
    }
}
