//! A Job's podFailurePolicy and successPolicy, checked as kube-apiserver's batch
//! validation does (`validatePodFailurePolicy`, `validateSuccessPolicy`), with its
//! limits, wording and field paths.

use serde_json::{json, Value};

use super::{idx, is_qualified_name, FieldError};

const MAX_RULES: usize = 20;
const MAX_EXIT_CODES: usize = 255;
const MAX_CONDITION_PATTERNS: usize = 20;
const MAX_SUCCEEDED_INDEXES_LEN: usize = 64 * 1024;
const ACTIONS: &[&str] = &["Count", "FailIndex", "FailJob", "Ignore"];
const OPERATORS: &[&str] = &["In", "NotIn"];
const STATUSES: &[&str] = &["False", "True", "Unknown"];

/// `Too many: N: must have at most M items`.
fn too_many(field: &str, n: usize, max: usize) -> FieldError {
    FieldError {
        reason: "FieldValueTooMany".into(),
        message: format!("Too many: {n}: must have at most {max} items"),
        field: field.into(),
    }
}

/// An invalid value Kubernetes reports without the value (field.OmitValueType).
fn invalid_omitted(field: &str, detail: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {detail}"),
        field: field.into(),
    }
}

/// Go's `%q` of a list: `["a" "b"]`.
fn quoted(list: &[&str]) -> String {
    let parts: Vec<String> = list.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", parts.join(" "))
}

fn container_names(spec: &Value) -> Vec<&str> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.pointer(&format!("/template/spec/{k}"))?.as_array())
        .flatten()
        .filter_map(|c| c.get("name")?.as_str())
        .collect()
}

/// `spec.podFailurePolicy` of a Job spec at `path`.
pub(crate) fn validate_pod_failure_policy(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(policy) = spec.get("podFailurePolicy").filter(|v| !v.is_null()) else {
        return;
    };
    let rules_path = format!("{path}.podFailurePolicy.rules");
    let rules = policy
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if rules.len() > MAX_RULES {
        errs.push(too_many(&rules_path, rules.len(), MAX_RULES));
    }
    let names = container_names(spec);
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = idx(&rules_path, i);
        let action_path = format!("{rule_path}.action");
        match rule.get("action").and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(FieldError::required_because(
                &action_path,
                &format!("valid values: {}", quoted(ACTIONS)),
            )),
            "FailIndex" if !per_index => errs.push(FieldError::invalid(
                &action_path,
                &json!("FailIndex"),
                "requires the backoffLimitPerIndex to be set",
            )),
            a if !ACTIONS.contains(&a) => {
                errs.push(FieldError::not_supported(&action_path, &json!(a), ACTIONS))
            }
            _ => {}
        }
        let exits = rule.get("onExitCodes").filter(|v| !v.is_null());
        let conds = rule
            .get("onPodConditions")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty());
        if let Some(req) = exits {
            exit_codes(req, &format!("{rule_path}.onExitCodes"), &names, errs);
        }
        if let Some(patterns) = conds {
            pod_conditions(patterns, &format!("{rule_path}.onPodConditions"), errs);
        }
        match (exits, conds) {
            (Some(_), Some(_)) => errs.push(invalid_omitted(
                &rule_path,
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (None, None) => errs.push(invalid_omitted(
                &rule_path,
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
    }
}

fn exit_codes(req: &Value, path: &str, names: &[&str], errs: &mut Vec<FieldError>) {
    let op = req.get("operator").and_then(Value::as_str).unwrap_or("");
    let op_path = format!("{path}.operator");
    if op.is_empty() {
        errs.push(FieldError::required_because(
            &op_path,
            &format!("valid values: {}", quoted(OPERATORS)),
        ));
    } else if !OPERATORS.contains(&op) {
        errs.push(FieldError::not_supported(&op_path, &json!(op), OPERATORS));
    }
    if let Some(name) = req.get("containerName").and_then(Value::as_str) {
        if !names.contains(&name) {
            errs.push(FieldError::invalid(
                &format!("{path}.containerName"),
                &json!(name),
                "must be one of the container or initContainer names in the pod template",
            ));
        }
    }
    let values_path = format!("{path}.values");
    let values: Vec<i64> = req
        .get("values")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let shown = format!(
        "[]int32{{{}}}",
        values
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if values.is_empty() {
        // Go shows an absent list as nil, an empty one as {}.
        let empty = if req.get("values").is_some_and(|v| !v.is_null()) {
            "[]int32{}"
        } else {
            "[]int32(nil)"
        };
        errs.push(FieldError {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {empty}: at least one value is required"),
            field: values_path.clone(),
        });
    } else if values.len() > MAX_EXIT_CODES {
        errs.push(too_many(&values_path, values.len(), MAX_EXIT_CODES));
    }
    let mut seen = std::collections::HashSet::new();
    for (j, v) in values.iter().enumerate() {
        let value_path = idx(&values_path, j);
        if op == "In" && *v == 0 {
            errs.push(FieldError::invalid(
                &value_path,
                &json!(v),
                "must not be 0 for the In operator",
            ));
        }
        if !seen.insert(*v) {
            errs.push(FieldError::duplicate(&value_path, &json!(v)));
        }
    }
    if values.windows(2).any(|w| w[0] > w[1]) {
        errs.push(FieldError {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {shown}: must be ordered"),
            field: values_path,
        });
    }
}

fn pod_conditions(patterns: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    if patterns.len() > MAX_CONDITION_PATTERNS {
        errs.push(too_many(path, patterns.len(), MAX_CONDITION_PATTERNS));
    }
    for (j, pat) in patterns.iter().enumerate() {
        let pat_path = idx(path, j);
        let ty = pat.get("type").and_then(Value::as_str).unwrap_or("");
        if ty.is_empty() {
            errs.push(FieldError::required(&format!("{pat_path}.type")));
        } else if !is_qualified_name(ty) {
            errs.push(FieldError::invalid(&format!("{pat_path}.type"), &json!(ty), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
        }
        let status_path = format!("{pat_path}.status");
        match pat.get("status").and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(FieldError::required_because(
                &status_path,
                &format!("valid values: {}", quoted(STATUSES)),
            )),
            s if !STATUSES.contains(&s) => {
                errs.push(FieldError::not_supported(&status_path, &json!(s), STATUSES))
            }
            _ => {}
        }
    }
}

/// `spec.successPolicy` of a Job spec at `path` (Indexed Jobs only).
pub(crate) fn validate_success_policy(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(policy) = spec.get("successPolicy").filter(|v| !v.is_null()) else {
        return;
    };
    let policy_path = format!("{path}.successPolicy");
    if spec.get("completionMode").and_then(Value::as_str) != Some("Indexed") {
        errs.push(FieldError::invalid(
            &policy_path,
            policy,
            "requires indexed completion mode",
        ));
        return;
    }
    let completions = spec.get("completions").and_then(Value::as_i64).unwrap_or(0);
    let rules_path = format!("{policy_path}.rules");
    let rules = policy
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if rules.is_empty() {
        errs.push(FieldError::required_because(
            &rules_path,
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if rules.len() > MAX_RULES {
        errs.push(too_many(&rules_path, rules.len(), MAX_RULES));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = idx(&rules_path, i);
        let indexes = rule.get("succeededIndexes").and_then(Value::as_str);
        let count = rule.get("succeededCount").filter(|v| !v.is_null());
        if indexes.is_none() && count.is_none() {
            errs.push(FieldError::required_because(
                &rule_path,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut total = 0;
        if let Some(s) = indexes {
            let ix_path = format!("{rule_path}.succeededIndexes");
            if s.len() > MAX_SUCCEEDED_INDEXES_LEN {
                errs.push(FieldError {
                    reason: "FieldValueTooLong".into(),
                    message: format!(
                        "Too long: may not be more than {MAX_SUCCEEDED_INDEXES_LEN} bytes"
                    ),
                    field: ix_path.clone(),
                });
            }
            match indexes_total(s, completions) {
                Ok(n) => total = n,
                Err(e) => errs.push(FieldError::invalid(
                    &ix_path,
                    &json!(s),
                    &format!("error parsing succeededIndexes: {e}"),
                )),
            }
        }
        if let Some(c) = count {
            let count_path = format!("{rule_path}.succeededCount");
            let n = c.as_i64().unwrap_or(0);
            if n < 0 {
                errs.push(FieldError::invalid(
                    &count_path,
                    c,
                    "must be greater than or equal to 0",
                ));
            }
            if n > completions {
                errs.push(FieldError::invalid(
                    &count_path,
                    c,
                    &format!(
                        "must be less than or equal to {completions} (the number of specified completions)"
                    ),
                ));
            }
            if indexes.is_some() && n > total {
                errs.push(FieldError::invalid(&count_path, c, &format!("must be less than or equal to {total} (the number of indexes in the specified succeededIndexes field)")));
            }
        }
    }
}

/// The number of indexes in a well-formed index list ("1,3-5"), or kube's complaint.
fn indexes_total(s: &str, completions: i64) -> Result<i64, String> {
    if s.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i64> = None;
    let mut total = 0;
    for part in s.split(',') {
        let limits: Vec<&str> = part.split('-').collect();
        if limits.len() > 2 {
            return Err(format!("the fragment \"{part}\" violates the requirement that an index interval can have at most two parts separated by '-'"));
        }
        let num = |t: &str| -> Result<i64, String> {
            let n: i64 = t
                .parse()
                .map_err(|_| format!("cannot convert string to integer for index: \"{t}\""))?;
            if n >= completions {
                return Err(format!("too large index: \"{t}\""));
            }
            Ok(n)
        };
        let x = num(limits[0])?;
        let y = match limits.get(1) {
            Some(t) => {
                let y = num(t)?;
                if x >= y {
                    return Err(format!("non-increasing order, previous: {x}, current: {y}"));
                }
                y
            }
            None => x,
        };
        if let Some(l) = last.filter(|l| *l >= x) {
            return Err(format!("non-increasing order, previous: {l}, current: {x}"));
        }
        total += y - x + 1;
        last = Some(y);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::indexes_total;

    #[test]
    fn index_lists_are_counted_or_refused_as_kube_words_it() {
        assert_eq!(indexes_total("0,2-4,7", 10), Ok(5));
        assert_eq!(indexes_total("", 10), Ok(0));
        assert_eq!(
            indexes_total("1-3,2", 10),
            Err("non-increasing order, previous: 3, current: 2".into())
        );
        assert_eq!(
            indexes_total("10", 10),
            Err("too large index: \"10\"".into())
        );
        assert_eq!(
            indexes_total("a", 10),
            Err("cannot convert string to integer for index: \"a\"".into())
        );
        assert_eq!(
            indexes_total("1-2-3", 10),
            Err("the fragment \"1-2-3\" violates the requirement that an index interval can have at most two parts separated by '-'".into())
        );
    }
}
