//! The pod half of a hollow kubelet: one watch over all bound pods, filtered in memory to
//! our nodes; pods are reported Running as if their containers had started, and pods being
//! deleted are finished off as a kubelet does once it has stopped the containers.
//!
//! Writes go through a de-duplicating work queue served by a fixed pool of workers, so the
//! API server sees bounded concurrency however many pods arrive at once, and a pod that is
//! deleted while its start is still queued costs one DELETE rather than two requests.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;
use serde_json::json;
use tokio::sync::Notify;

use crate::finish::{
    finish_of, finished_status, outcome, restarted_status, Finish, FinishDefaults, Outcome,
};
use crate::ipam::Ipam;
use crate::view::PodView;
use crate::Hollow;

/// Concurrent pod writes (status patches and deletes) towards the API server.
pub const WORKERS: usize = 64;
const MAX_ATTEMPTS: u32 = 8;

/// What starting one pod needs, taken from the Pod when it is queued (not the whole Pod,
/// so a burst of thousands of queued starts stays small).
#[derive(Clone, Debug)]
pub struct StartSpec {
    pub uid: String,
    /// (name, image) of the app containers and of the init containers.
    pub containers: Vec<(String, String)>,
    pub init_containers: Vec<(String, String)>,
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Ipv4Addr,
    /// The scheduler's PodScheduled transition time, kept rather than overwritten.
    pub scheduled_at: Option<Time>,
    /// When the pod first started (its `status.startTime`), once it has.
    pub started_at: Option<Timestamp>,
    /// How its containers end, if they do (see `finish`).
    pub finish: Option<Finish>,
    /// Restarts so far (OnFailure pods whose run failed), and when the last one was.
    pub restarts: i32,
    pub restarted_at: Option<Timestamp>,
}

impl StartSpec {
    /// When the current run of the containers began (`now` if it has not yet).
    pub fn last_run(&self, now: Timestamp) -> Timestamp {
        self.restarted_at.or(self.started_at).unwrap_or(now)
    }
}

impl StartSpec {
    pub fn from_pod(
        pod: &Pod,
        uid: String,
        pod_ip: Option<Ipv4Addr>,
        host_ip: Ipv4Addr,
        defaults: &FinishDefaults,
    ) -> Self {
        let pairs = |cs: Option<&Vec<Container>>| -> Vec<(String, String)> {
            cs.into_iter()
                .flatten()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        };
        let spec = pod.spec.as_ref();
        StartSpec {
            uid,
            containers: pairs(spec.map(|s| &s.containers)),
            init_containers: pairs(spec.and_then(|s| s.init_containers.as_ref())),
            pod_ip,
            host_ip,
            scheduled_at: pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.type_ == "PodScheduled" && c.status == "True")
                })
                .and_then(|c| c.last_transition_time.clone()),
            started_at: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0),
            finish: finish_of(
                pod.metadata.annotations.as_ref(),
                spec.and_then(|s| s.restart_policy.as_deref()),
                defaults,
            ),
            restarts: 0,
            restarted_at: None,
        }
    }
}

pub(crate) fn container_id(uid: &str, name: &str) -> String {
    format!("hollow://{uid}/{name}")
}

fn image_id(image: &str) -> String {
    format!("hollow://{image}")
}

/// The status a kubelet would post once all containers of the pod run: init containers
/// terminated with Completed, app containers running and ready.
pub fn running_status(s: &StartSpec, now: Timestamp) -> PodStatus {
    let t = Time(now);
    let cond = |type_: &str, at: &Time| PodCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(at.clone()),
        ..Default::default()
    };
    // A completed init container is reported ready but no longer started, as the kubelet does.
    let status = |name: &str, image: &str, state: ContainerState, started: bool| ContainerStatus {
        name: name.into(),
        image: image.into(),
        image_id: image_id(image),
        container_id: Some(container_id(&s.uid, name)),
        ready: true,
        started: Some(started),
        restart_count: 0,
        state: Some(state),
        ..Default::default()
    };
    let init = s
        .init_containers
        .iter()
        .map(|(name, image)| {
            let done = ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    started_at: Some(t.clone()),
                    finished_at: Some(t.clone()),
                    container_id: Some(container_id(&s.uid, name)),
                    ..Default::default()
                }),
                ..Default::default()
            };
            status(name, image, done, false)
        })
        .collect::<Vec<_>>();
    let running = s
        .containers
        .iter()
        .map(|(name, image)| {
            let run = ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(t.clone()),
                }),
                ..Default::default()
            };
            status(name, image, run, true)
        })
        .collect();
    PodStatus {
        phase: Some("Running".into()),
        host_ip: Some(s.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: s.host_ip.to_string(),
        }]),
        pod_ip: s.pod_ip.map(|ip| ip.to_string()),
        pod_ips: s.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(t.clone()),
        conditions: Some(vec![
            cond("PodReadyToStartContainers", &t),
            cond("Initialized", &t),
            cond("Ready", &t),
            cond("ContainersReady", &t),
            cond("PodScheduled", s.scheduled_at.as_ref().unwrap_or(&t)),
        ]),
        container_statuses: Some(running),
        init_container_statuses: (!init.is_empty()).then_some(init),
        ..Default::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Seen, nothing asked yet.
    New,
    /// A start is queued or in flight.
    Starting,
    Running,
    /// Its containers exited for good (Succeeded or Failed).
    Finished,
    /// A final delete is queued or in flight.
    Deleting,
}

#[derive(Debug)]
struct Entry {
    node: usize,
    ip: Option<u32>,
    stage: Stage,
}

#[derive(Debug)]
enum Action {
    Start(Box<StartSpec>),
    /// The containers exit as `finish` says (then end or restart).
    Exit(Box<StartSpec>),
    /// Put Ready back: the conditions list to write.
    MarkReady(Vec<PodCondition>),
    Delete(String),
}

/// If the control plane marked a running pod of ours not Ready (Kubernetes' node lifecycle
/// controller does so while a node is unreachable), the conditions that say Ready again;
/// a kubelet that is back re-reports the truth, and our containers are always ready.
pub fn ready_again(pod: &Pod, now: Timestamp) -> Option<Vec<PodCondition>> {
    let conds = pod.status.as_ref()?.conditions.as_ref()?;
    let not_ready = |t: &str| conds.iter().any(|c| c.type_ == t && c.status != "True");
    if !not_ready("Ready") && !not_ready("ContainersReady") {
        return None;
    }
    Some(
        conds
            .iter()
            .map(|c| {
                let mut c = c.clone();
                if (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status != "True" {
                    c.status = "True".into();
                    c.reason = None;
                    c.message = None;
                    c.last_transition_time = Some(Time(now));
                }
                c
            })
            .collect(),
    )
}

#[derive(Debug)]
struct Job {
    ns: String,
    name: String,
    action: Action,
    attempts: u32,
}

#[derive(Default)]
struct Tracker {
    pods: HashMap<String, Entry>,
    ipam: Vec<Ipam>,
    /// During a re-list: the pods it has shown, so those that vanished meanwhile (and whose
    /// Delete events we therefore missed) can be forgotten at its end.
    relist: Option<HashSet<String>>,
}

impl Tracker {
    fn forget(&mut self, uid: &str) {
        if let Some(e) = self.pods.remove(uid) {
            if let Some(off) = e.ip {
                self.ipam[e.node].release(off);
            }
        }
    }
}

#[derive(Default)]
struct Queue {
    order: VecDeque<String>,
    /// The latest job per pod uid; a newer job replaces a queued older one.
    jobs: HashMap<String, Job>,
}

pub struct PodSim {
    h: Arc<Hollow>,
    tracker: Mutex<Tracker>,
    queue: Mutex<Queue>,
    ready: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodSim {
    pub fn new(h: Arc<Hollow>) -> Arc<Self> {
        let ipam = h.nodes.iter().map(|n| Ipam::new(&n.id.block)).collect();
        Arc::new(PodSim {
            h,
            tracker: Mutex::new(Tracker {
                ipam,
                ..Default::default()
            }),
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
        })
    }

    /// Pods on our nodes that we know to be running.
    pub fn running(&self) -> usize {
        lock(&self.tracker)
            .pods
            .values()
            .filter(|e| e.stage == Stage::Running)
            .count()
    }

    pub fn queued(&self) -> usize {
        lock(&self.queue).jobs.len()
    }

    /// Watch every bound pod (one watch for the whole process) and start the workers.
    pub async fn run(self: Arc<Self>) {
        for _ in 0..WORKERS {
            tokio::spawn(self.clone().worker());
        }
        let api: Api<PodView> = Api::all(self.h.client.clone());
        let cfg = watcher::Config::default().fields("spec.nodeName!=");
        let mut events = watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    self.on_pod(&pod.0)
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(uid) = pod.0.metadata.uid.as_deref() {
                        lock(&self.tracker).forget(uid);
                        lock(&self.queue).jobs.remove(uid);
                    }
                }
                Ok(watcher::Event::Init) => {
                    lock(&self.tracker).relist = Some(HashSet::new());
                }
                Ok(watcher::Event::InitDone) => {
                    let mut t = lock(&self.tracker);
                    if let Some(seen) = t.relist.take() {
                        let gone: Vec<String> = t
                            .pods
                            .keys()
                            .filter(|u| !seen.contains(*u))
                            .cloned()
                            .collect();
                        for uid in gone {
                            t.forget(&uid);
                        }
                    }
                    tracing::debug!(pods = t.pods.len(), "pod list synced");
                }
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
        }
    }

    fn on_pod(self: &Arc<Self>, pod: &Pod) {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            return;
        };
        let Some(&node) = self.h.by_name.get(node_name) else {
            return;
        };
        let (Some(uid), Some(ns), Some(name)) = (
            pod.metadata.uid.as_deref(),
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            return;
        };
        let job = |action| Job {
            ns: ns.to_string(),
            name: name.to_string(),
            action,
            attempts: 0,
        };
        let mut t = lock(&self.tracker);
        if let Some(seen) = t.relist.as_mut() {
            seen.insert(uid.to_string());
        }
        let t = &mut *t;
        let e = t.pods.entry(uid.to_string()).or_insert(Entry {
            node,
            ip: None,
            stage: Stage::New,
        });
        if pod.metadata.deletion_timestamp.is_some() {
            if e.stage != Stage::Deleting {
                e.stage = Stage::Deleting;
                self.enqueue(uid, job(Action::Delete(uid.to_string())), true);
            }
            return;
        }
        let status = pod.status.as_ref();
        match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") if e.stage == Stage::Running => {
                if let Some(conds) = ready_again(pod, Timestamp::now()) {
                    tracing::debug!(
                        pod = name,
                        "pod marked not Ready by the control plane; reporting Ready"
                    );
                    self.enqueue(uid, job(Action::MarkReady(conds)), false);
                }
            }
            Some("Succeeded" | "Failed") => {
                // Done: its sandbox, and so its address, is given back (the status keeps
                // showing the address, as a kubelet's does).
                if let Some(off) = e.ip.take() {
                    t.ipam[node].release(off);
                }
                e.stage = Stage::Finished;
            }
            Some("Running") => {
                // Running already (e.g. started before a restart of this process): keep
                // its address out of the pool.
                if e.ip.is_none() {
                    let block = &self.h.nodes[node].id.block;
                    if let Some(off) = status
                        .and_then(|s| s.pod_ip.as_deref())
                        .and_then(|ip| block.offset_of(ip))
                    {
                        t.ipam[node].mark(off);
                        e.ip = Some(off);
                    }
                }
                if e.stage == Stage::New {
                    // Started by an earlier run of this process: its timer went with it.
                    let n = &self.h.nodes[node].id;
                    let ip = status.and_then(|s| s.pod_ip.as_deref()?.parse().ok());
                    let spec =
                        StartSpec::from_pod(pod, uid.to_string(), ip, n.ip, &self.h.opts.finish);
                    self.schedule_exit(uid, ns, name, Box::new(spec));
                }
                e.stage = Stage::Running;
            }
            _ if e.stage == Stage::New => {
                if e.ip.is_none() {
                    e.ip = t.ipam[node].alloc();
                    if e.ip.is_none() {
                        tracing::warn!(
                            node = node_name,
                            pod = name,
                            "pod address block full; starting the pod without a pod IP"
                        );
                    }
                }
                let n = &self.h.nodes[node].id;
                let pod_ip = e.ip.map(|off| n.block.addr(off));
                let spec =
                    StartSpec::from_pod(pod, uid.to_string(), pod_ip, n.ip, &self.h.opts.finish);
                e.stage = Stage::Starting;
                self.enqueue(uid, job(Action::Start(Box::new(spec))), true);
            }
            _ => {}
        }
    }

    /// Queue the containers' exit for when their run is over (now, if it already is).
    fn schedule_exit(self: &Arc<Self>, uid: &str, ns: &str, name: &str, spec: Box<StartSpec>) {
        let Some(f) = &spec.finish else { return };
        // From the (re)start the run counts from: the last one this process made, or
        // the pod's start time when it was started before.
        let now = Timestamp::now();
        let ran = now.duration_since(spec.last_run(now));
        let left = f
            .after
            .saturating_sub(Duration::try_from(ran).unwrap_or_default());
        let (me, uid) = (self.clone(), uid.to_string());
        let job = Job {
            ns: ns.to_string(),
            name: name.to_string(),
            action: Action::Exit(spec),
            attempts: 0,
        };
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            let running = lock(&me.tracker)
                .pods
                .get(&uid)
                .is_some_and(|e| e.stage == Stage::Running);
            if running {
                me.enqueue(&uid, job, false);
            }
        });
    }

    /// Queue a job for a pod; `replace` lets it supersede a queued job (a delete beats a
    /// start), otherwise an already-queued job wins (a retry must not undo a newer one).
    fn enqueue(&self, uid: &str, job: Job, replace: bool) {
        let mut q = lock(&self.queue);
        if q.jobs.contains_key(uid) {
            if replace {
                q.jobs.insert(uid.to_string(), job);
            }
            return;
        }
        q.jobs.insert(uid.to_string(), job);
        q.order.push_back(uid.to_string());
        drop(q);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<(String, Job)> {
        let mut q = lock(&self.queue);
        while let Some(uid) = q.order.pop_front() {
            // Jobs of pods deleted while queued are gone from `jobs`.
            if let Some(job) = q.jobs.remove(&uid) {
                return Some((uid, job));
            }
        }
        None
    }

    async fn worker(self: Arc<Self>) {
        loop {
            let Some((uid, job)) = self.pop() else {
                self.ready.notified().await;
                continue;
            };
            self.execute(uid, job).await;
        }
    }

    async fn execute(self: &Arc<Self>, uid: String, job: Job) {
        // Replies are read as the light view too (they are whole Pods).
        // Each pod is written as its node: NodeRestriction lets a node change only the
        // pods bound to it.
        let node = lock(&self.tracker).pods.get(&uid).map(|e| e.node);
        let client = node.map_or_else(|| self.h.client.clone(), |i| self.h.node_client(i));
        let api: Api<PodView> = Api::namespaced(client, &job.ns);
        let stats = &self.h.stats;
        let res = match &job.action {
            Action::Start(spec) => {
                let now = Timestamp::now();
                // A run of no time ends at once: one write, as when a kubelet's first
                // status sync already sees the containers exited.
                let status = match &spec.finish {
                    Some(f) if f.after.is_zero() && outcome(f) == Outcome::Terminal => {
                        finished_status(spec, f.exit_code, now, now)
                    }
                    _ => running_status(spec, now),
                };
                let patch = json!({ "status": status });
                api.patch_status(&job.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            Action::Exit(spec) => {
                let now = Timestamp::now();
                let (code, from) = (
                    spec.finish.as_ref().map_or(0, |f| f.exit_code),
                    spec.last_run(now),
                );
                let status = match spec.finish.as_ref().map(outcome) {
                    Some(Outcome::Restart) => {
                        restarted_status(spec, code, spec.restarts + 1, from, now)
                    }
                    _ => finished_status(spec, code, from, now),
                };
                let patch = json!({ "status": status });
                api.patch_status(&job.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            Action::MarkReady(conds) => {
                let patch = json!({ "status": { "conditions": conds } });
                api.patch_status(&job.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            Action::Delete(uid) => {
                // As the kubelet once the containers are stopped: grace 0, and only this
                // incarnation of the pod (a new pod of the same name must not go).
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                api.delete(&job.name, &dp).await.map(|_| ())
            }
        };
        match (res, &job.action) {
            (Ok(()), Action::Start(spec)) => {
                stats.pods_started.fetch_add(1, Ordering::Relaxed);
                if let Some(e) = lock(&self.tracker).pods.get_mut(&uid) {
                    if e.stage == Stage::Starting {
                        e.stage = Stage::Running;
                    }
                }
                tracing::debug!(pod = %format!("{}/{}", job.ns, job.name), "running");
                if spec
                    .finish
                    .as_ref()
                    .is_some_and(|f| !f.after.is_zero() || outcome(f) == Outcome::Restart)
                {
                    let mut next = spec.clone();
                    next.started_at = Some(Timestamp::now());
                    self.schedule_exit(&uid, &job.ns, &job.name, next);
                }
            }
            (Ok(()), Action::Exit(spec)) => {
                tracing::debug!(pod = %format!("{}/{}", job.ns, job.name), "containers exited");
                if spec.finish.as_ref().map(outcome) == Some(Outcome::Restart) {
                    let mut next = spec.clone();
                    next.restarts += 1;
                    next.restarted_at = Some(Timestamp::now());
                    self.schedule_exit(&uid, &job.ns, &job.name, next);
                }
            }
            (Ok(()), Action::MarkReady(_)) => {
                tracing::debug!(pod = %format!("{}/{}", job.ns, job.name), "ready again");
            }
            (Ok(()), Action::Delete(_)) => {
                stats.pods_deleted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pod = %format!("{}/{}", job.ns, job.name), "deleted");
            }
            // Gone already, or replaced by a new pod of the same name: nothing left to do;
            // the watch's Delete event cleans up.
            (Err(kube::Error::Api(s)), _) if s.code == 404 || s.code == 409 => {
                tracing::debug!(pod = %format!("{}/{}", job.ns, job.name), code = s.code, "pod changed under us");
            }
            (Err(e), _) => {
                stats.pod_errors.fetch_add(1, Ordering::Relaxed);
                let mut job = job;
                job.attempts += 1;
                if job.attempts >= MAX_ATTEMPTS {
                    tracing::warn!(pod = %format!("{}/{}", job.ns, job.name), error = %e, "giving up on pod after {MAX_ATTEMPTS} attempts");
                    // Let the next event about this pod try afresh.
                    if let Some(entry) = lock(&self.tracker).pods.get_mut(&uid) {
                        entry.stage = Stage::New;
                    }
                    return;
                }
                tracing::debug!(pod = %format!("{}/{}", job.ns, job.name), error = %e, attempt = job.attempts, "pod write failed; retrying");
                // Back off outside the worker pool so other pods keep flowing.
                let delay = Duration::from_millis(200) * 2u32.pow(job.attempts.min(7));
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if lock(&me.tracker).pods.contains_key(&uid) {
                        me.enqueue(&uid, job, false);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
            "spec": {
                "nodeName": "hollow-0",
                "initContainers": [{"name": "setup", "image": "busybox"}],
                "containers": [{"name": "app", "image": "nginx:1"}, {"name": "side", "image": "envoy"}]
            },
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn running_status_of_a_pod() {
        let spec = StartSpec::from_pod(
            &pod(),
            "u-1".into(),
            Some(Ipv4Addr::new(10, 128, 0, 2)),
            Ipv4Addr::new(10, 255, 0, 1),
            &FinishDefaults::default(),
        );
        let now: Timestamp = "2025-01-02T03:04:05Z".parse().unwrap();
        let v = serde_json::to_value(running_status(&spec, now)).unwrap();
        assert_eq!(v["phase"], "Running");
        assert_eq!(v["podIP"], "10.128.0.2");
        assert_eq!(v["podIPs"], json!([{"ip": "10.128.0.2"}]));
        assert_eq!(v["hostIP"], "10.255.0.1");
        assert_eq!(v["startTime"], "2025-01-02T03:04:05Z");
        let conds = v["conditions"].as_array().unwrap();
        for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            let c = conds.iter().find(|c| c["type"] == t).unwrap();
            assert_eq!(c["status"], "True", "{t}");
        }
        let sched = conds.iter().find(|c| c["type"] == "PodScheduled").unwrap();
        assert_eq!(sched["lastTransitionTime"], "2025-01-01T00:00:00Z");
        let cs = v["containerStatuses"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["name"], "app");
        assert_eq!(cs[0]["image"], "nginx:1");
        assert_eq!(cs[0]["imageID"], "hollow://nginx:1");
        assert_eq!(cs[0]["containerID"], "hollow://u-1/app");
        assert_eq!(cs[0]["ready"], true);
        assert_eq!(cs[0]["started"], true);
        assert_eq!(cs[0]["restartCount"], 0);
        assert_eq!(
            cs[0]["state"]["running"]["startedAt"],
            "2025-01-02T03:04:05Z"
        );
        let init = v["initContainerStatuses"].as_array().unwrap();
        assert_eq!(init[0]["name"], "setup");
        assert_eq!(init[0]["state"]["terminated"]["reason"], "Completed");
        assert_eq!(init[0]["state"]["terminated"]["exitCode"], 0);
        assert_eq!(init[0]["ready"], true);
        assert_eq!(init[0]["started"], false);
    }

    #[test]
    fn ready_again_only_when_marked_not_ready() {
        let now: Timestamp = "2025-01-02T03:04:05Z".parse().unwrap();
        let mut p = pod();
        p.status = Some(running_status(
            &StartSpec::from_pod(
                &p,
                "u".into(),
                None,
                Ipv4Addr::new(10, 255, 0, 1),
                &FinishDefaults::default(),
            ),
            now,
        ));
        assert!(ready_again(&p, now).is_none());
        for c in p.status.as_mut().unwrap().conditions.as_mut().unwrap() {
            if c.type_ == "Ready" {
                c.status = "False".into();
                c.reason = Some("NodeNotReady".into());
            }
        }
        let later: Timestamp = "2025-01-02T04:00:00Z".parse().unwrap();
        let conds = ready_again(&p, later).unwrap();
        assert_eq!(conds.len(), 5);
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason, None);
        assert_eq!(ready.last_transition_time, Some(Time(later)));
        // Untouched conditions keep their times (PodScheduled: the scheduler's).
        let sched = conds.iter().find(|c| c.type_ == "PodScheduled").unwrap();
        let scheduled: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(sched.last_transition_time, Some(Time(scheduled)));
    }

    #[test]
    fn no_init_containers_no_init_statuses() {
        let mut p = pod();
        if let Some(s) = p.spec.as_mut() {
            s.init_containers = None;
        }
        let spec = StartSpec::from_pod(
            &p,
            "u".into(),
            None,
            Ipv4Addr::new(10, 255, 0, 1),
            &FinishDefaults::default(),
        );
        let v = serde_json::to_value(running_status(&spec, Timestamp::now())).unwrap();
        assert!(v.get("initContainerStatuses").is_none());
        assert!(v.get("podIP").is_none());
    }
}
