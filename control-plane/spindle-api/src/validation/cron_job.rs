//! A CronJob's own rules, as kube-apiserver's `validateCronJobSpec` and
//! `ValidateCronJobCreate` word them: the schedule (kube's cron syntax, no time zone in
//! it), `timeZone`, `concurrencyPolicy`, the non-negative counts, the job template's
//! selector, and a name short enough for the Jobs named after it.

use serde_json::{json, Value};
use spindle_meta::cron::{load_time_zone, Schedule};

use super::FieldError;

/// The Job name's limit (a DNS label, 63) less the `-<minutes since epoch>` suffix (11).
const MAX_NAME_LEN: usize = 52;

pub(crate) fn validate_cron_job(obj: &Value, errs: &mut Vec<FieldError>) {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str);
    if let Some(name) = name.filter(|n| n.len() > MAX_NAME_LEN) {
        errs.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            "must be no more than 52 characters",
        ));
    }
    let Some(spec) = obj.get("spec") else {
        return errs.push(FieldError::required("spec.schedule"));
    };
    match spec.get("schedule").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required("spec.schedule")),
        Some(schedule) => {
            let bad = |detail: &str| FieldError::invalid("spec.schedule", &json!(schedule), detail);
            if let Err(e) = Schedule::parse(schedule) {
                errs.push(bad(&e.0));
            }
            if schedule.contains("TZ") {
                errs.push(bad(
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            }
        }
    }
    for field in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        if let Some(n) = spec.get(field).and_then(Value::as_i64).filter(|n| *n < 0) {
            errs.push(FieldError::invalid(
                &format!("spec.{field}"),
                &json!(n),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(tz) = spec.get("timeZone").and_then(Value::as_str) {
        if let Err(detail) = time_zone(tz) {
            errs.push(FieldError::invalid("spec.timeZone", &json!(tz), &detail));
        }
    }
    match spec.get("concurrencyPolicy").and_then(Value::as_str) {
        Some("Allow" | "Forbid" | "Replace") => {}
        None | Some("") => errs.push(FieldError::required("spec.concurrencyPolicy")),
        Some(other) => errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            &json!(other),
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let template = spec.pointer("/jobTemplate/spec");
    if let Some(sel) = template
        .and_then(|t| t.get("selector"))
        .filter(|s| !s.is_null())
    {
        errs.push(FieldError::invalid(
            "spec.jobTemplate.spec.selector",
            sel,
            "`selector` will be auto-generated",
        ));
    }
    if template.and_then(|t| t.get("manualSelector")) == Some(&json!(true)) {
        errs.push(FieldError::not_supported(
            "spec.jobTemplate.spec.manualSelector",
            &json!(true),
            &["nil", "false"],
        ));
    }
}

/// kube's `validateTimeZone`: a plain IANA name (no path tricks, not `Local`) that
/// loads.
fn time_zone(tz: &str) -> Result<(), String> {
    if tz.is_empty() {
        return Err("timeZone must be nil or non-empty string".into());
    }
    let part_ok = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
    };
    if !tz.split('/').all(part_ok) {
        return Err(format!("unknown time zone {tz}"));
    }
    if tz.eq_ignore_ascii_case("Local") {
        return Err(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    load_time_zone(tz).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: Value) -> Vec<String> {
        let obj = json!({"metadata": {"name": "nightly"}, "spec": spec});
        let mut errs = Vec::new();
        validate_cron_job(&obj, &mut errs);
        errs.iter().map(FieldError::display).collect()
    }

    fn spec(extra: Value) -> Value {
        let mut s = json!({"schedule": "*/5 * * * *", "concurrencyPolicy": "Allow"});
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        s
    }

    #[test]
    fn good_specs_pass() {
        assert!(errors(spec(json!({}))).is_empty());
        assert!(errors(spec(
            json!({"schedule": "@hourly", "timeZone": "Europe/Paris"})
        ))
        .is_empty());
        assert!(errors(spec(json!({"timeZone": "Etc/GMT+5"}))).is_empty());
    }

    #[test]
    fn bad_input_in_kube_words() {
        assert_eq!(
            errors(spec(json!({"schedule": "every minute"}))),
            ["spec.schedule: Invalid value: \"every minute\": expected exactly 5 fields, found 2: [every minute]"]
        );
        assert_eq!(
            errors(spec(json!({"schedule": "CRON_TZ=UTC 0 * * * *"}))),
            ["spec.schedule: Invalid value: \"CRON_TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
        );
        assert_eq!(
            errors(spec(json!({"timeZone": "Mars/Olympus"}))),
            ["spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"]
        );
        assert_eq!(
            errors(spec(json!({"timeZone": "../etc/passwd"}))),
            ["spec.timeZone: Invalid value: \"../etc/passwd\": unknown time zone ../etc/passwd"]
        );
        assert_eq!(
            errors(spec(json!({"timeZone": "Local"}))),
            ["spec.timeZone: Invalid value: \"Local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"]
        );
        assert_eq!(
            errors(spec(json!({"concurrencyPolicy": "Sometimes"}))),
            ["spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""]
        );
        assert_eq!(
            errors(spec(json!({"startingDeadlineSeconds": -1, "failedJobsHistoryLimit": -2}))),
            [
                "spec.startingDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.failedJobsHistoryLimit: Invalid value: -2: must be greater than or equal to 0"
            ]
        );
        let long = "x".repeat(53);
        let mut errs = Vec::new();
        validate_cron_job(
            &json!({"metadata": {"name": long}, "spec": spec(json!({}))}),
            &mut errs,
        );
        assert_eq!(
            errs.iter().map(FieldError::display).collect::<Vec<_>>(),
            [format!(
                "metadata.name: Invalid value: \"{long}\": must be no more than 52 characters"
            )]
        );
    }
}
