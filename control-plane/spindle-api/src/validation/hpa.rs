//! HorizontalPodAutoscalers (autoscaling/v2), as kube-apiserver's
//! `ValidateHorizontalPodAutoscaler(Update)` words them.

use serde_json::{json, Value};
use spindle_meta::Quantity;

use super::FieldError;

/// kube's bounds on a behavior's windows and policy periods.
const MAX_STABILIZATION_WINDOW_SECONDS: i64 = 3600;
const MAX_PERIOD_SECONDS: i64 = 1800;
const SELECT_POLICIES: &[&str] = &["Disabled", "Max", "Min"];
const POLICY_TYPES: &[&str] = &["Percent", "Pods"];
const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];
/// Each metric type and the field that carries its source.
const SOURCES: &[(&str, &str)] = &[
    ("Object", "object"),
    ("External", "external"),
    ("Pods", "pods"),
    ("Resource", "resource"),
    ("ContainerResource", "containerResource"),
];

pub(crate) fn validate_hpa(obj: &Value, errs: &mut Vec<FieldError>) {
    validate_spec(obj, 1, errs);
}

/// An HPA that already scales to zero may keep doing so (kube's update rule).
pub(crate) fn validate_hpa_update(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let lower = if old.pointer("/spec/minReplicas").and_then(Value::as_i64) == Some(0) {
        0
    } else {
        1
    };
    validate_spec(new, lower, errs);
}

fn validate_spec(obj: &Value, min_lower: i64, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let min = spec.get("minReplicas").and_then(Value::as_i64);
    let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
    if let Some(m) = min.filter(|m| *m < min_lower) {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            &json!(m),
            &format!("must be greater than or equal to {min_lower}"),
        ));
    }
    if max < 1 {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            &json!(max),
            "must be greater than 0",
        ));
    }
    if min.is_some_and(|m| max < m) {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            &json!(max),
            "must be greater than or equal to `minReplicas`",
        ));
    }
    let target = spec.get("scaleTargetRef").unwrap_or(&Value::Null);
    validate_reference(target, "spec.scaleTargetRef", errs);
    validate_metrics(spec, min, errs);
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        for dir in ["scaleUp", "scaleDown"] {
            if let Some(r) = b.get(dir).filter(|r| !r.is_null()) {
                validate_rules(r, &format!("spec.behavior.{dir}"), errs);
            }
        }
    }
}

/// `ValidateCrossVersionObjectReference`.
fn validate_reference(r: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for f in ["kind", "name"] {
        match r.get(f).and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(FieldError::required(&format!("{path}.{f}"))),
            v => {
                for msg in path_segment_problems(v) {
                    errs.push(FieldError::invalid(&format!("{path}.{f}"), &json!(v), &msg));
                }
            }
        }
    }
}

/// `IsValidPathSegmentName`: what cannot stand in one segment of a URL path.
fn path_segment_problems(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| s.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

fn validate_metrics(spec: &Value, min: Option<i64>, errs: &mut Vec<FieldError>) {
    let metrics = spec.get("metrics").and_then(Value::as_array);
    let mut scales_to_zero = false;
    for (i, m) in metrics.into_iter().flatten().enumerate() {
        let path = format!("spec.metrics[{i}]");
        validate_metric(m, &path, errs);
        let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
        scales_to_zero |= ty == "Object" || ty == "External";
    }
    if min == Some(0) && !scales_to_zero {
        errs.push(FieldError::forbidden(
            "spec.metrics",
            "must specify at least one Object or External metric to support scaling to zero replicas",
        ));
    }
}

/// `validateMetricSpec`: one known type, and exactly its source filled in.
fn validate_metric(m: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
    if ty.is_empty() {
        errs.push(FieldError::required_because(
            &format!("{path}.type"),
            "must specify a metric source type",
        ));
    }
    if !METRIC_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(
            &format!("{path}.type"),
            &json!(ty),
            METRIC_TYPES,
        ));
    }
    let present: Vec<&str> = SOURCES
        .iter()
        .map(|(_, f)| *f)
        .filter(|f| m.get(*f).is_some_and(|s| !s.is_null()))
        .collect();
    if let Some(first) = present.first() {
        validate_source(first, &m[*first], &format!("{path}.{first}"), errs);
    }
    let expected = SOURCES.iter().find(|(t, _)| *t == ty).map(|(_, f)| *f);
    match expected {
        Some(f) if !present.contains(&f) => errs.push(FieldError::required_because(
            &format!("{path}.{f}"),
            "must populate information for the given metric source",
        )),
        Some(_) => {}
        None if ty.is_empty() => {}
        None => errs.push(FieldError::not_supported(
            &format!("{path}.type"),
            &json!(ty),
            METRIC_TYPES,
        )),
    }
    if present.len() != 1 {
        for f in present.iter().filter(|f| Some(**f) != expected) {
            errs.push(FieldError::forbidden(
                &format!("{path}.{f}"),
                "must populate the given metric source only",
            ));
        }
    }
}

fn validate_source(kind: &str, src: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let target = src.get("target").unwrap_or(&Value::Null);
    let has = |f: &str| target.get(f).is_some_and(|v| !v.is_null());
    let tpath = format!("{path}.target");
    match kind {
        "resource" | "containerResource" => {
            if src
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                errs.push(FieldError::required_because(
                    &format!("{path}.name"),
                    "must specify a resource name",
                ));
            }
            if kind == "containerResource"
                && src
                    .get("container")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
            {
                errs.push(FieldError::required_because(
                    &format!("{path}.container"),
                    "must specify a container",
                ));
            }
            validate_target(target, &tpath, errs);
            if !has("averageUtilization") && !has("averageValue") {
                errs.push(FieldError::required_because(
                    &format!("{tpath}.averageUtilization"),
                    "must set either a target raw value or a target utilization",
                ));
            }
            if has("averageUtilization") && has("averageValue") {
                errs.push(FieldError::forbidden(
                    &format!("{tpath}.averageValue"),
                    "may not set both a target raw value and a target utilization",
                ));
            }
        }
        _ => {
            if kind == "object" {
                let described = src.get("describedObject").unwrap_or(&Value::Null);
                validate_reference(described, &format!("{path}.describedObject"), errs);
            }
            let metric = src.pointer("/metric/name").and_then(Value::as_str);
            if metric.unwrap_or("").is_empty() {
                errs.push(FieldError::required_because(
                    &format!("{path}.metric.name"),
                    "must specify a metric name",
                ));
            }
            validate_target(target, &tpath, errs);
            let missing = match kind {
                "pods" if !has("averageValue") => {
                    Some("must specify a positive target averageValue")
                }
                "object" if !has("value") && !has("averageValue") => {
                    Some("must set either a target value or averageValue")
                }
                "external" if !has("value") && !has("averageValue") => {
                    Some("must set either a target value for metric or a per-pod target")
                }
                _ => None,
            };
            if let Some(why) = missing {
                errs.push(FieldError::required_because(
                    &format!("{tpath}.averageValue"),
                    why,
                ));
            }
        }
    }
}

/// `validateMetricTarget`.
fn validate_target(t: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let ty = t.get("type").and_then(Value::as_str).unwrap_or("");
    if ty.is_empty() {
        errs.push(FieldError::required_because(
            &format!("{path}.type"),
            "must specify a metric target type",
        ));
    }
    if !["Utilization", "Value", "AverageValue"].contains(&ty) {
        errs.push(FieldError::invalid(
            &format!("{path}.type"),
            &json!(ty),
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    for f in ["value", "averageValue"] {
        let Some(v) = t.get(f).filter(|v| !v.is_null()) else {
            continue;
        };
        let positive = v
            .as_str()
            .and_then(|s| Quantity::parse(s).ok())
            .is_some_and(|q| !q.is_zero() && !q.is_negative());
        if !positive {
            errs.push(FieldError::invalid(
                &format!("{path}.{f}"),
                v,
                "must be positive",
            ));
        }
    }
    if let Some(u) = t.get("averageUtilization").and_then(Value::as_i64) {
        if u < 1 {
            errs.push(FieldError::invalid(
                &format!("{path}.averageUtilization"),
                &json!(u),
                "must be greater than 0",
            ));
        }
    }
}

/// `validateScalingRules` and `validateScalingPolicy`.
fn validate_rules(r: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(w) = r.get("stabilizationWindowSeconds").and_then(Value::as_i64) {
        let p = format!("{path}.stabilizationWindowSeconds");
        if w < 0 {
            errs.push(FieldError::invalid(
                &p,
                &json!(w),
                "must be greater than or equal to zero",
            ));
        }
        if w > MAX_STABILIZATION_WINDOW_SECONDS {
            let why = format!("must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}");
            errs.push(FieldError::invalid(&p, &json!(w), &why));
        }
    }
    if let Some(s) = r.get("selectPolicy").filter(|s| !s.is_null()) {
        if !s.as_str().is_some_and(|s| SELECT_POLICIES.contains(&s)) {
            let p = format!("{path}.selectPolicy");
            errs.push(FieldError::not_supported(&p, s, SELECT_POLICIES));
        }
    }
    let policies = r.get("policies").and_then(Value::as_array);
    if policies.is_none_or(Vec::is_empty) {
        errs.push(FieldError::required_because(
            &format!("{path}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, p) in policies.into_iter().flatten().enumerate() {
        let pp = format!("{path}.policies[{i}]");
        let ty = p.get("type").unwrap_or(&Value::Null);
        if !ty.as_str().is_some_and(|t| POLICY_TYPES.contains(&t)) {
            errs.push(FieldError::not_supported(
                &format!("{pp}.type"),
                ty,
                POLICY_TYPES,
            ));
        }
        let value = p.get("value").and_then(Value::as_i64).unwrap_or(0);
        if value <= 0 {
            let f = format!("{pp}.value");
            errs.push(FieldError::invalid(
                &f,
                &json!(value),
                "must be greater than zero",
            ));
        }
        let period = p.get("periodSeconds").and_then(Value::as_i64).unwrap_or(0);
        let f = format!("{pp}.periodSeconds");
        if period <= 0 {
            errs.push(FieldError::invalid(
                &f,
                &json!(period),
                "must be greater than zero",
            ));
        }
        if period > MAX_PERIOD_SECONDS {
            let why = format!("must be less than or equal to {MAX_PERIOD_SECONDS}");
            errs.push(FieldError::invalid(&f, &json!(period), &why));
        }
    }
}
