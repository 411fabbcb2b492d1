//! Kinds served in more than one version are stored in one (kube-apiserver's storage
//! version) and converted on the way in and out. Conversions work on the object's JSON,
//! with or without its type meta; the REST path calls them and nothing else knows.
//!
//! Only HorizontalPodAutoscaler has two versions: autoscaling/v1 converts to and from the
//! stored autoscaling/v2 as kube's `pkg/apis/autoscaling/v1/conversion.go` does: the CPU
//! utilization target is a field of its own, and what v1 has no field for (other metrics,
//! behavior, current metrics, conditions) travels in `autoscaling.alpha.kubernetes.io/*`
//! annotations.

use serde_json::{json, Map, Value};

/// How a served version maps to the storage version.
pub struct Conversion {
    /// The version objects are stored in.
    pub storage_version: &'static str,
    /// Served version → storage version.
    pub to_storage: fn(&mut Value),
    /// Storage version → served version.
    pub to_served: fn(&mut Value),
}

pub static HPA_V1: Conversion = Conversion {
    storage_version: "v2",
    to_storage: hpa_v1_to_v2,
    to_served: hpa_v2_to_v1,
};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

fn set_api_version(obj: &mut Map<String, Value>, version: &str) {
    if obj.contains_key("apiVersion") {
        obj.insert("apiVersion".into(), json!(format!("autoscaling/{version}")));
    }
}

/// Take an annotation that carries JSON, removing it (and an emptied annotations map).
fn take_annotation(obj: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let meta = obj.get_mut("metadata")?.as_object_mut()?;
    let ann = meta.get_mut("annotations")?.as_object_mut()?;
    let v = ann.remove(name)?;
    if ann.is_empty() {
        meta.remove("annotations");
    }
    serde_json::from_str(v.as_str()?).ok()
}

fn put_annotation(obj: &mut Map<String, Value>, name: &str, v: &Value) {
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(name.into(), json!(v.to_string()));
        }
    }
}

/// The fields of `from` named in `fields`, in that order (the ones both versions share).
fn copied(from: &Value, fields: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|f| from.get(*f).map(|x| ((*f).to_string(), x.clone())))
        .collect()
}

const SPEC_FIELDS: &[&str] = &["scaleTargetRef", "minReplicas", "maxReplicas"];
const STATUS_FIELDS: &[&str] = &[
    "observedGeneration",
    "lastScaleTime",
    "currentReplicas",
    "desiredReplicas",
];

/// The CPU utilization metric (a target, or a current value) v1 has a field for.
fn is_cpu(m: &Value, part: &str) -> bool {
    m["type"] == "Resource"
        && m.pointer("/resource/name") == Some(&json!("cpu"))
        && m.pointer(&format!("/resource/{part}/averageUtilization"))
            .is_some_and(|u| !u.is_null())
}

fn nonempty(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
}

fn hpa_v2_to_v1(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    set_api_version(obj, "v1");
    let spec = obj.remove("spec").unwrap_or(Value::Null);
    let status = obj.remove("status").unwrap_or(Value::Null);
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let cpu = metrics.iter().find(|m| is_cpu(m, "target"));
    let others: Vec<Value> = metrics
        .iter()
        .filter(|m| !is_cpu(m, "target"))
        .map(metric_spec_to_v1)
        .collect();
    if !others.is_empty() {
        put_annotation(obj, METRICS, &json!(others));
    }
    if let Some(b) = nonempty(spec.get("behavior")) {
        put_annotation(obj, BEHAVIOR, b);
    }
    let mut s1 = copied(&spec, SPEC_FIELDS);
    if let Some(u) = cpu.and_then(|m| m.pointer("/resource/target/averageUtilization")) {
        s1.insert("targetCPUUtilizationPercentage".into(), u.clone());
    }
    obj.insert("spec".into(), Value::Object(s1));
    if status.is_null() {
        return;
    }
    let current = status["currentMetrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let cpu_now = current.iter().find(|m| is_cpu(m, "current"));
    let other_now: Vec<Value> = current
        .iter()
        .filter(|m| !is_cpu(m, "current"))
        .map(metric_status_to_v1)
        .collect();
    if !other_now.is_empty() {
        put_annotation(obj, CURRENT_METRICS, &json!(other_now));
    }
    if let Some(c) = nonempty(status.get("conditions")) {
        put_annotation(obj, CONDITIONS, c);
    }
    let mut s1 = copied(&status, STATUS_FIELDS);
    if let Some(u) = cpu_now.and_then(|m| m.pointer("/resource/current/averageUtilization")) {
        s1.insert("currentCPUUtilizationPercentage".into(), u.clone());
    }
    obj.insert("status".into(), Value::Object(s1));
}

fn hpa_v1_to_v2(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    set_api_version(obj, "v2");
    let others = take_annotation(obj, METRICS);
    let behavior = take_annotation(obj, BEHAVIOR);
    let current = take_annotation(obj, CURRENT_METRICS);
    let conditions = take_annotation(obj, CONDITIONS);
    let spec = obj.remove("spec").unwrap_or(Value::Null);
    let mut s2 = copied(&spec, SPEC_FIELDS);
    let mut metrics: Vec<Value> = Vec::new();
    if let Some(u) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|u| !u.is_null())
    {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": u}}}));
    }
    let others = others
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    metrics.extend(others.map(metric_spec_to_v2));
    if !metrics.is_empty() {
        s2.insert("metrics".into(), json!(metrics));
    }
    if let Some(b) = behavior {
        s2.insert("behavior".into(), b);
    }
    obj.insert("spec".into(), Value::Object(s2));
    let Some(status) = obj.remove("status").filter(|s| !s.is_null()) else {
        return;
    };
    let mut s2 = copied(&status, STATUS_FIELDS);
    let mut now: Vec<Value> = Vec::new();
    if let Some(u) = status
        .get("currentCPUUtilizationPercentage")
        .filter(|u| !u.is_null())
    {
        now.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": u}}}));
    }
    let current = current
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    now.extend(current.map(metric_status_to_v2));
    s2.insert(
        "currentMetrics".into(),
        if now.is_empty() {
            Value::Null
        } else {
            json!(now)
        },
    );
    if let Some(c) = conditions {
        s2.insert("conditions".into(), c);
    }
    obj.insert("status".into(), Value::Object(s2));
}

/// The v1 (v2beta1-shaped) source field names of a v2 metric target or current value.
const TARGETS: &[(&str, &str)] = &[
    ("averageUtilization", "targetAverageUtilization"),
    ("averageValue", "targetAverageValue"),
    ("value", "targetValue"),
];
const CURRENTS: &[(&str, &str)] = &[
    ("averageUtilization", "currentAverageUtilization"),
    ("averageValue", "currentAverageValue"),
    ("value", "currentValue"),
];

/// The field of a metric's source object and the part holding its values.
fn source_field(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        "External" => "external",
        _ => return None,
    })
}

/// A v2 source (`{name | metric, target | current, ...}`) as v1's flat one, or back.
fn flatten(src: &Value, part: &str, names: &[(&str, &str)]) -> Value {
    let mut out = Map::new();
    for (k, v) in src.as_object().into_iter().flatten() {
        match k.as_str() {
            "metric" => {
                out.insert("metricName".into(), v["name"].clone());
                if let Some(sel) = nonempty(v.get("selector")) {
                    out.insert("selector".into(), sel.clone());
                }
            }
            "describedObject" => {
                out.insert("target".into(), v.clone());
            }
            k if k == part => {
                for (v2, v1) in names {
                    if let Some(x) = v.get(*v2).filter(|x| !x.is_null()) {
                        out.insert((*v1).into(), x.clone());
                    }
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn nest(src: &Value, part: &str, names: &[(&str, &str)], target_type: bool) -> Value {
    let mut out = Map::new();
    let mut values = Map::new();
    for (k, v) in src.as_object().into_iter().flatten() {
        if let Some((v2, _)) = names.iter().find(|(_, v1)| v1 == k) {
            values.insert((*v2).into(), v.clone());
        } else if k == "metricName" {
            out.insert("metric".into(), json!({"name": v}));
        } else if k == "selector" || k == "metricSelector" {
            if let Some(m) = out.get_mut("metric").and_then(Value::as_object_mut) {
                m.insert("selector".into(), v.clone());
            }
        } else if k == "target" {
            out.insert("describedObject".into(), v.clone());
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    if target_type {
        let ty = if values.contains_key("averageUtilization") {
            "Utilization"
        } else if values.contains_key("averageValue") {
            "AverageValue"
        } else {
            "Value"
        };
        let mut typed = Map::new();
        typed.insert("type".into(), json!(ty));
        typed.extend(values);
        values = typed;
    }
    out.insert(part.into(), Value::Object(values));
    Value::Object(out)
}

fn convert_metric(m: &Value, f: impl Fn(&Value) -> Value) -> Value {
    let ty = m["type"].as_str().unwrap_or("");
    match source_field(ty) {
        Some(field) => json!({"type": ty, field: f(&m[field])}),
        None => m.clone(),
    }
}

fn metric_spec_to_v1(m: &Value) -> Value {
    convert_metric(m, |s| flatten(s, "target", TARGETS))
}

fn metric_spec_to_v2(m: &Value) -> Value {
    convert_metric(m, |s| nest(s, "target", TARGETS, true))
}

fn metric_status_to_v1(m: &Value) -> Value {
    convert_metric(m, |s| flatten(s, "current", CURRENTS))
}

fn metric_status_to_v2(m: &Value) -> Value {
    convert_metric(m, |s| nest(s, "current", CURRENTS, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_autoscale_v1_becomes_a_cpu_metric_and_back() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}});
        let mut v2 = v1.clone();
        (HPA_V1.to_storage)(&mut v2);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        let mut back = v2.clone();
        (HPA_V1.to_served)(&mut back);
        assert_eq!(back, v1);
    }

    #[test]
    fn what_v1_has_no_field_for_travels_in_annotations() {
        let v2 = json!({"metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "50Mi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 3, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageValue": "40m", "averageUtilization": 80}}},
                {"type": "Resource", "resource": {"name": "memory",
                    "current": {"averageValue": "40Mi"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let mut v1 = v2.clone();
        (HPA_V1.to_served)(&mut v1);
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 80);
        let ann = &v1["metadata"]["annotations"];
        assert_eq!(
            ann[METRICS],
            r#"[{"type":"Resource","resource":{"name":"memory","targetAverageValue":"50Mi"}}]"#
        );
        assert_eq!(
            ann[CURRENT_METRICS],
            r#"[{"type":"Resource","resource":{"name":"memory","currentAverageValue":"40Mi"}}]"#
        );
        let mut back = v1.clone();
        (HPA_V1.to_storage)(&mut back);
        assert_eq!(back["spec"], v2["spec"]);
        assert_eq!(back["metadata"], v2["metadata"]);
        assert_eq!(back["status"]["conditions"], v2["status"]["conditions"]);
        assert_eq!(
            back["status"]["currentMetrics"][1],
            v2["status"]["currentMetrics"][1]
        );
    }
}
