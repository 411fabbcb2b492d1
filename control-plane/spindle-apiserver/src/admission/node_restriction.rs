//! NodeRestriction (kube's `plugin/pkg/admission/noderestriction`): the `system:node`
//! rules let every node write any Node, Lease and pod status; this narrows a node to its
//! own. A node may create and update only its own Node (and not change its taints, which
//! would let it draw workloads meant for others), only its own Lease, the status of pods
//! bound to it, and only mirror pods bound to it. Deletions, evictions and tokens, which
//! do not pass the admission chain here, ask [`check_pod_delete`], [`check_eviction`]
//! and [`check_token`].

use async_trait::async_trait;
use serde_json::Value;

use super::{Admission, Attributes, Operation};
use crate::authz::attributes::forbidden_error;
use crate::authz::node::node_name;
use crate::rest::stored_core;
use crate::status::{ApiError, ApiResult};
use crate::{AppState, User};
use spindle_meta::storage::{LOCAL_PATH_PROVISIONER, PROVISIONED_BY};

pub struct NodeRestriction;

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// kube's admission.NewForbidden: `<resource> "<name>" is forbidden: <why>`.
fn forbidden(group: &str, resource: &str, name: &str, why: String) -> ApiError {
    forbidden_error(group, resource, name, &why)
}

#[async_trait]
impl Admission for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    fn handles(&self, _op: Operation) -> bool {
        true
    }

    async fn validate(&self, _st: &AppState, a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        restrict(a, obj)
    }
}

/// The plugin's decision on a create or update.
fn restrict(a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    let Some(node) = node_name(a.user) else {
        return Ok(());
    };
    let (group, plural) = (a.kind.group, a.kind.plural);
    match (group, plural, a.subresource) {
        ("", "nodes", _) => {
            if a.name != node {
                return Err(forbidden(
                    group,
                    plural,
                    a.name,
                    format!("node {node:?} is not allowed to modify node {:?}", a.name),
                ));
            }
            if let Some(old) = a.old {
                let taints = |v: &Value| v.pointer("/spec/taints").cloned().unwrap_or_default();
                if taints(old) != taints(obj) {
                    return Err(forbidden(
                        group,
                        plural,
                        a.name,
                        format!("node {node:?} is not allowed to modify taints"),
                    ));
                }
            }
        }
        ("", "pods", Some("status")) if a.old.map(|o| text(o, "/spec/nodeName")) != Some(node) => {
            return Err(forbidden(
                group,
                plural,
                a.name,
                format!("node {node:?} can only update pod status for pods with spec.nodeName set to itself"),
            ));
        }
        ("", "pods", None) if a.operation == Operation::Create => {
            if obj
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    MIRROR_ANNOTATION.replace('/', "~1")
                ))
                .is_none()
            {
                return Err(forbidden(
                    group,
                    plural,
                    a.name,
                    format!("pod does not have \"{MIRROR_ANNOTATION}\" annotation, node {node:?} can only create mirror pods"),
                ));
            }
            if text(obj, "/spec/nodeName") != node {
                return Err(forbidden(
                    group,
                    plural,
                    a.name,
                    format!("node {node:?} can only create pods with spec.nodeName set to itself"),
                ));
            }
        }
        ("coordination.k8s.io", "leases", _)
            if a.namespace != Some("kube-node-lease") || a.name != node =>
        {
            return Err(forbidden(
                group,
                plural,
                a.name,
                "can only access node lease with the same name as the requesting node".into(),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// The stored pod, if any.
async fn pod(st: &AppState, ns: &str, name: &str) -> ApiResult<Option<Value>> {
    stored_core(st, "pods", Some(ns), name).await
}

/// Whether `pv` is a local-path volume on exactly `node`: provisioned by Spindle's
/// local-path provisioner, with one required node-affinity term naming only this node.
fn local_volume_of(pv: &Value, node: &str) -> bool {
    let by = PROVISIONED_BY.replace('/', "~1");
    let ours = text(pv, &format!("/metadata/annotations/{by}")) == LOCAL_PATH_PROVISIONER;
    let terms = pv
        .pointer("/spec/nodeAffinity/required/nodeSelectorTerms")
        .and_then(Value::as_array);
    let only_this_node = terms.is_some_and(|terms| {
        terms.len() == 1
            && terms[0].get("matchFields").is_none_or(Value::is_null)
            && terms[0]
                .pointer("/matchExpressions")
                .and_then(Value::as_array)
                .is_some_and(|e| {
                    e.len() == 1
                        && e[0]["key"] == "kubernetes.io/hostname"
                        && e[0]["operator"] == "In"
                        && e[0]["values"] == serde_json::json!([node])
                })
    });
    ours && only_this_node
}

/// A node deletes only pods bound to it (the kubelet removes them once stopped), and
/// only the local-path volumes on itself (its agent reclaims them once Released).
pub async fn check_delete(
    st: &AppState,
    user: &User,
    kind: &spindle_api::Kind,
    ns: &str,
    name: &str,
) -> ApiResult<()> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    if !kind.group.is_empty() {
        return Ok(());
    }
    if kind.plural == "persistentvolumes" {
        return match stored_core(st, "persistentvolumes", None, name).await? {
            Some(pv) if !local_volume_of(&pv, node) => Err(forbidden(
                "",
                "persistentvolumes",
                name,
                format!("node {node:?} can only delete {LOCAL_PATH_PROVISIONER} volumes with node affinity to itself"),
            )),
            _ => Ok(()),
        };
    }
    if kind.plural != "pods" {
        return Ok(());
    }
    match pod(st, ns, name).await? {
        // Let the deletion say the pod is not there.
        None => Ok(()),
        Some(p) if text(&p, "/spec/nodeName") == node => Ok(()),
        Some(_) => Err(forbidden(
            "",
            "pods",
            name,
            format!("node {node:?} can only delete pods with spec.nodeName set to itself"),
        )),
    }
}

/// A node evicts only pods bound to it.
pub async fn check_eviction(st: &AppState, user: &User, ns: &str, name: &str) -> ApiResult<()> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    match pod(st, ns, name).await? {
        None => Ok(()),
        Some(p) if text(&p, "/spec/nodeName") == node => Ok(()),
        Some(_) => Err(forbidden(
            "",
            "pods",
            name,
            format!("node {node:?} can only evict pods with spec.nodeName set to itself"),
        )),
    }
}

/// A node asks for ServiceAccount tokens only bound to a pod bound to it.
pub async fn check_token(
    st: &AppState,
    user: &User,
    ns: &str,
    account: &str,
    spec: &Value,
) -> ApiResult<()> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    let refuse = |why: &str| Err(forbidden("", "serviceaccounts", account, why.to_string()));
    let bound = spec.get("boundObjectRef").filter(|r| !r.is_null());
    let Some(r) = bound.filter(|r| text(r, "/kind") == "Pod") else {
        return refuse("node requested token not bound to a pod");
    };
    match pod(st, ns, text(r, "/name")).await? {
        Some(p) if text(&p, "/spec/nodeName") == node => Ok(()),
        Some(_) => refuse("node requested token bound to a pod scheduled on a different node"),
        // The token request says the pod is not there.
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use spindle_api::Registry;

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        }
    }

    /// `restrict` for `user` writing `obj` over `old` (None: a create).
    fn check(
        user: &User,
        resource: (&str, &str),
        sub: Option<&str>,
        (ns, name): (Option<&str>, &str),
        old: Option<&Value>,
        obj: &Value,
    ) -> Result<(), String> {
        let reg = Registry::new();
        let kind = reg.by_resource(resource.0, "v1", resource.1).expect("kind");
        let a = Attributes {
            operation: if old.is_some() {
                Operation::Update
            } else {
                Operation::Create
            },
            kind,
            subresource: sub,
            namespace: ns,
            name,
            user,
            dry_run: false,
            old,
        };
        restrict(&a, obj).map_err(|e| e.message)
    }

    #[test]
    fn a_node_writes_only_its_own_node_and_not_its_taints() {
        let n1 = user("system:node:n1");
        let node = |name: &str, taints: Value| json!({"metadata": {"name": name}, "spec": {"taints": taints}});
        let plain = node("n1", json!([]));
        assert_eq!(
            check(&n1, ("", "nodes"), None, (None, "n1"), None, &plain),
            Ok(())
        );
        assert_eq!(
            check(
                &n1,
                ("", "nodes"),
                Some("status"),
                (None, "n2"),
                Some(&node("n2", json!([]))),
                &node("n2", json!([]))
            ),
            Err(r#"nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2""#.into())
        );
        assert_eq!(
            check(
                &n1,
                ("", "nodes"),
                None,
                (None, "n2"),
                None,
                &node("n2", json!([]))
            ),
            Err(r#"nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2""#.into())
        );
        let tainted = node("n1", json!([{"key": "k", "effect": "NoSchedule"}]));
        assert_eq!(
            check(
                &n1,
                ("", "nodes"),
                None,
                (None, "n1"),
                Some(&tainted),
                &plain
            ),
            Err(r#"nodes "n1" is forbidden: node "n1" is not allowed to modify taints"#.into())
        );
        assert_eq!(
            check(
                &n1,
                ("", "nodes"),
                None,
                (None, "n1"),
                Some(&tainted),
                &tainted
            ),
            Ok(())
        );
        // Not a node: no opinion here (RBAC decided).
        let admin = User {
            name: "admin".into(),
            groups: vec![],
        };
        assert_eq!(
            check(&admin, ("", "nodes"), None, (None, "n2"), None, &plain),
            Ok(())
        );
    }

    #[test]
    fn a_node_writes_only_its_pods_status_and_its_lease() {
        let n1 = user("system:node:n1");
        let pod = |node: &str| json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": node}});
        let at = (Some("d"), "p");
        assert_eq!(
            check(
                &n1,
                ("", "pods"),
                Some("status"),
                at,
                Some(&pod("n1")),
                &pod("n1")
            ),
            Ok(())
        );
        assert_eq!(
            check(&n1, ("", "pods"), Some("status"), at, Some(&pod("n2")), &pod("n2")),
            Err(r#"pods "p" is forbidden: node "n1" can only update pod status for pods with spec.nodeName set to itself"#.into())
        );
        assert!(
            check(&n1, ("", "pods"), None, at, None, &pod("n1")).is_err(),
            "not a mirror pod"
        );
        let lease =
            |name: &str| json!({"metadata": {"name": name, "namespace": "kube-node-lease"}});
        let in_leases = |name| (Some("kube-node-lease"), name);
        assert_eq!(
            check(
                &n1,
                ("coordination.k8s.io", "leases"),
                None,
                in_leases("n1"),
                None,
                &lease("n1")
            ),
            Ok(())
        );
        assert!(check(
            &n1,
            ("coordination.k8s.io", "leases"),
            None,
            in_leases("n2"),
            None,
            &lease("n2")
        )
        .is_err());
    }

    #[test]
    fn a_node_owns_only_local_path_volumes_on_itself() {
        let pv = |by: &str, terms: Value| {
            json!({"metadata": {"name": "v", "annotations": {"pv.kubernetes.io/provisioned-by": by}},
                   "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": terms}}}})
        };
        let on = |node: &str| json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]);
        assert!(local_volume_of(&pv(LOCAL_PATH_PROVISIONER, on("n1")), "n1"));
        assert!(!local_volume_of(
            &pv(LOCAL_PATH_PROVISIONER, on("n2")),
            "n1"
        ));
        assert!(!local_volume_of(&pv("example.com/other", on("n1")), "n1"));
        // A second term (or a second node) would let the volume, and its pod, go elsewhere.
        let two = json!([on("n1")[0], on("n2")[0]]);
        assert!(!local_volume_of(&pv(LOCAL_PATH_PROVISIONER, two), "n1"));
        let both = json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1", "n2"]}]}]);
        assert!(!local_volume_of(&pv(LOCAL_PATH_PROVISIONER, both), "n1"));
        assert!(!local_volume_of(&json!({"metadata": {"name": "v"}}), "n1"));
    }
}
