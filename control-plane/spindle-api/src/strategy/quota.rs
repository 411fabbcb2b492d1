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
