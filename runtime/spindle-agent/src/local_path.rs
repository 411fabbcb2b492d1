//! The built-in local-path provisioner, run by each agent for its own node (as k3s runs
//! one for its nodes): it provisions the claims the scheduler placed here and removes the
//! volumes whose claims are gone.
//!
//! It works as Kubernetes' external provisioners do: a claim of a StorageClass whose
//! provisioner is [`LOCAL_PATH_PROVISIONER`], with `volume.kubernetes.io/selected-node`
//! naming this node and no volume yet, gets a directory under `<data>/storage` and a
//! PersistentVolume pre-bound to it (`claimRef`) with node affinity to this node; the PV
//! controller then binds the two. A Released PV of ours with reclaim policy Delete loses
//! its directory, then its object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use spindle_meta::events::{object_ref, EventType};
use spindle_meta::storage::{LOCAL_PATH_PROVISIONER, PROVISIONED_BY, SELECTED_NODE};

use crate::volumes;
use crate::Agent;

/// How long a burst of changes is gathered into one pass: short, as a pod waits for
/// its claim's volume, yet long enough that a StatefulSet's claims, placed one after
/// another by the scheduler, are provisioned in a few passes rather than one each.
const SETTLE: Duration = Duration::from_millis(5);
/// Volumes provisioned at once in a pass (each is a directory and a few API writes).
const CONCURRENCY: usize = 16;

/// Tags each event of a store's stream with the store's index and whether the store
/// now holds a whole list.
fn listed<K>(i: usize) -> impl Fn(Result<watcher::Event<K>, watcher::Error>) -> (usize, bool) {
    move |e| (i, matches!(e, Ok(watcher::Event::InitDone)))
}

/// Runs until the agent stops.
pub async fn run(agent: Arc<Agent>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (claims, claims_w) = reflector::store::<PersistentVolumeClaim>();
    let (pvs, pvs_w) = reflector::store::<PersistentVolume>();
    let (classes, classes_w) = reflector::store::<StorageClass>();
    let cfg = watcher::Config::default;
    let client = agent.client.clone();
    let c = reflector(claims_w, watcher(Api::all(client.clone()), cfg())).default_backoff();
    let p = reflector(pvs_w, watcher(Api::all(client.clone()), cfg())).default_backoff();
    let s = reflector(classes_w, watcher(Api::all(client), cfg())).default_backoff();
    // Every burst of changes leads to one pass over everything: level-triggered, so a
    // pass that failed is retried by the next change or the periodic one.
    // Each event says which store it came from and whether that store now holds a
    // whole list.
    let mut changes = futures::stream::select_all([
        c.map(listed(0)).boxed(),
        p.map(listed(1)).boxed(),
        s.map(listed(2)).boxed(),
    ]);
    let mut ready = [false; 3];
    let mut made = Made::default();
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            ev = changes.next() => match ev {
                Some((i, done)) => ready[i] |= done,
                None => return,
            },
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::time::sleep(SETTLE).await;
        // The changes that came meanwhile are part of this pass, not one pass each.
        while let Some(ev) = changes.next().now_or_never() {
            match ev {
                Some((i, done)) => ready[i] |= done,
                None => return,
            }
        }
        // Only once every store has its first list: a claim must not be provisioned
        // twice because the PV it already has was not listed yet.
        if !ready.iter().all(|r| *r) {
            continue;
        }
        pass(&agent, &claims, &pvs, &classes, &mut made).await;
    }
}

/// The volumes this provisioner created that its PV store may not show yet: a pass
/// that comes before the watch brings the new PV must not provision its claim again.
/// Forgotten once the store has the PV, or after [`MADE_TTL`] (a PV deleted before the
/// watch showed it may be provisioned again).
#[derive(Default)]
struct Made(std::collections::HashMap<String, std::time::Instant>);

const MADE_TTL: Duration = Duration::from_secs(60);

async fn pass(
    agent: &Agent,
    claims: &Store<PersistentVolumeClaim>,
    pvs: &Store<PersistentVolume>,
    classes: &Store<StorageClass>,
    made: &mut Made,
) {
    let node = agent.opts.node_name.as_str();
    let ours: BTreeMap<String, Arc<PersistentVolume>> = pvs
        .state()
        .into_iter()
        .filter(|pv| is_ours(pv, node))
        .filter_map(|pv| Some((pv.metadata.name.clone()?, pv)))
        .collect();
    let existing: std::collections::HashSet<String> = pvs
        .state()
        .iter()
        .filter_map(|pv| pv.metadata.name.clone())
        .collect();
    made.0
        .retain(|name, at| !existing.contains(name) && at.elapsed() < MADE_TTL);
    let classes = classes.state();
    let mut todo = Vec::new();
    for pvc in claims.state() {
        if let Some(class) = wants_volume(&pvc, node, &classes) {
            let name = volume_name(&pvc);
            if !name.is_empty() && !existing.contains(&name) && !made.0.contains_key(&name) {
                todo.push((pvc, class.clone(), name));
            }
        }
    }
    // Disk accounting counts what this pass provisions too, so claims provisioned at
    // once cannot together promise more than the node holds.
    let mut promised = promised(&ours);
    let mut admitted = Vec::new();
    for (pvc, class, name) in todo {
        match admit(agent, &pvc, promised) {
            Ok(want) => {
                promised = promised.saturating_add(want);
                admitted.push((pvc, class, name));
            }
            Err(e) => failed(agent, &pvc, &class, e).await,
        }
    }
    let created: Vec<Option<String>> = futures::stream::iter(admitted)
        .map(|(pvc, class, name)| async move {
            provision(agent, &pvc, &class, &name).await.then_some(name)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let now = std::time::Instant::now();
    made.0
        .extend(created.into_iter().flatten().map(|name| (name, now)));
    for pv in ours.values() {
        if released_for_deletion(pv) {
            delete(agent, pv).await;
        }
    }
}

/// A PV this node's provisioner made.
fn is_ours(pv: &PersistentVolume, node: &str) -> bool {
    let by = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY));
    by.map(String::as_str) == Some(LOCAL_PATH_PROVISIONER) && node_of(pv) == Some(node)
}

/// The node a PV's required node affinity names.
fn node_of(pv: &PersistentVolume) -> Option<&str> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_expressions.iter().flatten().find_map(|e| {
            (e.key == "kubernetes.io/hostname" && e.operator == "In")
                .then(|| e.values.as_ref()?.first().map(String::as_str))
                .flatten()
        })
    })
}

/// The StorageClass of a claim this node should provision now: one of ours, placed on
/// this node, not bound, not being deleted.
fn wants_volume<'a>(
    pvc: &PersistentVolumeClaim,
    node: &str,
    classes: &'a [Arc<StorageClass>],
) -> Option<&'a Arc<StorageClass>> {
    let selected = pvc.metadata.annotations.as_ref()?.get(SELECTED_NODE)?;
    let spec = pvc.spec.as_ref()?;
    if selected != node
        || pvc.metadata.deletion_timestamp.is_some()
        || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
    {
        return None;
    }
    let class_name = spec.storage_class_name.as_deref()?;
    let class = classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(class_name))?;
    (class.provisioner == LOCAL_PATH_PROVISIONER).then_some(class)
}

/// `pvc-<claim uid>`, as Kubernetes' external provisioners name their volumes.
fn volume_name(pvc: &PersistentVolumeClaim) -> String {
    pvc.metadata
        .uid
        .as_deref()
        .map(|uid| format!("pvc-{uid}"))
        .unwrap_or_default()
}

fn requested(pvc: &PersistentVolumeClaim) -> Option<Quantity> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .cloned()
}

/// What a claim asks for, if the node's disk can hold it beside the `promised` bytes of
/// its other local-path volumes.
fn admit(agent: &Agent, pvc: &PersistentVolumeClaim, promised: u64) -> Result<u64, String> {
    let size = requested(pvc).ok_or_else(|| "the claim requests no storage".to_string())?;
    fits(&agent.host_paths.local_path_root, &size, promised)
}

/// A claim could not be provisioned: a warning on it, as external provisioners word it.
async fn failed(agent: &Agent, pvc: &PersistentVolumeClaim, class: &StorageClass, e: String) {
    let ns = pvc.metadata.namespace.as_deref().unwrap_or("default");
    let claim = format!("{ns}/{}", pvc.metadata.name.as_deref().unwrap_or_default());
    let class_name = class.metadata.name.as_deref().unwrap_or_default();
    tracing::warn!(%claim, error = %e, "local-path provisioning failed");
    agent
        .events
        .publish(
            &object_ref(pvc),
            EventType::Warning,
            "ProvisioningFailed",
            &format!("failed to provision volume with StorageClass {class_name:?}: {e}"),
        )
        .await;
}

/// Make the claim's directory and its PV; true once the PV exists.
async fn provision(
    agent: &Agent,
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    name: &str,
) -> bool {
    let ns = pvc.metadata.namespace.as_deref().unwrap_or("default");
    let claim = format!("{ns}/{}", pvc.metadata.name.as_deref().unwrap_or_default());
    let Some(size) = requested(pvc) else {
        return false;
    };
    let root = &agent.host_paths.local_path_root;
    let regarding = object_ref(pvc);
    let message = format!("External provisioner is provisioning volume for claim {claim:?}");
    let announce = agent
        .events
        .publish(&regarding, EventType::Normal, "Provisioning", &message);
    // The pod waits for the volume, not for the event: both go at once.
    let make = async {
        let dir = volumes::make_local_path(name, root).map_err(|e| e.to_string())?;
        let pv = volume(pvc, class, name, size, &dir, &agent.opts.node_name);
        let api: Api<PersistentVolume> = Api::all(agent.client.clone());
        match api.create(&PostParams::default(), &pv).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    };
    let ((), made) = tokio::join!(announce, make);
    match made {
        Ok(false) => true,
        Ok(true) => {
            tracing::info!(claim, volume = name, "provisioned a local-path volume");
            agent
                .events
                .publish(
                    &object_ref(pvc),
                    EventType::Normal,
                    "ProvisioningSucceeded",
                    &format!("Successfully provisioned volume {name}"),
                )
                .await;
            true
        }
        Err(e) => {
            failed(agent, pvc, class, e).await;
            false
        }
    }
}

/// The bytes promised to the node's local-path volumes.
fn promised(ours: &BTreeMap<String, Arc<PersistentVolume>>) -> u64 {
    ours.values()
        .filter_map(|pv| {
            crate::resources::bytes(pv.spec.as_ref()?.capacity.as_ref()?.get("storage")?)
        })
        .sum()
}

/// Whether the node's disk can hold `size` more: no more than it has free now, and,
/// with what the node's other local-path volumes were promised, no more than it holds.
/// The size in bytes if so.
fn fits(root: &std::path::Path, size: &Quantity, promised: u64) -> Result<u64, String> {
    let want = crate::resources::bytes(size).ok_or_else(|| format!("invalid size {:?}", size.0))?;
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let st = rustix::fs::statvfs(root).map_err(|e| e.to_string())?;
    let total = st.f_blocks.saturating_mul(st.f_frsize);
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if want > free || promised.saturating_add(want) > total {
        return Err(format!(
            "node has not enough disk for {}: {free} bytes free, {promised} of {total} bytes already promised to local-path volumes",
            size.0
        ));
    }
    Ok(want)
}

fn volume(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    name: &str,
    size: Quantity,
    dir: &std::path::Path,
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
                path: dir.to_string_lossy().into_owned(),
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

/// A PV whose claim is gone and whose policy says its data goes too.
fn released_for_deletion(pv: &PersistentVolume) -> bool {
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    phase == Some("Released")
        && policy == Some("Delete")
        && pv.metadata.deletion_timestamp.is_none()
}

async fn delete(agent: &Agent, pv: &PersistentVolume) {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    if let Err(e) = volumes::remove_local_path(name, &agent.host_paths.local_path_root) {
        tracing::warn!(volume = name, error = %e, "removing a local-path volume");
        agent
            .events
            .publish(
                &object_ref(pv),
                EventType::Warning,
                "VolumeFailedDelete",
                &format!("failed to delete volume {name}: {e}"),
            )
            .await;
        return;
    }
    let api: Api<PersistentVolume> = Api::all(agent.client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(volume = name, "deleted a released local-path volume"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            tracing::warn!(volume = name, error = %e, "deleting a released local-path volume")
        }
    }
}
