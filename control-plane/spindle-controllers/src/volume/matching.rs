//! Which PersistentVolume a claim binds to, as kube-controller-manager's
//! `findMatchingVolume` and `checkVolumeSatisfyClaim` decide: same class, enough
//! capacity, the claim's access modes and volume mode, its label selector, and of the
//! volumes that fit the one with the fewest access modes, then the smallest.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use spindle_meta::selector::Matcher;
pub use spindle_meta::storage::{claim_class, volume_class};
use spindle_meta::Quantity;

/// The volume's storage capacity; none when unset or unreadable.
pub fn volume_size(pv: &PersistentVolume) -> Option<Quantity> {
    let q = pv.spec.as_ref()?.capacity.as_ref()?.get("storage")?;
    Quantity::parse(&q.0).ok()
}

/// The storage the claim requests.
pub fn claim_request(pvc: &PersistentVolumeClaim) -> Option<Quantity> {
    let r = pvc.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    Quantity::parse(&r.get("storage")?.0).ok()
}

fn volume_modes(pv: &PersistentVolume) -> &[String] {
    pv.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
}

fn claim_modes(pvc: &PersistentVolumeClaim) -> &[String] {
    pvc.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
}

/// `CheckAccessModes`: the volume offers every mode the claim asks for.
fn access_modes_fit(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let have = volume_modes(pv);
    claim_modes(pvc).iter().all(|m| have.contains(m))
}

/// `CheckVolumeModeMismatches`: unset means Filesystem on both sides.
fn volume_mode_fits(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let claim = pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    let vol = pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    claim.unwrap_or("Filesystem") == vol.unwrap_or("Filesystem")
}

/// `IsVolumeBoundToClaim`: the volume's claimRef names this claim (and its uid, once set).
pub fn bound_to(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    if r.name != pvc.metadata.name || r.namespace != pvc.metadata.namespace {
        return false;
    }
    match r.uid.as_deref().filter(|u| !u.is_empty()) {
        Some(uid) => Some(uid) == pvc.metadata.uid.as_deref(),
        None => true,
    }
}

/// `checkVolumeSatisfyClaim`, with kube-controller-manager's reasons: why a volume the
/// claim names cannot be bound to it.
pub fn satisfies(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<(), &'static str> {
    let (Some(size), Some(want)) = (volume_size(pv), claim_request(pvc)) else {
        return Err("requested PV is too small");
    };
    if size < want {
        return Err("requested PV is too small");
    }
    if volume_class(pv) != claim_class(pvc) {
        return Err("storageClassName does not match");
    }
    if !volume_mode_fits(pvc, pv) {
        return Err("incompatible volumeMode");
    }
    if !access_modes_fit(pvc, pv) {
        return Err("incompatible accessMode");
    }
    Ok(())
}

/// Whether a node satisfies the volume's required node affinity (none: every node).
pub fn node_fits(pv: &PersistentVolume, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let Some(required) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    required.node_selector_terms.iter().any(|t| {
        let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
        let fields = t.match_fields.as_deref().unwrap_or(&[]);
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement(r, labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| requirement(r, (r.key == "metadata.name").then_some(name)))
    })
}

fn requirement(r: &k8s_openapi::api::core::v1::NodeSelectorRequirement, v: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !v.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" => {
            matches!((v.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((v.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// The node a WaitForFirstConsumer claim is being bound for, by name and labels.
pub struct ForNode<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// `findMatchingVolume`: the volume pre-bound to this claim if there is one that fits,
/// else of the Available, unclaimed volumes of its class that fit it (and its
/// selector, and `node` when binding was delayed for a pod), the one with the fewest
/// access modes, then the smallest capacity. With `delayed` and no node, only a
/// pre-bound volume is taken: the rest waits for the pod's node.
pub fn best_match<'a>(
    pvc: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    delayed: bool,
    node: Option<ForNode<'_>>,
) -> Option<&'a PersistentVolume> {
    // No selector means any volume (unlike a controller's selector, where nil selects
    // nothing); a malformed one matches none.
    let selector = match pvc.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        None => Matcher::everything(),
        Some(s) => Matcher::try_from_label_selector(Some(s)).ok()?,
    };
    let want = claim_request(pvc)?;
    let class = claim_class(pvc);
    let mut best: Option<(&PersistentVolume, usize, Quantity)> = None;
    for pv in volumes {
        if pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(size) = volume_size(pv) else {
            continue;
        };
        if size < want || !volume_mode_fits(pvc, pv) || !access_modes_fit(pvc, pv) {
            continue;
        }
        let on_node = node
            .as_ref()
            .is_none_or(|n| node_fits(pv, n.labels, n.name));
        if bound_to(pv, pvc) {
            // Pre-bound by the user: this volume or none (kube only checks the node).
            return on_node.then_some(pv);
        }
        if delayed && node.is_none() {
            continue;
        }
        let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
        let claimed = pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_some());
        if phase != Some("Available") || claimed || !on_node || volume_class(pv) != class {
            continue;
        }
        if !selector.matches(pv.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())) {
            continue;
        }
        let modes = volume_modes(pv).len();
        let better = best
            .as_ref()
            .is_none_or(|(_, m, s)| (modes, size) < (*m, *s));
        if better {
            best = Some((pv, modes, size));
        }
    }
    best.map(|(pv, _, _)| pv)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pv(name: &str, size: &str, modes: &[&str], class: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"tier": name}},
            "spec": {"capacity": {"storage": size}, "accessModes": modes,
                "storageClassName": class, "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}
        }))
        .expect("a PV")
    }

    fn pvc(size: &str, modes: &[&str], class: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "default", "uid": "u1"},
            "spec": {"accessModes": modes, "storageClassName": class,
                "resources": {"requests": {"storage": size}}}
        }))
        .expect("a PVC")
    }

    fn name(pv: Option<&PersistentVolume>) -> Option<&str> {
        pv.and_then(|p| p.metadata.name.as_deref())
    }

    #[test]
    fn the_smallest_volume_that_fits_wins() {
        let vols = [
            pv("big", "10Gi", &["ReadWriteOnce"], "manual"),
            pv("small", "1Gi", &["ReadWriteOnce"], "manual"),
            pv("fits", "2Gi", &["ReadWriteOnce"], "manual"),
            pv("other-class", "2Gi", &["ReadWriteOnce"], "fast"),
        ];
        let claim = pvc("1500Mi", &["ReadWriteOnce"], "manual");
        assert_eq!(name(best_match(&claim, &vols, false, None)), Some("fits"));
        let huge = pvc("20Gi", &["ReadWriteOnce"], "manual");
        assert_eq!(name(best_match(&huge, &vols, false, None)), None);
    }

    #[test]
    fn access_modes_and_fewest_modes_first() {
        let vols = [
            pv("rwo-rwx", "1Gi", &["ReadWriteOnce", "ReadWriteMany"], ""),
            pv("rwo", "5Gi", &["ReadWriteOnce"], ""),
            pv("rox", "1Gi", &["ReadOnlyMany"], ""),
        ];
        let claim = pvc("1Gi", &["ReadWriteOnce"], "");
        assert_eq!(name(best_match(&claim, &vols, false, None)), Some("rwo"));
        let many = pvc("1Gi", &["ReadWriteMany"], "");
        assert_eq!(name(best_match(&many, &vols, false, None)), Some("rwo-rwx"));
    }

    #[test]
    fn selector_mode_phase_and_claims_are_respected() {
        let mut bound = pv("bound", "1Gi", &["ReadWriteOnce"], "");
        bound.spec.as_mut().expect("spec").claim_ref = Some(Default::default());
        let mut block = pv("block", "1Gi", &["ReadWriteOnce"], "");
        block.spec.as_mut().expect("spec").volume_mode = Some("Block".into());
        let mut released = pv("released", "1Gi", &["ReadWriteOnce"], "");
        released.status.as_mut().expect("status").phase = Some("Released".into());
        let labelled = pv("gold", "3Gi", &["ReadWriteOnce"], "");
        let vols = [bound, block, released, labelled];
        let mut claim = pvc("1Gi", &["ReadWriteOnce"], "");
        assert_eq!(name(best_match(&claim, &vols, false, None)), Some("gold"));
        claim.spec.as_mut().expect("spec").selector =
            serde_json::from_value(json!({"matchLabels": {"tier": "silver"}})).ok();
        assert_eq!(name(best_match(&claim, &vols, false, None)), None);
    }

    #[test]
    fn a_pre_bound_volume_is_taken_and_delayed_claims_wait_for_a_node() {
        let mut mine = pv("mine", "8Gi", &["ReadWriteOnce"], "local");
        mine.spec.as_mut().expect("spec").claim_ref =
            serde_json::from_value(json!({"namespace": "default", "name": "c"})).ok();
        let mut on_n2 = pv("on-n2", "1Gi", &["ReadWriteOnce"], "local");
        on_n2.spec.as_mut().expect("spec").node_affinity = serde_json::from_value(json!({
            "required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}
        }))
        .ok();
        let claim = pvc("1Gi", &["ReadWriteOnce"], "local");
        assert_eq!(
            name(best_match(&claim, [&mine, &on_n2], false, None)),
            Some("mine")
        );
        assert_eq!(name(best_match(&claim, [&on_n2], true, None)), None);
        let labels =
            |n: &str| BTreeMap::from([("kubernetes.io/hostname".to_string(), n.to_string())]);
        let (l1, l2) = (labels("n1"), labels("n2"));
        let n1 = ForNode {
            name: "n1",
            labels: &l1,
        };
        assert_eq!(name(best_match(&claim, [&on_n2], true, Some(n1))), None);
        let n2 = ForNode {
            name: "n2",
            labels: &l2,
        };
        assert_eq!(
            name(best_match(&claim, [&on_n2], true, Some(n2))),
            Some("on-n2")
        );
    }

    #[test]
    fn a_named_volume_says_why_it_does_not_fit() {
        let v = pv("v", "1Gi", &["ReadOnlyMany"], "manual");
        assert_eq!(
            satisfies(&v, &pvc("2Gi", &["ReadOnlyMany"], "manual")),
            Err("requested PV is too small")
        );
        assert_eq!(
            satisfies(&v, &pvc("1Gi", &["ReadOnlyMany"], "fast")),
            Err("storageClassName does not match")
        );
        assert_eq!(
            satisfies(&v, &pvc("1Gi", &["ReadWriteOnce"], "manual")),
            Err("incompatible accessMode")
        );
        assert_eq!(
            satisfies(&v, &pvc("1Gi", &["ReadOnlyMany"], "manual")),
            Ok(())
        );
    }
}
