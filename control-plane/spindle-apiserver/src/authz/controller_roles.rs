//! The controllers' bootstrap roles (kube-apiserver's `controller_policy.go`): each
//! controller of the controller manager works as the ServiceAccount
//! `kube-system/<controller>` (kube-controller-manager's `--use-service-account-credentials`)
//! and holds the ClusterRole `system:controller:<controller>`, bound by a
//! ClusterRoleBinding of the same name. The shared informers list and watch as
//! `system:kube-controller-manager` instead (its own role reads everything).
//!
//! The rules are Kubernetes', plus what Spindle's controllers do differently, each
//! marked: they write status with merge patches where Kubernetes' update, and the
//! endpoint controllers write by server-side apply (verb `patch`).

use serde_json::{json, Value};

use super::bootstrap::{named, r, role, GROUP, READ};

/// The prefix of every controller's role (and binding) name.
pub const ROLE_PREFIX: &str = "system:controller:";
/// The namespace the controllers' ServiceAccounts live in.
pub const NAMESPACE: &str = "kube-system";

const RW: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

fn events() -> Value {
    r(
        &["create", "patch", "update"],
        &["", "events.k8s.io"],
        &["events"],
    )
}

fn controller(name: &str, mut rules: Vec<Value>) -> Value {
    rules.push(events());
    role(&format!("{ROLE_PREFIX}{name}"), &[], rules)
}

/// The roles, one per controller identity.
pub fn roles() -> Vec<Value> {
    let apps = &["apps", "extensions"];
    vec![
        controller(
            "clusterrole-aggregation-controller",
            vec![r(
                &["escalate", "get", "list", "patch", "update", "watch"],
                &[GROUP],
                &["clusterroles"],
            )],
        ),
        controller(
            "cronjob-controller",
            vec![
                r(
                    &["get", "list", "update", "watch"],
                    &["batch"],
                    &["cronjobs"],
                ),
                r(RW, &["batch"], &["jobs"]),
                r(
                    &["update"],
                    &["batch"],
                    &["cronjobs/finalizers", "cronjobs/status"],
                ),
                r(&["delete", "list", "watch"], &[""], &["pods"]),
            ],
        ),
        controller(
            "daemon-set-controller",
            vec![
                r(READ, apps, &["daemonsets"]),
                // Spindle: status is a merge patch.
                r(&["patch", "update"], apps, &["daemonsets/status"]),
                r(&["update"], apps, &["daemonsets/finalizers"]),
                r(&["list", "watch"], &[""], &["nodes"]),
                r(
                    &["create", "delete", "list", "patch", "watch"],
                    &[""],
                    &["pods"],
                ),
                r(&["create"], &[""], &["pods/binding"]),
                r(RW, &["apps"], &["controllerrevisions"]),
            ],
        ),
        controller(
            "deployment-controller",
            vec![
                r(&["get", "list", "update", "watch"], apps, &["deployments"]),
                r(
                    &["update"],
                    apps,
                    &["deployments/finalizers", "deployments/status"],
                ),
                r(RW, apps, &["replicasets"]),
                r(&["get", "list", "update", "watch"], &[""], &["pods"]),
            ],
        ),
        controller(
            "disruption-controller",
            vec![
                r(READ, apps, &["deployments", "replicasets"]),
                r(READ, &[""], &["replicationcontrollers"]),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(READ, &["apps"], &["statefulsets"]),
                r(&["update"], &["policy"], &["poddisruptionbudgets/status"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(&["get"], &["*"], &["*/scale"]),
            ],
        ),
        controller(
            "endpoint-controller",
            vec![
                r(READ, &[""], &["pods", "services"]),
                // Spindle: written by server-side apply (patch).
                r(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &[""],
                    &["endpoints"],
                ),
                r(&["create"], &[""], &["endpoints/restricted"]),
            ],
        ),
        controller(
            "endpointslice-controller",
            vec![
                r(READ, &[""], &["nodes", "pods", "services"]),
                r(&["update"], &[""], &["services/finalizers"]),
                // Spindle: written by server-side apply (patch).
                r(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        controller(
            "ephemeral-volume-controller",
            vec![
                r(READ, &[""], &["pods"]),
                r(&["update"], &[""], &["pods/finalizers"]),
                r(
                    &["create", "get", "list", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        // Spindle's built-in local-path provisioner (k3s's local-path-provisioner-role):
        // it reads through the shared informers and only creates volumes.
        controller(
            "local-path-provisioner",
            vec![r(&["create"], &[""], &["persistentvolumes"])],
        ),
        controller(
            "horizontal-pod-autoscaler",
            vec![
                r(READ, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(
                    &["update"],
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                ),
                r(&["get", "update"], &["*"], &["*/scale"]),
                r(&["list"], &[""], &["pods"]),
                r(&["list"], &["metrics.k8s.io"], &["pods"]),
                r(&["get", "list"], &["custom.metrics.k8s.io"], &["*"]),
                r(&["get", "list"], &["external.metrics.k8s.io"], &["*"]),
            ],
        ),
        controller(
            "job-controller",
            vec![
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &["batch"],
                    &["jobs"],
                ),
                r(&["update"], &["batch"], &["jobs/finalizers", "jobs/status"]),
                r(
                    &["create", "delete", "list", "patch", "watch"],
                    &[""],
                    &["pods"],
                ),
            ],
        ),
        controller(
            "node-controller",
            vec![
                r(
                    &["delete", "get", "list", "patch", "update", "watch"],
                    &[""],
                    &["nodes"],
                ),
                r(&["patch", "update"], &[""], &["nodes/status"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                // Spindle: a node's Lease is read afresh before the node is declared
                // dead (the cache may lag).
                r(&["get"], &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        controller(
            "persistent-volume-binder",
            vec![
                // Spindle: the binder writes with merge patches, and does the
                // pv-protection and pvc-protection controllers' work too.
                r(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(&["patch", "update"], &[""], &["persistentvolumes/status"]),
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                r(
                    &["patch", "update"],
                    &[""],
                    &["persistentvolumeclaims/status"],
                ),
                r(
                    &["create", "delete", "get", "list", "watch"],
                    &[""],
                    &["pods"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                r(&["list", "watch"], &[""], &["nodes"]),
                r(&["watch"], &[""], &["events"]),
                r(&["get"], &[""], &["services"]),
            ],
        ),
        controller(
            "replicaset-controller",
            vec![
                r(&["get", "list", "update", "watch"], apps, &["replicasets"]),
                // Spindle: status is a merge patch.
                r(&["patch", "update"], apps, &["replicasets/status"]),
                r(&["update"], apps, &["replicasets/finalizers"]),
                r(
                    &["create", "delete", "list", "patch", "watch"],
                    &[""],
                    &["pods"],
                ),
            ],
        ),
        controller(
            "replication-controller",
            vec![
                r(
                    &["get", "list", "update", "watch"],
                    &[""],
                    &["replicationcontrollers"],
                ),
                // Spindle: status is a merge patch.
                r(
                    &["patch", "update"],
                    &[""],
                    &["replicationcontrollers/status"],
                ),
                r(&["update"], &[""], &["replicationcontrollers/finalizers"]),
                r(
                    &["create", "delete", "list", "patch", "watch"],
                    &[""],
                    &["pods"],
                ),
            ],
        ),
        controller(
            "resourcequota-controller",
            vec![
                // Quota may count anything, so it may read everything.
                r(&["list", "watch"], &["*"], &["*"]),
                r(&["update"], &[""], &["resourcequotas/status"]),
            ],
        ),
        controller(
            "root-ca-cert-publisher",
            vec![r(&["create", "update"], &[""], &["configmaps"])],
        ),
        controller(
            "service-account-controller",
            vec![r(&["create"], &[""], &["serviceaccounts"])],
        ),
        controller(
            "statefulset-controller",
            vec![
                r(&["list", "watch"], &[""], &["pods"]),
                r(READ, &["apps"], &["statefulsets"]),
                // Spindle: status is a merge patch.
                r(&["patch", "update"], &["apps"], &["statefulsets/status"]),
                r(&["update"], &["apps"], &["statefulsets/finalizers"]),
                r(
                    &["create", "delete", "get", "patch", "update"],
                    &[""],
                    &["pods"],
                ),
                r(RW, &["apps"], &["controllerrevisions"]),
                r(
                    &["create", "get", "list", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                // Spindle: a claim's retention owner is set with a merge patch.
                r(
                    &["delete", "patch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                r(&["update"], &[""], &["pods/finalizers"]),
            ],
        ),
        controller(
            "ttl-after-finished-controller",
            vec![r(
                &["delete", "get", "list", "watch"],
                &["batch"],
                &["jobs"],
            )],
        ),
        controller(
            "certificate-controller",
            vec![
                r(
                    &["delete", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                r(
                    &["update"],
                    &["certificates.k8s.io"],
                    &[
                        "certificatesigningrequests/approval",
                        "certificatesigningrequests/status",
                    ],
                ),
                // Spindle's approver also approves nodes' own serving certificates,
                // checking the names against the Node (certificates/approver.rs).
                named(
                    &["approve"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                    ],
                ),
                r(&["get"], &[""], &["nodes"]),
                named(
                    &["sign"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                        "kubernetes.io/legacy-unknown",
                    ],
                ),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
    ]
}

/// One ClusterRoleBinding per role, of the same name, to the controller's ServiceAccount.
pub fn bindings() -> Vec<Value> {
    roles()
        .iter()
        .filter_map(|role| role["metadata"]["name"].as_str())
        .map(|name| {
            let account = name.trim_start_matches(ROLE_PREFIX);
            super::bootstrap::binding(
                name,
                name,
                vec![json!({"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE})],
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_role_is_bound_to_its_service_account() {
        let roles = roles();
        let bindings = bindings();
        assert_eq!(roles.len(), bindings.len());
        let b = bindings
            .iter()
            .find(|b| b["metadata"]["name"] == "system:controller:job-controller")
            .expect("the job controller's binding");
        assert_eq!(b["roleRef"]["name"], "system:controller:job-controller");
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "job-controller", "namespace": "kube-system"}])
        );
    }
}
