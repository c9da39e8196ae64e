//! Endpoints from an issuer: OpenID Connect discovery, then RFC 8414 authorization server
//! metadata. Metadata that names another issuer is refused. Imports `http`.

use serde::Deserialize;

use crate::http::Transport;

/// Why an issuer's endpoints could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("issuer {issuer}: no usable metadata ({reason})")]
    Unavailable { issuer: String, reason: String },
    #[error("issuer {issuer}: its metadata names issuer {found:?}; refusing it")]
    IssuerMismatch { issuer: String, found: String },
}

/// The endpoints tokenwarden uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Endpoints {
    pub issuer: String,
    pub token_endpoint: String,
    pub authorization_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
    /// RFC 8628 §4: where `authorize --device` starts.
    pub device_authorization_endpoint: Option<String>,
}

/// The two places metadata may live for `issuer`, in the order they are tried.
fn metadata_urls(issuer: &str) -> Result<[String; 2], String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("not a URL: {e}"))?;
    let path = url.path().trim_end_matches('/');
    let origin = url.origin().ascii_serialization();
    Ok([
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ),
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
    ])
}

/// Fetches and checks `issuer`'s metadata through `transport` (no redirects, timeouts, body cap).
pub async fn discover(transport: &Transport, issuer: &str) -> Result<Endpoints, DiscoveryError> {
    let unavailable = |reason: String| DiscoveryError::Unavailable {
        issuer: issuer.to_owned(),
        reason,
    };
    let mut reasons = Vec::new();
    for url in metadata_urls(issuer).map_err(unavailable)? {
        match fetch(transport, &url).await {
            Ok(endpoints) => {
                if endpoints.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                    return Err(DiscoveryError::IssuerMismatch {
                        issuer: issuer.to_owned(),
                        found: endpoints.issuer,
                    });
                }
                return Ok(endpoints);
            }
            Err(reason) => reasons.push(format!("{url}: {reason}")),
        }
    }
    Err(unavailable(reasons.join("; ")))
}

async fn fetch(transport: &Transport, url: &str) -> Result<Endpoints, String> {
    let answer = transport.get(url).await.map_err(|e| e.to_string())?;
    match answer.status {
        Some(status) if (200..300).contains(&status) => {}
        status => return Err(format!("answered {}", status.unwrap_or(0))),
    }
    serde_json::from_slice(&answer.body)
        .map_err(|e| format!("not authorization server metadata: {e}"))
}

#[cfg(test)]
mod tests {
    use super::metadata_urls;

    #[test]
    fn oidc_first_then_rfc_8414_with_the_path_after_the_well_known_part() {
        assert_eq!(
            metadata_urls("https://dev-1.okta.com/oauth2/default").unwrap(),
            [
                "https://dev-1.okta.com/oauth2/default/.well-known/openid-configuration",
                "https://dev-1.okta.com/.well-known/oauth-authorization-server/oauth2/default",
            ]
        );
        assert_eq!(
            metadata_urls("https://acme.eu.auth0.com/").unwrap()[1],
            "https://acme.eu.auth0.com/.well-known/oauth-authorization-server"
        );
    }
}
