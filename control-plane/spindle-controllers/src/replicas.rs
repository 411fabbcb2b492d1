//! The replica controller: keeps `spec.replicas` pods of a template alive and reports
//! replicas/ready/available in the status. One implementation serves every kind that
//! says "this many copies of this pod" ([`ReplicaKind`]): ReplicaSet (apps/v1) and
//! ReplicationController (core/v1), as kube-controller-manager runs its ReplicaSet
//! logic for both.
//!
//! Each pass claims the pods the owner's selector matches (adopting orphans, releasing
//! relabelled pods, see [`crate::controller_ref`]), then creates or deletes the
//! difference. Like Kubernetes' controller it tracks "expectations" (pods it created or
//! deleted that its cache has not seen yet) so a reconcile racing its own writes never
//! creates or deletes twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::controller_ref::{controller_ref, owner_reference, RefManager};
use crate::replicaset::{is_active, is_available, ready_since};
use crate::runtime::{informer, key_of, split_key, watch_config, Action, Cache, Change, Queue};
use spindle_meta::events::{object_ref, EventType, Recorder};

/// Concurrent pod writes per reconcile.
const WRITE_CONCURRENCY: usize = 64;
/// Expectations not met within this long are dropped (a lost watch event must not wedge
/// the owner forever).
const EXPECTATION_TTL: Duration = Duration::from_secs(60);
/// Concurrent reconciles (distinct owners).
const WORKERS: usize = 4;

/// A kind whose controller keeps N copies of a pod template running.
pub trait ReplicaKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The controller's name in logs.
    const CONTROLLER: &'static str;
    /// The component its events are reported by (kube-controller-manager's wording).
    const COMPONENT: &'static str;

    /// `spec.replicas` (1 when absent).
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// Whether the selector matches these labels; an empty selector matches nothing.
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool;
    /// The counts the status holds now.
    fn counts(&self) -> Counts;
}

/// The status of a replica owner, as both kinds spell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    pub observed_generation: Option<i64>,
}

#[derive(Default)]
struct Expectations {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

struct Ctx<K> {
    client: Client,
    owners: Arc<Cache<K>>,
    pods: Arc<Cache<Pod>>,
    recorder: Recorder,
    expectations: Mutex<HashMap<String, Expectations>>,
}

impl<K> Ctx<K> {
    fn expectations(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectations>> {
        self.expectations.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ns_index(ns: &str) -> String {
    format!("ns/{ns}")
}

/// The informer of the owners, each change queued under its key. Made before the pod
/// informer, whose handler looks owners up by selector.
pub fn owners<K: ReplicaKind>(client: &Client, queue: Arc<Queue<String>>) -> Arc<Cache<K>> {
    informer(
        Api::<K>::all(client.clone()),
        watch_config(),
        Some(Box::new(|o: &K| {
            vec![ns_index(&o.namespace().unwrap_or_default())]
        })),
        move |ch| match ch {
            Change::Upsert { new, .. } => queue.add(key_of(new.as_ref())),
            Change::Delete(o) => queue.add(key_of(o.as_ref())),
        },
    )
}

fn is_kind<K: ReplicaKind>(
    r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> bool {
    let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    r.kind == K::kind(&()) && group == K::group(&())
}

/// Queue the owners a pod change concerns: the pod's controller before and after, and,
/// when the pod is (newly) an orphan or its labels changed, every owner in its namespace
/// whose selector now matches it, which may adopt it.
pub fn on_pod_change<K: ReplicaKind>(q: &Queue<String>, owners: &Cache<K>, ch: &Change<'_, Pod>) {
    for p in ch.states() {
        if let Some(r) = controller_ref(&p.metadata).filter(|r| is_kind::<K>(r)) {
            q.add(format!("{}/{}", p.namespace().unwrap_or_default(), r.name));
        }
    }
    let Change::Upsert { new, old } = ch else {
        return;
    };
    if controller_ref(&new.metadata).is_some() {
        return;
    }
    let relevant =
        old.is_none_or(|o| o.labels() != new.labels() || controller_ref(&o.metadata).is_some());
    if !relevant {
        return;
    }
    let ns = new.namespace().unwrap_or_default();
    for o in owners.by_index(&ns_index(&ns)) {
        if o.selects(new.labels()) {
            q.add(key_of(o.as_ref()));
        }
    }
}

/// Run the controller of `K` over the shared pod cache; `queue` is the one [`owners`]
/// and [`on_pod_change`] feed.
pub async fn run<K: ReplicaKind>(
    client: Client,
    recorder: Recorder,
    queue: Arc<Queue<String>>,
    owners: Arc<Cache<K>>,
    pods: Arc<Cache<Pod>>,
) -> anyhow::Result<()> {
    owners.wait_synced().await;
    pods.wait_synced().await;
    let ctx = Arc::new(Ctx {
        client,
        owners,
        pods,
        recorder,
        expectations: Mutex::new(HashMap::new()),
    });
    queue
        .run(WORKERS, K::CONTROLLER, move |key: String| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, &key).await }
        })
        .await;
    Ok(())
}

async fn reconcile<K: ReplicaKind>(ctx: &Ctx<K>, key: &str) -> anyhow::Result<Action> {
    let Some(owner) = ctx.owners.get(key) else {
        ctx.expectations().remove(key);
        return Ok(Action::Done);
    };
    let claimed = claim_pods(ctx, &owner).await?;
    let failed = match owner.meta().deletion_timestamp {
        None => manage(ctx, key, &owner, &claimed).await.err(),
        Some(_) => None,
    };
    let counts = write_status(ctx, &owner, &claimed).await?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    // Pods that are ready but not yet available for minReadySeconds need a later look.
    let min_ready = owner.min_ready_seconds();
    if counts.ready > counts.available && min_ready > 0 {
        return Ok(Action::RequeueAfter(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::Done)
}

/// The active pods the owner controls after adopting and releasing by its selector.
/// Pods owned by other controllers are never candidates, so only the owner's own pods
/// and the namespace's orphans are looked at.
async fn claim_pods<K: ReplicaKind>(ctx: &Ctx<K>, owner: &K) -> anyhow::Result<Vec<Arc<Pod>>> {
    let uid = owner.uid().unwrap_or_default();
    let ns = owner.namespace().unwrap_or_default();
    let candidates = ctx
        .pods
        .by_index(&format!("owner/{uid}"))
        .into_iter()
        .chain(ctx.pods.by_index(&format!("orphan/{ns}")))
        .filter(|p| is_active(p));
    let claimed = RefManager::new(&ctx.client, owner)
        .claim(candidates, |p: &Pod| owner.selects(p.labels()))
        .await?;
    Ok(claimed)
}

/// Create or delete pods towards `spec.replicas`, counting what is already under way.
async fn manage<K: ReplicaKind>(
    ctx: &Ctx<K>,
    key: &str,
    owner: &K,
    claimed: &[Arc<Pod>],
) -> Result<(), kube::Error> {
    let want = owner.replicas().max(0) as usize;
    let (pending_creates, pending_deletes) = {
        let present: HashSet<String> = ctx
            .pods
            .by_index(&format!("owner/{}", owner.uid().unwrap_or_default()))
            .iter()
            .chain(claimed)
            .map(|p| p.name_any())
            .collect();
        let live: HashSet<String> = claimed.iter().map(|p| p.name_any()).collect();
        let mut all = ctx.expectations();
        let e = all.entry(key.to_string()).or_default();
        e.creates.retain(|n| !present.contains(n));
        e.deletes.retain(|n| live.contains(n));
        if e.since.is_some_and(|t| t.elapsed() > EXPECTATION_TTL) {
            e.creates.clear();
            e.deletes.clear();
        }
        (e.creates.len(), e.deletes.clone())
    };
    let counted: Vec<&Arc<Pod>> = claimed
        .iter()
        .filter(|p| !pending_deletes.contains(&p.name_any()))
        .collect();
    let have = counted.len() + pending_creates;
    if have < want {
        create_pods(ctx, key, owner, want - have).await
    } else if have > want {
        let mut victims = counted;
        victims.sort_by_key(|p| rank_for_deletion(p));
        victims.truncate(have - want);
        delete_pods(ctx, key, owner, &victims).await
    } else {
        Ok(())
    }
}

async fn create_pods<K: ReplicaKind>(
    ctx: &Ctx<K>,
    key: &str,
    owner: &K,
    n: usize,
) -> Result<(), kube::Error> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default").to_string();
    let template = owner.template().cloned().unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    // As the pods' generateName "<owner>-" would be named by the API server.
    let base = format!("{name}-");
    let names: Vec<String> = (0..n)
        .map(|_| spindle_meta::names::generate_name(&base))
        .collect();
    {
        let mut all = ctx.expectations();
        let e = all.entry(key.to_string()).or_default();
        e.creates.extend(names.iter().cloned());
        e.since = Some(Instant::now());
    }
    let owner_ref = owner_reference(owner);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let results: Vec<(String, Result<Pod, kube::Error>)> =
        futures::stream::iter(names.into_iter().map(|pod_name| {
            let pod = Pod {
                metadata: kube::api::ObjectMeta {
                    name: Some(pod_name.clone()),
                    namespace: Some(ns.clone()),
                    labels: tmeta.labels.clone(),
                    annotations: tmeta.annotations.clone(),
                    owner_references: Some(vec![owner_ref.clone()]),
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            let api = api.clone();
            async move { (pod_name, api.create(&PostParams::default(), &pod).await) }
        }))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let oref = object_ref(owner);
    let mut failed = None;
    for (pod_name, r) in results {
        match r {
            Ok(_) => publish(
                ctx,
                &oref,
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created pod: {pod_name}"),
            ),
            Err(e) => {
                if let Some(ex) = ctx.expectations().get_mut(key) {
                    ex.creates.remove(&pod_name);
                }
                publish(
                    ctx,
                    &oref,
                    EventType::Warning,
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                failed = Some(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

async fn delete_pods<K: ReplicaKind>(
    ctx: &Ctx<K>,
    key: &str,
    owner: &K,
    victims: &[&Arc<Pod>],
) -> Result<(), kube::Error> {
    let victims: Vec<(String, Option<String>)> =
        victims.iter().map(|p| (p.name_any(), p.uid())).collect();
    {
        let mut all = ctx.expectations();
        let e = all.entry(key.to_string()).or_default();
        e.deletes.extend(victims.iter().map(|(n, _)| n.clone()));
        e.since = Some(Instant::now());
    }
    let ns = owner.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let results: Vec<(String, Result<(), kube::Error>)> =
        futures::stream::iter(victims.into_iter().map(|(pod_name, pod_uid)| {
            let api = api.clone();
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
    let oref = object_ref(owner);
    let mut failed = None;
    for (pod_name, r) in results {
        match r {
            Ok(()) => publish(
                ctx,
                &oref,
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {pod_name}"),
            ),
            Err(e) => {
                if let Some(ex) = ctx.expectations().get_mut(key) {
                    ex.deletes.remove(&pod_name);
                }
                failed = Some(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
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

/// The counts of `pods` (the active pods the owner controls).
pub fn counts_of<K: ReplicaKind>(
    owner: &K,
    pods: &[Arc<Pod>],
    now: k8s_openapi::jiff::Timestamp,
) -> Counts {
    let min_ready = i64::from(owner.min_ready_seconds());
    let tpl_labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
    Counts {
        replicas: pods.len() as i32,
        fully_labeled: count(&|p| tpl_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v))),
        ready: count(&|p| ready_since(p).is_some()),
        available: count(&|p| is_available(p, min_ready, now)),
        observed_generation: owner.meta().generation,
    }
}

/// Write the status from what the cache shows after this pass's writes: the pods owned
/// and still selected, plus those just adopted (which the cache may not show as owned
/// yet). Returns the counts written.
async fn write_status<K: ReplicaKind>(
    ctx: &Ctx<K>,
    owner: &K,
    claimed: &[Arc<Pod>],
) -> anyhow::Result<Counts> {
    let uid = owner.uid().unwrap_or_default();
    let mut pods: Vec<Arc<Pod>> = ctx
        .pods
        .by_index(&format!("owner/{uid}"))
        .into_iter()
        .filter(|p| is_active(p) && owner.selects(p.labels()))
        .collect();
    let seen: HashSet<String> = pods.iter().map(|p| p.name_any()).collect();
    pods.extend(
        claimed
            .iter()
            .filter(|p| !seen.contains(&p.name_any()))
            .filter(|p| {
                ctx.pods
                    .get(&key_of(p.as_ref()))
                    .is_none_or(|c| is_active(&c))
            })
            .cloned(),
    );
    let counts = counts_of(owner, &pods, k8s_openapi::jiff::Timestamp::now());
    if counts != owner.counts() {
        let status = json!({
            "replicas": counts.replicas,
            "fullyLabeledReplicas": counts.fully_labeled,
            "readyReplicas": counts.ready,
            "availableReplicas": counts.available,
            "observedGeneration": counts.observed_generation.unwrap_or(0),
        });
        let ns = owner.namespace().unwrap_or_else(|| "default".into());
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &owner.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
    }
    Ok(counts)
}

fn publish<K>(ctx: &Ctx<K>, r: &ObjectReference, ty: EventType, reason: &'static str, msg: String) {
    let rec = ctx.recorder.clone();
    let r = r.clone();
    tokio::spawn(async move { rec.publish(&r, ty, reason, &msg).await });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{
        PodCondition, PodStatus, ReplicationController, ReplicationControllerSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use kube::api::ObjectMeta;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn meta(ns: &str, name: &str, l: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(labels(l)),
            ..Default::default()
        }
    }

    fn rc(ns: &str, name: &str, sel: &[(&str, &str)], min_ready: i32) -> ReplicationController {
        ReplicationController {
            metadata: meta(ns, name, &[]),
            spec: Some(ReplicationControllerSpec {
                selector: Some(labels(sel)),
                min_ready_seconds: Some(min_ready),
                template: Some(PodTemplateSpec {
                    metadata: Some(meta(ns, "", &[("app", "web"), ("tier", "front")])),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn rs(ns: &str, name: &str, sel: &[(&str, &str)]) -> ReplicaSet {
        ReplicaSet {
            metadata: meta(ns, name, &[]),
            spec: Some(ReplicaSetSpec {
                selector: LabelSelector {
                    match_labels: Some(labels(sel)),
                    ..Default::default()
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, l: &[(&str, &str)], ready_for: Option<i64>) -> Pod {
        let now = Timestamp::now();
        Pod {
            metadata: meta("default", name, l),
            spec: None,
            status: ready_for.map(|s| PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(now - SignedDuration::from_secs(s))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn owned_by(mut p: Pod, owner: &str, kind: &str, api_version: &str) -> Pod {
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: owner.into(),
            uid: format!("uid-{owner}"),
            controller: Some(true),
            ..Default::default()
        }]);
        p
    }

    #[test]
    fn a_replication_controller_selects_by_its_map_and_never_by_an_empty_one() {
        let c = rc("default", "web", &[("app", "web")], 0);
        assert!(c.selects(&labels(&[("app", "web"), ("x", "y")])));
        assert!(!c.selects(&labels(&[("app", "debug")])));
        assert!(!rc("default", "all", &[], 0).selects(&labels(&[("app", "web")])));
        let s = rs("default", "web", &[("app", "web")]);
        assert!(s.selects(&labels(&[("app", "web")])));
        assert!(!rs("default", "all", &[]).selects(&labels(&[("app", "web")])));
    }

    #[test]
    fn counts_follow_labels_readiness_and_min_ready_seconds() {
        let c = rc("default", "web", &[("app", "web")], 30);
        let pods: Vec<Arc<Pod>> = [
            pod("a", &[("app", "web"), ("tier", "front")], Some(60)),
            pod("b", &[("app", "web")], Some(5)),
            pod("c", &[("app", "web"), ("tier", "front")], None),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let counts = counts_of(&c, &pods, Timestamp::now());
        assert_eq!(
            (
                counts.replicas,
                counts.fully_labeled,
                counts.ready,
                counts.available
            ),
            (3, 2, 2, 1)
        );
    }

    fn queued(q: &Queue<String>) -> Vec<String> {
        let mut out = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        while let Ok(k) =
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(20), q.next()).await })
        {
            out.push(k);
        }
        out.sort();
        out
    }

    fn owner_cache<K: ReplicaKind>(objs: Vec<K>) -> Cache<K> {
        Cache::with_objects(
            Some(Box::new(|o: &K| {
                vec![ns_index(&o.namespace().unwrap_or_default())]
            })),
            objs,
        )
    }

    #[test]
    fn a_relabelled_orphan_wakes_the_owners_that_select_it() {
        let rcs = owner_cache(vec![
            rc("default", "web", &[("app", "web")], 0),
            rc("default", "db", &[("app", "db")], 0),
            rc("other", "web", &[("app", "web")], 0),
        ]);
        let q: Arc<Queue<String>> = Queue::new();
        let old = Arc::new(pod("p", &[("app", "debug")], None));
        let new = Arc::new(pod("p", &[("app", "web")], None));
        on_pod_change(
            &q,
            &rcs,
            &Change::Upsert {
                new: &new,
                old: Some(&old),
            },
        );
        assert_eq!(queued(&q), ["default/web"]);
        // Nothing about it changed that an owner could care for: no wake-up.
        on_pod_change(
            &q,
            &rcs,
            &Change::Upsert {
                new: &new,
                old: Some(&new),
            },
        );
        assert!(queued(&q).is_empty());
    }

    #[test]
    fn an_owned_pod_wakes_its_controller_only_if_of_the_kind() {
        let rcs = owner_cache(vec![rc("default", "web", &[("app", "web")], 0)]);
        let rss = owner_cache(vec![rs("default", "web", &[("app", "web")])]);
        let p = pod("p", &[("app", "web")], None);
        let by_rs = Arc::new(owned_by(p.clone(), "web", "ReplicaSet", "apps/v1"));
        let by_rc = Arc::new(owned_by(p, "web", "ReplicationController", "v1"));
        let (qs, qc): (Arc<Queue<String>>, Arc<Queue<String>>) = (Queue::new(), Queue::new());
        on_pod_change(&qs, &rss, &Change::Delete(&by_rc));
        on_pod_change(&qc, &rcs, &Change::Delete(&by_rc));
        assert!(queued(&qs).is_empty());
        assert_eq!(queued(&qc), ["default/web"]);
        // Released: the old controller looks again (and so does any that now selects it).
        on_pod_change(
            &qs,
            &rss,
            &Change::Upsert {
                new: &Arc::new(pod("p", &[("app", "x")], None)),
                old: Some(&by_rs),
            },
        );
        assert_eq!(queued(&qs), ["default/web"]);
    }
}
