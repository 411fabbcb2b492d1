//! Bodies captured from a real kubectl v1.32.4 pointed at a recording HTTP
//! listener, so these pin the decoder to what kubectl actually sends rather
//! than to our own reading of generated.proto. Each file is the exact
//! request body: `k8s\0` + runtime.Unknown{typeMeta, raw, "", ""}; the
//! create-configmap body, for example, is
//! `6b387300 0a0f(0a02"v1" 1209"ConfigMap") 121c(raw) 1a00 2200`.
//!
//! The same capture showed `kubectl drain` (without --disable-eviction)
//! POSTing its Eviction as application/json, so there is no protobuf
//! Eviction fixture; the typed round-trip test covers that kind.

use serde_json::json;
use spindle_protobuf::decode;

macro_rules! fixture {
    ($name:literal) => {
        decode(include_bytes!(concat!("fixtures/kubectl-1.32/", $name))).expect($name)
    };
}

#[test]
fn create_configmap() {
    // kubectl create configmap c2 --from-literal=k=v
    assert_eq!(
        fixture!("create-configmap.bin"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c2"}, "data": {"k": "v"}})
    );
}

#[test]
fn create_secret() {
    // kubectl create secret generic s1 --from-literal=password=hunter2
    assert_eq!(
        fixture!("create-secret.bin"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"},
               "data": {"password": "aHVudGVyMg=="}})
    );
}

#[test]
fn create_deployment() {
    // kubectl create deployment web --image=nginx:1.27 --replicas=2 --port=80
    //   -- /bin/sh -c "echo hi"
    assert_eq!(
        fixture!("create-deployment.bin"),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx",
                        "image": "nginx:1.27",
                        "command": ["/bin/sh", "-c", "echo hi"],
                        "ports": [{"containerPort": 80}],
                        "resources": {}
                    }]}
                },
                "strategy": {}
            }
        })
    );
}

#[test]
fn create_service() {
    // kubectl create service clusterip web --tcp=80:8080
    assert_eq!(
        fixture!("create-service-clusterip.bin"),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                "selector": {"app": "web"},
                "type": "ClusterIP"
            }
        })
    );
}

#[test]
fn create_namespace_and_serviceaccount() {
    // kubectl create namespace team-a
    assert_eq!(
        fixture!("create-namespace.bin"),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"},
               "spec": {}, "status": {}})
    );
    // kubectl create serviceaccount robot
    assert_eq!(
        fixture!("create-serviceaccount.bin"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    );
}

#[test]
fn create_job_and_cronjob() {
    // kubectl create job pi --image=busybox -- date
    assert_eq!(
        fixture!("create-job.bin"),
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "pi"},
            "spec": {"template": {"metadata": {}, "spec": {
                "containers": [{"name": "pi", "image": "busybox", "command": ["date"], "resources": {}}],
                "restartPolicy": "Never"
            }}}
        })
    );
    // kubectl create cronjob nightly --image=busybox --schedule="0 3 * * *" -- date
    let cj = fixture!("create-cronjob.bin");
    assert_eq!(cj["spec"]["schedule"], "0 3 * * *");
    assert_eq!(
        cj["spec"]["jobTemplate"]["metadata"],
        json!({"name": "nightly"})
    );
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );
}

#[test]
fn drain_delete_options() {
    // kubectl drain n1 --disable-eviction --grace-period=7: DELETE of the pod
    // with a protobuf DeleteOptions stamped apiVersion "v1".
    assert_eq!(
        fixture!("drain-delete-options.bin"),
        json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 7})
    );
}

#[test]
fn create_rbac() {
    // kubectl create role r1 --verb=get,list --resource=pods
    assert_eq!(
        fixture!("create-role.bin"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "r1"},
               "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]})
    );
    // kubectl create clusterrole cr1 --verb=get --non-resource-url=/healthz
    assert_eq!(
        fixture!("create-clusterrole.bin")["rules"],
        json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}])
    );
    // kubectl create rolebinding rb1 --role=r1 --serviceaccount=default:robot --user=alice
    assert_eq!(
        fixture!("create-rolebinding.bin"),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "rb1"},
            "subjects": [
                {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                {"kind": "ServiceAccount", "name": "robot", "namespace": "default"}
            ],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r1"}
        })
    );
    // kubectl create clusterrolebinding crb1 --clusterrole=cr1 --group=devs
    let crb = fixture!("create-clusterrolebinding.bin");
    assert_eq!(crb["kind"], "ClusterRoleBinding");
    assert_eq!(
        crb["subjects"],
        json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}])
    );
    assert_eq!(crb["roleRef"]["kind"], "ClusterRole");
}

#[test]
fn create_quota_and_pdb() {
    // kubectl create quota q1 --hard=cpu=2,pods=10 --scopes=NotTerminating
    assert_eq!(
        fixture!("create-quota.bin"),
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q1"},
               "spec": {"hard": {"cpu": "2", "pods": "10"}, "scopes": ["NotTerminating"]}})
    );
    // kubectl create pdb pdb1 --selector=app=web --min-available=50%
    assert_eq!(
        fixture!("create-pdb.bin"),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "pdb1"},
               "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}})
    );
}
