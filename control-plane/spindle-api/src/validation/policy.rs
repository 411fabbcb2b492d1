//! PodDisruptionBudget specs.

use serde_json::Value;

use super::FieldError;

/// A PodDisruptionBudget's spec: at most one of minAvailable and maxUnavailable, each a
/// non-negative number or a percentage of at most 100 %.
pub(crate) fn validate_disruption_budget(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(spec) = obj.get("spec") else {
        return;
    };
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (name, v) in [("minAvailable", min), ("maxUnavailable", max)] {
        let Some(v) = v else { continue };
        int_or_percent(&format!("spec.{name}"), v, errs);
    }
    if let Some(p) = spec
        .get("unhealthyPodEvictionPolicy")
        .filter(|v| !v.is_null())
    {
        if !matches!(p.as_str(), Some("IfHealthyBudget" | "AlwaysAllow")) {
            errs.push(FieldError::not_supported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
    }
}

/// A non-negative count or a percentage of at most 100 %, as kube's
/// ValidatePositiveIntOrPercent and IsNotMoreThan100Percent say.
pub(crate) fn int_or_percent(field: &str, v: &Value, errs: &mut Vec<FieldError>) {
    let field = field.to_string();
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|n| n >= 0) => {}
        Value::Number(_) => {
            errs.push(FieldError::invalid(
                &field,
                v,
                "must be greater than or equal to 0",
            ));
        }
        Value::String(s) => match s.strip_suffix('%').map(str::parse::<i64>) {
            Some(Ok(p)) if (0..=100).contains(&p) => {}
            Some(Ok(p)) if p > 100 => {
                errs.push(FieldError::invalid(&field, v, "must not be greater than 100%"))
            }
            Some(Ok(_)) => errs.push(FieldError::invalid(
                &field,
                v,
                "must be greater than or equal to 0",
            )),
            _ => errs.push(FieldError::invalid(
                &field,
                v,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )),
        },
        _ => errs.push(FieldError::invalid(
            &field,
            v,
            "must be an integer or percentage (e.g '5%')",
        )),
    }
}
