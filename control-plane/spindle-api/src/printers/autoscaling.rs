//! The HorizontalPodAutoscaler table (`printHorizontalPodAutoscaler`).

use k8s_openapi::api::autoscaling;
use serde_json::Value;
use spindle_meta::quota::quantity;

use super::obj::Obj;
use super::{col, Printer, AGE, NAME};

/// How many metrics the Targets column shows before "+ N more...".
const SHOWN_METRICS: usize = 2;

/// A quantity as Go's `Quantity.String()` writes it.
fn canonical(v: &Value) -> Option<String> {
    quantity(v).map(|q| q.to_string())
}

/// One metric's `current/target`, as `formatHPAMetrics` writes it.
fn target_cell(spec: Obj<'_>, status: Option<Obj<'_>>) -> String {
    let unknown = || "<unknown>".to_string();
    let ty = spec.str_(&["type"]);
    let (field, named) = match ty {
        "External" => ("external", false),
        "Pods" => ("pods", false),
        "Object" => ("object", false),
        "Resource" => ("resource", true),
        "ContainerResource" => ("containerResource", true),
        _ => return "<unknown type>".into(),
    };
    let target = spec.at(&[field, "target"]);
    let current = status.map(|s| s.at(&[field, "current"]));
    let cur = |f: &str| current.and_then(|c| canonical(c.at(&[f]).0));
    let prefix = if named {
        format!("{}: ", spec.str_(&[field, "name"]))
    } else {
        String::new()
    };
    if let Some(avg) = canonical(target.at(&["averageValue"]).0) {
        let suffix = if matches!(ty, "External" | "Object") {
            " (avg)"
        } else {
            ""
        };
        let c = cur("averageValue").unwrap_or_else(unknown);
        return format!("{prefix}{c}/{avg}{suffix}");
    }
    if !named {
        let t = canonical(target.at(&["value"]).0).unwrap_or_default();
        return format!("{}/{t}", cur("value").unwrap_or_else(unknown));
    }
    let percent = |o: Option<Obj<'_>>| {
        o.and_then(|o| o.at(&["averageUtilization"]).0.as_i64())
            .map(|u| format!("{u}%"))
    };
    let c = percent(current).unwrap_or_else(unknown);
    let t = percent(Some(target)).unwrap_or_else(|| "<auto>".into());
    format!("{prefix}{c}/{t}")
}

/// `formatHPAMetrics`: the first two metrics' current and target values.
fn targets(o: Obj<'_>) -> Value {
    let specs = o.list(&["spec", "metrics"]);
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = o.list(&["status", "currentMetrics"]);
    let cells: Vec<String> = specs
        .iter()
        .enumerate()
        .take(SHOWN_METRICS)
        .map(|(i, s)| target_cell(Obj(s), statuses.get(i).map(Obj)))
        .collect();
    let text = cells.join(", ");
    match specs.len().checked_sub(SHOWN_METRICS) {
        Some(more) if more > 0 => format!("{text} + {more} more...").into(),
        _ => text.into(),
    }
}

pub(super) static HORIZONTAL_POD_AUTOSCALER: Printer = Printer::new(&[
    NAME,
    col(
        "Reference",
        "string",
        "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
        |o, _| format!("{}/{}", o.str_(&["spec", "scaleTargetRef", "kind"]), o.str_(&["spec", "scaleTargetRef", "name"])).into(),
    ),
    col(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).  The desired replica count is calculated multiplying the ratio between the target value and the current value by the current number of pods.  Ergo, metrics used must decrease as the pod count is increased, and vice-versa.  See the individual metric source types for more information about how each type of metric must respond. If not set, the default metric will be set to 80% average CPU utilization.",
        |o, _| targets(o),
    ),
    col(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.  It defaults to 1 pod.  minReplicas is allowed to be 0 if the alpha feature gate HPAScaleToZero is enabled and at least one Object or External metric is configured.  Scaling is active as long as at least one metric value is available.",
        |o, _| match o.at(&["spec", "minReplicas"]).0.as_i64() {
            Some(m) => m.to_string().into(),
            None => "<unset>".into(),
        },
    ),
    col(
        "MaxPods",
        "integer",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas.",
        |o, _| o.int(&["spec", "maxReplicas"]).into(),
    ),
    col(
        "Replicas",
        "integer",
        "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
        |o, _| o.int(&["status", "currentReplicas"]).into(),
    ),
    AGE,
]);

// Rows are printed from the stored (v2) object whichever version is asked for, as kube
// prints from its internal version.
printed! {
    autoscaling::v2::HorizontalPodAutoscaler => HORIZONTAL_POD_AUTOSCALER,
    autoscaling::v1::HorizontalPodAutoscaler => HORIZONTAL_POD_AUTOSCALER,
}
