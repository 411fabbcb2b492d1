//! A StatefulSet's spec beyond the workload's (selector, template), as kube's
//! ValidateStatefulSetSpec and ValidateStatefulSetUpdate word their errors.

use serde_json::{json, Value};

use super::policy::int_or_percent;
use super::{is_dns1123_label, FieldError, LABEL_MSG};

/// The spec fields an update may change (Kubernetes 1.33).
const MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

pub(crate) fn validate_stateful_set(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(spec) = obj.get("spec") else {
        return;
    };
    let field = |f: &str| format!("spec.{f}");
    match spec.get("podManagementPolicy").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required(&field("podManagementPolicy"))),
        Some("OrderedReady" | "Parallel") => {}
        Some(_) => errs.push(FieldError::invalid(
            &field("podManagementPolicy"),
            &spec["podManagementPolicy"],
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    if let Some(name) = spec.get("serviceName").and_then(Value::as_str) {
        // It becomes the pods' subdomain, which must be a DNS label.
        if !name.is_empty() && !is_dns1123_label(name) {
            errs.push(FieldError::invalid(
                &field("serviceName"),
                &spec["serviceName"],
                LABEL_MSG,
            ));
        }
    }
    update_strategy(spec.get("updateStrategy"), errs);
    if let Some(policy) = spec.get("persistentVolumeClaimRetentionPolicy") {
        for when in ["whenDeleted", "whenScaled"] {
            let v = policy.get(when).cloned().unwrap_or(json!(""));
            if !matches!(v.as_str(), Some("Retain" | "Delete")) {
                errs.push(FieldError::not_supported(
                    &field(&format!("persistentVolumeClaimRetentionPolicy.{when}")),
                    &v,
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    non_negative(spec, "minReadySeconds", "spec.minReadySeconds", errs);
    if let Some(o) = spec.get("ordinals") {
        non_negative(o, "start", "spec.ordinals.start", errs);
    }
    if let Some(v) = spec.pointer("/template/spec/activeDeadlineSeconds") {
        if !v.is_null() {
            errs.push(FieldError::forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in StatefulSet is not Supported",
            ));
        }
    }
    if let Some(templates) = spec.get("volumeClaimTemplates").and_then(Value::as_array) {
        for (i, t) in templates.iter().enumerate() {
            let name = t.pointer("/metadata/name").and_then(Value::as_str);
            let f = format!("spec.volumeClaimTemplates[{i}].metadata.name");
            match name {
                None | Some("") => errs.push(FieldError::required(&f)),
                Some(n) if !is_dns1123_label(n) => {
                    errs.push(FieldError::invalid(&f, &json!(n), LABEL_MSG))
                }
                Some(_) => {}
            }
        }
    }
}

fn non_negative(obj: &Value, key: &str, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(v) = obj.get(key) {
        if v.as_i64().is_some_and(|n| n < 0) {
            errs.push(FieldError::invalid(
                field,
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn update_strategy(strategy: Option<&Value>, errs: &mut Vec<FieldError>) {
    const PATH: &str = "spec.updateStrategy";
    let strategy = strategy.unwrap_or(&Value::Null);
    let ru = strategy.get("rollingUpdate").filter(|v| !v.is_null());
    match strategy.get("type").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required(PATH)),
        Some("OnDelete") => {
            if let Some(ru) = ru {
                errs.push(FieldError::invalid(
                    &format!("{PATH}.rollingUpdate"),
                    ru,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        Some("RollingUpdate") => {
            let Some(ru) = ru else { return };
            non_negative(
                ru,
                "partition",
                &format!("{PATH}.rollingUpdate.partition"),
                errs,
            );
            if let Some(mu) = ru.get("maxUnavailable").filter(|v| !v.is_null()) {
                let field = format!("{PATH}.rollingUpdate.maxUnavailable");
                int_or_percent(&field, mu, errs);
                let zero = mu.as_i64() == Some(0)
                    || mu.as_str().is_some_and(|s| s.trim_end_matches('%') == "0");
                if zero {
                    errs.push(FieldError::invalid(&field, mu, "cannot be 0"));
                }
            }
        }
        Some(_) => errs.push(FieldError::invalid(
            PATH,
            strategy,
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
}

/// Only replicas, ordinals, template, updateStrategy, the claim retention policy and
/// minReadySeconds may change.
pub(crate) fn validate_stateful_set_update(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let fixed = |obj: &Value| {
        let mut spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(m) = spec.as_object_mut() {
            for k in MUTABLE {
                m.remove(*k);
            }
        }
        spec
    };
    if fixed(old) != fixed(new) {
        errs.push(FieldError::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate_stateful_set(&json!({ "spec": spec }), &mut errs);
        errs.iter().map(FieldError::display).collect()
    }

    fn valid() -> Value {
        json!({
            "serviceName": "nginx",
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        })
    }

    #[test]
    fn the_spec_is_checked_as_kube_does() {
        assert!(errors(valid()).is_empty(), "{:?}", errors(valid()));
        let mut bad = valid();
        bad["podManagementPolicy"] = json!("Sometimes");
        let e = errors(bad);
        assert!(
            e[0].contains("must be 'OrderedReady' or 'Parallel'"),
            "{e:?}"
        );
        let mut bad = valid();
        bad["updateStrategy"] = json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}});
        let e = errors(bad);
        assert!(
            e[0].contains("only allowed for updateStrategy 'RollingUpdate'"),
            "{e:?}"
        );
        let mut bad = valid();
        bad["updateStrategy"]["rollingUpdate"] = json!({"partition": -1, "maxUnavailable": 0});
        let e = errors(bad);
        assert!(
            e.iter()
                .any(|e| e.contains("spec.updateStrategy.rollingUpdate.partition")),
            "{e:?}"
        );
        assert!(e.iter().any(|e| e.contains("cannot be 0")), "{e:?}");
        let mut bad = valid();
        bad["persistentVolumeClaimRetentionPolicy"]["whenScaled"] = json!("Keep");
        let e = errors(bad);
        assert!(e[0].contains("Unsupported value: \"Keep\""), "{e:?}");
        let mut bad = valid();
        bad["serviceName"] = json!("Not_A_Label");
        let e = errors(bad);
        assert!(e[0].contains("spec.serviceName"), "{e:?}");
    }

    #[test]
    fn only_some_fields_may_change() {
        let old = json!({"spec": {"replicas": 1, "serviceName": "a", "template": {}}});
        let scaled = json!({"spec": {"replicas": 3, "serviceName": "a", "template": {"x": 1}}});
        let mut errs = Vec::new();
        validate_stateful_set_update(&old, &scaled, &mut errs);
        assert!(errs.is_empty());
        let renamed = json!({"spec": {"replicas": 1, "serviceName": "b", "template": {}}});
        validate_stateful_set_update(&old, &renamed, &mut errs);
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .display()
            .contains("spec: Forbidden: updates to statefulset spec"));
    }
}
