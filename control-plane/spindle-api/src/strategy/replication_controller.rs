//! core/v1 ReplicationController, the ReplicaSet's predecessor: its selector is a plain
//! label map that defaults to the template's labels (and so do the object's own labels),
//! replicas default to 1, and its pods restart Always. Unlike a ReplicaSet's, its
//! selector may change.

use serde_json::{json, Map, Value};

use super::{empty_status, Strategy};
use crate::defaults::{default_template, obj_mut, set_default};
use spindle_meta::selector::Matcher;

use crate::validation::{validate_labels, validate_pod_spec, FieldError};

pub struct ReplicationControllers;

impl Strategy for ReplicationControllers {
    /// Kubernetes' `SetDefaults_ReplicationController`.
    fn default(&self, obj: &mut Value) {
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object)
            .filter(|l| !l.is_empty())
            .cloned();
        if let Some(labels) = labels {
            if let Some(spec) = obj_mut(obj, "spec") {
                if spec
                    .get("selector")
                    .and_then(Value::as_object)
                    .is_none_or(Map::is_empty)
                {
                    spec.insert("selector".into(), Value::Object(labels.clone()));
                }
            }
            if let Some(meta) = obj_mut(obj, "metadata") {
                if meta
                    .get("labels")
                    .and_then(Value::as_object)
                    .is_none_or(Map::is_empty)
                {
                    meta.insert("labels".into(), Value::Object(labels));
                }
            }
        }
        if let Some(spec) = obj_mut(obj, "spec") {
            set_default(spec, "replicas", json!(1));
        }
        default_template(obj);
    }

    /// Kubernetes' `ValidateReplicationControllerSpec`.
    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        for f in ["minReadySeconds", "replicas"] {
            if let Some(v) = spec.get(f).filter(|v| v.as_i64().is_some_and(|n| n < 0)) {
                errs.push(FieldError::invalid(
                    &format!("spec.{f}"),
                    v,
                    "must be greater than or equal to 0",
                ));
            }
        }
        let selector = spec
            .get("selector")
            .and_then(Value::as_object)
            .filter(|s| !s.is_empty());
        match selector {
            None => errs.push(FieldError::required("spec.selector")),
            Some(_) => validate_labels(spec.get("selector"), "spec.selector", errs),
        }
        let Some(template) = spec.get("template").filter(|t| !t.is_null()) else {
            errs.push(FieldError::required("spec.template"));
            return;
        };
        let labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if selector.is_some()
            && !Matcher::from_json_map(spec.get("selector")).matches_json(Some(&labels))
        {
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                &labels,
                "`selector` does not match template `labels`",
            ));
        }
        validate_labels(
            template.pointer("/metadata/labels"),
            "spec.template.metadata.labels",
            errs,
        );
        let pod_spec = template.get("spec").unwrap_or(&Value::Null);
        validate_pod_spec(pod_spec, "spec.template.spec", errs, &["Always"]);
        if pod_spec
            .get("activeDeadlineSeconds")
            .is_some_and(|v| !v.is_null())
        {
            errs.push(FieldError::forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in ReplicationController is not Supported",
            ));
        }
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        empty_status(obj);
    }
}
