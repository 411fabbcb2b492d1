//! The options of a `pods/log` request, checked as kube-apiserver checks them before it
//! asks the node for anything (`ValidatePodLogOptions`).

use serde_json::json;

use super::FieldError;

/// The numeric PodLogOptions, each as the request gave it (None when absent).
#[derive(Clone, Copy, Debug, Default)]
pub struct PodLogLimits {
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
}

/// A negative tail, a byte limit below 1 or a look-back below one second, in
/// kube-apiserver's order and words. (With `sinceTime` also given, kube-apiserver refuses
/// the pair instead of checking `sinceSeconds`; the caller leaves it out then.)
pub fn validate_pod_log_options(o: &PodLogLimits) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(n) = o.tail_lines.filter(|n| *n < 0) {
        errs.push(FieldError::invalid(
            "tailLines",
            &json!(n),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(n) = o.limit_bytes.filter(|n| *n < 1) {
        errs.push(FieldError::invalid(
            "limitBytes",
            &json!(n),
            "must be greater than 0",
        ));
    }
    if let Some(n) = o.since_seconds.filter(|n| *n < 1) {
        errs.push(FieldError::invalid(
            "sinceSeconds",
            &json!(n),
            "must be greater than 0",
        ));
    }
    errs
}
