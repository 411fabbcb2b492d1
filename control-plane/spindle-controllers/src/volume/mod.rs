//! The PersistentVolume binder, as kube-controller-manager's persistentvolume-controller
//! (with its pvc-protection and pv-protection controllers folded in): binds claims to
//! volumes (static matching in `matching.rs`, pre-bound volumes and claims), provisions
//! leaves provisioning to the class's provisioner (`provision.rs`), moves volumes through Pending, Available,
//! Bound, Released and Failed, reclaims Released volumes (Retain keeps them; Delete is
//! the provisioner's, and a volume without one Fails, as in Kubernetes), and lets a claim or volume with a protection finalizer go
//! only when nothing uses it.
//!
//! One queue holds both kinds, keyed `pvc/<namespace>/<name>` and `pv/<name>`. A claim
//! that is not bound is looked at again every [`RESYNC`], as Kubernetes' periodic sync
//! does, so a volume created later is found and the "nothing matches" event counts up.

mod matching;
mod provision;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use spindle_meta::events::{object_ref, EventType, Recorder};
use spindle_meta::storage::{
    BIND_COMPLETED, BOUND_BY_CONTROLLER, PVC_PROTECTION, PV_PROTECTION, SELECTED_NODE,
};

use crate::runtime::{informer, key_of, watch_config, Action, Cache, Change, Queue};
pub use matching::{best_match, bound_to, claim_class, node_fits, satisfies, ForNode};

/// The component events are recorded under.
pub const COMPONENT: &str = "persistentvolume-controller";
/// kube-controller-manager's --pvclaimbinder-sync-period.
const RESYNC: Duration = Duration::from_secs(15);
/// A StatefulSet's claims come in a burst and each binding is a few writes that its
/// pod waits for; the queue keeps one key on one worker at a time.
const WORKERS: usize = 16;

/// The binder's caches.
#[derive(Clone)]
pub struct Caches {
    pub claims: Arc<Cache<PersistentVolumeClaim>>,
    pub volumes: Arc<Cache<PersistentVolume>>,
    pub classes: Arc<Cache<StorageClass>>,
    pub nodes: Arc<Cache<Node>>,
}

fn claim_key(ns: &str, name: &str) -> String {
    format!("pvc/{ns}/{name}")
}

fn volume_key(name: &str) -> String {
    format!("pv/{name}")
}

/// The informers, each queueing what a change concerns: the binder's `queue`, and the
/// changed claims' keys on `provisioner` (the local-path provisioner's queue).
pub fn caches(
    client: &Client,
    queue: Arc<Queue<String>>,
    provisioner: Arc<Queue<String>>,
) -> Caches {
    let q = queue.clone();
    let claims = informer(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            for c in ch.states() {
                let key = key_of(c.as_ref());
                q.add(format!("pvc/{key}"));
                provisioner.add(key);
                if let Some(v) = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
                    q.add(volume_key(v));
                }
            }
        },
    );
    let q = queue.clone();
    let volumes = informer(
        Api::<PersistentVolume>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            for v in ch.states() {
                q.add(volume_key(&key_of(v.as_ref())));
                if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                    if let (Some(ns), Some(n)) = (&r.namespace, &r.name) {
                        q.add(claim_key(ns, n));
                    }
                }
            }
        },
    );
    let classes = informer(
        Api::<StorageClass>::all(client.clone()),
        watch_config(),
        None,
        |_| {},
    );
    let nodes = informer(
        Api::<Node>::all(client.clone()),
        watch_config(),
        None,
        |_| {},
    );
    Caches {
        claims,
        volumes,
        classes,
        nodes,
    }
}

/// The claims a pod names (its `persistentVolumeClaim` volumes and the claims of its
/// generic ephemeral volumes, `<pod>-<volume>`).
pub fn pod_claims(pod: &Pod) -> Vec<String> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let vols = pod.spec.as_ref().and_then(|s| s.volumes.as_deref());
    vols.into_iter()
        .flatten()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => Some(c.claim_name.clone()),
            (None, Some(_)) => Some(format!("{name}-{}", v.name)),
            _ => None,
        })
        .collect()
}

/// Pod changes matter to the claims they name: protection waits for the pods, and a
/// delayed claim's event names the pods waiting to be scheduled.
pub fn on_pod_change(queue: &Queue<String>, ch: &Change<'_, Pod>) {
    for pod in ch.states() {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        for c in pod_claims(pod) {
            queue.add(claim_key(ns, &c));
        }
    }
}

struct Ctx {
    client: Client,
    events: Recorder,
    caches: Caches,
    pods: Arc<Cache<Pod>>,
    queue: Arc<Queue<String>>,
}

/// Run the binder: everything cached is looked at once, then on changes.
pub async fn run(
    client: Client,
    events: Recorder,
    queue: Arc<Queue<String>>,
    caches: Caches,
    pods: Arc<Cache<Pod>>,
) -> anyhow::Result<()> {
    caches.claims.wait_synced().await;
    caches.volumes.wait_synced().await;
    caches.classes.wait_synced().await;
    caches.nodes.wait_synced().await;
    pods.wait_synced().await;
    for c in caches.claims.list() {
        queue.add(format!("pvc/{}", key_of(c.as_ref())));
    }
    for v in caches.volumes.list() {
        queue.add(volume_key(&key_of(v.as_ref())));
    }
    let ctx = Arc::new(Ctx {
        client,
        events,
        caches,
        pods,
        queue: queue.clone(),
    });
    queue
        .run(WORKERS, COMPONENT, move |key| reconcile(ctx.clone(), key))
        .await;
    Ok(())
}

async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action, kube::Error> {
    if let Some(name) = key.strip_prefix("pv/") {
        let Some(pv) = ctx.caches.volumes.get(name) else {
            return Ok(Action::Done);
        };
        return sync_volume(&ctx, &pv).await;
    }
    let Some(k) = key.strip_prefix("pvc/") else {
        return Ok(Action::Done);
    };
    let Some(claim) = ctx.caches.claims.get(k) else {
        return Ok(Action::Done);
    };
    if claim.metadata.deletion_timestamp.is_some() {
        release_claim_finalizer(&ctx, &claim).await?;
        return Ok(Action::Done);
    }
    if has_annotation(&claim.metadata, BIND_COMPLETED) {
        sync_bound_claim(&ctx, &claim).await
    } else {
        sync_unbound_claim(&ctx, &claim).await
    }
}

fn has_annotation(meta: &kube::api::ObjectMeta, key: &str) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

fn ns_name(claim: &PersistentVolumeClaim) -> (&str, &str) {
    (
        claim.metadata.namespace.as_deref().unwrap_or(""),
        claim.metadata.name.as_deref().unwrap_or(""),
    )
}

fn claims_api(ctx: &Ctx, ns: &str) -> Api<PersistentVolumeClaim> {
    Api::namespaced(ctx.client.clone(), ns)
}

fn volumes_api(ctx: &Ctx) -> Api<PersistentVolume> {
    Api::all(ctx.client.clone())
}

async fn claim_event(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    ty: EventType,
    reason: &str,
    msg: &str,
) {
    ctx.events
        .publish(&object_ref(claim), ty, reason, msg)
        .await;
}

/// A patch that changes nothing on a deleted or changed object is not an error worth
/// a retry loop: the watch brings the new state, which is looked at again.
fn gone_or_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

async fn patch_claim(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    patch: Value,
    status: bool,
) -> Result<(), kube::Error> {
    let (ns, name) = ns_name(claim);
    merge_patch(claims_api(ctx, ns), name, patch, status).await
}

async fn patch_volume(
    ctx: &Ctx,
    pv: &PersistentVolume,
    patch: Value,
    status: bool,
) -> Result<(), kube::Error> {
    let name = pv.metadata.name.as_deref().unwrap_or("");
    merge_patch(volumes_api(ctx), name, patch, status).await
}

/// A merge patch of the object or its status; an object gone or changed meanwhile is
/// left to the next sync.
async fn merge_patch<K>(
    api: Api<K>,
    name: &str,
    patch: Value,
    status: bool,
) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PatchParams::default();
    let res = if status {
        api.patch_status(name, &pp, &Patch::Merge(&patch)).await
    } else {
        api.patch(name, &pp, &Patch::Merge(&patch)).await
    };
    match res {
        Ok(_) => Ok(()),
        Err(e) if gone_or_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn volume_phase(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn set_claim_phase(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    phase: &str,
) -> Result<(), kube::Error> {
    if claim_phase(claim) == phase {
        return Ok(());
    }
    patch_claim(ctx, claim, json!({"status": {"phase": phase}}), true).await
}

/// `updateVolumePhase`, with the time of the change (kube-apiserver 1.33's
/// lastPhaseTransitionTime).
async fn set_volume_phase(
    ctx: &Ctx,
    pv: &PersistentVolume,
    phase: &str,
    message: Option<&str>,
) -> Result<(), kube::Error> {
    if volume_phase(pv) == phase {
        return Ok(());
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut status = json!({"phase": phase, "lastPhaseTransitionTime": now});
    if let Some(m) = message {
        status["message"] = json!(m);
    }
    patch_volume(ctx, pv, json!({"status": status}), true).await
}

/// A claim with no volume bound yet (`syncUnboundClaim`).
async fn sync_unbound_claim(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
) -> Result<Action, kube::Error> {
    let wanted = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    let Some(wanted) = wanted else {
        return find_volume(ctx, claim).await;
    };
    // The user named a volume.
    match ctx.caches.volumes.get(wanted) {
        None => set_claim_phase(ctx, claim, "Pending").await?,
        Some(pv)
            if pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_none() =>
        {
            match satisfies(&pv, claim) {
                Ok(()) => return bind(ctx, &pv, claim).await,
                Err(why) => {
                    let msg = format!("Cannot bind to requested volume \"{wanted}\": {why}");
                    claim_event(ctx, claim, EventType::Warning, "VolumeMismatch", &msg).await;
                    set_claim_phase(ctx, claim, "Pending").await?;
                }
            }
        }
        Some(pv) if bound_to(&pv, claim) => return bind(ctx, &pv, claim).await,
        // Claimed by another claim: wait for it to be released.
        Some(_) => set_claim_phase(ctx, claim, "Pending").await?,
    }
    Ok(Action::RequeueAfter(RESYNC))
}

/// No volume named: match one, or provision, or say why neither happens.
async fn find_volume(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Result<Action, kube::Error> {
    let class_name = claim_class(claim).to_string();
    let class = (!class_name.is_empty())
        .then(|| ctx.caches.classes.get(&class_name))
        .flatten();
    let delayed = class
        .as_ref()
        .and_then(|c| c.volume_binding_mode.as_deref())
        == Some("WaitForFirstConsumer");
    let selected = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SELECTED_NODE))
        .cloned();
    let node = selected.as_deref().and_then(|n| ctx.caches.nodes.get(n));
    let labels = node
        .as_ref()
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    let for_node = match (&selected, &node) {
        (Some(name), Some(_)) => Some(ForNode {
            name,
            labels: &labels,
        }),
        _ => None,
    };
    let volumes = ctx.caches.volumes.list();
    let found = best_match(claim, volumes.iter().map(Arc::as_ref), delayed, for_node).cloned();
    if let Some(pv) = found {
        return bind(ctx, &pv, claim).await;
    }
    if delayed && selected.is_none() {
        let (reason, msg) = waiting_for_pods(ctx, claim);
        claim_event(ctx, claim, EventType::Normal, reason, &msg).await;
    } else if !class_name.is_empty() {
        provision::provision(ctx, claim, &class_name, class.as_deref()).await?;
    } else {
        claim_event(
            ctx,
            claim,
            EventType::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )
        .await;
    }
    set_claim_phase(ctx, claim, "Pending").await?;
    Ok(Action::RequeueAfter(RESYNC))
}

/// `emitEventForUnboundDelayBindingClaim`: the pods not yet scheduled that use the
/// claim, or plain waiting for a first one.
fn waiting_for_pods(ctx: &Ctx, claim: &PersistentVolumeClaim) -> (&'static str, String) {
    let (ns, name) = ns_name(claim);
    let mut waiting: Vec<String> = ctx
        .pods
        .by_index(&format!("ns/{ns}"))
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("")
                .is_empty()
        })
        .filter(|p| pod_claims(p).iter().any(|c| c == name))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    waiting.sort();
    match waiting.len() {
        0 => (
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        ),
        1 => (
            "WaitForPodScheduled",
            format!("waiting for pod {} to be scheduled", waiting[0]),
        ),
        _ => (
            "WaitForPodScheduled",
            format!("waiting for pods {} to be scheduled", waiting.join(",")),
        ),
    }
}

/// A claim the binder bound (`syncBoundClaim`): keep its status, or mark it Lost.
async fn sync_bound_claim(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Result<Action, kube::Error> {
    let name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    let lost = |msg: &'static str| async move {
        claim_event(ctx, claim, EventType::Warning, "ClaimLost", msg).await;
        set_claim_phase(ctx, claim, "Lost").await
    };
    if name.is_empty() {
        lost("Bound claim has lost reference to PersistentVolume. Data on the volume is lost!")
            .await?;
        return Ok(Action::Done);
    }
    let Some(pv) = ctx.caches.volumes.get(name) else {
        lost("Bound claim has lost its PersistentVolume. Data on the volume is lost!").await?;
        return Ok(Action::Done);
    };
    if pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_none()
        || bound_to(&pv, claim)
    {
        return bind(ctx, &pv, claim).await;
    }
    lost("Two claims are bound to the same volume, this one is bound incorrectly").await?;
    Ok(Action::Done)
}

/// `bind`: the volume's claimRef and phase, then the claim's volumeName, annotations and
/// status, each step skipped when already done.
async fn bind(
    ctx: &Ctx,
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<Action, kube::Error> {
    let (ns, name) = ns_name(claim);
    let pv_name = pv.metadata.name.as_deref().unwrap_or("");
    let uid = claim.metadata.uid.as_deref().unwrap_or("");
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let ref_done = claim_ref.is_some_and(|r| r.uid.as_deref() == Some(uid));
    if !ref_done {
        let mut patch = json!({"spec": {"claimRef": {
            "kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name,
            "uid": uid, "resourceVersion": claim.metadata.resource_version,
        }}});
        if claim_ref.is_none() {
            patch["metadata"] = json!({"annotations": {BOUND_BY_CONTROLLER: "yes"}});
        }
        patch_volume(ctx, pv, patch, false).await?;
    }
    set_volume_phase(ctx, pv, "Bound", None).await?;
    let spec_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    if spec_name != pv_name || !has_annotation(&claim.metadata, BIND_COMPLETED) {
        let mut ann = json!({BIND_COMPLETED: "yes"});
        if spec_name.is_empty() {
            ann[BOUND_BY_CONTROLLER] = json!("yes");
        }
        let patch = json!({"metadata": {"annotations": ann}, "spec": {"volumeName": pv_name}});
        patch_claim(ctx, claim, patch, false).await?;
    }
    let pv_spec = pv.spec.clone().unwrap_or_default();
    let status = claim.status.clone().unwrap_or_default();
    if claim_phase(claim) != "Bound"
        || status.access_modes != pv_spec.access_modes
        || status.capacity != pv_spec.capacity
    {
        let patch = json!({"status": {"phase": "Bound", "accessModes": pv_spec.access_modes,
            "capacity": pv_spec.capacity}});
        patch_claim(ctx, claim, patch, true).await?;
    }
    Ok(Action::Done)
}

/// A volume (`syncVolume`): Available while unclaimed, Bound with its claim, Released
/// (then reclaimed) when the claim is gone.
async fn sync_volume(ctx: &Ctx, pv: &PersistentVolume) -> Result<Action, kube::Error> {
    // pv-protection: a volume being deleted goes once it is not bound; until then it is
    // synced as any other, so it is released when its claim goes.
    if pv.metadata.deletion_timestamp.is_some() && volume_phase(pv) != "Bound" {
        remove_finalizer_volume(ctx, pv).await?;
        return Ok(Action::Done);
    }
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
        if volume_phase(pv) != "Available" {
            set_volume_phase(ctx, pv, "Available", None).await?;
            // A claim waiting for a volume need not wait for its periodic sync.
            for c in ctx.caches.claims.list() {
                let unbound = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.as_deref())
                    .unwrap_or("")
                    .is_empty();
                if unbound && c.metadata.deletion_timestamp.is_none() {
                    ctx.queue.add(format!("pvc/{}", key_of(c.as_ref())));
                }
            }
        }
        return Ok(Action::Done);
    };
    let (ns, name) = (r.namespace.unwrap_or_default(), r.name.unwrap_or_default());
    let Some(uid) = r.uid.filter(|u| !u.is_empty()) else {
        // Reserved for a claim that has not been bound yet: the claim's sync binds it.
        set_volume_phase(ctx, pv, "Available", None).await?;
        return Ok(Action::Done);
    };
    let mut claim = ctx.caches.claims.get(&format!("{ns}/{name}"));
    if claim.is_none() {
        // The cache may be behind: a volume is released only for a claim really gone.
        claim = claims_api(ctx, &ns).get_opt(&name).await?.map(Arc::new);
    }
    let claim = claim.filter(|c| c.metadata.uid.as_deref() == Some(uid.as_str()));
    let Some(claim) = claim else {
        return release(ctx, pv).await;
    };
    let pv_name = pv.metadata.name.as_deref().unwrap_or("");
    match claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
    {
        // Binding in progress (or a dangling volume): the claim's sync finishes it.
        "" => ctx.queue.add(claim_key(&ns, &name)),
        v if v == pv_name => set_volume_phase(ctx, pv, "Bound", None).await?,
        // The claim is bound to another volume: unbind this one.
        _ if provision::is_provisioned(pv) => return release(ctx, pv).await,
        _ => {
            let patch = if has_annotation(&pv.metadata, BOUND_BY_CONTROLLER) {
                json!({"spec": {"claimRef": null},
                       "metadata": {"annotations": {BOUND_BY_CONTROLLER: null}}})
            } else {
                json!({"spec": {"claimRef": {"uid": null, "resourceVersion": null}}})
            };
            patch_volume(ctx, pv, patch, false).await?;
            set_volume_phase(ctx, pv, "Available", None).await?;
        }
    }
    Ok(Action::Done)
}

/// The claim is gone: Released, then its reclaim policy (`reclaimVolume`).
async fn release(ctx: &Ctx, pv: &PersistentVolume) -> Result<Action, kube::Error> {
    if volume_phase(pv) == "Failed" {
        return Ok(Action::Done);
    }
    set_volume_phase(ctx, pv, "Released", None).await?;
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    let name = pv.metadata.name.as_deref().unwrap_or("");
    let failed = |reason: &'static str, msg: String| async move {
        ctx.events
            .publish(&object_ref(pv), EventType::Warning, reason, &msg)
            .await;
        set_volume_phase(ctx, pv, "Failed", Some(&msg)).await
    };
    match policy {
        // The provisioner deletes what it provisioned (its data first, then the object).
        "Delete" if provision::is_provisioned(pv) => {}
        "Delete" => {
            let msg = match pv.spec.as_ref().and_then(|s| s.host_path.as_ref()) {
                Some(hp) => format!("host_path deleter only supports /tmp/.+ but received provided {}", hp.path),
                None => format!("error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched"),
            };
            failed("VolumeFailedDelete", msg).await?;
        }
        "Recycle" => {
            let msg = format!("error getting recycler volume plugin for volume \"{name}\": no recyclable volume plugin matched");
            failed("VolumeFailedRecycle", msg).await?;
        }
        _ => {}
    }
    Ok(Action::Done)
}

/// pvc-protection: a deleted claim goes once no running pod uses it.
async fn release_claim_finalizer(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
) -> Result<(), kube::Error> {
    let finalizers = claim.metadata.finalizers.as_deref().unwrap_or(&[]);
    if !finalizers.iter().any(|f| f == PVC_PROTECTION) {
        return Ok(());
    }
    let (ns, name) = ns_name(claim);
    let in_use = ctx.pods.by_index(&format!("ns/{ns}")).iter().any(|p| {
        let scheduled = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        scheduled
            && phase != "Succeeded"
            && phase != "Failed"
            && pod_claims(p).iter().any(|c| c == name)
    });
    if in_use {
        return Ok(());
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != PVC_PROTECTION).collect();
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": claim.metadata.resource_version}});
    patch_claim(ctx, claim, patch, false).await
}

async fn remove_finalizer_volume(ctx: &Ctx, pv: &PersistentVolume) -> Result<(), kube::Error> {
    let finalizers = pv.metadata.finalizers.as_deref().unwrap_or(&[]);
    if !finalizers.iter().any(|f| f == PV_PROTECTION) {
        return Ok(());
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != PV_PROTECTION).collect();
    let patch =
        json!({"metadata": {"finalizers": rest, "resourceVersion": pv.metadata.resource_version}});
    patch_volume(ctx, pv, patch, false).await
}
