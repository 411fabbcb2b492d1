//! The agent's half of the built-in local-path provisioner: the control plane creates
//! each local-path volume (`spindle-controllers`' `local_path`), the agent makes its
//! directory on first mount, and this reclaims it. A Released volume of this node with
//! reclaim policy Delete loses its directory, then its object (NodeRestriction lets a
//! node delete only its own local-path volumes). No node creates a cluster-wide object.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::DeleteParams;
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use spindle_meta::events::{object_ref, EventType};
use spindle_meta::storage::local_path_node;

use crate::volumes;
use crate::Agent;

/// How long a burst of changes is gathered into one pass.
const SETTLE: Duration = Duration::from_millis(5);

/// Runs until the agent stops.
pub async fn run(agent: Arc<Agent>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (pvs, pvs_w) = reflector::store::<PersistentVolume>();
    let client = agent.client.clone();
    let mut changes = reflector(pvs_w, watcher(Api::all(client), watcher::Config::default()))
        .default_backoff()
        .boxed();
    // Level-triggered: every burst of changes, and a periodic tick, leads to one pass
    // over every volume, so a removal that failed is tried again.
    let mut listed = false;
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            ev = changes.next() => match ev {
                Some(e) => listed |= matches!(e, Ok(watcher::Event::InitDone)),
                None => return,
            },
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::time::sleep(SETTLE).await;
        while let Some(ev) = changes.next().now_or_never() {
            match ev {
                Some(e) => listed |= matches!(e, Ok(watcher::Event::InitDone)),
                None => return,
            }
        }
        if listed {
            pass(&agent, &pvs).await;
        }
    }
}

async fn pass(agent: &Agent, pvs: &Store<PersistentVolume>) {
    let node = agent.opts.node_name.as_str();
    for pv in pvs.state() {
        if local_path_node(&pv) == Some(node) && released_for_deletion(&pv) {
            delete(agent, &pv).await;
        }
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
