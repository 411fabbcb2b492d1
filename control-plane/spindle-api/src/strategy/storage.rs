//! PersistentVolumes, PersistentVolumeClaims and StorageClasses: their defaults
//! (`SetDefaults_PersistentVolume`, `_PersistentVolumeClaim`, `_StorageClass`), the
//! initial status, and what an update may not change. The binding itself is the PV
//! binder controller's (spindle-controllers `volume/`).

use serde_json::{json, Map, Value};

use super::{reset_status, Strategy};
use crate::validation::{
    validate_persistent_volume, validate_persistent_volume_claim,
    validate_persistent_volume_claim_update, validate_persistent_volume_update,
    validate_storage_class, validate_storage_class_update, FieldError,
};

/// Set `obj[member]` to `value` when it is missing, null or an empty string.
fn default_member(obj: &mut Map<String, Value>, member: &str, value: &str) {
    let unset = obj
        .get(member)
        .is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    if unset {
        obj.insert(member.to_string(), json!(value));
    }
}

/// A status that is present gets phase Pending when it has none, as the v1 defaults do.
fn default_phase(obj: &mut Value) {
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        default_member(status, "phase", "Pending");
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub struct PersistentVolumes;

impl Strategy for PersistentVolumes {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            default_member(spec, "persistentVolumeReclaimPolicy", "Retain");
            if spec.get("volumeMode").is_none_or(Value::is_null) {
                spec.insert("volumeMode".into(), json!("Filesystem"));
            }
            // SetDefaults_HostPathVolumeSource: an unset type reads back as "".
            if let Some(hp) = spec.get_mut("hostPath").and_then(Value::as_object_mut) {
                hp.entry("type").or_insert_with(|| json!(""));
            }
        }
        default_phase(obj);
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_persistent_volume(obj, errs);
    }

    // kube-apiserver 1.33 starts every volume Pending, with the time it became so.
    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        reset_status(
            obj,
            json!({"phase": "Pending", "lastPhaseTransitionTime": now()}),
        );
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        validate_persistent_volume_update(old, new, errs);
    }
}

pub struct PersistentVolumeClaims;

impl Strategy for PersistentVolumeClaims {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            if spec.get("volumeMode").is_none_or(Value::is_null) {
                spec.insert("volumeMode".into(), json!("Filesystem"));
            }
        }
        default_phase(obj);
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_persistent_volume_claim(obj, errs);
    }

    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        reset_status(obj, json!({"phase": "Pending"}));
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        validate_persistent_volume_claim_update(old, new, errs);
    }
}

pub struct StorageClasses;

impl Strategy for StorageClasses {
    fn default(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            // Pointers in Go: only an absent value is defaulted, "" is refused.
            for (member, value) in [
                ("reclaimPolicy", "Delete"),
                ("volumeBindingMode", "Immediate"),
            ] {
                if o.get(member).is_none_or(Value::is_null) {
                    o.insert(member.into(), json!(value));
                }
            }
        }
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_storage_class(obj, errs);
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        validate_storage_class_update(old, new, errs);
    }
}
