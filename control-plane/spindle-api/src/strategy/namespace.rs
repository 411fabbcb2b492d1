//! Namespaces: DNS-label names, the `kubernetes.io/metadata.name` label, the
//! `kubernetes` finalizer, phase Active, and deletion that empties them.

use serde_json::{json, Value};

use super::{OnDelete, Strategy};
use crate::defaults::{obj_mut, obj_mut_map, set_default};
use crate::validation::NameRule;

pub struct Namespaces;

impl Strategy for Namespaces {
    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }

    fn default(&self, obj: &mut Value) {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(meta) = obj_mut(obj, "metadata") {
            if let Some(labels) = obj_mut_map(meta, "labels") {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        if let Some(spec) = obj_mut(obj, "spec") {
            set_default(spec, "finalizers", json!(["kubernetes"]));
        }
        if let Some(status) = obj_mut(obj, "status") {
            set_default(status, "phase", json!("Active"));
        }
    }

    fn on_delete(&self) -> OnDelete {
        OnDelete::EmptyNamespace
    }

    fn returns_deleted_object(&self) -> bool {
        true
    }

    /// Namespace storage has no DeleteCollection in kube-apiserver, so
    /// `kubectl delete ns --all` deletes one by one and meets the immortal-namespace check
    /// for each.
    fn deletes_collections(&self) -> bool {
        false
    }
}
