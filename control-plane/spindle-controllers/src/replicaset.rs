//! ReplicaSet (apps/v1): what the replica controller ([`crate::replicas`]) needs to
//! know about the kind, and the pod predicates the controllers share.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use spindle_meta::selector::Matcher;

use crate::controller_ref::controller_uid;
use crate::replicas::{Counts, ReplicaKind};

impl ReplicaKind for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset";
    const COMPONENT: &'static str = "replicaset-controller";

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.spec
            .as_ref()
            .is_some_and(|s| Matcher::for_controller(Some(&s.selector)).matches(labels))
    }

    fn counts(&self) -> Counts {
        let s = self.status.clone().unwrap_or_default();
        Counts {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation,
        }
    }
}

pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Ready condition and when it last changed.
pub fn ready_since(p: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(k8s_openapi::jiff::Timestamp::now),
    )
}

pub fn is_available(p: &Pod, min_ready: i64, now: k8s_openapi::jiff::Timestamp) -> bool {
    match ready_since(p) {
        Some(t) => min_ready <= 0 || t.as_second() + min_ready <= now.as_second(),
        None => false,
    }
}

/// Index values of the shared pod cache: by controlling owner (or as an orphan of its
/// namespace, which controllers may adopt), by namespace and by node.
pub fn pod_index(p: &Pod) -> Vec<String> {
    let ns = p.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = vec![match controller_uid(&p.metadata) {
        Some(u) => format!("owner/{u}"),
        None => format!("orphan/{ns}"),
    }];
    // By namespace too, for the endpoints controller's selector scans.
    out.push(format!("ns/{ns}"));
    if let Some(n) = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        out.push(format!("node/{n}"));
    }
    out
}
