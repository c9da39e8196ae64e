//! Per-route series for `/metrics`: requests by status class, renewals after 401, retries, 401s
//! passed through after a renewal, and the upstream's latency to its answer's head. Shared by
//! every route of the process; registered by `metrics` at each scrape.

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

impl ProxyStats {
    /// An answer given to a client (the proxy's own errors included).
    pub fn answered(&self, name: &str, status: u16) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&ClassLabels {
                route: name.to_owned(),
                class,
            })
            .inc();
    }

    pub fn renewed_after_401(&self, name: &str) {
        self.renewals.get_or_create(&route(name)).inc();
    }

    pub fn retried(&self, name: &str) {
        self.retries.get_or_create(&route(name)).inc();
    }

    /// A 401 passed through although the token was just renewed (or could not be retried).
    pub fn rejected_after_renewal(&self, name: &str) {
        self.rejected_after_renewal
            .get_or_create(&route(name))
            .inc();
    }

    /// Seconds from sending to the upstream's answer head.
    pub fn upstream_latency(&self, name: &str, seconds: f64) {
        self.latency.get_or_create(&route(name)).observe(seconds);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_per_route_and_class() {
        let stats = ProxyStats::default();
        stats.answered("graph", 200);
        stats.answered("graph", 204);
        stats.answered("graph", 502);
        stats.renewed_after_401("graph");
        stats.upstream_latency("graph", 0.003);
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
