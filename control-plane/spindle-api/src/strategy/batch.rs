//! batch/v1 Job and CronJob. Their pod templates are defaulted as any pod's (restart
//! policy Always) and then must say OnFailure or Never, as kube-apiserver requires.

use serde_json::{json, Map, Value};

use super::{empty_status, selector_immutable, Strategy};
use crate::defaults::{default_pod_spec, default_template, obj_mut, obj_mut_map, set_default};
use crate::validation::{
    str_at, validate_cron_job, validate_job, validate_job_update, validate_pod_spec,
    validate_workload, FieldError,
};

const JOB_RESTART: &[&str] = &["OnFailure", "Never"];

/// Jobs: a workload whose pods restart OnFailure or Never, whose selector the server
/// generates from the uid unless `manualSelector` says otherwise, and whose template may
/// not change (kube-apiserver's Job strategy).
pub struct Jobs;

pub static JOBS: Jobs = Jobs;

impl Strategy for Jobs {
    fn default(&self, obj: &mut Value) {
        job_defaults(obj);
        default_template(obj);
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_workload(obj, errs, JOB_RESTART, false, "deployment");
        validate_job(obj, errs);
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        empty_status(obj);
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        selector_immutable(old, new, errs);
        validate_job_update(old, new, errs);
    }
}

pub struct CronJobs;

impl Strategy for CronJobs {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj_mut(obj, "spec") {
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
        }
        if let Some(m) = obj
            .pointer_mut("/spec/jobTemplate/spec")
            .and_then(Value::as_object_mut)
        {
            set_default(m, "backoffLimit", json!(6));
            set_default(m, "completionMode", json!("NonIndexed"));
            set_default(m, "suspend", json!(false));
        }
        if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
            default_pod_spec(spec);
        }
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_cron_job(obj, errs);
        match obj.pointer("/spec/jobTemplate/spec/template/spec") {
            Some(s) => {
                validate_pod_spec(s, "spec.jobTemplate.spec.template.spec", errs, JOB_RESTART)
            }
            None => errs.push(FieldError::required(
                "spec.jobTemplate.spec.template.spec.containers",
            )),
        }
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        empty_status(obj);
    }
}

/// The Job's defaults (kube's SetDefaults_Job), and its selector generated from its uid.
fn job_defaults(obj: &mut Value) {
    let uid = str_at(obj, "metadata.uid").unwrap_or("").to_string();
    let name = str_at(obj, "metadata.name").unwrap_or("").to_string();
    let manual = obj
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    let absent = |spec: &Map<String, Value>, k: &str| spec.get(k).is_none_or(Value::is_null);
    // Completions default to 1 only when neither is given: parallelism alone makes a
    // work-queue Job that ends when one pod succeeds.
    if absent(spec, "completions") && absent(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let limit = if absent(spec, "backoffLimitPerIndex") {
        6
    } else {
        i32::MAX
    };
    set_default(spec, "backoffLimit", json!(limit));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let replacement = if absent(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    // A pod condition pattern matches the condition being True unless it says.
    let patterns = spec
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get_mut("onPodConditions")?.as_array_mut())
        .flatten()
        .filter_map(Value::as_object_mut);
    for pattern in patterns {
        set_default(pattern, "status", json!("True"));
    }
    if manual || uid.is_empty() {
        return;
    }
    // Like kube-apiserver's generateSelector: the uid selects the pods; the name labels
    // are for people. A label the user set is kept (validation refuses a wrong uid).
    let has_uid = spec
        .get("selector")
        .and_then(|s| s.get("matchLabels"))
        .and_then(|m| m.get(UID_LABEL))
        .is_some();
    if has_uid {
        return;
    }
    if let Some(labels) = obj_mut_map(spec, "template")
        .and_then(|t| obj_mut_map(t, "metadata"))
        .and_then(|m| obj_mut_map(m, "labels"))
    {
        for (k, v) in [
            (UID_LABEL, &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.entry(k).or_insert_with(|| json!(v));
        }
    }
    if let Some(ml) = obj_mut_map(spec, "selector").and_then(|s| obj_mut_map(s, "matchLabels")) {
        ml.insert(UID_LABEL.into(), json!(uid));
    }
}

const UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
