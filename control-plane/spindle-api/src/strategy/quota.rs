//! LimitRanges and ResourceQuotas: a limit range's defaults, and what both may hold.
//! Their effect on other objects is admission's (the API server's LimitRanger and
//! ResourceQuota plugins).

use serde_json::{Map, Value};

use super::{empty_status, Strategy};
use crate::validation::{validate_limit_range, validate_resource_quota, FieldError};

pub struct LimitRanges;
pub struct ResourceQuotas;

impl Strategy for LimitRanges {
    /// `SetDefaults_LimitRangeItem`: a Container limit's default limit falls back to its
    /// max, and its default request to the default limit, then to its min.
    fn default(&self, obj: &mut Value) {
        let Some(items) = obj
            .pointer_mut("/spec/limits")
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            if item.get("type").and_then(Value::as_str) != Some("Container") {
                continue;
            }
            let list = |item: &Map<String, Value>, f: &str| {
                item.get(f)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
            };
            let (max, min) = (list(item, "max"), list(item, "min"));
            let mut default = list(item, "default");
            for (k, v) in max {
                default.entry(k).or_insert(v);
            }
            let mut request = list(item, "defaultRequest");
            for (k, v) in default.iter().chain(min.iter()) {
                request.entry(k.clone()).or_insert_with(|| v.clone());
            }
            item.insert("default".into(), Value::Object(default));
            item.insert("defaultRequest".into(), Value::Object(request));
        }
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_limit_range(obj, errs);
    }
}

impl Strategy for ResourceQuotas {
    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_resource_quota(obj, errs);
    }

    /// The controller fills the status in: what a client sends is not the usage.
    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        empty_status(obj);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn errors(s: &dyn Strategy, obj: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        s.validate(obj, &mut errs);
        errs.iter().map(FieldError::display).collect()
    }

    #[test]
    fn a_container_limit_defaults_from_its_max_and_min() {
        let mut lr = json!({"spec": {"limits": [
            {"type": "Container", "max": {"memory": "1Gi"}, "min": {"cpu": "50m"}},
            {"type": "Pod", "max": {"memory": "2Gi"}}
        ]}});
        LimitRanges.default(&mut lr);
        assert_eq!(lr["spec"]["limits"][0]["default"], json!({"memory": "1Gi"}));
        assert_eq!(
            lr["spec"]["limits"][0]["defaultRequest"],
            json!({"memory": "1Gi", "cpu": "50m"})
        );
        assert!(lr["spec"]["limits"][1].get("default").is_none());
        assert_eq!(errors(&LimitRanges, &lr), Vec::<String>::new());
    }

    #[test]
    fn limit_ranges_and_quotas_refuse_what_kube_refuses() {
        let lr = json!({"spec": {"limits": [
            {"type": "Pod", "default": {"cpu": "1"}},
            {"type": "Pod"},
            {"type": "PersistentVolumeClaim", "maxLimitRequestRatio": {"storage": "0.5"}}
        ]}});
        assert_eq!(
            errors(&LimitRanges, &lr),
            [
                "spec.limits[0].default: Forbidden: may not be specified when `type` is 'Pod'",
                "spec.limits[1].type: Duplicate value: \"Pod\"",
                "spec.limits[2].limits: Required value: either minimum or maximum storage value is required, but neither was provided",
                "spec.limits[2].maxLimitRequestRatio[storage]: Invalid value: \"500m\": ratio 500m is less than 1",
            ]
        );
        let q = json!({"spec": {"hard": {"pods": "1.5", "count/deployments.apps": "2", "requests.cpu": "x"},
            "scopes": ["BestEffort", "NotBestEffort"]}});
        assert_eq!(
            errors(&ResourceQuotas, &q),
            [
                "spec.hard[pods]: Invalid value: \"1500m\": must be an integer",
                "spec.hard[requests.cpu]: Invalid value: \"x\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                "spec.scopes: Invalid value: []string{\"BestEffort\", \"NotBestEffort\"}: unsupported scope applied to resource",
                "spec.scopes: Invalid value: []string{\"BestEffort\", \"NotBestEffort\"}: conflicting scopes",
            ]
        );
    }
}
