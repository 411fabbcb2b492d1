//! ConfigMaps and Secrets: config keys, `immutable`, and Secrets' `stringData`.

use serde_json::{json, Value};

use super::Strategy;
use crate::defaults::set_default;
use crate::validation::{is_config_key, FieldError};

pub struct ConfigMaps;
pub struct Secrets;

impl Strategy for ConfigMaps {
    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_keys(obj, errs);
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        immutable_data(old, new, errs);
    }
}

impl Strategy for Secrets {
    fn default(&self, obj: &mut Value) {
        let Some(m) = obj.as_object_mut() else {
            return;
        };
        set_default(m, "type", json!("Opaque"));
        // stringData is write-only: it lands in data, base64-encoded, as on Kubernetes.
        if let Some(Value::Object(sd)) = m.remove("stringData") {
            use base64::Engine;
            let data = m.entry("data").or_insert_with(|| json!({}));
            if data.is_null() {
                *data = json!({});
            }
            if let Some(d) = data.as_object_mut() {
                for (k, v) in sd {
                    let raw = v.as_str().unwrap_or("").as_bytes().to_vec();
                    d.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(raw)),
                    );
                }
            }
        }
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_keys(obj, errs);
        validate_account_token(obj, errs);
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        immutable_data(old, new, errs);
    }
}

/// The annotation a ServiceAccount token Secret names its account with.
const SERVICE_ACCOUNT_NAME: &str = "kubernetes.io/service-account.name";

/// kube-apiserver's ValidateSecret: a `kubernetes.io/service-account-token` Secret must
/// name its account, or the token controller would have nothing to sign for.
fn validate_account_token(obj: &Value, errs: &mut Vec<FieldError>) {
    if obj.get("type").and_then(Value::as_str) != Some("kubernetes.io/service-account-token") {
        return;
    }
    let named = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SERVICE_ACCOUNT_NAME))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !named {
        errs.push(FieldError::required(&format!(
            "metadata.annotations[{SERVICE_ACCOUNT_NAME}]"
        )));
    }
}

fn validate_keys(obj: &Value, errs: &mut Vec<FieldError>) {
    for part in ["data", "binaryData", "stringData"] {
        if let Some(m) = obj.get(part).and_then(Value::as_object) {
            for k in m.keys() {
                if !is_config_key(k) {
                    errs.push(FieldError::invalid(&format!("{part}[{k}]"), &json!(k), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
                }
            }
        }
    }
}

/// Once `immutable: true`, the data may not change.
fn immutable_data(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    if old.get("immutable") != Some(&json!(true)) {
        return;
    }
    for f in ["data", "binaryData"] {
        if old.get(f) != new.get(f) {
            errs.push(FieldError::forbidden(
                f,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}
