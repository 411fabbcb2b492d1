//! `spindle-metrics` is the one home of Spindle's Prometheus metrics: two process-wide
//! registries, [`CONTROL_PLANE`] (API server, storage, controllers' work queues,
//! scheduler: kube-apiserver, kube-controller-manager and kube-scheduler in one process,
//! served on the API server's `/metrics`) and [`NODE`] (the agent, served on its own
//! `/metrics` as the kubelet's), and their exposition ([`Registry::expose`]) in the
//! Prometheus text format or OpenMetrics, as the scraper's `Accept` header asks.
//!
//! Components keep their metric families as statics next to the code that records them
//! and register them once ([`Registry::register`]); recording is then an atomic
//! increment or a histogram bucket, with no lock. Metric names and labels are
//! Kubernetes' where Kubernetes has the metric.

use std::sync::{LazyLock, RwLock};

pub use prometheus_client;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Metric;

/// The OpenMetrics text format's media type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's (version 0.0.4), for scrapers that do not ask for
/// OpenMetrics.
pub const PROMETHEUS_TEXT: &str = prometheus_text::CONTENT_TYPE;

/// kube-apiserver's latency buckets (`apiserver_request_duration_seconds`,
/// `etcd_request_duration_seconds`): 5 ms to 60 s.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Histograms by label set `L`, each made by a `fn` that knows the family's buckets.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// An empty [`HistogramFamily`] whose histograms `make` makes.
pub fn histogram_family<L: Clone + std::hash::Hash + Eq>(
    make: fn() -> Histogram,
) -> HistogramFamily<L> {
    Family::new_with_constructor(make)
}

/// A histogram over `buckets` (upper bounds, ascending).
pub fn histogram(buckets: &[f64]) -> Histogram {
    Histogram::new(buckets.iter().copied())
}

/// Metric families and their exposition. Registration takes a write lock (once per
/// family, at start); exposition a read lock; recording none.
pub struct Registry(LazyLock<RwLock<prometheus_client::registry::Registry>>);

/// kube-apiserver, kube-controller-manager and kube-scheduler's metrics.
pub static CONTROL_PLANE: Registry = Registry::new();
/// The node agent's (the kubelet's) metrics.
pub static NODE: Registry = Registry::new();

impl Registry {
    const fn new() -> Registry {
        Registry(LazyLock::new(RwLock::default))
    }

    /// Add a family and return it (metrics are handles: the clone records into the
    /// registered one). `name` is without a counter's `_total`, which exposition adds.
    pub fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric.clone());
        metric
    }

    /// Every family, in the format `accept` (the request's `Accept` header) prefers:
    /// OpenMetrics when it is named, the Prometheus text format otherwise. Returns the
    /// content type and the body.
    pub fn expose(&self, accept: Option<&str>) -> (&'static str, String) {
        let reg = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        // Writing to a String cannot fail; a family that could not be encoded would be
        // a bug in the encoder, which leaves what it wrote so far.
        if wants_openmetrics(accept) {
            let _ = text::encode(&mut out, &reg);
            (OPENMETRICS, out)
        } else {
            let _ = prometheus_text::encode(&mut out, &reg);
            (PROMETHEUS_TEXT, out)
        }
    }
}

/// Whether an `Accept` header names OpenMetrics with a non-zero quality (Prometheus sends
/// `application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,...`).
fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|range| {
            let mut params = range.split(';').map(str::trim);
            params.next() == Some("application/openmetrics-text")
                && params.all(|p| p.replace(' ', "") != "q=0")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    #[test]
    fn exposition_follows_the_accept_header() {
        let reg = Registry::new();
        let c: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        reg.register("demo_requests", "Requests", c.clone());
        c.get_or_create(&[("code", "200")]).inc_by(3);
        let (ct, body) = reg.expose(None);
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            body.contains("# TYPE demo_requests_total counter\n"),
            "{body}"
        );
        assert!(
            body.contains("demo_requests_total{code=\"200\"} 3\n"),
            "{body}"
        );
        assert!(!body.contains("# EOF"), "{body}");
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (ct, body) = reg.expose(Some(prometheus));
        assert_eq!(ct, OPENMETRICS);
        assert!(body.contains("# TYPE demo_requests counter\n"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        for refused in ["text/plain", "application/openmetrics-text;q=0", "*/*"] {
            assert_eq!(reg.expose(Some(refused)).0, PROMETHEUS_TEXT, "{refused}");
        }
    }

    #[test]
    fn histograms_have_the_buckets_asked_for() {
        let reg = Registry::new();
        let h = histogram(REQUEST_BUCKETS);
        reg.register("demo_duration_seconds", "Latency", h.clone());
        h.observe(0.03);
        let (_, body) = reg.expose(None);
        assert!(
            body.contains("demo_duration_seconds_bucket{le=\"0.025\"} 0\n"),
            "{body}"
        );
        assert!(
            body.contains("demo_duration_seconds_bucket{le=\"0.05\"} 1\n"),
            "{body}"
        );
        assert!(
            body.contains("demo_duration_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{body}"
        );
        assert!(body.contains("demo_duration_seconds_count 1\n"), "{body}");
    }
}
