//! The RBAC tables: roles print as the default table (Name, Created At), as
//! kube-apiserver's do; bindings add the role and, wide, their subjects by kind.

use k8s_openapi::api::rbac;

use super::{col, wide, Printer, AGE, DEFAULT, NAME};
use crate::printers::obj::Obj;

const DESC_ROLE_REF: &str = "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.";

/// The subjects of one kind, joined as kube's `rbac.SubjectsStrings`: ServiceAccounts
/// as `namespace/name` when they name a namespace.
fn subjects(o: Obj<'_>, kind: &str) -> String {
    o.list(&["subjects"])
        .iter()
        .filter(|s| s.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|s| {
            let name = s.get("name").and_then(|n| n.as_str()).unwrap_or("");
            match s.get("namespace").and_then(|n| n.as_str()) {
                Some(ns) if kind == "ServiceAccount" && !ns.is_empty() => format!("{ns}/{name}"),
                _ => name.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) static BINDING: Printer = Printer::new(&[
    NAME,
    col("Role", "string", DESC_ROLE_REF, |o, _| {
        format!(
            "{}/{}",
            o.str_(&["roleRef", "kind"]),
            o.str_(&["roleRef", "name"])
        )
        .into()
    }),
    AGE,
    wide("Users", "string", "Users in the roleBinding", |o, _| {
        subjects(o, "User").into()
    }),
    wide("Groups", "string", "Groups in the roleBinding", |o, _| {
        subjects(o, "Group").into()
    }),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
        |o, _| subjects(o, "ServiceAccount").into(),
    ),
]);

printed! {
    rbac::v1::Role => DEFAULT,
    rbac::v1::ClusterRole => DEFAULT,
    rbac::v1::RoleBinding => BINDING,
    rbac::v1::ClusterRoleBinding => BINDING,
}
