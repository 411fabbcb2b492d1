//! StorageClasses, as kube-apiserver's `ValidateStorageClass(Update)` words them (a
//! StorageClass has no spec: its fields sit at the top of the object, and so do their
//! paths).

use serde_json::{json, Value};

use super::{is_qualified_name, FieldError};

const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
const MAX_PARAMETERS: usize = 512;
const MAX_PARAMETERS_SIZE: usize = 256 * 1024;

pub(crate) fn validate_storage_class(obj: &Value, errs: &mut Vec<FieldError>) {
    match obj.get("provisioner").and_then(Value::as_str).unwrap_or("") {
        "" => errs.push(FieldError::required("provisioner")),
        p if !is_qualified_name(&p.to_lowercase()) => errs.push(FieldError::invalid(
            "provisioner",
            &json!(p.to_lowercase()),
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        )),
        _ => {}
    }
    if let Some(params) = obj.get("parameters").and_then(Value::as_object) {
        if params.len() > MAX_PARAMETERS {
            errs.push(FieldError {
                reason: "FieldValueTooLong".into(),
                message: format!("Too long: must have at most {MAX_PARAMETERS} bytes"),
                field: "parameters".into(),
            });
        }
        let mut size = 0;
        for (k, v) in params {
            if k.is_empty() {
                errs.push(FieldError::invalid(
                    "parameters",
                    &json!(k),
                    "field can not be empty.",
                ));
            }
            size += k.len() + v.as_str().map_or(0, str::len);
        }
        if size > MAX_PARAMETERS_SIZE {
            errs.push(FieldError {
                reason: "FieldValueTooLong".into(),
                message: format!("Too long: must have at most {MAX_PARAMETERS_SIZE} bytes"),
                field: "parameters".into(),
            });
        }
    }
    if let Some(p) = obj.get("reclaimPolicy").filter(|p| !p.is_null()) {
        let ok = p
            .as_str()
            .is_some_and(|p| p.is_empty() || RECLAIM_POLICIES.contains(&p));
        if !ok {
            errs.push(FieldError::not_supported(
                "reclaimPolicy",
                p,
                RECLAIM_POLICIES,
            ));
        }
    }
    match obj.get("volumeBindingMode").filter(|m| !m.is_null()) {
        None => errs.push(FieldError::required("volumeBindingMode")),
        Some(m) if !m.as_str().is_some_and(|m| BINDING_MODES.contains(&m)) => errs.push(
            FieldError::not_supported("volumeBindingMode", m, BINDING_MODES),
        ),
        Some(_) => {}
    }
}

/// `ValidateStorageClassUpdate`: what provisions a class's volumes and how does not change.
pub(crate) fn validate_storage_class_update(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let forbidden = [
        ("parameters", "updates to parameters are forbidden."),
        ("provisioner", "updates to provisioner are forbidden."),
        ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
    ];
    for (field, msg) in forbidden {
        let present = |v: &Value| v.get(field).filter(|x| !x.is_null()).cloned();
        if present(old) != present(new) {
            errs.push(FieldError::forbidden(field, msg));
        }
    }
    let (o, n) = (old.get("volumeBindingMode"), new.get("volumeBindingMode"));
    if o != n {
        errs.push(FieldError::invalid(
            "volumeBindingMode",
            n.unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}
