//! Label selectors in objects and the pod template of a workload.

use serde_json::{json, Value};
use spindle_meta::selector::Matcher;

use super::pod::validate_pod_spec;
use super::{validate_labels, FieldError};

fn selector_is_empty(sel: &Value) -> bool {
    sel.get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty())
        && sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
}

pub(super) fn validate_label_selector(sel: &Value, field: &str, errs: &mut Vec<FieldError>) {
    validate_labels(
        sel.get("matchLabels"),
        &format!("{field}.matchLabels"),
        errs,
    );
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for (i, e) in exprs.iter().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            let nvals = e
                .get("values")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            match op {
                "In" | "NotIn" if nvals == 0 => errs.push(FieldError::required_because(
                    &format!("{f}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                )),
                "Exists" | "DoesNotExist" if nvals > 0 => errs.push(FieldError::forbidden(
                    &format!("{f}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => errs.push(FieldError::not_supported(
                    &format!("{f}.operator"),
                    &json!(other),
                    &["In", "NotIn", "Exists", "DoesNotExist"],
                )),
            }
        }
    }
}

/// Workload: selector required, non-empty, and must select the template's labels.
/// `kind` names the workload in the empty selector's message, as kube-apiserver words
/// it ("deployment" for a ReplicaSet too).
pub(crate) fn validate_workload(
    obj: &Value,
    errs: &mut Vec<FieldError>,
    restart_policies: &[&str],
    selector_required: bool,
    kind: &str,
) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(r) = spec.get("replicas") {
        if r.as_i64().is_some_and(|r| r < 0) {
            errs.push(FieldError::invalid(
                "spec.replicas",
                r,
                "must be greater than or equal to 0",
            ));
        }
    }
    let tpl_labels = spec
        .pointer("/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    match spec.get("selector") {
        None | Some(Value::Null) if selector_required => {
            errs.push(FieldError::required("spec.selector"))
        }
        Some(sel) if !sel.is_null() => {
            validate_label_selector(sel, "spec.selector", errs);
            if selector_is_empty(sel) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel,
                    &format!("empty selector is invalid for {kind}"),
                ));
            } else if Matcher::try_from_json(Some(sel))
                .is_ok_and(|m| !m.matches_json(Some(&Value::Object(tpl_labels.clone()))))
            {
                // A malformed selector is reported by validate_label_selector alone, as
                // kube-apiserver matches only a selector it could build.
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &Value::Object(tpl_labels.clone()),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        _ => {}
    }
    match spec.get("template") {
        None | Some(Value::Null) => errs.push(FieldError::required("spec.template")),
        Some(t) => {
            validate_labels(
                t.pointer("/metadata/labels"),
                "spec.template.metadata.labels",
                errs,
            );
            validate_pod_spec(
                t.get("spec").unwrap_or(&Value::Null),
                "spec.template.spec",
                errs,
                restart_policies,
            );
        }
    }
}
