//! StatefulSet controller (apps/v1), as kube-controller-manager's: pods with stable
//! names `<set>-<ordinal>`, hostnames and a subdomain under the governing Service, each
//! with its own PersistentVolumeClaims from `volumeClaimTemplates`, created in order
//! (OrderedReady) or all at once (Parallel), replaced by a RollingUpdate from the highest
//! ordinal down to the partition, and a history of ControllerRevisions for `kubectl
//! rollout`. What a pass decides is in [`control`]; this module claims the pods, keeps
//! the revisions, carries the decisions out and writes the status.
//!
//! Like the DaemonSet controller it remembers the pods it created or deleted that its
//! cache has not shown yet ("expectations") and changes nothing more until they show,
//! so a pass racing its own writes never creates a pod twice.

pub mod claims;
pub mod control;
pub mod identity;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use spindle_meta::events::{object_ref, EventType, Recorder};
use spindle_meta::selector::Matcher;

use crate::controller_ref::{controller_ref, RefManager};
use crate::deployment::util::scaled_value;
use crate::history;
use crate::runtime::{informer, key_of, watch_config, Action, Cache, Change, Queue};
use control::{Params, Step, Why};
use identity::*;

/// The component events are reported by (kube-controller-manager's wording).
pub const COMPONENT: &str = "statefulset-controller";
/// Concurrent reconciles (distinct StatefulSets).
const WORKERS: usize = 4;
/// Concurrent pod writes of a Parallel pass.
const WRITE_CONCURRENCY: usize = 64;
/// Expectations not met within this long are dropped (a lost watch event must not wedge
/// the set for ever).
const EXPECTATION_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Expectations {
    /// Pods created, not yet in the cache (by name).
    creates: HashSet<String>,
    /// Pods deleted, still in the cache without a deletionTimestamp (by uid).
    deletes: HashSet<String>,
    since: Option<Instant>,
}

struct Ctx {
    client: Client,
    sets: Arc<Cache<StatefulSet>>,
    revisions: history::Revisions,
    pods: Arc<Cache<Pod>>,
    recorder: Recorder,
    expectations: Mutex<HashMap<String, Expectations>>,
    retention: Mutex<claims::Synced>,
}

impl Ctx {
    fn expectations(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectations>> {
        self.expectations.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn retention(&self) -> std::sync::MutexGuard<'_, claims::Synced> {
        self.retention.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ns_index(s: &StatefulSet) -> Vec<String> {
    vec![s.namespace().unwrap_or_default()]
}

/// The informer of StatefulSets (indexed by namespace), each change queued.
pub fn sets(client: &Client, queue: Arc<Queue<String>>) -> Arc<Cache<StatefulSet>> {
    informer(
        Api::<StatefulSet>::all(client.clone()),
        watch_config(),
        Some(Box::new(ns_index)),
        move |ch| match ch {
            Change::Upsert { new, .. } => queue.add(key_of(new.as_ref())),
            Change::Delete(o) => queue.add(key_of(o.as_ref())),
        },
    )
}

/// Queue the StatefulSet that controls a changed pod, or the sets that may adopt an
/// orphan (their selector matches and the name is theirs).
pub fn on_pod_change(q: &Queue<String>, sets: &Cache<StatefulSet>, ch: &Change<'_, Pod>) {
    for p in ch.states() {
        let ns = p.namespace().unwrap_or_default();
        match controller_ref(&p.metadata) {
            Some(r) if r.kind == "StatefulSet" => q.add(format!("{ns}/{}", r.name)),
            Some(_) => {}
            None => {
                for s in sets.by_index(&ns) {
                    let sel = s.spec.as_ref().map(|s| &s.selector);
                    if is_member(&s, p) && Matcher::for_controller(sel).matches(p.labels()) {
                        q.add(key_of(s.as_ref()));
                    }
                }
            }
        }
    }
}

/// Run the controller over the shared pod cache; `queue` is the one [`sets`] and
/// [`on_pod_change`] feed.
pub async fn run(
    client: Client,
    recorder: Recorder,
    queue: Arc<Queue<String>>,
    sets: Arc<Cache<StatefulSet>>,
    pods: Arc<Cache<Pod>>,
) -> anyhow::Result<()> {
    let revisions = history::revisions(&client, queue.clone(), "StatefulSet");
    sets.wait_synced().await;
    revisions.wait_synced().await;
    pods.wait_synced().await;
    let ctx = Arc::new(Ctx {
        client,
        sets,
        revisions,
        pods,
        recorder,
        expectations: Mutex::new(HashMap::new()),
        retention: Mutex::new(HashMap::new()),
    });
    queue
        .run(WORKERS, "statefulset", move |key: String| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, &key).await }
        })
        .await;
    Ok(())
}

async fn reconcile(ctx: &Ctx, key: &str) -> anyhow::Result<Action> {
    let Some(set) = ctx.sets.get(key) else {
        ctx.expectations().remove(key);
        ctx.retention().remove(key);
        return Ok(Action::Done);
    };
    let spec = set.spec.clone().context("statefulset has no spec")?;
    let uid = set.uid().unwrap_or_default();
    let ns = set.namespace().unwrap_or_default();
    let matcher = Matcher::for_controller(Some(&spec.selector));
    let candidates = ctx
        .pods
        .by_index(&format!("owner/{uid}"))
        .into_iter()
        .chain(ctx.pods.by_index(&format!("orphan/{ns}")));
    let pods = RefManager::new(&ctx.client, set.as_ref())
        .claim(candidates, |p: &Pod| {
            is_member(&set, p) && matcher.matches(p.labels())
        })
        .await?;
    if let Some(synced) = ctx.retention().get_mut(key) {
        let uids: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        synced.retain(|uid, _| uids.contains(uid));
    }
    let (update, others) = history::construct(&ctx.client, &ctx.revisions, set.as_ref()).await?;
    let status_current = set.status.as_ref().and_then(|s| s.current_revision.clone());
    let current = others
        .iter()
        .find(|r| Some(r.name_any()) == status_current)
        .cloned()
        .unwrap_or_else(|| update.clone());
    let (current_name, update_name) = (current.name_any(), update.name_any());

    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let strategy = spec.update_strategy.as_ref();
    let rolling_update = strategy.and_then(|s| s.rolling_update.as_ref());
    let rolling = strategy
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let replicas = identity::replicas(&set);
    let max_unavailable = scaled_value(
        Some(
            rolling_update
                .and_then(|r| r.max_unavailable.as_ref())
                .unwrap_or(&IntOrString::Int(1)),
        ),
        replicas,
        false,
    )
    .map_err(anyhow::Error::msg)?;
    let params = Params {
        start: start_ordinal(&set),
        replicas,
        monotonic: spec.pod_management_policy.as_deref() != Some("Parallel"),
        rolling,
        partition: rolling_update.and_then(|r| r.partition).unwrap_or(0),
        max_unavailable: max_unavailable.max(1),
        min_ready,
        now: k8s_openapi::jiff::Timestamp::now(),
        current_revision: &current_name,
        update_revision: &update_name,
        deleting: set.metadata.deletion_timestamp.is_some(),
    };
    if expectations_met(ctx, key, &pods) {
        let steps = control::plan(&params, &pods);
        let revs = Revisions {
            current: &current,
            update: &update,
        };
        execute(ctx, key, &set, &revs, &steps, params.monotonic).await?;
        claims::sync_retention(ctx, &set, &pods, &params).await?;
    }

    let c = counts(&pods, min_ready, params.now, &current_name, &update_name);
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas: c.replicas,
        ready_replicas: Some(c.ready),
        available_replicas: Some(c.available),
        current_replicas: Some(c.current),
        updated_replicas: Some(c.updated),
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        collision_count: Some(
            set.status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        ),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    // A finished rolling update makes the update revision the current one.
    if rolling && c.updated == replicas && c.ready == replicas && c.replicas == replicas {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
    write_status(ctx, &set, &status).await?;

    let live: HashSet<&str> = pods
        .iter()
        .map(|p| revision_of(p))
        .chain([current_name.as_str(), update_name.as_str()])
        .chain(status.current_revision.as_deref())
        .collect();
    let others: Vec<ControllerRevision> = others;
    history::cleanup(&ctx.client, set.as_ref(), others, |r| {
        live.contains(r.name_any().as_str())
    })
    .await?;
    if min_ready > 0 && c.available < c.ready {
        return Ok(Action::RequeueAfter(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::Done)
}

/// The two revisions a pass makes pods from.
struct Revisions<'a> {
    current: &'a ControllerRevision,
    update: &'a ControllerRevision,
}

/// Forget what the cache now shows; true when nothing written is still unseen.
fn expectations_met(ctx: &Ctx, key: &str, pods: &[Arc<Pod>]) -> bool {
    let names: HashSet<String> = pods.iter().map(|p| p.name_any()).collect();
    let alive: HashSet<String> = pods
        .iter()
        .filter(|p| !is_terminating(p))
        .filter_map(|p| p.uid())
        .collect();
    let mut all = ctx.expectations();
    let e = all.entry(key.to_string()).or_default();
    e.creates.retain(|n| !names.contains(n));
    e.deletes.retain(|u| alive.contains(u));
    if e.since.is_some_and(|t| t.elapsed() > EXPECTATION_TTL) {
        e.creates.clear();
        e.deletes.clear();
    }
    e.creates.is_empty() && e.deletes.is_empty()
}

fn expect(ctx: &Ctx, key: &str, step: &Step) {
    let mut all = ctx.expectations();
    let e = all.entry(key.to_string()).or_default();
    match step {
        Step::Create { ordinal, .. } => {
            let set_name = key.rsplit('/').next().unwrap_or_default();
            e.creates.insert(format!("{set_name}-{ordinal}"));
        }
        Step::Delete { pod, .. } => {
            e.deletes.extend(pod.uid());
        }
        _ => return,
    }
    e.since = Some(Instant::now());
}

fn unexpect(ctx: &Ctx, key: &str, step: &Step) {
    if let Some(e) = ctx.expectations().get_mut(key) {
        match step {
            Step::Create { ordinal, .. } => {
                let set_name = key.rsplit('/').next().unwrap_or_default();
                e.creates.remove(&format!("{set_name}-{ordinal}"));
            }
            Step::Delete { pod, .. } => {
                e.deletes.remove(&pod.uid().unwrap_or_default());
            }
            _ => {}
        }
    }
}

/// Carry out a pass's steps: one after the other under OrderedReady (stopping at the
/// first failure), all at once under Parallel.
async fn execute(
    ctx: &Ctx,
    key: &str,
    set: &StatefulSet,
    revs: &Revisions<'_>,
    steps: &[Step],
    monotonic: bool,
) -> anyhow::Result<()> {
    for s in steps.iter().filter(|s| s.is_pod_write()) {
        expect(ctx, key, s);
    }
    let run = |s: &Step| {
        let s = s.clone();
        async move {
            let r = step(ctx, set, revs, &s).await;
            if r.is_err() {
                unexpect(ctx, key, &s);
            }
            r
        }
    };
    if monotonic {
        for s in steps {
            run(s).await?;
        }
        return Ok(());
    }
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(steps.iter().map(run))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}

async fn step(
    ctx: &Ctx,
    set: &StatefulSet,
    revs: &Revisions<'_>,
    step: &Step,
) -> anyhow::Result<()> {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let oref = object_ref(set);
    let set_name = set.name_any();
    match step {
        Step::Create { ordinal, update } => {
            let rev = if *update { revs.update } else { revs.current };
            let template = history::template_of(rev)
                .or_else(|| set.spec.as_ref().map(|s| s.template.clone()))
                .context("statefulset has no template")?;
            let mut pod = new_pod(set, &template, &rev.name_any(), *ordinal);
            let name = pod.name_any();
            claims::add_volumes(set, &mut pod, *ordinal);
            if let Err(e) = claims::ensure(ctx, set, &name, *ordinal).await {
                publish(
                    ctx,
                    &oref,
                    EventType::Warning,
                    "FailedCreate",
                    pod_msg("create", &name, &set_name, Some(&e)),
                );
                return Err(e);
            }
            match api.create(&PostParams::default(), &pod).await {
                Ok(_) => {
                    publish(
                        ctx,
                        &oref,
                        EventType::Normal,
                        "SuccessfulCreate",
                        pod_msg("create", &name, &set_name, None),
                    );
                    Ok(())
                }
                // Kube sinks the event of a pod that already exists.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    anyhow::bail!("pod {name} already exists")
                }
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    publish(
                        ctx,
                        &oref,
                        EventType::Warning,
                        "FailedCreate",
                        pod_msg("create", &name, &set_name, Some(&e)),
                    );
                    Err(e)
                }
            }
        }
        Step::Delete { pod, why } => {
            let name = pod.name_any();
            match why {
                Why::Failed => publish(
                    ctx,
                    &oref,
                    EventType::Warning,
                    "RecreatingFailedPod",
                    format!("StatefulSet {ns}/{set_name} is recreating failed Pod {name}"),
                ),
                Why::Succeeded => publish(
                    ctx,
                    &oref,
                    EventType::Normal,
                    "RecreatingTerminatedPod",
                    format!("StatefulSet {ns}/{set_name} is recreating terminated Pod {name}"),
                ),
                Why::ScaleDown | Why::Update => {
                    tracing::info!(statefulset = %set_name, pod = %name, why = ?why, "terminating pod")
                }
            }
            if *why == Why::ScaleDown {
                // Whether the claims outlive the pod is settled before the pod goes.
                claims::sync_pod_retention(ctx, set, pod, true).await?;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let r = match api.delete(&name, &dp).await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                r => r.map(|_| ()),
            };
            match r {
                Ok(()) => {
                    publish(
                        ctx,
                        &oref,
                        EventType::Normal,
                        "SuccessfulDelete",
                        pod_msg("delete", &name, &set_name, None),
                    );
                    Ok(())
                }
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    publish(
                        ctx,
                        &oref,
                        EventType::Warning,
                        "FailedDelete",
                        pod_msg("delete", &name, &set_name, Some(&e)),
                    );
                    Err(e)
                }
            }
        }
        Step::FixIdentity { pod, ordinal } => {
            let name = pod.name_any();
            let patch = json!({"metadata": {
                "uid": pod.uid(),
                "labels": identity_labels(set, *ordinal),
            }});
            let r = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            let (ty, reason, e) = match r {
                Ok(_) => (EventType::Normal, "SuccessfulUpdate", None),
                Err(e) => (
                    EventType::Warning,
                    "FailedUpdate",
                    Some(anyhow::Error::from(e)),
                ),
            };
            publish(
                ctx,
                &oref,
                ty,
                reason,
                pod_msg("update", &name, &set_name, e.as_ref()),
            );
            e.map_or(Ok(()), Err)
        }
        Step::CreateMissingClaims { pod, ordinal } => {
            claims::ensure(ctx, set, &pod.name_any(), *ordinal).await
        }
    }
}

/// Kube's wording of a pod event: "create Pod web-0 in StatefulSet web successful".
fn pod_msg(verb: &str, pod: &str, set: &str, err: Option<&anyhow::Error>) -> String {
    match err {
        None => format!("{verb} Pod {pod} in StatefulSet {set} successful"),
        Some(e) => format!("{verb} Pod {pod} in StatefulSet {set} failed error: {e:#}"),
    }
}

fn publish(ctx: &Ctx, r: &ObjectReference, ty: EventType, reason: &'static str, msg: String) {
    let rec = ctx.recorder.clone();
    let r = r.clone();
    tokio::spawn(async move { rec.publish(&r, ty, reason, &msg).await });
}

async fn write_status(
    ctx: &Ctx,
    set: &StatefulSet,
    status: &StatefulSetStatus,
) -> anyhow::Result<()> {
    if set.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<StatefulSet> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    let patch = json!({"status": status});
    match api
        .patch_status(
            &set.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).context("writing statefulset status"),
    }
}
