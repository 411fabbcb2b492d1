//! The scheduler's node-level rules for other components: whether a node could take a
//! pod by its labels, taints and runtime, leaving out resources and other pods. Kubernetes'
//! DaemonSet controller asks exactly this (`NodeShouldRunDaemonPod`) before it makes a
//! daemon pod for a node, so both judge a node the same way.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::algorithm::{matches_node_affinity, tolerates_taints, CONTAINERD_LABEL};
use crate::model::{NodeInfo, PodRecord, SchedPod};

/// A pod parsed once, to be judged against many nodes.
pub struct PodFit(Arc<SchedPod>);

/// How a node suits a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFit {
    /// nodeSelector, required node affinity and the container runtime the pod needs.
    pub placeable: bool,
    /// Every NoSchedule and NoExecute taint is tolerated.
    pub tolerated: bool,
    /// Every NoExecute taint is tolerated: a pod already there may stay.
    pub may_stay: bool,
}

impl PodFit {
    pub fn new(pod: &Pod) -> PodFit {
        PodFit(PodRecord::from_pod(pod, "").pod)
    }

    pub fn on(&self, node: &Node) -> NodeFit {
        let (pod, node) = (&self.0, NodeInfo::from_node(node));
        let runtime_ok = !pod.needs_containers
            || node.labels.get(CONTAINERD_LABEL).map(String::as_str) == Some("true");
        let no_execute_ok = node
            .taints
            .iter()
            .filter(|t| t.effect == "NoExecute")
            .all(|t| pod.tolerations.iter().any(|tol| tol.tolerates(t)));
        NodeFit {
            placeable: runtime_ok && matches_node_affinity(pod, &node),
            tolerated: tolerates_taints(pod, &node),
            may_stay: no_execute_ok,
        }
    }
}
