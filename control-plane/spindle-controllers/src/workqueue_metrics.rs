//! client-go's work queue metrics, per queue `name` (the controller's), on the control
//! plane's registry: `workqueue_depth`, `workqueue_adds_total`,
//! `workqueue_queue_duration_seconds` (added to picked up), `workqueue_work_duration_seconds`
//! (picked up to done) and `workqueue_retries_total` (delayed adds), with client-go's
//! buckets (10 ns to 10 s, by tens).

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use spindle_metrics::{histogram_family, HistogramFamily, CONTROL_PLANE};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Name {
    name: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-8, 10.0, 10))
}

struct Families {
    depth: Family<Name, Gauge>,
    adds: Family<Name, Counter>,
    queue_duration: HistogramFamily<Name>,
    work_duration: HistogramFamily<Name>,
    retries: Family<Name, Counter>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    let histograms = |name: &str, help: &str| {
        CONTROL_PLANE.register(name, help, histogram_family(duration_histogram))
    };
    let counter = |name: &str, help: &str| CONTROL_PLANE.register(name, help, Family::default());
    Families {
        depth: CONTROL_PLANE.register(
            "workqueue_depth",
            "Current depth of workqueue",
            Family::default(),
        ),
        adds: counter(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
        ),
        queue_duration: histograms(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
        ),
        work_duration: histograms(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
        ),
        retries: counter(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
        ),
    }
});

/// Register the families at start (each is exposed once a queue has a series).
pub fn register() {
    LazyLock::force(&FAMILIES);
}

/// One queue's series, looked up once when the queue is named.
pub(crate) struct QueueMetrics {
    depth: Gauge,
    adds: Counter,
    queue_duration: Histogram,
    work_duration: Histogram,
    retries: Counter,
}

impl QueueMetrics {
    pub(crate) fn new(name: &'static str) -> QueueMetrics {
        let n = Name { name };
        let f = &*FAMILIES;
        QueueMetrics {
            depth: f.depth.get_or_create(&n).clone(),
            adds: f.adds.get_or_create(&n).clone(),
            queue_duration: f.queue_duration.get_or_create(&n).clone(),
            work_duration: f.work_duration.get_or_create(&n).clone(),
            retries: f.retries.get_or_create(&n).clone(),
        }
    }

    pub(crate) fn added(&self, n: u64, depth: usize) {
        self.adds.inc_by(n);
        self.depth(depth);
    }

    pub(crate) fn depth(&self, depth: usize) {
        self.depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub(crate) fn picked(&self, added: Option<Instant>, depth: usize) {
        if let Some(at) = added {
            self.queue_duration.observe(at.elapsed().as_secs_f64());
        }
        self.depth(depth);
    }

    pub(crate) fn done(&self, started: Option<Instant>) {
        if let Some(at) = started {
            self.work_duration.observe(at.elapsed().as_secs_f64());
        }
    }

    pub(crate) fn retry(&self) {
        self.retries.inc();
    }
}
