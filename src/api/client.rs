//! The other end of the token API, for `token --socket` and `exec --socket`: one GET over the
//! unix socket, the JSON answer checked (the token's characters and size, as any text from
//! outside) before anything is printed or handed on. Needs no configuration. Imports `domain`,
//! `untrusted`, `deliver` (the header) and `api` (the error words).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::words;
use crate::domain::Secret;

/// The largest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// A token the API handed out.
#[derive(Debug)]
pub struct Answer {
    pub name: String,
    pub token: Secret,
    pub token_type: Option<String>,
    pub instance_url: Option<String>,
    /// Said beside the token (a credential no longer refreshed).
    pub notices: Vec<String>,
}

impl Answer {
    /// `Authorization: <type> <token>`.
    pub fn header(&self) -> Result<Secret, ClientError> {
        crate::deliver::header::authorization_header(self.token_type.as_deref(), &self.token)
            .map_err(|why| ClientError::Refused {
                word: words::NO_VALID_TOKEN.to_owned(),
                reason: format!("credential {:?}: {why}", self.name),
            })
    }
}

/// Why no token came back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("token API at {}: {reason}", path.display())]
    Connect { path: PathBuf, reason: String },
    /// The API answered with an error: its word and one-line reason.
    #[error("{reason}")]
    Refused { word: String, reason: String },
    #[error("token API at {}: unusable answer: {reason}", path.display())]
    Answer { path: PathBuf, reason: String },
}

impl crate::exit::ExitStatus for ClientError {
    /// The codes the local `token`/`exec` end with for the same failure: the API's word decides;
    /// a socket that cannot be reached or answers nonsense is the database's code (the store is
    /// out of reach for this user).
    fn exit_code(&self) -> u8 {
        use crate::exit::{CONFIG, DATABASE, NOT_FOUND, REFRESH_FAILED};
        match self {
            Self::Refused { word, .. } => match word.as_str() {
                words::RENEWAL_FAILED => REFRESH_FAILED,
                words::BAD_REQUEST => CONFIG,
                words::UNAVAILABLE => DATABASE,
                _ => NOT_FOUND,
            },
            Self::Connect { .. } | Self::Answer { .. } => DATABASE,
        }
    }
}

/// Asks the API at `socket` for `route` (`/v1/token/NAME?…`), bounded by `deadline`.
pub async fn fetch(socket: &Path, route: &str, deadline: Duration) -> Result<Answer, ClientError> {
    let connect = |reason: String| ClientError::Connect {
        path: socket.to_owned(),
        reason,
    };
    let bad = |reason: String| ClientError::Answer {
        path: socket.to_owned(),
        reason,
    };
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect(e.to_string()))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(route)
            .header("Host", "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| bad(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| bad(e.to_string()))?
            .to_bytes();
        Ok::<_, ClientError>((status, body))
    };
    let (status, body) = tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| connect(format!("no answer within {}s", deadline.as_secs())))??;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    if !status.is_success() {
        let word = text("error").unwrap_or_else(|| words::UNAVAILABLE.to_owned());
        let reason = text("reason").unwrap_or_else(|| format!("answered {status}"));
        return Err(ClientError::Refused { word, reason });
    }
    let token = text("access_token").ok_or_else(|| bad("no access_token".to_owned()))?;
    crate::untrusted::check_token(&token)
        .map_err(|flaw| bad(format!("the access token {flaw}")))?;
    Ok(Answer {
        name: text("name").unwrap_or_default(),
        token: Secret::new(token),
        token_type: text("token_type"),
        instance_url: text("instance_url"),
        notices: value
            .get("notices")
            .and_then(|n| n.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The route for a credential by name, or by provider and owner, with the renewal parameters.
#[must_use]
pub fn route(which: &crate::deliver::Which, min_valid: Option<Duration>, wait: Duration) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let path = match which {
        crate::deliver::Which::Name(name) => {
            let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
            format!("/v1/token/{}", encoded.replace('+', "%20"))
        }
        crate::deliver::Which::Owner { provider, owner } => {
            query.append_pair("provider", provider);
            query.append_pair("owner", owner);
            "/v1/token".to_owned()
        }
    };
    if let Some(min_valid) = min_valid {
        query.append_pair("min_valid", &format!("{}s", min_valid.as_secs()));
    }
    query.append_pair("wait", &format!("{}s", wait.as_secs()));
    format!("{path}?{}", query.finish())
}
