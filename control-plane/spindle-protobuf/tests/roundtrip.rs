//! Round-trip tests: build the typed k8s-pb message, wrap it in the `k8s\0`
//! envelope the way client-go does, decode, and check the JSON.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;
use spindle_protobuf::{decode, is_protobuf, DecodeError};

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(raw),
        // gogo always writes these non-pointer strings, empty.
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    unknown.encode(&mut body).expect("encode envelope");
    body
}

fn roundtrip<M: Message>(api_version: &str, kind: &str, msg: &M) -> serde_json::Value {
    decode(&envelope(api_version, kind, msg.encode_to_vec())).expect("decode")
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn smap(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// ObjectMeta as gogo writes it: every non-pointer field present, zero or not,
/// and the Go zero time for `creationTimestamp`.
fn gogo_meta(name: &str, namespace: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(namespace),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time {
            seconds: Some(-62_135_596_800),
            nanos: Some(0),
        }),
        ..Default::default()
    }
}

fn qty(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn int_port(n: i32) -> IntOrString {
    IntOrString {
        r#type: Some(0),
        int_val: Some(n),
        str_val: s(""),
    }
}

fn str_port(v: &str) -> IntOrString {
    IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(v),
    }
}

#[test]
fn content_type_detection() {
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(is_protobuf(
        "application/vnd.kubernetes.protobuf; charset=utf-8"
    ));
    assert!(is_protobuf(
        "Application/VND.Kubernetes.Protobuf;stream=watch"
    ));
    assert!(!is_protobuf("application/json"));
    assert!(!is_protobuf("application/vnd.kubernetes.protobuf+json"));
    assert!(!is_protobuf(""));
}

/// Hand-assembled bytes in the shape of kubectl's
/// `create configmap c2 --from-literal=k=v` body, independent of prost's
/// encoder: magic, Unknown{typeMeta{"v1","ConfigMap"}, raw, "", ""}.
#[test]
fn handwritten_configmap_envelope() {
    let mut body = b"k8s\0".to_vec();
    body.extend_from_slice(&[0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09]);
    body.extend_from_slice(b"ConfigMap");
    // raw: metadata{name:"c2"} + data entry {k: v}
    let raw = [
        0x0a, 0x04, 0x0a, 0x02, b'c', b'2', 0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v',
    ];
    body.extend_from_slice(&[0x12, raw.len() as u8]);
    body.extend_from_slice(&raw);
    body.extend_from_slice(&[0x1a, 0x00, 0x22, 0x00]);

    let v = decode(&body).expect("decode");
    assert_eq!(
        v,
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c2"},"data":{"k":"v"}})
    );
    // apiVersion and kind come first, as in the JSON kubectl would send.
    let keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
    assert_eq!(&keys[..2], ["apiVersion", "kind"]);
}

#[test]
fn configmap_with_binary_data_and_gogo_zero_meta() {
    let mut md = gogo_meta("cfg", "default");
    md.labels = smap(&[("app", "web")]);
    md.annotations = smap(&[("note", "")]);
    let cm = core::ConfigMap {
        metadata: Some(md),
        immutable: None,
        data: smap(&[("a", "1"), ("empty", "")]),
        binary_data: [("bin".to_owned(), vec![0u8, 1, 2, 255])].into(),
    };
    let v = roundtrip("v1", "ConfigMap", &cm);
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "cfg",
                "namespace": "default",
                "labels": {"app": "web"},
                "annotations": {"note": ""}
            },
            "data": {"a": "1", "empty": ""},
            "binaryData": {"bin": "AAEC/w=="}
        })
    );
}

#[test]
fn secret_fields() {
    let secret = core::Secret {
        metadata: Some(gogo_meta("s1", "ns")),
        immutable: Some(false),
        data: [("password".to_owned(), b"hunter2".to_vec())].into(),
        string_data: smap(&[("user", "admin")]),
        r#type: s("Opaque"),
    };
    let v = roundtrip("v1", "Secret", &secret);
    assert_eq!(v["data"]["password"], "aHVudGVyMg==");
    assert_eq!(v["stringData"]["user"], "admin");
    assert_eq!(v["type"], "Opaque");
    // A pointer bool: false was set explicitly and must survive.
    assert_eq!(v["immutable"], false);
    assert_eq!(v["metadata"], json!({"name": "s1", "namespace": "ns"}));
}

#[test]
fn namespace_and_service_account() {
    let ns = core::Namespace {
        metadata: Some(gogo_meta("team-a", "")),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus {
            phase: s(""),
            conditions: vec![],
        }),
    };
    let v = roundtrip("v1", "Namespace", &ns);
    assert_eq!(
        v,
        json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team-a"},"spec":{},"status":{}})
    );

    let sa = core::ServiceAccount {
        metadata: Some(gogo_meta("robot", "default")),
        secrets: vec![],
        image_pull_secrets: vec![core::LocalObjectReference { name: s("regcred") }],
        automount_service_account_token: Some(false),
    };
    let v = roundtrip("v1", "ServiceAccount", &sa);
    assert_eq!(v["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(v["automountServiceAccountToken"], false);
    assert!(v.get("secrets").is_none());
}

#[test]
fn service_ports_with_int_and_string_target_ports() {
    let svc = core::Service {
        metadata: Some(gogo_meta("web", "default")),
        spec: Some(core::ServiceSpec {
            ports: vec![
                core::ServicePort {
                    name: s("http"),
                    protocol: s("TCP"),
                    port: Some(80),
                    target_port: Some(int_port(8080)),
                    node_port: Some(0),
                    ..Default::default()
                },
                core::ServicePort {
                    name: s("metrics"),
                    protocol: s("TCP"),
                    port: Some(9090),
                    target_port: Some(str_port("metrics")),
                    node_port: Some(0),
                    ..Default::default()
                },
            ],
            selector: smap(&[("app", "web")]),
            cluster_ip: s("None"),
            r#type: s("ClusterIP"),
            session_affinity: s(""),
            external_name: s(""),
            health_check_node_port: Some(0),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus::default()),
    };
    let v = roundtrip("v1", "Service", &svc);
    assert_eq!(
        v["spec"],
        json!({
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": "metrics"}
            ],
            "selector": {"app": "web"},
            "clusterIP": "None",
            "type": "ClusterIP"
        })
    );
    assert!(v.get("status").is_none());
}

fn sample_container() -> core::Container {
    core::Container {
        name: s("app"),
        image: s("nginx:1.27"),
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec!["echo hi".into()],
        working_dir: s(""),
        ports: vec![core::ContainerPort {
            name: s(""),
            host_port: Some(0),
            container_port: Some(80),
            protocol: s("TCP"),
            host_ip: s(""),
        }],
        env_from: vec![
            core::EnvFromSource {
                prefix: s("CFG_"),
                config_map_ref: Some(core::ConfigMapEnvSource {
                    local_object_reference: Some(core::LocalObjectReference { name: s("cfg") }),
                    optional: None,
                }),
                secret_ref: None,
            },
            core::EnvFromSource {
                prefix: s(""),
                config_map_ref: None,
                secret_ref: Some(core::SecretEnvSource {
                    local_object_reference: Some(core::LocalObjectReference { name: s("sec") }),
                    optional: Some(true),
                }),
            },
        ],
        env: vec![
            core::EnvVar {
                name: s("PLAIN"),
                value: s("x"),
                value_from: None,
            },
            core::EnvVar {
                name: s("FROM_CM"),
                value: s(""),
                value_from: Some(core::EnvVarSource {
                    config_map_key_ref: Some(core::ConfigMapKeySelector {
                        local_object_reference: Some(core::LocalObjectReference { name: s("cfg") }),
                        key: s("a"),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
            core::EnvVar {
                name: s("FROM_SECRET"),
                value: s(""),
                value_from: Some(core::EnvVarSource {
                    secret_key_ref: Some(core::SecretKeySelector {
                        local_object_reference: Some(core::LocalObjectReference { name: s("sec") }),
                        key: s("password"),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            },
            core::EnvVar {
                name: s("POD_NAME"),
                value: s(""),
                value_from: Some(core::EnvVarSource {
                    field_ref: Some(core::ObjectFieldSelector {
                        api_version: s("v1"),
                        field_path: s("metadata.name"),
                    }),
                    ..Default::default()
                }),
            },
        ],
        resources: Some(core::ResourceRequirements {
            limits: [
                ("cpu".to_owned(), qty("500m")),
                ("memory".to_owned(), qty("128Mi")),
            ]
            .into(),
            requests: [("cpu".to_owned(), qty("250m"))].into(),
            claims: vec![],
        }),
        volume_mounts: vec![core::VolumeMount {
            name: s("data"),
            read_only: Some(false),
            mount_path: s("/data"),
            sub_path: s(""),
            sub_path_expr: s(""),
            ..Default::default()
        }],
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: Some(str_port("http")),
                    host: s(""),
                    scheme: s("HTTP"),
                    http_headers: vec![],
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(0),
            timeout_seconds: Some(1),
            period_seconds: Some(10),
            success_threshold: Some(1),
            failure_threshold: Some(3),
            termination_grace_period_seconds: None,
        }),
        termination_message_path: s("/dev/termination-log"),
        termination_message_policy: s("File"),
        image_pull_policy: s("IfNotPresent"),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

fn sample_pod_spec() -> core::PodSpec {
    core::PodSpec {
        volumes: vec![
            core::Volume {
                name: s("data"),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource {
                        medium: s(""),
                        size_limit: Some(qty("1Gi")),
                    }),
                    ..Default::default()
                }),
            },
            core::Volume {
                name: s("cfg"),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference { name: s("cfg") }),
                        items: vec![core::KeyToPath {
                            key: s("a"),
                            path: s("a.txt"),
                            mode: None,
                        }],
                        default_mode: Some(0o644),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
            core::Volume {
                name: s("sec"),
                volume_source: Some(core::VolumeSource {
                    secret: Some(core::SecretVolumeSource {
                        secret_name: s("sec"),
                        items: vec![],
                        default_mode: Some(420),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
            core::Volume {
                name: s("host"),
                volume_source: Some(core::VolumeSource {
                    host_path: Some(core::HostPathVolumeSource {
                        path: s("/var/log"),
                        r#type: s("Directory"),
                    }),
                    ..Default::default()
                }),
            },
        ],
        init_containers: vec![core::Container {
            name: s("init"),
            image: s("busybox"),
            ..Default::default()
        }],
        containers: vec![sample_container()],
        restart_policy: s("Always"),
        termination_grace_period_seconds: Some(30),
        dns_policy: s("ClusterFirst"),
        node_selector: smap(&[("disk", "ssd")]),
        service_account_name: s("robot"),
        service_account: s(""),
        node_name: s(""),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        security_context: Some(core::PodSecurityContext::default()),
        hostname: s(""),
        subdomain: s(""),
        scheduler_name: s("default-scheduler"),
        priority_class_name: s(""),
        tolerations: vec![core::Toleration {
            key: s("dedicated"),
            operator: s("Exists"),
            value: s(""),
            effect: s("NoSchedule"),
            toleration_seconds: None,
        }],
        ..Default::default()
    }
}

#[test]
fn deployment_full_template() {
    let mut template_meta = gogo_meta("", "");
    template_meta.labels = smap(&[("app", "web")]);
    let deploy = apps::Deployment {
        metadata: Some(gogo_meta("web", "default")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: smap(&[("app", "web")]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: vec!["fe".into(), "be".into()],
                }],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(sample_pod_spec()),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: Some(str_port("25%")),
                    max_surge: Some(int_port(1)),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(10),
            paused: Some(false),
            progress_deadline_seconds: Some(600),
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let v = roundtrip("apps/v1", "Deployment", &deploy);
    assert_eq!(v["apiVersion"], "apps/v1");
    assert_eq!(v["kind"], "Deployment");
    assert!(v.get("status").is_none());

    let spec = &v["spec"];
    // A pointer int: an explicit 0 replicas must not be lost.
    assert_eq!(spec["replicas"], 0);
    assert!(spec.get("minReadySeconds").is_none());
    assert!(spec.get("paused").is_none());
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"app": "web"},
               "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]})
    );
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}})
    );
    assert_eq!(
        spec["template"]["metadata"],
        json!({"labels": {"app": "web"}})
    );

    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(pod["serviceAccountName"], "robot");
    assert_eq!(pod["nodeSelector"], json!({"disk": "ssd"}));
    assert_eq!(pod["securityContext"], json!({}));
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}])
    );
    for absent in [
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "nodeName",
        "hostname",
        "serviceAccount",
    ] {
        assert!(pod.get(absent).is_none(), "{absent} should be omitted");
    }
    assert_eq!(
        pod["initContainers"],
        json!([{"name": "init", "image": "busybox"}])
    );

    // Inline volume sources are flattened into the Volume object.
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "a.txt"}], "defaultMode": 420}},
            {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 420}},
            {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}}
        ])
    );

    let c = &pod["containers"][0];
    assert_eq!(c["image"], "nginx:1.27");
    assert_eq!(
        *c,
        json!({
            "name": "app",
            "image": "nginx:1.27",
            "command": ["/bin/sh", "-c"],
            "args": ["echo hi"],
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "envFrom": [
                {"prefix": "CFG_", "configMapRef": {"name": "cfg"}},
                {"secretRef": {"name": "sec", "optional": true}}
            ],
            "env": [
                {"name": "PLAIN", "value": "x"},
                {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password", "optional": false}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}
            ],
            "resources": {
                "limits": {"cpu": "500m", "memory": "128Mi"},
                "requests": {"cpu": "250m"}
            },
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "livenessProbe": {
                "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                "timeoutSeconds": 1,
                "periodSeconds": 10,
                "successThreshold": 1,
                "failureThreshold": 3
            },
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent"
        })
    );
}

fn sample_job_spec() -> batch::JobSpec {
    batch::JobSpec {
        parallelism: Some(2),
        completions: Some(4),
        backoff_limit: Some(6),
        template: Some(core::PodTemplateSpec {
            metadata: Some(gogo_meta("", "")),
            spec: Some(core::PodSpec {
                containers: vec![core::Container {
                    name: s("job"),
                    image: s("busybox"),
                    command: vec!["date".into()],
                    ..Default::default()
                }],
                restart_policy: s("Never"),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

#[test]
fn job_spec() {
    let job = batch::Job {
        metadata: Some(gogo_meta("pi", "default")),
        spec: Some(sample_job_spec()),
        status: None,
    };
    let v = roundtrip("batch/v1", "Job", &job);
    assert_eq!(v["apiVersion"], "batch/v1");
    assert_eq!(
        v["spec"],
        json!({
            "parallelism": 2,
            "completions": 4,
            "backoffLimit": 6,
            "template": {
                "metadata": {},
                "spec": {
                    "containers": [{"name": "job", "image": "busybox", "command": ["date"]}],
                    "restartPolicy": "Never"
                }
            }
        })
    );
}

#[test]
fn cronjob_spec() {
    let cj = batch::CronJob {
        metadata: Some(gogo_meta("nightly", "default")),
        spec: Some(batch::CronJobSpec {
            schedule: s("0 3 * * *"),
            concurrency_policy: s(""),
            suspend: Some(false),
            job_template: Some(batch::JobTemplateSpec {
                metadata: Some(gogo_meta("nightly", "")),
                spec: Some(sample_job_spec()),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let v = roundtrip("batch/v1", "CronJob", &cj);
    assert_eq!(v["spec"]["schedule"], "0 3 * * *");
    assert_eq!(v["spec"]["suspend"], false);
    assert!(v["spec"].get("concurrencyPolicy").is_none());
    assert_eq!(
        v["spec"]["jobTemplate"]["metadata"],
        json!({"name": "nightly"})
    );
    assert_eq!(
        v["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
}

#[test]
fn delete_options_any_group_version() {
    let opts = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("1234"),
            resource_version: None,
        }),
        orphan_dependents: None,
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ignore_store_read_error_with_cluster_breaking_potential: None,
    };
    for api_version in ["v1", "meta.k8s.io/v1", "apps/v1"] {
        let v = roundtrip(api_version, "DeleteOptions", &opts);
        assert_eq!(
            v,
            json!({
                "apiVersion": api_version,
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "1234"},
                "propagationPolicy": "Foreground",
                "dryRun": ["All"]
            })
        );
    }
}

#[test]
fn eviction_with_delete_options() {
    let ev = policy::Eviction {
        metadata: Some(gogo_meta("web-abc", "default")),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(30),
            ..Default::default()
        }),
    };
    let v = roundtrip("policy/v1", "Eviction", &ev);
    assert_eq!(
        v,
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "web-abc", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 30}
        })
    );
}

#[test]
fn metadata_timestamps_owner_refs_and_managed_fields() {
    let md = meta::ObjectMeta {
        name: s("x"),
        uid: s("u-1"),
        resource_version: s("42"),
        generation: Some(3),
        creation_timestamp: Some(meta::Time {
            seconds: Some(1_704_164_705), // 2024-01-02T03:05:05Z
            nanos: Some(0),
        }),
        owner_references: vec![meta::OwnerReference {
            api_version: s("apps/v1"),
            kind: s("ReplicaSet"),
            name: s("web-1"),
            uid: s("rs-uid"),
            controller: Some(true),
            block_owner_deletion: None,
        }],
        finalizers: vec!["example.com/keep".into()],
        managed_fields: vec![meta::ManagedFieldsEntry {
            manager: s("kubectl"),
            operation: s("Update"),
            api_version: s("v1"),
            time: Some(meta::Time {
                seconds: Some(1_704_164_705),
                nanos: Some(0),
            }),
            fields_type: s("FieldsV1"),
            fields_v1: Some(meta::FieldsV1 {
                raw: Some(br#"{"f:data":{"f:a":{}}}"#.to_vec()),
            }),
            subresource: s(""),
        }],
        ..Default::default()
    };
    let cm = core::ConfigMap {
        metadata: Some(md),
        ..Default::default()
    };
    let v = roundtrip("v1", "ConfigMap", &cm);
    assert_eq!(
        v["metadata"],
        json!({
            "name": "x",
            "uid": "u-1",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2024-01-02T03:05:05Z",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs-uid", "controller": true}],
            "finalizers": ["example.com/keep"],
            "managedFields": [{
                "manager": "kubectl",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2024-01-02T03:05:05Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:a": {}}}
            }]
        })
    );
}

#[test]
fn unsupported_kind_is_named() {
    let body = envelope("networking.k8s.io/v1", "Ingress", vec![]);
    let err = decode(&body).expect_err("Ingress is not covered");
    assert!(err.is_unsupported());
    assert!(matches!(err, DecodeError::Unsupported { ref kind, .. } if kind == "Ingress"));
    assert_eq!(
        err.to_string(),
        "protobuf bodies of kind Ingress (networking.k8s.io/v1) are not supported; send JSON"
    );
}

#[test]
fn unsupported_volume_source_is_refused() {
    let pod = core::Pod {
        metadata: Some(gogo_meta("p", "default")),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: s("c"),
                ..Default::default()
            }],
            volumes: vec![core::Volume {
                name: s("nfs"),
                volume_source: Some(core::VolumeSource {
                    nfs: Some(core::NfsVolumeSource {
                        server: s("10.0.0.1"),
                        path: s("/export"),
                        read_only: Some(false),
                    }),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        status: None,
    };
    let err = decode(&envelope("v1", "Pod", pod.encode_to_vec())).expect_err("nfs");
    assert!(matches!(err, DecodeError::UnsupportedField { .. }));
    assert!(err.is_unsupported());
}

#[test]
fn malformed_bodies_are_errors() {
    assert!(matches!(
        decode(b"{\"kind\":\"ConfigMap\"}"),
        Err(DecodeError::MissingMagic)
    ));
    assert!(matches!(decode(b"k8s"), Err(DecodeError::MissingMagic)));
    // Truncated length-delimited field inside the envelope.
    assert!(matches!(
        decode(b"k8s\0\x0a\x7f\x0a"),
        Err(DecodeError::Envelope(_))
    ));
    // Envelope without a kind.
    assert!(matches!(
        decode(&envelope("v1", "", vec![])),
        Err(DecodeError::MissingKind)
    ));
    // A valid envelope whose raw payload is garbage.
    let err = decode(&envelope("v1", "ConfigMap", vec![0x0a, 0xff, 0xff])).expect_err("garbage");
    assert!(matches!(err, DecodeError::Object { ref kind, .. } if kind == "ConfigMap"));
    assert!(!err.is_unsupported());
    // Compressed payloads are not handled.
    let mut unknown = Unknown::decode(&envelope("v1", "ConfigMap", vec![])[4..]).expect("env");
    unknown.content_encoding = s("gzip");
    let mut body = b"k8s\0".to_vec();
    unknown.encode(&mut body).expect("encode");
    assert!(matches!(
        decode(&body),
        Err(DecodeError::ContentEncoding(_))
    ));
    // Invalid FieldsV1 JSON.
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            managed_fields: vec![meta::ManagedFieldsEntry {
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(b"{not json".to_vec()),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())),
        Err(DecodeError::InvalidField { .. })
    ));
}
