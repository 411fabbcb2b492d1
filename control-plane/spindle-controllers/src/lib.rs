//! `spindle-controllers` owns the control loops of the control plane: each is a reconcile
//! function over caches fed by list+watch (kube-runtime's watcher → store → work queue
//! with back-off → reconcile), talking to the API server through the same REST path as
//! any client (in-process, see `AppState::in_process_client`).

pub mod bootstrap;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod nodelifecycle;
pub mod replicaset;
pub mod runtime;

use std::time::Duration;

/// Settings of the controller manager.
#[derive(Clone, Debug)]
pub struct Options {
    /// A node whose Lease is older than this is NotReady (Kubernetes: 40 s).
    pub node_monitor_grace_period: Duration,
    /// Default toleration of node.kubernetes.io/{not-ready,unreachable}:NoExecute added to
    /// pods (Kubernetes: 300 s).
    pub default_not_ready_toleration: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            node_monitor_grace_period: Duration::from_secs(40),
            default_not_ready_toleration: Duration::from_secs(300),
        }
    }
}

/// Start every controller; returns when one of them fails.
pub async fn run_all(client: kube::Client, opts: Options) -> anyhow::Result<()> {
    let deploy_events = events::Recorder::new(client.clone(), "deployment-controller");
    let rs_events = events::Recorder::new(client.clone(), "replicaset-controller");
    // One pod cache for every controller: at tens of thousands of pods a copy per
    // controller is most of the control plane's memory.
    let rs_queue: std::sync::Arc<runtime::Queue<String>> = runtime::Queue::new();
    let ep_queue: std::sync::Arc<runtime::Queue<String>> = runtime::Queue::new();
    let pdb_queue: std::sync::Arc<runtime::Queue<String>> = runtime::Queue::new();
    let services = endpoints::services(&client, ep_queue.clone());
    let budgets = disruption::budgets(&client, pdb_queue.clone());
    let q = rs_queue.clone();
    let (eq, svcs) = (ep_queue.clone(), services.clone());
    let (dq, pdbs) = (pdb_queue.clone(), budgets.clone());
    let pods = runtime::informer(
        kube::Api::<k8s_openapi::api::core::v1::Pod>::all(client.clone()),
        runtime::watch_config(),
        Some(Box::new(replicaset::pod_index)),
        move |ch| {
            endpoints::on_pod_change(&eq, &svcs, &ch);
            disruption::on_pod_change(&dq, &pdbs, &ch);
            replicaset::on_pod_change(&q, ch);
        },
    );
    tokio::select! {
        r = deployment::run(client.clone(), deploy_events, pods.clone()) => r,
        r = replicaset::run(client.clone(), rs_events, rs_queue, pods.clone()) => r,
        r = endpoints::run(client.clone(), ep_queue, services, pods.clone()) => r,
        r = disruption::run(client.clone(), events::Recorder::new(client.clone(), "controllermanager"), pdb_queue, budgets, pods.clone()) => r,
        r = nodelifecycle::run(client.clone(), events::Recorder::new(client.clone(), "node-controller"), opts.clone(), pods) => r,
    }
}
