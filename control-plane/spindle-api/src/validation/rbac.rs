//! rbac.authorization.k8s.io/v1: the rules of Roles and ClusterRoles and the role
//! references and subjects of bindings, with kube-apiserver's words and field paths
//! (`pkg/apis/rbac/validation`).

use serde_json::{json, Value};

use super::workload::validate_label_selector;
use super::{idx, is_dns1123_subdomain, path_segment_problem, FieldError, SUBDOMAIN_MSG};

pub(crate) const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn strings(v: Option<&Value>) -> usize {
    v.and_then(Value::as_array).map_or(0, Vec::len)
}

/// A Role's or ClusterRole's rules (kube's ValidatePolicyRule).
pub(crate) fn validate_rules(obj: &Value, namespaced: bool, errs: &mut Vec<FieldError>) {
    let Some(rules) = obj.get("rules").and_then(Value::as_array) else {
        return;
    };
    for (i, rule) in rules.iter().enumerate() {
        let f = idx("rules", i);
        if strings(rule.get("verbs")) == 0 {
            errs.push(FieldError::required_because(
                &format!("{f}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = rule.get("nonResourceURLs").cloned().unwrap_or(json!([]));
        if strings(Some(&urls)) > 0 {
            if namespaced {
                errs.push(FieldError::invalid(
                    &format!("{f}.nonResourceURLs"),
                    &urls,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if strings(rule.get("apiGroups")) > 0
                || strings(rule.get("resources")) > 0
                || strings(rule.get("resourceNames")) > 0
            {
                errs.push(FieldError::invalid(
                    &format!("{f}.nonResourceURLs"),
                    &urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if strings(rule.get("apiGroups")) == 0 {
            errs.push(FieldError::required_because(
                &format!("{f}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if strings(rule.get("resources")) == 0 {
            errs.push(FieldError::required_because(
                &format!("{f}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

/// A ClusterRole's aggregationRule: at least one selector, each a valid label selector.
pub(crate) fn validate_aggregation_rule(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(rule) = obj.get("aggregationRule").filter(|v| !v.is_null()) else {
        return;
    };
    let sels = rule
        .get("clusterRoleSelectors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if sels.is_empty() {
        errs.push(FieldError::required_because(
            "aggregationRule.clusterRoleSelectors",
            "at least one clusterRoleSelector required if aggregationRule is non-nil",
        ));
    }
    for (i, s) in sels.iter().enumerate() {
        validate_label_selector(s, &idx("aggregationRule.clusterRoleSelectors", i), errs);
    }
}

/// A binding's roleRef and subjects (kube's ValidateRoleBinding and
/// ValidateClusterRoleBinding); a ClusterRoleBinding may refer only to a ClusterRole.
pub(crate) fn validate_binding(obj: &Value, namespaced: bool, errs: &mut Vec<FieldError>) {
    let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let group = text(&role_ref, "apiGroup");
    if group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &json!(group),
            &[RBAC_GROUP],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let kind = text(&role_ref, "kind");
    if !kinds.contains(&kind.as_str()) {
        errs.push(FieldError::not_supported(
            "roleRef.kind",
            &json!(kind),
            kinds,
        ));
    }
    let name = text(&role_ref, "name");
    if name.is_empty() {
        errs.push(FieldError::required("roleRef.name"));
    }
    if let Some(msg) = path_segment_problem(&name) {
        errs.push(FieldError::invalid("roleRef.name", &json!(name), msg));
    }
    let subjects = obj
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, s) in subjects.iter().enumerate() {
        validate_subject(s, namespaced, &idx("subjects", i), errs);
    }
}

fn validate_subject(s: &Value, namespaced: bool, f: &str, errs: &mut Vec<FieldError>) {
    let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("");
    let (name, group) = (text("name"), text("apiGroup"));
    if name.is_empty() {
        errs.push(FieldError::required(&format!("{f}.name")));
    }
    match text("kind") {
        "ServiceAccount" => {
            if !name.is_empty() && !is_dns1123_subdomain(name) {
                errs.push(FieldError::invalid(
                    &format!("{f}.name"),
                    &json!(name),
                    SUBDOMAIN_MSG,
                ));
            }
            if !group.is_empty() {
                errs.push(FieldError::not_supported(
                    &format!("{f}.apiGroup"),
                    &json!(group),
                    &[""],
                ));
            }
            if !namespaced && text("namespace").is_empty() {
                errs.push(FieldError::required(&format!("{f}.namespace")));
            }
        }
        "User" | "Group" => {
            if group != RBAC_GROUP {
                errs.push(FieldError::not_supported(
                    &format!("{f}.apiGroup"),
                    &json!(group),
                    &[RBAC_GROUP],
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &format!("{f}.kind"),
            &json!(other),
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

/// A binding's roleRef may not change; kube prints the new reference as Go's `%#v` of
/// its internal struct.
pub(crate) fn validate_binding_update(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let (o, n) = (old.get("roleRef"), new.get("roleRef"));
    if o != n {
        let n = n.cloned().unwrap_or(Value::Null);
        let text = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        errs.push(FieldError {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}: cannot change roleRef",
                text("apiGroup"),
                text("kind"),
                text("name")
            ),
            field: "roleRef".into(),
        });
    }
}
