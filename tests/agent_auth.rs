//! The node agent's streaming endpoint (the kubelet's port 10250) secured as Kubernetes
//! secures kubelets, on the embedded agent of `spindle server`: its serving certificate
//! comes from the cluster CA through a `kubernetes.io/kubelet-serving` request the
//! controllers approve only for the node's own name and addresses; callers are
//! authenticated by client certificates of the cluster CA (401 otherwise, the join
//! token's secret included) and authorized by SubjectAccessReview on `nodes/proxy`
//! (403 in the kubelet's words). `kubectl logs`, `exec` and `port-forward` through the
//! API server (its own `kube-apiserver-kubelet-client` certificate) are covered by
//! tests/exec.rs and tests/agent.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const NODE: &str = "authz-node";
const WAIT: Duration = Duration::from_secs(90);

/// Run a tool to its end within a minute; stdout, panicking with stderr on failure.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> String {
    let out = output_within(cmd, stdin, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(args: &[&str]) -> String {
    run(Command::new("openssl").args(args), None)
}

fn b64(data: &[u8]) -> String {
    run(Command::new("base64").arg("-w0"), Some(data))
        .trim()
        .to_string()
}

fn unb64(text: &str) -> Vec<u8> {
    let out = output_within(
        Command::new("base64").arg("-d"),
        Some(text.trim().as_bytes()),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "base64 -d of {text:?}");
    out.stdout
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Poll `f` until it is true, at most `WAIT`; `what` names it in the panic.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// curl's exit code, and the body followed by a line with the HTTP status.
fn curl(args: &[&str]) -> (i32, String) {
    let out = output_within(
        Command::new("curl")
            .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
            .args(args),
        None,
        Duration::from_secs(40),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A key and a certificate for `subject` (`/CN=…/O=…`) from the cluster CA, through a
/// `kubernetes.io/kube-apiserver-client` request approved with kubectl.
fn user_cert(c: &Cluster, name: &str, subject: &str) -> (PathBuf, PathBuf) {
    let dir = c.dir.path();
    let key = dir.join(format!("{name}.key"));
    let req = dir.join(format!("{name}.csr"));
    openssl(&["genrsa", "-out", path(&key), "2048"]);
    openssl(&[
        "req",
        "-new",
        "-key",
        path(&key),
        "-subj",
        subject,
        "-out",
        path(&req),
    ]);
    let request = b64(&std::fs::read(&req).expect("request"));
    let manifest = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\n\
         spec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [\"client auth\"]\n"
    );
    let out = c.apply_stdin(KUBECTL_DEFAULT, &["create", "-f", "-"], &manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(KUBECTL_DEFAULT, &["certificate", "approve", name]);
    let mut cert = String::new();
    wait_until(&format!("the certificate of {name}"), || {
        cert = c.ok(
            KUBECTL_DEFAULT,
            &["get", "csr", name, "-o", "jsonpath={.status.certificate}"],
        );
        !cert.trim().is_empty()
    });
    let crt = dir.join(format!("{name}.crt"));
    std::fs::write(&crt, unb64(&cert)).expect("write certificate");
    (crt, key)
}

/// The admin's certificate and key, from the kubeconfig.
fn admin_cert(c: &Cluster) -> (PathBuf, PathBuf) {
    let cfg = std::fs::read_to_string(c.kubeconfig()).expect("kubeconfig");
    let field = |f: &str| {
        cfg.lines()
            .find_map(|l| l.trim().strip_prefix(f))
            .unwrap_or_else(|| panic!("{f} in the kubeconfig"))
            .to_string()
    };
    let crt = c.dir.path().join("admin.crt");
    let key = c.dir.path().join("admin.key");
    std::fs::write(&crt, unb64(&field("client-certificate-data: "))).expect("write");
    std::fs::write(&key, unb64(&field("client-key-data: "))).expect("write");
    (crt, key)
}

/// The CONDITION column of `kubectl get csr NAME`.
fn csr_condition(c: &Cluster, name: &str) -> String {
    let out = c.ok(KUBECTL_DEFAULT, &["get", "csr", name]);
    let row = out.lines().nth(1).unwrap_or_default().to_string();
    row.split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// A kubelet-serving request for `system:node:NODE` naming `dns` and `ip`, made by
/// the node (the admin impersonating it, as its own credential would).
fn serving_request(c: &Cluster, name: &str, dns: &str, ip: &str) {
    let dir = c.dir.path();
    let key = dir.join(format!("{name}.key"));
    let req = dir.join(format!("{name}.csr"));
    openssl(&["genrsa", "-out", path(&key), "2048"]);
    openssl(&[
        "req",
        "-new",
        "-key",
        path(&key),
        "-subj",
        &format!("/O=system:nodes/CN=system:node:{NODE}"),
        "-addext",
        &format!("subjectAltName=DNS:{dns},IP:{ip}"),
        "-out",
        path(&req),
    ]);
    let request = b64(&std::fs::read(&req).expect("request"));
    let manifest = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\n\
         spec:\n  request: {request}\n  signerName: kubernetes.io/kubelet-serving\n  \
         usages: [\"digital signature\", \"key encipherment\", \"server auth\"]\n"
    );
    let node_user = format!("--as=system:node:{NODE}");
    let out = c.apply_stdin(
        KUBECTL_DEFAULT,
        &[&node_user, "--as-group=system:nodes", "create", "-f", "-"],
        &manifest,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ok(
            KUBECTL_DEFAULT,
            &["get", "csr", name, "-o", "jsonpath={.spec.username}"]
        ),
        format!("system:node:{NODE}")
    );
}

#[test]
fn the_agent_serves_a_ca_certificate_and_authorizes_callers_by_access_review() {
    let c = Cluster::with_agent(NODE, &[]);
    let ca = c.data_dir().join("server/tls/server-ca.crt");
    let ca = path(&ca).to_string();
    let node_field = |p: &str| {
        c.ok(
            KUBECTL_DEFAULT,
            &["get", "node", NODE, "-o", &format!("jsonpath={{{p}}}")],
        )
    };
    let ip = node_field(".status.addresses[?(@.type==\"InternalIP\")].address");
    let port = node_field(".status.daemonEndpoints.kubeletEndpoint.Port");
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    let url = |p: &str| format!("https://{host}:{port}{p}");

    // --- The serving certificate: requested by the node itself, approved and issued.
    let serving_csrs = || {
        c.ok(KUBECTL_DEFAULT, &["get", "csr", "-o", "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.spec.username} {.status.conditions[0].reason} {.status.conditions[0].type}{\"\\n\"}{end}"])
    };
    wait_until("the node's approved serving request", || {
        serving_csrs().contains(&format!("system:node:{NODE} AutoApproved Approved"))
    });
    // Verified against the cluster CA for the Node's InternalIP (curl fails the
    // handshake otherwise): the endpoint answers once the certificate is in place.
    wait_until("the endpoint serving its CA certificate", || {
        curl(&["--cacert", &ca, &url("/healthz")]) == (0, "Unauthorized\n401".into())
    });
    let shown = openssl_s_client(&host, &port, &ca, &ip);
    let pem_start = shown
        .find("-----BEGIN CERTIFICATE-----")
        .expect("certificate");
    let pem_end = shown
        .find("-----END CERTIFICATE-----")
        .expect("certificate end");
    let served = c.dir.path().join("served.crt");
    std::fs::write(&served, &shown[pem_start..pem_end + 26]).expect("write");
    let text = openssl(&[
        "x509",
        "-in",
        path(&served),
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName,extendedKeyUsage",
    ]);
    assert!(
        text.contains(&format!(
            "subject=O = system:nodes, CN = system:node:{NODE}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("DNS:{NODE}, IP Address:{ip}")),
        "{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let verified = openssl(&["verify", "-CAfile", &ca, path(&served)]);
    assert!(verified.trim().ends_with(": OK"), "{verified}");
    // The fingerprint annotation of old is gone.
    let annotations = node_field(".metadata.annotations");
    assert!(!annotations.contains("agent-cert-sha256"), "{annotations}");

    // --- Callers: no certificate, or the join token, is 401.
    let logs = url("/containerLogs/default/nothing/main");
    let unauthorized = (0, "Unauthorized\n401".to_string());
    assert_eq!(curl(&["--cacert", &ca, &logs]), unauthorized, "anonymous");
    let token = std::fs::read_to_string(c.data_dir().join("server/token")).expect("token");
    let token = token.trim();
    let secret = token.rsplit(':').next().expect("secret");
    for bearer in [secret, token] {
        let header = format!("Authorization: Bearer {bearer}");
        assert_eq!(
            curl(&["--cacert", &ca, "-H", &header, &logs]),
            unauthorized,
            "the join token"
        );
    }
    // A certificate of another CA naming the admin: 401.
    let dir = c.dir.path();
    let (forged_crt, forged_key) = (dir.join("forged.crt"), dir.join("forged.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/O=system:masters/CN=system:admin",
        "-keyout",
        path(&forged_key),
        "-out",
        path(&forged_crt),
    ]);
    let with = |(crt, key): &(PathBuf, PathBuf), extra: &[&str], p: &str| {
        let mut args = vec!["--cacert", &ca, "--cert", path(crt), "--key", path(key)];
        args.extend_from_slice(extra);
        let u = url(p);
        args.push(&u);
        curl(&args)
    };
    assert_eq!(
        with(&(forged_crt, forged_key), &[], "/healthz"),
        unauthorized,
        "a certificate of another CA"
    );

    // --- A user of the cluster CA without nodes/proxy: 403 in the kubelet's words.
    let eve = user_cert(&c, "eve", "/CN=eve/O=dev");
    assert_eq!(
        with(&eve, &[], "/containerLogs/default/nothing/main"),
        (
            0,
            "Forbidden (user=eve, verb=get, resource=nodes, subresource=proxy)\n403".into()
        )
    );
    // A user granted `get` on nodes/proxy (through RBAC, as the review asks): GET passes,
    // POST (verb create) does not.
    c.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: node-reader}\n\
         rules: [{apiGroups: [\"\"], resources: [nodes/proxy], verbs: [get]}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: ops-node-reader}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-reader}\n\
         subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: ops}]\n",
    );
    let ops = user_cert(&c, "ops", "/CN=ops/O=dev");
    assert_eq!(with(&ops, &[], "/healthz"), (0, "ok\n200".into()));
    assert_eq!(
        with(&ops, &["-X", "POST"], "/healthz"),
        (
            0,
            "Forbidden (user=ops, verb=create, resource=nodes, subresource=proxy)\n403".into()
        )
    );
    // The admin (system:masters) may do anything.
    let admin = admin_cert(&c);
    assert_eq!(with(&admin, &[], "/healthz"), (0, "ok\n200".into()));
    let (_, missing) = with(&admin, &[], "/containerLogs/default/nothing/main");
    assert!(missing.ends_with("\n404"), "{missing}");

    // --- Serving requests for another node's name or address are not approved; one for
    // the node's own name and address, made after them, is.
    serving_request(&c, "other-name", "some-other-node", &ip);
    serving_request(&c, "other-ip", NODE, "10.255.255.1");
    serving_request(&c, "own-names", NODE, &ip);
    wait_until("the approval of own-names", || {
        csr_condition(&c, "own-names") == "Approved,Issued"
    });
    for name in ["other-name", "other-ip"] {
        assert_eq!(csr_condition(&c, name), "Pending", "{name}");
    }
}

/// What `openssl s_client` shows of the endpoint, verifying it against `ca` for `ip`.
fn openssl_s_client(host: &str, port: &str, ca: &str, ip: &str) -> String {
    let connect = format!("{host}:{port}");
    run(
        Command::new("openssl").args([
            "s_client",
            "-connect",
            &connect,
            "-CAfile",
            ca,
            "-verify_return_error",
            "-verify_ip",
            ip,
        ]),
        Some(b""),
    )
}
