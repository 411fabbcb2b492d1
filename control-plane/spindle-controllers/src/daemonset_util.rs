//! The DaemonSet controller's decisions, free of I/O: what a daemon pod looks like, which
//! nodes should run one, how a rolling update picks its next steps, and the status
//! counts. Each follows kube-controller-manager's daemon controller (`daemon_controller.go`,
//! `update.go`, `util/daemonset_util.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSetSpec;
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::deployment::util::scaled_value;

/// The label naming the ControllerRevision a daemon pod was made from.
pub use crate::history::HASH_LABEL;
/// The label kube still sets with the DaemonSet's template generation.
pub const GENERATION_LABEL: &str = "pod-template-generation";

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// NoSchedule taints the node lifecycle controller and kubelet set that a daemon
/// ignores: a node's own agents must run even on a node under pressure or cordoned.
const NO_SCHEDULE_TOLERATED: &[&str] = &[
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable",
];
/// Tolerated by host-network daemons only: they are the network.
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

fn exists(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Add the tolerations kube gives every daemon pod (replacing a user's toleration of the
/// same key, operator and effect). not-ready and unreachable carry no tolerationSeconds:
/// a daemon is never evicted from its own node.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        exists(NOT_READY, "NoExecute"),
        exists(UNREACHABLE, "NoExecute"),
    ];
    wanted.extend(
        NO_SCHEDULE_TOLERATED
            .iter()
            .map(|k| exists(k, "NoSchedule")),
    );
    if spec.host_network == Some(true) {
        wanted.push(exists(NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for w in wanted {
        tols.retain(|t| {
            !(t.key == w.key
                && t.operator.as_deref().unwrap_or("Equal") == "Exists"
                && t.effect == w.effect)
        });
        tols.push(w);
    }
}

/// The pod template the DaemonSet's pods are made from, tolerations included (what the
/// node checks judge, so they see the tolerations the pod will have).
pub fn daemon_template(spec: &DaemonSetSpec) -> PodTemplateSpec {
    let mut t = spec.template.clone();
    add_daemon_tolerations(t.spec.get_or_insert_with(Default::default));
    t
}

/// Pin a daemon pod to `node` with a required node affinity on `metadata.name`, replacing
/// the required terms (the controller has checked them) and keeping the preferred ones,
/// as kube does so that the default scheduler binds the pod.
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        ..Default::default()
    };
    let aff = spec.affinity.get_or_insert_with(Affinity::default);
    let na = aff.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

/// The node a daemon pod is for: where it is bound, or where its affinity pins it.
pub fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let one = r.key == "metadata.name" && r.operator == "In";
            match r.values.as_deref() {
                Some([v]) if one => Some(v.clone()),
                _ => None,
            }
        })
    })
}

/// (should run, may keep running) for a node, as kube's NodeShouldRunDaemonPod: a node
/// that does not match the selectors (or lacks the runtime) runs nothing; one whose
/// taints are not tolerated gets no new pod, and a pod already there stays unless a
/// NoExecute taint is not tolerated.
pub fn should_run(fit: spindle_scheduler::NodeFit) -> (bool, bool) {
    if !fit.placeable {
        return (false, false);
    }
    if !fit.tolerated {
        return (false, fit.may_stay);
    }
    (true, true)
}

/// Whether a pod is of the current revision.
pub fn is_updated(p: &Pod, hash: &str) -> bool {
    !hash.is_empty()
        && p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .is_some_and(|h| h == hash)
}

/// The labels of a new daemon pod: the template's, with the revision hash and the
/// template generation.
pub fn pod_labels(t: &PodTemplateSpec, hash: &str, generation: i64) -> BTreeMap<String, String> {
    let mut l = t
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    l.insert(HASH_LABEL.into(), hash.into());
    l.insert(GENERATION_LABEL.into(), generation.to_string());
    l
}

/// Whether the update strategy is RollingUpdate (the default).
pub fn is_rolling(spec: &DaemonSetSpec) -> bool {
    spec.update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// (maxSurge, maxUnavailable) over `desired` nodes, both rounded up as kube's
/// SurgeCount/UnavailableCount do; when both are 0 one node may be unavailable.
pub fn max_counts(spec: &DaemonSetSpec, desired: i32) -> Result<(i32, i32), String> {
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let one = IntOrString::Int(1);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true)?;
    let unavailable = scaled_value(
        ru.map_or(Some(&one), |r| r.max_unavailable.as_ref()),
        desired,
        true,
    )?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// One node's daemon pods during a rolling update, not counting those being deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePods {
    pub node: String,
    /// None when the node has two pods of the same kind (the manage step cleans up).
    pub split: Option<(Option<PodState>, Option<PodState>)>,
}

/// A pod as the rolling update sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    pub available: bool,
}

impl NodePods {
    /// Sort `pods` (not being deleted) into the new one and the old one.
    pub fn new(node: &str, pods: impl IntoIterator<Item = (PodState, bool)>) -> NodePods {
        let (mut new, mut old) = (None, None);
        for (p, updated) in pods {
            let slot = if updated { &mut new } else { &mut old };
            if slot.is_some() {
                return NodePods {
                    node: node.into(),
                    split: None,
                };
            }
            *slot = Some(p);
        }
        NodePods {
            node: node.into(),
            split: Some((new, old)),
        }
    }
}

/// The next step of a rolling update: old pods to delete and nodes to surge a new pod
/// onto. Without surge, old pods go while fewer than maxUnavailable nodes are
/// unavailable (an unavailable old pod may always go). With surge, new pods start
/// beside old ones on up to maxSurge nodes, and an old pod goes once its new one is
/// available.
pub fn rolling_step(
    nodes: &[NodePods],
    max_surge: i32,
    max_unavailable: i32,
) -> (Vec<String>, Vec<String>) {
    if max_surge == 0 {
        let (mut unavailable, mut allowed, mut candidates) = (0, Vec::new(), Vec::new());
        for n in nodes {
            match &n.split {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => unavailable += i32::from(!new.available),
                Some((None, Some(old))) if !old.available => allowed.push(old.name.clone()),
                Some((None, Some(_))) if unavailable >= max_unavailable => {}
                Some((None, Some(old))) => candidates.push(old.name.clone()),
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
        allowed.extend(candidates.into_iter().take(room));
        return (allowed, Vec::new());
    }
    let (mut surging, mut allowed, mut candidates, mut deletes) = (0, vec![], vec![], vec![]);
    for n in nodes {
        match &n.split {
            None => surging += 1,
            Some((_, None)) => {}
            Some((None, Some(old))) if !old.available => allowed.push(n.node.clone()),
            Some((None, Some(_))) if surging >= max_surge => {}
            Some((None, Some(_))) => candidates.push(n.node.clone()),
            Some((Some(new), Some(_))) if !new.available => surging += 1,
            Some((Some(_), Some(old))) => deletes.push(old.name.clone()),
        }
    }
    let room = (max_surge - surging).clamp(0, candidates.len() as i32) as usize;
    allowed.extend(candidates.into_iter().take(room));
    (deletes, allowed)
}

#[cfg(test)]
#[path = "daemonset_util_tests.rs"]
mod tests;
