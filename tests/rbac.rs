//! RBAC end to end, with both kubectl versions: users from client certificates signed by
//! the cluster CA, Roles and bindings made with `kubectl create`, 403 answers in
//! Kubernetes' words, `auth can-i` (also `--list` and `--as`), `auth whoami`,
//! privilege-escalation prevention, impersonation without the verb, and the namespaces
//! that may not be deleted.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{kubectls, Cluster};

/// A user's kubeconfig: the cluster's server and CA, and a client certificate with
/// CN=`name` and one O per group, signed by the cluster CA (as a CSR signed by the
/// kube-apiserver-client signer would be).
fn user_kubeconfig(c: &Cluster, name: &str, groups: &[&str]) -> PathBuf {
    let tls = c.data_dir().join("server/tls");
    let ca_pem = std::fs::read_to_string(tls.join("server-ca.crt")).expect("ca");
    let ca_key = std::fs::read_to_string(tls.join("server-ca.key")).expect("ca key");
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&ca_key).expect("key"))
            .expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    for g in groups {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *g);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let admin = std::fs::read_to_string(c.kubeconfig()).expect("admin kubeconfig");
    let field = |k: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .expect("kubeconfig field")
            .trim()
            .to_string()
    };
    let crt = c.write_file(&format!("{name}.crt"), &cert.pem());
    let key = c.write_file(&format!("{name}.key"), &key.serialize_pem());
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: c\ncontexts:\n- context:\n    cluster: c\n    user: u\n  name: c\ncurrent-context: c\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\n",
        field("certificate-authority-data:"),
        field("server:"),
        crt.display(),
        key.display(),
    );
    c.write_file(&format!("{name}.kubeconfig"), &cfg)
}

/// kubectl as the user of `kubeconfig` (the later `--kubeconfig` wins over the admin's).
fn run_as(
    c: &Cluster,
    kubectl: &str,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let flag = format!("--kubeconfig={}", kubeconfig.display());
    let mut all = vec![flag.as_str()];
    all.extend_from_slice(args);
    c.kubectl(kubectl, &all)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// Poll until kubectl as the user succeeds: a binding takes effect once the
/// authorizer's cache has seen it, as on Kubernetes.
fn wait_allowed(c: &Cluster, kubectl: &str, kc: &std::path::Path, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run_as(c, kubectl, kc, args);
        if out.status.success() {
            return text(&out.stdout);
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} never allowed: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The stderr of a command that must fail.
fn refused(c: &Cluster, kubectl: &str, kc: &std::path::Path, args: &[&str]) -> String {
    let out = run_as(c, kubectl, kc, args);
    assert!(
        !out.status.success(),
        "{kubectl} {args:?} should be refused; stdout: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// The rows of `kubectl auth can-i --list` that name resources: (resource, verbs).
fn resource_rows(list: &str) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = list
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let verbs = l.rsplit_once("   ")?.1.trim().to_string();
            Some((cols.first()?.to_string(), verbs))
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn users_roles_and_bindings() {
    let c = Cluster::start();
    let admin_ok = |k: &str, args: &[&str]| c.ok(k, args);
    for (i, k) in kubectls().into_iter().enumerate() {
        let jane = format!("jane-{i}");
        let bob = format!("bob-{i}");
        let role = format!("pod-reader-{i}");
        let jane_kc = user_kubeconfig(&c, &jane, &["dev"]);
        let bob_kc = user_kubeconfig(&c, &bob, &[]);

        // Before any binding, jane may discover but not list pods.
        let err = refused(&c, k, &jane_kc, &["get", "pods", "-n", "default"]);
        assert!(
            err.contains(&format!("Error from server (Forbidden): pods is forbidden: User \"{jane}\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"")),
            "{err}"
        );

        admin_ok(
            k,
            &[
                "create",
                "role",
                &role,
                "--verb=get,list,watch",
                "--resource=pods",
                "-n",
                "default",
            ],
        );
        admin_ok(
            k,
            &[
                "create",
                "rolebinding",
                &format!("{jane}-pods"),
                &format!("--role={role}"),
                &format!("--user={jane}"),
                "--serviceaccount=default:robot",
                "-n",
                "default",
            ],
        );
        admin_ok(
            k,
            &[
                "run",
                &format!("web-{i}"),
                "--image=registry.invalid/web:1",
                "-n",
                "default",
            ],
        );

        // The tables kubectl shows.
        let table = admin_ok(
            k,
            &["get", "role,rolebinding", "-o", "wide", "-n", "default"],
        );
        assert!(
            table.contains(&format!("role.rbac.authorization.k8s.io/{role}")),
            "{table}"
        );
        let header = table
            .lines()
            .find(|l| l.contains("ROLE") && l.contains("USERS"))
            .unwrap_or_else(|| panic!("no binding header in {table}"));
        let cols: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(
            cols,
            ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
            "{table}"
        );
        let row = table
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "rolebinding.rbac.authorization.k8s.io/{jane}-pods"
                ))
            })
            .unwrap_or_else(|| panic!("no binding row in {table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], format!("Role/{role}"), "{row}");
        assert_eq!(&cells[3..], [jane.as_str(), "default/robot"], "{row}");

        // jane reads pods, and nothing else.
        let pods = wait_allowed(
            &c,
            k,
            &jane_kc,
            &["get", "pods", "-n", "default", "-o", "name"],
        );
        assert!(pods.contains(&format!("pod/web-{i}")), "{pods}");
        let err = refused(
            &c,
            k,
            &jane_kc,
            &["delete", "pod", &format!("web-{i}"), "-n", "default"],
        );
        assert!(
            err.contains(&format!("Error from server (Forbidden): pods \"web-{i}\" is forbidden: User \"{jane}\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\"")),
            "{err}"
        );
        let err = refused(&c, k, &jane_kc, &["get", "secrets", "-n", "default"]);
        assert!(
            err.contains(&format!("Error from server (Forbidden): secrets is forbidden: User \"{jane}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"")),
            "{err}"
        );
        let err = refused(&c, k, &jane_kc, &["get", "pods", "-n", "kube-system"]);
        assert!(err.contains("in the namespace \"kube-system\""), "{err}");

        // can-i, as the admin impersonating jane and as jane herself.
        let can = |args: &[&str]| {
            let out = c.kubectl(k, args);
            (out.status.success(), text(&out.stdout))
        };
        assert_eq!(
            can(&[
                "auth",
                "can-i",
                "get",
                "pods",
                "-n",
                "default",
                &format!("--as={jane}")
            ]),
            (true, "yes".into())
        );
        assert_eq!(
            can(&[
                "auth",
                "can-i",
                "delete",
                "pods",
                "-n",
                "default",
                &format!("--as={jane}")
            ]),
            (false, "no".into())
        );
        let out = run_as(
            &c,
            k,
            &jane_kc,
            &["auth", "can-i", "list", "secrets", "-n", "default"],
        );
        assert_eq!(
            (out.status.success(), text(&out.stdout)),
            (false, "no".into())
        );
        let list = admin_ok(
            k,
            &[
                "auth",
                "can-i",
                "--list",
                &format!("--as={jane}"),
                "-n",
                "default",
            ],
        );
        let rows = resource_rows(&list);
        let want: Vec<(String, String)> = [
            ("pods", "[get list watch]"),
            ("selfsubjectaccessreviews.authorization.k8s.io", "[create]"),
            ("selfsubjectreviews.authentication.k8s.io", "[create]"),
            ("selfsubjectrulesreviews.authorization.k8s.io", "[create]"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(rows, want, "{list}");
        assert!(list.contains("[/api/*]"), "{list}");

        // A ClusterRole bound cluster-wide: bob reads secrets in every namespace.
        let sr = format!("secret-reader-{i}");
        admin_ok(
            k,
            &[
                "create",
                "clusterrole",
                &sr,
                "--verb=get,list,watch",
                "--resource=secrets",
            ],
        );
        admin_ok(
            k,
            &[
                "create",
                "clusterrolebinding",
                &format!("{bob}-secrets"),
                &format!("--clusterrole={sr}"),
                &format!("--user={bob}"),
            ],
        );
        wait_allowed(&c, k, &bob_kc, &["get", "secrets", "-A"]);
        wait_allowed(&c, k, &bob_kc, &["get", "secrets", "-n", "kube-system"]);
        let err = refused(&c, k, &bob_kc, &["get", "pods", "-n", "default"]);
        assert!(
            err.contains(&format!("User \"{bob}\" cannot list resource \"pods\"")),
            "{err}"
        );
        let crb = admin_ok(
            k,
            &[
                "get",
                "clusterrolebinding",
                &format!("{bob}-secrets"),
                "-o",
                "wide",
            ],
        );
        assert!(
            crb.contains(&format!("ClusterRole/{sr}")) && crb.contains(&bob),
            "{crb}"
        );

        // whoami: the admin's certificate, and jane's.
        let who = admin_ok(k, &["auth", "whoami"]);
        let line = |who: &str, key: &str| {
            who.lines()
                .find(|l| l.starts_with(key))
                .map(|l| l[key.len()..].trim().to_string())
                .unwrap_or_else(|| panic!("no {key} in {who}"))
        };
        assert_eq!(line(&who, "Username"), "system:admin", "{who}");
        assert_eq!(
            line(&who, "Groups"),
            "[system:masters system:authenticated]",
            "{who}"
        );
        let out = run_as(&c, k, &jane_kc, &["auth", "whoami"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let who = text(&out.stdout);
        assert_eq!(line(&who, "Username"), jane, "{who}");
        assert_eq!(line(&who, "Groups"), "[dev system:authenticated]", "{who}");
    }
}

#[test]
fn escalation_impersonation_and_protected_namespaces() {
    let c = Cluster::start();
    c.ok(common::KUBECTL_DEFAULT, &["create", "namespace", "team"]);
    // A team lead who may manage roles and bindings in `team` and read pods there.
    c.apply(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rbac-manager, namespace: team}
rules:
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create, get, list, update, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lead-manages, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: rbac-manager}
subjects:
- {kind: User, name: lead, apiGroup: rbac.authorization.k8s.io}
"#,
    );
    let lead = user_kubeconfig(&c, "lead", &[]);
    for (i, k) in kubectls().into_iter().enumerate() {
        // A role within the lead's own rights is fine; one beyond them is refused.
        wait_allowed(
            &c,
            k,
            &lead,
            &[
                "create",
                "role",
                &format!("pods-{i}"),
                "--verb=get",
                "--resource=pods",
                "-n",
                "team",
            ],
        );
        let err = refused(
            &c,
            k,
            &lead,
            &[
                "create",
                "role",
                &format!("secrets-{i}"),
                "--verb=get,list",
                "--resource=secrets",
                "-n",
                "team",
            ],
        );
        assert!(
            err.contains(&format!("roles.rbac.authorization.k8s.io \"secrets-{i}\" is forbidden: user \"lead\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:")),
            "{err}"
        );
        assert!(
            err.contains(r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}"#),
            "{err}"
        );
        // Binding a role whose rules the lead holds works; binding `edit` does not.
        c.ok(k, &["get", "clusterrole", "edit"]);
        let out = run_as(
            &c,
            k,
            &lead,
            &[
                "create",
                "rolebinding",
                &format!("dev-pods-{i}"),
                &format!("--role=pods-{i}"),
                "--user=dev",
                "-n",
                "team",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let err = refused(
            &c,
            k,
            &lead,
            &[
                "create",
                "rolebinding",
                &format!("dev-edit-{i}"),
                "--clusterrole=edit",
                "--user=dev",
                "-n",
                "team",
            ],
        );
        assert!(
            err.contains(&format!("rolebindings.rbac.authorization.k8s.io \"dev-edit-{i}\" is forbidden: user \"lead\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:")),
            "{err}"
        );
        // Impersonation needs the impersonate verb.
        let err = refused(
            &c,
            k,
            &lead,
            &["get", "pods", "-n", "team", "--as=admin-wannabe"],
        );
        assert!(
            err.contains(r#"Error from server (Forbidden): users "admin-wannabe" is forbidden: User "lead" cannot impersonate resource "users" in API group "" at the cluster scope"#),
            "{err}"
        );
        let err = refused(
            &c,
            k,
            &lead,
            &[
                "get",
                "pods",
                "-n",
                "team",
                "--as=lead",
                "--as-group=system:masters",
            ],
        );
        assert!(
            err.contains(r#"cannot impersonate resource "users""#),
            "{err}"
        );

        // The system's namespaces may not be deleted; others may.
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let err = c.fails(k, &["delete", "namespace", ns]);
            assert!(
                err.contains(&format!("Error from server (Forbidden): namespaces \"{ns}\" is forbidden: this namespace may not be deleted")),
                "{err}"
            );
        }
        c.ok(k, &["create", "namespace", &format!("scratch-{i}")]);
        c.ok(
            k,
            &[
                "delete",
                "namespace",
                &format!("scratch-{i}"),
                "--wait=false",
            ],
        );
        // Namespaces offer no deletecollection (as kube-apiserver's storage), so no
        // single request empties the cluster's namespaces past the check above.
        let err = c.fails(k, &["delete", "--raw", "/api/v1/namespaces"]);
        assert!(
            err.contains("the server does not allow this method on the requested resource"),
            "{err}"
        );
        let verbs = c.ok(k, &["get", "--raw", "/api/v1"]);
        let verbs: serde_json::Value = serde_json::from_str(&verbs).expect("discovery json");
        let ns_verbs = verbs["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "namespaces"))
            .map(|r| r["verbs"].clone());
        assert_eq!(
            ns_verbs,
            Some(serde_json::json!([
                "create", "delete", "get", "list", "patch", "update", "watch"
            ]))
        );

        // The review resources are in discovery, so kubectl can create one from a file.
        let names = c.ok(
            k,
            &[
                "api-resources",
                "--api-group=authorization.k8s.io",
                "-o",
                "name",
            ],
        );
        for r in [
            "selfsubjectaccessreviews",
            "subjectaccessreviews",
            "localsubjectaccessreviews",
            "selfsubjectrulesreviews",
        ] {
            assert!(
                names
                    .lines()
                    .any(|l| l == format!("{r}.authorization.k8s.io")),
                "{names}"
            );
        }
        let names = c.ok(
            k,
            &[
                "api-resources",
                "--api-group=authentication.k8s.io",
                "-o",
                "name",
            ],
        );
        assert!(
            names.contains("tokenreviews.authentication.k8s.io"),
            "{names}"
        );
        let review = c.write_file(
            "ssar.yaml",
            "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\nspec:\n  resourceAttributes:\n    verb: delete\n    resource: pods\n    namespace: team\n",
        );
        let review = review.to_str().expect("utf-8 path");
        let allowed = c.ok(
            k,
            &["create", "-f", review, "-o", "jsonpath={.status.allowed}"],
        );
        assert_eq!(allowed.trim(), "true", "the admin may delete pods");
        let allowed = c.ok(
            k,
            &[
                "create",
                "-f",
                review,
                "--as=jane",
                "-o",
                "jsonpath={.status.allowed}",
            ],
        );
        assert_eq!(allowed.trim(), "false", "jane may not delete pods");

        // Bad input: a changed roleRef, an unknown subject kind.
        let err = c.fails(
            k,
            &[
                "patch",
                "rolebinding",
                &format!("dev-pods-{i}"),
                "-n",
                "team",
                "--type=merge",
                "-p",
                r#"{"roleRef":{"name":"rbac-manager"}}"#,
            ],
        );
        assert!(
            err.contains(&format!("The RoleBinding \"dev-pods-{i}\" is invalid: roleRef: Invalid value: rbac.RoleRef{{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"rbac-manager\"}}: cannot change roleRef")),
            "{err}"
        );
        let out = c.apply_stdin(k, &["apply", "-f", "-"], &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: robots-{i}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: x}}\nsubjects:\n- {{kind: Robot, name: r2}}\n"
        ));
        let err = text(&out.stderr);
        assert!(
            err.contains(
                r#"roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#
            ),
            "{err}"
        );
        assert!(err.contains(r#"subjects[0].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group""#), "{err}");
    }
    // Aggregation: a ClusterRole labelled for `view` adds its rules to view, edit and admin.
    c.apply(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- {apiGroups: [example.com], resources: [widgets], verbs: [get, list]}
"#,
    );
    for role in ["view", "edit", "admin"] {
        c.wait_for_output(
            &[
                "get",
                "clusterrole",
                role,
                "-o",
                "jsonpath={.rules[?(@.resources[0]==\"widgets\")].verbs}",
            ],
            r#"["get","list"]"#,
            Duration::from_secs(30),
        );
    }
}
