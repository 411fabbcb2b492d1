//! batch/v1 Job: what kube-apiserver's job validation checks beyond any workload's
//! selector and template (`ValidateJob`, `ValidateJobSpecUpdate`), with its wording.

use serde_json::{json, Value};
use spindle_meta::selector::Matcher;

use super::job_policy::{validate_pod_failure_policy, validate_success_policy};
use super::FieldError;

/// The largest Indexed Job kube-apiserver accepts (completions and parallelism).
const MAX_INDEXED: i64 = 100_000;
const UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

fn nonnegative(spec: &Value, field: &str, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(v) = spec
        .get(field)
        .filter(|v| v.as_i64().is_some_and(|n| n < 0))
    {
        errs.push(FieldError::invalid(
            &format!("{path}.{field}"),
            v,
            "must be greater than or equal to 0",
        ));
    }
}

/// The spec's own rules; `path` is where it sits ("spec", or a CronJob's
/// "spec.jobTemplate.spec").
pub(crate) fn validate_job_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        nonnegative(spec, f, path, errs);
    }
    let present = |f: &str| spec.get(f).is_some_and(|v| !v.is_null());
    let mode = spec.get("completionMode").and_then(Value::as_str);
    let indexed = mode == Some("Indexed");
    if !indexed {
        for f in ["backoffLimitPerIndex", "maxFailedIndexes"] {
            if let Some(v) = spec.get(f).filter(|v| !v.is_null()) {
                errs.push(FieldError::invalid(
                    &format!("{path}.{f}"),
                    v,
                    "requires indexed completion mode",
                ));
            }
        }
    }
    if present("maxFailedIndexes") && !present("backoffLimitPerIndex") {
        errs.push(FieldError::required_because(
            &format!("{path}.backoffLimitPerIndex"),
            "when maxFailedIndexes is specified",
        ));
    }
    match mode {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            let completions = spec.get("completions").and_then(Value::as_i64);
            if completions.is_none() {
                errs.push(FieldError::required_because(
                    &format!("{path}.completions"),
                    "when completion mode is Indexed",
                ));
            }
            for f in ["completions", "parallelism"] {
                if let Some(v) = spec
                    .get(f)
                    .filter(|v| v.as_i64().is_some_and(|n| n > MAX_INDEXED))
                {
                    errs.push(FieldError::invalid(
                        &format!("{path}.{f}"),
                        v,
                        &format!("must be less than or equal to {MAX_INDEXED} when completion mode is Indexed"),
                    ));
                }
            }
            if let Some(m) = spec.get("maxFailedIndexes").filter(|v| !v.is_null()) {
                let n = m.as_i64().unwrap_or(0);
                if completions.is_some_and(|c| n > c) {
                    errs.push(FieldError::invalid(
                        &format!("{path}.maxFailedIndexes"),
                        m,
                        "must be less than or equal to completions",
                    ));
                }
                if n > MAX_INDEXED {
                    errs.push(FieldError::invalid(
                        &format!("{path}.maxFailedIndexes"),
                        m,
                        &format!("must be less than or equal to {MAX_INDEXED}"),
                    ));
                }
            }
        }
        Some(other) => errs.push(FieldError::not_supported(
            &format!("{path}.completionMode"),
            &json!(other),
            &["NonIndexed", "Indexed"],
        )),
    }
    validate_pod_failure_policy(spec, path, errs);
    validate_success_policy(spec, path, errs);
    let policy = present("podFailurePolicy");
    if let Some(r) = spec.get("podReplacementPolicy").and_then(Value::as_str) {
        let allowed: &[&str] = if policy {
            &["Failed"]
        } else {
            &["Failed", "TerminatingOrFailed"]
        };
        if !allowed.contains(&r) {
            errs.push(FieldError::not_supported(
                &format!("{path}.podReplacementPolicy"),
                &json!(r),
                allowed,
            ));
        }
    }
    // The restart policy itself (OnFailure or Never) is checked with the pod template.
    let restart = spec.pointer("/template/spec/restartPolicy");
    if policy && restart.and_then(Value::as_str) == Some("OnFailure") {
        errs.push(FieldError::invalid(
            &format!("{path}.template.spec.restartPolicy"),
            restart.unwrap_or(&Value::Null),
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
}

/// A Job: its spec, and unless `manualSelector` its selector must be the one the
/// server generated from the uid (kube's ValidateGeneratedSelector).
pub(crate) fn validate_job(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    validate_job_spec(spec, "spec", errs);
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        if spec.get("selector").is_none_or(Value::is_null) {
            errs.push(FieldError::required("spec.selector"));
        }
        return;
    }
    let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) else {
        return;
    };
    let labels = spec.pointer("/template/metadata/labels");
    for key in [UID_LABEL, "controller-uid"] {
        let got = labels.and_then(|l| l.get(key));
        if got.and_then(Value::as_str) != Some(uid) {
            errs.push(FieldError::invalid(
                &format!("spec.template.metadata.labels[{key}]"),
                got.unwrap_or(&Value::Null),
                &format!("must be '{uid}'"),
            ));
        }
    }
    let generated = json!({ UID_LABEL: uid });
    if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
        if Matcher::try_from_json(Some(sel)).is_ok_and(|m| !m.matches_json(Some(&generated))) {
            errs.push(FieldError::invalid(
                "spec.selector",
                sel,
                "`selector` not auto-generated",
            ));
        }
    }
}

/// What a Job update may not change (kube's ValidateJobSpecUpdate).
pub(crate) fn validate_job_update(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let (o, n) = (
        old.get("spec").unwrap_or(&Value::Null),
        new.get("spec").unwrap_or(&Value::Null),
    );
    for f in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "successPolicy",
    ] {
        immutable(o, n, f, errs);
    }
    // An Indexed Job may be scaled: completions changed together with parallelism.
    let elastic = n.get("completionMode").and_then(Value::as_str) == Some("Indexed")
        && n.get("completions") == n.get("parallelism");
    if !elastic {
        immutable(o, n, "completions", errs);
    }
    // A Job suspended before it ever started may still be told where to run, as
    // kube-apiserver allows for queueing controllers (Kueue).
    let unstarted = old.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
        && old.pointer("/status/startTime").is_none_or(Value::is_null);
    let template = |s: &Value| {
        let mut t = s.get("template").cloned().unwrap_or(Value::Null);
        if unstarted {
            for p in ["/metadata", "/spec"] {
                if let Some(m) = t.pointer_mut(p).and_then(Value::as_object_mut) {
                    for k in [
                        "labels",
                        "annotations",
                        "nodeSelector",
                        "tolerations",
                        "affinity",
                        "schedulingGates",
                    ] {
                        if p == "/metadata" || !matches!(k, "labels" | "annotations") {
                            m.remove(k);
                        }
                    }
                }
            }
        }
        t
    };
    if template(o) != template(n) {
        errs.push(FieldError::invalid(
            "spec.template",
            n.get("template").unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}

fn immutable(o: &Value, n: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let (a, b) = (o.get(field), n.get(field));
    if a.filter(|v| !v.is_null()) != b.filter(|v| !v.is_null()) {
        errs.push(FieldError::invalid(
            &format!("spec.{field}"),
            b.unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::strategy::{Strategy, JOBS};
    use crate::validation::FieldError;

    fn job(spec: Value) -> Value {
        let mut spec = spec;
        spec["template"]["spec"] = json!({"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]});
        let mut obj = json!({"metadata": {"name": "pi", "namespace": "default", "uid": "u-1"},
            "spec": spec});
        JOBS.default(&mut obj);
        obj
    }

    fn shown(errs: Vec<FieldError>) -> Vec<String> {
        errs.iter().map(FieldError::display).collect()
    }

    fn errors(obj: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        JOBS.validate(obj, &mut errs);
        shown(errs)
    }

    fn update_errors(old: &Value, new: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        JOBS.validate_update(old, new, &mut errs);
        shown(errs)
    }

    #[test]
    fn defaults_and_the_generated_selector_are_kubes() {
        let j = job(json!({}));
        let s = &j["spec"];
        assert_eq!(
            (&s["completions"], &s["parallelism"], &s["backoffLimit"]),
            (&json!(1), &json!(1), &json!(6))
        );
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(
            s["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(
            s["template"]["metadata"]["labels"],
            json!({"batch.kubernetes.io/controller-uid": "u-1",
                   "batch.kubernetes.io/job-name": "pi",
                   "controller-uid": "u-1", "job-name": "pi"})
        );
        assert!(errors(&j).is_empty(), "{:?}", errors(&j));
        // Parallelism alone is a work queue: no completions.
        let q = job(json!({"parallelism": 3}));
        assert!(q["spec"].get("completions").is_none());
        // With a per-index limit the global one is unlimited.
        let per =
            job(json!({"completionMode": "Indexed", "completions": 3, "backoffLimitPerIndex": 1}));
        assert_eq!(per["spec"]["backoffLimit"], json!(i32::MAX));
    }

    #[test]
    fn bad_specs_are_refused_with_kubes_words_and_paths() {
        assert_eq!(
            errors(&job(json!({"completionMode": "Indexed", "parallelism": 2}))),
            ["spec.completions: Required value: when completion mode is Indexed"]
        );
        assert_eq!(
            errors(&job(json!({"backoffLimitPerIndex": 1}))),
            ["spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"]
        );
        assert_eq!(
            errors(&job(json!({"parallelism": -1, "completions": 1}))),
            ["spec.parallelism: Invalid value: -1: must be greater than or equal to 0"]
        );
        let mut manual = job(json!({"manualSelector": true,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "y"}}}}));
        assert_eq!(
            errors(&manual),
            ["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"y\"}: `selector` does not match template `labels`"]
        );
        manual["spec"]["template"]["metadata"]["labels"]["app"] = json!("x");
        assert!(errors(&manual).is_empty());
        // Not manual: a selector naming another uid is refused.
        let mut other = job(json!({}));
        other["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"] =
            json!("u-2");
        assert!(errors(&other)
            .iter()
            .any(|e| e.starts_with("spec.selector: Invalid value")
                && e.ends_with("`selector` not auto-generated")));
        let mut bad_restart = job(json!({}));
        bad_restart["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        assert_eq!(
            errors(&bad_restart),
            ["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
        );
    }

    #[test]
    fn the_template_is_immutable_except_where_a_suspended_job_may_be_placed() {
        let old = job(json!({}));
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        let errs = update_errors(&old, &new);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.template: Invalid value")
                && errs[0].ends_with("field is immutable")
        );
        let mut placed = old.clone();
        placed["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
        assert_eq!(update_errors(&old, &placed).len(), 1);
        let mut suspended = job(json!({"suspend": true}));
        suspended["status"] = json!({});
        let mut placed = suspended.clone();
        placed["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
        assert!(update_errors(&suspended, &placed).is_empty());
        // Once started, not even then.
        suspended["status"]["startTime"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(update_errors(&suspended, &placed).len(), 1);
        let mut more = old.clone();
        more["spec"]["completions"] = json!(5);
        assert_eq!(
            update_errors(&old, &more),
            ["spec.completions: Invalid value: 5: field is immutable"]
        );
        let mut fewer = old.clone();
        fewer["spec"]["parallelism"] = json!(0);
        fewer["spec"]["suspend"] = json!(true);
        assert!(update_errors(&old, &fewer).is_empty());
    }

    #[test]
    fn pod_failure_policies_are_refused_with_kubes_words_and_paths() {
        let with = |rules: Value| job(json!({"podFailurePolicy": {"rules": rules}}));
        let good = with(json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
        ]));
        assert!(errors(&good).is_empty(), "{:?}", errors(&good));
        // The pattern's status defaults to True, as kube-apiserver's.
        assert_eq!(
            good["spec"]["podFailurePolicy"]["rules"][1]["onPodConditions"][0]["status"],
            "True"
        );
        assert_eq!(good["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(
            errors(&with(json!([{"action": "FailJob",
                "onExitCodes": {"operator": "In", "values": [0, 3, 3, 1]}}]))),
            [
                "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Duplicate value: 3",
                "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: []int32{0, 3, 3, 1}: must be ordered",
            ]
        );
        assert_eq!(
            errors(&with(json!([{"action": "FailJob"}]))),
            ["spec.podFailurePolicy.rules[0]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required"]
        );
        assert_eq!(
            errors(&with(json!([{"action": "Count",
                "onExitCodes": {"operator": "NotIn", "values": [1]},
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]))),
            ["spec.podFailurePolicy.rules[0]: Invalid value: specifying both OnExitCodes and OnPodConditions is not supported"]
        );
        assert_eq!(
            errors(&with(json!([{"action": "FailIndex",
                "onExitCodes": {"containerName": "nope", "operator": "Within", "values": [1]}}]))),
            [
                "spec.podFailurePolicy.rules[0].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
                "spec.podFailurePolicy.rules[0].onExitCodes.operator: Unsupported value: \"Within\": supported values: \"In\", \"NotIn\"",
                "spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: \"nope\": must be one of the container or initContainer names in the pod template",
            ]
        );
        assert_eq!(
            errors(&with(json!([{"action": "Restart",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "Maybe"}]}]))),
            [
                "spec.podFailurePolicy.rules[0].action: Unsupported value: \"Restart\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
                "spec.podFailurePolicy.rules[0].onPodConditions[0].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"",
            ]
        );
        let many: Vec<i32> = (1..=256).collect();
        assert_eq!(
            errors(&with(json!([{"action": "Ignore", "onExitCodes": {"operator": "In", "values": many}}]))),
            ["spec.podFailurePolicy.rules[0].onExitCodes.values: Too many: 256: must have at most 255 items"]
        );
        // FailIndex is fine with a per-index limit (which needs Indexed).
        let mut per_index = job(json!({"completionMode": "Indexed", "completions": 2,
            "backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": [
                {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}}]}}));
        assert!(errors(&per_index).is_empty(), "{:?}", errors(&per_index));
        per_index["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        assert_eq!(
            errors(&per_index),
            ["spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified"]
        );
        per_index["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        per_index["spec"]["podReplacementPolicy"] = json!("TerminatingOrFailed");
        assert_eq!(
            errors(&per_index),
            ["spec.podReplacementPolicy: Unsupported value: \"TerminatingOrFailed\": supported values: \"Failed\""]
        );
    }

    #[test]
    fn per_index_limits_and_success_policies_are_checked_as_kube_does() {
        assert_eq!(
            errors(&job(json!({"completionMode": "Indexed", "completions": 3,
                "backoffLimitPerIndex": 1, "maxFailedIndexes": 4}))),
            ["spec.maxFailedIndexes: Invalid value: 4: must be less than or equal to completions"]
        );
        assert_eq!(
            errors(&job(
                json!({"completionMode": "Indexed", "completions": 3, "maxFailedIndexes": 1})
            )),
            ["spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified"]
        );
        let success = |rules: Value| {
            job(json!({"completionMode": "Indexed", "completions": 5,
                "successPolicy": {"rules": rules}}))
        };
        assert!(errors(&success(
            json!([{"succeededIndexes": "0,2-4", "succeededCount": 2}])
        ))
        .is_empty());
        assert_eq!(
            errors(&success(json!([{"succeededIndexes": "0-1", "succeededCount": 3},
                {"succeededCount": 6}, {}, {"succeededIndexes": "3,1"}]))),
            [
                "spec.successPolicy.rules[0].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
                "spec.successPolicy.rules[1].succeededCount: Invalid value: 6: must be less than or equal to 5 (the number of specified completions)",
                "spec.successPolicy.rules[2]: Required value: at least one of succeededCount or succeededIndexes must be specified",
                "spec.successPolicy.rules[3].succeededIndexes: Invalid value: \"3,1\": error parsing succeededIndexes: non-increasing order, previous: 3, current: 1",
            ]
        );
        assert_eq!(
            errors(&success(json!([]))),
            ["spec.successPolicy.rules: Required value: at least one rules must be specified when the successPolicy is specified"]
        );
        let plain = job(json!({"successPolicy": {"rules": [{"succeededCount": 1}]}}));
        let errs = errors(&plain);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.successPolicy: Invalid value: ")
                && errs[0].ends_with(": requires indexed completion mode"),
            "{errs:?}"
        );
        // Immutable once created.
        let old = success(json!([{"succeededCount": 1}]));
        let mut new = old.clone();
        new["spec"]["successPolicy"]["rules"][0]["succeededCount"] = json!(2);
        assert!(update_errors(&old, &new)
            .iter()
            .any(|e| e.starts_with("spec.successPolicy: Invalid value")
                && e.ends_with("field is immutable")));
    }
}
