//! Assertions for the jwt-bearer grant (RFC 7523 §2.1 and §3), beside `private_key_jwt`'s
//! client assertions: issuer the client_id, subject the credential's user or service account,
//! audience the provider's (a preset's, or the token endpoint), a short expiry and a unique
//! `jti`, signed with the provider's `private_key_file`. The key file is read again for every
//! assertion, so a key replaced on disk is used at once and one that went missing fails only the
//! attempts that need it (they back off) instead of the whole process; `check-config` checks it.

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, Header};

use super::secrets::{encoding_key, read_nonempty};
use super::{ASSERTION_LIFETIME_SECS, Provider, ProviderError};
use crate::domain::{Secret, UnixTime};

/// Where a provider's assertion key lives, and how to sign with it.
#[derive(Debug, Clone)]
pub struct GrantKey {
    pub path: PathBuf,
    pub alg: Algorithm,
    pub kid: Option<String>,
}

impl Provider {
    /// Whether the assertion key, if any, can be read and used now: for `check-config`. Resolving
    /// a provider does not insist, so that a missing key fails only its jwt-bearer credentials.
    pub fn check_grant_key(&self) -> Result<(), ProviderError> {
        let Some(key) = &self.grant_key else {
            return Ok(());
        };
        let pem = read_nonempty(&self.name, "private key file", &key.path)?;
        encoding_key(&self.name, &key.path, key.alg, pem.as_bytes()).map(|_| ())
    }

    /// A freshly signed jwt-bearer assertion for `subject` (no `sub` when `None`). `scopes` go
    /// into a `scope` claim when the provider wants them there (Google).
    pub fn grant_assertion(
        &self,
        subject: Option<&str>,
        scopes: Option<&str>,
        now: UnixTime,
    ) -> Result<Secret, ProviderError> {
        let Some(key) = &self.grant_key else {
            return Err(ProviderError::Invalid {
                provider: self.name.clone(),
                reason: "no private_key_file to sign jwt-bearer assertions with".to_owned(),
            });
        };
        let pem = read_nonempty(&self.name, "private key file", &key.path)?;
        let signing = encoding_key(&self.name, &key.path, key.alg, pem.as_bytes())?;
        let mut claims = serde_json::json!({
            "iss": self.client_id,
            "aud": self.assertion_audience,
            "jti": hex::encode(rand::random::<[u8; 16]>()),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        if let Some(subject) = subject {
            claims["sub"] = subject.into();
        }
        if self.scope_in_assertion
            && let Some(scopes) = scopes
        {
            claims["scope"] = scopes.into();
        }
        let mut header = Header::new(key.alg);
        header.kid.clone_from(&key.kid);
        jsonwebtoken::encode(&header, &claims, &signing)
            .map(Secret::new)
            .map_err(|e| ProviderError::Sign {
                provider: self.name.clone(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::provider::ClientAuth;

    fn provider(key: Option<GrantKey>, scope_in_assertion: bool) -> Provider {
        Provider {
            name: "sf".to_owned(),
            token_url: "https://login.example.com/token".to_owned(),
            authorization_url: None,
            revocation_url: None,
            device_authorization_url: None,
            redirect_uri: None,
            client_id: "consumer-key".to_owned(),
            auth: ClientAuth::None,
            scopes: vec![],
            scope_on_refresh: false,
            default_expires_in: 3600,
            refresh_token_lifetime: None,
            extra_params: vec![],
            authorization_params: vec![],
            grant_key: key,
            assertion_audience: "https://login.salesforce.com".to_owned(),
            scope_in_assertion,
            refresh_token_reuse: crate::domain::RefreshTokenReuse::None,
            rate_limit: None,
            max_concurrency: None,
            warnings: vec![],
        }
    }

    fn key(path: &str) -> GrantKey {
        GrantKey {
            path: PathBuf::from(path),
            alg: Algorithm::RS256,
            kid: Some("k1".to_owned()),
        }
    }

    fn fixture() -> String {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt-client.key.pem"
        )
        .to_owned()
    }

    fn claims(jwt: &Secret) -> serde_json::Value {
        let payload = jwt.expose().split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn an_assertion_names_issuer_subject_audience_a_short_expiry_and_a_fresh_jti() {
        let p = provider(Some(key(&fixture())), false);
        let a = p
            .grant_assertion(Some("user@acme.example"), Some("api"), 1000)
            .unwrap();
        let b = p
            .grant_assertion(Some("user@acme.example"), Some("api"), 1000)
            .unwrap();
        let (ca, cb) = (claims(&a), claims(&b));
        assert_eq!(ca["iss"], "consumer-key");
        assert_eq!(ca["sub"], "user@acme.example");
        assert_eq!(ca["aud"], "https://login.salesforce.com");
        assert_eq!(ca["iat"], 1000);
        assert!(ca["exp"].as_i64().unwrap() - 1000 <= 300);
        assert_ne!(ca["jti"], cb["jti"]);
        assert!(ca.get("scope").is_none(), "scopes go in the form here");
        let google = provider(Some(key(&fixture())), true);
        let g = claims(&google.grant_assertion(None, Some("a b"), 1000).unwrap());
        assert_eq!(g["scope"], "a b");
        assert!(g.get("sub").is_none());
    }

    #[test]
    fn no_key_or_a_missing_one_is_a_clear_error() {
        let e = provider(None, false)
            .grant_assertion(Some("u"), None, 1000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no private_key_file"), "{e}");
        let gone = provider(Some(key("/nonexistent/key.pem")), false);
        let e = gone
            .grant_assertion(Some("u"), None, 1000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("private key file /nonexistent/key.pem: cannot read it"),
            "{e}"
        );
        assert!(gone.check_grant_key().is_err());
    }
}
