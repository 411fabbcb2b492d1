//! The apps/v1 workloads: Deployment, ReplicaSet, DaemonSet, StatefulSet. Their pods
//! restart Always, their selector must select the template and may not change.

use serde_json::{json, Map, Value};

use super::{reset_status, selector_immutable, Strategy};
use crate::defaults::{default_template, obj_mut, set_default};
use crate::validation::{
    validate_daemon_set, validate_stateful_set, validate_stateful_set_update, validate_workload,
    FieldError,
};

/// A kind that runs pods from a template under a selector: its defaults, the restart
/// policies its pods may have, and whether the selector must be given (a Job generates
/// its own). The selector must select the template and may not change.
pub struct Workload {
    defaults: fn(&mut Value),
    restart_policies: &'static [&'static str],
    selector_required: bool,
    /// The kind as the empty selector's message names it.
    selector_kind: &'static str,
    initial_status: fn() -> Value,
    /// Rules of the kind beyond the workload's.
    extra_validation: fn(&Value, &mut Vec<FieldError>),
    /// What an update may not change (the selector, unless the kind says more).
    update_validation: fn(&Value, &Value, &mut Vec<FieldError>),
}

impl Workload {
    pub(crate) const fn new(
        defaults: fn(&mut Value),
        restart_policies: &'static [&'static str],
        selector_required: bool,
    ) -> Workload {
        Workload {
            defaults,
            restart_policies,
            selector_required,
            selector_kind: "deployment",
            initial_status: || json!({}),
            extra_validation: |_, _| {},
            update_validation: selector_immutable,
        }
    }

    /// The status a new object starts with, for kinds whose status has required fields
    /// that clients insist on decoding (a typed client refuses a DaemonSet without them).
    const fn with_initial_status(mut self, initial_status: fn() -> Value) -> Workload {
        self.initial_status = initial_status;
        self
    }

    const fn with_selector_kind(mut self, kind: &'static str) -> Workload {
        self.selector_kind = kind;
        self
    }

    const fn with_validation(mut self, f: fn(&Value, &mut Vec<FieldError>)) -> Workload {
        self.extra_validation = f;
        self
    }

    const fn with_update_validation(
        mut self,
        f: fn(&Value, &Value, &mut Vec<FieldError>),
    ) -> Workload {
        self.update_validation = f;
        self
    }
}

impl Strategy for Workload {
    fn default(&self, obj: &mut Value) {
        (self.defaults)(obj);
        default_template(obj);
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_workload(
            obj,
            errs,
            self.restart_policies,
            self.selector_required,
            self.selector_kind,
        );
        (self.extra_validation)(obj, errs);
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        reset_status(obj, (self.initial_status)());
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        (self.update_validation)(old, new, errs);
    }
}

const ALWAYS: &[&str] = &["Always"];

pub static DEPLOYMENTS: Workload = Workload::new(deployment_defaults, ALWAYS, true);
pub static REPLICA_SETS: Workload = Workload::new(replica_set_defaults, ALWAYS, true);
pub static DAEMON_SETS: Workload = Workload::new(daemon_set_defaults, ALWAYS, true)
    .with_initial_status(daemon_set_status)
    .with_selector_kind("daemonset")
    .with_validation(validate_daemon_set);
pub static STATEFUL_SETS: Workload = Workload::new(stateful_set_defaults, ALWAYS, true)
    .with_selector_kind("statefulset")
    .with_validation(validate_stateful_set)
    .with_update_validation(validate_stateful_set_update);

fn deployment_defaults(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
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
}

fn replica_set_defaults(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
}

fn daemon_set_defaults(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_default(spec, "revisionHistoryLimit", json!(10));
    // Field by field, as kube's SetDefaults_DaemonSet: a strategy that names only
    // maxSurge still gets maxUnavailable 1.
    set_default(spec, "updateStrategy", json!({}));
    let Some(st) = spec
        .get_mut("updateStrategy")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    set_default(st, "type", json!("RollingUpdate"));
    if st.get("type") == Some(&json!("RollingUpdate")) {
        set_default(st, "rollingUpdate", json!({}));
        if let Some(ru) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
            set_default(ru, "maxUnavailable", json!(1));
            set_default(ru, "maxSurge", json!(0));
        }
    }
}

/// DaemonSetStatus has four integers without `omitempty`: Kubernetes serialises them as
/// 0 from creation on, and the Python client refuses a DaemonSet that lacks them.
fn daemon_set_status() -> Value {
    json!({
        "currentNumberScheduled": 0,
        "desiredNumberScheduled": 0,
        "numberMisscheduled": 0,
        "numberReady": 0,
    })
}

/// Field by field, as kube's SetDefaults_StatefulSet: a strategy without a type becomes
/// RollingUpdate with partition 0; a retention policy gets Retain for what it leaves out.
fn stateful_set_defaults(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "updateStrategy", json!({}));
    if let Some(st) = spec
        .get_mut("updateStrategy")
        .and_then(Value::as_object_mut)
    {
        if st
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            st.insert("type".into(), json!("RollingUpdate"));
            set_default(st, "rollingUpdate", json!({}));
        }
        if st.get("type") == Some(&json!("RollingUpdate")) {
            if let Some(ru) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                set_default(ru, "partition", json!(0));
            }
        }
    }
    set_default(spec, "persistentVolumeClaimRetentionPolicy", json!({}));
    if let Some(p) = spec
        .get_mut("persistentVolumeClaimRetentionPolicy")
        .and_then(Value::as_object_mut)
    {
        set_default(p, "whenDeleted", json!("Retain"));
        set_default(p, "whenScaled", json!("Retain"));
    }
}
