//! The printers against realistic and malformed objects of every kind.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::obj::parse_time;
use super::*;

fn printer(group: &str, kind: &str) -> &'static Printer {
    match (group, kind) {
        ("", "Pod") => &pod::POD,
        ("", "Namespace") => &cluster::NAMESPACE,
        ("", "Node") => &cluster::NODE,
        ("", "Service") => &service::SERVICE,
        ("", "Endpoints") => &service::ENDPOINTS,
        ("discovery.k8s.io", "EndpointSlice") => &service::ENDPOINT_SLICE,
        ("", "ConfigMap") => &config::CONFIG_MAP,
        ("", "Secret") => &config::SECRET,
        ("", "ServiceAccount") => &config::SERVICE_ACCOUNT,
        ("", "Event") => &event::EVENT,
        ("events.k8s.io", "Event") => &event::EVENT_V1,
        ("apps", "Deployment") => &apps::DEPLOYMENT,
        ("apps", "ReplicaSet") => &apps::REPLICA_SET,
        ("", "ReplicationController") => &apps::REPLICATION_CONTROLLER,
        ("apps", "DaemonSet") => &apps::DAEMON_SET,
        ("apps", "StatefulSet") => &apps::STATEFUL_SET,
        ("apps", "ControllerRevision") => &apps::CONTROLLER_REVISION,
        ("autoscaling", "HorizontalPodAutoscaler") => &autoscaling::HORIZONTAL_POD_AUTOSCALER,
        ("batch", "Job") => &batch::JOB,
        ("batch", "CronJob") => &batch::CRON_JOB,
        ("coordination.k8s.io", "Lease") => &cluster::LEASE,
        ("policy", "PodDisruptionBudget") => &policy::POD_DISRUPTION_BUDGET,
        ("", "PersistentVolume") => &storage::PERSISTENT_VOLUME,
        ("", "PersistentVolumeClaim") => &storage::PERSISTENT_VOLUME_CLAIM,
        ("storage.k8s.io", "StorageClass") => &storage::STORAGE_CLASS,
        ("", "ResourceQuota") => &quota::RESOURCE_QUOTA,
        ("scheduling.k8s.io", "PriorityClass") => &priority_class::PRIORITY_CLASS,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => &rbac::BINDING,
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            &certificates::CERTIFICATE_SIGNING_REQUEST
        }
        _ => &DEFAULT,
    }
}

fn columns(group: &str, kind: &str) -> &'static [Column] {
    printer(group, kind).columns()
}

fn cells(group: &str, kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    printer(group, kind).cells(obj, now)
}

fn now() -> DateTime<Utc> {
    parse_time("2024-05-01T12:00:00Z").expect("valid test time")
}

fn ago(secs: i64) -> String {
    (now() - chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const KINDS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("", "Namespace"),
    ("", "Node"),
    ("", "Service"),
    ("", "Endpoints"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("", "Event"),
    ("events.k8s.io", "Event"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("", "ReplicationController"),
    ("apps", "DaemonSet"),
    ("apps", "StatefulSet"),
    ("apps", "ControllerRevision"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("coordination.k8s.io", "Lease"),
    ("policy", "PodDisruptionBudget"),
    ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"),
    ("storage.k8s.io", "StorageClass"),
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    ("example.com", "Widget"),
];

fn realistic(group: &str, kind: &str) -> Value {
    let meta = json!({"name": "x", "namespace": "default", "creationTimestamp": ago(300),
        "labels": {"app": "web", "node-role.kubernetes.io/control-plane": ""}});
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "containers": [{"name": "web", "image": "nginx:1.25"}, {"name": "log", "image": "busybox"}]}});
    let selector = json!({"matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]});
    let mut o = match (group, kind) {
        ("", "Pod") => pod_running(),
        ("", "Namespace") => json!({"status": {"phase": "Active"}}),
        ("", "Node") => json!({"spec": {}, "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian", "kernelVersion": "6.1",
                "containerRuntimeVersion": "spindle://0.1"}}}),
        ("", "Service") => json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"], "selector": {"app": "web"},
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}),
        ("", "Endpoints") => json!({"subsets": [{"addresses": [{"ip": "10.1.0.5"}],
            "ports": [{"port": 80}]}]}),
        ("discovery.k8s.io", "EndpointSlice") => json!({"addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}],
            "endpoints": [{"addresses": ["10.1.0.5"]}]}),
        ("", "ConfigMap") => json!({"data": {"a": "1"}, "binaryData": {"b": "AA=="}}),
        ("", "Secret") => json!({"type": "Opaque", "data": {"a": "MQ=="}}),
        ("", "ServiceAccount") => json!({"secrets": [{"name": "t"}]}),
        ("", "Event") => json!({"involvedObject": {"kind": "Pod", "name": "web-1",
            "fieldPath": "spec.containers{web}"}, "reason": "Pulled", "type": "Normal",
            "message": "pulled\n", "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 3}),
        ("events.k8s.io", "Event") => json!({"regarding": {"kind": "Pod", "name": "web-1"},
            "reason": "Scheduled", "type": "Normal", "note": "assigned",
            "eventTime": ago(30), "reportingController": "spindle-scheduler"}),
        ("", "ReplicationController") => {
            json!({"spec": {"replicas": 3, "selector": {"b": "2", "app": "web"}, "template": template},
                "status": {"replicas": 3, "readyReplicas": 2}})
        }
        ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "StatefulSet") => {
            json!({"spec": {"replicas": 3, "selector": selector, "template": template},
                "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3,
                    "availableReplicas": 2}})
        }
        ("apps", "DaemonSet") => json!({"spec": {"selector": selector, "template": template},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}}),
        ("batch", "Job") => json!({"spec": {"completions": 1, "template": template,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}},
            "status": {"succeeded": 1, "startTime": ago(200), "completionTime": ago(100),
                "conditions": [{"type": "Complete", "status": "True"}]}}),
        ("batch", "CronJob") => json!({"spec": {"schedule": "*/5 * * * *", "suspend": false,
            "jobTemplate": {"spec": {"template": template}}},
            "status": {"active": [{"name": "j"}], "lastScheduleTime": ago(120)}}),
        ("coordination.k8s.io", "Lease") => json!({"spec": {"holderIdentity": "node-1"}}),
        ("policy", "PodDisruptionBudget") => json!({"spec": {"maxUnavailable": "25%"},
            "status": {"disruptionsAllowed": 1}}),
        ("", "PersistentVolume") => json!({"spec": {"capacity": {"storage": "1024Mi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "manual",
            "volumeMode": "Filesystem", "claimRef": {"namespace": "default", "name": "data"}},
            "status": {"phase": "Bound"}}),
        ("", "PersistentVolumeClaim") => json!({"spec": {"volumeName": "pv1",
            "storageClassName": "manual", "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "2Gi"},
                "accessModes": ["ReadWriteOnce"]}}),
        ("", "ResourceQuota") => json!({"spec": {"hard": {"pods": "2"}},
            "status": {"hard": {"pods": "2", "limits.cpu": "2", "requests.memory": "1Gi"},
                "used": {"pods": "1", "requests.memory": "536870912"}}}),
        ("storage.k8s.io", "StorageClass") => json!({"provisioner": "spindle.dev/local-path",
            "volumeBindingMode": "WaitForFirstConsumer"}),
        _ => json!({}),
    };
    if let Some(m) = o.as_object_mut() {
        m.insert("metadata".into(), meta);
    }
    o
}

fn pod_running() -> Value {
    json!({"metadata": {"name": "web", "creationTimestamp": ago(300)},
        "spec": {"nodeName": "n1", "containers": [{"name": "web"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": ago(290)}}}]}})
}

fn check_types(cols: &[Column], row: &[Value], what: &str) {
    assert_eq!(cols.len(), row.len(), "{what}: {row:?}");
    for (c, v) in cols.iter().zip(row) {
        match c.type_ {
            "integer" => assert!(v.is_i64() || v.is_u64(), "{what} {}: {v}", c.name),
            // kube-apiserver sends this "string" column's cell as the Go bool it is.
            _ if c.name == "AllowVolumeExpansion" => assert!(v.is_boolean(), "{what}: {v}"),
            _ => assert!(v.is_string(), "{what} {}: {v}", c.name),
        }
    }
}

#[test]
fn table_rows_match_columns_for_every_kind() {
    for (group, kind) in KINDS {
        let cols = columns(group, kind);
        assert_eq!(
            cols[0].name,
            if *kind == "Event" {
                "Last Seen"
            } else {
                "Name"
            }
        );
        let odd = json!({"metadata": 1, "spec": "s", "status": [], "subsets": {}, "ports": [1, null],
            "involvedObject": 3, "endpoints": [{"addresses": [7]}]});
        for obj in [
            json!({}),
            json!(null),
            json!([1]),
            odd,
            realistic(group, kind),
        ] {
            let row = cells(group, kind, &obj, now());
            check_types(cols, &row, &format!("{group}/{kind} {obj}"));
        }
    }
}

#[test]
fn table_realistic_rows() {
    let row = |g: &str, k: &str| cells(g, k, &realistic(g, k), now());
    assert_eq!(
        row("", "Pod"),
        vec![
            json!("x"),
            json!("1/1"),
            json!("Running"),
            json!("0"),
            json!("5m"),
            json!("10.1.0.5"),
            json!("n1"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    assert_eq!(row("apps", "Deployment")[1], json!("2/3"));
    assert_eq!(row("apps", "Deployment")[7], json!("app=web,tier in (a,b)"));
    assert_eq!(
        row("apps", "ReplicaSet")[1..4],
        [json!(3), json!(3), json!(2)]
    );
    assert_eq!(row("apps", "DaemonSet")[6], json!("kubernetes.io/os=linux"));
    let revision = json!({"metadata": {"name": "ds-5d8f", "creationTimestamp": ago(60),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds",
            "uid": "u", "controller": true}]}, "revision": 3, "data": {}});
    assert_eq!(
        cells("apps", "ControllerRevision", &revision, now()),
        [
            json!("ds-5d8f"),
            json!("daemonset.apps/ds"),
            json!(3),
            json!("60s")
        ]
    );
    assert_eq!(
        row("apps", "StatefulSet")[3..],
        [json!("web,log"), json!("nginx:1.25,busybox")]
    );
    assert_eq!(
        row("batch", "Job")[1..4],
        [json!("Complete"), json!("1/1"), json!("100s")]
    );
    assert_eq!(
        row("batch", "CronJob")[1..6],
        [
            json!("*/5 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("2m")
        ]
    );
    assert_eq!(row("", "ConfigMap")[1], json!(2));
    assert_eq!(row("", "Secret")[1..3], [json!("Opaque"), json!(1)]);
    assert_eq!(row("", "Endpoints")[1], json!("10.1.0.5:80"));
    assert_eq!(
        row("discovery.k8s.io", "EndpointSlice")[1..4],
        [json!("IPv4"), json!("80"), json!("10.1.0.5")]
    );
    assert_eq!(
        row("", "Node")[1..6],
        [
            json!("Ready"),
            json!("control-plane"),
            json!("5m"),
            json!("v1.33.0"),
            json!("10.0.0.2")
        ]
    );
    assert_eq!(row("", "Node")[6], json!("<none>"));
    assert_eq!(row("coordination.k8s.io", "Lease")[1], json!("node-1"));
    assert_eq!(
        row("policy", "PodDisruptionBudget"),
        vec![
            json!("x"),
            json!("N/A"),
            json!("25%"),
            json!(1),
            json!("5m")
        ]
    );
    assert_eq!(
        row("", "Event"),
        vec![
            json!("60s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web-1"),
            json!("spec.containers{web}"),
            json!("kubelet, n1"),
            json!("pulled"),
            json!("10m"),
            json!(3),
            json!("x")
        ]
    );
    let ev = row("events.k8s.io", "Event");
    assert_eq!(ev[0], json!("30s"));
    assert_eq!(ev[3], json!("pod/web-1"));
    assert_eq!(ev[5], json!("spindle-scheduler"));
    assert_eq!(ev[6], json!("assigned"));
    assert_eq!(ev[8], json!(1));
    assert_eq!(
        row("example.com", "Widget"),
        vec![json!("x"), json!(ago(300))]
    );
    assert_eq!(
        cells("x", "Y", &json!({}), now())[1],
        json!("0001-01-01T00:00:00Z")
    );
}

#[test]
fn table_storage_rows() {
    let row = |g: &str, k: &str| cells(g, k, &realistic(g, k), now());
    let names: Vec<&str> = columns("", "PersistentVolume")
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "Capacity",
            "Access Modes",
            "Reclaim Policy",
            "Status",
            "Claim",
            "StorageClass",
            "VolumeAttributesClass",
            "Reason",
            "Age",
            "VolumeMode"
        ]
    );
    assert_eq!(
        row("", "PersistentVolume"),
        [
            json!("x"),
            json!("1Gi"),
            json!("RWO,RWX"),
            json!("Retain"),
            json!("Bound"),
            json!("default/data"),
            json!("manual"),
            json!("<unset>"),
            json!(""),
            json!("5m"),
            json!("Filesystem")
        ]
    );
    assert_eq!(
        row("", "PersistentVolumeClaim"),
        [
            json!("x"),
            json!("Bound"),
            json!("pv1"),
            json!("2Gi"),
            json!("RWO"),
            json!("manual"),
            json!("<unset>"),
            json!("5m"),
            json!("<unset>")
        ]
    );
    // Unbound, a claim shows neither capacity nor access modes; deleted, it is Terminating.
    let pending = json!({"metadata": {"name": "c", "deletionTimestamp": ago(1)},
        "spec": {"resources": {"requests": {"storage": "1Gi"}}, "accessModes": ["ReadWriteOnce"]},
        "status": {"phase": "Pending"}});
    assert_eq!(
        cells("", "PersistentVolumeClaim", &pending, now())[1..5],
        [json!("Terminating"), json!(""), json!(""), json!("")]
    );
    let mut sc = realistic("storage.k8s.io", "StorageClass");
    sc["metadata"]["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "true"});
    assert_eq!(
        cells("storage.k8s.io", "StorageClass", &sc, now()),
        [
            json!("x (default)"),
            json!("spindle.dev/local-path"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false),
            json!("5m")
        ]
    );
}

fn pod_status(pod: Value) -> String {
    cells("", "Pod", &pod, now())[2]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pod_with(containers: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Pending", "containerStatuses": containers}})
}

#[test]
fn table_pod_status() {
    assert_eq!(pod_status(pod_running()), "Running");
    assert_eq!(
        pod_status(pod_with(json!([{"name": "c", "ready": false,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]))),
        "ContainerCreating"
    );
    let crash = pod_with(json!([{"name": "c", "ready": false, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(150)}}}]));
    assert_eq!(pod_status(crash.clone()), "CrashLoopBackOff");
    assert_eq!(cells("", "Pod", &crash, now())[3], json!("4 (2m30s ago)"));

    let mut done = pod_with(json!([{"name": "c", "ready": false,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]));
    done["status"]["phase"] = json!("Succeeded");
    assert_eq!(pod_status(done.clone()), "Completed");
    // A finished pod being deleted keeps its final status.
    done["metadata"]["deletionTimestamp"] = json!(ago(1));
    assert_eq!(pod_status(done), "Completed");

    assert_eq!(
        pod_status(pod_with(json!([{"name": "c",
            "state": {"terminated": {"exitCode": 137, "signal": 9}}}]))),
        "Signal:9"
    );
    assert_eq!(
        pod_status(pod_with(
            json!([{"name": "c", "state": {"terminated": {"exitCode": 2}}}])
        )),
        "ExitCode:2"
    );

    let init = json!({"metadata": {"name": "p"},
        "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "c"}]},
        "status": {"phase": "Pending",
            "initContainerStatuses": [{"name": "i", "state": {"running": {}}}],
            "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}]}});
    assert_eq!(pod_status(init.clone()), "Init:0/1");
    let mut init_crash = init.clone();
    init_crash["status"]["initContainerStatuses"][0]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff"}});
    assert_eq!(pod_status(init_crash), "Init:CrashLoopBackOff");
    let mut init_err = init;
    init_err["status"]["initContainerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 1, "reason": "Error"}});
    assert_eq!(pod_status(init_err), "Init:Error");

    let mut terminating = pod_running();
    terminating["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(pod_status(terminating.clone()), "Terminating");
    terminating["status"]["reason"] = json!("NodeLost");
    assert_eq!(pod_status(terminating), "Unknown");

    // One container done, another still serving: Running or NotReady by the Ready condition.
    let mut mixed = json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "b", "ready": true, "state": {"running": {}}}]}});
    assert_eq!(pod_status(mixed.clone()), "NotReady");
    mixed["status"]["conditions"][0]["status"] = json!("True");
    assert_eq!(pod_status(mixed.clone()), "Running");
    assert_eq!(cells("", "Pod", &mixed, now())[1], json!("1/2"));

    assert_eq!(
        pod_status(json!({"status": {"phase": "Pending"}})),
        "Pending"
    );
    assert_eq!(
        pod_status(json!({"status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}})),
        "SchedulingGated"
    );
}

#[test]
fn table_pod_sidecars_and_wide() {
    let pod = json!({"metadata": {"name": "p"},
        "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "c"}],
            "readinessGates": [{"conditionType": "example.com/lb"}]},
        "status": {"phase": "Running", "nominatedNodeName": "n2",
            "conditions": [{"type": "Ready", "status": "True"},
                {"type": "example.com/lb", "status": "True"}],
            "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true,
                "restartCount": 1, "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(3600)}}}],
            "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                "state": {"running": {}}}]}});
    let row = cells("", "Pod", &pod, now());
    assert_eq!(
        row[1..4],
        [json!("2/2"), json!("Running"), json!("1 (60m ago)")]
    );
    assert_eq!(
        row[5..],
        [json!("<none>"), json!("<none>"), json!("n2"), json!("1/1")]
    );
}

#[test]
fn table_node_status() {
    let node = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/role": "worker",
            "node-role.kubernetes.io/control-plane": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True"}]}});
    let row = cells("", "Node", &node, now());
    assert_eq!(row[1], json!("Ready,SchedulingDisabled"));
    assert_eq!(row[2], json!("control-plane,worker"));
    assert_eq!(
        row[7..],
        [json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
    );
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    assert_eq!(cells("", "Node", &not_ready, now())[1], json!("NotReady"));
    assert_eq!(
        cells("", "Node", &json!({}), now())[1..3],
        [json!("Unknown"), json!("<none>")]
    );
}

#[test]
fn table_service_ports_and_ips() {
    let svc = |spec: Value, status: Value| {
        cells(
            "",
            "Service",
            &json!({"metadata": {"name": "s"}, "spec": spec, "status": status}),
            now(),
        )
    };
    let row = svc(
        json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80, "protocol": "TCP"},
            {"port": 53, "protocol": "UDP"}, {"port": 443}]}),
        json!({}),
    );
    assert_eq!(
        row[1..5],
        [
            json!("ClusterIP"),
            json!("10.96.0.1"),
            json!("<none>"),
            json!("80/TCP,53/UDP,443/TCP")
        ]
    );
    assert_eq!(row[6], json!("<none>"));
    let row = svc(
        json!({"type": "NodePort", "clusterIPs": ["10.96.0.2"], "selector": {"b": "2", "a": "1"},
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
        json!({}),
    );
    assert_eq!(row[4], json!("80:30080/TCP"));
    assert_eq!(row[6], json!("a=1,b=2"));
    let row = svc(json!({"type": "LoadBalancer", "ports": []}), json!({}));
    assert_eq!(
        row[2..5],
        [json!("<none>"), json!("<pending>"), json!("<none>")]
    );
    let row = svc(
        json!({"type": "LoadBalancer", "externalIPs": ["1.1.1.1"]}),
        json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}),
    );
    assert_eq!(row[3], json!("5.6.7.8,lb.example.com,1.1.1.1"));
    let row = svc(
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
        json!({}),
    );
    assert_eq!(row[3], json!("db.example.com"));
}

#[test]
fn table_endpoints_truncate() {
    let eps = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"},
        {"ip": "fd00::3"}, {"ip": "10.0.0.4"}, {"ip": "10.0.0.5"}], "ports": [{"port": 80}]}]});
    assert_eq!(
        cells("", "Endpoints", &eps, now())[1],
        json!("10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 2 more...")
    );
    assert_eq!(
        cells("", "Endpoints", &json!({}), now())[1],
        json!("<none>")
    );
    let headless = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
    assert_eq!(
        cells("", "Endpoints", &headless, now())[1],
        json!("10.0.0.1")
    );
}

#[test]
fn table_event_from_the_new_api_through_core() {
    let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Node"},
        "firstTimestamp": null, "lastTimestamp": null, "eventTime": ago(45),
        "series": {"count": 4, "lastObservedTime": ago(10)},
        "reportingComponent": "", "reportingInstance": "n1", "source": {}});
    let row = cells("", "Event", &ev, now());
    assert_eq!(row[0], json!("10s"));
    assert_eq!(row[3], json!("node"));
    assert_eq!(row[5], json!(", n1"));
    assert_eq!(row[7..], [json!("45s"), json!(4), json!("e")]);
}

#[test]
fn table_job_status() {
    let job = |status: Value, spec: Value| {
        cells(
            "batch",
            "Job",
            &json!({"spec": spec, "status": status}),
            now(),
        )
    };
    let row = job(json!({"startTime": ago(30)}), json!({"parallelism": 3}));
    assert_eq!(
        row[1..4],
        [json!("Running"), json!("0/1 of 3"), json!("30s")]
    );
    let row = job(
        json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
        json!({"completions": 5}),
    );
    assert_eq!(row[1..4], [json!("Suspended"), json!("0/5"), json!("")]);
    let row = job(
        json!({"conditions": [{"type": "Failed", "status": "True"}]}),
        json!({}),
    );
    assert_eq!(row[1..3], [json!("Failed"), json!("0/1")]);
}

#[test]
fn table_human_age() {
    let at = |secs: i64| human_age(Some(&ago(secs)), now());
    assert_eq!(at(0), "0s");
    assert_eq!(at(-1), "0s");
    assert_eq!(at(-5), "<invalid>");
    assert_eq!(at(5), "5s");
    assert_eq!(at(119), "119s");
    assert_eq!(at(120), "2m");
    assert_eq!(at(150), "2m30s");
    assert_eq!(at(599), "9m59s");
    assert_eq!(at(600), "10m");
    assert_eq!(at(3 * 3600 - 1), "179m");
    assert_eq!(at(3 * 3600), "3h");
    assert_eq!(at(3 * 3600 + 25 * 60), "3h25m");
    assert_eq!(at(8 * 3600), "8h");
    assert_eq!(at(47 * 3600 + 59 * 60), "47h");
    assert_eq!(at(48 * 3600), "2d");
    assert_eq!(at(3 * 86400 + 5 * 3600), "3d5h");
    assert_eq!(at(8 * 86400), "8d");
    assert_eq!(at(400 * 86400), "400d");
    assert_eq!(at(2 * 365 * 86400), "2y");
    assert_eq!(at(3 * 365 * 86400 + 10 * 86400), "3y10d");
    assert_eq!(at(9 * 365 * 86400), "9y");
    assert_eq!(human_age(None, now()), "<unknown>");
    assert_eq!(human_age(Some(""), now()), "<unknown>");
    assert_eq!(human_age(Some("yesterday"), now()), "<unknown>");
    assert_eq!(human_age(Some("2024-05-01T11:59:58.500000Z"), now()), "1s");
}

#[test]
fn table_columns_serialize_like_the_apiserver() {
    let cols = serde_json::to_value(columns("", "Pod")).unwrap_or_default();
    assert_eq!(cols[0]["name"], json!("Name"));
    assert_eq!(cols[0]["type"], json!("string"));
    assert_eq!(cols[0]["format"], json!("name"));
    assert_eq!(cols[5]["priority"], json!(1));
    let default = columns("example.com", "Widget");
    assert_eq!(default[1].name, "Created At");
    assert_eq!(default[1].type_, "date");
}

#[test]
fn table_replication_controller_columns_are_kube_apiservers() {
    let names: Vec<(&str, i32)> = columns("", "ReplicationController")
        .iter()
        .map(|c| (c.name, c.priority))
        .collect();
    assert_eq!(
        names,
        [
            ("Name", 0),
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1)
        ]
    );
    // No selector at all prints as <none>, and a missing replicas count as the default 1.
    let row = cells(
        "",
        "ReplicationController",
        &json!({"metadata": {"name": "rc"}}),
        now(),
    );
    assert_eq!(row[1], json!(1));
    assert_eq!(row[7], json!("<none>"));
}

#[test]
fn table_printers_come_with_their_registry_entries() {
    let reg = crate::Registry::new();
    for k in reg.kinds() {
        assert!(
            std::ptr::eq(k.printer, printer(k.group, k.kind)),
            "{}/{} is registered with another printer",
            k.group,
            k.kind
        );
    }
}

#[test]
fn bindings_print_their_role_and_subjects_by_kind() {
    let names: Vec<&str> = columns("rbac.authorization.k8s.io", "RoleBinding")
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
    );
    let b = json!({
        "metadata": {"name": "b", "namespace": "dev"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [
            {"kind": "User", "name": "jane"}, {"kind": "User", "name": "joe"},
            {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "name": "robot", "namespace": "ci"},
            {"kind": "ServiceAccount", "name": "bare"}
        ]
    });
    let row = cells("rbac.authorization.k8s.io", "ClusterRoleBinding", &b, now());
    assert_eq!(row[1], json!("ClusterRole/view"));
    assert_eq!(
        &row[3..],
        [json!("jane, joe"), json!("devs"), json!("ci/robot, bare")]
    );
    let empty = cells(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        &json!({"metadata": {"name": "e"}}),
        now(),
    );
    assert_eq!(&empty[3..], [json!(""), json!(""), json!("")]);
    let role: Vec<&str> = columns("rbac.authorization.k8s.io", "Role")
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(role, ["Name", "Created At"]);
}

#[test]
fn csr_rows_show_signer_requestor_duration_and_condition_as_kubectl_does() {
    let csr = |spec: serde_json::Value, status: serde_json::Value| {
        cells(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &json!({"metadata": {"name": "c"}, "spec": spec, "status": status}),
            now(),
        )
    };
    let pending = csr(
        json!({"signerName": "example.com/x", "username": "jane"}),
        json!({}),
    );
    assert_eq!(
        pending[2..],
        [
            json!("example.com/x"),
            json!("jane"),
            json!("<none>"),
            json!("Pending")
        ]
    );
    let issued = csr(
        json!({"expirationSeconds": 86400}),
        json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"}),
    );
    assert_eq!(
        issued[2..],
        [
            json!("<none>"),
            json!(""),
            json!("24h"),
            json!("Approved,Issued")
        ]
    );
    // Denied wins over Approved; Failed is added.
    let both = csr(
        json!({"expirationSeconds": 600}),
        json!({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}, {"type": "Failed", "status": "True"}]}),
    );
    assert_eq!(both[4..], [json!("10m"), json!("Denied,Failed")]);
}

/// kubectl's `pods: 1/2` cells: requests and counts apart from limits, names sorted,
/// quantities in canonical form, an absent usage as 0.
#[test]
fn resource_quota_cells_show_used_over_hard() {
    let row = cells("", "ResourceQuota", &realistic("", "ResourceQuota"), now());
    assert_eq!(row[1], json!("5m"));
    assert_eq!(row[2], json!("pods: 1/2, requests.memory: 536870912/1Gi"));
    assert_eq!(row[3], json!("limits.cpu: 0/2"));
    let empty = cells(
        "",
        "ResourceQuota",
        &json!({"metadata": {"name": "q"}}),
        now(),
    );
    assert_eq!(empty[2], json!(""));
}

#[test]
fn priority_classes_print_value_default_and_policy() {
    let names: Vec<&str> = columns("scheduling.k8s.io", "PriorityClass")
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"]
    );
    let pc = json!({"metadata": {"name": "high"}, "value": 1000,
        "preemptionPolicy": "PreemptLowerPriority"});
    let row = cells("scheduling.k8s.io", "PriorityClass", &pc, now());
    assert_eq!(
        [&row[0], &row[1], &row[2], &row[4]],
        [
            &json!("high"),
            &json!(1000),
            &json!(false),
            &json!("PreemptLowerPriority")
        ]
    );
}

#[test]
fn hpas_print_current_and_target_of_their_first_two_metrics() {
    let names: Vec<&str> = columns("autoscaling", "HorizontalPodAutoscaler")
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "Reference",
            "Targets",
            "MinPods",
            "MaxPods",
            "Replicas",
            "Age"
        ]
    );
    let cpu = json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 50}}});
    let mem = json!({"type": "Resource", "resource": {"name": "memory",
        "target": {"type": "AverageValue", "averageValue": "51200Ki"}}});
    let pods = json!({"type": "Pods", "pods": {"metric": {"name": "rps"},
        "target": {"type": "AverageValue", "averageValue": "10"}}});
    let hpa = json!({"metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
            "maxReplicas": 4, "metrics": [cpu, mem, pods]},
        "status": {"currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageValue": "20m", "averageUtilization": 40}}}]}});
    let row = cells("autoscaling", "HorizontalPodAutoscaler", &hpa, now());
    assert_eq!(
        row[..6],
        [
            json!("web"),
            json!("Deployment/web"),
            json!("cpu: 40%/50%, memory: <unknown>/50Mi + 1 more..."),
            json!("1"),
            json!(4),
            json!(2)
        ]
    );
    let bare = json!({"metadata": {"name": "x"}, "spec": {"maxReplicas": 1}});
    let row = cells("autoscaling", "HorizontalPodAutoscaler", &bare, now());
    assert_eq!([&row[2], &row[3]], [&json!("<none>"), &json!("<unset>")]);
}
