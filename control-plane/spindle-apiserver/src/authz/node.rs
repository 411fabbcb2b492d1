//! The Node authorizer (kube's `plugin/pkg/auth/authorizer/node`), evaluated before RBAC
//! for users named `system:node:<name>` in group `system:nodes`.
//!
//! Secrets, ConfigMaps, PersistentVolumeClaims, PersistentVolumes and ServiceAccount
//! tokens are granted only along the [`graph`](super::graph): a node reads such an object
//! when a pod bound to it references it. Leases only in `kube-node-lease` under the
//! node's own name. Everything else is judged against the `system:node` bootstrap role's
//! rules, which no binding grants: the node's identity does. What the rules let any
//! node do to any Node or pod, NodeRestriction admission narrows to its own.
//!
//! An answer other than "allowed" is no opinion: RBAC is asked next, and the reason
//! given here ends kube's 403 message when RBAC refuses too.

use std::sync::OnceLock;

use super::graph::{Graph, Vertex};
use super::rules::PolicyRule;
use super::Attributes;
use crate::auth::User;

pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is (kube's NodeIdentifier): `system:node:<name>` in `system:nodes`.
pub fn node_name(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// The `system:node` role's rules, which every node holds by being one.
pub fn node_rules() -> &'static [PolicyRule] {
    static RULES: OnceLock<Vec<PolicyRule>> = OnceLock::new();
    RULES.get_or_init(|| {
        super::bootstrap::cluster_roles()
            .iter()
            .find(|r| r["metadata"]["name"] == "system:node")
            .map(super::index::rules_of)
            .unwrap_or_default()
    })
}

/// The decision: `Ok(())` allows, `Err(reason)` has no opinion (the reason may be empty).
pub fn authorize(
    graph: &Graph,
    node: &str,
    a: &Attributes,
    name_selector: Option<&str>,
) -> Result<(), String> {
    if a.resource_request {
        let vertex = match (a.group.as_str(), a.resource.as_str()) {
            ("", "secrets") => Some(Vertex::Secret),
            ("", "configmaps") => Some(Vertex::ConfigMap),
            _ => None,
        };
        if let Some(v) = vertex {
            return read_namespaced(graph, node, v, a, name_selector);
        }
        match (a.group.as_str(), a.resource.as_str()) {
            ("", "persistentvolumeclaims") if a.subresource == "status" => {
                if !matches!(a.verb.as_str(), "update" | "patch") {
                    return Err("can only get or update persistentvolumeclaim status".into());
                }
                return related(
                    graph.references(node, Vertex::Claim, &a.namespace, &a.name),
                    node,
                );
            }
            ("", "persistentvolumeclaims") => {
                only_get(a)?;
                return related(
                    graph.references(node, Vertex::Claim, &a.namespace, &a.name),
                    node,
                );
            }
            ("", "persistentvolumes") => {
                only_get(a)?;
                return related(graph.reaches_volume(node, &a.name), node);
            }
            ("", "serviceaccounts") => {
                if a.verb != "create" || a.subresource != "token" || a.name.is_empty() {
                    return Err("can only create tokens for individual service accounts".into());
                }
                return related(
                    graph.references(node, Vertex::ServiceAccount, &a.namespace, &a.name),
                    node,
                );
            }
            ("coordination.k8s.io", "leases") => return lease(node, a),
            _ => {}
        }
    }
    if node_rules().iter().any(|r| r.allows(a)) {
        Ok(())
    } else {
        Err(String::new())
    }
}

fn related(found: bool, node: &str) -> Result<(), String> {
    if found {
        Ok(())
    } else {
        Err(format!(
            "no relationship found between node '{node}' and this object"
        ))
    }
}

fn only_get(a: &Attributes) -> Result<(), String> {
    if a.verb != "get" || a.name.is_empty() || !a.subresource.is_empty() {
        return Err("can only get individual resources of this type".into());
    }
    Ok(())
}

/// Secrets and ConfigMaps: `get` by name, or list/watch narrowed to one name with a
/// `metadata.name` field selector (the kubelet's watch-based managers).
fn read_namespaced(
    graph: &Graph,
    node: &str,
    v: Vertex,
    a: &Attributes,
    name_selector: Option<&str>,
) -> Result<(), String> {
    let name = match a.verb.as_str() {
        "get" if !a.name.is_empty() && a.subresource.is_empty() => a.name.as_str(),
        "list" | "watch" if a.name.is_empty() => name_selector.unwrap_or(""),
        _ => "",
    };
    if name.is_empty() || a.namespace.is_empty() {
        return Err("can only read namespaced object of this type".into());
    }
    related(graph.references(node, v, &a.namespace, name), node)
}

/// kube's authorizeLease: the node's own Lease in `kube-node-lease` (a create names no
/// object in its path; NodeRestriction checks the name then).
fn lease(node: &str, a: &Attributes) -> Result<(), String> {
    if !matches!(
        a.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return Err("can only get, create, update, patch, or delete a node lease".into());
    }
    if a.namespace != NODE_LEASE_NAMESPACE {
        return Err(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    if a.verb != "create" && a.name != node {
        return Err("can only access node lease with the same name as the requesting node".into());
    }
    Ok(())
}

/// The object name a list or watch is narrowed to by `fieldSelector=metadata.name=<n>`
/// (alone: any other term widens nothing, but kube accepts only this one too).
pub fn name_selector(query: Option<&str>) -> Option<String> {
    let q = query?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "fieldSelector")
        .and_then(|(_, v)| {
            let v = v.trim();
            let rest = v
                .strip_prefix("metadata.name==")
                .or_else(|| v.strip_prefix("metadata.name="))?;
            (!rest.contains(',') && !rest.is_empty()).then(|| rest.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;
    use serde_json::json;

    fn node(name: &str) -> User {
        User {
            name: format!("system:node:{name}"),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    fn graph() -> Graph {
        let mut g = Graph::default();
        g.apply_pod(
            &json!({"metadata": {"namespace": "ns", "name": "p"}, "spec": {"nodeName": "a",
                "volumes": [{"name": "s", "secret": {"secretName": "mine"}},
                            {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
            true,
        );
        g.apply_claim(
            &json!({"metadata": {"namespace": "ns", "name": "data"}, "spec": {"volumeName": "pv1"}}),
            true,
        );
        g
    }

    fn ask(g: &Graph, method: Method, path: &str, query: Option<&str>) -> Result<(), String> {
        let a = Attributes::from_request(&method, path, false);
        authorize(g, "a", &a, name_selector(query).as_deref())
    }

    #[test]
    fn identity_needs_the_prefix_and_the_group() {
        assert_eq!(node_name(&node("a")), Some("a"));
        let mut no_group = node("a");
        no_group.groups.clear();
        assert_eq!(node_name(&no_group), None);
        let bootstrap = User {
            name: "system:node-bootstrap".into(),
            groups: vec![NODES_GROUP.into()],
        };
        assert_eq!(node_name(&bootstrap), None);
    }

    #[test]
    fn secrets_and_volumes_only_along_the_graph() {
        let g = graph();
        assert!(ask(&g, Method::GET, "/api/v1/namespaces/ns/secrets/mine", None).is_ok());
        let e = ask(&g, Method::GET, "/api/v1/namespaces/ns/secrets/other", None).unwrap_err();
        assert_eq!(e, "no relationship found between node 'a' and this object");
        assert!(ask(&g, Method::GET, "/api/v1/namespaces/ns/secrets", None).is_err());
        assert!(ask(
            &g,
            Method::GET,
            "/api/v1/namespaces/ns/secrets",
            Some("fieldSelector=metadata.name%3Dmine")
        )
        .is_ok());
        assert!(ask(
            &g,
            Method::GET,
            "/api/v1/namespaces/ns/secrets",
            Some("fieldSelector=metadata.name%3Dother")
        )
        .is_err());
        assert!(ask(
            &g,
            Method::DELETE,
            "/api/v1/namespaces/ns/secrets/mine",
            None
        )
        .is_err());
        assert!(ask(&g, Method::GET, "/api/v1/secrets", None).is_err());
        assert!(ask(&g, Method::GET, "/api/v1/persistentvolumes/pv1", None).is_ok());
        assert!(ask(&g, Method::GET, "/api/v1/persistentvolumes/pv2", None).is_err());
        assert!(ask(
            &g,
            Method::GET,
            "/api/v1/namespaces/ns/persistentvolumeclaims/data",
            None
        )
        .is_ok());
        assert!(ask(
            &g,
            Method::POST,
            "/api/v1/namespaces/ns/serviceaccounts/default/token",
            None
        )
        .is_ok());
        assert!(ask(
            &g,
            Method::POST,
            "/api/v1/namespaces/ns/serviceaccounts/admin/token",
            None
        )
        .is_err());
        assert!(ask(
            &g,
            Method::GET,
            "/api/v1/namespaces/ns/serviceaccounts/default",
            None
        )
        .is_err());
    }

    #[test]
    fn leases_and_the_node_rules() {
        let g = graph();
        let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        assert!(ask(&g, Method::PUT, &format!("{lease}/a"), None).is_ok());
        assert!(ask(&g, Method::PUT, &format!("{lease}/b"), None).is_err());
        assert!(ask(&g, Method::POST, lease, None).is_ok());
        assert!(ask(
            &g,
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/a",
            None
        )
        .is_err());
        assert!(ask(&g, Method::GET, "/api/v1/pods", None).is_ok());
        assert!(ask(&g, Method::PATCH, "/api/v1/nodes/a/status", None).is_ok());
        assert!(ask(&g, Method::POST, "/api/v1/namespaces", None).is_err());
        assert!(ask(
            &g,
            Method::POST,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            None
        )
        .is_err());
        assert!(ask(&g, Method::DELETE, "/api/v1/nodes/a", None).is_err());
    }
}
