//! Known providers, so a provider block is a few lines: each preset fills in endpoints and
//! defaults that the block leaves out (the block's own values always win). Pure; part of `config`,
//! whose provider settings it reads.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{Preset, ProviderSettings};
use crate::domain::RefreshTokenReuse;

/// Lifetime assumed when neither the response nor the configuration gives one.
const DEFAULT_EXPIRES_IN: Duration = Duration::from_hours(1);

/// A provider's effective endpoints and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// `None` only when `issuer` is set: discovery finds it.
    pub token_url: Option<String>,
    pub authorization_url: Option<String>,
    pub revocation_url: Option<String>,
    /// The device authorization endpoint (RFC 8628), when the provider has one.
    pub device_authorization_url: Option<String>,
    /// Metadata to discover endpoints from (RFC 8414 / OpenID Connect).
    pub issuer: Option<String>,
    pub scopes: Vec<String>,
    pub scope_on_refresh: bool,
    pub default_expires_in: Duration,
    pub refresh_token_lifetime: Option<Duration>,
    pub authorization_params: BTreeMap<String, String>,
    /// The `aud` of jwt-bearer assertions; `None`: the token endpoint.
    pub assertion_audience: Option<String>,
    /// Whether jwt-bearer scopes go into the assertion's `scope` claim (Google) instead of the
    /// form.
    pub scope_in_assertion: bool,
    /// Whether a refresh token may be presented a second time (after an interrupted attempt).
    pub refresh_token_reuse: RefreshTokenReuse,
}

/// What a preset contributes.
struct Defaults {
    token_url: Option<String>,
    authorization_url: Option<String>,
    revocation_url: Option<String>,
    device_authorization_url: Option<String>,
    /// Scopes added when missing.
    required_scopes: &'static [&'static str],
    scope_on_refresh: bool,
    default_expires_in: Duration,
    refresh_token_lifetime: Option<Duration>,
    authorization_params: &'static [(&'static str, &'static str)],
    needs_issuer: bool,
    assertion_audience: Option<String>,
    scope_in_assertion: bool,
    /// What the provider documents about presenting a refresh token twice; `None` (strict)
    /// wherever it documents nothing.
    refresh_token_reuse: RefreshTokenReuse,
}

impl Defaults {
    fn none() -> Self {
        Self {
            token_url: None,
            authorization_url: None,
            revocation_url: None,
            device_authorization_url: None,
            required_scopes: &[],
            scope_on_refresh: false,
            default_expires_in: DEFAULT_EXPIRES_IN,
            refresh_token_lifetime: None,
            authorization_params: &[],
            needs_issuer: false,
            assertion_audience: None,
            scope_in_assertion: false,
            refresh_token_reuse: RefreshTokenReuse::None,
        }
    }
}

/// The effective shape of a provider block, or the field that is missing or wrong and why.
pub fn shape(p: &ProviderSettings) -> Result<Shape, (&'static str, String)> {
    let d = match p.preset {
        None => Defaults::none(),
        Some(Preset::Microsoft) => microsoft(p)?,
        Some(Preset::Google) => google(),
        Some(Preset::Salesforce) => {
            let host = p.domain.as_deref().unwrap_or("login.salesforce.com");
            host_only("domain", host)?;
            Defaults {
                token_url: Some(format!("https://{host}/services/oauth2/token")),
                authorization_url: Some(format!("https://{host}/services/oauth2/authorize")),
                revocation_url: Some(format!("https://{host}/services/oauth2/revoke")),
                required_scopes: &["refresh_token"],
                // Salesforce sends no expires_in; its sessions last the org's session timeout
                // (2 hours by default). Assume less, so a shorter org setting is still covered.
                default_expires_in: Duration::from_hours(1),
                // Salesforce reuses refresh tokens unless a connected app turns "refresh token
                // rotation" on, and documents no grace window for that: strict.
                // The JWT bearer flow's audience is the login host, not the My Domain.
                assertion_audience: Some(if host == "test.salesforce.com" {
                    "https://test.salesforce.com".to_owned()
                } else {
                    "https://login.salesforce.com".to_owned()
                }),
                ..Defaults::none()
            }
        }
        Some(Preset::Servicenow) => {
            let Some(instance) = p.instance.as_deref() else {
                return Err((
                    "instance",
                    "the servicenow preset needs the instance name, e.g. \"dev12345\"".to_owned(),
                ));
            };
            host_only("instance", instance)?;
            let base = format!("https://{instance}.service-now.com");
            Defaults {
                token_url: Some(format!("{base}/oauth_token.do")),
                authorization_url: Some(format!("{base}/oauth_auth.do")),
                revocation_url: Some(format!("{base}/oauth_revoke_token.do")),
                // ServiceNow's defaults for a new application registry entry.
                default_expires_in: Duration::from_mins(30),
                refresh_token_lifetime: Some(Duration::from_hours(100 * 24)),
                // ServiceNow's refresh tokens do not rotate: one is used again until its
                // "Refresh Token Lifespan" ends (Application Registry, docs.servicenow.com:
                // "OAuth tokens" / "Create an endpoint for clients to access the instance").
                refresh_token_reuse: RefreshTokenReuse::StaysValid,
                ..Defaults::none()
            }
        }
        Some(Preset::Okta) => Defaults {
            required_scopes: &["offline_access"],
            needs_issuer: true,
            // Okta's rotating refresh tokens have a grace period of 30 s by default (0 to 60 s,
            // per app: https://developer.okta.com/docs/guides/refresh-tokens/main/
            // #refresh-token-rotation). An app set to 0 needs `refresh_token_reuse = "none"`.
            refresh_token_reuse: RefreshTokenReuse::Within(30),
            ..Defaults::none()
        },
        // Auth0's reuse interval is 0 unless the tenant sets one
        // (https://auth0.com/docs/secure/tokens/refresh-tokens/configure-refresh-token-rotation):
        // strict, like every provider that documents nothing else.
        Some(Preset::Auth0) => Defaults {
            required_scopes: &["offline_access"],
            needs_issuer: true,
            ..Defaults::none()
        },
    };
    if d.needs_issuer && p.issuer.is_none() {
        return Err(("issuer", "this preset finds its endpoints from the issuer, e.g. \"https://dev-123.okta.com/oauth2/default\"".to_owned()));
    }
    let token_url = p.token_url.clone().or(d.token_url);
    if token_url.is_none() && p.issuer.is_none() {
        return Err((
            "token_url",
            "set token_url, an issuer, or a preset".to_owned(),
        ));
    }
    let mut scopes = p.scopes.clone();
    for required in d.required_scopes {
        if !scopes.iter().any(|s| s == required) {
            scopes.push((*required).to_owned());
        }
    }
    let mut authorization_params: BTreeMap<String, String> = d
        .authorization_params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    authorization_params.extend(p.authorization_params.clone());
    Ok(Shape {
        token_url,
        authorization_url: p.authorization_url.clone().or(d.authorization_url),
        revocation_url: p.revocation_url.clone().or(d.revocation_url),
        device_authorization_url: p
            .device_authorization_url
            .clone()
            .or(d.device_authorization_url),
        issuer: p.issuer.clone(),
        scopes,
        scope_on_refresh: p.scope_on_refresh.unwrap_or(d.scope_on_refresh),
        default_expires_in: p.default_expires_in.unwrap_or(d.default_expires_in),
        refresh_token_lifetime: p.refresh_token_lifetime.or(d.refresh_token_lifetime),
        authorization_params,
        assertion_audience: p.assertion_audience.clone().or(d.assertion_audience),
        scope_in_assertion: d.scope_in_assertion,
        refresh_token_reuse: p.refresh_token_reuse.unwrap_or(d.refresh_token_reuse),
    })
}

/// Google's endpoints and defaults.
fn google() -> Defaults {
    Defaults {
        token_url: Some("https://oauth2.googleapis.com/token".to_owned()),
        authorization_url: Some("https://accounts.google.com/o/oauth2/v2/auth".to_owned()),
        revocation_url: Some("https://oauth2.googleapis.com/revoke".to_owned()),
        device_authorization_url: Some("https://oauth2.googleapis.com/device/code".to_owned()),
        // A refresh token only with access_type=offline, and again only with prompt=consent.
        authorization_params: &[("access_type", "offline"), ("prompt", "consent")],
        // Service accounts: the token endpoint is the audience, scopes are claims.
        assertion_audience: Some("https://oauth2.googleapis.com/token".to_owned()),
        scope_in_assertion: true,
        // Google's refresh tokens do not rotate: a refresh answers with an access token only,
        // and the refresh token stays valid until revoked or unused for six months
        // (https://developers.google.com/identity/protocols/oauth2/web-server#offline,
        // "Refresh token expiration").
        refresh_token_reuse: RefreshTokenReuse::StaysValid,
        ..Defaults::none()
    }
}

/// Microsoft Entra's v2.0 endpoints for `tenant` (default `common`).
fn microsoft(p: &ProviderSettings) -> Result<Defaults, (&'static str, String)> {
    let tenant = p.tenant.as_deref().unwrap_or("common");
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(("tenant", format!("{tenant:?} is not a tenant id or domain")));
    }
    let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
    Ok(Defaults {
        token_url: Some(format!("{base}/token")),
        authorization_url: Some(format!("{base}/authorize")),
        device_authorization_url: Some(format!("{base}/devicecode")),
        // Entra issues a refresh token only with offline_access, and refuses a refresh
        // without scope (AADSTS900144).
        required_scopes: &["offline_access"],
        scope_on_refresh: true,
        // Entra does not revoke a refresh token when it is used: the new one replaces it, and the
        // old one stays valid until it expires
        // (https://learn.microsoft.com/entra/identity-platform/refresh-tokens).
        refresh_token_reuse: RefreshTokenReuse::StaysValid,
        ..Defaults::none()
    })
}

/// A host name or label: letters, digits, dots and dashes only (it goes into a URL).
fn host_only(field: &'static str, value: &str) -> Result<(), (&'static str, String)> {
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
    {
        return Err((field, format!("{value:?} is not a host name")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(toml: &str) -> ProviderSettings {
        let text = format!("client_id = \"x\"\nclient_secret = \"s\"\n{toml}");
        config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap()
    }

    #[test]
    fn microsoft_adds_offline_access_and_scope_on_refresh() {
        let s = shape(&block("preset = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nscopes = \"https://contoso.sharepoint.com/.default\"")).unwrap();
        assert_eq!(
            s.token_url.as_deref(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
        );
        assert_eq!(
            s.scopes,
            ["https://contoso.sharepoint.com/.default", "offline_access"]
        );
        assert!(s.scope_on_refresh);
        let own = shape(&block("preset = \"microsoft\"\nscope_on_refresh = false")).unwrap();
        assert!(!own.scope_on_refresh, "the block's own value wins");
        assert!(own.token_url.unwrap().contains("/common/"));
    }

    #[test]
    fn google_asks_for_offline_access_when_authorizing() {
        let s = shape(&block("preset = \"google\"")).unwrap();
        assert_eq!(s.authorization_params["access_type"], "offline");
        assert_eq!(s.authorization_params["prompt"], "consent");
        assert_eq!(
            s.revocation_url.as_deref(),
            Some("https://oauth2.googleapis.com/revoke")
        );
        assert_eq!(
            s.device_authorization_url.as_deref(),
            Some("https://oauth2.googleapis.com/device/code")
        );
    }

    #[test]
    fn device_flow_presets_say_where_it_starts() {
        let s = shape(&block(
            "preset = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"",
        ))
        .unwrap();
        assert_eq!(
            s.device_authorization_url.as_deref(),
            Some(
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode"
            )
        );
        // Okta's comes from its issuer's metadata; a block's own value wins.
        let okta = shape(&block(
            "preset = \"okta\"\nissuer = \"https://dev-1.okta.com/oauth2/default\"",
        ))
        .unwrap();
        assert_eq!(okta.device_authorization_url, None);
        let own = shape(&block(
            "preset = \"google\"\ndevice_authorization_url = \"https://x/device\"",
        ))
        .unwrap();
        assert_eq!(
            own.device_authorization_url.as_deref(),
            Some("https://x/device")
        );
    }

    #[test]
    fn servicenow_needs_an_instance_and_knows_its_lifetimes() {
        assert_eq!(
            shape(&block("preset = \"servicenow\"")).unwrap_err().0,
            "instance"
        );
        assert_eq!(
            shape(&block("preset = \"servicenow\"\ninstance = \"dev/../x\""))
                .unwrap_err()
                .0,
            "instance"
        );
        let s = shape(&block("preset = \"servicenow\"\ninstance = \"dev12345\"")).unwrap();
        assert_eq!(
            s.token_url.as_deref(),
            Some("https://dev12345.service-now.com/oauth_token.do")
        );
        assert_eq!(s.default_expires_in, Duration::from_mins(30));
        assert_eq!(s.refresh_token_lifetime, Some(Duration::from_hours(2400)));
    }

    #[test]
    fn salesforce_assumes_a_lifetime_and_honours_my_domain() {
        let s = shape(&block("preset = \"salesforce\"\ndomain = \"acme.my.salesforce.com\"\ndefault_expires_in = \"2h\"")).unwrap();
        assert_eq!(
            s.token_url.as_deref(),
            Some("https://acme.my.salesforce.com/services/oauth2/token")
        );
        assert_eq!(s.default_expires_in, Duration::from_hours(2));
        assert_eq!(
            s.assertion_audience.as_deref(),
            Some("https://login.salesforce.com")
        );
        let sandbox = shape(&block(
            "preset = \"salesforce\"\ndomain = \"test.salesforce.com\"",
        ))
        .unwrap();
        assert_eq!(
            sandbox.assertion_audience.as_deref(),
            Some("https://test.salesforce.com")
        );
        let own = shape(&block(
            "preset = \"salesforce\"\nassertion_audience = \"https://acme.my.site.com/customers\"",
        ))
        .unwrap();
        assert_eq!(
            own.assertion_audience.as_deref(),
            Some("https://acme.my.site.com/customers")
        );
    }

    #[test]
    fn presets_declare_what_their_provider_documents_about_reuse() {
        let reuse = |toml: &str| shape(&block(toml)).unwrap().refresh_token_reuse;
        let issuer = "issuer = \"https://id.example.com\"";
        assert_eq!(
            reuse("preset = \"microsoft\""),
            RefreshTokenReuse::StaysValid
        );
        assert_eq!(reuse("preset = \"google\""), RefreshTokenReuse::StaysValid);
        assert_eq!(
            reuse("preset = \"servicenow\"\ninstance = \"dev1\""),
            RefreshTokenReuse::StaysValid
        );
        assert_eq!(
            reuse(&format!("preset = \"okta\"\n{issuer}")),
            RefreshTokenReuse::Within(30)
        );
        assert_eq!(
            reuse(&format!("preset = \"auth0\"\n{issuer}")),
            RefreshTokenReuse::None
        );
        assert_eq!(reuse("preset = \"salesforce\""), RefreshTokenReuse::None);
        let url = "token_url = \"https://id.example.com/token\"";
        assert_eq!(reuse(url), RefreshTokenReuse::None, "no preset: strict");
        assert_eq!(
            reuse(&format!("{url}\nrefresh_token_reuse = \"45s\"")),
            RefreshTokenReuse::Within(45)
        );
        assert_eq!(
            reuse(&format!("{url}\nrefresh_token_reuse = 0")),
            RefreshTokenReuse::None
        );
        assert_eq!(
            reuse(&format!(
                "preset = \"okta\"\n{issuer}\nrefresh_token_reuse = \"none\""
            )),
            RefreshTokenReuse::None,
            "the block wins over its preset"
        );
        assert_eq!(
            reuse(&format!("{url}\nrefresh_token_reuse = \"stays-valid\"")),
            RefreshTokenReuse::StaysValid
        );
    }

    #[test]
    fn okta_and_auth0_need_an_issuer() {
        assert_eq!(shape(&block("preset = \"okta\"")).unwrap_err().0, "issuer");
        let s = shape(&block(
            "preset = \"auth0\"\nissuer = \"https://acme.eu.auth0.com/\"",
        ))
        .unwrap();
        assert_eq!(
            (s.token_url, s.issuer.as_deref()),
            (None, Some("https://acme.eu.auth0.com/"))
        );
    }

    #[test]
    fn without_a_preset_a_token_url_or_issuer_is_required() {
        assert_eq!(shape(&block("")).unwrap_err().0, "token_url");
        let s = shape(&block("token_url = \"https://x/token\"")).unwrap();
        assert_eq!(s.default_expires_in, DEFAULT_EXPIRES_IN);
    }
}
