//! ControllerRevision (apps/v1): an immutable snapshot of a DaemonSet's or StatefulSet's
//! template. The controller may renumber a revision (a rollback to an old template makes
//! it the newest) but its data never changes, as kube-apiserver's strategy says.

use serde_json::Value;

use super::Strategy;
use crate::validation::FieldError;

pub struct ControllerRevisions;

impl Strategy for ControllerRevisions {
    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        if obj.get("data").is_none_or(Value::is_null) {
            errs.push(FieldError::required_because("data", "data is mandatory"));
        }
        if let Some(r) = obj.get("revision").and_then(Value::as_i64) {
            if r < 0 {
                errs.push(FieldError::invalid(
                    "revision",
                    &Value::from(r),
                    "must be greater than or equal to 0",
                ));
            }
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        if old.get("data") != new.get("data") {
            errs.push(FieldError::invalid(
                "data",
                new.get("data").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn data_is_required_and_immutable_revision_non_negative() {
        let mut errs = Vec::new();
        ControllerRevisions.validate(&json!({"revision": -1}), &mut errs);
        let fields: Vec<_> = errs.iter().map(|e| e.display()).collect();
        assert_eq!(errs.len(), 2, "{fields:?}");
        let mut errs = Vec::new();
        let old = json!({"revision": 1, "data": {"spec": {"a": 1}}});
        let renumbered = json!({"revision": 3, "data": {"spec": {"a": 1}}});
        ControllerRevisions.validate_update(&old, &renumbered, &mut errs);
        assert!(errs.is_empty(), "a new revision number is allowed");
        let changed = json!({"revision": 1, "data": {"spec": {"a": 2}}});
        ControllerRevisions.validate_update(&old, &changed, &mut errs);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].display().contains("field is immutable"),
            "{}",
            errs[0].display()
        );
    }
}
