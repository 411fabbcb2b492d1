//! Validation and defaulting through the registry's strategies, as the API server
//! runs them.

use serde_json::{json, Value};

use super::*;
use crate::Registry;

/// The registry's entry for `kind`.
fn kind(kind: &str) -> crate::Kind {
    let reg = Registry::new();
    match reg.kinds().iter().find(|k| k.kind == kind) {
        Some(k) => k.clone(),
        None => panic!("no kind {kind}"),
    }
}

/// Validate an object of `kind` as the API server does.
fn validate(kind_name: &str, namespaced: bool, obj: &Value) -> Vec<FieldError> {
    let k = kind(kind_name);
    assert_eq!(k.namespaced, namespaced);
    k.validate(obj)
}

fn default_object(kind_name: &str, obj: &mut Value) {
    kind(kind_name).default_object(obj);
}

#[test]
fn quantities() {
    let rejected = |q: &str| {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"limits": {"memory": q}}}]}});
        validate("Pod", true, &pod)
            .iter()
            .any(|e| e.field == "spec.containers[0].resources.limits[memory]")
    };
    for ok in [
        "1", "100m", "1.5Gi", "128Mi", "0.5", "1e3", "2E-2", ".5", "+1k",
    ] {
        assert!(!rejected(ok), "{ok}");
    }
    for bad in ["", "lots", "1Gb", "1.2.3", "Mi", "1 Gi", "e3", "-1Gi"] {
        assert!(rejected(bad), "{bad}");
    }
}

#[test]
fn volume_sources_and_host_paths() {
    let pod = |vols: Value| json!({"metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"c","image":"i"}],"volumes":vols}});
    let errs = validate(
        "Pod",
        true,
        &pod(json!([{"name":"x","hostPath":{"path":"/srv"},"configMap":{"name":"c"}}])),
    );
    let shown: Vec<String> = errs.iter().map(FieldError::display).collect();
    assert_eq!(
        shown,
        ["spec.volumes[0].configMap: Forbidden: may not specify more than 1 volume type"]
    );
    let errs = validate(
        "Pod",
        true,
        &pod(json!([{"name":"x","hostPath":{"path":"/a/../etc","type":"Bogus"}}])),
    );
    let shown: Vec<String> = errs.iter().map(FieldError::display).collect();
    assert_eq!(shown, [
        "spec.volumes[0].hostPath.path: Invalid value: \"/a/../etc\": must not contain '..'",
        "spec.volumes[0].hostPath.type: Unsupported value: \"Bogus\": supported values: \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \"File\", \"FileOrCreate\", \"Socket\"",
    ]);
    let ok = pod(
        json!([{"name":"x","hostPath":{"path":"/srv/..data","type":"DirectoryOrCreate"}},{"name":"y","emptyDir":{},"hostPath":null}]),
    );
    assert!(validate("Pod", true, &ok).is_empty());
}

#[test]
fn service_ports_and_cluster_ips() {
    let svc = json!({"metadata":{"name":"s","namespace":"default"},"spec":{"ports":[
        {"name":"a","port":53,"protocol":"UDP"},{"name":"b","port":53,"protocol":"TCP"},{"name":"c","port":53,"protocol":"UDP"}]}});
    let shown: Vec<String> = validate("Service", true, &svc)
        .iter()
        .map(FieldError::display)
        .collect();
    assert_eq!(shown, ["spec.ports[2]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"UDP\", AppProtocol:(*string)(nil), Port:53, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}"]);

    let old = json!({"spec":{"clusterIP":"10.43.0.5","clusterIPs":["10.43.0.5"]}});
    assert!(validate_service_update(&old, &old).is_empty());
    let moved = json!({"spec":{"clusterIP":"8.8.8.8","clusterIPs":["8.8.8.8"]}});
    let shown: Vec<String> = validate_service_update(&old, &moved)
        .iter()
        .map(FieldError::display)
        .collect();
    assert_eq!(
        shown,
        ["spec.clusterIPs[0]: Invalid value: []string{\"8.8.8.8\"}: may not change once set"]
    );
    let only_single = json!({"spec":{"clusterIP":"8.8.8.8","clusterIPs":["10.43.0.5"]}});
    assert_eq!(validate_service_update(&old, &only_single).len(), 1);
    let external = json!({"spec":{"type":"ExternalName","externalName":"x.example"}});
    assert!(validate_service_update(&old, &external).is_empty());
}

#[test]
fn names() {
    assert!(is_dns1123_subdomain("web.example-1"));
    assert!(!is_dns1123_subdomain("Web"));
    assert!(!is_dns1123_label("a.b"));
    assert!(is_qualified_name("app.kubernetes.io/name"));
    assert!(!is_qualified_name("-bad"));
}

#[test]
fn selector_must_match_template() {
    let d = json!({"metadata":{"name":"web","namespace":"default"},"spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"other"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}});
    let errs = validate("Deployment", true, &d);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "spec.template.metadata.labels");
    assert!(errs[0]
        .message
        .contains("`selector` does not match template `labels`"));
}

/// An empty selector would select every pod of the namespace; kube-apiserver names the
/// kind in its message (and says "deployment" for a ReplicaSet too).
#[test]
fn empty_selectors_name_the_kind() {
    for (kind_name, word) in [
        ("Deployment", "deployment"),
        ("ReplicaSet", "deployment"),
        ("DaemonSet", "daemonset"),
        ("StatefulSet", "statefulset"),
    ] {
        let obj = json!({"metadata":{"name":"web","namespace":"default"},"spec":{"serviceName":"web","selector":{},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}});
        let errs = validate(kind_name, true, &obj);
        let want = format!("empty selector is invalid for {word}");
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.selector" && e.message.ends_with(&want)),
            "{kind_name}: {errs:?}"
        );
    }
}

#[test]
fn disruption_budgets() {
    let pdb =
        |spec: Value| json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
    let fields = |spec: Value| -> Vec<String> {
        validate("PodDisruptionBudget", true, &pdb(spec))
            .into_iter()
            .map(|e| e.field)
            .collect()
    };
    for ok in [
        json!({"minAvailable": 2}),
        json!({"maxUnavailable": "25%"}),
        json!({"minAvailable": "100%", "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
        json!({}),
    ] {
        assert!(fields(ok.clone()).is_empty(), "{ok}");
    }
    assert_eq!(
        fields(json!({"minAvailable": 1, "maxUnavailable": 1})),
        ["spec"]
    );
    assert_eq!(fields(json!({"minAvailable": -1})), ["spec.minAvailable"]);
    assert_eq!(
        fields(json!({"maxUnavailable": "120%"})),
        ["spec.maxUnavailable"]
    );
    assert_eq!(
        fields(json!({"maxUnavailable": "half"})),
        ["spec.maxUnavailable"]
    );
    assert_eq!(
        fields(json!({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Sometimes"})),
        ["spec.unhealthyPodEvictionPolicy"]
    );
}

#[test]
fn placement_rules() {
    let p = |spec: Value| {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "x"}]);
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    };
    let fields = |spec: Value| -> Vec<String> {
        validate("Pod", true, &p(spec))
            .into_iter()
            .map(|e| e.field)
            .collect()
    };
    let ok = json!({
        "affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}, "topologyKey": "kubernetes.io/hostname"}],
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {"topologyKey": "zone"}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2}]
    });
    assert!(fields(ok).is_empty());
    let bad = json!({
        "affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}],
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "podAffinityTerm": {"topologyKey": "zone"}}]}},
        "topologySpreadConstraints": [
            {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
            {"maxSkew": 1, "topologyKey": "", "whenUnsatisfiable": "Later", "minDomains": 1, "nodeTaintsPolicy": "Sometimes"}]
    });
    assert_eq!(
        fields(bad),
        [
            "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
            "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
            "spec.topologySpreadConstraints[0].maxSkew",
            "spec.topologySpreadConstraints[1].{topologyKey, whenUnsatisfiable}",
            "spec.topologySpreadConstraints[2].topologyKey",
            "spec.topologySpreadConstraints[2].whenUnsatisfiable",
            "spec.topologySpreadConstraints[2].nodeTaintsPolicy",
            "spec.topologySpreadConstraints[2].minDomains",
        ]
    );
}

#[test]
fn bad_name_quantity_and_port() {
    let p = json!({"metadata":{"name":"Bad_Name","namespace":"default"},"spec":{"containers":[{"name":"c","image":"x","ports":[{"containerPort":70000}],"resources":{"limits":{"memory":"lots"}}}]}});
    let errs = validate("Pod", true, &p);
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"metadata.name"), "{fields:?}");
    assert!(
        fields.contains(&"spec.containers[0].ports[0].containerPort"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.containers[0].resources.limits[memory]"),
        "{fields:?}"
    );
}

#[test]
fn deployment_defaults() {
    let mut d = json!({"metadata":{"name":"web"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"spec":{"containers":[{"name":"c","image":"nginx:1.25","ports":[{"containerPort":80}]}]}}}});
    default_object("Deployment", &mut d);
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(1)));
    assert_eq!(
        d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
        Some(&json!("25%"))
    );
    assert_eq!(
        d.pointer("/spec/template/spec/containers/0/imagePullPolicy"),
        Some(&json!("IfNotPresent"))
    );
    assert_eq!(
        d.pointer("/spec/template/spec/containers/0/ports/0/protocol"),
        Some(&json!("TCP"))
    );
    assert_eq!(
        d.pointer("/spec/template/spec/restartPolicy"),
        Some(&json!("Always"))
    );
}

/// A Job's template is defaulted as any pod's (restartPolicy Always), which a Job may
/// not use: kube-apiserver refuses a Job that names no restart policy.
#[test]
fn job_without_restart_policy_is_refused() {
    let job = |restart: Option<&str>| {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        if let Some(r) = restart {
            spec["restartPolicy"] = json!(r);
        }
        json!({"metadata": {"name": "j", "namespace": "default", "uid": "u-1"},
               "spec": {"template": {"spec": spec}}})
    };
    let shown = |mut obj: Value| -> Vec<String> {
        default_object("Job", &mut obj);
        validate("Job", true, &obj)
            .iter()
            .map(FieldError::display)
            .collect()
    };
    assert_eq!(
        shown(job(None)),
        ["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
    );
    assert!(shown(job(Some("Never"))).is_empty());
    assert!(shown(job(Some("OnFailure"))).is_empty());
    let mut cron = json!({"metadata": {"name": "c", "namespace": "default"}, "spec": {"schedule": "* * * * *",
        "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}});
    default_object("CronJob", &mut cron);
    let fields: Vec<String> = validate("CronJob", true, &cron)
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        ["spec.jobTemplate.spec.template.spec.restartPolicy"]
    );
}

#[test]
fn replication_controller_defaults_and_validation() {
    let mut rc = json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}}});
    default_object("ReplicationController", &mut rc);
    assert_eq!(rc.pointer("/spec/selector"), Some(&json!({"app": "web"})));
    assert_eq!(rc.pointer("/metadata/labels"), Some(&json!({"app": "web"})));
    assert_eq!(rc.pointer("/spec/replicas"), Some(&json!(1)));
    assert_eq!(
        rc.pointer("/spec/template/spec/restartPolicy"),
        Some(&json!("Always"))
    );
    assert!(validate("ReplicationController", true, &rc).is_empty());

    let mut other = rc.clone();
    other["spec"]["selector"] = json!({"app": "other"});
    other["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let shown: Vec<String> = validate("ReplicationController", true, &other)
        .iter()
        .map(FieldError::display)
        .collect();
    assert_eq!(
        shown,
        [
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ]
    );
    let mut bare =
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": -1}});
    default_object("ReplicationController", &mut bare);
    let fields: Vec<String> = validate("ReplicationController", true, &bare)
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["spec.replicas", "spec.selector", "spec.template"]);
}

#[test]
fn rbac_rules_names_role_refs_and_subjects() {
    let msgs = |errs: Vec<FieldError>| errs.iter().map(FieldError::display).collect::<Vec<_>>();
    // Path-segment names: `system:` names are fine, slashes are not.
    let role = json!({"metadata": {"name": "system:reader", "namespace": "d"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
    assert_eq!(msgs(validate("Role", true, &role)), Vec::<String>::new());
    let bad = json!({"metadata": {"name": "a/b", "namespace": "d"}, "rules": [
        {"verbs": [], "apiGroups": [""], "resources": ["pods"]},
        {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
        {"verbs": ["get"]}]});
    assert_eq!(
        msgs(validate("Role", true, &bad)),
        [
            r#"metadata.name: Invalid value: "a/b": may not contain '/'"#,
            "rules[0].verbs: Required value: verbs must contain at least one value",
            r#"rules[1].nonResourceURLs: Invalid value: []string{"/healthz"}: namespaced rules cannot apply to non-resource URLs"#,
            "rules[2].apiGroups: Required value: resource rules must supply at least one api group",
            "rules[2].resources: Required value: resource rules must supply at least one resource",
        ]
    );
    let agg = json!({"metadata": {"name": "x"}, "aggregationRule": {"clusterRoleSelectors": []}});
    assert_eq!(
        msgs(validate("ClusterRole", false, &agg)),
        ["aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"]
    );
    // Bindings: defaults fill the groups; a ClusterRoleBinding names only ClusterRoles;
    // ServiceAccounts of a ClusterRoleBinding need a namespace.
    let mut b = json!({"metadata": {"name": "b", "namespace": "d"},
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "sa"}]});
    default_object("RoleBinding", &mut b);
    assert_eq!(b["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(b["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    assert!(b["subjects"][1].get("apiGroup").is_none());
    assert_eq!(
        msgs(validate("RoleBinding", true, &b)),
        Vec::<String>::new()
    );
    let crb = json!({"metadata": {"name": "c"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ""},
        "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "r2"},
                     {"kind": "Group", "name": "g", "apiGroup": "x"}]});
    assert_eq!(
        msgs(validate("ClusterRoleBinding", false, &crb)),
        [
            r#"roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#,
            "roleRef.name: Required value",
            "subjects[0].namespace: Required value",
            r#"subjects[1].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group""#,
            r#"subjects[2].apiGroup: Unsupported value: "x": supported values: "rbac.authorization.k8s.io""#,
        ]
    );
    // roleRef may not change.
    let mut changed = b.clone();
    changed["roleRef"]["name"] = json!("other");
    let mut errs = Vec::new();
    kind("RoleBinding")
        .strategy
        .validate_update(&b, &changed, &mut errs);
    assert_eq!(
        msgs(errs),
        [
            r#"roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"other"}: cannot change roleRef"#
        ]
    );
}
