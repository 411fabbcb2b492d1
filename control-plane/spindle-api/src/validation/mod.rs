//! Kubernetes-style validation on the JSON form of objects: field errors, names and
//! metadata here; the checks of pod specs, workloads, Services, budgets and storage in the
//! submodules, which the kinds' strategies ([`crate::strategy`]) put together.
//!
//! Messages follow Kubernetes' field errors (`Required value`, `Invalid value: …`,
//! `Unsupported value: …`) so users see what they would see on a real cluster.

mod certificates;
mod cron_job;
mod daemon_set;
mod hpa;
mod job;
mod job_policy;
mod persistent_volume;
mod pod;
mod pod_log;
mod policy;
mod priority_class;
mod quota;
mod rbac;
mod service;
mod stateful_set;
mod storage_class;
#[cfg(test)]
mod tests;
mod workload;

pub(crate) use certificates::{
    validate_certificate_signing_request, validate_certificate_signing_request_update,
};
pub(crate) use cron_job::validate_cron_job;
pub(crate) use daemon_set::validate_daemon_set;
pub(crate) use hpa::{validate_hpa, validate_hpa_update};
pub(crate) use job::{validate_job, validate_job_update};
pub(crate) use persistent_volume::{
    validate_persistent_volume, validate_persistent_volume_claim,
    validate_persistent_volume_claim_update, validate_persistent_volume_update,
};
pub(crate) use pod::{validate_pod_spec, RESTART_ANY};
pub use pod_log::{validate_pod_log_options, PodLogLimits};
pub(crate) use policy::validate_disruption_budget;
pub use priority_class::SYSTEM_PRIORITY_CLASSES;
pub(crate) use priority_class::{validate_priority_class, validate_priority_class_update};
pub(crate) use quota::{validate_limit_range, validate_resource_quota};
pub(crate) use rbac::{
    validate_aggregation_rule, validate_binding, validate_binding_update, validate_rules,
    RBAC_GROUP,
};
pub(crate) use service::validate_service;
pub use service::{cluster_ips, is_external_name, validate_service_update};
pub(crate) use stateful_set::{validate_stateful_set, validate_stateful_set_update};
pub(crate) use storage_class::{validate_storage_class, validate_storage_class_update};
pub(crate) use workload::validate_workload;

use serde::Serialize;
use serde_json::{json, Value};

/// One field error, as it appears in `details.causes` of a 422 `Invalid` Status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: String,
    /// The message without the field path, e.g. `Required value`.
    pub message: String,
    /// Dotted field path, e.g. `spec.template.metadata.labels`.
    pub field: String,
}

impl FieldError {
    pub fn invalid_type(path: &str, msg: String) -> Self {
        FieldError {
            reason: "FieldValueTypeInvalid".into(),
            message: msg,
            field: path.into(),
        }
    }
    pub fn required(field: &str) -> Self {
        FieldError {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        }
    }
    /// A required value with the reason Kubernetes gives ("Required value: <detail>").
    pub fn required_because(field: &str, detail: &str) -> Self {
        FieldError {
            message: format!("Required value: {detail}"),
            ..FieldError::required(field)
        }
    }
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {}: {detail}", go_value(value)),
            field: field.into(),
        }
    }
    pub fn not_supported(field: &str, value: &Value, allowed: &[&str]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        FieldError {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                allowed.join(", ")
            ),
            field: field.into(),
        }
    }
    pub fn duplicate(field: &str, value: &Value) -> Self {
        FieldError {
            reason: "FieldValueDuplicate".into(),
            message: format!("Duplicate value: {}", go_value(value)),
            field: field.into(),
        }
    }
    pub fn forbidden(field: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }
    }
    /// `field: message`, as in the Status message.
    pub fn display(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// Values printed the way Go's `%#v`-ish field errors show them.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("\"{k}\":{}", go_value(v)))
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => {
            let parts: Vec<String> = a.iter().map(go_value).collect();
            format!("[]string{{{}}}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// name and syntax checks

pub(crate) fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

pub(crate) const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && s.as_bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Label and annotation keys: `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

pub(crate) fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s != "."
        && s != ".."
}

pub(crate) fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for p in path.split('.') {
        cur = cur.get(p)?;
    }
    Some(cur)
}

pub(crate) fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    get(v, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------
// metadata

/// How names of a kind are checked.
#[derive(Clone, Copy, Debug)]
pub enum NameRule {
    Subdomain,
    Label,
    /// Anything usable as one URL path segment (`IsValidPathSegmentName`): names
    /// Kubernetes otherwise does not check (CertificateSigningRequests).
    PathSegment,
}

/// `IsValidPathSegmentName`'s complaints about a name, if any.
pub(crate) fn path_segment_problem(name: &str) -> Option<&'static str> {
    match name {
        "." => Some("may not be '.'"),
        ".." => Some("may not be '..'"),
        n if n.contains('/') => Some("may not contain '/'"),
        n if n.contains('%') => Some("may not contain '%'"),
        _ => None,
    }
}

pub fn validate_metadata(
    obj: &Value,
    namespaced: bool,
    rule: NameRule,
    errs: &mut Vec<FieldError>,
) {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    match meta.get("name").and_then(Value::as_str) {
        None | Some("") => {
            if meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                errs.push(FieldError::required_because(
                    "metadata.name",
                    "name or generateName is required",
                ));
            }
        }
        Some(name) => {
            let (ok, msg) = match rule {
                NameRule::Subdomain => (is_dns1123_subdomain(name), SUBDOMAIN_MSG),
                NameRule::Label => (is_dns1123_label(name), LABEL_MSG),
                NameRule::PathSegment => match path_segment_problem(name) {
                    Some(m) => (false, m),
                    None => (true, ""),
                },
            };
            if !ok {
                errs.push(FieldError::invalid("metadata.name", &json!(name), msg));
            }
        }
    }
    if namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required("metadata.namespace")),
            Some(ns) if !is_dns1123_label(ns) => errs.push(FieldError::invalid(
                "metadata.namespace",
                &json!(ns),
                LABEL_MSG,
            )),
            _ => {}
        }
    }
    validate_labels(meta.get("labels"), "metadata.labels", errs);
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            if !is_qualified_name(k) {
                errs.push(FieldError::invalid("metadata.annotations", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push(FieldError {
                reason: "FieldValueTooLong".into(),
                message: "Too long: must have at most 262144 bytes".into(),
                field: "metadata.annotations".into(),
            });
        }
    }
}

pub(crate) fn validate_labels(labels: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in labels {
        if !is_qualified_name(k) {
            errs.push(FieldError::invalid(field, &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
        }
        let vs = v.as_str().unwrap_or("");
        if !is_label_value(vs) {
            errs.push(FieldError::invalid(field, v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
        }
    }
}
