//! rbac.authorization.k8s.io/v1: Role, ClusterRole, RoleBinding, ClusterRoleBinding
//! (kube's `registry/rbac/*/strategy.go`). Names are path segments, so the bootstrap
//! roles' `system:` names are valid.

use serde_json::{json, Value};

use super::Strategy;
use crate::validation::{
    validate_aggregation_rule, validate_binding, validate_binding_update, validate_rules,
    FieldError, NameRule, RBAC_GROUP,
};

/// Roles (namespaced) and ClusterRoles.
pub struct Roles {
    pub cluster: bool,
}

pub const ROLES: Roles = Roles { cluster: false };
pub const CLUSTER_ROLES: Roles = Roles { cluster: true };

impl Strategy for Roles {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_rules(obj, !self.cluster, errs);
        if self.cluster {
            validate_aggregation_rule(obj, errs);
        }
    }
}

/// RoleBindings (namespaced) and ClusterRoleBindings.
pub struct Bindings {
    pub cluster: bool,
}

pub const ROLE_BINDINGS: Bindings = Bindings { cluster: false };
pub const CLUSTER_ROLE_BINDINGS: Bindings = Bindings { cluster: true };

impl Strategy for Bindings {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    /// v1's SetDefaults_RoleBinding and SetDefaults_Subject: the RBAC group for the
    /// role reference and for User and Group subjects.
    fn default(&self, obj: &mut Value) {
        if let Some(r) = obj.get_mut("roleRef").and_then(Value::as_object_mut) {
            if r.get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                r.insert("apiGroup".into(), json!(RBAC_GROUP));
            }
        }
        let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) else {
            return;
        };
        for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            let empty = s
                .get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
            if empty && matches!(kind, "User" | "Group") {
                s.insert("apiGroup".into(), json!(RBAC_GROUP));
            }
        }
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_binding(obj, !self.cluster, errs);
    }

    fn validate_update(&self, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
        validate_binding_update(old, new, errs);
    }
}
