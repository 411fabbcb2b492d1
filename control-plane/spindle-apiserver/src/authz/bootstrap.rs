//! The roles and bindings every cluster has (kube-apiserver's bootstrap policy,
//! `plugin/pkg/auth/authorizer/rbac/bootstrappolicy`), reconciled at every start as its
//! `rbac/bootstrap-roles` post-start hook does: missing objects are created, missing rules
//! and subjects added, unless the object is annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"`.

use anyhow::Result;
use serde_json::{json, Value};

use super::rules::PolicyRule;
use crate::rest;
use crate::AppState;

pub const GROUP: &str = "rbac.authorization.k8s.io";
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

pub(super) const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const EVENTS: &[&str] = &["create", "patch", "update"];

/// `*` on every resource (`resources`) or every path: cluster-admin's two rules.
pub fn all_rule(resources: bool) -> PolicyRule {
    let all = vec!["*".to_string()];
    if resources {
        PolicyRule {
            verbs: all.clone(),
            api_groups: all.clone(),
            resources: all,
            ..PolicyRule::default()
        }
    } else {
        PolicyRule {
            verbs: all.clone(),
            non_resource_urls: all,
            ..PolicyRule::default()
        }
    }
}

pub(super) fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

pub(super) fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

pub(super) fn role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: &[(&str, &str)], selector: &str) -> Value {
    let mut v = role(name, labels, vec![]);
    v["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {selector: "true"}}]});
    v
}

const TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The bootstrap ClusterRoles, for the kinds Spindle serves and the ones clients expect.
pub fn cluster_roles() -> Vec<Value> {
    vec![
        role(
            "cluster-admin",
            &[],
            vec![r(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:monitoring",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        role(
            "system:basic-user",
            &[],
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        aggregated("admin", &[], TO_ADMIN),
        aggregated("edit", &[(TO_ADMIN, "true")], TO_EDIT),
        aggregated("view", &[(TO_EDIT, "true")], TO_VIEW),
        role(
            "system:aggregate-to-admin",
            &[(TO_ADMIN, "true")],
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                r(READ_WRITE, &[GROUP], &["rolebindings", "roles"]),
            ],
        ),
        role(
            "system:aggregate-to-edit",
            &[(TO_EDIT, "true")],
            vec![
                r(&["impersonate"], &[""], &["serviceaccounts"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                r(&["create"], &[""], &["pods/eviction"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                r(&["create"], &[""], &["serviceaccounts/token"]),
                r(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(WRITE, &["batch"], &["cronjobs", "jobs"]),
                r(WRITE, &["policy"], &["poddisruptionbudgets"]),
                r(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                r(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        // What metrics-server installs, so whoever may view a namespace may `kubectl top`
        // its pods.
        role(
            "system:aggregated-metrics-reader",
            &[(TO_VIEW, "true"), (TO_EDIT, "true"), (TO_ADMIN, "true")],
            vec![r(READ, &["metrics.k8s.io"], &["pods", "nodes"])],
        ),
        role(
            "system:aggregate-to-view",
            &[(TO_VIEW, "true")],
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                r(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                r(READ, &[""], &["namespaces"]),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
                r(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                r(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                r(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                r(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                r(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
        ),
        role(
            "system:kube-scheduler",
            &[],
            vec![
                r(EVENTS, &["", "events.k8s.io"], &["events"]),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                r(READ, &[""], &["nodes"]),
                r(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                r(&["create"], &[""], &["bindings", "pods/binding"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(READ, &[""], &["replicationcontrollers", "services"]),
                r(READ, &["apps", "extensions"], &["replicasets"]),
                r(READ, &["apps"], &["statefulsets"]),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(
                    READ,
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                r(READ, &["storage.k8s.io"], &["csinodes"]),
                r(READ, &[""], &["namespaces"]),
                r(
                    READ,
                    &["storage.k8s.io"],
                    &["csidrivers", "csistoragecapacities"],
                ),
            ],
        ),
        role(
            "system:volume-scheduler",
            &[],
            vec![
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        // Full use of the agents' (kubelets') API: what the API server's own client
        // certificate towards agents is bound to, and nothing more.
        role(
            "system:kubelet-api-admin",
            &[],
            vec![
                r(READ, &[""], &["nodes"]),
                r(&["proxy"], &[""], &["nodes"]),
                r(
                    &["*"],
                    &[""],
                    &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"],
                ),
            ],
        ),
        role(
            "system:kube-controller-manager",
            &[],
            vec![
                r(EVENTS, &["", "events.k8s.io"], &["events"]),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                r(&["create"], &[""], &["secrets", "serviceaccounts"]),
                r(&["delete"], &[""], &["secrets"]),
                r(
                    &["get"],
                    &[""],
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                ),
                r(&["update"], &[""], &["secrets", "serviceaccounts"]),
                // The shared informers; the controllers' own reads and writes are
                // theirs (controller_roles.rs).
                r(&["list", "watch"], &["*"], &["*"]),
                r(&["create"], &[""], &["serviceaccounts/token"]),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        // The rules every node holds by being one (kube's NodeRules): the Node
        // authorizer judges nodes against them (and against its graph for Secrets,
        // ConfigMaps, claims, volumes, tokens and leases); the role itself is bound to
        // nobody, as on Kubernetes.
        role(
            "system:node",
            &[],
            vec![
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews", "subjectaccessreviews"],
                ),
                r(READ, &[""], &["services"]),
                r(&["create", "get", "list", "watch"], &[""], &["nodes"]),
                r(&["patch", "update"], &[""], &["nodes/status"]),
                r(&["patch", "update"], &[""], &["nodes"]),
                r(EVENTS, &["", "events.k8s.io"], &["events"]),
                r(READ, &[""], &["pods"]),
                r(&["create", "delete"], &[""], &["pods"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(&["create"], &[""], &["pods/eviction"]),
                r(READ, &[""], &["configmaps", "secrets"]),
                r(
                    &["get"],
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                r(&["get"], &[""], &["endpoints"]),
                r(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                r(
                    &["create", "delete", "get", "patch", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                r(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
                r(&["create"], &[""], &["serviceaccounts/token"]),
                r(
                    &["get", "patch", "update"],
                    &[""],
                    &["persistentvolumeclaims/status"],
                ),
                r(READ, &["storage.k8s.io"], &["csidrivers"]),
                r(READ, &["node.k8s.io"], &["runtimeclasses"]),
            ],
        ),
        // kube-proxy's role; Spindle's agent is its node's service proxy and DNS.
        role(
            "system:node-proxier",
            &[],
            vec![
                r(&["list", "watch"], &[""], &["endpoints", "services"]),
                r(READ, &[""], &["nodes"]),
                r(EVENTS, &["", "events.k8s.io"], &["events"]),
                r(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        // Each agent reclaims the local-path volumes on its own node: it watches
        // volumes, removes a Released one's directory, then the volume (NodeRestriction
        // lets a node delete only those). The control plane provisions them.
        role(
            "spindle:local-path-reclaimer",
            &[],
            vec![r(
                &["delete", "get", "list", "watch"],
                &[""],
                &["persistentvolumes"],
            )],
        ),
        // What a bootstrap token may do: ask for a certificate and watch it being issued.
        role(
            "system:node-bootstrapper",
            &[],
            vec![r(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
    ]
}

pub(super) fn binding(name: &str, role: &str, subjects: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(name, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}, "subjects": subjects})
}

const NODES: &str = "system:nodes";
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// Bootstrap objects earlier versions made and this one must not keep: the binding that
/// made every node cluster-admin until nodes had identities of their own, and the one
/// that let every node create volumes while agents provisioned local-path volumes.
/// Removed at start when they still carry the bootstrap label (an admin's own object
/// is left).
const OBSOLETE_BINDINGS: &[&str] = &["spindle:node-agents", "spindle:local-path-provisioner"];

fn group(name: &str) -> Value {
    json!({"apiGroup": GROUP, "kind": "Group", "name": name})
}

fn user(name: &str) -> Value {
    json!({"apiGroup": GROUP, "kind": "User", "name": name})
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            vec![group("system:masters")],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            vec![group("system:monitoring")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            vec![group("system:authenticated")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            vec![group("system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        // As k3s binds its API server's kubelet client (Kubernetes leaves it to the
        // installer): the user of `pki::KUBELET_CLIENT_USER`.
        binding(
            "kube-apiserver-kubelet-admin",
            "system:kubelet-api-admin",
            vec![user(crate::pki::KUBELET_CLIENT_USER)],
        ),
        binding("system:node", "system:node", vec![]),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            vec![user("system:kube-proxy"), group(NODES)],
        ),
        binding(
            "spindle:local-path-reclaimer",
            "spindle:local-path-reclaimer",
            vec![group(NODES)],
        ),
        // The join token's user is a bootstrap token's (kubeadm's bindings): it may ask
        // for node client certificates, which are then approved automatically, and so
        // may nodes renewing their own.
        binding(
            "spindle:kubelet-bootstrap",
            "system:node-bootstrapper",
            vec![group(BOOTSTRAPPERS)],
        ),
        binding(
            "spindle:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![group(BOOTSTRAPPERS)],
        ),
        binding(
            "spindle:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![group(NODES)],
        ),
    ]
}

/// Rules or subjects of `want` missing from `have`, appended (kube's reconciliation
/// adds, never removes).
fn union(have: &mut Value, want: &Value, field: &str) -> bool {
    let add: Vec<Value> = want
        .get(field)
        .and_then(Value::as_array)
        .map(|w| {
            let h = have.get(field).and_then(Value::as_array);
            w.iter()
                .filter(|x| !h.is_some_and(|h| h.contains(x)))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if add.is_empty() {
        return false;
    }
    match have.get_mut(field).and_then(Value::as_array_mut) {
        Some(list) => list.extend(add),
        None => have[field] = Value::Array(add),
    }
    true
}

/// Delete the [`OBSOLETE_BINDINGS`] an older data directory holds.
async fn remove_obsolete(st: &AppState) -> Result<()> {
    let Some(kind) = st.reg.by_resource(GROUP, "v1", "clusterrolebindings") else {
        return Ok(());
    };
    for name in OBSOLETE_BINDINGS {
        let k = rest::key(kind, None, Some(name));
        let Some(kv) = st.store.get(&k).await? else {
            continue;
        };
        let have: Value = serde_json::from_slice(&kv.value)?;
        if have.pointer("/metadata/labels/kubernetes.io~1bootstrapping")
            != Some(&json!("rbac-defaults"))
        {
            continue;
        }
        tracing::info!(
            binding = name,
            "removing an obsolete bootstrap ClusterRoleBinding"
        );
        match st.store.delete(&k, Some(kv.mod_revision)).await {
            Ok(_) | Err(spindle_store::StoreError::NotFound(_)) => {}
            Err(spindle_store::StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Create or reconcile the bootstrap policy in the store.
pub async fn reconcile(st: &AppState) -> Result<()> {
    remove_obsolete(st).await?;
    let mut roles = cluster_roles();
    roles.extend(super::controller_roles::roles());
    let mut bindings = cluster_role_bindings();
    bindings.extend(super::controller_roles::bindings());
    let pairs = [
        ("clusterroles", roles, "rules"),
        ("clusterrolebindings", bindings, "subjects"),
    ];
    for (plural, objs, field) in pairs {
        let Some(kind) = st.reg.by_resource(GROUP, "v1", plural) else {
            continue;
        };
        for mut want in objs {
            let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
            let k = rest::key(kind, None, Some(&name));
            match st.store.get(&k).await? {
                None => {
                    want["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                    want["metadata"]["creationTimestamp"] = json!(rest::now_rfc3339());
                    kind.default_object(&mut want);
                    match st.store.create(&k, serde_json::to_vec(&want)?).await {
                        Ok(_) | Err(spindle_store::StoreError::AlreadyExists(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(kv) => {
                    let mut have: Value = serde_json::from_slice(&kv.value)?;
                    let pinned = have.pointer(&format!(
                        "/metadata/annotations/{}",
                        AUTOUPDATE.replace('/', "~1")
                    )) == Some(&json!("false"));
                    // Aggregated roles' rules belong to the aggregation controller.
                    let aggregated = have.get("aggregationRule").is_some_and(|a| !a.is_null());
                    if pinned || (aggregated && field == "rules") || !union(&mut have, &want, field)
                    {
                        continue;
                    }
                    if let Some(m) = have.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    match st
                        .store
                        .update(&k, serde_json::to_vec(&have)?, Some(kv.mod_revision))
                        .await
                    {
                        Ok(_) | Err(spindle_store::StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
    Ok(())
}
