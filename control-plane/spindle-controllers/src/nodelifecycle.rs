//! Node lifecycle: nodes whose Lease stops being renewed become NotReady (conditions
//! Unknown) and get the `node.kubernetes.io/unreachable` taints; pods on tainted nodes
//! are evicted once their toleration runs out (taint-based eviction) so their controllers
//! re-create them elsewhere; pods bound to nodes that no longer exist are removed (pod GC).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use spindle_meta::events::{EventType, Recorder};

use crate::runtime::{informer, watch_config, Cache};
use crate::Options;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// How often node health is evaluated.
const MONITOR_PERIOD: Duration = Duration::from_secs(2);
/// How often orphaned pods are collected.
const POD_GC_PERIOD: Duration = Duration::from_secs(10);

struct Ctx {
    client: Client,
    nodes: Arc<Cache<Node>>,
    leases: Leases,
    pods: Arc<Cache<Pod>>,
    recorder: Recorder,
    opts: Options,
}

/// The node Leases: listed and watched through `informers`, the shared informers'
/// identity (as Kubernetes' node controller reads them from the shared informer), and
/// read afresh before a node is declared dead through `client`, the controller's own.
pub fn leases(informers: &Client, client: &Client) -> Leases {
    Leases {
        cache: informer(
            Api::<Lease>::namespaced(informers.clone(), NODE_LEASES),
            watch_config(),
            None,
            |_| {},
        ),
        api: Api::namespaced(client.clone(), NODE_LEASES),
    }
}

const NODE_LEASES: &str = "kube-node-lease";

#[derive(Clone)]
pub struct Leases {
    cache: Arc<Cache<Lease>>,
    api: Api<Lease>,
}

pub async fn run(
    client: Client,
    recorder: Recorder,
    opts: Options,
    pods: Arc<Cache<Pod>>,
    leases: Leases,
) -> anyhow::Result<()> {
    let nodes = informer(
        Api::<Node>::all(client.clone()),
        watch_config(),
        None,
        |_| {},
    );
    nodes.wait_synced().await;
    leases.cache.wait_synced().await;
    pods.wait_synced().await;
    let ctx = Ctx {
        client,
        nodes,
        leases,
        pods,
        recorder,
        opts,
    };
    // Nodes get one grace period after a control-plane start before being judged, as
    // Kubernetes does, so a restart does not mark every node NotReady.
    let started = Timestamp::now();
    let mut monitor = tokio::time::interval(MONITOR_PERIOD);
    let mut gc = tokio::time::interval(POD_GC_PERIOD);
    loop {
        tokio::select! {
            _ = monitor.tick() => {
                if let Err(e) = monitor_nodes(&ctx, started).await {
                    tracing::debug!(error = %e, "node monitor pass failed");
                }
                if let Err(e) = evict_from_tainted_nodes(&ctx).await {
                    tracing::debug!(error = %e, "taint eviction pass failed");
                }
            }
            _ = gc.tick() => {
                if let Err(e) = collect_orphaned_pods(&ctx).await {
                    tracing::debug!(error = %e, "pod GC pass failed");
                }
            }
        }
    }
}

fn ready_condition(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// Last sign of life: the Lease's renewTime, else the Ready condition's heartbeat.
fn last_heartbeat(ctx: &Ctx, n: &Node) -> Option<Timestamp> {
    let lease = ctx
        .leases
        .cache
        .get(&format!("kube-node-lease/{}", n.name_any()));
    let from_lease = lease.and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let from_status = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    match (from_lease, from_status) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn has_taint(n: &Node, key: &str, effect: &str) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == effect))
}

async fn set_taints(ctx: &Ctx, n: &Node, add: &[&str], remove: &[&str]) -> kube::Result<()> {
    let mut taints: Vec<Taint> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let before = taints.clone();
    taints.retain(|t| !remove.contains(&t.key.as_str()));
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
    for key in add {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == *key && t.effect == effect) {
                taints.push(Taint {
                    key: key.to_string(),
                    effect: effect.to_string(),
                    time_added: (effect == "NoExecute").then(|| now.clone()),
                    value: None,
                });
            }
        }
    }
    if taints == before {
        return Ok(());
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    // A JSON merge patch replaces the list whole, which is what a taint update needs.
    api.patch(
        &n.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"taints": taints}})),
    )
    .await?;
    Ok(())
}

async fn mark_unknown(ctx: &Ctx, n: &Node) -> kube::Result<()> {
    let now = Timestamp::now().to_string();
    let conds: Vec<serde_json::Value> = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let changed = c.status != "Unknown";
            json!({
                "type": c.type_, "status": "Unknown", "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
                "lastHeartbeatTime": c.last_heartbeat_time,
                "lastTransitionTime": if changed { json!(now) } else { json!(c.last_transition_time) },
            })
        })
        .collect();
    let api: Api<Node> = Api::all(ctx.client.clone());
    api.patch_status(
        &n.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"conditions": conds}})),
    )
    .await?;
    Ok(())
}

/// Pods on a node that stopped reporting are no longer known to be Ready (Kubernetes'
/// MarkPodsNotReady), so Services and Deployments stop counting them at once.
async fn mark_pods_not_ready(ctx: &Ctx, n: &Node) {
    let now = Timestamp::now().to_string();
    for p in ctx.pods.by_index(&format!("node/{}", n.name_any())) {
        let Some(conds) = p.status.as_ref().and_then(|s| s.conditions.clone()) else {
            continue;
        };
        if !conds
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
        {
            continue;
        }
        let conds: Vec<serde_json::Value> = conds
            .into_iter()
            .map(|c| {
                if c.type_ == "Ready" || c.type_ == "ContainersReady" {
                    json!({"type": c.type_, "status": "False", "reason": "NodeNotReady", "lastTransitionTime": now, "lastProbeTime": null})
                } else {
                    serde_json::to_value(&c).unwrap_or_default()
                }
            })
            .collect();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
        if let Err(e) = api
            .patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"conditions": conds}})),
            )
            .await
        {
            tracing::debug!(pod = %p.name_any(), error = %e, "could not mark pod not ready");
        }
    }
}

async fn monitor_nodes(ctx: &Ctx, started: Timestamp) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let grace = ctx.opts.node_monitor_grace_period.as_secs() as i64;
    let warmed_up = now.as_second() - started.as_second() >= grace;
    for n in ctx.nodes.list() {
        let ready = ready_condition(&n);
        let stale = last_heartbeat(ctx, &n).is_none_or(|t| now.as_second() - t.as_second() > grace);
        if stale && warmed_up {
            if ready.as_deref() != Some("Unknown") {
                // The cache may lag under load: confirm with a fresh read before
                // declaring a node dead.
                let fresh = ctx
                    .leases
                    .api
                    .get_opt(&n.name_any())
                    .await?
                    .and_then(|l| l.spec?.renew_time.map(|t| t.0));
                if fresh.is_some_and(|t| now.as_second() - t.as_second() <= grace) {
                    continue;
                }
                tracing::info!(node = %n.name_any(), "node stopped renewing its lease; marking NotReady");
                mark_unknown(ctx, &n).await?;
                mark_pods_not_ready(ctx, &n).await;
                let r = spindle_meta::events::object_ref(n.as_ref());
                ctx.recorder
                    .publish(
                        &r,
                        EventType::Normal,
                        "NodeNotReady",
                        &format!("Node {} status is now: NodeNotReady", n.name_any()),
                    )
                    .await;
            }
            if !has_taint(&n, UNREACHABLE, "NoExecute") {
                set_taints(ctx, &n, &[UNREACHABLE], &[NOT_READY]).await?;
            }
        } else if !stale {
            let unreachable = has_taint(&n, UNREACHABLE, "NoExecute");
            let not_ready = has_taint(&n, NOT_READY, "NoExecute");
            match ready.as_deref() {
                Some("True") if unreachable || not_ready => {
                    set_taints(ctx, &n, &[], &[UNREACHABLE, NOT_READY]).await?;
                }
                Some("False") if !not_ready => {
                    set_taints(ctx, &n, &[NOT_READY], &[UNREACHABLE]).await?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => tol
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            tol.key.as_deref() == Some(taint.key.as_str())
                && tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// When a pod must leave a node with these NoExecute taints: None = never, Some(t) = at t.
pub fn eviction_time(pod: &Pod, taints: &[Taint]) -> Option<i64> {
    let tols: Vec<Toleration> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut deadline: Option<i64> = None;
    for t in taints.iter().filter(|t| t.effect == "NoExecute") {
        let added = t
            .time_added
            .as_ref()
            .map(|x| x.0.as_second())
            .unwrap_or_else(|| Timestamp::now().as_second());
        let matching: Vec<&Toleration> = tols.iter().filter(|tol| tolerates(tol, t)).collect();
        let at = if matching.is_empty() {
            added
        } else if matching.iter().any(|tol| tol.toleration_seconds.is_none()) {
            continue;
        } else {
            // tolerationSeconds is the user's: saturate rather than overflow.
            added.saturating_add(
                matching
                    .iter()
                    .filter_map(|tol| tol.toleration_seconds)
                    .min()
                    .unwrap_or(0)
                    .max(0),
            )
        };
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    deadline
}

async fn evict_from_tainted_nodes(ctx: &Ctx) -> anyhow::Result<()> {
    let now = Timestamp::now().as_second();
    for n in ctx.nodes.list() {
        let taints: Vec<Taint> = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if !taints.iter().any(|t| t.effect == "NoExecute") {
            continue;
        }
        for p in ctx.pods.by_index(&format!("node/{}", n.name_any())) {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if eviction_time(&p, &taints).is_some_and(|at| at <= now) {
                let ns = p.namespace().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: p.uid(),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match api.delete(&p.name_any(), &dp).await {
                    Ok(_) => {
                        tracing::info!(pod = %format!("{ns}/{}", p.name_any()), node = %n.name_any(), "evicted pod from tainted node");
                        let r = spindle_meta::events::object_ref(p.as_ref());
                        let rec = ctx.recorder.clone();
                        tokio::spawn(async move {
                            rec.publish(
                                &r,
                                EventType::Normal,
                                "TaintManagerEviction",
                                "Marking for deletion Pod",
                            )
                            .await
                        });
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

async fn collect_orphaned_pods(ctx: &Ctx) -> anyhow::Result<()> {
    let nodes: HashMap<String, ()> = ctx
        .nodes
        .list()
        .into_iter()
        .map(|n| (n.name_any(), ()))
        .collect();
    for p in ctx.pods.list() {
        let Some(node) = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        if nodes.contains_key(&node) {
            continue;
        }
        // Re-check the node directly: the cache may simply be behind.
        let api: Api<Node> = Api::all(ctx.client.clone());
        if api.get_opt(&node).await?.is_some() {
            continue;
        }
        let ns = p.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: p.uid(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match pods.delete(&p.name_any(), &dp).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{}", p.name_any()), node = %node, "deleted pod bound to a node that no longer exists")
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taint(key: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(
                Timestamp::from_second(added).unwrap_or(Timestamp::UNIX_EPOCH),
            )),
            value: None,
        }
    }

    fn pod(tols: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tols),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn eviction_follows_tolerations() {
        let t = [taint(UNREACHABLE, 1000)];
        assert_eq!(
            eviction_time(&pod(vec![]), &t),
            Some(1000),
            "no toleration: evict at once"
        );
        let tol = Toleration {
            key: Some(UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(300),
            value: None,
        };
        assert_eq!(eviction_time(&pod(vec![tol]), &t), Some(1300));
        let forever = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert_eq!(
            eviction_time(&pod(vec![forever]), &t),
            None,
            "tolerates everything forever"
        );
        let other = Toleration {
            key: Some("x".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert_eq!(eviction_time(&pod(vec![other]), &t), Some(1000));
    }
}
