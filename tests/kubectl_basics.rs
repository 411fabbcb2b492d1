//! A fresh `spindle server --disable-agent` writes its credentials and answers kubectl's
//! everyday read commands, on the default and the oldest supported kubectl.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{kubectls, Cluster};

#[test]
fn fresh_server_writes_credentials_and_serves_kubectl() {
    let c = Cluster::start();
    let mode = std::fs::metadata(c.kubeconfig())
        .expect("kubeconfig")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "kubeconfig must be private");
    let token = std::fs::read_to_string(c.data_dir().join("server/token")).expect("token file");
    assert!(token.trim().len() >= 32, "join token too short: {token:?}");

    for k in kubectls() {
        let v = c.ok(k, &["version", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&v).expect("version json");
        assert_eq!(v["serverVersion"]["major"], "1", "{v}");

        let res = c.ok(k, &["api-resources"]);
        for line in [
            "deployments",
            "configmaps",
            "cronjobs",
            "leases",
            "endpointslices",
            "events",
        ] {
            assert!(res.contains(line), "api-resources lacks {line}:\n{res}");
        }
        let res = c.ok(k, &["api-resources", "--namespaced=false", "-o", "name"]);
        assert!(
            res.lines().any(|l| l == "namespaces") && res.lines().any(|l| l == "nodes"),
            "{res}"
        );

        let ns = c.ok(k, &["get", "namespaces"]);
        assert!(
            ns.starts_with("NAME") && ns.contains("STATUS"),
            "table header expected:\n{ns}"
        );
        for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(
                ns.lines().any(|l| l.starts_with(n) && l.contains("Active")),
                "{n} missing:\n{ns}"
            );
        }
        let d = c.ok(k, &["describe", "namespace", "default"]);
        assert!(
            d.contains("Name:") && d.contains("default") && d.contains("Active"),
            "{d}"
        );

        let e = c.ok(k, &["explain", "deployment.spec.replicas"]);
        assert!(
            e.contains("replicas")
                && e.contains("<integer>")
                && e.contains("Number of desired pods"),
            "{e}"
        );
        let e = c.ok(k, &["explain", "pods.spec.containers"]);
        assert!(e.contains("image"), "{e}");
        openapi_as_kubectl_reads_it(&c, k);
    }
}

/// kubectl reads both OpenAPI documents: v3 (JSON per group-version) for `explain`, and
/// v2 (gnostic protobuf) for `explain --output=plaintext-openapiv2`, which finds the
/// kind through the x-kubernetes-group-version-kind extension carried as YAML. A
/// document kubectl cannot decode fails these, whatever our own decoder thinks of it.
fn openapi_as_kubectl_reads_it(c: &Cluster, k: &str) {
    let v3 = c.ok(k, &["explain", "pods.spec.containers.ports"]);
    assert!(
        v3.contains("FIELD: ports <[]ContainerPort>") && v3.contains("containerPort"),
        "{v3}"
    );
    let v2 = c.ok(
        k,
        &[
            "explain",
            "--output=plaintext-openapiv2",
            "deployment.spec.replicas",
        ],
    );
    assert!(
        v2.contains("KIND:     Deployment")
            && v2.contains("VERSION:  apps/v1")
            && v2.contains("FIELD:    replicas <integer>")
            && v2.contains("Number of desired pods"),
        "{v2}"
    );
    let v2 = c.ok(
        k,
        &[
            "explain",
            "--output=plaintext-openapiv2",
            "pods.spec.containers.ports",
        ],
    );
    assert!(
        v2.contains("RESOURCE: ports <[]Object>")
            && v2.contains("containerPort\t<integer> -required-"),
        "{v2}"
    );
    // Strict validation: kubectl reads the documents to see that the server takes
    // fieldValidation, and the server names the unknown field.
    let bad = c.write_file(
        "strict.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: strict\nspec:\n  bogus: 1\n  selector:\n    matchLabels: {app: strict}\n  template:\n    metadata:\n      labels: {app: strict}\n    spec:\n      containers:\n      - name: app\n        image: registry.local/x:v1\n",
    );
    let path = bad.to_str().unwrap_or_default();
    let err = c.fails(
        k,
        &[
            "create",
            "--validate=strict",
            "--dry-run=server",
            "-f",
            path,
        ],
    );
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{err}"
    );
}

#[test]
fn restart_reuses_identity_and_data() {
    let mut c = Cluster::start();
    let k = common::KUBECTL_DEFAULT;
    c.ok(k, &["create", "configmap", "keep", "--from-literal=a=b"]);
    let ca_before = std::fs::read(c.data_dir().join("server/tls/server-ca.crt")).expect("ca");
    let token_before = std::fs::read(c.data_dir().join("server/token")).expect("token");
    c.kill9();
    c.launch();
    assert_eq!(
        std::fs::read(c.data_dir().join("server/tls/server-ca.crt")).expect("ca"),
        ca_before
    );
    assert_eq!(
        std::fs::read(c.data_dir().join("server/token")).expect("token"),
        token_before
    );
    assert_eq!(
        c.ok(k, &["get", "configmap", "keep", "-o", "jsonpath={.data.a}"]),
        "b"
    );
}

#[test]
fn bearer_token_authenticates_and_anonymous_is_refused() {
    let c = Cluster::start();
    let url = c.server_url();
    let token = std::fs::read_to_string(c.data_dir().join("server/token")).expect("token");
    let ca = c.data_dir().join("server/tls/server-ca.crt");
    let curl = |extra: &[&str], path: &str| {
        let mut args: Vec<std::ffi::OsString> = vec!["--cacert".into(), ca.clone().into()];
        args.extend(extra.iter().map(Into::into));
        args.push(format!("{url}{path}").into());
        common::curl_status(args)
    };
    assert_eq!(curl(&[], "/api/v1/namespaces"), "401");
    // The join token authenticates, and only bootstraps: it may ask for certificates,
    // nothing else.
    let auth = format!("Authorization: Bearer {}", token.trim());
    assert_eq!(
        curl(
            &["-H", &auth],
            "/apis/certificates.k8s.io/v1/certificatesigningrequests"
        ),
        "200"
    );
    assert_eq!(curl(&["-H", &auth], "/api/v1/namespaces"), "403");
    assert_eq!(
        curl(&["-H", "Authorization: Bearer wrong"], "/api/v1/namespaces"),
        "401"
    );
    assert_eq!(curl(&[], "/readyz"), "200");
    assert_eq!(curl(&[], "/livez"), "200");
}
