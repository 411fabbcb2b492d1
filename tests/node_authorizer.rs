//! The Node authorizer and NodeRestriction, end to end: two real agents, each asserting
//! with its own credential (the certificate and key it got through a CSR and keeps under
//! `<data>/pki`, named by `<data>/pki/kubeconfig`), and the join token alone.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::agent::{Agent, NetGuard};
use common::*;

/// A pod pinned to `node` that uses `secret` (envFrom) and `configmap` (a volume). Its
/// image is on a closed local port: the pod never runs, and need not, to bind it.
fn pod(name: &str, node: &str, secret: &str, configmap: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  containers:
  - name: main
    image: 127.0.0.1:1/none:1
    envFrom:
    - secretRef:
        name: {secret}
    volumeMounts:
    - name: conf
      mountPath: /conf
  volumes:
  - name: conf
    configMap:
      name: {configmap}
"#
    )
}

/// kubectl with node `data`'s own kubeconfig.
fn as_node(c: &Cluster, kubectl: &str, data: &str, args: &[&str]) -> Output {
    let kubeconfig: PathBuf = c.dir.path().join(data).join("pki/kubeconfig");
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--request-timeout=30s")
        .args(args);
    output_within(&mut cmd, None, Duration::from_secs(60))
}

fn node_ok(c: &Cluster, kubectl: &str, data: &str, args: &[&str]) -> String {
    let out = as_node(c, kubectl, data, args);
    assert!(
        out.status.success(),
        "{kubectl} as {data} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The request is refused with 403 and `message` (kubectl prints the Status message after
/// "Error from server (Forbidden): ").
fn node_forbidden(c: &Cluster, kubectl: &str, data: &str, args: &[&str], message: &str) {
    let out = as_node(c, kubectl, data, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{kubectl} as {data} {args:?} succeeded"
    );
    assert!(
        err.contains(&format!("Error from server (Forbidden): {message}")),
        "{kubectl} as {data} {args:?}: {err}"
    );
}

/// `kubectl create -f file` as node n1 is refused with 403 and `message` (kubectl
/// prints it after "Error from server (Forbidden): error when creating <file>: ").
fn file_forbidden(c: &Cluster, kubectl: &str, file: &std::path::Path, message: &str) {
    let file = file.to_str().expect("utf-8 path");
    let out = as_node(c, kubectl, "n1-data", &["create", "-f", file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{kubectl} as n1 created {file}");
    assert!(
        err.contains(&format!(
            "Error from server (Forbidden): error when creating \"{file}\": {message}"
        )),
        "{kubectl} as n1 create -f {file}: {err}"
    );
}

fn ready(c: &Cluster, node: &str) {
    c.wait_for_output(
        &[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
        Duration::from_secs(90),
    );
}

#[test]
fn a_node_reaches_only_what_its_own_pods_use() {
    let mut c = Cluster::start();
    let (g1, g2) = (NetGuard(NetNames::fresh()), NetGuard(NetNames::fresh()));
    let token = c.data_dir().join("server/token");
    let _a1 = Agent::start(&c, "n1", "n1-data", &token, &g1.0);
    let _a2 = Agent::start(&c, "n2", "n2-data", &token, &g2.0);
    ready(&c, "n1");
    ready(&c, "n2");

    // The join token alone only bootstraps: it cannot list Secrets.
    let ca = c.data_dir().join("server/tls/server-ca.crt");
    let bearer = format!(
        "Authorization: Bearer {}",
        std::fs::read_to_string(&token).expect("token").trim()
    );
    let status = curl_status([
        "--cacert".into(),
        ca.into_os_string(),
        "-H".into(),
        bearer.into(),
        format!("{}/api/v1/namespaces/default/secrets", c.server_url()).into(),
    ]);
    assert_eq!(status, "403", "the join token listed Secrets");

    c.ok(
        KUBECTL_DEFAULT,
        &["create", "secret", "generic", "s1", "--from-literal=k=one"],
    );
    c.ok(
        KUBECTL_DEFAULT,
        &["create", "secret", "generic", "s2", "--from-literal=k=two"],
    );
    c.ok(
        KUBECTL_DEFAULT,
        &["create", "configmap", "cm1", "--from-literal=k=conf"],
    );
    c.ok(
        KUBECTL_DEFAULT,
        &["create", "configmap", "cm2", "--from-literal=k=conf2"],
    );
    c.apply(&pod("p1", "n1", "s1", "cm1"));
    c.apply(&pod("p2", "n2", "s2", "cm2"));

    let decoded = |b64: &str| {
        let out = output_within(
            Command::new("base64").arg("-d"),
            Some(b64.trim().as_bytes()),
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for kubectl in kubectls() {
        // Each node reads what its own pod uses...
        let s1 = node_ok(
            &c,
            kubectl,
            "n1-data",
            &["get", "secret", "s1", "-o", "jsonpath={.data.k}"],
        );
        assert_eq!(decoded(&s1), "one");
        let cm1 = node_ok(
            &c,
            kubectl,
            "n1-data",
            &["get", "configmap", "cm1", "-o", "jsonpath={.data.k}"],
        );
        assert_eq!(cm1, "conf");
        let s2 = node_ok(
            &c,
            kubectl,
            "n2-data",
            &["get", "secret", "s2", "-o", "jsonpath={.data.k}"],
        );
        assert_eq!(decoded(&s2), "two");
        // ...and nothing used only on the other node, nor a list of everything.
        node_forbidden(
            &c,
            kubectl,
            "n1-data",
            &["get", "secret", "s2"],
            r#"secrets "s2" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'n1' and this object"#,
        );
        node_forbidden(
            &c,
            kubectl,
            "n2-data",
            &["get", "configmap", "cm1"],
            r#"configmaps "cm1" is forbidden: User "system:node:n2" cannot get resource "configmaps" in API group "" in the namespace "default": no relationship found between node 'n2' and this object"#,
        );
        node_forbidden(
            &c,
            kubectl,
            "n1-data",
            &["get", "secrets"],
            r#"secrets is forbidden: User "system:node:n1" cannot list resource "secrets" in API group "" in the namespace "default""#,
        );
        // A node changes its own Node, not another's.
        node_ok(
            &c,
            kubectl,
            "n1-data",
            &["label", "node", "n1", "--overwrite", "example.com/own=yes"],
        );
        node_forbidden(
            &c,
            kubectl,
            "n1-data",
            &[
                "label",
                "node",
                "n2",
                "--overwrite",
                "example.com/taken=yes",
            ],
            r#"nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2""#,
        );
        // Nothing cluster-wide.
        node_forbidden(
            &c,
            kubectl,
            "n1-data",
            &["create", "namespace", "from-a-node"],
            r#"namespaces is forbidden: User "system:node:n1" cannot create resource "namespaces" in API group "" at the cluster scope"#,
        );
        node_forbidden(
            &c,
            kubectl,
            "n1-data",
            &[
                "create",
                "clusterrole",
                "from-a-node",
                "--verb=get",
                "--resource=secrets",
            ],
            r#"clusterroles.rbac.authorization.k8s.io is forbidden: User "system:node:n1" cannot create resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope"#,
        );
        // No volumes: the control plane provisions local-path volumes, so a node cannot
        // make one that hands a pod the host's root or pulls a pending claim's pod (and
        // its secrets) onto itself, even one shaped as the provisioner makes them.
        let grab = c.write_file(
            "pv-grab.yaml",
            "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: grab\n  annotations: {pv.kubernetes.io/provisioned-by: spindle.dev/local-path}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  hostPath: {path: /}\n  claimRef: {namespace: default, name: pending}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {key: kubernetes.io/hostname, operator: In, values: [n1]}\n",
        );
        file_forbidden(
            &c,
            kubectl,
            &grab,
            r#"persistentvolumes is forbidden: User "system:node:n1" cannot create resource "persistentvolumes" in API group "" at the cluster scope"#,
        );
    }
    // Pod status: its own pod's, not the other node's. As the agent writes it, a merge
    // patch of pods/status (kubectl would read pods/status first, which no node may).
    let status_patch = |pod: &str, message: &str| {
        let pki = c.dir.path().join("n1-data/pki");
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "--max-time",
            "30",
            "-X",
            "PATCH",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cacert")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("client.crt"))
        .arg("--key")
        .arg(pki.join("client.key"))
        .args([
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data-binary",
        ])
        .arg(format!(r#"{{"status":{{"message":"{message}"}}}}"#))
        .arg(format!(
            "{}/api/v1/namespaces/default/pods/{pod}/status",
            c.server_url()
        ));
        let out = output_within(&mut cmd, None, Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().to_string(), body.to_string())
    };
    let (code, body) = status_patch("p1", "written by its node");
    assert_eq!(code, "200", "{body}");
    let (code, body) = status_patch("p2", "written by another node");
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains(r#""message":"pods \"p2\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself""#),
        "{body}"
    );
    for kubectl in kubectls() {
        node_forbidden(
            &c,
            kubectl,
            "n1-data",
            &["delete", "pod", "p2", "--wait=false"],
            r#"pods "p2" is forbidden: node "n1" can only delete pods with spec.nodeName set to itself"#,
        );
    }
    assert_ne!(
        c.pod_field("p2", "{.status.message}"),
        "written by another node"
    );

    // A data dir from before nodes had identities holds the stopgap binding that made
    // every node cluster-admin, and the one that let nodes create volumes while agents
    // provisioned them: the server removes both at start.
    let stale = |name: &str, role: &str| {
        format!(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {name}
  labels:
    kubernetes.io/bootstrapping: rbac-defaults
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {role}
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:nodes
"#
        )
    };
    c.apply(&stale("spindle:node-agents", "cluster-admin"));
    c.apply(&stale("spindle:local-path-provisioner", "cluster-admin"));
    node_ok(&c, KUBECTL_DEFAULT, "n1-data", &["get", "secret", "s2"]);
    c.stop();
    c.launch();
    for name in ["spindle:node-agents", "spindle:local-path-provisioner"] {
        let gone = c.fails(KUBECTL_DEFAULT, &["get", "clusterrolebinding", name]);
        assert!(gone.contains("NotFound"), "{name}: {gone}");
    }
    // (The relaunched server listens on a new port, which the node's kubeconfig does not
    // name: asked by impersonation.)
    let can = c.kubectl(
        KUBECTL_DEFAULT,
        &[
            "auth",
            "can-i",
            "create",
            "persistentvolumes",
            "--as=system:node:n1",
            "--as-group=system:nodes",
        ],
    );
    let answer = String::from_utf8_lossy(&can.stdout);
    assert!(
        answer.starts_with("no"),
        "{answer} {}",
        String::from_utf8_lossy(&can.stderr)
    );
}
