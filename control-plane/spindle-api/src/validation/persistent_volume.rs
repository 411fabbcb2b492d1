//! PersistentVolumes and PersistentVolumeClaims, as kube-apiserver's
//! `ValidatePersistentVolume(Update)` and `ValidatePersistentVolumeClaim(Update)` word
//! them (field paths included, odd ones such as `spec.resources[storage]` and the
//! top-level `volumeMode` of the update checks too).

use serde_json::{json, Value};
use spindle_meta::Quantity;

use super::pod::{validate_host_path, validate_no_backsteps};
use super::workload::validate_label_selector;
use super::{is_dns1123_subdomain, is_qualified_name, FieldError, SUBDOMAIN_MSG};

/// Kubernetes' supported access modes, sorted as its "supported values" list prints them.
const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

/// The members of a PersistentVolumeSpec that name its source, in the order
/// `ValidatePersistentVolumeSpec` looks at them (the second one found is reported).
const PV_SOURCES: &[&str] = &[
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "hostPath",
    "glusterfs",
    "flexVolume",
    "nfs",
    "rbd",
    "quobyte",
    "cinder",
    "cephfs",
    "iscsi",
    "fc",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

const POSITIVE: &str = "must be greater than zero";

/// A quantity written as a JSON string or number.
fn quantity(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// `ValidatePositiveQuantityValue`, and the quantity syntax the decoder checks in Go.
fn positive_quantity(v: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match Quantity::parse(&text) {
        Err(e) => errs.push(FieldError::invalid(field, v, &e.to_string())),
        Ok(q) if q.is_negative() || q.is_zero() => {
            errs.push(FieldError::invalid(field, &json!(q.to_string()), POSITIVE))
        }
        Ok(_) => {}
    }
}

fn access_modes(modes: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let modes = modes
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for m in modes {
        if !m.as_str().is_some_and(|m| ACCESS_MODES.contains(&m)) {
            errs.push(FieldError::not_supported(field, m, ACCESS_MODES));
        }
    }
    let once_pod = modes.iter().any(|m| m == "ReadWriteOncePod");
    if once_pod && modes.len() > 1 {
        errs.push(FieldError::forbidden(
            field,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// `ValidateClassName`: a storage class name is a DNS subdomain.
fn class_name(v: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(name) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return;
    };
    if !is_dns1123_subdomain(name) {
        errs.push(FieldError::invalid(field, &json!(name), SUBDOMAIN_MSG));
    }
}

fn volume_mode(v: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(m) = v.filter(|m| !m.is_null()) {
        if !m.as_str().is_some_and(|m| VOLUME_MODES.contains(&m)) {
            errs.push(FieldError::not_supported(field, m, VOLUME_MODES));
        }
    }
}

/// `ValidateNodeSelector` for a PV's `nodeAffinity.required`.
fn node_selector(sel: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let terms = sel
        .get("nodeSelectorTerms")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if terms.is_empty() {
        errs.push(FieldError::required_because(
            &format!("{field}.nodeSelectorTerms"),
            "must have at least one node selector term",
        ));
    }
    for (i, term) in terms.iter().enumerate() {
        for list in ["matchExpressions", "matchFields"] {
            let reqs = term.get(list).and_then(Value::as_array);
            for (j, r) in reqs.into_iter().flatten().enumerate() {
                let f = format!("{field}.nodeSelectorTerms[{i}].{list}[{j}]");
                node_selector_requirement(r, &f, errs);
            }
        }
    }
}

fn node_selector_requirement(r: &Value, f: &str, errs: &mut Vec<FieldError>) {
    let key = r.get("key").and_then(Value::as_str).unwrap_or("");
    if !is_qualified_name(key) {
        errs.push(FieldError::invalid(&format!("{f}.key"), &json!(key), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
    }
    let n = r
        .get("values")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let values = format!("{f}.values");
    match r.get("operator").and_then(Value::as_str).unwrap_or("") {
        "In" | "NotIn" if n == 0 => errs.push(FieldError::required_because(
            &values,
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if n > 0 => errs.push(FieldError::forbidden(
            &values,
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if n != 1 => errs.push(FieldError::required_because(
            &values,
            "must be specified single value when `operator` is 'Lt' or 'Gt'",
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
        other => errs.push(FieldError::invalid(
            &format!("{f}.operator"),
            &json!(other),
            "not a valid selector operator",
        )),
    }
}

/// `ValidatePersistentVolume`: the spec of a PersistentVolume.
pub(crate) fn validate_persistent_volume(obj: &Value, errs: &mut Vec<FieldError>) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let modes = spec.get("accessModes");
    if modes.and_then(Value::as_array).is_none_or(|a| a.is_empty()) {
        errs.push(FieldError::required("spec.accessModes"));
    }
    access_modes(modes, "spec.accessModes", errs);

    let cap = spec.get("capacity").and_then(Value::as_object);
    let cap_len = cap.map_or(0, |c| c.len());
    if cap_len == 0 {
        errs.push(FieldError::required("spec.capacity"));
    }
    if cap.is_none_or(|c| !c.contains_key("storage") || c.len() > 1) {
        let keys: Vec<Value> = cap.into_iter().flatten().map(|(k, _)| json!(k)).collect();
        errs.push(FieldError::not_supported(
            "spec.capacity",
            &Value::Array(keys),
            &["storage"],
        ));
    }
    for (k, v) in cap.into_iter().flatten() {
        positive_quantity(v, &format!("spec.capacity[{k}]"), errs);
    }

    class_name(spec.get("storageClassName"), "spec.storageClassName", errs);
    let policy = spec.get("persistentVolumeReclaimPolicy");
    if let Some(p) = policy.filter(|p| !p.is_null()) {
        if !p.as_str().is_some_and(|p| RECLAIM_POLICIES.contains(&p)) {
            errs.push(FieldError::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                p,
                RECLAIM_POLICIES,
            ));
        }
    }

    let mut found = 0;
    for src in PV_SOURCES {
        if spec.get(*src).is_none_or(Value::is_null) {
            continue;
        }
        found += 1;
        if found > 1 {
            errs.push(FieldError::forbidden(
                &format!("spec.{src}"),
                "may not specify more than 1 volume type",
            ));
        }
    }
    if found == 0 {
        errs.push(FieldError::required_because(
            "spec",
            "must specify a volume type",
        ));
    }
    if let Some(hp) = spec.get("hostPath").filter(|h| !h.is_null()) {
        validate_host_path(hp, "spec.hostPath", errs);
        let path = hp.get("path").and_then(Value::as_str).unwrap_or("");
        let root = !path.is_empty() && path.trim_end_matches('/').is_empty();
        if root && policy.and_then(Value::as_str) == Some("Recycle") {
            errs.push(FieldError::forbidden(
                "spec.persistentVolumeReclaimPolicy",
                "may not be 'recycle' for a hostPath volume pointing to the root directory",
            ));
        }
    }
    if let Some(local) = spec.get("local").filter(|l| !l.is_null()) {
        match local.get("path").and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(FieldError::required("spec.local.path")),
            p => validate_no_backsteps(p, "spec.local.path", errs),
        }
    }

    let affinity = spec.get("nodeAffinity").filter(|a| !a.is_null());
    if let Some(a) = affinity {
        match a.get("required").filter(|r| !r.is_null()) {
            Some(r) => node_selector(r, "spec.nodeAffinity.required", errs),
            None => errs.push(FieldError::required_because(
                "spec.nodeAffinity.required",
                "must specify required node constraints",
            )),
        }
    }
    if spec.get("local").is_some_and(|l| !l.is_null()) && affinity.is_none() {
        errs.push(FieldError::required_because(
            "spec.nodeAffinity",
            "Local volume requires node affinity",
        ));
    }
    volume_mode(spec.get("volumeMode"), "spec.volumeMode", errs);
}

/// `ValidatePersistentVolumeUpdate`: the source, the volume mode and a node affinity
/// once set stay as they are (the field paths are kube-apiserver's, `volumeMode` and
/// `nodeAffinity` without `spec.` among them).
pub(crate) fn validate_persistent_volume_update(
    old: &Value,
    new: &Value,
    errs: &mut Vec<FieldError>,
) {
    let source = |v: &Value| -> Vec<(&'static str, Value)> {
        PV_SOURCES
            .iter()
            .filter_map(|s| {
                let v = v.pointer(&format!("/spec/{s}")).filter(|v| !v.is_null())?;
                Some((*s, v.clone()))
            })
            .collect()
    };
    if source(old) != source(new) {
        errs.push(FieldError::forbidden(
            "spec.persistentvolumesource",
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    immutable(old, new, "/spec/volumeMode", "volumeMode", errs);
    if old
        .pointer("/spec/nodeAffinity")
        .is_some_and(|a| !a.is_null())
    {
        immutable(old, new, "/spec/nodeAffinity", "nodeAffinity", errs);
    }
}

fn immutable(old: &Value, new: &Value, pointer: &str, field: &str, errs: &mut Vec<FieldError>) {
    let (o, n) = (old.pointer(pointer), new.pointer(pointer));
    if o != n {
        errs.push(FieldError::invalid(
            field,
            n.unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}

/// `ValidatePersistentVolumeClaimSpec`.
pub(crate) fn validate_persistent_volume_claim(obj: &Value, errs: &mut Vec<FieldError>) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let modes = spec.get("accessModes");
    if modes.and_then(Value::as_array).is_none_or(|a| a.is_empty()) {
        errs.push(FieldError::required_because(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
        validate_label_selector(sel, "spec.selector", errs);
    }
    access_modes(modes, "spec.accessModes", errs);
    match spec.pointer("/resources/requests/storage") {
        None | Some(Value::Null) => errs.push(FieldError::required("spec.resources[storage]")),
        Some(v) => positive_quantity(v, "spec.resources[storage]", errs),
    }
    class_name(spec.get("storageClassName"), "spec.storageClassName", errs);
    volume_mode(spec.get("volumeMode"), "spec.volumeMode", errs);
}

/// `ValidatePersistentVolumeClaimUpdate`: the spec is immutable but for the volume name
/// (set once, by the binder) and, on a bound claim, growth of its storage request.
/// Shrinking is refused as kube-apiserver 1.33 refuses it with
/// RecoverVolumeExpansionFailure (on by default): never to or below the capacity
/// the volume has.
pub(crate) fn validate_persistent_volume_claim_update(
    old: &Value,
    new: &Value,
    errs: &mut Vec<FieldError>,
) {
    let null = Value::Null;
    let mut old_spec = old.get("spec").unwrap_or(&null).clone();
    let mut new_spec = new.get("spec").unwrap_or(&null).clone();
    let unset = |v: &Value| {
        v.get("volumeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    };
    if unset(&old_spec) {
        copy_member(&new_spec, &mut old_spec, "volumeName");
    }
    // A claim stored before its class was defaulted may have it set once, as the
    // DefaultStorageClass admission does for claims created without one.
    if old_spec.get("storageClassName").is_none_or(Value::is_null) {
        copy_member(&new_spec, &mut old_spec, "storageClassName");
    }
    let bound = new.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    if bound {
        let old_req = old_spec.pointer("/resources/requests/storage").cloned();
        if let (Some(req), Some(r)) = (old_req, new_spec.pointer_mut("/resources/requests/storage"))
        {
            *r = req;
        }
    }
    if old_spec != new_spec {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let size = |v: &Value, p: &str| v.pointer(p).and_then(quantity);
    let old_size = size(old, "/spec/resources/requests/storage");
    let new_size = size(new, "/spec/resources/requests/storage");
    if let (Some(o), Some(n)) = (old_size, new_size) {
        let status = size(old, "/status/capacity/storage");
        if n < o && status.is_some_and(|s| n <= s) {
            errs.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than status.capacity",
            ));
        }
    }
    immutable(old, new, "/spec/volumeMode", "volumeMode", errs);
}

fn copy_member(from: &Value, to: &mut Value, member: &str) {
    let Some(to) = to.as_object_mut() else {
        return;
    };
    match from.get(member) {
        Some(v) => to.insert(member.to_string(), v.clone()),
        None => to.remove(member),
    };
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::Registry;

    /// The errors kube-apiserver would print for a new object, `field: message`.
    fn errors(plural: &str, group: &str, obj: Value) -> Vec<String> {
        let reg = Registry::new();
        let kind = reg.by_resource(group, "v1", plural).expect("kind served");
        let mut obj = obj;
        kind.default_object(&mut obj);
        kind.validate(&obj).iter().map(|e| e.display()).collect()
    }

    fn update_errors(plural: &str, old: &Value, new: &Value) -> Vec<String> {
        let reg = Registry::new();
        let kind = reg.by_resource("", "v1", plural).expect("kind served");
        let mut errs = Vec::new();
        kind.strategy.validate_update(old, new, &mut errs);
        errs.iter().map(|e| e.display()).collect()
    }

    fn pv(spec: Value) -> Value {
        json!({"metadata": {"name": "pv1"}, "spec": spec})
    }

    fn pvc(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "c", "namespace": "default"}, "spec": spec, "status": status})
    }

    #[test]
    fn a_volume_needs_modes_capacity_and_one_source() {
        assert_eq!(
            errors("persistentvolumes", "", pv(json!({}))),
            [
                "spec.accessModes: Required value",
                "spec.capacity: Required value",
                "spec.capacity: Unsupported value: []: supported values: \"storage\"",
                "spec: Required value: must specify a volume type",
            ]
        );
        let good = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/srv/data"}});
        assert!(errors("persistentvolumes", "", pv(good.clone())).is_empty());
        let mut two = good.clone();
        two["local"] = json!({"path": "/mnt/x"});
        two["accessModes"] = json!(["ReadWriteOncePod", "ReadOnlyMany", "Sometimes"]);
        two["capacity"] = json!({"storage": "0"});
        assert_eq!(
            errors("persistentvolumes", "", pv(two)),
            [
                "spec.accessModes: Unsupported value: \"Sometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
                "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
                "spec.capacity[storage]: Invalid value: \"0\": must be greater than zero",
                "spec.local: Forbidden: may not specify more than 1 volume type",
                "spec.nodeAffinity: Required value: Local volume requires node affinity",
            ]
        );
    }

    #[test]
    fn a_volume_keeps_its_source_and_mode() {
        let old = pv(
            json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/a"}, "volumeMode": "Filesystem"}),
        );
        let mut new = old.clone();
        new["spec"]["hostPath"]["path"] = json!("/b");
        new["spec"]["volumeMode"] = json!("Block");
        new["spec"]["capacity"]["storage"] = json!("5Gi");
        assert_eq!(
            update_errors("persistentvolumes", &old, &new),
            [
                "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation",
                "volumeMode: Invalid value: \"Block\": field is immutable",
            ]
        );
    }

    #[test]
    fn a_claim_needs_modes_and_a_storage_request() {
        assert_eq!(
            errors("persistentvolumeclaims", "", pvc(json!({"storageClassName": "Bad_Name"}), json!({}))),
            [
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value",
                "spec.storageClassName: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            ]
        );
    }

    #[test]
    fn a_bound_claim_may_grow_but_not_shrink_or_change() {
        let spec = json!({"accessModes": ["ReadWriteOnce"], "volumeName": "pv1",
            "resources": {"requests": {"storage": "2Gi"}}});
        let bound = json!({"phase": "Bound", "capacity": {"storage": "2Gi"}});
        let old = pvc(spec, bound);
        let mut grow = old.clone();
        grow["spec"]["resources"]["requests"]["storage"] = json!("3Gi");
        assert!(update_errors("persistentvolumeclaims", &old, &grow).is_empty());
        let mut shrink = old.clone();
        shrink["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
        assert_eq!(
            update_errors("persistentvolumeclaims", &old, &shrink),
            ["spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"]
        );
        let mut modes = old.clone();
        modes["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(
            update_errors("persistentvolumeclaims", &old, &modes),
            ["spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"]
        );
        // An unbound claim gets its volume name once, from the binder; its size is fixed.
        let mut pending = pvc(
            json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}}}),
            json!({"phase": "Pending"}),
        );
        let mut named = pending.clone();
        named["spec"]["volumeName"] = json!("pv1");
        assert!(update_errors("persistentvolumeclaims", &pending, &named).is_empty());
        pending["spec"]["volumeName"] = json!("pv0");
        assert_eq!(
            update_errors("persistentvolumeclaims", &pending, &named).len(),
            1
        );
    }

    #[test]
    fn a_class_needs_a_provisioner_and_keeps_it() {
        let sc = |p: &str| json!({"metadata": {"name": "fast"}, "provisioner": p});
        assert_eq!(
            errors("storageclasses", "storage.k8s.io", sc("")),
            ["provisioner: Required value"]
        );
        let mut bad = sc("x.io/p");
        bad["volumeBindingMode"] = json!("Later");
        bad["reclaimPolicy"] = json!("Recycle");
        assert_eq!(
            errors("storageclasses", "storage.k8s.io", bad),
            [
                "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
                "volumeBindingMode: Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\"",
            ]
        );
        let reg = Registry::new();
        let kind = reg
            .by_resource("storage.k8s.io", "v1", "storageclasses")
            .expect("served");
        let mut old = sc("x.io/p");
        kind.default_object(&mut old);
        assert_eq!(old["reclaimPolicy"], "Delete");
        assert_eq!(old["volumeBindingMode"], "Immediate");
        let mut new = old.clone();
        new["provisioner"] = json!("y.io/p");
        let mut errs = Vec::new();
        kind.strategy.validate_update(&old, &new, &mut errs);
        assert_eq!(
            errs[0].display(),
            "provisioner: Forbidden: updates to provisioner are forbidden."
        );
    }

    #[test]
    fn defaults_are_kubes() {
        let reg = Registry::new();
        let kind = reg
            .by_resource("", "v1", "persistentvolumes")
            .expect("served");
        let mut v = pv(json!({"hostPath": {"path": "/a"}}));
        if let Some(o) = v.as_object_mut() {
            kind.strategy.prepare_for_create(o);
        }
        kind.default_object(&mut v);
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(v["spec"]["volumeMode"], "Filesystem");
        assert_eq!(v["spec"]["hostPath"]["type"], "");
        assert_eq!(v["status"]["phase"], "Pending");
    }
}
