//! A DaemonSet's update strategy, as kube's ValidateDaemonSetUpdateStrategy checks it.

use serde_json::Value;

use super::policy::int_or_percent;
use super::FieldError;

const PATH: &str = "spec.updateStrategy";

pub(crate) fn validate_daemon_set(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(strategy) = obj.pointer("/spec/updateStrategy") else {
        return;
    };
    match strategy.get("type").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required(&format!("{PATH}.type"))),
        Some("OnDelete") => {}
        Some("RollingUpdate") => rolling_update(strategy.get("rollingUpdate"), errs),
        Some(_) => errs.push(FieldError::not_supported(
            &format!("{PATH}.type"),
            &strategy["type"],
            &["OnDelete", "RollingUpdate"],
        )),
    }
}

fn rolling_update(ru: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(ru) = ru.filter(|v| !v.is_null()) else {
        errs.push(FieldError::required(&format!("{PATH}.rollingUpdate")));
        return;
    };
    let field = |f: &str| format!("{PATH}.rollingUpdate.{f}");
    let unavailable = ru.get("maxUnavailable").unwrap_or(&Value::Null);
    let surge = ru.get("maxSurge").unwrap_or(&Value::Null);
    for (name, v) in [("maxUnavailable", unavailable), ("maxSurge", surge)] {
        if !v.is_null() {
            int_or_percent(&field(name), v, errs);
        }
    }
    let zero = |v: &Value| {
        v.is_null()
            || v.as_i64() == Some(0)
            || v.as_str().is_some_and(|s| s.trim_end_matches('%') == "0")
    };
    if zero(unavailable) && zero(surge) {
        errs.push(FieldError::invalid(
            &field("maxUnavailable"),
            unavailable,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(strategy: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate_daemon_set(&json!({"spec": {"updateStrategy": strategy}}), &mut errs);
        errs.iter().map(FieldError::display).collect()
    }

    #[test]
    fn update_strategy_as_kube_checks_it() {
        let ok =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}});
        assert!(fields(ok).is_empty());
        assert!(fields(json!({"type": "OnDelete"})).is_empty());
        let both_zero = fields(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}),
        );
        assert_eq!(both_zero.len(), 1, "{both_zero:?}");
        assert!(
            both_zero[0].contains("spec.updateStrategy.rollingUpdate.maxUnavailable"),
            "{both_zero:?}"
        );
        assert!(
            both_zero[0].contains("may not be 0 when `maxSurge` is 0"),
            "{both_zero:?}"
        );
        let pct =
            fields(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "120%"}}));
        assert!(pct[0].contains("must not be greater than 100%"), "{pct:?}");
        let kind = fields(json!({"type": "Recreate"}));
        assert!(
            kind[0].contains("spec.updateStrategy.type") && kind[0].contains("Unsupported value"),
            "{kind:?}"
        );
    }
}
