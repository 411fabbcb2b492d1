//! Users through CertificateSigningRequests, end to end with both kubectl versions: the
//! classic exercise (openssl key and request for CN=jane,O=dev, a CSR object, `kubectl
//! certificate approve`, the issued certificate as jane's kubectl credential), refusals
//! of bad requests with Kubernetes' field paths, denied and misfit requests that issue
//! nothing, and certificates the cluster CA did not sign.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::agent::{Agent, NetGuard};
use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// Run a tool to its end within a minute; stdout, panicking with stderr on failure.
fn run(cmd: &mut Command) -> String {
    let out = output_within(cmd, None, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(args: &[&str]) -> String {
    run(Command::new("openssl").args(args))
}

/// A new RSA key and a PEM request for `subject` (e.g. `/CN=jane/O=dev`), as the
/// Kubernetes documentation has users make them.
fn key_and_request(dir: &Path, name: &str, subject: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    openssl(&["genrsa", "-out", key.to_str().unwrap_or_default(), "2048"]);
    openssl(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap_or_default(),
        "-subj",
        subject,
        "-out",
        csr.to_str().unwrap_or_default(),
    ]);
    let pem = std::fs::read(&csr).expect("request");
    (key, b64(&pem))
}

fn b64(data: &[u8]) -> String {
    let mut child = Command::new("base64");
    child.arg("-w0");
    let out = output_within(&mut child, Some(data), Duration::from_secs(10));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn unb64(text: &str) -> Vec<u8> {
    let mut child = Command::new("base64");
    child.arg("-d");
    let out = output_within(
        &mut child,
        Some(text.trim().as_bytes()),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "base64 -d of {text:?}");
    out.stdout
}

fn csr_manifest(
    name: &str,
    request: &str,
    signer: &str,
    usages: &[&str],
    extra_spec: &str,
) -> String {
    let usages: Vec<String> = usages.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\n\
         spec:\n  request: {request}\n  signerName: {signer}\n  usages: [{}]\n{extra_spec}",
        usages.join(", ")
    )
}

/// A kubeconfig for the user whose certificate and key are given, on this cluster.
fn user_kubeconfig(c: &Cluster, name: &str, cert_pem: &[u8], key: &Path) -> PathBuf {
    let admin = std::fs::read_to_string(c.kubeconfig()).expect("kubeconfig");
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .expect("CA data");
    let key_pem = std::fs::read(key).expect("key");
    let path = c.dir.path().join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    certificate-authority-data: {ca}\n    server: {}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: {name}\n\
             users:\n- name: {name}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncurrent-context: c\n",
            c.server_url(),
            b64(cert_pem),
            b64(&key_pem),
        ),
    )
    .expect("write kubeconfig");
    path
}

/// kubectl as another user (its own kubeconfig and discovery cache).
fn kubectl_as(
    c: &Cluster,
    kubectl: &str,
    kubeconfig: &Path,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(
            c.dir
                .path()
                .join(format!("cache-{}", kubeconfig.display().to_string().len())),
        )
        .arg("--request-timeout=30s")
        .args(args);
    output_within(&mut cmd, None, Duration::from_secs(90))
}

/// `kubectl create -f -` of `manifest`, which must succeed.
fn create(c: &Cluster, kubectl: &str, manifest: &str) {
    let out = c.apply_stdin(kubectl, &["create", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "create failed: {}\n{manifest}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn csr_field(c: &Cluster, name: &str, path: &str) -> String {
    c.ok(
        KUBECTL_DEFAULT,
        &["get", "csr", name, "-o", &format!("jsonpath={{{path}}}")],
    )
}

/// The CONDITION column of `kubectl get csr NAME`, once it reads `want`.
fn wait_condition(c: &Cluster, kubectl: &str, name: &str, want: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = c.ok(kubectl, &["get", "csr", name]);
        let row = out.lines().nth(1).unwrap_or_default().to_string();
        if row.split_whitespace().last() == Some(want) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "csr {name} never reached {want}: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_user_made_through_a_csr_approved_with_kubectl_logs_in_as_that_user() {
    let c = Cluster::start();
    for (i, kubectl) in kubectls().into_iter().enumerate() {
        let name = format!("jane-{i}");
        let (key, request) = key_and_request(c.dir.path(), &name, "/CN=jane/O=dev");
        // The requestor fields are the server's to fill: what the client says is ignored.
        let spoof =
            "  expirationSeconds: 86400\n  username: mallory\n  groups: [\"system:masters\"]\n";
        let manifest = csr_manifest(
            &name,
            &request,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
            spoof,
        );
        let out = c.apply_stdin(kubectl, &["create", "-f", "-"], &manifest);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(csr_field(&c, &name, ".spec.username"), "system:admin");
        assert_eq!(csr_field(&c, &name, ".spec.groups[0]"), "system:masters");

        let table = wait_condition(&c, kubectl, &name, "Pending");
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            [
                "NAME",
                "AGE",
                "SIGNERNAME",
                "REQUESTOR",
                "REQUESTEDDURATION",
                "CONDITION"
            ]
        );
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            [row[0], row[2], row[3], row[4]],
            [
                name.as_str(),
                "kubernetes.io/kube-apiserver-client",
                "system:admin",
                "24h"
            ],
            "{table}"
        );
        // Nothing is issued before approval.
        assert_eq!(csr_field(&c, &name, ".status.certificate"), "");

        let approved = c.ok(kubectl, &["certificate", "approve", &name]);
        assert!(approved.contains("approved"), "{approved}");
        wait_condition(&c, kubectl, &name, "Approved,Issued");
        assert_eq!(
            csr_field(&c, &name, ".status.conditions[0].reason"),
            "KubectlApprove"
        );
        let cert = unb64(&csr_field(&c, &name, ".status.certificate"));
        let cert_path = c.dir.path().join(format!("{name}.crt"));
        std::fs::write(&cert_path, &cert).expect("cert");
        let subject = openssl(&[
            "x509",
            "-in",
            cert_path.to_str().unwrap_or_default(),
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ]);
        // RFC 2253 lists the request's RDNs (CN first, then O) last to first.
        assert_eq!(subject.trim(), "subject=O=dev,CN=jane");
        // expirationSeconds is honoured: valid for more than 23h50m, not for 24h10m.
        let checkend = |secs: &str| {
            output_within(
                Command::new("openssl").args([
                    "x509",
                    "-in",
                    cert_path.to_str().unwrap_or_default(),
                    "-noout",
                    "-checkend",
                    secs,
                ]),
                None,
                Duration::from_secs(30),
            )
            .status
            .success()
        };
        assert!(
            checkend("85800") && !checkend("87000"),
            "the certificate should last 24h"
        );

        // jane logs in with it: the server sees user jane in group dev, as the CSR she
        // makes herself records. Like any user she needs a grant to make CSRs (RBAC).
        let jane = user_kubeconfig(&c, &name, &cert, &key);
        if i == 0 {
            c.ok(
                kubectl,
                &[
                    "create",
                    "clusterrole",
                    "csr-maker",
                    "--verb=create,get",
                    "--resource=certificatesigningrequests",
                ],
            );
            c.ok(
                kubectl,
                &[
                    "create",
                    "clusterrolebinding",
                    "jane-makes-csrs",
                    "--clusterrole=csr-maker",
                    "--user=jane",
                ],
            );
            c.wait_for_output(
                &[
                    "auth",
                    "can-i",
                    "create",
                    "certificatesigningrequests",
                    "--as=jane",
                ],
                "yes",
                Duration::from_secs(30),
            );
        }
        let (_, own) = key_and_request(c.dir.path(), &format!("{name}-own"), "/CN=whatever");
        let own_manifest = csr_manifest(
            &format!("{name}-own"),
            &own,
            "example.com/anything",
            &["client auth"],
            "",
        );
        let mut cmd = Command::new(kubectl);
        cmd.arg("--kubeconfig")
            .arg(&jane)
            .args(["--request-timeout=30s", "create", "-f", "-"]);
        let out = output_within(
            &mut cmd,
            Some(own_manifest.as_bytes()),
            Duration::from_secs(90),
        );
        assert!(
            out.status.success(),
            "jane's create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            csr_field(&c, &format!("{name}-own"), ".spec.username"),
            "jane"
        );
        assert_eq!(
            csr_field(&c, &format!("{name}-own"), ".spec.groups[0]"),
            "dev"
        );
        let listed = kubectl_as(&c, kubectl, &jane, &["get", "csr", &format!("{name}-own")]);
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        assert!(String::from_utf8_lossy(&listed.stdout).contains(" jane "));
        // A signer nobody serves: approved, never issued nor failed.
        c.ok(kubectl, &["certificate", "approve", &format!("{name}-own")]);
        wait_condition(&c, kubectl, &format!("{name}-own"), "Approved");
    }
}

#[test]
fn bad_denied_and_misfit_requests_issue_nothing_and_foreign_certificates_get_401() {
    let c = Cluster::start();
    for (i, kubectl) in kubectls().into_iter().enumerate() {
        // Every rule at once, with Kubernetes' field paths.
        let manifest = csr_manifest(
            &format!("bad-{i}"),
            &b64(b"hello"),
            "",
            &["client auth", "bogus", "client auth"],
            "  expirationSeconds: 60\n",
        );
        let out = c.apply_stdin(kubectl, &["create", "-f", "-"], &manifest);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        for want in [
            format!("The CertificateSigningRequest \"bad-{i}\" is invalid"),
            "spec.request: Invalid value: []byte{0x68, 0x65, 0x6c, 0x6c, 0x6f}: PEM block type must be CERTIFICATE REQUEST".into(),
            "spec.usages[1]: Unsupported value: \"bogus\"".into(),
            "spec.usages[2]: Duplicate value: \"client auth\"".into(),
            "spec.signerName: Required value".into(),
            "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)".into(),
        ] {
            assert!(err.contains(&want), "missing {want:?} in {err}");
        }
        let (_, request) = key_and_request(c.dir.path(), &format!("x-{i}"), "/CN=x");
        for (signer, want) in [
            ("kubernetes.io/legacy-unknown", "spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version"),
            ("nodomain", "spec.signerName: Invalid value: \"nodomain\": must be a fully qualified domain and path of the form 'example.com/signer-name'"),
        ] {
            let m = csr_manifest("s", &request, signer, &["client auth"], "");
            let out = c.apply_stdin(kubectl, &["create", "-f", "-"], &m);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains(want), "{signer}: {err}");
        }

        // Denied: stays without a certificate, and cannot be approved any more.
        let denied = format!("denied-{i}");
        create(
            &c,
            kubectl,
            &csr_manifest(
                &denied,
                &request,
                "kubernetes.io/kube-apiserver-client",
                &["client auth"],
                "",
            ),
        );
        c.ok(kubectl, &["certificate", "deny", &denied]);
        wait_condition(&c, kubectl, &denied, "Denied");
        assert_eq!(
            csr_field(&c, &denied, ".status.conditions[0].reason"),
            "KubectlDeny"
        );
        let err = String::from_utf8_lossy(
            &c.kubectl(kubectl, &["certificate", "approve", &denied])
                .stderr,
        )
        .into_owned();
        assert!(err.contains("is already Denied"), "{err}");
        // kubectl refuses by itself; the server refuses too, for clients that do not.
        let mut obj: serde_json::Value =
            serde_json::from_str(&c.ok(kubectl, &["get", "csr", &denied, "-o", "json"]))
                .expect("json");
        obj["status"]["conditions"]
            .as_array_mut()
            .expect("conditions")
            .push(serde_json::json!({"type": "Approved", "status": "True", "reason": "Sneaky"}));
        let file = c.write_file(&format!("{denied}.json"), &obj.to_string());
        let path =
            format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{denied}/approval");
        let err = c.fails(
            kubectl,
            &[
                "replace",
                "--raw",
                &path,
                "-f",
                file.to_str().unwrap_or_default(),
            ],
        );
        assert!(
            err.contains("Approved and Denied conditions are mutually exclusive"),
            "{err}"
        );
        // A request whose usages do not fit its signer fails once approved.
        let misfit = format!("misfit-{i}");
        create(
            &c,
            kubectl,
            &csr_manifest(
                &misfit,
                &request,
                "kubernetes.io/kube-apiserver-client",
                &["client auth", "server auth"],
                "",
            ),
        );
        c.ok(kubectl, &["certificate", "approve", &misfit]);
        wait_condition(&c, kubectl, &misfit, "Approved,Failed");
        assert_eq!(
            csr_field(
                &c,
                &misfit,
                ".status.conditions[?(@.type==\"Failed\")].message"
            ),
            "invalid usage for client certificate: server auth"
        );
        assert_eq!(csr_field(&c, &misfit, ".status.certificate"), "");
        // One approved in the same way after them is issued: the signer has run since.
        let fine = format!("fine-{i}");
        create(
            &c,
            kubectl,
            &csr_manifest(
                &fine,
                &request,
                "kubernetes.io/kube-apiserver-client",
                &["client auth"],
                "",
            ),
        );
        c.ok(kubectl, &["certificate", "approve", &fine]);
        wait_condition(&c, kubectl, &fine, "Approved,Issued");
        assert_eq!(csr_field(&c, &denied, ".status.certificate"), "");
        // The signer writes only through /status; the spec does not change on update.
        let patched = c.kubectl(
            kubectl,
            &[
                "patch",
                "csr",
                &fine,
                "--type=merge",
                "-p",
                "{\"spec\":{\"username\":\"mallory\"}}",
            ],
        );
        assert!(
            patched.status.success(),
            "{}",
            String::from_utf8_lossy(&patched.stderr)
        );
        assert_eq!(csr_field(&c, &fine, ".spec.username"), "system:admin");
    }

    // A certificate for system:admin itself, signed by another CA: 401.
    let dir = c.dir.path();
    let p = |n: &str| dir.join(n).to_str().unwrap_or_default().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("evil-ca.key"),
        "-out",
        &p("evil-ca.crt"),
        "-subj",
        "/CN=evil-ca",
        "-days",
        "1",
    ]);
    let (key, _) = key_and_request(dir, "evil", "/CN=system:admin/O=system:masters");
    // A v3 client certificate, as any CA issues them.
    let ext = c
        .write_file("evil.ext", "extendedKeyUsage = clientAuth\n")
        .to_str()
        .unwrap_or_default()
        .to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("evil.csr"),
        "-CA",
        &p("evil-ca.crt"),
        "-CAkey",
        &p("evil-ca.key"),
        "-CAcreateserial",
        "-extfile",
        &ext,
        "-out",
        &p("evil.crt"),
        "-days",
        "1",
    ]);
    let cert = std::fs::read(dir.join("evil.crt")).expect("cert");
    let evil = user_kubeconfig(&c, "evil", &cert, &key);
    for kubectl in kubectls() {
        let out = kubectl_as(&c, kubectl, &evil, &["get", "csr"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        // 401: "(Unauthorized)" from 1.27, "(the server has asked for the client to
        // provide credentials)" from later versions.
        assert!(
            err.contains("You must be logged in to the server"),
            "{kubectl}: {err}"
        );
    }
}
fn lease_renewed(c: &Cluster, node: &str) -> String {
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            node,
            "-o",
            "jsonpath={.spec.renewTime}",
        ],
    )
}

#[test]
fn an_agent_swaps_the_join_token_for_a_node_certificate_of_its_own() {
    let c = Cluster::start();
    let guard = NetGuard(NetNames::fresh());
    let net = &guard.0;
    let token_file = c.data_dir().join("server/token");
    let mut agent = Agent::start(&c, "n1", "agent-data", &token_file, net);
    c.wait_for_output(
        &[
            "get",
            "node",
            "n1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
        Duration::from_secs(90),
    );
    // One request, from the token's user, for system:node:n1, approved by the controller
    // and issued.
    let csrs = c.ok(KUBECTL_DEFAULT, &["get", "csr", "-o", "jsonpath={range .items[*]}{.metadata.name} {.spec.username} {.spec.signerName} {.status.conditions[0].reason}{\"\\n\"}{end}"]);
    // (The serving certificate's request is looked at below.)
    let rows: Vec<&str> = csrs
        .lines()
        .filter(|r| !r.contains("kubernetes.io/kubelet-serving"))
        .collect();
    assert_eq!(rows.len(), 1, "{csrs}");
    let f: Vec<&str> = rows[0].split_whitespace().collect();
    assert!(f[0].starts_with("node-csr-"), "{csrs}");
    assert_eq!(
        &f[1..],
        [
            "system:node-bootstrap",
            "kubernetes.io/kube-apiserver-client-kubelet",
            "AutoApproved"
        ]
    );
    for kubectl in kubectls() {
        let table = c.ok(kubectl, &["get", "csr", f[0]]);
        assert!(
            table.contains("system:node-bootstrap") && table.contains("Approved,Issued"),
            "{table}"
        );
    }
    // The agent's credential, as its kubeconfig names it, is user system:node:n1 in
    // system:nodes: a request made with it records so.
    let pki = c.dir.path().join("agent-data/pki");
    let mode = std::fs::metadata(pki.join("client.key"))
        .expect("key")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let (_, own) = key_and_request(c.dir.path(), "by-node", "/CN=system:node:n1/O=system:nodes");
    let m = csr_manifest(
        "by-node",
        &own,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        "",
    );
    let mut cmd = Command::new(KUBECTL_DEFAULT);
    cmd.arg("--kubeconfig").arg(pki.join("kubeconfig")).args([
        "--request-timeout=30s",
        "create",
        "-f",
        "-",
    ]);
    let out = output_within(&mut cmd, Some(m.as_bytes()), Duration::from_secs(90));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(csr_field(&c, "by-node", ".spec.username"), "system:node:n1");
    assert_eq!(csr_field(&c, "by-node", ".spec.groups[0]"), "system:nodes");
    // A node renewing its own certificate is approved too (selfnodeclient).
    wait_condition(&c, KUBECTL_DEFAULT, "by-node", "Approved,Issued");
    assert_eq!(
        csr_field(&c, "by-node", ".status.conditions[0].message"),
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    );

    // The serving certificate: asked for by the node itself, approved for its own name
    // and address, kept beside the client certificate.
    let serving = |c: &Cluster| {
        c.ok(KUBECTL_DEFAULT, &["get", "csr", "-o", "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.metadata.name} {.spec.username} {.status.conditions[0].reason}{\"\\n\"}{end}"])
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !serving(&c).contains("system:node:n1 AutoApproved") {
        assert!(
            std::time::Instant::now() < deadline,
            "no approved serving request: {}",
            serving(&c)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(serving(&c).lines().count(), 1, "{}", serving(&c));
    let deadline = std::time::Instant::now() + WAIT;
    while !pki.join("server.crt").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no kept serving certificate"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mode = std::fs::metadata(pki.join("server.key"))
        .expect("key")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // Restarted with a token that is no longer any good, the agent carries on with its
    // certificate: its Lease keeps being renewed, and it asks for nothing new.
    agent.stop();
    let before = lease_renewed(&c, "n1");
    let bogus = c.write_file("bogus-token", "K10::server:not-the-secret\n");
    let _agent = Agent::start(&c, "n1", "agent-data", &bogus, net);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while lease_renewed(&c, "n1") == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted agent never renewed its Lease\n{}",
            std::fs::read_to_string(c.dir.path().join("agent-data.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let count = c
        .ok(KUBECTL_DEFAULT, &["get", "csr", "-o", "name"])
        .lines()
        .count();
    assert_eq!(count, 3, "the restarted agent made no new request");
}
