//! The series a scrape registers from the store: the table-wide aggregates (the same on every
//! replica of one database) and, up to `metrics.per_credential_max` credentials, one set per
//! credential.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::domain::{Status, UnixTime};
use crate::store::{Aggregate, AggregateWindow, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderStatusLabels {
    provider: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    credential: String,
    provider: String,
    status: String,
}

/// A per-provider series of the aggregate statement: name, help, its figure in one row.
type Series<T> = (&'static str, &'static str, fn(&Aggregate) -> T);

/// The per-provider counts of the aggregate statement: name, help, the figure (summed over
/// statuses).
const COUNTS: [Series<i64>; 4] = [
    (
        "credentials_failing",
        "Active credentials counted as failing (retry.failing_after_failures / failing_after)",
        |a| a.failing,
    ),
    (
        "credentials_expiring_within_margin",
        "Credentials not disabled whose access token expires within refresh_margin (or expired)",
        |a| a.expiring,
    ),
    (
        "refresh_tokens_expiring_within_warning",
        "Credentials not disabled whose refresh token's known absolute expiry falls within \
         refresh_token_warning (or passed): re-authorize them",
        |a| a.refresh_token_expiring,
    ),
    (
        "renewals_in_flight",
        "Credentials claimed under a lease that has not run out: refreshes in flight, by any \
         replica or CLI process",
        |a| a.renewals_in_flight,
    ),
];

/// The per-provider earliest times of the aggregate statement: name, help, the time (the
/// earliest over statuses).
const TIMES: [Series<Option<UnixTime>>; 3] = [
    (
        "access_token_soonest_expiry_timestamp_seconds",
        "The soonest access-token expiry among credentials not disabled (Unix time)",
        |a| a.soonest_expiry,
    ),
    (
        "oldest_refresh_timestamp_seconds",
        "The oldest last successful refresh among credentials not disabled (Unix time)",
        |a| a.oldest_refresh,
    ),
    (
        "refresh_token_soonest_expiry_timestamp_seconds",
        "The soonest known refresh-token absolute expiry among credentials not disabled (Unix time)",
        |a| a.refresh_token_soonest_expiry,
    ),
];

impl super::Metrics {
    /// The table-wide series, from one aggregate statement; returns how many credentials there
    /// are.
    pub(super) async fn register_aggregates(
        &self,
        registry: &mut Registry,
        now: UnixTime,
    ) -> Result<i64, StoreError> {
        let inner = &self.inner;
        let rows = inner
            .store
            .aggregates(
                now,
                AggregateWindow {
                    access_token_by: now.saturating_add(inner.margin),
                    refresh_token_by: now.saturating_add(inner.refresh_token_warning),
                },
                inner.failing,
            )
            .await?;
        let credentials = Family::<ProviderStatusLabels, Gauge>::default();
        let counts = COUNTS.map(|_| Family::<ProviderLabels, Gauge>::default());
        let times = TIMES.map(|_| Family::<ProviderLabels, Gauge>::default());
        let mut total = 0;
        let mut firsts: BTreeMap<&str, [Option<UnixTime>; TIMES.len()]> = BTreeMap::new();
        for row in &rows {
            total += row.credentials;
            let provider = ProviderLabels {
                provider: row.provider.clone(),
            };
            credentials
                .get_or_create(&ProviderStatusLabels {
                    provider: row.provider.clone(),
                    status: row.status.clone(),
                })
                .set(row.credentials);
            for ((_, _, count), family) in COUNTS.iter().zip(&counts) {
                family.get_or_create(&provider).inc_by(count(row));
            }
            let entry = firsts.entry(&row.provider).or_default();
            for ((_, _, time), first) in TIMES.iter().zip(entry.iter_mut()) {
                *first = earliest(*first, time(row));
            }
        }
        for (provider, firsts) in firsts {
            let labels = ProviderLabels {
                provider: provider.to_owned(),
            };
            for (at, family) in firsts.into_iter().zip(&times) {
                if let Some(at) = at {
                    family.get_or_create(&labels).set(at);
                }
            }
        }
        registry.register(
            "credentials",
            "Credentials by provider and stored status (table-wide: the same on every replica)",
            credentials,
        );
        for ((name, help, _), family) in COUNTS.iter().zip(counts) {
            registry.register(*name, *help, family);
        }
        for ((name, help, _), family) in TIMES.iter().zip(times) {
            registry.register(*name, *help, family);
        }
        Ok(total)
    }

    /// How many refresh requests went out whose lease ran out before their outcome was stored
    /// (table-wide): a process stopped (SIGSTOP, a paused VM or container) or cut off from the
    /// database with its request out — or dead, until a sweep takes its claim over.
    pub(super) async fn register_sent_past_lease(
        &self,
        registry: &mut Registry,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let held = self.inner.store.sent_past_lease(now).await?;
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(held.len()).unwrap_or(i64::MAX));
        registry.register(
            "requests_out_past_lease",
            "Refresh requests sent whose lease ran out before their outcome was stored: a process \
             stopped or cut off from the database with its request out (or dead, until a sweep \
             takes its claim over); table-wide",
            gauge,
        );
        Ok(())
    }

    /// The series per credential (labels `credential`, `provider`).
    pub(super) async fn register_per_credential(
        &self,
        registry: &mut Registry,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let expires = Family::<CredentialLabels, Gauge>::default();
        let failures = Family::<CredentialLabels, Gauge>::default();
        let status = Family::<StatusLabels, Gauge>::default();
        for c in inner.store.summaries().await? {
            let labels = CredentialLabels {
                credential: c.name.clone(),
                provider: c.provider.clone(),
            };
            if let Some(at) = c.access_token_expires_at {
                expires.get_or_create(&labels).set(at - now);
            }
            failures.get_or_create(&labels).set(c.consecutive_failures);
            let failures = u32::try_from(c.consecutive_failures).unwrap_or(u32::MAX);
            let shown = if c.status == Status::Active
                && inner.failing.is_failing(failures, c.last_success_at, now)
            {
                "failing".to_owned()
            } else {
                c.status.to_string()
            };
            status
                .get_or_create(&StatusLabels {
                    credential: c.name,
                    provider: c.provider,
                    status: shown,
                })
                .set(1);
        }
        registry.register(
            "access_token_expires_in_seconds",
            "Seconds until the stored access token expires (negative: expired)",
            expires,
        );
        registry.register(
            "consecutive_failures",
            "Failed refreshes since the last success",
            failures,
        );
        registry.register("credential_status", "1 for the credential's status", status);
        Ok(())
    }
}

/// The earlier of two optional times.
fn earliest(a: Option<UnixTime>, b: Option<UnixTime>) -> Option<UnixTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
