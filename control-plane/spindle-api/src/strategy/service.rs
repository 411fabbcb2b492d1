//! Services: DNS-label names, defaults, ports, and cluster IPs that are allocated on
//! creation and kept (never moved) by updates.

use serde_json::{json, Map, Value};

use super::{reset_status, Allocation, Strategy};
use crate::defaults::{obj_mut, set_default};
use crate::validation::{
    is_external_name, validate_service, validate_service_update, FieldError, NameRule,
};

pub struct Services;

impl Strategy for Services {
    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = obj_mut(obj, "spec") else {
            return;
        };
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        let external_name = spec.get("type") == Some(&json!("ExternalName"));
        if !external_name {
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            set_default(spec, "ipFamilies", json!(["IPv4"]));
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    set_default(p, "targetPort", port);
                }
            }
        }
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_service(obj, errs);
    }

    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        reset_status(obj, json!({"loadBalancer": {}}));
    }

    fn prepare_for_update(&self, old: &Value, new: &mut Value) {
        keep_cluster_ips(old, new);
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        errs.extend(validate_service_update(old, new));
    }

    fn allocation(&self) -> Option<Allocation> {
        Some(Allocation::ServiceAddresses)
    }

    fn returns_deleted_object(&self) -> bool {
        true
    }
}

/// An update that leaves the cluster IPs out keeps the allocated ones, as Kubernetes'
/// `patchAllocatedValues` does (so `kubectl replace` of the original manifest works).
fn keep_cluster_ips(old: &Value, new: &mut Value) {
    if is_external_name(old) || is_external_name(new) {
        return;
    }
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let unset = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if unset(spec.get("clusterIP")) && unset(spec.get("clusterIPs")) {
        for f in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old.pointer(&format!("/spec/{f}")) {
                spec.insert(f.into(), v.clone());
            }
        }
    }
}
