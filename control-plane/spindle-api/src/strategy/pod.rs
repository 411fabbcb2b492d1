//! Pods: defaults, spec validation, phase Pending and QoS class on creation, a node that
//! may not change once bound, graceful deletion, and the binding, eviction and log
//! subresources.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use spindle_meta::quota::quantity;
use spindle_meta::Quantity;

use super::{reset_status, Strategy, Subresource};
use crate::defaults::default_pod_spec;
use crate::validation::{validate_pod_spec, FieldError, RESTART_ANY};

pub struct Pods;

/// Kubernetes' grace period when the pod names none.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The pod subresources beside status, in kube-apiserver's (alphabetical) discovery
/// order; attach, exec and portforward are streams the API server proxies to the node.
const SUBRESOURCES: &[Subresource] = &[
    stream("attach", "PodAttachOptions"),
    Subresource {
        name: "binding",
        group: "",
        version: "v1",
        kind: "Binding",
        verbs: &["create"],
        connect: false,
    },
    Subresource {
        name: "eviction",
        group: "policy",
        version: "v1",
        kind: "Eviction",
        verbs: &["create"],
        connect: false,
    },
    stream("exec", "PodExecOptions"),
    Subresource {
        name: "log",
        group: "",
        version: "v1",
        kind: "Pod",
        verbs: &["get"],
        connect: false,
    },
    stream("portforward", "PodPortForwardOptions"),
];

const fn stream(name: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        name,
        group: "",
        version: "v1",
        kind,
        verbs: &["create", "get"],
        connect: true,
    }
}

impl Strategy for Pods {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            default_pod_spec(spec);
            requests_from_limits(spec);
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

    fn returns_deleted_object(&self) -> bool {
        true
    }
}

/// `SetDefaults_Pod`: a container's limit is its request where it names none (for pods
/// only, not templates), before admission gives the LimitRange defaults.
fn requests_from_limits(spec: &mut Value) {
    for field in ["containers", "initContainers"] {
        let containers = spec.get_mut(field).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            let requests = res.entry("requests").or_insert_with(|| json!({}));
            if requests.is_null() {
                *requests = json!({});
            }
            if let Some(requests) = requests.as_object_mut() {
                for (k, v) in limits {
                    requests.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// A pod's QoS class from its spec, as Kubernetes' `GetPodQOS`: the CPU and memory
/// requests and limits (a request defaults to its limit) summed over the containers and
/// compared as exact quantities, so `1Gi` and `1024Mi` are equal.
pub fn qos_class(spec: &Value) -> &'static str {
    const COMPUTE: [&str; 2] = ["cpu", "memory"];
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut all_limited = true;
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let amount = |part: &str, r: &str| {
            c.pointer(&format!("/resources/{part}/{r}"))
                .and_then(quantity)
                .filter(|q| q.as_nanos() > 0)
        };
        for r in COMPUTE {
            let limit = amount("limits", r);
            if let Some(q) = amount("requests", r).or(limit) {
                add(&mut requests, r, q);
            }
            match limit {
                Some(q) => add(&mut limits, r, q),
                None => all_limited = false,
            }
        }
    }
    if requests.is_empty() && limits.is_empty() {
        "BestEffort"
    } else if all_limited && requests == limits {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn add<'a>(sums: &mut BTreeMap<&'a str, Quantity>, r: &'a str, q: Quantity) {
    let sum = sums.get(r).map_or(q, |s| s.saturating_add(q));
    sums.insert(r, sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qos(containers: Value) -> &'static str {
        qos_class(&json!({ "containers": containers }))
    }

    #[test]
    fn qos_compares_quantities_by_value() {
        let c = |res: Value| json!({"name": "c", "image": "i", "resources": res});
        assert_eq!(
            qos(json!([c(
                json!({"requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"cpu": "0.5", "memory": "1024Mi"}})
            )])),
            "Guaranteed"
        );
        assert_eq!(
            qos(json!([c(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))])),
            "Guaranteed"
        );
        assert_eq!(
            qos(json!([c(
                json!({"requests": {"memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}})
            )])),
            "Burstable"
        );
        assert_eq!(
            qos(json!([
                c(json!({"limits": {"cpu": "1", "memory": "1Gi"}})),
                c(json!({}))
            ])),
            "Burstable"
        );
        assert_eq!(
            qos(json!([c(
                json!({"requests": {"cpu": "0", "ephemeral-storage": "1Gi"}})
            )])),
            "BestEffort"
        );
        assert_eq!(qos(json!([c(json!({}))])), "BestEffort");
    }
}
