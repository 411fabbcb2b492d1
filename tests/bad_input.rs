//! Bad input gets a Kubernetes-style error naming the field, and leaves nothing behind;
//! errors and the other Status-shaped answers are kube-apiserver's byte for byte.

mod common;

use common::{kubectls, Cluster};

const MISMATCHED_SELECTOR: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: mismatch
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: other}
    spec:
      containers:
      - name: c
        image: registry.local/web:v1
"#;

const UNKNOWN_FIELD: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unknown-field\nbogus: 1\ndata:\n  a: b\n";

const BAD_QUANTITY: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: bad-quantity
spec:
  containers:
  - name: c
    image: registry.local/web:v1
    resources:
      limits:
        memory: lots
"#;

const BAD_PORT: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: bad-port
spec:
  ports:
  - port: 70000
"#;

const BAD_SPREAD: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad-spread
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      topologySpreadConstraints:
      - maxSkew: 0
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
      containers:
      - name: c
        image: registry.local/web:v1
"#;

const BAD_BUDGET: &str = r#"apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: bad-budget
spec:
  minAvailable: 1
  maxUnavailable: 1
  selector:
    matchLabels: {app: web}
"#;

fn stderr_of(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn invalid_objects_are_rejected_with_field_paths() {
    let c = Cluster::start();
    for k in kubectls() {
        let err = stderr_of(&c.apply_stdin(k, &["apply", "-f", "-"], MISMATCHED_SELECTOR));
        assert!(
            err.contains("is invalid")
                && err.contains("spec.template.metadata.labels")
                && err.contains("`selector` does not match template `labels`"),
            "{err}"
        );

        let err = c.fails(
            k,
            &["create", "configmap", "Bad_Name", "--from-literal=a=b"],
        );
        assert!(
            err.contains("metadata.name") && err.contains("Invalid value: \"Bad_Name\""),
            "{err}"
        );

        let err = stderr_of(&c.apply_stdin(k, &["apply", "-f", "-"], UNKNOWN_FIELD));
        assert!(err.contains("unknown field \"bogus\""), "{err}");

        let err = stderr_of(&c.apply_stdin(k, &["apply", "-f", "-"], BAD_QUANTITY));
        assert!(
            err.contains("spec.containers[0].resources.limits[memory]") && err.contains("\"lots\""),
            "{err}"
        );

        let err = stderr_of(&c.apply_stdin(k, &["apply", "-f", "-"], BAD_PORT));
        assert!(
            err.contains("spec.ports[0].port") && err.contains("must be between 1 and 65535"),
            "{err}"
        );

        let err = stderr_of(&c.apply_stdin(k, &["apply", "-f", "-"], BAD_SPREAD));
        assert!(
            err.contains("spec.template.spec.topologySpreadConstraints[0].maxSkew")
                && err.contains("must be greater than zero"),
            "{err}"
        );

        let err = stderr_of(&c.apply_stdin(k, &["apply", "-f", "-"], BAD_BUDGET));
        assert!(
            err.contains("minAvailable and maxUnavailable cannot be both set"),
            "{err}"
        );

        // Nothing of the rejected writes was stored.
        for (kind, name) in [
            ("deploy", "bad-spread"),
            ("pdb", "bad-budget"),
            ("deploy", "mismatch"),
            ("cm", "Bad_Name"),
            ("cm", "unknown-field"),
            ("pod", "bad-quantity"),
            ("svc", "bad-port"),
        ] {
            let out = c.kubectl(k, &["get", kind, name, "--ignore-not-found", "-o", "name"]);
            assert!(
                String::from_utf8_lossy(&out.stdout).trim().is_empty(),
                "{kind}/{name} was stored"
            );
        }
    }
}

#[test]
fn stale_update_conflicts_and_old_watch_expires() {
    let c = Cluster::start_with(&["--watch-history", "5"]);
    for k in kubectls() {
        let _ = c.kubectl(k, &["delete", "cm", "stale", "--ignore-not-found"]);
        c.ok(k, &["create", "configmap", "stale", "--from-literal=a=1"]);
        let before = c.ok(k, &["get", "cm", "stale", "-o", "json"]);
        let path = c.write_file("stale.json", &before);
        c.ok(k, &["label", "cm", "stale", "moved=on"]);
        let err = c.fails(k, &["replace", "-f", path.to_str().unwrap_or_default()]);
        assert!(err.contains("Conflict") && err.contains("the object has been modified; please apply your changes to the latest version and try again"), "{err}");

        let rv: u64 = serde_json::from_str::<serde_json::Value>(&before)
            .ok()
            .and_then(|v| {
                v["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
            })
            .expect("rv");
        for i in 0..8 {
            c.ok(
                k,
                &["annotate", "--overwrite", "cm", "stale", &format!("n={i}")],
            );
        }
        let out = c.ok(k, &["get", "--raw", &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=2")]);
        assert!(
            out.contains("\"code\":410")
                && out.contains("Expired")
                && out.contains("too old resource version"),
            "{out}"
        );
    }
}

#[test]
fn unknown_resources_and_bad_selectors() {
    let c = Cluster::start();
    let k = common::KUBECTL_DEFAULT;
    let err = c.fails(
        k,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods?fieldSelector=spec.bogus%3D1",
        ],
    );
    assert!(
        err.contains("field label not supported: spec.bogus"),
        "{err}"
    );
    let err = c.fails(k, &["get", "cm", "-l", "app in web"]);
    // kube-apiserver's words (apimachinery's label parser), after kubectl's own prefix.
    assert!(
        err.trim_end()
            .ends_with(r#"label selector "app in web", field selector "": unable to parse requirement: found 'web' expected: '('"#),
        "{err}"
    );
    let dup = c.write_file("dup.json", r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","name":"dup2"},"data":{"a":"1"}}"#);
    let err = c.fails(
        k,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
            "-f",
            dup.to_str().unwrap_or_default(),
        ],
    );
    assert!(err.contains("duplicate field \"metadata.name\""), "{err}");
    let out = c.kubectl(
        k,
        &[
            "get",
            "cm",
            "dup",
            "dup2",
            "--ignore-not-found",
            "-o",
            "name",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    let err = c.fails(k, &["get", "cm", "absent"]);
    assert!(
        err.contains("(NotFound)") && err.contains("configmaps \"absent\" not found"),
        "{err}"
    );
}

/// One request as a plain HTTP client (the Python client, say) makes it: the status code
/// and the body's exact bytes. Not curl's own user agent, to which kube-apiserver answers
/// with indented JSON.
fn raw(c: &Cluster, method: &str, path: &str, body: &str) -> (u16, String) {
    let tls = c.data_dir().join("server/tls");
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "30",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .args(["-A", "OpenAPI-Generator/33.1.0/python"])
        .arg("--cert")
        .arg(tls.join("client-admin.crt"))
        .arg("--key")
        .arg(tls.join("client-admin.key"))
        .args(["-H", "Content-Type: application/json"])
        .args(if body.is_empty() {
            vec![]
        } else {
            vec!["--data-binary", body]
        })
        .arg(format!("{}{path}", c.server_url()))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Each expected body is what kube-apiserver sends for the same request: `metav1.Status`
/// fields in Go's order, `details.group` left out for the core group, a newline at the end.
#[test]
fn error_bodies_are_kube_apiservers_byte_for_byte() {
    let c = Cluster::start();
    let cms = "/api/v1/namespaces/default/configmaps";
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"twice"}}"#;
    let status = |rest: &str| {
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure",{rest}}}"#
        ) + "\n"
    };

    assert_eq!(
        raw(&c, "GET", &format!("{cms}/absent"), ""),
        (
            404,
            status(
                r#""message":"configmaps \"absent\" not found","reason":"NotFound","details":{"name":"absent","kind":"configmaps"},"code":404"#
            )
        )
    );
    assert_eq!(
        raw(
            &c,
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/absent",
            ""
        ),
        (
            404,
            status(
                r#""message":"deployments.apps \"absent\" not found","reason":"NotFound","details":{"name":"absent","group":"apps","kind":"deployments"},"code":404"#
            )
        )
    );
    assert_eq!(raw(&c, "POST", cms, cm).0, 201);
    assert_eq!(
        raw(&c, "POST", cms, cm),
        (
            409,
            status(
                r#""message":"configmaps \"twice\" already exists","reason":"AlreadyExists","details":{"name":"twice","kind":"configmaps"},"code":409"#
            )
        )
    );
    let bad =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"twice"},"data":{"a b":"x"}}"#;
    assert_eq!(
        raw(&c, "PUT", &format!("{cms}/twice"), bad),
        (
            422,
            status(
                r#""message":"ConfigMap \"twice\" is invalid: data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')","reason":"Invalid","details":{"name":"twice","kind":"ConfigMap","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')","field":"data[a b]"}]},"code":422"#
            )
        )
    );
    // An unknown resource inside a served group-version is the router's 404 (empty
    // details); a path outside every group-version is the not-found handler's (none).
    let not_found =
        r#""message":"the server could not find the requested resource","reason":"NotFound","#;
    assert_eq!(
        raw(&c, "GET", "/api/v1/widgets", ""),
        (
            404,
            status(&format!(r#"{not_found}"details":{{}},"code":404"#))
        )
    );
    assert_eq!(
        raw(&c, "GET", &format!("{cms}/twice/bogus"), ""),
        (
            404,
            status(&format!(r#"{not_found}"details":{{}},"code":404"#))
        )
    );
    assert_eq!(
        raw(&c, "GET", "/no/such/path", ""),
        (404, status(&format!(r#"{not_found}"code":404"#)))
    );
}

/// A DELETE that removes the object at once answers as kube-apiserver's registry does: a
/// Success Status naming the resource and uid for most kinds, the object itself for the
/// kinds whose storage returns it (pods, services, namespaces, service accounts). kubectl
/// reports either the same way.
#[test]
fn delete_answers_are_kube_apiservers_byte_for_byte() {
    let c = Cluster::start();
    let uid_of = |created: &(u16, String)| {
        assert_eq!(created.0, 201, "{}", created.1);
        let v: serde_json::Value = serde_json::from_str(&created.1).expect("json");
        v["metadata"]["uid"].as_str().expect("uid").to_string()
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let uid = uid_of(&raw(
        &c,
        "POST",
        cms,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"gone"}}"#,
    ));
    assert_eq!(
        raw(&c, "DELETE", &format!("{cms}/gone"), ""),
        (
            200,
            format!(
                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Success","details":{{"name":"gone","kind":"configmaps","uid":"{uid}"}}}}"#
            ) + "\n"
        )
    );
    let leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let uid = uid_of(&raw(
        &c,
        "POST",
        leases,
        r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"held"}}"#,
    ));
    assert_eq!(
        raw(&c, "DELETE", &format!("{leases}/held"), ""),
        (
            200,
            format!(
                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Success","details":{{"name":"held","group":"coordination.k8s.io","kind":"leases","uid":"{uid}"}}}}"#
            ) + "\n"
        )
    );
    let sas = "/api/v1/namespaces/default/serviceaccounts";
    let uid = uid_of(&raw(
        &c,
        "POST",
        sas,
        r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"robot"}}"#,
    ));
    let (code, body) = raw(&c, "DELETE", &format!("{sas}/robot"), "");
    let sa: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (code, &sa["kind"], &sa["metadata"]["uid"]),
        (
            200,
            &serde_json::json!("ServiceAccount"),
            &serde_json::json!(uid)
        ),
        "{body}"
    );

    for (i, k) in kubectls().into_iter().enumerate() {
        let cm = format!("said{i}");
        c.ok(k, &["create", "configmap", &cm]);
        let out = c.ok(k, &["delete", "configmap", &cm]);
        assert!(
            out.starts_with(&format!("configmap \"{cm}\" deleted")),
            "{k}: {out}"
        );
        let sa = format!("said{i}");
        c.ok(k, &["create", "serviceaccount", &sa]);
        let out = c.ok(k, &["delete", "serviceaccount", &sa]);
        assert!(
            out.starts_with(&format!("serviceaccount \"{sa}\" deleted")),
            "{k}: {out}"
        );
    }
}

/// A subresource the kind does not have is kube-apiserver's router 404; a method a
/// subresource does not serve is its 405, which names no resource.
#[test]
fn missing_subresources_and_wrong_methods_answer_as_kube_apiserver() {
    let c = Cluster::start();
    let cms = "/api/v1/namespaces/default/configmaps";
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"plain"}}"#;
    assert_eq!(raw(&c, "POST", cms, cm).0, 201);
    let status = |rest: &str| {
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure",{rest}}}"#
        ) + "\n"
    };
    let not_found = status(
        r#""message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404"#,
    );
    for (method, path) in [
        ("GET", format!("{cms}/plain/status")),
        ("PUT", format!("{cms}/plain/status")),
        ("GET", format!("{cms}/plain/log")),
        (
            "GET",
            "/apis/apps/v1/namespaces/default/daemonsets/absent/scale".to_string(),
        ),
    ] {
        assert_eq!(
            raw(&c, method, &path, if method == "PUT" { cm } else { "" }),
            (404, not_found.clone()),
            "{method} {path}"
        );
    }
    let not_allowed = status(
        r#""message":"the server does not allow this method on the requested resource","reason":"MethodNotAllowed","details":{},"code":405"#,
    );
    for (method, path) in [
        ("DELETE", "/api/v1/namespaces/default/pods/absent/status"),
        ("POST", "/api/v1/namespaces/default/pods/absent/log"),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/default/deployments/absent/scale",
        ),
    ] {
        assert_eq!(
            raw(&c, method, path, ""),
            (405, not_allowed.clone()),
            "{method} {path}"
        );
    }
}

/// pods/log options out of range are refused as kube-apiserver refuses them, naming the
/// field, before the pod is looked for.
#[test]
fn bad_pod_log_options_are_invalid() {
    let c = Cluster::start();
    let log = "/api/v1/namespaces/default/pods/absent/log";
    let invalid = |message: &str, causes: &str| {
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"PodLogOptions \"absent\" is invalid: {message}","reason":"Invalid","details":{{"name":"absent","kind":"PodLogOptions","causes":[{causes}]}},"code":422}}"#
        ) + "\n"
    };
    for since in ["0", "-5"] {
        assert_eq!(
            raw(&c, "GET", &format!("{log}?sinceSeconds={since}"), ""),
            (
                422,
                invalid(
                    &format!("sinceSeconds: Invalid value: {since}: must be greater than 0"),
                    &format!(
                        r#"{{"reason":"FieldValueInvalid","message":"Invalid value: {since}: must be greater than 0","field":"sinceSeconds"}}"#
                    )
                )
            )
        );
    }
    assert_eq!(
        raw(&c, "GET", &format!("{log}?tailLines=-1&limitBytes=0"), ""),
        (
            422,
            invalid(
                "[tailLines: Invalid value: -1: must be greater than or equal to 0, limitBytes: Invalid value: 0: must be greater than 0]",
                r#"{"reason":"FieldValueInvalid","message":"Invalid value: -1: must be greater than or equal to 0","field":"tailLines"},{"reason":"FieldValueInvalid","message":"Invalid value: 0: must be greater than 0","field":"limitBytes"}"#
            )
        )
    );
    // In range, the pod is looked for.
    assert_eq!(
        raw(
            &c,
            "GET",
            &format!("{log}?sinceSeconds=1&tailLines=0&limitBytes=1"),
            ""
        )
        .0,
        404
    );
}
