//! The jwt-bearer grant (RFC 7523 §2.1), which oauth2 has no request for: the form built here
//! (grant_type, assertion, scope, and the provider's client authentication, if any), sent through
//! the one transport like the other grants, the answer read as a lenient token response.

use std::sync::Mutex;

use super::{Exchange, Failure, LenientTokenResponse, RefreshOutcome, Refresher};
use crate::domain::{Secret, UnixTime};
use crate::provider::{ClientAuth, Provider};

/// The grant type URI (RFC 7523 §2.1).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

impl Refresher {
    /// Asks for an access token with `assertion`.
    pub(super) async fn jwt_bearer(
        &self,
        provider: &Provider,
        assertion: &Secret,
        scopes: Option<&str>,
        now: UnixTime,
        exchange: &Mutex<Exchange>,
    ) -> Result<RefreshOutcome, Failure> {
        let client_assertion = provider
            .client_assertion(now)
            .map_err(|e| Failure::Local(e.to_string()))?;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT_TYPE),
            ("assertion", assertion.expose()),
        ];
        if !provider.scope_in_assertion
            && let Some(scopes) = scopes.filter(|s| !s.trim().is_empty())
        {
            form.push(("scope", scopes));
        }
        for (k, v) in &provider.extra_params {
            form.push((k, v));
        }
        // A public client sends the assertion alone: its `iss` names the client (Salesforce, Google).
        let basic = if matches!(provider.auth, ClientAuth::None) {
            None
        } else {
            provider.authenticate_form(&mut form, client_assertion.as_ref())
        };
        let seen = self
            .transport()
            .post_form(&provider.token_url, &form, basic)
            .await
            .map_err(Failure::Http)?;
        exchange
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_from(&seen);
        if seen.status != Some(200) {
            return Err(Failure::Response);
        }
        let tokens: LenientTokenResponse =
            serde_json::from_slice(&seen.body).map_err(|_| Failure::Response)?;
        Ok(
            match tokens.into_token_set(
                now,
                provider.default_expires_in,
                provider.refresh_token_lifetime,
            ) {
                Ok(tokens) => RefreshOutcome::Refreshed(tokens),
                Err(refused) => RefreshOutcome::Refused {
                    reason: refused.to_string(),
                },
            },
        )
    }
}
