//! A StatefulSet pod's identity, free of I/O, as kube's `stateful_set_utils.go` defines
//! it: the name `<set>-<ordinal>`, the labels naming the pod, its index and its revision,
//! the hostname and subdomain that give it a DNS name under the governing Service, and
//! the claims of its volumeClaimTemplates.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::ResourceExt;

use crate::controller_ref::owner_reference;
use crate::replicaset::{is_available, is_ready};

/// The label with the pod's own name, which a per-pod Service can select.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label naming the ControllerRevision the pod was made from.
pub use crate::history::HASH_LABEL as REVISION_LABEL;

/// The parent name and ordinal a pod name encodes (`web-2` → `("web", 2)`).
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

/// The ordinal of a pod of the set, if its name has one.
pub fn ordinal_of(p: &Pod) -> Option<i32> {
    parent_and_ordinal(p.metadata.name.as_deref()?).map(|(_, o)| o)
}

/// Whether a pod's name makes it one of the set's (kube's isMemberOf).
pub fn is_member(set: &StatefulSet, p: &Pod) -> bool {
    p.metadata
        .name
        .as_deref()
        .and_then(parent_and_ordinal)
        .is_some_and(|(parent, _)| Some(parent) == set.metadata.name.as_deref())
}

/// The first ordinal (`spec.ordinals.start`, default 0).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set.name_any())
}

/// `<template>-<set>-<ordinal>`: the claim of one volumeClaimTemplate for one pod.
pub fn claim_name(template: &str, set: &StatefulSet, ordinal: i32) -> String {
    format!("{template}-{}-{ordinal}", set.name_any())
}

/// The revision a pod was made from (its `controller-revision-hash` label).
pub fn revision_of(p: &Pod) -> &str {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

pub fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

pub fn is_failed(p: &Pod) -> bool {
    phase(p) == Some("Failed")
}

pub fn is_succeeded(p: &Pod) -> bool {
    phase(p) == Some("Succeeded")
}

pub fn is_pending(p: &Pod) -> bool {
    phase(p) == Some("Pending")
}

pub fn is_running_and_ready(p: &Pod) -> bool {
    phase(p) == Some("Running") && is_ready(p)
}

pub fn is_running_and_available(p: &Pod, min_ready: i64, now: Timestamp) -> bool {
    phase(p) == Some("Running") && is_available(p, min_ready, now)
}

/// Running, Ready for minReadySeconds, and not going away.
pub fn is_healthy(p: &Pod, min_ready: i64, now: Timestamp) -> bool {
    is_running_and_available(p, min_ready, now) && !is_terminating(p)
}

/// Whether a member pod still has the labels of its ordinal (its name and index).
pub fn identity_matches(p: &Pod) -> bool {
    let Some((_, ord)) = p.metadata.name.as_deref().and_then(parent_and_ordinal) else {
        return false;
    };
    let labels = p.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(POD_NAME_LABEL) == p.metadata.name.as_deref()
        && label(POD_INDEX_LABEL) == Some(ord.to_string().as_str())
}

/// The identity labels of the pod of `ordinal`.
pub fn identity_labels(set: &StatefulSet, ordinal: i32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POD_NAME_LABEL.to_string(), pod_name(set, ordinal)),
        (POD_INDEX_LABEL.to_string(), ordinal.to_string()),
    ])
}

/// The pod of `ordinal` made from `template` (the set's template at `revision`), as
/// kube's newStatefulSetPod: the template's labels and annotations, the identity and
/// revision labels, the hostname and the governing Service as subdomain, owned by the set.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let name = pod_name(set, ordinal);
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.extend(identity_labels(set, ordinal));
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            generate_name: Some(format!("{}-", set.name_any())),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner_reference(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The counts of the set's status over its pods, as kube's computeReplicaStatus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
    pub current: i32,
    pub updated: i32,
}

pub fn counts(
    pods: &[Arc<Pod>],
    min_ready: i64,
    now: Timestamp,
    current_revision: &str,
    update_revision: &str,
) -> Counts {
    let mut c = Counts::default();
    for p in pods {
        c.replicas += 1;
        if is_running_and_ready(p) {
            c.ready += 1;
            c.available += i32::from(is_running_and_available(p, min_ready, now));
        }
        if !is_terminating(p) {
            c.current += i32::from(revision_of(p) == current_revision);
            c.updated += i32::from(revision_of(p) == update_revision);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;

    fn set() -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                service_name: Some("nginx".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn names_carry_parent_and_ordinal() {
        assert_eq!(parent_and_ordinal("web-2"), Some(("web", 2)));
        assert_eq!(parent_and_ordinal("my-web-10"), Some(("my-web", 10)));
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web-x1"), None);
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(claim_name("data", &set(), 3), "data-web-3");
    }

    #[test]
    fn a_new_pod_has_its_identity() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            spec: Some(Default::default()),
        };
        let p = new_pod(&set(), &t, "web-abc", 1);
        assert_eq!(p.metadata.name.as_deref(), Some("web-1"));
        let l = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(l.get("app").map(String::as_str), Some("web"));
        assert_eq!(l.get(POD_NAME_LABEL).map(String::as_str), Some("web-1"));
        assert_eq!(l.get(POD_INDEX_LABEL).map(String::as_str), Some("1"));
        assert_eq!(revision_of(&p), "web-abc");
        let spec = p.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let owner = &p.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("StatefulSet", Some(true))
        );
        assert!(identity_matches(&p));
        let mut relabelled = p.clone();
        relabelled
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .remove(POD_NAME_LABEL);
        assert!(!identity_matches(&relabelled));
    }
}
