//! The pod's status writer: one pods/status merge patch whenever something the agent
//! knows of the pod changed, bursts coalesced, unchanged statuses not written.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use super::PodHandle;
use crate::status::{self, PodView};
use crate::Agent;

/// How long the first status write of a pod waits for its containers to start.
const FIRST_STATUS_GRACE: Duration = Duration::from_millis(20);

/// Write the pod's status whenever something changed, coalescing bursts.
pub(super) async fn write_status_loop(agent: Arc<Agent>, h: Arc<PodHandle>) {
    let api: Api<Pod> = Api::namespaced(agent.client.clone(), &h.namespace);
    let host_ip = agent.node_ip.to_string();
    let mut last: Option<serde_json::Value> = None;
    loop {
        h.changed.notified().await;
        if last.is_none() {
            // A cached image starts in about a millisecond: give the first status a moment
            // so ContainerCreating and Running become one write instead of two in a row.
            let _ = tokio::time::timeout(FIRST_STATUS_GRACE, h.changed.notified()).await;
        }
        let pod = h.pod();
        let restart_policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let status: PodStatus = {
            let sh = h.shared();
            status::pod_status(&PodView {
                inits: &sh.inits,
                containers: &sh.containers,
                initialized: sh.initialized,
                restart_policy: &restart_policy,
                start_time: sh.start_time,
                host_ip: &host_ip,
                pod_ip: sh.pod_ip.as_deref(),
                init_failed: sh.init_failed,
                evicted: sh.evicted.as_deref(),
                previous: pod.status.as_ref(),
            })
        };
        if status.phase.as_deref() == Some("Running") {
            let previous = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            h.running(previous);
        }
        let Ok(value) = serde_json::to_value(&status) else {
            continue;
        };
        if last.as_ref() == Some(&value) {
            continue;
        }
        let patch = json!({"status": value});
        match api
            .patch_status(&h.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => last = Some(patch["status"].clone()),
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) => {
                tracing::debug!(pod = %h.name, error = %e, "writing pod status; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                h.changed.notify_one();
            }
        }
    }
}
