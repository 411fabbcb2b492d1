//! Pods: defaults, spec validation, phase Pending and QoS class on creation, a node that
//! may not change once bound, graceful deletion, and the binding, eviction and log
//! subresources.

use serde_json::{json, Map, Value};

use super::{reset_status, Strategy, Subresource};
use crate::defaults::default_pod_spec;
use crate::validation::{validate_pod_spec, FieldError, RESTART_ANY};

pub struct Pods;

/// Kubernetes' grace period when the pod names none.
const DEFAULT_GRACE_SECONDS: i64 = 30;

const SUBRESOURCES: &[Subresource] = &[
    Subresource {
        name: "binding",
        group: "",
        version: "v1",
        kind: "Binding",
        verbs: &["create"],
    },
    Subresource {
        name: "eviction",
        group: "policy",
        version: "v1",
        kind: "Eviction",
        verbs: &["create"],
    },
    Subresource {
        name: "log",
        group: "",
        version: "v1",
        kind: "Pod",
        verbs: &["get"],
    },
];

impl Strategy for Pods {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            default_pod_spec(spec);
        }
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_pod_spec(
            obj.get("spec").unwrap_or(&Value::Null),
            "spec",
            errs,
            RESTART_ANY,
        );
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
        reset_status(obj, json!({"phase": "Pending", "qosClass": qos}));
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        let (o, n) = (old.pointer("/spec/nodeName"), new.pointer("/spec/nodeName"));
        if o.is_some() && o != n {
            errs.push(FieldError::forbidden("spec.nodeName", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
        }
    }

    /// Pods on a node end gracefully: the node agent stops them and then deletes with
    /// grace 0. Unbound or finished pods go at once (Kubernetes' CheckGracefulDelete).
    fn grace_period(&self, pod: &Value, requested: Option<i64>) -> i64 {
        let bound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        if !bound || finished {
            return 0;
        }
        let default = pod
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        requested.unwrap_or(default).max(0)
    }

    fn subresources(&self) -> &'static [Subresource] {
        SUBRESOURCES
    }
}

/// A pod's QoS class from its spec (Kubernetes' `GetPodQOS`).
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        _ => "Burstable",
    }
}
