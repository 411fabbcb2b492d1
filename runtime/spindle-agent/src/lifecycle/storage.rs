//! The pod's volumes through its life: prepared before any container (a pod whose
//! volumes cannot be set up waits in ContainerCreating with FailedMount events and is
//! retried), generated ones re-read while it runs, disk emptyDirs measured against
//! their sizeLimit.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use spindle_meta::events::{object_ref, EventType};
use tokio::sync::watch;

use super::{sleep_or_stop, PodHandle};
use crate::env::Sources;
use crate::reason::Waiting;
use crate::volumes::{self, PodVolumes};
use crate::Agent;

/// How often configMap/secret/downwardAPI volumes are re-read (the kubelet re-syncs each
/// minute; a ConfigMap edit shows sooner here).
const VOLUME_REFRESH: Duration = Duration::from_secs(10);
/// The period for pods whose only generated volume is the ServiceAccount's (its token
/// is renewed at 80% of an hour, the CA and namespace hardly change): the kubelet's
/// minute, so thousands of idle pods do not each read the CA ConfigMap every 10 s.
const TOKEN_VOLUME_REFRESH: Duration = Duration::from_secs(60);
/// A pod whose volumes failed to set up is tried again after this, doubling up to
/// [`MOUNT_RETRY_MAX`]: the kubelet's volume operations back-off (500 ms to 2m2s). Not
/// the container restart back-off: a mount often fails only for a moment (a claim bound
/// a moment after its pod, the node authorizer not yet knowing the pod's new objects).
const MOUNT_RETRY_INITIAL: Duration = Duration::from_millis(500);
const MOUNT_RETRY_MAX: Duration = Duration::from_secs(122);
/// How often disk emptyDirs with a sizeLimit are measured (the kubelet's eviction manager
/// looks every 10 s).
const DISK_CHECK: Duration = Duration::from_secs(5);

/// Set up the pod's volumes, retrying until they are or the pod stops (`None`), and
/// start what watches them.
pub(super) async fn prepare(
    agent: &Arc<Agent>,
    h: &Arc<PodHandle>,
    pod: &Pod,
    stop: &watch::Receiver<bool>,
) -> Option<Arc<PodVolumes>> {
    let host_ip = agent.node_ip.to_string();
    let mut retry = MOUNT_RETRY_INITIAL;
    let vols = loop {
        // (status message, event message)
        let (why, event) = match volumes::unsupported_message(pod) {
            // Kept in ContainerCreating and retried, as the kubelet does with a volume no
            // plugin matches; its spec cannot change, so this lasts until deletion.
            Some(msg) => (
                msg.clone(),
                format!("Unable to attach or mount volumes: {msg}"),
            ),
            None => {
                let mut src = Sources::new(agent.client.clone(), &h.namespace)
                    .with_tokens(agent.tokens.clone());
                match volumes::prepare(pod, &h.paths, &mut src, &host_ip, &agent.host_paths).await {
                    Ok(v) => break v,
                    Err(e) => (e.0.clone(), format!("MountVolume.SetUp failed: {}", e.0)),
                }
            }
        };
        h.set_all_waiting(Waiting::ContainerCreating, Some(why));
        agent
            .events
            .publish(&object_ref(pod), EventType::Warning, "FailedMount", &event)
            .await;
        if sleep_or_stop(stop, retry).await {
            return None;
        }
        retry = (retry * 2).min(MOUNT_RETRY_MAX);
    };
    let vols = Arc::new(vols);
    *h.vols.lock().unwrap_or_else(|p| p.into_inner()) = Some(vols.clone());
    let limits = volumes::disk_limits(pod, &vols);
    if !limits.is_empty() {
        tokio::spawn(watch_disk_limits(
            agent.clone(),
            h.clone(),
            limits,
            stop.clone(),
        ));
    }
    if volumes::has_generated(pod) {
        tokio::spawn(refresh_volumes(
            agent.clone(),
            h.clone(),
            vols.clone(),
            stop.clone(),
        ));
    }
    Some(vols)
}

/// Evict the pod when one of its disk emptyDirs grows past its sizeLimit, checked every
/// [`DISK_CHECK`] as the kubelet's eviction manager does, with its message and event.
async fn watch_disk_limits(
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    limits: Vec<volumes::DiskLimit>,
    stop: watch::Receiver<bool>,
) {
    loop {
        if sleep_or_stop(&stop, DISK_CHECK).await {
            return;
        }
        for l in &limits {
            let dir = l.dir.clone();
            let used = tokio::task::spawn_blocking(move || volumes::disk_usage(&dir))
                .await
                .unwrap_or(0);
            if used <= l.bytes {
                continue;
            }
            let msg = format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                l.name, l.quantity
            );
            tracing::info!(pod = %h.name, ns = %h.namespace, used, "{msg}");
            h.shared().evicted = Some(msg.clone());
            let pod = h.pod();
            agent
                .events
                .publish(
                    &object_ref(pod.as_ref()),
                    EventType::Warning,
                    "Evicted",
                    &msg,
                )
                .await;
            h.evict.notify_one();
            return;
        }
    }
}

async fn refresh_volumes(
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    vols: Arc<PodVolumes>,
    stop: watch::Receiver<bool>,
) {
    let host_ip = agent.node_ip.to_string();
    let period = if volumes::only_service_account_volumes(&h.pod()) {
        TOKEN_VOLUME_REFRESH
    } else {
        VOLUME_REFRESH
    };
    while !sleep_or_stop(&stop, period).await {
        let pod = h.pod();
        let mut src =
            Sources::new(agent.client.clone(), &h.namespace).with_tokens(agent.tokens.clone());
        if let Err(e) = volumes::refresh(&pod, &vols, &mut src, &host_ip).await {
            tracing::debug!(pod = %h.name, error = %e, "refreshing volumes");
        }
    }
}
