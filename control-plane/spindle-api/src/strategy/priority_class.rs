//! PriorityClasses: the default preemption policy and what an update may not change.
//! Their effect on pods is the Priority admission plugin's (the API server's).

use serde_json::{json, Value};

use super::Strategy;
use crate::validation::{validate_priority_class, validate_priority_class_update, FieldError};

pub struct PriorityClasses;

impl Strategy for PriorityClasses {
    /// `SetDefaults_PriorityClass`.
    fn default(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            if o.get("preemptionPolicy").is_none_or(Value::is_null) {
                o.insert("preemptionPolicy".into(), json!("PreemptLowerPriority"));
            }
        }
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_priority_class(obj, errs);
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        validate_priority_class_update(old, new, errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(obj: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        PriorityClasses.validate(obj, &mut errs);
        errs.iter().map(FieldError::display).collect()
    }

    #[test]
    fn priority_classes_refuse_what_kube_refuses() {
        let mut pc = json!({"metadata": {"name": "high"}, "value": 1000});
        PriorityClasses.default(&mut pc);
        assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(errors(&pc), Vec::<String>::new());
        let big = json!({"metadata": {"name": "big"}, "value": 1_000_000_001_i64,
            "preemptionPolicy": "Sometimes"});
        assert_eq!(
            errors(&big),
            [
                "value: Forbidden: maximum allowed value of a user defined priority is 1000000000",
                "preemptionPolicy: Unsupported value: \"Sometimes\": supported values: \"Never\", \"PreemptLowerPriority\"",
            ]
        );
        let sys = json!({"metadata": {"name": "system-mine"}, "value": 5,
            "preemptionPolicy": "Never"});
        assert_eq!(
            errors(&sys),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"]
        );
        let known = json!({"metadata": {"name": "system-node-critical"},
            "value": 2_000_001_000_i64, "preemptionPolicy": "PreemptLowerPriority"});
        assert_eq!(errors(&known), Vec::<String>::new());

        let mut changed = pc.clone();
        changed["value"] = json!(7);
        changed["preemptionPolicy"] = json!("Never");
        let mut errs = Vec::new();
        PriorityClasses.validate_update(&pc, &changed, &mut errs);
        let errs: Vec<String> = errs.iter().map(FieldError::display).collect();
        assert_eq!(
            errs,
            [
                "value: Forbidden: may not be changed in an update.",
                "preemptionPolicy: Invalid value: \"Never\": field is immutable",
            ]
        );
    }
}
