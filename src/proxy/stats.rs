//! Per-route series for `/metrics`: requests by status class, renewals after 401, retries, 401s
//! passed through after a renewal, and the upstream's latency to its answer's head. Shared by
//! every route of the process; registered by `metrics` at each scrape. A route counts through its
//! own [`RouteStats`], which keeps its series' handles: a request takes no lock on a family and
//! builds no label set.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    route: String,
    /// `2xx` … `5xx`.
    class: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The proxy's series; cheap to clone (clones share the counts).
#[derive(Clone)]
pub struct ProxyStats {
    requests: Family<ClassLabels, Counter>,
    renewals: Family<RouteLabels, Counter>,
    retries: Family<RouteLabels, Counter>,
    rejected_after_renewal: Family<RouteLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for ProxyStats {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            renewals: Family::default(),
            retries: Family::default(),
            rejected_after_renewal: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

fn route(name: &str) -> RouteLabels {
    RouteLabels {
        route: name.to_owned(),
    }
}

/// `status`'s class, as an index into [`CLASSES`].
fn class_of(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One route's series; cheap to clone. Each series joins its family the first time it is
/// counted (as before: no zero-valued series for what never happened).
#[derive(Clone)]
pub struct RouteStats {
    inner: Arc<RouteSeries>,
}

struct RouteSeries {
    name: String,
    families: ProxyStats,
    classes: [OnceLock<Counter>; 5],
    latency: OnceLock<Histogram>,
}

impl ProxyStats {
    /// The series of the route `name`.
    #[must_use]
    pub fn route(&self, name: &str) -> RouteStats {
        RouteStats {
            inner: Arc::new(RouteSeries {
                name: name.to_owned(),
                families: self.clone(),
                classes: Default::default(),
                latency: OnceLock::new(),
            }),
        }
    }

    /// Adds the series to `registry` (prefixed `tokenwarden_` by it).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "proxy_requests",
            "Answers of proxy routes to clients, by status class",
            self.requests.clone(),
        );
        registry.register(
            "proxy_renewals_after_401",
            "Renewals of a route's credential after the upstream answered 401",
            self.renewals.clone(),
        );
        registry.register(
            "proxy_retries",
            "Requests sent again after a renewal on 401",
            self.retries.clone(),
        );
        registry.register(
            "proxy_unauthorized_passed_through",
            "401 answers passed to the client although renewed or not retryable (sustained 401s)",
            self.rejected_after_renewal.clone(),
        );
        registry.register(
            "proxy_upstream_latency_seconds",
            "Seconds from sending a request upstream to the head of its answer",
            self.latency.clone(),
        );
    }
}

impl RouteStats {
    /// An answer given to a client (the proxy's own errors included).
    pub fn answered(&self, status: u16) {
        let i = class_of(status);
        let s = &*self.inner;
        s.classes[i]
            .get_or_init(|| {
                s.families
                    .requests
                    .get_or_create(&ClassLabels {
                        route: s.name.clone(),
                        class: CLASSES[i],
                    })
                    .clone()
            })
            .inc();
    }

    pub fn renewed_after_401(&self) {
        let s = &*self.inner;
        s.families.renewals.get_or_create(&route(&s.name)).inc();
    }

    pub fn retried(&self) {
        let s = &*self.inner;
        s.families.retries.get_or_create(&route(&s.name)).inc();
    }

    /// A 401 passed through although the token was just renewed (or could not be retried).
    pub fn rejected_after_renewal(&self) {
        let s = &*self.inner;
        s.families
            .rejected_after_renewal
            .get_or_create(&route(&s.name))
            .inc();
    }

    /// Seconds from sending to the upstream's answer head.
    pub fn upstream_latency(&self, seconds: f64) {
        let s = &*self.inner;
        s.latency
            .get_or_init(|| s.families.latency.get_or_create(&route(&s.name)).clone())
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_per_route_and_class() {
        let stats = ProxyStats::default();
        let graph = stats.route("graph");
        graph.answered(200);
        stats.route("graph").answered(204);
        graph.answered(502);
        graph.renewed_after_401();
        graph.upstream_latency(0.003);
        let mut registry = Registry::with_prefix("tokenwarden");
        stats.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"tokenwarden_proxy_requests_total{route="graph",class="2xx"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"class="5xx"} 1"#), "{text}");
        assert!(
            text.contains(r#"tokenwarden_proxy_renewals_after_401_total{route="graph"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tokenwarden_proxy_upstream_latency_seconds_count{route="graph"} 1"#),
            "{text}"
        );
    }
}
