//! batch/v1 Job and CronJob. Their pod templates are defaulted as any pod's (restart
//! policy Always) and then must say OnFailure or Never, as kube-apiserver requires.

use serde_json::{json, Map, Value};

use super::apps::Workload;
use super::{empty_status, Strategy};
use crate::defaults::{default_pod_spec, obj_mut, obj_mut_map, set_default};
use crate::validation::{validate_cron_job, validate_pod_spec, FieldError};

const JOB_RESTART: &[&str] = &["OnFailure", "Never"];

/// Jobs: the apps workloads' rules with the Job's restart policies, and a selector the
/// server generates unless `manualSelector` says otherwise.
pub static JOBS: Workload = Workload::new(job_defaults, JOB_RESTART, false);

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

/// The Job's defaults, and its selector generated from its uid.
fn job_defaults(obj: &mut Value) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let manual = obj
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(spec) = obj_mut(obj, "spec") {
        set_default(spec, "parallelism", json!(1));
        set_default(spec, "completions", json!(1));
        set_default(spec, "backoffLimit", json!(6));
        set_default(spec, "completionMode", json!("NonIndexed"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
        // Like the Kubernetes Job strategy: a generated selector on the job's uid unless
        // the user asked to manage it.
        if !manual && !uid.is_empty() && spec.get("selector").is_none_or(Value::is_null) {
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
            );
            if let Some(tmeta) = spec
                .get_mut("template")
                .and_then(|t| obj_mut(t, "metadata"))
            {
                if let Some(labels) = obj_mut_map(tmeta, "labels") {
                    for (k, v) in [
                        ("batch.kubernetes.io/controller-uid", &uid),
                        ("batch.kubernetes.io/job-name", &name),
                        ("controller-uid", &uid),
                        ("job-name", &name),
                    ] {
                        labels.insert(k.into(), json!(v));
                    }
                }
            }
        }
    }
}
