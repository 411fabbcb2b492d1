//! `spindle-scheduler` owns pod placement: it watches pending pods and nodes, filters and
//! scores nodes as kube-scheduler does, and binds pods through `pods/binding`.
//!
//! Shape, for throughput:
//! - two watches (all nodes, all pods) feed one channel; watcher tasks convert API
//!   objects to compact views ([`model`]) so the decision loop never parses anything;
//! - one loop owns all state (no locks): it applies events, then takes pods off the
//!   queue and decides one at a time over the in-memory [`cache::Cache`], counting each
//!   decision on its node at once ("assumed") so later decisions see it;
//! - bindings, status patches and events are separate tasks, many in flight; their
//!   results come back on the same channel (a failed bind is un-assumed and retried).

mod algorithm;
mod cache;
mod fit;
mod metrics;
mod model;
mod queue;
mod volumes;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use spindle_meta::events::{EventType, Recorder};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

pub use crate::fit::{NodeFit, PodFit};

use crate::cache::{Cache, Preemption};
use crate::metrics::Attempts;
use crate::model::{NodeInfo, PodRecord, PodView, SchedPod};
use crate::queue::Queue;

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Name pods ask for in spec.schedulerName.
    pub scheduler_name: String,
    /// Most binding requests in flight at once. Decisions stay sequential; binds are
    /// API round trips, so overlapping many of them is where throughput comes from.
    pub parallel_binds: usize,
    /// Most status patches and events being written at once; more wait their turn.
    pub parallel_reports: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            scheduler_name: "default-scheduler".into(),
            parallel_binds: 128,
            parallel_reports: 64,
        }
    }
}

/// The component name events are recorded under (what `kubectl describe` shows as From).
const COMPONENT: &str = "default-scheduler";

/// Decisions made before going back to the channel, so watch events and bind results
/// are not starved by a long queue.
const DECISION_BATCH: usize = 256;
/// Objects per page of the initial pod list.
const LIST_PAGE: u32 = 5000;
/// Event writers: events are recorded after their binds and at a lower priority, as
/// kube-scheduler's asynchronous event broadcaster does, so a burst of bindings is not
/// slowed by as many Event creations competing for the API server.
const EVENT_WRITERS: usize = 4;
/// Upper bound on the loop's sleep, so the periodic unschedulable flush runs.
const IDLE_TICK: Duration = Duration::from_secs(5);

enum Msg {
    NodeApply(NodeInfo),
    NodeDelete(String),
    NodeInit,
    NodeInitApply(NodeInfo),
    NodeInitDone,
    PodApply(PodRecord),
    PodDelete(String),
    PodInit,
    PodInitApply(PodRecord),
    PodInitDone,
    BindDone {
        key: String,
        ok: bool,
    },
    /// A claim, volume or class changed: pods waiting on volumes may fit now.
    VolumesChanged,
}

/// Run the scheduler until the process ends.
pub async fn run(client: kube::Client, opts: SchedulerOptions) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(watch_nodes(client.clone(), tx.clone()));
    tokio::spawn(watch_pods(
        client.clone(),
        opts.scheduler_name.clone(),
        tx.clone(),
    ));
    tracing::info!(scheduler = %opts.scheduler_name, "scheduler started");
    Scheduler::new(client, opts, tx).run(rx).await;
    Ok(())
}

async fn watch_nodes(client: Client, tx: mpsc::UnboundedSender<Msg>) {
    let api: Api<Node> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = events.next().await {
        let msg = match ev {
            Ok(watcher::Event::Apply(n)) => Msg::NodeApply(NodeInfo::from_node(&n)),
            Ok(watcher::Event::Delete(n)) => {
                Msg::NodeDelete(n.metadata.name.clone().unwrap_or_default())
            }
            Ok(watcher::Event::Init) => Msg::NodeInit,
            Ok(watcher::Event::InitApply(n)) => Msg::NodeInitApply(NodeInfo::from_node(&n)),
            Ok(watcher::Event::InitDone) => Msg::NodeInitDone,
            Err(e) => {
                // The watcher relists by itself after back-off.
                tracing::warn!(error = %e, "node watch failed");
                continue;
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

async fn watch_pods(client: Client, scheduler_name: String, tx: mpsc::UnboundedSender<Msg>) {
    // One watch of all pods rather than separate bound/unbound watches: a pod moving from
    // pending to bound arrives as one ordered update, with no window in which two streams
    // disagree about it.
    let api: Api<PodView> = Api::all(client);
    // Large pages: the initial list of every pod is the scheduler's start-up cost, and
    // each page is a round trip (kube's default is 500 objects).
    let mut events = watcher(api, watcher::Config::default().page_size(LIST_PAGE))
        .default_backoff()
        .boxed();
    let record = |p: PodView| PodRecord::from_pod(&p.into_pod(), &scheduler_name);
    while let Some(ev) = events.next().await {
        let msg = match ev {
            Ok(watcher::Event::Apply(p)) => Msg::PodApply(record(p)),
            Ok(watcher::Event::Delete(p)) => Msg::PodDelete(record(p).key),
            Ok(watcher::Event::Init) => Msg::PodInit,
            Ok(watcher::Event::InitApply(p)) => Msg::PodInitApply(record(p)),
            Ok(watcher::Event::InitDone) => Msg::PodInitDone,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed");
                continue;
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

struct Scheduler {
    client: Client,
    opts: SchedulerOptions,
    tx: mpsc::UnboundedSender<Msg>,
    cache: Cache,
    queue: Queue,
    rng: rand::rngs::SmallRng,
    in_flight: usize,
    reports: Arc<Semaphore>,
    events: EventQueue,
    volumes: volumes::Volumes,
    attempts: Attempts,
    /// Pod key -> the node its preemption made room on (status.nominatedNodeName).
    nominated: std::collections::HashMap<String, String>,
    nodes_synced: bool,
    pods_synced: bool,
    node_buf: Vec<NodeInfo>,
    pod_buf: Vec<PodRecord>,
    /// Counters for the progress log.
    scheduled: u64,
    bind_failures: u64,
    unschedulable: u64,
    last_log: (Instant, u64),
}

impl Scheduler {
    fn new(client: Client, opts: SchedulerOptions, tx: mpsc::UnboundedSender<Msg>) -> Self {
        use rand::SeedableRng;
        let reports = Arc::new(Semaphore::new(opts.parallel_reports.max(1)));
        let events = EventQueue::start(client.clone());
        let volumes = volumes::Volumes::start(&client, tx.clone(), || Msg::VolumesChanged);
        Scheduler {
            client,
            attempts: Attempts::new(&opts.scheduler_name),
            opts,
            tx,
            cache: Cache::default(),
            queue: Queue::default(),
            rng: rand::rngs::SmallRng::from_os_rng(),
            in_flight: 0,
            reports,
            events,
            volumes,
            nominated: Default::default(),
            nodes_synced: false,
            pods_synced: false,
            node_buf: Vec::new(),
            pod_buf: Vec::new(),
            scheduled: 0,
            bind_failures: 0,
            unschedulable: 0,
            last_log: (Instant::now(), 0),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        loop {
            let now = Instant::now();
            self.queue.flush(now);
            if self.nodes_synced && self.pods_synced {
                self.schedule_batch(now);
            }
            self.log_rate(now);
            let wake = self
                .queue
                .next_wakeup()
                .map_or(now + IDLE_TICK, |t| t.min(now + IDLE_TICK));
            // Sleep only when there is nothing to decide or no bind slot free.
            let busy = self.queue.has_active()
                && self.in_flight < self.opts.parallel_binds.max(1)
                && self.nodes_synced
                && self.pods_synced;
            let first = if busy {
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            } else {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => Some(m),
                        None => return,
                    },
                    _ = tokio::time::sleep_until(wake) => None,
                }
            };
            if let Some(m) = first {
                self.handle(m);
                // Apply everything already waiting before deciding again: decisions
                // should see the freshest cluster, and batching amortises the wakeups.
                for _ in 0..4096 {
                    match rx.try_recv() {
                        Ok(m) => self.handle(m),
                        Err(_) => break,
                    }
                }
            }
            if busy {
                // Let watcher and bind tasks run on a busy single-threaded runtime.
                tokio::task::yield_now().await;
            }
        }
    }

    fn log_rate(&mut self, now: Instant) {
        let (at, count) = self.last_log;
        let dt = now.duration_since(at);
        if dt >= Duration::from_secs(10) {
            if self.scheduled != count {
                let rate = (self.scheduled - count) as f64 / dt.as_secs_f64();
                tracing::info!(
                    scheduled = self.scheduled,
                    pods_per_sec = format!("{rate:.0}"),
                    queued = self.queue.len(),
                    in_flight = self.in_flight,
                    bind_failures = self.bind_failures,
                    unschedulable_attempts = self.unschedulable,
                    nodes = self.cache.node_count(),
                    "scheduler progress"
                );
            }
            self.last_log = (now, self.scheduled);
        }
    }

    fn handle(&mut self, m: Msg) {
        let now = Instant::now();
        match m {
            Msg::NodeApply(n) => {
                if self.cache.upsert_node(n) {
                    self.queue.cluster_changed(now);
                }
            }
            Msg::NodeDelete(name) => self.cache.remove_node(&name),
            Msg::NodeInit => self.node_buf.clear(),
            Msg::NodeInitApply(n) => self.node_buf.push(n),
            Msg::NodeInitDone => {
                let nodes = std::mem::take(&mut self.node_buf);
                self.cache.set_nodes(nodes);
                self.nodes_synced = true;
                self.queue.cluster_changed(now);
            }
            Msg::PodApply(rec) => self.apply_pod(rec, now),
            Msg::PodDelete(key) => {
                self.queue.remove(&key);
                self.nominated.remove(&key);
                if self.cache.unplace(&key) {
                    self.queue.cluster_changed(now);
                }
            }
            Msg::PodInit => self.pod_buf.clear(),
            Msg::PodInitApply(rec) => self.pod_buf.push(rec),
            Msg::PodInitDone => self.resync_pods(now),
            Msg::VolumesChanged => self.queue.cluster_changed(now),
            Msg::BindDone { key, ok } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if ok {
                    self.scheduled += 1;
                    self.queue.bound(&key);
                } else {
                    self.bind_failures += 1;
                    // Free what we assumed; if the pod got bound or deleted meanwhile the
                    // watch removes it from the queue before the retry comes up.
                    self.cache.forget(&key);
                    self.queue.retry_later(&key, now);
                }
            }
        }
    }

    fn apply_pod(&mut self, rec: PodRecord, now: Instant) {
        let key = rec.key.as_str();
        if let Some(node) = &rec.node_name {
            self.queue.remove(key);
            self.nominated.remove(key);
            if rec.terminal {
                // Finished pods hold nothing.
                if self.cache.unplace(key) {
                    self.queue.cluster_changed(now);
                }
            } else if self.cache.observe_bound(key, node, &rec.pod) {
                self.queue.pod_placed(now);
            }
        } else if rec.wants_scheduling {
            self.queue.upsert(key, rec.pod);
        } else {
            // Deleting, gated, finished or someone else's: not ours to place. An in-flight
            // bind for it fails and is forgotten then.
            self.queue.remove(key);
        }
    }

    /// After a (re)list of pods: rebuild bound accounting from the list, keep only our
    /// in-flight assumptions for pods that still exist, and drop queued pods that vanished.
    fn resync_pods(&mut self, now: Instant) {
        let pods = std::mem::take(&mut self.pod_buf);
        let listed: std::collections::HashMap<&str, &PodRecord> =
            pods.iter().map(|r| (r.key.as_str(), r)).collect();
        self.cache.retain_placements(|key, assumed| {
            assumed && listed.get(key).is_some_and(|r| r.node_name.is_none())
        });
        for key in self.queue.keys() {
            if !listed.contains_key(key.as_str()) {
                self.queue.remove(&key);
            }
        }
        for rec in pods.iter().cloned() {
            self.apply_pod(rec, now);
        }
        self.pods_synced = true;
        self.queue.cluster_changed(now);
    }

    fn schedule_batch(&mut self, now: Instant) {
        let max = self.opts.parallel_binds.max(1);
        for _ in 0..DECISION_BATCH {
            if self.in_flight >= max {
                return;
            }
            let Some((key, pod)) = self.queue.pop(now) else {
                return;
            };
            let started = Instant::now();
            let (pod, delayed) = match self.volumes.check(&pod) {
                volumes::Check::Fits { required, delayed } => {
                    (volumes::with_volume_affinity(&pod, required), delayed)
                }
                volumes::Check::Unschedulable(reason) => {
                    let nodes = self.cache.node_count();
                    self.not_placed(
                        key,
                        pod,
                        format!("0/{nodes} nodes are available: {reason}."),
                        now,
                        started,
                    );
                    continue;
                }
            };
            match self.cache.decide(&pod, &mut self.rng) {
                Ok(slot) => {
                    let Some(node) = self.cache.node_name(slot).map(str::to_string) else {
                        // Cannot happen: decide only returns live slots. Retry rather
                        // than lose the pod.
                        self.queue.retry_later(&key, now);
                        continue;
                    };
                    self.cache.assume(&key, slot, &pod);
                    self.queue.pod_placed(now);
                    self.in_flight += 1;
                    let volumes = (!delayed.is_empty()).then(|| (self.volumes.clone(), delayed));
                    tokio::spawn(bind(
                        Binder {
                            client: self.client.clone(),
                            tx: self.tx.clone(),
                            events: self.events.clone(),
                            attempts: self.attempts.clone(),
                            started,
                        },
                        key,
                        pod,
                        node,
                        volumes,
                    ));
                }
                Err(diagnosis) => {
                    let mut message = diagnosis.message();
                    if diagnosis.nodes > 0 {
                        if let Err(why) = self.try_preempt(&key, &pod) {
                            message = format!("{message} preemption: {why}");
                        }
                    }
                    self.not_placed(key, pod, message, now, started);
                }
            }
        }
    }

    /// kube-scheduler's PostFilter: make room by evicting lower-priority pods. On success
    /// the pod waits (unschedulable) until its victims are gone and the cluster change
    /// wakes it; the error is the "preemption:" part of the FailedScheduling message.
    fn try_preempt(&mut self, key: &str, pod: &Arc<SchedPod>) -> Result<(), String> {
        if pod.preempt_never {
            return Err("not eligible due to preemptionPolicy=Never.".into());
        }
        // Victims of an earlier round still terminating: wait for them, not for more.
        if let Some(node) = self.nominated.get(key) {
            if self.cache.lower_terminating_on(node, pod.priority) {
                return Err("not eligible due to a terminating pod on the nominated node.".into());
            }
        }
        let p = self.cache.preempt(pod)?;
        tracing::info!(pod = %pod.name, node = %p.node, victims = p.victims.len(), "preempting");
        self.nominated.insert(key.to_string(), p.node.clone());
        tokio::spawn(preempt(
            self.client.clone(),
            self.events.clone(),
            pod.clone(),
            p,
        ));
        Ok(())
    }

    /// The pod fits nowhere: count it (the attempt began at `started`), and report it
    /// once per distinct reason.
    fn not_placed(
        &mut self,
        key: String,
        pod: Arc<SchedPod>,
        message: String,
        now: Instant,
        started: Instant,
    ) {
        self.unschedulable += 1;
        self.attempts.unschedulable(started);
        tracing::debug!(pod = %pod.name, %message, "unschedulable");
        if self.queue.unschedulable(&key, &message, now) {
            tokio::spawn(report_unschedulable(
                self.client.clone(),
                self.reports.clone(),
                self.events.clone(),
                pod,
                message,
            ));
        }
    }
}

/// What a binding task reports to: the loop, the events, the attempt metrics (timed
/// from `started`, when the pod left the queue).
struct Binder {
    client: Client,
    tx: mpsc::UnboundedSender<Msg>,
    events: EventQueue,
    attempts: Attempts,
    started: Instant,
}

/// POST pods/{name}/binding, report the outcome to the loop, then record the event.
/// Delayed claims are first bound on the node (VolumeBinding's PreBind).
async fn bind(
    b: Binder,
    key: String,
    pod: Arc<SchedPod>,
    node: String,
    delayed: Option<(volumes::Volumes, Vec<String>)>,
) {
    let Binder {
        client,
        tx,
        events,
        attempts,
        started,
    } = b;
    if let Some((volumes, claims)) = delayed {
        if !volumes.bind_delayed(&client, &pod, &claims, &node).await {
            attempts.error(started);
            let _ = tx.send(Msg::BindDone { key, ok: false });
            return;
        }
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            // Binds this pod, not a namesake created after it was deleted.
            uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..ObjectReference::default()
        },
    };
    let res = api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &pod.name,
            &PostParams::default(),
            &binding,
        )
        .await;
    let ok = match &res {
        Ok(_) => true,
        // Conflict or NotFound: the pod was bound elsewhere, is being deleted, or is gone;
        // the watch will tell. Anything else is worth a look.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
            tracing::debug!(pod = %pod.name, %node, error = %s.message, "binding refused");
            false
        }
        Err(e) => {
            tracing::warn!(pod = %pod.name, %node, error = %e, "binding failed");
            false
        }
    };
    if ok {
        attempts.scheduled(started);
    } else {
        attempts.error(started);
    }
    // The loop may have ended with the process; nothing left to tell then.
    let _ = tx.send(Msg::BindDone { key, ok });
    if ok {
        let msg = format!(
            "Successfully assigned {}/{} to {}",
            pod.namespace, pod.name, node
        );
        events.record(pod_ref(&pod), EventType::Normal, "Scheduled", msg);
    }
}

/// One event to record.
struct EventReq {
    regarding: ObjectReference,
    type_: EventType,
    reason: &'static str,
    message: String,
}

/// Events waiting to be written by a few writer tasks; see [`EVENT_WRITERS`]. Unbounded:
/// an event is a few hundred bytes, and none is dropped.
#[derive(Clone)]
struct EventQueue(mpsc::UnboundedSender<EventReq>);

impl EventQueue {
    fn start(client: Client) -> EventQueue {
        let (tx, rx) = mpsc::unbounded_channel::<EventReq>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let recorder = Recorder::new(client, COMPONENT);
        for _ in 0..EVENT_WRITERS {
            let (recorder, rx) = (recorder.clone(), rx.clone());
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(ev) = next else { return };
                    recorder
                        .publish(&ev.regarding, ev.type_, ev.reason, &ev.message)
                        .await;
                }
            });
        }
        EventQueue(tx)
    }

    fn record(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &'static str,
        message: String,
    ) {
        let _ = self.0.send(EventReq {
            regarding,
            type_,
            reason,
            message,
        });
    }
}

/// PodScheduled=False on the pod's status and a FailedScheduling event.
async fn report_unschedulable(
    client: Client,
    reports: Arc<Semaphore>,
    events: EventQueue,
    pod: Arc<SchedPod>,
    message: String,
) {
    let _permit = reports.acquire().await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    // Strategic merge keys conditions by type, so other conditions are left alone.
    let patch = serde_json::json!({
        "status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
        }]}
    });
    if let Err(e) = api
        .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        tracing::debug!(pod = %pod.name, error = %e, "could not set PodScheduled=False");
    }
    events.record(
        pod_ref(&pod),
        EventType::Warning,
        "FailedScheduling",
        message,
    );
}

/// Carry out a preemption: the pod's status.nominatedNodeName, then each victim deleted
/// gracefully with a Preempted event, as kube-scheduler's `prepareCandidate`.
async fn preempt(client: Client, events: EventQueue, pod: Arc<SchedPod>, p: Preemption) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let patch = serde_json::json!({"status": {"nominatedNodeName": p.node}});
    if let Err(e) = api
        .patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::debug!(pod = %pod.name, error = %e, "could not set nominatedNodeName");
    }
    for v in p.victims {
        let api: Api<Pod> = Api::namespaced(client.clone(), &v.namespace);
        // The key is the uid unless the pod had none: evict this pod, not a namesake.
        let uid = (!v.key.contains('/')).then(|| v.key.clone());
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&v.name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => continue,
            Err(e) => {
                tracing::warn!(victim = %v.name, error = %e, "could not delete preemption victim");
                continue;
            }
        }
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(v.name.clone()),
            namespace: Some(v.namespace.clone()),
            uid,
            ..ObjectReference::default()
        };
        let msg = format!("Preempted by pod {} on node {}", pod.uid, p.node);
        events.record(regarding, EventType::Normal, "Preempted", msg);
    }
}

/// The reference an Event about a pod carries.
fn pod_ref(pod: &SchedPod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests;
