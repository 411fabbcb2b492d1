//! ReplicaSet controller: keeps `spec.replicas` pods of the template alive and reports
//! replicas/ready/available in the status.
//!
//! Like Kubernetes' controller it tracks "expectations" (pods it created or deleted that
//! its cache has not seen yet) so a reconcile racing its own writes never creates or
//! deletes twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use spindle_meta::events::{object_ref, EventType, Recorder};

use crate::runtime::{informer, key_of, split_key, watch_config, Action, Cache, Change, Queue};

/// Concurrent pod writes per reconcile.
const WRITE_CONCURRENCY: usize = 64;
/// Expectations not met within this long are dropped (a lost watch event must not wedge
/// the ReplicaSet forever).
const EXPECTATION_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Expectations {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

struct Ctx {
    client: Client,
    rss: Arc<Cache<ReplicaSet>>,
    pods: Arc<Cache<Pod>>,
    recorder: Recorder,
    expectations: Mutex<HashMap<String, Expectations>>,
}

/// The uid of the pod's controlling owner, if any.
pub fn controller_uid(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

pub fn controller_ref(meta: &kube::api::ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Ready condition and when it last changed.
pub fn ready_since(p: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(k8s_openapi::jiff::Timestamp::now),
    )
}

pub fn is_available(p: &Pod, min_ready: i64, now: k8s_openapi::jiff::Timestamp) -> bool {
    match ready_since(p) {
        Some(t) => min_ready <= 0 || t.as_second() + min_ready <= now.as_second(),
        None => false,
    }
}

/// Index values of the shared pod cache: by controlling owner and by node.
pub fn pod_index(p: &Pod) -> Vec<String> {
    let mut out: Vec<String> = controller_uid(&p.metadata)
        .into_iter()
        .map(|u| format!("owner/{u}"))
        .collect();
    // By namespace too, for the endpoints controller's selector scans.
    out.push(format!(
        "ns/{}",
        p.metadata.namespace.as_deref().unwrap_or_default()
    ));
    if let Some(n) = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        out.push(format!("node/{n}"));
    }
    out
}

/// Enqueue the ReplicaSets a pod change concerns (the pod's controller, before and after).
pub fn on_pod_change(q: &Queue<String>, ch: Change<'_, Pod>) {
    let (new, old) = match ch {
        Change::Upsert { new, old } => (new.clone(), old.cloned()),
        Change::Delete(o) => (o.clone(), None),
    };
    for p in [Some(new), old].into_iter().flatten() {
        if let Some(r) = controller_ref(&p.metadata).filter(|r| r.kind == "ReplicaSet") {
            q.add(format!("{}/{}", p.namespace().unwrap_or_default(), r.name));
        }
    }
}

/// Run the controller over the shared pod cache; `queue` is the one `on_pod_change` feeds.
pub async fn run(
    client: Client,
    recorder: Recorder,
    queue: Arc<Queue<String>>,
    pods: Arc<Cache<Pod>>,
) -> anyhow::Result<()> {
    let q = queue.clone();
    let rss = informer(
        Api::<ReplicaSet>::all(client.clone()),
        watch_config(),
        None,
        move |ch| match ch {
            Change::Upsert { new, .. } => q.add(key_of(new.as_ref())),
            Change::Delete(o) => q.add(key_of(o.as_ref())),
        },
    );
    rss.wait_synced().await;
    pods.wait_synced().await;
    let ctx = Arc::new(Ctx {
        client,
        rss,
        pods,
        recorder,
        expectations: Mutex::new(HashMap::new()),
    });
    queue
        .run(4, "replicaset", move |key: String| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, &key).await }
        })
        .await;
    Ok(())
}

fn rank_for_deletion(p: &Pod) -> (u8, u8, u8, i64) {
    // Kubernetes deletes first the pods that matter least: unscheduled, then pending,
    // then not ready, then the newest.
    let unscheduled = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = u8::from(ready_since(p).is_some());
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (u8::from(!unscheduled), phase, ready, -created)
}

async fn reconcile(ctx: &Ctx, key: &str) -> anyhow::Result<Action> {
    let Some(rs) = ctx.rss.get(key) else {
        ctx.expectations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        return Ok(Action::Done);
    };
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default").to_string();
    let uid = rs.uid().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let owned = ctx.pods.by_index(&format!("owner/{uid}"));
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
    let (pending_creates, pending_deletes) = {
        let mut all = ctx.expectations.lock().unwrap_or_else(|p| p.into_inner());
        let e = all.entry(key.to_string()).or_default();
        let present: HashSet<String> = owned.iter().map(|p| p.name_any()).collect();
        let live: HashSet<String> = active.iter().map(|p| p.name_any()).collect();
        e.creates.retain(|n| !present.contains(n));
        e.deletes.retain(|n| live.contains(n));
        if e.since.is_some_and(|t| t.elapsed() > EXPECTATION_TTL) {
            e.creates.clear();
            e.deletes.clear();
        }
        (e.creates.len(), e.deletes.clone())
    };
    let counted: Vec<&Arc<Pod>> = active
        .iter()
        .copied()
        .filter(|p| !pending_deletes.contains(&p.name_any()))
        .collect();
    let have = counted.len() + pending_creates;
    let rs_ref = object_ref(rs.as_ref());
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut failed = None;
    if rs.metadata.deletion_timestamp.is_none() && have < want {
        let template = spec.template.clone().unwrap_or_default();
        let tmeta = template.metadata.unwrap_or_default();
        // As the pods' generateName "<replicaset>-" would be named by the API server.
        let base = format!("{name}-");
        let names: Vec<String> = (0..want - have)
            .map(|_| spindle_meta::names::generate_name(&base))
            .collect();
        {
            let mut all = ctx.expectations.lock().unwrap_or_else(|p| p.into_inner());
            let e = all.entry(key.to_string()).or_default();
            e.creates.extend(names.iter().cloned());
            e.since = Some(Instant::now());
        }
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: name.to_string(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let results: Vec<(String, Result<Pod, kube::Error>)> =
            futures::stream::iter(names.into_iter().map(|pod_name| {
                let pod = Pod {
                    metadata: kube::api::ObjectMeta {
                        name: Some(pod_name.clone()),
                        namespace: Some(ns.clone()),
                        labels: tmeta.labels.clone(),
                        annotations: tmeta.annotations.clone(),
                        owner_references: Some(vec![owner.clone()]),
                        ..Default::default()
                    },
                    spec: template.spec.clone(),
                    status: None,
                };
                let api = pods_api.clone();
                async move { (pod_name, api.create(&PostParams::default(), &pod).await) }
            }))
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for (pod_name, r) in results {
            match r {
                Ok(_) => publish(
                    ctx,
                    &rs_ref,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {pod_name}"),
                ),
                Err(e) => {
                    let mut all = ctx.expectations.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(ex) = all.get_mut(key) {
                        ex.creates.remove(&pod_name);
                    }
                    publish(
                        ctx,
                        &rs_ref,
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                    );
                    failed = Some(e);
                }
            }
        }
    } else if have > want {
        let mut victims: Vec<&Arc<Pod>> = counted.clone();
        victims.sort_by_key(|p| rank_for_deletion(p));
        let victims: Vec<(String, Option<String>)> = victims
            .into_iter()
            .take(have - want)
            .map(|p| (p.name_any(), p.uid()))
            .collect();
        {
            let mut all = ctx.expectations.lock().unwrap_or_else(|p| p.into_inner());
            let e = all.entry(key.to_string()).or_default();
            e.deletes.extend(victims.iter().map(|(n, _)| n.clone()));
            e.since = Some(Instant::now());
        }
        let results: Vec<(String, Result<(), kube::Error>)> =
            futures::stream::iter(victims.into_iter().map(|(pod_name, pod_uid)| {
                let api = pods_api.clone();
                async move {
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: pod_uid,
                            resource_version: None,
                        }),
                        ..DeleteParams::background()
                    };
                    let r = match api.delete(&pod_name, &dp).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(e) => Err(e),
                    };
                    (pod_name, r)
                }
            }))
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for (pod_name, r) in results {
            match r {
                Ok(()) => publish(
                    ctx,
                    &rs_ref,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {pod_name}"),
                ),
                Err(e) => {
                    let mut all = ctx.expectations.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(ex) = all.get_mut(key) {
                        ex.deletes.remove(&pod_name);
                    }
                    failed = Some(e);
                }
            }
        }
    }

    // Status from what the cache shows now.
    let now = k8s_openapi::jiff::Timestamp::now();
    let active: Vec<Arc<Pod>> = ctx
        .pods
        .by_index(&format!("owner/{uid}"))
        .into_iter()
        .filter(|p| is_active(p))
        .collect();
    let tpl_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let ready = active.iter().filter(|p| ready_since(p).is_some()).count();
    let available = active
        .iter()
        .filter(|p| is_available(p, min_ready, now))
        .count();
    let fully_labeled = active
        .iter()
        .filter(|p| tpl_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
        .count();
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation.unwrap_or(0),
    });
    let cur = rs.status.clone().unwrap_or_default();
    let same = cur.replicas as usize == active.len()
        && cur.ready_replicas.unwrap_or(0) as usize == ready
        && cur.available_replicas.unwrap_or(0) as usize == available
        && cur.fully_labeled_replicas.unwrap_or(0) as usize == fully_labeled
        && cur.observed_generation == rs.metadata.generation;
    if !same {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    // Pods that are ready but not yet available for minReadySeconds need a later look.
    if ready > available && min_ready > 0 {
        return Ok(Action::RequeueAfter(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::Done)
}

fn publish(
    ctx: &Ctx,
    r: &k8s_openapi::api::core::v1::ObjectReference,
    ty: EventType,
    reason: &'static str,
    msg: String,
) {
    let rec = ctx.recorder.clone();
    let r = r.clone();
    tokio::spawn(async move { rec.publish(&r, ty, reason, &msg).await });
}
