//! LimitRanges and ResourceQuotas: resource names, quantities and the order of a limit
//! range's bounds (kube-apiserver's ValidateLimitRange and ValidateResourceQuota).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use spindle_meta::quota::{quantity, COMPUTE, CORE_COUNTS, MUST_NAME, SERVICE_COUNTS};
use spindle_meta::Quantity;

use super::{idx, is_qualified_name, FieldError};

const QUALIFIED_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

const LIMIT_TYPES: &[&str] = &["Pod", "Container", "PersistentVolumeClaim"];
const CONTAINER_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage"];
/// `IsStandardQuotaResourceName`.
fn is_quota_resource(name: &str) -> bool {
    is_count(name) || COMPUTE.contains(&name)
}

/// `IsStandardResourceName`: what a LimitRange of another type may name.
fn is_standard_resource(name: &str) -> bool {
    name == "storage" || is_quota_resource(name)
}

fn is_container_resource(name: &str) -> bool {
    CONTAINER_RESOURCES.contains(&name)
}

/// `IsIntegerResourceName`: counts, which may not be fractional.
fn is_count(name: &str) -> bool {
    CORE_COUNTS.contains(&name) || SERVICE_COUNTS.contains(&name) || name.starts_with("count/")
}

const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
];
const SCOPE_OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-") || name.starts_with("requests.hugepages-")
}

/// `validateResourceName` with the list of names allowed without a domain.
fn resource_name(
    name: &str,
    standard: fn(&str) -> bool,
    why: &str,
    field: &str,
) -> Option<FieldError> {
    if !is_qualified_name(name) {
        return Some(FieldError::invalid(field, &json!(name), QUALIFIED_MSG));
    }
    if !name.contains('/') && !standard(name) && !is_hugepages(name) {
        return Some(FieldError::invalid(field, &json!(name), why));
    }
    None
}

/// One resource list of a limit: names checked, quantities parsed (with their error).
fn limit_list(
    item: &Value,
    part: &str,
    ty: &str,
    field: &str,
    errs: &mut Vec<FieldError>,
) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    for (k, v) in item
        .get(part)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let f = format!("{field}.{part}[{k}]");
        let name_err = if ty == "Pod" || ty == "Container" {
            resource_name(
                k,
                is_container_resource,
                "must be a standard resource for containers",
                &f,
            )
        } else {
            resource_name(
                k,
                is_standard_resource,
                "must be a standard resource type or fully qualified",
                &f,
            )
        };
        errs.extend(name_err);
        match quantity(v) {
            Some(q) => {
                out.insert(k.clone(), q);
            }
            None => errs.push(FieldError::invalid(&f, v, &quantity_error(v))),
        }
    }
    out
}

fn quantity_error(v: &Value) -> String {
    let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
    match Quantity::parse(&s) {
        Err(e) => e.to_string(),
        Ok(_) => "must be a quantity".into(),
    }
}

/// kube-apiserver's ValidateLimitRange.
pub(crate) fn validate_limit_range(obj: &Value, errs: &mut Vec<FieldError>) {
    let limits = obj.pointer("/spec/limits").and_then(Value::as_array);
    let mut types = BTreeSet::new();
    for (i, item) in limits.into_iter().flatten().enumerate() {
        let f = idx("spec.limits", i);
        let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
        let tf = format!("{f}.type");
        if !is_qualified_name(ty) {
            errs.push(FieldError::invalid(&tf, &json!(ty), QUALIFIED_MSG));
        } else if !ty.contains('/') && !LIMIT_TYPES.contains(&ty) {
            errs.push(FieldError::invalid(
                &tf,
                &json!(ty),
                "must be a standard limit type or fully qualified",
            ));
        }
        if !types.insert(ty) {
            errs.push(FieldError::duplicate(&tf, &json!(ty)));
        }
        let max = limit_list(item, "max", ty, &f, errs);
        let min = limit_list(item, "min", ty, &f, errs);
        let (mut default, mut default_request) = (BTreeMap::new(), BTreeMap::new());
        if ty == "Pod" {
            for part in ["default", "defaultRequest"] {
                if item
                    .get(part)
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty())
                {
                    errs.push(FieldError::forbidden(
                        &format!("{f}.{part}"),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        } else {
            default = limit_list(item, "default", ty, &f, errs);
            default_request = limit_list(item, "defaultRequest", ty, &f, errs);
        }
        if ty == "PersistentVolumeClaim"
            && !min.contains_key("storage")
            && !max.contains_key("storage")
        {
            errs.push(FieldError::required_because(
                &format!("{f}.limits"),
                "either minimum or maximum storage value is required, but neither was provided",
            ));
        }
        let ratio = limit_list(item, "maxLimitRequestRatio", ty, &f, errs);
        let keys: BTreeSet<&String> = [&max, &min, &default, &default_request, &ratio]
            .iter()
            .flat_map(|m| m.keys())
            .collect();
        for k in keys {
            bounds_in_order(
                &f,
                k,
                [&min, &max, &default, &default_request, &ratio],
                errs,
            );
        }
    }
}

/// min ≤ defaultRequest ≤ default ≤ max, and 1 ≤ maxLimitRequestRatio ≤ max/min, with
/// kube's messages.
fn bounds_in_order(
    f: &str,
    k: &str,
    [min, max, default, default_request, ratio]: [&BTreeMap<String, Quantity>; 5],
    errs: &mut Vec<FieldError>,
) {
    let (lo, hi, def, req, rat) = (
        min.get(k),
        max.get(k),
        default.get(k),
        default_request.get(k),
        ratio.get(k),
    );
    let mut bad = |part: &str, value: &Quantity, msg: String| {
        errs.push(FieldError::invalid(
            &format!("{f}.{part}[{k}]"),
            &json!(value.to_string()),
            &msg,
        ));
    };
    // Each pair that must be in order: the larger-named bound and its name, the other,
    // the field blamed and whether the value shown is the first one, as kube reports it.
    let pairs = [
        (("min", lo), ("max", hi), "min", true),
        (
            ("min", lo),
            ("default request", req),
            "defaultRequest",
            false,
        ),
        (
            ("default request", req),
            ("max", hi),
            "defaultRequest",
            true,
        ),
        (
            ("default request", req),
            ("default limit", def),
            "defaultRequest",
            true,
        ),
        (("min", lo), ("default", def), "default", true),
        (("default", def), ("max", hi), "default", false),
    ];
    for ((an, a), (bn, b), part, show_a) in pairs {
        if let (Some(a), Some(b)) = (a, b) {
            if a > b {
                let shown = if show_a { a } else { b };
                bad(
                    part,
                    shown,
                    format!("{an} value {a} is greater than {bn} value {b}"),
                );
            }
        }
    }
    if let Some(rat) = rat {
        let one = Quantity::from_value(1, spindle_meta::quantity::Format::DecimalSI);
        if *rat < one {
            bad(
                "maxLimitRequestRatio",
                rat,
                format!("ratio {rat} is less than 1"),
            );
        }
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if !lo.is_zero() {
                let allowed = hi.as_nanos() as f64 / lo.as_nanos() as f64;
                if rat.as_nanos() as f64 / 1e9 > allowed {
                    bad(
                        "maxLimitRequestRatio",
                        rat,
                        format!("ratio {rat} is greater than max/min = {allowed:.6}"),
                    );
                }
            }
        }
    }
}

/// kube-apiserver's ValidateResourceQuota (spec; the status of a status update too).
pub(crate) fn validate_resource_quota(obj: &Value, errs: &mut Vec<FieldError>) {
    quota_list(obj.pointer("/spec/hard"), "spec.hard", errs);
    quota_list(obj.pointer("/status/hard"), "status.hard", errs);
    quota_list(obj.pointer("/status/used"), "status.used", errs);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let scopes: Vec<&str> = spec
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let hard: Vec<&str> = spec
        .get("hard")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .filter(|k| !k.contains('/') && is_quota_resource(k))
        .collect();
    for scope in &scopes {
        if !SCOPES.contains(scope) {
            errs.push(FieldError::invalid(
                "spec.scopes",
                &json!(scopes),
                "unsupported scope",
            ));
        }
        // `IsResourceQuotaScopeValidForResource`: scopes select pods, so they limit pod
        // counts and compute; BestEffort pods have no compute to limit.
        for r in &hard {
            let valid = *r == "pods" || (*scope != "BestEffort" && MUST_NAME.contains(r));
            if !valid {
                errs.push(FieldError::invalid(
                    "spec.scopes",
                    &json!(scopes),
                    "unsupported scope applied to resource",
                ));
            }
        }
    }
    for (a, b) in [
        ("BestEffort", "NotBestEffort"),
        ("Terminating", "NotTerminating"),
    ] {
        if scopes.contains(&a) && scopes.contains(&b) {
            errs.push(FieldError::invalid(
                "spec.scopes",
                &json!(scopes),
                "conflicting scopes",
            ));
        }
    }
    let exprs = spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array);
    for (i, e) in exprs.into_iter().flatten().enumerate() {
        let f = idx("spec.scopeSelector.matchExpressions", i);
        let name = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        if !SCOPES.contains(&name) {
            errs.push(FieldError::invalid(
                &format!("{f}.scopeName"),
                &json!(name),
                "unsupported scope",
            ));
        }
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        if !SCOPE_OPERATORS.contains(&op) {
            errs.push(FieldError::not_supported(
                &format!("{f}.operator"),
                &json!(op),
                SCOPE_OPERATORS,
            ));
        }
        let has_values = e
            .get("values")
            .and_then(Value::as_array)
            .is_some_and(|v| !v.is_empty());
        match op {
            "In" | "NotIn" if !has_values => errs.push(FieldError::required_because(
                &format!("{f}.values"),
                "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
            )),
            "Exists" | "DoesNotExist" if has_values => errs.push(FieldError::invalid(
                &format!("{f}.values"),
                e.get("values").unwrap_or(&Value::Null),
                "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            )),
            _ => {}
        }
    }
}

fn quota_list(list: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    for (k, v) in list.and_then(Value::as_object).into_iter().flatten() {
        let f = format!("{field}[{k}]");
        errs.extend(resource_name(
            k,
            is_quota_resource,
            "must be a standard resource for quota",
            &f,
        ));
        match quantity(v) {
            None => errs.push(FieldError::invalid(&f, v, &quantity_error(v))),
            Some(q) if q.is_negative() => errs.push(FieldError::invalid(
                &f,
                &json!(q.to_string()),
                "must be greater than or equal to 0",
            )),
            Some(q) if is_count(k) && q.as_nanos() % 1_000_000_000 != 0 => errs.push(
                FieldError::invalid(&f, &json!(q.to_string()), "must be an integer"),
            ),
            Some(_) => {}
        }
    }
}
