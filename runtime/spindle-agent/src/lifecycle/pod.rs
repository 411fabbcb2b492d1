//! What the agent keeps of one pod while a worker runs it: its latest object, its
//! containers' statuses, their logs and consoles (for `kubectl logs`, `exec`, `attach`),
//! its network and volumes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use spindle_logs::LogWriter;
use tokio::sync::{watch, Notify};

use crate::paths::PodPaths;
use crate::podnet::PodNet;
use crate::reason::{ExitReason, Waiting};
use crate::runtime::{Console, Meter};
use crate::status::{CStatus, RunState, Term};
use crate::volumes::PodVolumes;
use crate::Agent;

/// What the agent knows of a pod's containers, shared with the log endpoint.
pub struct Shared {
    pub inits: Vec<CStatus>,
    pub containers: Vec<CStatus>,
    pub initialized: bool,
    pub init_failed: bool,
    /// Why the agent evicted the pod, once it has (as the kubelet's eviction manager).
    pub evicted: Option<String>,
    pub start_time: Timestamp,
    /// The writer of each container's current run, for `logs -f`.
    pub logs: HashMap<String, LogWriter>,
    /// What execs and attaches reach, for each running container.
    pub consoles: HashMap<String, Arc<dyn Console>>,
    /// What reads each running container's usage, for the resource metrics.
    pub meters: HashMap<String, Arc<dyn Meter>>,
    /// status.podIP, once the pod has a network.
    pub pod_ip: Option<String>,
}

pub struct PodHandle {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub paths: PodPaths,
    pub spec: watch::Sender<Arc<Pod>>,
    /// The pod object is gone from the API (deleted with grace 0, or by us).
    pub gone: AtomicBool,
    /// The pod's network, made when its first networked container starts.
    pub net: tokio::sync::Mutex<Option<Arc<PodNet>>>,
    /// The pod's volume directories, once prepared (for execs).
    pub vols: Mutex<Option<Arc<PodVolumes>>>,
    shared: Mutex<Shared>,
    /// Signalled when something in [`Shared`] changed: the status writer wakes.
    pub(super) changed: Notify,
    /// Signalled when the agent evicts the pod.
    pub(super) evict: Notify,
    /// When the agent first saw the pod, and whether its start (first Running status)
    /// was measured from then (`kubelet_pod_start_duration_seconds`).
    seen: Instant,
    start_measured: AtomicBool,
}

impl PodHandle {
    pub fn new(agent: &Agent, pod: Arc<Pod>) -> Arc<Self> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let prev = pod.status.as_ref();
        let restore = |cs: &[Container], prev: Option<&Vec<ContainerStatus>>| {
            cs.iter()
                .map(|c| {
                    let mut s = CStatus::new(&c.name, c.image.as_deref().unwrap_or_default());
                    // A restarted agent continues the count: the runs before it are gone.
                    if let Some(p) = prev.and_then(|p| p.iter().find(|p| p.name == c.name)) {
                        let ran = p
                            .state
                            .as_ref()
                            .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
                        s.restart_count = p.restart_count + i32::from(ran);
                    }
                    s
                })
                .collect::<Vec<_>>()
        };
        let initialized = spec.init_containers.as_ref().is_none_or(|v| v.is_empty())
            || prev.and_then(|p| p.conditions.as_ref()).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Initialized" && c.status == "True")
            });
        let mut inits = restore(
            spec.init_containers.as_deref().unwrap_or_default(),
            prev.and_then(|p| p.init_container_statuses.as_ref()),
        );
        if initialized {
            // Their work is on disk (volumes survive an agent restart); they are not re-run.
            for (c, p) in inits.iter_mut().zip(
                prev.and_then(|p| p.init_container_statuses.clone())
                    .unwrap_or_default(),
            ) {
                if let Some(t) = p.state.and_then(|s| s.terminated) {
                    c.state = RunState::Terminated(Term {
                        code: t.exit_code,
                        // Only completed init containers are restored.
                        reason: ExitReason::parse_or(t.reason.as_deref(), 0),
                        message: t.message,
                        started: t.started_at.map(|t| t.0),
                        finished: t.finished_at.map(|t| t.0).unwrap_or_else(Timestamp::now),
                        container_id: t.container_id,
                        run: c.restart_count.max(1) as u32 - 1,
                    });
                }
            }
        }
        let containers = restore(
            &spec.containers,
            prev.and_then(|p| p.container_statuses.as_ref()),
        );
        let start_time = prev
            .and_then(|p| p.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        Arc::new(PodHandle {
            paths: agent.paths.pod(&uid),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid,
            spec: watch::channel(pod).0,
            gone: AtomicBool::new(false),
            net: tokio::sync::Mutex::new(None),
            vols: Mutex::new(None),
            shared: Mutex::new(Shared {
                inits,
                containers,
                initialized,
                init_failed: false,
                evicted: None,
                start_time,
                logs: HashMap::new(),
                consoles: HashMap::new(),
                meters: HashMap::new(),
                pod_ip: None,
            }),
            changed: Notify::new(),
            evict: Notify::new(),
            seen: Instant::now(),
            start_measured: AtomicBool::new(false),
        })
    }

    /// The pod's status says Running: the first time, unless it already ran before the
    /// agent saw it (an agent restart), its start is measured, as the kubelet does.
    pub(super) fn running(&self, previous_phase: Option<&str>) {
        if previous_phase != Some("Running") && !self.start_measured.swap(true, Ordering::AcqRel) {
            crate::metrics::pod_started(self.seen);
        }
    }

    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn log_dir(&self, container: &str) -> std::path::PathBuf {
        self.paths.logs(container)
    }

    pub fn pod(&self) -> Arc<Pod> {
        self.spec.borrow().clone()
    }

    pub(super) fn update(&self, init: bool, name: &str, f: impl FnOnce(&mut CStatus)) {
        {
            let mut sh = self.shared();
            let list = if init {
                &mut sh.inits
            } else {
                &mut sh.containers
            };
            if let Some(c) = list.iter_mut().find(|c| c.name == name) {
                f(c);
            }
        }
        self.changed.notify_one();
    }

    /// Every container still waiting now waits for `reason` (init containers only while
    /// they have not all run, and never for PodInitializing, which is theirs to leave).
    pub(super) fn set_all_waiting(&self, reason: Waiting, message: Option<String>) {
        {
            let mut sh = self.shared();
            let inits_done = sh.initialized;
            for c in sh.containers.iter_mut() {
                if matches!(c.state, RunState::Waiting { .. }) {
                    c.waiting(reason, message.clone());
                }
            }
            if !inits_done {
                for c in sh.inits.iter_mut() {
                    if matches!(c.state, RunState::Waiting { .. })
                        && reason != Waiting::PodInitializing
                    {
                        c.waiting(reason, message.clone());
                    }
                }
            }
        }
        self.changed.notify_one();
    }
}
