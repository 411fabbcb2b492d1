//! One pod's life on this node, run by one worker task: volumes, init containers in order,
//! then every container under its own supervisor (restart policy, back-off), a status
//! writer that coalesces changes into pods/status patches, and graceful deletion.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::Api;
use tokio::sync::watch;

use crate::reason::Waiting;
use crate::volumes;
use crate::Agent;

mod pod;
mod pull;
mod sandbox;
pub(crate) mod spec;
mod status_writer;
mod storage;
mod supervise;

pub use pod::{PodHandle, Shared};
use supervise::supervise;

/// Kubernetes' container restart back-off: 10 s doubling to 5 min, forgotten after a run
/// of 10 min.
pub(super) const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub(super) const BACKOFF_RESET: Duration = Duration::from_secs(600);

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

pub(super) fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

/// Wait until the pod is being deleted (or is gone); true if the agent evicted it first.
async fn wait_deleted_or_evicted(h: &PodHandle, rx: &mut watch::Receiver<Arc<Pod>>) -> bool {
    loop {
        let deleting = rx.borrow_and_update().metadata.deletion_timestamp.is_some();
        if deleting || h.gone.load(Ordering::Acquire) {
            return false;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return false },
            () = h.evict.notified() => return true,
        }
    }
}

/// The worker of one pod: run it until it is deleted, then clean up and let it go.
pub async fn run(agent: Arc<Agent>, h: Arc<PodHandle>) {
    let mut rx = h.spec.subscribe();
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(status_writer::write_status_loop(agent.clone(), h.clone()));
    let initial = h.pod();
    let mut pod_task = if is_terminal(&initial) || initial.metadata.deletion_timestamp.is_some() {
        None
    } else {
        Some(tokio::spawn(run_containers(
            agent.clone(),
            h.clone(),
            stop_rx,
        )))
    };
    if wait_deleted_or_evicted(&h, &mut rx).await {
        // Evicted: its runs are stopped as on deletion, the pod reports Failed/Evicted
        // and its disk is freed; the object stays until it is deleted, as on Kubernetes.
        let _ = stop_tx.send(true);
        if let Some(t) = pod_task.take() {
            let grace = grace_period(&h.pod());
            let _ = tokio::time::timeout(grace + Duration::from_secs(5), t).await;
        }
        h.changed.notify_one();
        volumes::teardown(h.paths.dir());
        wait_deleted_or_evicted(&h, &mut rx).await;
    }
    let pod = h.pod();
    let grace = if h.gone.load(Ordering::Acquire) {
        Duration::ZERO
    } else {
        grace_period(&pod)
    };
    tracing::debug!(pod = %h.name, ns = %h.namespace, ?grace, "stopping pod");
    let _ = stop_tx.send(true);
    if let Some(t) = pod_task {
        // Supervisors stop their runs within the grace period; this bound only guards
        // against a runtime that does not return.
        let _ = tokio::time::timeout(grace + Duration::from_secs(5), t).await;
    }
    writer.abort();
    volumes::teardown(h.paths.dir());
    sandbox::release_net(&agent, &h).await;
    if !h.gone.load(Ordering::Acquire) {
        let api: Api<Pod> = Api::namespaced(agent.client.clone(), &h.namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(h.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&h.name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %h.name, error = %e, "final delete of the pod failed"),
        }
    }
    agent.pods.remove(&h.uid);
}

/// Volumes, init containers, then all containers under supervisors.
async fn run_containers(agent: Arc<Agent>, h: Arc<PodHandle>, stop: watch::Receiver<bool>) {
    let pod = h.pod();
    // Volumes first; a missing ConfigMap keeps the pod in ContainerCreating and is retried.
    let Some(vols) = storage::prepare(&agent, &h, &pod, &stop).await else {
        return;
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".to_string());
    let initialized = h.shared().initialized;
    if !initialized {
        h.set_all_waiting(Waiting::PodInitializing, None);
        for c in spec.init_containers.iter().flatten() {
            let ok = supervise(
                agent.clone(),
                h.clone(),
                c.clone(),
                true,
                policy.clone(),
                vols.clone(),
                stop.clone(),
            )
            .await;
            if *stop.borrow() || agent.stopping.load(Ordering::SeqCst) {
                return;
            }
            if !ok {
                h.shared().init_failed = true;
                h.changed.notify_one();
                return;
            }
        }
        h.shared().initialized = true;
    }
    h.set_all_waiting(Waiting::ContainerCreating, None);
    let mut tasks = Vec::new();
    for c in spec.containers.iter() {
        tasks.push(tokio::spawn(supervise(
            agent.clone(),
            h.clone(),
            c.clone(),
            false,
            policy.clone(),
            vols.clone(),
            stop.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Sleep, unless the pod is stopping first. Returns true if it is stopping.
pub(super) async fn sleep_or_stop(stop: &watch::Receiver<bool>, d: Duration) -> bool {
    let mut stop = stop.clone();
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => true,
    };
    stopped || *stop.borrow()
}

/// Restart delay before run number `restart` (1-based): the first restart is immediate,
/// then 10 s doubling to 5 min, as the kubelet does.
pub fn backoff(restart: i32) -> Duration {
    if restart <= 1 {
        return Duration::ZERO;
    }
    let exp = (restart - 2).min(10) as u32;
    (BACKOFF_BASE * 2u32.pow(exp)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), Duration::from_secs(300));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }
}
