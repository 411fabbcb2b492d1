//! PriorityClasses, as kube-apiserver's `ValidatePriorityClass(Update)` words them. The
//! one-default rule needs the other classes, so it is the Priority admission plugin's.

use serde_json::{json, Value};

use super::FieldError;

/// The names a user may not take, with the value and default each must keep.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];
const SYSTEM_PREFIX: &str = "system-";
const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;
const PREEMPTION_POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];

/// `scheduling.IsKnownSystemPriorityClass`: why a `system-` class is not the known one.
fn not_system_class(name: &str, value: i64, global_default: bool) -> Option<String> {
    let Some((_, want)) = SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| *n == name) else {
        return Some(format!("{name} is not a known system priority class"));
    };
    if value != *want {
        return Some(format!("value of {name} PriorityClass must be {want}"));
    }
    if global_default {
        return Some(format!(
            "globalDefault of {name} PriorityClass must be false"
        ));
    }
    None
}

pub(crate) fn validate_priority_class(obj: &Value, errs: &mut Vec<FieldError>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let value = obj.get("value").and_then(Value::as_i64).unwrap_or(0);
    let global_default = obj
        .get("globalDefault")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if name.starts_with(SYSTEM_PREFIX) {
        if let Some(why) = not_system_class(name, value, global_default) {
            errs.push(FieldError::forbidden(
                "metadata.name",
                &format!("priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {why}"),
            ));
        }
    } else if value > HIGHEST_USER_DEFINABLE {
        errs.push(FieldError::forbidden(
            "value",
            &format!(
                "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"
            ),
        ));
    }
    match obj.get("preemptionPolicy").filter(|p| !p.is_null()) {
        None => errs.push(FieldError::required("preemptionPolicy")),
        Some(p) if !p.as_str().is_some_and(|p| PREEMPTION_POLICIES.contains(&p)) => errs.push(
            FieldError::not_supported("preemptionPolicy", p, PREEMPTION_POLICIES),
        ),
        Some(_) => {}
    }
}

/// `ValidatePriorityClassUpdate`: pods already carry the value and policy they were given.
pub(crate) fn validate_priority_class_update(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let at = |v: &Value, f: &str| v.get(f).cloned().unwrap_or(Value::Null);
    if at(old, "value") != at(new, "value") {
        errs.push(FieldError::forbidden(
            "value",
            "may not be changed in an update.",
        ));
    }
    let policy = at(new, "preemptionPolicy");
    if at(old, "preemptionPolicy") != policy {
        errs.push(FieldError::invalid(
            "preemptionPolicy",
            &json!(policy),
            "field is immutable",
        ));
    }
}
