//! The disruption controller: keeps every PodDisruptionBudget's status current — how many
//! selected pods are expected and healthy, how many must stay healthy, and so how many
//! voluntary disruptions are allowed now (`kubectl get pdb`'s ALLOWED DISRUPTIONS).
//!
//! The eviction subresource spends `status.disruptionsAllowed` one pod at a time with a
//! compare-and-swap on the budget and notes the pod in `status.disruptedPods`; this
//! controller then counts such a pod as already gone until it is deleted, or for two
//! minutes if it never is. The two together are what keep parallel evictions (as `kubectl
//! drain` sends them) from taking a workload below its budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use spindle_meta::events::{object_ref, EventType, Recorder};
use spindle_meta::selector::Matcher;

use crate::controller_ref::controller_ref;
use crate::deployment::util::scaled_value;
use crate::replicaset::is_ready;
use crate::runtime::{informer, key_of, watch_config, Action, Cache, Change, Queue};

/// How long an evicted pod counts as disrupted before it must have been deleted
/// (Kubernetes' DeletionTimeout).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

const CONDITION: &str = "DisruptionAllowed";

/// Index budgets by namespace, so a pod change finds its candidates cheaply.
pub fn pdb_index(p: &PodDisruptionBudget) -> Vec<String> {
    vec![format!("ns/{}", p.namespace().unwrap_or_default())]
}

/// Whether a budget covers a pod: a missing selector selects nothing, an empty one (in
/// policy/v1) every pod of the namespace.
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    if pdb.namespace() != pod.namespace() {
        return false;
    }
    let sel = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
    let empty = BTreeMap::new();
    Matcher::from_label_selector(sel).matches(pod.metadata.labels.as_ref().unwrap_or(&empty))
}

/// Enqueue the budgets covering a changed pod (before or after the change).
pub fn on_pod_change(q: &Queue<String>, pdbs: &Cache<PodDisruptionBudget>, ch: &Change<'_, Pod>) {
    if pdbs.is_empty() {
        return;
    }
    for p in ch.states() {
        let ns = p.namespace().unwrap_or_default();
        for pdb in pdbs.by_index(&format!("ns/{ns}")) {
            if selects(&pdb, p) {
                q.add(key_of(pdb.as_ref()));
            }
        }
    }
}

/// The budget informer, enqueueing every budget change.
pub fn budgets(client: &Client, queue: Arc<Queue<String>>) -> Arc<Cache<PodDisruptionBudget>> {
    informer(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watch_config(),
        Some(Box::new(pdb_index)),
        move |ch| match ch {
            Change::Upsert { new, .. } => queue.add(key_of(new.as_ref())),
            Change::Delete(o) => queue.add(key_of(o.as_ref())),
        },
    )
}

/// Whether the budget needs the selected pods' controllers' scale: a maxUnavailable, or a
/// percentage minAvailable, is a share of the replicas the workload asks for, not of the
/// pods that happen to exist.
fn needs_scale(pdb: &PodDisruptionBudget) -> bool {
    let spec = pdb.spec.as_ref();
    spec.is_some_and(|s| {
        s.max_unavailable.is_some() || matches!(s.min_available, Some(IntOrString::String(_)))
    })
}

/// (expected pods, desired healthy) from the spec, the number of selected pods and, where
/// [`needs_scale`], the controllers' total scale.
pub fn expected_and_desired(
    pdb: &PodDisruptionBudget,
    pods: i32,
    scale: i32,
) -> Result<(i32, i32), String> {
    let spec = pdb.spec.as_ref();
    if let Some(max) = spec.and_then(|s| s.max_unavailable.as_ref()) {
        let max = scaled_value(Some(max), scale, true)?;
        return Ok((scale, scale.saturating_sub(max).max(0)));
    }
    match spec.and_then(|s| s.min_available.as_ref()) {
        Some(IntOrString::Int(n)) => Ok((pods, *n)),
        Some(p @ IntOrString::String(_)) => Ok((scale, scaled_value(Some(p), scale, true)?)),
        None => Ok((0, 0)),
    }
}

/// The disrupted-pods map carried forward: entries for selected pods that are not yet
/// being deleted and whose timeout has not passed. Returns it and how long until the
/// earliest remaining entry times out.
pub fn carried_disruptions(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Duration>) {
    let mut out = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    let Some(prev) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return (out, None);
    };
    let timeout = SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or(SignedDuration::MAX);
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = p.name_any();
        let Some(at) = prev.get(&name) else { continue };
        let left = at.0.duration_since(now) + timeout;
        if left.is_positive() {
            let left = Duration::try_from(left).unwrap_or(DELETION_TIMEOUT);
            recheck = Some(recheck.map_or(left, |r| r.min(left)));
            out.insert(name, at.clone());
        }
    }
    (out, recheck)
}

/// Selected pods that count as healthy: Ready, not being deleted, not just evicted.
pub fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| is_ready(p))
        .count() as i32
}

/// Set the DisruptionAllowed condition from `status.disruptionsAllowed` (or to a sync
/// failure), keeping its transition time when the status does not change.
pub fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    failure: Option<&str>,
    now: Timestamp,
) {
    let (value, reason, message) = match failure {
        Some(msg) => ("False", "SyncFailed", msg.to_string()),
        None if status.disruptions_allowed > 0 => ("True", "SufficientPods", String::new()),
        None => ("False", "InsufficientPods", String::new()),
    };
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let prior = conds.iter().position(|c| c.type_ == CONDITION);
    let transition = match prior.map(|i| &conds[i]) {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let cond = Condition {
        type_: CONDITION.into(),
        status: value.into(),
        reason: reason.into(),
        message,
        observed_generation: status.observed_generation,
        last_transition_time: transition,
    };
    match prior {
        Some(i) => conds[i] = cond,
        None => conds.push(cond),
    }
}

/// The desired replicas of each pod's controller (ReplicaSet, ReplicationController,
/// StatefulSet), summed once per controller (a ReplicaSet of a Deployment counts as the
/// Deployment). Pods without a controller are returned by name; they cannot count
/// towards a share.
async fn expected_scale(
    client: &Client,
    ns: &str,
    pods: &[Arc<Pod>],
) -> Result<(i32, Vec<String>), String> {
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), ns);
    let mut scale: HashMap<String, i32> = HashMap::new();
    // Controller uid -> the uid its scale was counted under (a Deployment's for its sets).
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut unmanaged = Vec::new();
    let lookup_err = |e: kube::Error| e.to_string();
    for p in pods {
        let Some(owner) = controller_ref(&p.metadata) else {
            unmanaged.push(p.name_any());
            continue;
        };
        if seen.contains_key(&owner.uid) {
            continue;
        }
        let found: Option<(String, i32)> = match owner.kind.as_str() {
            "ReplicaSet" => match rss.get_opt(&owner.name).await.map_err(lookup_err)? {
                Some(rs) if rs.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                    match controller_ref(&rs.metadata).filter(|r| r.kind == "Deployment") {
                        Some(d) => deploys
                            .get_opt(&d.name)
                            .await
                            .map_err(lookup_err)?
                            .filter(|dep| dep.metadata.uid.as_deref() == Some(d.uid.as_str()))
                            .map(|dep| {
                                let n = dep.spec.and_then(|s| s.replicas).unwrap_or(1);
                                (d.uid.clone(), n)
                            }),
                        None => Some((
                            owner.uid.clone(),
                            rs.spec.and_then(|s| s.replicas).unwrap_or(1),
                        )),
                    }
                }
                _ => None,
            },
            "ReplicationController" => rcs
                .get_opt(&owner.name)
                .await
                .map_err(lookup_err)?
                .filter(|rc| rc.metadata.uid.as_deref() == Some(owner.uid.as_str()))
                .map(|rc| {
                    (
                        owner.uid.clone(),
                        rc.spec.and_then(|s| s.replicas).unwrap_or(1),
                    )
                }),
            "StatefulSet" => sets
                .get_opt(&owner.name)
                .await
                .map_err(lookup_err)?
                .filter(|s| s.metadata.uid.as_deref() == Some(owner.uid.as_str()))
                .map(|s| {
                    (
                        owner.uid.clone(),
                        s.spec.and_then(|s| s.replicas).unwrap_or(1),
                    )
                }),
            _ => None,
        };
        let Some((uid, n)) = found else {
            return Err(format!("found no controllers for pod {:?}", p.name_any()));
        };
        seen.insert(owner.uid.clone(), uid.clone());
        scale.insert(uid, n);
    }
    Ok((
        crate::deployment::util::sum_counts(scale.values().copied()),
        unmanaged,
    ))
}

struct Ctx {
    client: Client,
    pdbs: Arc<Cache<PodDisruptionBudget>>,
    pods: Arc<Cache<Pod>>,
    recorder: Recorder,
}

/// Write `status` over the cached budget: a compare-and-swap on its resourceVersion, so
/// a decrement by an eviction in between is never overwritten (the write fails with 409
/// and the budget is synced again from the newer object).
async fn write_status(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), kube::Error> {
    if pdb.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut next = pdb.clone();
    next.status = Some(status);
    let api: Api<PodDisruptionBudget> =
        Api::namespaced(ctx.client.clone(), &pdb.namespace().unwrap_or_default());
    api.replace_status(&pdb.name_any(), &PostParams::default(), &next)
        .await
        .map(drop)
}

async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action, kube::Error> {
    let Some(pdb) = ctx.pdbs.get(&key) else {
        return Ok(Action::Done);
    };
    let ns = pdb.namespace().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .by_index(&format!("ns/{ns}"))
        .into_iter()
        .filter(|p| selects(&pdb, p))
        .collect();
    let now = Timestamp::now();
    let generation = pdb.metadata.generation;
    let counts = if needs_scale(&pdb) {
        match expected_scale(&ctx.client, &ns, &pods).await {
            Ok((scale, unmanaged)) => {
                if !unmanaged.is_empty() {
                    ctx.recorder
                        .publish(
                            &object_ref(pdb.as_ref()),
                            EventType::Warning,
                            "UnmanagedPods",
                            "Pods selected by this PodDisruptionBudget were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                        )
                        .await;
                }
                expected_and_desired(&pdb, pods.len() as i32, scale)
            }
            Err(e) => Err(e),
        }
    } else {
        expected_and_desired(&pdb, pods.len() as i32, 0)
    };
    let (expected, desired) = match counts {
        Ok(c) => c,
        Err(msg) => {
            // Fail safe: no disruption is allowed while the budget cannot be computed.
            ctx.recorder
                .publish(
                    &object_ref(pdb.as_ref()),
                    EventType::Warning,
                    "CalculateExpectedPodCountFailed",
                    &format!("Failed to calculate the number of expected pods: {msg}"),
                )
                .await;
            let mut status = pdb.status.clone().unwrap_or_default();
            status.disruptions_allowed = 0;
            set_condition(&mut status, Some(&msg), now);
            write_status(&ctx, &pdb, status).await?;
            return Ok(Action::Done);
        }
    };
    let (disrupted, recheck) = carried_disruptions(&pdb, &pods, now);
    let healthy = count_healthy(&pods, &disrupted);
    // A budget whose pods have not appeared yet allows nothing, so its first pods are safe
    // before this controller has seen them.
    let allowed = if expected <= 0 {
        0
    } else {
        healthy.saturating_sub(desired).max(0)
    };
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: generation,
        conditions: pdb.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    set_condition(&mut status, None, now);
    write_status(&ctx, &pdb, status).await?;
    Ok(match recheck {
        Some(after) => Action::RequeueAfter(after),
        None => Action::Done,
    })
}

/// Run the controller; `queue` is fed by [`budgets`] and, through [`on_pod_change`], by
/// the shared pod informer.
pub async fn run(
    client: Client,
    recorder: Recorder,
    queue: Arc<Queue<String>>,
    pdbs: Arc<Cache<PodDisruptionBudget>>,
    pods: Arc<Cache<Pod>>,
) -> anyhow::Result<()> {
    pdbs.wait_synced().await;
    pods.wait_synced().await;
    for p in pdbs.list() {
        queue.add(key_of(p.as_ref()));
    }
    let ctx = Arc::new(Ctx {
        client,
        pdbs,
        pods,
        recorder,
    });
    queue
        .run(2, "disruption", move |key| reconcile(ctx.clone(), key))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: kube::api::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, app: &str, ready: bool) -> Arc<Pod> {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .expect("pod");
        Arc::new(p)
    }

    #[test]
    fn expected_and_desired_follow_kubernetes() {
        let int = |n| Some(IntOrString::Int(n));
        let pct = |s: &str| Some(IntOrString::String(s.into()));
        // minAvailable as a number counts the pods that exist.
        assert_eq!(expected_and_desired(&pdb(int(2), None), 3, 5), Ok((3, 2)));
        // Percentages and maxUnavailable are shares of the controllers' scale, rounded up.
        assert_eq!(
            expected_and_desired(&pdb(pct("50%"), None), 3, 5),
            Ok((5, 3))
        );
        assert_eq!(expected_and_desired(&pdb(None, int(1)), 3, 4), Ok((4, 3)));
        assert_eq!(
            expected_and_desired(&pdb(None, pct("30%")), 3, 4),
            Ok((4, 2))
        );
        assert_eq!(expected_and_desired(&pdb(None, int(9)), 3, 4), Ok((4, 0)));
        assert!(expected_and_desired(&pdb(None, pct("x")), 3, 4).is_err());
    }

    #[test]
    fn selection_and_health() {
        let b = pdb(Some(IntOrString::Int(1)), None);
        assert!(selects(&b, &pod("a", "web", true)));
        assert!(!selects(&b, &pod("b", "db", true)));
        let mut all = b.clone();
        all.spec.as_mut().expect("spec").selector = Some(LabelSelector::default());
        assert!(selects(&all, &pod("b", "db", true)), "empty selects all");
        let mut none = b.clone();
        none.spec.as_mut().expect("spec").selector = None;
        assert!(
            !selects(&none, &pod("a", "web", true)),
            "missing selects none"
        );

        let pods = vec![
            pod("a", "web", true),
            pod("b", "web", true),
            pod("c", "web", false),
        ];
        let disrupted: BTreeMap<String, Time> = [("b".to_string(), Time(Timestamp::now()))].into();
        assert_eq!(count_healthy(&pods, &BTreeMap::new()), 2);
        assert_eq!(
            count_healthy(&pods, &disrupted),
            1,
            "an evicted pod is not healthy"
        );
    }

    #[test]
    fn disruptions_expire_and_follow_deletion() {
        let now = Timestamp::now();
        let mut b = pdb(Some(IntOrString::Int(1)), None);
        let ago = |s: i64| Time(now - SignedDuration::from_secs(s));
        b.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(
                [
                    ("fresh".to_string(), ago(30)),
                    ("stale".to_string(), ago(300)),
                    ("deleting".to_string(), ago(10)),
                    ("gone".to_string(), ago(10)),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let mut deleting = (*pod("deleting", "web", true)).clone();
        deleting.metadata.deletion_timestamp = Some(Time(now));
        let pods = vec![
            pod("fresh", "web", true),
            pod("stale", "web", true),
            Arc::new(deleting),
        ];
        let (kept, recheck) = carried_disruptions(&b, &pods, now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["fresh"]);
        let recheck = recheck.expect("a recheck for the fresh entry");
        assert!(recheck <= Duration::from_secs(90) && recheck >= Duration::from_secs(89));
    }

    #[test]
    fn condition_keeps_its_transition_time() {
        let t0 = Timestamp::now() - SignedDuration::from_secs(60);
        let mut s = PodDisruptionBudgetStatus {
            disruptions_allowed: 1,
            ..Default::default()
        };
        set_condition(&mut s, None, t0);
        set_condition(&mut s, None, Timestamp::now());
        let c = &s.conditions.as_ref().expect("conditions")[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "SufficientPods")
        );
        assert_eq!(c.last_transition_time, Time(t0));
        s.disruptions_allowed = 0;
        set_condition(&mut s, None, Timestamp::now());
        let c = &s.conditions.as_ref().expect("conditions")[0];
        assert_eq!(c.reason, "InsufficientPods");
        assert_ne!(c.last_transition_time, Time(t0));
    }
}
