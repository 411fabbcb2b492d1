//! Kubernetes' defaulting helpers (`SetDefaults_*`) shared by the kinds' strategies:
//! a default sets a field only when it is absent or null.

use serde_json::{json, Map, Value};

pub(crate) fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e.as_object_mut()
}

pub(crate) fn set_default(m: &mut Map<String, Value>, key: &str, val: Value) {
    match m.get(key) {
        None | Some(Value::Null) => {
            m.insert(key.to_string(), val);
        }
        _ => {}
    }
}

fn default_containers(list: Option<&mut Value>) {
    let Some(items) = list.and_then(Value::as_array_mut) else {
        return;
    };
    for c in items {
        let Some(c) = c.as_object_mut() else { continue };
        let image = c
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // Kubernetes: no tag or :latest means Always, a pinned tag or digest IfNotPresent.
        let last = image.rsplit('/').next().unwrap_or("");
        let pinned = image.contains('@') || (last.contains(':') && !last.ends_with(":latest"));
        set_default(
            c,
            "imagePullPolicy",
            json!(if pinned { "IfNotPresent" } else { "Always" }),
        );
        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json!("File"));
        set_default(c, "resources", json!({}));
        if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// Kubernetes' `SetDefaults_PodSpec`, for a Pod and for every pod template alike: the
/// restart policy defaults to Always even in a Job's template, whose validation then
/// refuses it, as kube-apiserver does (a Job must say OnFailure or Never).
pub(crate) fn default_pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    set_default(m, "restartPolicy", json!("Always"));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "schedulerName", json!("default-scheduler"));
    set_default(m, "securityContext", json!({}));
    default_containers(m.get_mut("initContainers"));
    default_containers(m.get_mut("containers"));
}

/// Defaults of the pod template at `spec.template` of a workload.
pub(crate) fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

/// The object at `key` of a map, created empty when absent or null.
pub(crate) fn obj_mut_map<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e.as_object_mut()
}
