//! The apps/v1 workloads: Deployment, ReplicaSet, DaemonSet, StatefulSet. Their pods
//! restart Always, their selector must select the template and may not change.

use serde_json::{json, Map, Value};

use super::{empty_status, selector_immutable, Strategy};
use crate::defaults::{default_template, obj_mut, set_default};
use crate::validation::{validate_workload, FieldError};

pub struct Deployments;
pub struct ReplicaSets;
pub struct DaemonSets;
pub struct StatefulSets;

/// What the four share; each kind adds its defaults.
macro_rules! apps_workload {
    ($t:ty, $defaults:expr) => {
        impl Strategy for $t {
            fn default(&self, obj: &mut Value) {
                if let Some(spec) = obj_mut(obj, "spec") {
                    let defaults: fn(&mut Map<String, Value>) = $defaults;
                    defaults(spec);
                }
                default_template(obj);
            }

            fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
                validate_workload(obj, errs, &["Always"], true);
            }

            fn tracks_generation(&self) -> bool {
                true
            }

            fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
                empty_status(obj);
            }

            fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
                selector_immutable(old, new, errs);
            }
        }
    };
}

apps_workload!(Deployments, |spec| {
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    set_default(spec, "strategy", json!({"type": "RollingUpdate"}));
    if let Some(st) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
        set_default(st, "type", json!("RollingUpdate"));
        if st.get("type") == Some(&json!("RollingUpdate")) {
            set_default(st, "rollingUpdate", json!({}));
            if let Some(ru) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                set_default(ru, "maxSurge", json!("25%"));
                set_default(ru, "maxUnavailable", json!("25%"));
            }
        }
    }
});

apps_workload!(ReplicaSets, |spec| {
    set_default(spec, "replicas", json!(1));
});

apps_workload!(DaemonSets, |spec| {
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(
        spec,
        "updateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
    );
});

apps_workload!(StatefulSets, |spec| {
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(
        spec,
        "updateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
    );
    set_default(
        spec,
        "persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
});
