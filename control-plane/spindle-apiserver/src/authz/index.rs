//! The RBAC authorizer's view of the cluster: roles by name and bindings by subject,
//! kept from the store's watch (an informer's cache in kube-apiserver), so a check is a
//! few hash lookups whatever the number of roles and bindings.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::attributes::Attributes;
use super::rules::PolicyRule;
use crate::auth::User;

/// Who a binding names. ServiceAccounts carry their namespace (a RoleBinding's own when
/// the subject names none).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    User(String),
    Group(String),
    ServiceAccount(String, String),
}

impl Subject {
    /// How kube describes the subject in an "allowed by" reason.
    fn describe(&self) -> String {
        match self {
            Subject::User(n) => format!("User {n:?}"),
            Subject::Group(n) => format!("Group {n:?}"),
            Subject::ServiceAccount(ns, n) => format!("ServiceAccount {:?}", format!("{n}/{ns}")),
        }
    }
}

/// A binding's role reference: `Role` (in the binding's namespace) or `ClusterRole`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRef {
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug)]
struct Binding {
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

/// The prefix of ServiceAccount user names.
pub const SA_PREFIX: &str = "system:serviceaccount:";

/// The subjects a user matches: their name, their groups, and the ServiceAccount their
/// name denotes.
pub fn subjects_of(user: &User) -> Vec<Subject> {
    let mut out = vec![Subject::User(user.name.clone())];
    out.extend(user.groups.iter().cloned().map(Subject::Group));
    if let Some((ns, name)) = user
        .name
        .strip_prefix(SA_PREFIX)
        .and_then(|r| r.split_once(':'))
    {
        out.push(Subject::ServiceAccount(ns.into(), name.into()));
    }
    out
}

/// Roles and bindings, indexed.
#[derive(Default)]
pub struct Index {
    roles: HashMap<(String, String), Arc<[PolicyRule]>>,
    cluster_roles: HashMap<String, Arc<[PolicyRule]>>,
    role_bindings: HashMap<(String, String), Binding>,
    cluster_role_bindings: HashMap<String, Binding>,
    /// (namespace, subject) -> names of RoleBindings in that namespace naming it.
    rb_by_subject: HashMap<(String, Subject), HashSet<String>>,
    /// subject -> names of ClusterRoleBindings naming it.
    crb_by_subject: HashMap<Subject, HashSet<String>>,
}

/// Which of the four kinds an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbacKind {
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

fn meta(obj: &Value, field: &str) -> String {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

pub fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

fn binding_of(obj: &Value, ns: &str) -> Binding {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let r = obj.get("roleRef").cloned().unwrap_or(Value::Null);
    let subjects = obj
        .get("subjects")
        .and_then(Value::as_array)
        .map(|subs| {
            subs.iter()
                .filter_map(|s| {
                    let name = text(s, "name");
                    Some(match text(s, "kind").as_str() {
                        "User" => Subject::User(name),
                        "Group" => Subject::Group(name),
                        "ServiceAccount" => {
                            let sns = text(s, "namespace");
                            Subject::ServiceAccount(
                                if sns.is_empty() { ns.into() } else { sns },
                                name,
                            )
                        }
                        _ => return None,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Binding {
        role_ref: RoleRef {
            kind: text(&r, "kind"),
            name: text(&r, "name"),
        },
        subjects,
    }
}

/// The outcome of a check, with kube's reason text.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

impl Index {
    /// Take in an object as it now is (`Some`) or its removal (`None`).
    pub fn apply(&mut self, kind: RbacKind, obj: &Value, present: bool) {
        let (ns, name) = (meta(obj, "namespace"), meta(obj, "name"));
        match kind {
            RbacKind::Role if present => {
                self.roles.insert((ns, name), rules_of(obj).into());
            }
            RbacKind::Role => {
                self.roles.remove(&(ns, name));
            }
            RbacKind::ClusterRole if present => {
                self.cluster_roles.insert(name, rules_of(obj).into());
            }
            RbacKind::ClusterRole => {
                self.cluster_roles.remove(&name);
            }
            RbacKind::RoleBinding => {
                if let Some(old) = self.role_bindings.remove(&(ns.clone(), name.clone())) {
                    for s in old.subjects {
                        let key = (ns.clone(), s);
                        if let Some(set) = self.rb_by_subject.get_mut(&key) {
                            set.remove(&name);
                            if set.is_empty() {
                                self.rb_by_subject.remove(&key);
                            }
                        }
                    }
                }
                if present {
                    let b = binding_of(obj, &ns);
                    for s in &b.subjects {
                        self.rb_by_subject
                            .entry((ns.clone(), s.clone()))
                            .or_default()
                            .insert(name.clone());
                    }
                    self.role_bindings.insert((ns, name), b);
                }
            }
            RbacKind::ClusterRoleBinding => {
                if let Some(old) = self.cluster_role_bindings.remove(&name) {
                    for s in old.subjects {
                        if let Some(set) = self.crb_by_subject.get_mut(&s) {
                            set.remove(&name);
                            if set.is_empty() {
                                self.crb_by_subject.remove(&s);
                            }
                        }
                    }
                }
                if present {
                    let b = binding_of(obj, "");
                    for s in &b.subjects {
                        self.crb_by_subject
                            .entry(s.clone())
                            .or_default()
                            .insert(name.clone());
                    }
                    self.cluster_role_bindings.insert(name, b);
                }
            }
        }
    }

    /// The rules a role reference resolves to, or kube's not-found text.
    pub fn role_rules(&self, r: &RoleRef, ns: &str) -> Result<Arc<[PolicyRule]>, String> {
        let found = match r.kind.as_str() {
            "Role" => self.roles.get(&(ns.to_string(), r.name.clone())),
            "ClusterRole" => self.cluster_roles.get(&r.name),
            _ => None,
        };
        found.cloned().ok_or_else(|| {
            let res = if r.kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            format!("{res}.rbac.authorization.k8s.io {:?} not found", r.name)
        })
    }

    /// Visit every binding that applies to the user in `ns` (cluster bindings first,
    /// then the namespace's, each in name order as kube's listers give them), with its
    /// rules, until `f` says stop. Returns the resolution errors met.
    fn visit(
        &self,
        user: &User,
        ns: &str,
        mut f: impl FnMut(&str, &RoleRef, &Subject, &[PolicyRule]) -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let subjects = subjects_of(user);
        let mut crbs: Vec<(&String, &Subject)> = subjects
            .iter()
            .filter_map(|s| self.crb_by_subject.get(s).map(|set| (set, s)))
            .flat_map(|(set, s)| set.iter().map(move |n| (n, s)))
            .collect();
        crbs.sort();
        crbs.dedup_by(|a, b| a.0 == b.0);
        for (name, subject) in crbs {
            let Some(b) = self.cluster_role_bindings.get(name) else {
                continue;
            };
            match self.role_rules(&b.role_ref, "") {
                Ok(rules) => {
                    let source = format!("ClusterRoleBinding {name:?}");
                    if f(&source, &b.role_ref, subject, &rules) {
                        return errors;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if ns.is_empty() {
            return errors;
        }
        let mut rbs: Vec<(&String, &Subject)> = subjects
            .iter()
            .filter_map(|s| {
                self.rb_by_subject
                    .get(&(ns.to_string(), s.clone()))
                    .map(|set| (set, s))
            })
            .flat_map(|(set, s)| set.iter().map(move |n| (n, s)))
            .collect();
        rbs.sort();
        rbs.dedup_by(|a, b| a.0 == b.0);
        for (name, subject) in rbs {
            let Some(b) = self.role_bindings.get(&(ns.to_string(), name.clone())) else {
                continue;
            };
            match self.role_rules(&b.role_ref, ns) {
                Ok(rules) => {
                    let source = format!("RoleBinding {:?}", format!("{name}/{ns}"));
                    if f(&source, &b.role_ref, subject, &rules) {
                        return errors;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// kube's RBACAuthorizer.Authorize.
    pub fn authorize(&self, user: &User, a: &Attributes) -> Decision {
        let mut allowed_by = None;
        let errors = self.visit(user, &a.namespace, |source, role, subject, rules| {
            if rules.iter().any(|r| r.allows(a)) {
                allowed_by = Some(format!(
                    "RBAC: allowed by {source} of {} {:?} to {}",
                    role.kind,
                    role.name,
                    subject.describe()
                ));
                return true;
            }
            false
        });
        match allowed_by {
            Some(reason) => Decision {
                allowed: true,
                reason,
            },
            None if errors.is_empty() => Decision {
                allowed: false,
                reason: String::new(),
            },
            None => Decision {
                allowed: false,
                reason: format!("RBAC: {}", aggregate(&errors)),
            },
        }
    }

    /// Every rule that applies to the user in `ns` (kube's RulesFor), and the errors met.
    pub fn rules_for(&self, user: &User, ns: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut out = Vec::new();
        let errors = self.visit(user, ns, |_, _, _, rules| {
            out.extend(rules.iter().cloned());
            false
        });
        (out, errors)
    }

    /// Forget every object of a kind (before a relist).
    pub fn clear(&mut self, kind: RbacKind) {
        match kind {
            RbacKind::Role => self.roles.clear(),
            RbacKind::ClusterRole => self.cluster_roles.clear(),
            RbacKind::RoleBinding => {
                self.role_bindings.clear();
                self.rb_by_subject.clear();
            }
            RbacKind::ClusterRoleBinding => {
                self.cluster_role_bindings.clear();
                self.crb_by_subject.clear();
            }
        }
    }
}

/// utilerrors.NewAggregate's text: one error as is, several as `[a, b]`.
pub fn aggregate(errors: &[String]) -> String {
    if errors.len() == 1 {
        errors[0].clone()
    } else {
        format!("[{}]", errors.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn req(verb: &str, resource: &str, ns: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            resource: resource.into(),
            namespace: ns.into(),
            ..Attributes::default()
        }
    }

    fn index() -> Index {
        let mut idx = Index::default();
        let rule =
            |r: &str| json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": [r]}]);
        idx.apply(
            RbacKind::Role,
            &json!({"metadata": {"name": "pods", "namespace": "a"}, "rules": rule("pods")}),
            true,
        );
        idx.apply(
            RbacKind::ClusterRole,
            &json!({"metadata": {"name": "secrets"}, "rules": rule("secrets")}),
            true,
        );
        idx.apply(
            RbacKind::ClusterRole,
            &json!({"metadata": {"name": "cms"}, "rules": rule("configmaps")}),
            true,
        );
        idx.apply(RbacKind::RoleBinding, &json!({"metadata": {"name": "jane-pods", "namespace": "a"},
            "roleRef": {"kind": "Role", "name": "pods"},
            "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "bot"}]}), true);
        // A ClusterRole bound in one namespace grants it there only.
        idx.apply(
            RbacKind::RoleBinding,
            &json!({"metadata": {"name": "devs-cms", "namespace": "b"},
            "roleRef": {"kind": "ClusterRole", "name": "cms"},
            "subjects": [{"kind": "Group", "name": "devs"}]}),
            true,
        );
        idx.apply(
            RbacKind::ClusterRoleBinding,
            &json!({"metadata": {"name": "ops-secrets"},
            "roleRef": {"kind": "ClusterRole", "name": "secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "ops", "namespace": "kube-system"}]}),
            true,
        );
        idx
    }

    #[test]
    fn bindings_grant_their_role_to_their_subjects_where_they_apply() {
        let idx = index();
        let jane = user("jane", &["devs"]);
        let d = idx.authorize(&jane, &req("list", "pods", "a"));
        assert_eq!(
            d,
            Decision {
                allowed: true,
                reason:
                    r#"RBAC: allowed by RoleBinding "jane-pods/a" of Role "pods" to User "jane""#
                        .into()
            }
        );
        assert!(!idx.authorize(&jane, &req("list", "pods", "b")).allowed);
        assert!(!idx.authorize(&jane, &req("delete", "pods", "a")).allowed);
        assert!(!idx.authorize(&jane, &req("list", "pods", "")).allowed);
        // Through a group, in the binding's namespace only.
        assert!(idx.authorize(&jane, &req("get", "configmaps", "b")).allowed);
        assert!(!idx.authorize(&jane, &req("get", "configmaps", "a")).allowed);
        // ServiceAccounts: a RoleBinding's subject without namespace is in the binding's.
        let bot = user("system:serviceaccount:a:bot", &["system:serviceaccounts"]);
        assert!(idx.authorize(&bot, &req("get", "pods", "a")).allowed);
        let other_bot = user("system:serviceaccount:b:bot", &[]);
        assert!(!idx.authorize(&other_bot, &req("get", "pods", "a")).allowed);
        // A ClusterRoleBinding grants in every namespace and at the cluster scope.
        let ops = user("system:serviceaccount:kube-system:ops", &[]);
        for ns in ["a", "b", ""] {
            let d = idx.authorize(&ops, &req("list", "secrets", ns));
            assert!(d.allowed, "{ns}");
            assert_eq!(
                d.reason,
                r#"RBAC: allowed by ClusterRoleBinding "ops-secrets" of ClusterRole "secrets" to ServiceAccount "ops/kube-system""#
            );
        }
        assert_eq!(idx.rules_for(&jane, "a").0.len(), 1);
        assert_eq!(idx.rules_for(&jane, "b").0.len(), 1);
    }

    #[test]
    fn removals_and_missing_roles_are_followed() {
        let mut idx = index();
        let jane = user("jane", &[]);
        // The role goes: the binding stays, and a denial says why.
        idx.apply(
            RbacKind::Role,
            &json!({"metadata": {"name": "pods", "namespace": "a"}}),
            false,
        );
        let d = idx.authorize(&jane, &req("get", "pods", "a"));
        assert_eq!(
            d,
            Decision {
                allowed: false,
                reason: r#"RBAC: roles.rbac.authorization.k8s.io "pods" not found"#.into()
            }
        );
        // A binding's update replaces its subjects in the index.
        idx.apply(
            RbacKind::Role,
            &json!({"metadata": {"name": "pods", "namespace": "a"},
            "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
            true,
        );
        idx.apply(RbacKind::RoleBinding, &json!({"metadata": {"name": "jane-pods", "namespace": "a"},
            "roleRef": {"kind": "Role", "name": "pods"}, "subjects": [{"kind": "User", "name": "joe"}]}), true);
        assert!(!idx.authorize(&jane, &req("get", "pods", "a")).allowed);
        assert!(
            idx.authorize(&user("joe", &[]), &req("get", "pods", "a"))
                .allowed
        );
        idx.apply(
            RbacKind::RoleBinding,
            &json!({"metadata": {"name": "jane-pods", "namespace": "a"}}),
            false,
        );
        assert!(
            !idx.authorize(&user("joe", &[]), &req("get", "pods", "a"))
                .allowed
        );
        idx.clear(RbacKind::ClusterRoleBinding);
        let ops = user("system:serviceaccount:kube-system:ops", &[]);
        assert!(!idx.authorize(&ops, &req("list", "secrets", "a")).allowed);
    }
}
