//! kube-scheduler's metrics on the control plane's registry:
//! `scheduler_schedule_attempts_total{result,profile}` and
//! `scheduler_scheduling_attempt_duration_seconds{result,profile}` (from the pod leaving
//! the queue to its binding, or to the decision that it fits nowhere), with kube's
//! results (`scheduled`, `unschedulable`, `error`) and buckets (1 ms doubling, 15).

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use spindle_metrics::{histogram_family, HistogramFamily, CONTROL_PLANE};
use tokio::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    result: &'static str,
    profile: String,
}

fn attempt_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

struct Families {
    attempts: Family<Labels, Counter>,
    duration: HistogramFamily<Labels>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    Families {
    attempts: CONTROL_PLANE.register(
        "scheduler_schedule_attempts",
        "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem",
        Family::default(),
    ),
    duration: CONTROL_PLANE.register(
        "scheduler_scheduling_attempt_duration_seconds",
        "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
        histogram_family(attempt_histogram),
    ),
}
});

/// What one result's attempts record into.
#[derive(Clone)]
struct Series {
    attempts: Counter,
    duration: Histogram,
}

impl Series {
    fn new(result: &'static str, profile: &str) -> Series {
        let l = Labels {
            result,
            profile: profile.to_string(),
        };
        Series {
            attempts: FAMILIES.attempts.get_or_create(&l).clone(),
            duration: FAMILIES.duration.get_or_create(&l).clone(),
        }
    }

    fn observe(&self, started: Instant) {
        self.attempts.inc();
        self.duration.observe(started.elapsed().as_secs_f64());
    }
}

/// One profile's (scheduler name's) series, looked up once.
#[derive(Clone)]
pub(crate) struct Attempts {
    scheduled: Series,
    unschedulable: Series,
    error: Series,
}

impl Attempts {
    pub(crate) fn new(profile: &str) -> Attempts {
        Attempts {
            scheduled: Series::new("scheduled", profile),
            unschedulable: Series::new("unschedulable", profile),
            error: Series::new("error", profile),
        }
    }

    pub(crate) fn scheduled(&self, started: Instant) {
        self.scheduled.observe(started);
    }

    pub(crate) fn unschedulable(&self, started: Instant) {
        self.unschedulable.observe(started);
    }

    /// A binding that failed (the pod is retried).
    pub(crate) fn error(&self, started: Instant) {
        self.error.observe(started);
    }
}
