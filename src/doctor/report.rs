//! The whole of `doctor`: which providers and credentials to check (all, or one credential and its
//! provider), the checks of each, and the report as text with its worst verdict. Reads the store
//! (never writes it) and probes providers through `provider_checks`. Imports `domain`, `provider`,
//! `refresh` and `store`.

use super::{
    Check, Verdict, credential_checks, database_checks, encryption_checks, failed, provider_checks,
    render,
};
use crate::domain::{GrantType, UnixTime};
use crate::provider::Providers;
use crate::refresh::Refresher;
use crate::store::{Store, StoreError};

/// What `doctor` looks at.
pub struct Scope<'a> {
    pub refresher: &'a Refresher,
    pub providers: &'a Providers,
    /// The database, when there is one: without it, only the providers are checked.
    pub store: Option<&'a Store>,
    /// How the database is named in the report (its path, or its URL without a password).
    pub database: String,
    /// Why a database server that should be there did not answer: a finding of its own.
    pub unreachable: Option<String>,
    /// What should change about how the database is reached (shown as warnings).
    pub database_warnings: &'a [String],
    /// One credential and its provider, or everything.
    pub only: Option<&'a str>,
    /// The `[[proxy]]` routes (checked when `only` is not given).
    pub proxies: &'a [crate::config::ProxySettings],
    /// Seconds before a refresh token's expiry to warn (`refresh_token_warning`).
    pub refresh_token_warning: i64,
    /// Seconds of the schedule's longest gap between sweeps.
    pub sweep_gap: i64,
    pub now: UnixTime,
}

/// Every block of checks, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub sections: Vec<(String, Vec<Check>)>,
    /// How many credentials were checked: with `only`, zero means there is no such credential.
    pub credentials: usize,
}

impl Report {
    /// The worst verdict of any check (`Ok` for none).
    #[must_use]
    pub fn worst(&self) -> Verdict {
        self.sections
            .iter()
            .flat_map(|(_, checks)| checks.iter().map(|c| c.verdict))
            .fold(Verdict::Ok, Ord::max)
    }

    /// The report as text; names and details from outside are escaped. Says so when there was
    /// nothing to check at all.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (title, checks) in &self.sections {
            render(&mut out, title, checks);
        }
        if out.is_empty() {
            out.push_str(
                "nothing to check: no provider is configured and no credential is stored (see `tokenwarden check-config`)\n",
            );
        }
        out
    }
}

/// Runs every check `scope` asks for.
pub async fn run(scope: &Scope<'_>) -> Result<Report, StoreError> {
    let mut rows = Vec::new();
    let mut usage = None;
    if let Some(store) = scope.store {
        usage = Some(store.key_usage().await?);
        for row in store
            .summaries()
            .await?
            .into_iter()
            .filter(|r| scope.only.is_none_or(|n| n == r.name))
        {
            let last = store.rotations(Some(&row.name), 1).await?.pop();
            rows.push((row, last));
        }
    }
    let mut report = Report {
        credentials: rows.len(),
        ..Report::default()
    };
    let mut database = match (scope.store, &scope.unreachable) {
        (Some(store), _) => database_checks(store).await,
        (None, Some(reason)) => vec![failed("connection", reason.clone())],
        (None, None) => Vec::new(),
    };
    database.extend(
        scope
            .database_warnings
            .iter()
            .map(|w| super::check(Verdict::Warn, "access", w.clone())),
    );
    if !database.is_empty() {
        report
            .sections
            .push((format!("database {}", scope.database), database));
    }
    for (name, provider) in scope.providers.iter() {
        let theirs: Vec<_> = rows.iter().filter(|(r, _)| r.provider == name).collect();
        if scope.only.is_some() && theirs.is_empty() {
            continue;
        }
        let cc_only = !theirs.is_empty()
            && theirs
                .iter()
                .all(|(r, _)| r.grant_type == GrantType::ClientCredentials);
        let checks = provider_checks(scope.refresher, provider, cc_only).await;
        report.sections.push((format!("provider {name}"), checks));
    }
    if let (Some(usage), Some(store)) = (&usage, scope.store)
        && scope.only.is_none()
    {
        let checks = encryption_checks(usage, store.sealer().keyring());
        report.sections.push(("encryption".to_owned(), checks));
    }
    if scope.only.is_none() && !scope.proxies.is_empty() {
        let stored = match scope.store {
            Some(store) => Some(store.summaries().await?),
            None => None,
        };
        for (i, route) in scope.proxies.iter().enumerate() {
            let checks =
                super::proxy_checks(&format!("proxy[{i}]"), route, stored.as_deref()).await;
            report.sections.push((
                format!("proxy route {} ({})", route.route_name(), route.listen),
                checks,
            ));
        }
    }
    for (row, last) in &rows {
        let mut checks = credential_checks(
            row,
            last.as_ref(),
            scope.refresh_token_warning,
            scope.sweep_gap,
            scope.now,
        );
        if scope.providers.get(&row.provider).is_none() {
            checks.insert(
                0,
                Check {
                    verdict: Verdict::Fail,
                    what: "provider",
                    detail: format!("{:?} is not configured", row.provider),
                },
            );
        }
        report.sections.push((
            format!("credential {} ({})", row.name, row.provider),
            checks,
        ));
    }
    Ok(report)
}
