//! Privilege-escalation prevention (kube's RBAC REST storage, `ConfirmNoEscalation`):
//! a Role or ClusterRole may hold only rules its author holds, unless the author may
//! `escalate` it; a binding may grant only a role whose rules its author holds, unless
//! the author may `bind` it. `system:masters` may do both.

use serde_json::Value;

use super::attributes::{forbidden_error, Attributes};
use super::index::{rules_of, RoleRef};
use super::rules::{uncovered, PolicyRule};
use super::{bootstrap, MASTERS};
use crate::auth::User;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

fn verb_on(verb: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        resource_request: true,
        group: bootstrap::GROUP.into(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Attributes::default()
    }
}

/// The 403 for rules the user lacks, in kube's words.
fn not_held(user: &User, missing: &[PolicyRule], errors: &[String]) -> String {
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let lines: Vec<String> = missing.iter().map(PolicyRule::compact_string).collect();
    let mut msg = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        lines.join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    msg
}

/// Whether the write may go ahead. `resource` is the plural written (roles,
/// clusterroles, rolebindings, clusterrolebindings); `old` the stored object on update.
pub fn check(
    st: &AppState,
    user: &User,
    resource: &str,
    ns: &str,
    name: &str,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let forbidden = |err: &str| forbidden_error(bootstrap::GROUP, resource, name, err);
    match resource {
        "roles" | "clusterroles" => {
            if old.is_some_and(|o| {
                o.get("rules") == obj.get("rules")
                    && o.get("aggregationRule") == obj.get("aggregationRule")
            }) {
                return Ok(());
            }
            if st
                .authz
                .allows(user, &verb_on("escalate", resource, ns, name))
            {
                return Ok(());
            }
            let (owner, errors) = st.authz.rules_for(user, ns);
            let missing = uncovered(&owner, &rules_of(obj));
            if !missing.is_empty() {
                return Err(forbidden(&not_held(user, &missing, &errors)));
            }
            let aggregates = obj.get("aggregationRule").is_some_and(|r| !r.is_null());
            let full = [bootstrap::all_rule(true), bootstrap::all_rule(false)];
            if aggregates && !uncovered(&owner, &full).is_empty() {
                return Err(forbidden(
                    "must have cluster-admin privileges to use the aggregationRule",
                ));
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            if old.is_some_and(|o| {
                o.get("subjects") == obj.get("subjects") && o.get("roleRef") == obj.get("roleRef")
            }) {
                return Ok(());
            }
            let text = |k: &str| {
                obj.pointer(&format!("/roleRef/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let role_ref = RoleRef {
                kind: text("kind"),
                name: text("name"),
            };
            let role_resource = if role_ref.kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if st
                .authz
                .allows(user, &verb_on("bind", role_resource, ns, &role_ref.name))
            {
                return Ok(());
            }
            let rules = st.authz.index().role_rules(&role_ref, ns).map_err(|_| {
                ApiError::not_found(
                    &format!("{role_resource}.{}", bootstrap::GROUP),
                    bootstrap::GROUP,
                    role_resource,
                    &role_ref.name,
                )
            })?;
            let (owner, errors) = st.authz.rules_for(user, ns);
            let missing = uncovered(&owner, &rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(forbidden(&not_held(user, &missing, &errors)))
            }
        }
        _ => Ok(()),
    }
}
