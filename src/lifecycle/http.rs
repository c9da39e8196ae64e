//! One request to a provider endpoint (token, revocation) for `authorize` and `revoke`: follows
//! no redirects, times out, caps the body, and records the status, Retry-After and body that
//! oauth2's errors do not keep. Imports `refresh` (for its `HttpError`).

use std::sync::Mutex;

use crate::refresh::{HttpError, capped_body, head_of};

/// What the endpoint answered, kept for reporting.
#[derive(Debug, Default, Clone)]
pub struct Exchange {
    pub status: Option<u16>,
    pub retry_after: Option<i64>,
    pub body: Vec<u8>,
}

/// Sends requests to provider endpoints.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    max_body: usize,
}

impl Sender {
    /// `http` must follow no redirects and time out: `Refresher::http` is such a client.
    #[must_use]
    pub fn new(http: reqwest::Client, max_body: usize) -> Self {
        Self { http, max_body }
    }

    /// Sends a request and reads the whole (capped) answer. A redirect is an error.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Exchange, HttpError> {
        let response = request.send().await?;
        let (status, retry_after) = head_of(&response);
        let (_, body) = capped_body(response, self.max_body).await?;
        Ok(Exchange {
            status: Some(status),
            retry_after,
            body,
        })
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
            .http
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

    /// An oauth2 HTTP client that records what it saw in `exchange`.
    pub fn recording<'a>(&'a self, exchange: &'a Mutex<Exchange>) -> Recording<'a> {
        Recording {
            sender: self,
            exchange,
        }
    }

    async fn send_recorded(
        &self,
        request: oauth2::HttpRequest,
        exchange: &Mutex<Exchange>,
    ) -> Result<oauth2::HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let request = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body);
        let seen = self.send(request).await?;
        let mut builder = http::Response::builder().status(seen.status.unwrap_or(500));
        // Some providers label JSON text/plain; oauth2 would refuse it.
        if seen.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let response = builder
            .body(seen.body.clone())
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        *exchange
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = seen;
        Ok(response)
    }
}

/// The HTTP client handed to oauth2: a named type with a boxed `Send` future (see
/// `refresh::Recording` for why not a closure).
pub struct Recording<'a> {
    sender: &'a Sender,
    exchange: &'a Mutex<Exchange>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Recording<'_> {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.sender.send_recorded(request, self.exchange))
    }
}
