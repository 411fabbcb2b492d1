//! The kubelet's metrics on the node's registry ([`spindle_metrics::NODE`]), served on the
//! agent's `/metrics` (which its authorization maps to `nodes/metrics`, as the kubelet's):
//! `kubelet_pod_start_duration_seconds` (from the agent first seeing a pod to its first
//! Running status, with the kubelet's buckets), and `kubelet_running_pods` and
//! `kubelet_running_containers{container_state}`, counted from the pods the agent runs
//! when scraped.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use spindle_metrics::{histogram, NODE};
use std::sync::Arc;

use crate::status::RunState;
use crate::Agent;

/// The kubelet's `kubelet_pod_start_duration_seconds` buckets: 0.5 s to an hour.
const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// The kubelet's container states, as its runtime lists them.
const CONTAINER_STATES: [&str; 3] = ["created", "running", "exited"];

type States = Family<[(&'static str, &'static str); 1], Gauge>;

struct Families {
    pod_start: Histogram,
    running_pods: Gauge,
    running_containers: States,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    Families {
    pod_start: NODE.register(
        "kubelet_pod_start_duration_seconds",
        "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
        histogram(POD_START_BUCKETS),
    ),
    running_pods: NODE.register(
        "kubelet_running_pods",
        "Number of pods that have a running pod sandbox",
        Gauge::default(),
    ),
    running_containers: NODE.register(
        "kubelet_running_containers",
        "Number of containers currently running",
        Family::default(),
    ),
}
});

/// Register the agent's families at start (each is exposed once it has a series).
pub fn register() {
    LazyLock::force(&FAMILIES);
}

/// A pod seen at `seen` reported Running for the first time.
pub fn pod_started(seen: Instant) {
    FAMILIES.pod_start.observe(seen.elapsed().as_secs_f64());
}

/// `GET /metrics`: the node's registry, its gauges counted now.
pub async fn serve(State(agent): State<Arc<Agent>>, headers: HeaderMap) -> Response {
    count_running(&agent);
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = NODE.expose(accept);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Set the running gauges from the pods the agent runs: a pod counts while one of its
/// containers runs; a container is `running`, `exited` (its last run ended, whether it
/// waits for a restart or not) or `created` (about to start).
fn count_running(agent: &Agent) {
    let mut pods = 0;
    let mut states = [0i64; CONTAINER_STATES.len()];
    for h in agent.pods.all() {
        let sh = h.shared();
        let mut running = false;
        for c in sh.inits.iter().chain(sh.containers.iter()) {
            let state = match &c.state {
                RunState::Running { .. } => {
                    running = true;
                    1
                }
                RunState::Terminated(_) => 2,
                RunState::Waiting { .. } if c.last.is_some() => 2,
                RunState::Waiting { .. } if c.container_id.is_some() => 0,
                RunState::Waiting { .. } => continue,
            };
            states[state] += 1;
        }
        pods += i64::from(running);
    }
    let f = &*FAMILIES;
    f.running_pods.set(pods);
    for (state, n) in CONTAINER_STATES.iter().zip(states) {
        f.running_containers
            .get_or_create(&[("container_state", state)])
            .set(n);
    }
}
