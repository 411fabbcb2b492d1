//! DaemonSet controller (apps/v1): one pod per eligible node, as kube-controller-manager's
//! daemon controller. Each pass claims the DaemonSet's pods and revisions, makes sure the
//! current template has its ControllerRevision, creates a pod (pinned by node affinity,
//! placed by the scheduler) for every node that should run one and has none, deletes
//! pods from nodes that may not keep them, then takes the next step of a RollingUpdate
//! (an OnDelete DaemonSet replaces a pod only once a user deletes it), prunes old
//! revisions and writes the status.
//!
//! Like the replica controller it remembers the pods it created or deleted that its cache
//! has not shown yet ("expectations") and changes nothing more until they show, so a pass
//! racing its own writes never makes two pods for one node.

#[path = "daemonset_backoff.rs"]
mod backoff;
#[path = "daemonset_util.rs"]
pub mod util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use spindle_meta::events::{object_ref, EventType, Recorder};
use spindle_meta::selector::Matcher;
use spindle_scheduler::PodFit;

use crate::controller_ref::{controller_ref, owner_reference, RefManager};
use crate::history;
use crate::replicaset::{is_available, is_ready};
use crate::runtime::{informer, key_of, watch_config, Action, Cache, Change, Queue};
use util::*;

/// Concurrent reconciles (distinct DaemonSets).
const WORKERS: usize = 4;
/// Concurrent pod writes per pass.
const WRITE_CONCURRENCY: usize = 64;
/// Expectations not met within this long are dropped (a lost watch event must not wedge
/// the DaemonSet for ever).
const EXPECTATION_TTL: Duration = Duration::from_secs(60);
/// The component events are reported by (kube-controller-manager's wording).
pub const COMPONENT: &str = "daemonset-controller";

#[derive(Default)]
struct Expectations {
    /// Pods created, not yet in the cache.
    creates: HashSet<String>,
    /// Pods deleted, still in the cache without a deletionTimestamp.
    deletes: HashSet<String>,
    since: Option<Instant>,
}

struct Ctx {
    client: Client,
    sets: Arc<Cache<DaemonSet>>,
    nodes: Arc<Cache<Node>>,
    revisions: history::Revisions,
    pods: Arc<Cache<Pod>>,
    recorder: Recorder,
    expectations: Mutex<HashMap<String, Expectations>>,
    failed_backoff: backoff::FailedPodBackoff,
}

impl Ctx {
    fn expectations(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectations>> {
        self.expectations.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Queue the DaemonSet that controls a changed pod (before and after the change).
pub fn on_pod_change(q: &Queue<String>, ch: &Change<'_, Pod>) {
    for p in ch.states() {
        if let Some(r) = controller_ref(&p.metadata).filter(|r| r.kind == "DaemonSet") {
            q.add(format!("{}/{}", p.namespace().unwrap_or_default(), r.name));
        }
    }
}

/// What about a node decides where daemons run (a heartbeat changes none of it).
fn placement_of(n: &Node) -> (Option<&BTreeMap<String, String>>, Option<String>) {
    let spec = n.spec.as_ref().map(|s| {
        let taints = serde_json::to_string(&s.taints).unwrap_or_default();
        format!("{taints}/{:?}", s.unschedulable)
    });
    (n.metadata.labels.as_ref(), spec)
}

/// Run the controller; `queue` is the one [`on_pod_change`] feeds from the shared pod
/// informer.
pub async fn run(
    client: Client,
    recorder: Recorder,
    queue: Arc<Queue<String>>,
    pods: Arc<Cache<Pod>>,
) -> anyhow::Result<()> {
    let q = queue.clone();
    let sets = informer(
        Api::<DaemonSet>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            for ds in ch.states() {
                q.add(key_of(ds.as_ref()));
            }
        },
    );
    let (q, all) = (queue.clone(), sets.clone());
    let nodes = informer(
        Api::<Node>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            let relevant = match &ch {
                Change::Upsert { new, old } => {
                    old.is_none_or(|o| placement_of(o) != placement_of(new))
                }
                Change::Delete(_) => true,
            };
            if relevant {
                for ds in all.list() {
                    q.add(key_of(ds.as_ref()));
                }
            }
        },
    );
    let revisions = history::revisions(&client, queue.clone(), "DaemonSet");
    sets.wait_synced().await;
    nodes.wait_synced().await;
    revisions.wait_synced().await;
    pods.wait_synced().await;
    let ctx = Arc::new(Ctx {
        client,
        sets,
        nodes,
        revisions,
        pods,
        recorder,
        expectations: Mutex::new(HashMap::new()),
        failed_backoff: Default::default(),
    });
    queue
        .run(WORKERS, "daemonset", move |key: String| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, &key).await }
        })
        .await;
    Ok(())
}

/// The DaemonSet's pods by the node they are for (active ones; terminal pods too, so
/// that failed ones are replaced).
type NodePodMap = BTreeMap<String, Vec<Arc<Pod>>>;

async fn reconcile(ctx: &Ctx, key: &str) -> anyhow::Result<Action> {
    let Some(ds) = ctx.sets.get(key) else {
        ctx.expectations().remove(key);
        return Ok(Action::Done);
    };
    let spec = ds.spec.clone().context("daemonset has no spec")?;
    let uid = ds.uid().unwrap_or_default();
    let ns = ds.namespace().unwrap_or_default();
    let matcher = Matcher::for_controller(Some(&spec.selector));
    let candidates = ctx
        .pods
        .by_index(&format!("owner/{uid}"))
        .into_iter()
        .chain(ctx.pods.by_index(&format!("orphan/{ns}")));
    let pods = RefManager::new(&ctx.client, ds.as_ref())
        .claim(candidates, |p: &Pod| matcher.matches(p.labels()))
        .await?;
    let (cur, old) = history::construct(&ctx.client, &ctx.revisions, ds.as_ref()).await?;
    let hash = history::hash_of(&cur, HASH_LABEL);
    let by_node = by_node(&pods);
    let nodes = ctx.nodes.list();
    let fit = fit_of(&spec);
    let settled = expectations_met(ctx, key, &pods);
    let mut backing_off = None;
    if settled && ds.metadata.deletion_timestamp.is_none() {
        backing_off = manage(ctx, key, &ds, &nodes, &fit, &by_node, &hash).await?;
        if is_rolling(&spec) && expectations_met(ctx, key, &pods) {
            rolling_update(ctx, key, &ds, &nodes, &fit, &by_node, &hash).await?;
        }
        let live: HashSet<String> = pods
            .iter()
            .filter_map(|p| p.labels().get(HASH_LABEL).cloned())
            .collect();
        let is_live =
            |r: &ControllerRevision| r.labels().get(HASH_LABEL).is_some_and(|h| live.contains(h));
        history::cleanup(&ctx.client, ds.as_ref(), old, is_live).await?;
    }
    let status = status_of(&ds, &nodes, &fit, &by_node, &hash);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let waiting = status.number_ready > status.number_available.unwrap_or(0) && min_ready > 0;
    write_status(ctx, &ds, status).await?;
    let ready_check = waiting.then(|| Duration::from_secs(min_ready as u64));
    match ready_check.into_iter().chain(backing_off).min() {
        Some(after) => Ok(Action::RequeueAfter(after)),
        None => Ok(Action::Done),
    }
}

fn fit_of(spec: &k8s_openapi::api::apps::v1::DaemonSetSpec) -> PodFit {
    let t = daemon_template(spec);
    PodFit::new(&Pod {
        metadata: t.metadata.unwrap_or_default(),
        spec: t.spec,
        status: None,
    })
}

fn by_node(pods: &[Arc<Pod>]) -> NodePodMap {
    let mut m = NodePodMap::new();
    for p in pods {
        if let Some(n) = target_node(p) {
            m.entry(n).or_default().push(p.clone());
        }
    }
    for v in m.values_mut() {
        v.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    }
    m
}

fn deleting(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Forget what the cache now shows; true when nothing written is still unseen.
fn expectations_met(ctx: &Ctx, key: &str, pods: &[Arc<Pod>]) -> bool {
    let seen: HashMap<String, bool> = pods.iter().map(|p| (p.name_any(), deleting(p))).collect();
    let mut all = ctx.expectations();
    let e = all.entry(key.to_string()).or_default();
    e.creates.retain(|n| !seen.contains_key(n));
    e.deletes.retain(|n| seen.get(n) == Some(&false));
    if e.since.is_some_and(|t| t.elapsed() > EXPECTATION_TTL) {
        e.creates.clear();
        e.deletes.clear();
    }
    e.creates.is_empty() && e.deletes.is_empty()
}

/// Create the missing daemon pods and delete those on nodes that may not keep them (or
/// gone nodes), finished ones, and extra ones. A failed pod is deleted only once its
/// node's back-off allows; the answer is then how long until the next one may go.
async fn manage(
    ctx: &Ctx,
    key: &str,
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    fit: &PodFit,
    by_node: &NodePodMap,
    hash: &str,
) -> anyhow::Result<Option<Duration>> {
    let surge = ds
        .spec
        .as_ref()
        .filter(|s| is_rolling(s))
        .and_then(|s| max_counts(s, 1).ok())
        .is_some_and(|(s, _)| s > 0);
    let (mut create, mut delete) = (Vec::new(), Vec::new());
    let mut known = HashSet::new();
    let mut backing_off: Option<Duration> = None;
    let oref = object_ref(ds);
    let now = Instant::now();
    for n in nodes {
        let name = n.name_any();
        let (run, stay) = should_run(fit.on(n));
        let pods = by_node.get(&name).map(Vec::as_slice).unwrap_or_default();
        known.insert(name.clone());
        if run && pods.is_empty() {
            create.push(name);
        } else if stay {
            let mut running: Vec<&Arc<Pod>> = Vec::new();
            for p in pods.iter().filter(|p| !deleting(p)) {
                let pod = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
                match phase(p) {
                    Some("Failed") => {
                        let key = backoff::key(ds, &name);
                        if let Some(wait) = ctx.failed_backoff.try_step(&key, now) {
                            backing_off = Some(backing_off.map_or(wait, |b| b.min(wait)));
                            continue;
                        }
                        let msg = format!(
                            "Found failed daemon pod {pod} on node {name}, will try to kill it"
                        );
                        publish(ctx, &oref, EventType::Warning, "FailedDaemonPod", msg);
                        delete.push(p.clone());
                    }
                    Some("Succeeded") => {
                        let msg = format!(
                            "Found succeeded daemon pod {pod} on node {name}, will try to delete it"
                        );
                        publish(ctx, &oref, EventType::Normal, "SucceededDaemonPod", msg);
                        delete.push(p.clone());
                    }
                    _ => running.push(p),
                }
            }
            delete.extend(extra_pods(&running, surge, hash));
        } else {
            delete.extend(pods.iter().filter(|p| !deleting(p)).cloned());
        }
    }
    // Pods for nodes that no longer exist.
    for (node, pods) in by_node {
        if !known.contains(node) {
            delete.extend(pods.iter().filter(|p| !deleting(p)).cloned());
        }
    }
    sync_nodes(ctx, key, ds, &delete, &create, hash).await?;
    Ok(backing_off)
}

/// Of a node's running pods, those beyond one (the oldest stays); with surge, the
/// oldest updated and the oldest old pod stay.
fn extra_pods(running: &[&Arc<Pod>], surge: bool, hash: &str) -> Vec<Arc<Pod>> {
    if !surge {
        return running.iter().skip(1).map(|p| (*p).clone()).collect();
    }
    let (mut new_kept, mut old_kept, mut out) = (false, false, Vec::new());
    for p in running {
        let kept = if is_updated(p, hash) {
            &mut new_kept
        } else {
            &mut old_kept
        };
        if *kept {
            out.push((*p).clone());
        }
        *kept = true;
    }
    out
}

async fn rolling_update(
    ctx: &Ctx,
    key: &str,
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    fit: &PodFit,
    by_node: &NodePodMap,
    hash: &str,
) -> anyhow::Result<()> {
    let spec = ds.spec.as_ref().context("daemonset has no spec")?;
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut desired = 0;
    let mut states = BTreeMap::new();
    for n in nodes {
        if should_run(fit.on(n)).0 {
            desired += 1;
            states.insert(n.name_any(), Vec::new());
        }
    }
    for (node, pods) in by_node {
        let alive = pods.iter().filter(|p| !deleting(p)).map(|p| {
            let s = PodState {
                name: p.name_any(),
                available: is_available(p, min_ready, now),
            };
            (s, is_updated(p, hash))
        });
        states.insert(node.clone(), alive.collect());
    }
    let (surge, unavailable) = max_counts(spec, desired).map_err(anyhow::Error::msg)?;
    let split: Vec<NodePods> = states
        .into_iter()
        .map(|(n, pods)| NodePods::new(&n, pods))
        .collect();
    let (delete_names, create) = rolling_step(&split, surge, unavailable);
    let delete: Vec<Arc<Pod>> = by_node
        .values()
        .flatten()
        .filter(|p| delete_names.contains(&p.name_any()))
        .cloned()
        .collect();
    sync_nodes(ctx, key, ds, &delete, &create, hash).await
}

/// Delete `delete` and create a pod for each node of `create`, recording expectations.
async fn sync_nodes(
    ctx: &Ctx,
    key: &str,
    ds: &DaemonSet,
    delete: &[Arc<Pod>],
    create: &[String],
    hash: &str,
) -> anyhow::Result<()> {
    if delete.is_empty() && create.is_empty() {
        return Ok(());
    }
    let spec = ds.spec.as_ref().context("daemonset has no spec")?;
    let ns = ds.namespace().unwrap_or_default();
    let template = daemon_template(spec);
    let labels = pod_labels(&template, hash, ds.metadata.generation.unwrap_or(0));
    let tmeta = template.metadata.clone().unwrap_or_default();
    let base = format!("{}-", ds.name_any());
    let new_pods: Vec<Pod> = create
        .iter()
        .map(|node| {
            let mut pod_spec = template.spec.clone().unwrap_or_default();
            pin_to_node(&mut pod_spec, node);
            Pod {
                metadata: ObjectMeta {
                    name: Some(spindle_meta::names::generate_name(&base)),
                    namespace: Some(ns.clone()),
                    labels: Some(labels.clone()),
                    annotations: tmeta.annotations.clone(),
                    owner_references: Some(vec![owner_reference(ds)]),
                    ..Default::default()
                },
                spec: Some(pod_spec),
                status: None,
            }
        })
        .collect();
    {
        let mut all = ctx.expectations();
        let e = all.entry(key.to_string()).or_default();
        e.creates.extend(new_pods.iter().map(|p| p.name_any()));
        e.deletes.extend(delete.iter().map(|p| p.name_any()));
        e.since = Some(Instant::now());
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let oref = object_ref(ds);
    type Write = futures::future::BoxFuture<'static, (String, bool, kube::Result<()>)>;
    let mut writes: Vec<Write> = Vec::new();
    for p in delete {
        let api = api.clone();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.uid(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        let name = p.name_any();
        writes.push(
            async move {
                let r = match api.delete(&name, &dp).await {
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    r => r.map(|_| ()),
                };
                (name, false, r)
            }
            .boxed(),
        );
    }
    for pod in new_pods {
        let api = api.clone();
        writes.push(
            async move {
                let r = api.create(&PostParams::default(), &pod).await.map(|_| ());
                (pod.name_any(), true, r)
            }
            .boxed(),
        );
    }
    let results: Vec<_> = futures::stream::iter(writes)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut failed = None;
    for (name, created, r) in results {
        let (reason, msg) = match (&r, created) {
            (Ok(()), true) => ("SuccessfulCreate", format!("Created pod: {name}")),
            (Ok(()), false) => ("SuccessfulDelete", format!("Deleted pod: {name}")),
            (Err(e), true) => ("FailedCreate", format!("Error creating: {e}")),
            (Err(e), false) => ("FailedDelete", format!("Error deleting: {e}")),
        };
        let ty = if r.is_ok() {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(ctx, &oref, ty, reason, msg);
        if let Err(e) = r {
            if let Some(ex) = ctx.expectations().get_mut(key) {
                ex.creates.remove(&name);
                ex.deletes.remove(&name);
            }
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => Err(e).context("syncing daemon pods"),
        None => Ok(()),
    }
}

fn publish(ctx: &Ctx, r: &ObjectReference, ty: EventType, reason: &'static str, msg: String) {
    let rec = ctx.recorder.clone();
    let r = r.clone();
    tokio::spawn(async move { rec.publish(&r, ty, reason, &msg).await });
}

/// The status counts, as kube's updateDaemonSetStatus computes them over the nodes.
fn status_of(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    fit: &PodFit,
    by_node: &NodePodMap,
    hash: &str,
) -> DaemonSetStatus {
    let min_ready = i64::from(
        ds.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    );
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut s = DaemonSetStatus {
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        observed_generation: ds.metadata.generation,
        ..Default::default()
    };
    let (mut available, mut updated) = (0, 0);
    for n in nodes {
        let (run, _) = should_run(fit.on(n));
        let pods = by_node.get(&n.name_any());
        let first = pods.and_then(|v| v.first());
        match (run, first) {
            (true, None) => s.desired_number_scheduled += 1,
            (true, Some(p)) => {
                s.desired_number_scheduled += 1;
                s.current_number_scheduled += 1;
                if is_ready(p) {
                    s.number_ready += 1;
                    available += i32::from(is_available(p, min_ready, now));
                }
                updated += i32::from(is_updated(p, hash));
            }
            (false, Some(_)) => s.number_misscheduled += 1,
            (false, None) => {}
        }
    }
    s.number_available = Some(available);
    s.updated_number_scheduled = Some(updated);
    s.number_unavailable = Some(s.desired_number_scheduled - available);
    s
}

async fn write_status(ctx: &Ctx, ds: &DaemonSet, status: DaemonSetStatus) -> anyhow::Result<()> {
    if ds.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<DaemonSet> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    let patch = json!({"status": status});
    match api
        .patch_status(
            &ds.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).context("writing daemonset status"),
    }
}
