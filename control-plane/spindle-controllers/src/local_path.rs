//! The built-in local-path provisioner (`spindle.dev/local-path`), run in the control
//! plane under a ServiceAccount of its own, as k3s runs Rancher's local-path provisioner
//! as a Deployment: no node needs the right to create a cluster-wide object.
//!
//! It works as Kubernetes' external provisioners do. A claim of a StorageClass whose
//! provisioner is [`LOCAL_PATH_PROVISIONER`], with `volume.kubernetes.io/selected-node`
//! set by the scheduler and no volume yet, gets a PersistentVolume pre-bound to it
//! (`claimRef`) with node affinity to that node; the PV binder then binds the two. The
//! volume's directory is `<the node's storage root>/<volume name>`, which the node's agent
//! makes on first mount (it publishes its root on its Node as [`LOCAL_PATH_ROOT`]), and
//! the agent removes the directory and the volume once it is Released under policy Delete.
//!
//! A node's volumes together are promised no more than the node's disk
//! (`status.capacity["ephemeral-storage"]`, the filesystem of the agent's data, which
//! holds the storage root).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kube::api::PostParams;
use kube::{Api, Client};
use spindle_meta::events::{object_ref, EventType, Recorder};
use spindle_meta::quantity::Quantity;
use spindle_meta::storage::{
    local_path_node, BETA_STORAGE_PROVISIONER, LOCAL_PATH_PROVISIONER, LOCAL_PATH_ROOT,
    PROVISIONED_BY, SELECTED_NODE, STORAGE_PROVISIONER,
};

use crate::runtime::{Action, Queue};
use crate::volume::Caches;

/// The component its events are recorded under (external provisioners record theirs
/// under the provisioner's name).
pub const COMPONENT: &str = LOCAL_PATH_PROVISIONER;
/// Claims provisioned at once: a StatefulSet's come in a burst, each one API write.
const WORKERS: usize = 16;
/// A claim that could not be provisioned is tried again after this long (a node that
/// has not published its root yet, a disk that is full until a volume goes).
const RETRY: Duration = Duration::from_secs(5);
/// How long a volume this provisioner created is counted against its node's disk before
/// the volume cache shows it (after which the cache counts it).
const MADE_TTL: Duration = Duration::from_secs(60);

/// The volumes created that the cache may not show yet: two claims provisioned at once
/// must not both be promised the same free bytes of a node.
#[derive(Default)]
struct Ledger(HashMap<String, (String, u64, Instant)>);

struct Ctx {
    client: Client,
    events: Recorder,
    caches: Caches,
    ledger: Mutex<Ledger>,
}

/// Run the provisioner over the binder's caches; `queue` holds the keys of the claims
/// that changed (see [`crate::volume::caches`]).
pub async fn run(
    client: Client,
    events: Recorder,
    queue: Arc<Queue<String>>,
    caches: Caches,
) -> anyhow::Result<()> {
    caches.claims.wait_synced().await;
    caches.volumes.wait_synced().await;
    caches.classes.wait_synced().await;
    caches.nodes.wait_synced().await;
    for c in caches.claims.list() {
        queue.add(crate::runtime::key_of(c.as_ref()));
    }
    let ctx = Arc::new(Ctx {
        client,
        events,
        caches,
        ledger: Mutex::default(),
    });
    queue
        .run(WORKERS, "local-path-provisioner", move |key| {
            reconcile(ctx.clone(), key)
        })
        .await;
    Ok(())
}

async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action, kube::Error> {
    let Some(claim) = ctx.caches.claims.get(&key) else {
        return Ok(Action::Done);
    };
    let classes = ctx.caches.classes.list();
    let Some((class, node_name)) = wants_volume(&claim, &classes) else {
        return Ok(Action::Done);
    };
    let name = volume_name(&claim);
    if name.is_empty() || ctx.caches.volumes.get(&name).is_some() {
        return Ok(Action::Done);
    }
    let node = ctx.caches.nodes.get(node_name);
    let planned = node
        .as_deref()
        .ok_or_else(|| format!("node {node_name:?} not found"))
        .and_then(|n| plan(&ctx, &claim, n, &name));
    let path = match planned {
        Ok(p) => p,
        Err(e) => {
            failed(&ctx, &claim, class, &e).await;
            return Ok(Action::RequeueAfter(RETRY));
        }
    };
    let pv = volume(&claim, class, &name, &path, node_name);
    match provision(&ctx, &claim, &pv).await {
        Ok(()) => Ok(Action::Done),
        Err(e) => {
            ctx.ledger
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .remove(&name);
            failed(&ctx, &claim, class, &e.to_string()).await;
            Ok(Action::RequeueAfter(RETRY))
        }
    }
}

/// The class and the selected node of a claim this provisioner should provision now:
/// one of its class, placed on a node, not bound, not being deleted, and handed to this
/// provisioner by the PV binder (`volume.kubernetes.io/storage-provisioner`, which
/// external provisioners wait for, so the binder has looked for a matching volume first).
fn wants_volume<'a>(
    pvc: &'a PersistentVolumeClaim,
    classes: &'a [Arc<StorageClass>],
) -> Option<(&'a StorageClass, &'a str)> {
    let annotations = pvc.metadata.annotations.as_ref()?;
    let selected = annotations.get(SELECTED_NODE)?;
    let handed = [STORAGE_PROVISIONER, BETA_STORAGE_PROVISIONER]
        .iter()
        .any(|k| annotations.get(*k).map(String::as_str) == Some(LOCAL_PATH_PROVISIONER));
    let spec = pvc.spec.as_ref()?;
    if selected.is_empty()
        || !handed
        || pvc.metadata.deletion_timestamp.is_some()
        || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
    {
        return None;
    }
    let class_name = spindle_meta::storage::claim_class(pvc);
    let class = classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(class_name))?;
    (class.provisioner == LOCAL_PATH_PROVISIONER).then_some((class.as_ref(), selected.as_str()))
}

/// `pvc-<claim uid>`, as Kubernetes' external provisioners name their volumes.
fn volume_name(pvc: &PersistentVolumeClaim) -> String {
    pvc.metadata
        .uid
        .as_deref()
        .map(|uid| format!("pvc-{uid}"))
        .unwrap_or_default()
}

fn requested(pvc: &PersistentVolumeClaim) -> Option<&ApiQuantity> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

fn bytes_of(q: &ApiQuantity) -> Option<u64> {
    u64::try_from(Quantity::try_from(q).ok()?.value()).ok()
}

/// Where the volume goes, once the node's disk has room for it beside what its other
/// local-path volumes were promised; its bytes are then held in the ledger until the
/// volume cache counts them.
fn plan(ctx: &Ctx, pvc: &PersistentVolumeClaim, node: &Node, name: &str) -> Result<String, String> {
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let size = requested(pvc).ok_or_else(|| "the claim requests no storage".to_string())?;
    let want = bytes_of(size).ok_or_else(|| format!("invalid size {:?}", size.0))?;
    let root = storage_root(node)?;
    let disk = node
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref()?.get("ephemeral-storage"))
        .and_then(bytes_of)
        .ok_or_else(|| format!("node {node_name:?} has not reported its disk capacity"))?;
    let volumes = ctx.caches.volumes.list();
    let mut ledger = ctx.ledger.lock().unwrap_or_else(|p| p.into_inner());
    ledger
        .0
        .retain(|n, (_, _, at)| ctx.caches.volumes.get(n).is_none() && at.elapsed() < MADE_TTL);
    let cached: u64 = volumes
        .iter()
        .filter(|pv| local_path_node(pv) == Some(node_name))
        .filter_map(|pv| bytes_of(pv.spec.as_ref()?.capacity.as_ref()?.get("storage")?))
        .sum();
    let pending: u64 = ledger
        .0
        .values()
        .filter(|(n, _, _)| n == node_name)
        .map(|(_, b, _)| b)
        .sum();
    let promised = cached.saturating_add(pending);
    if promised.saturating_add(want) > disk {
        return Err(format!(
            "node has not enough disk for {}: {promised} of {disk} bytes already promised to local-path volumes",
            size.0
        ));
    }
    ledger.0.insert(
        name.to_string(),
        (node_name.to_string(), want, Instant::now()),
    );
    Ok(format!("{}/{name}", root.trim_end_matches('/')))
}

/// The storage root the node's agent published: an absolute path, nothing to climb out
/// of (the agent itself mounts only `<its root>/<volume name>`, whatever the PV says).
fn storage_root(node: &Node) -> Result<&str, String> {
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let root = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOCAL_PATH_ROOT))
        .ok_or_else(|| {
            format!("node {node_name:?} has not published its local-path storage directory")
        })?;
    let plain = root.starts_with('/') && !root.split('/').any(|c| c == ".." || c == ".");
    if !plain {
        return Err(format!(
            "node {node_name:?} published an invalid local-path storage directory {root:?}"
        ));
    }
    Ok(root)
}

fn claim_name(pvc: &PersistentVolumeClaim) -> String {
    let ns = pvc.metadata.namespace.as_deref().unwrap_or("default");
    format!("{ns}/{}", pvc.metadata.name.as_deref().unwrap_or_default())
}

/// A claim could not be provisioned: a warning on it, as external provisioners word it.
async fn failed(ctx: &Ctx, pvc: &PersistentVolumeClaim, class: &StorageClass, e: &str) {
    let class_name = class.metadata.name.as_deref().unwrap_or_default();
    tracing::warn!(claim = claim_name(pvc), error = %e, "local-path provisioning failed");
    ctx.events
        .publish(
            &object_ref(pvc),
            EventType::Warning,
            "ProvisioningFailed",
            &format!("failed to provision volume with StorageClass {class_name:?}: {e}"),
        )
        .await;
}

/// Create the volume, announcing it first as external provisioners do; a volume that
/// already exists (an earlier pass made it) is success.
async fn provision(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<(), kube::Error> {
    let claim = claim_name(pvc);
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let regarding = object_ref(pvc);
    let message = format!("External provisioner is provisioning volume for claim {claim:?}");
    let announce = ctx
        .events
        .publish(&regarding, EventType::Normal, "Provisioning", &message);
    // The pod waits for the volume, not for the event: both go at once.
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pp = PostParams::default();
    let (_, made) = tokio::join!(announce, api.create(&pp, pv));
    match made {
        Ok(_) => {
            tracing::info!(claim, volume = name, "provisioned a local-path volume");
            ctx.events
                .publish(
                    &regarding,
                    EventType::Normal,
                    "ProvisioningSucceeded",
                    &format!("Successfully provisioned volume {name}"),
                )
                .await;
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The PersistentVolume for a claim: pre-bound to it, on `node`, of the class's reclaim
/// policy and mount options.
fn volume(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    name: &str,
    path: &str,
    node: &str,
) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let claim_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: pvc.metadata.namespace.clone(),
        name: pvc.metadata.name.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        ..Default::default()
    };
    let affinity = VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "kubernetes.io/hostname".into(),
                    operator: "In".into(),
                    values: Some(vec![node.to_string()]),
                }]),
                ..Default::default()
            }],
        }),
    };
    let size = requested(pvc).cloned().unwrap_or_default();
    PersistentVolume {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                LOCAL_PATH_PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes,
            capacity: Some(BTreeMap::from([("storage".to_string(), size)])),
            claim_ref: Some(claim_ref),
            host_path: Some(HostPathVolumeSource {
                path: path.to_string(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            mount_options: class.mount_options.clone(),
            node_affinity: Some(affinity),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: spec.volume_mode.or_else(|| Some("Filesystem".into())),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(root: Option<&str>) -> Node {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"capacity": {"ephemeral-storage": "10Gi"}},
        }))
        .expect("node");
        if let Some(r) = root {
            n.metadata.annotations = Some(BTreeMap::from([(LOCAL_PATH_ROOT.into(), r.into())]));
        }
        n
    }

    #[test]
    fn a_storage_root_is_an_absolute_path_without_dots() {
        assert_eq!(storage_root(&node(Some("/var/lib/s"))), Ok("/var/lib/s"));
        for bad in ["relative", "/a/../etc", "/a/./b"] {
            assert!(storage_root(&node(Some(bad))).is_err(), "{bad}");
        }
        let e = storage_root(&node(None)).expect_err("unpublished");
        assert!(e.contains("has not published"), "{e}");
    }
}
