//! The write paths kubectl users rely on: client-side apply and re-apply, server-side
//! apply with conflicts, typed `create` (protobuf on kubectl 1.32+), label, annotate,
//! patch of every type, edit, output formats, watch and delete.

mod common;

use std::time::Duration;

use common::{kubectls, output_within, Cluster, LineReader, KUBECTL_LIMIT};

fn manifest(ns: &str, replicas: u32, image: &str, with_color: bool) -> String {
    let color = if with_color { "\n  color: blue" } else { "" };
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: {ns}
data:
  greeting: hello{color}
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
  namespace: {ns}
stringData:
  password: s3cr3t
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: {image}
        ports:
        - containerPort: 8080
        resources:
          limits:
            memory: 64Mi
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

#[test]
fn client_side_apply_and_reapply() {
    let c = Cluster::start();
    for (i, k) in kubectls().into_iter().enumerate() {
        let ns = format!("apply{i}");
        let f = c.write_file(
            &format!("app{i}.yaml"),
            &manifest(&ns, 2, "registry.local/web:v1", true),
        );
        let out = c.ok(k, &["apply", "-f", f.to_str().unwrap_or_default()]);
        for o in [
            "namespace/",
            "configmap/web-config created",
            "secret/web-secret created",
            "deployment.apps/web created",
            "service/web created",
        ] {
            assert!(out.contains(o), "{o} not in:\n{out}");
        }
        // Unchanged manifest: nothing to do. (A Secret written with stringData shows
        // "configured" on every apply on Kubernetes too: stringData is write-only.)
        let out = c.ok(k, &["apply", "-f", f.to_str().unwrap_or_default()]);
        assert!(
            out.lines()
                .filter(|l| !l.starts_with("secret/"))
                .all(|l| l.ends_with("unchanged")),
            "re-apply of the same file changed something:\n{out}"
        );
        assert_eq!(
            c.ok(
                k,
                &[
                    "get",
                    "secret",
                    "web-secret",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.data.password}"
                ]
            ),
            "czNjcjN0"
        );

        // Edited manifest: replicas and image change, a removed key is removed.
        let f = c.write_file(
            &format!("app{i}.yaml"),
            &manifest(&ns, 3, "registry.local/web:v2", false),
        );
        let out = c.ok(k, &["apply", "-f", f.to_str().unwrap_or_default()]);
        assert!(
            out.contains("deployment.apps/web configured")
                && out.contains("configmap/web-config configured"),
            "{out}"
        );
        assert_eq!(c.ok(k, &["get", "deploy", "web", "-n", &ns, "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.generation}"]), "3 registry.local/web:v2 2");
        let data = c.ok(
            k,
            &[
                "get",
                "cm",
                "web-config",
                "-n",
                &ns,
                "-o",
                "jsonpath={.data}",
            ],
        );
        assert!(
            data.contains("greeting") && !data.contains("color"),
            "removed key still there: {data}"
        );

        let wide = c.ok(k, &["get", "deploy", "-n", &ns, "-o", "wide"]);
        assert!(
            wide.contains("CONTAINERS")
                && wide.contains("registry.local/web:v2")
                && wide.contains("app=web"),
            "{wide}"
        );
        let svc = c.ok(k, &["get", "svc", "web", "-n", &ns]);
        assert!(svc.contains("ClusterIP") && svc.contains("80/TCP"), "{svc}");
    }
}

#[test]
fn server_side_apply_conflicts_and_force() {
    let c = Cluster::start();
    for (i, k) in kubectls().into_iter().enumerate() {
        let name = format!("ssa{i}");
        let a = c.write_file(&format!("{name}-a.yaml"), &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  a: \"1\"\n"));
        let b = c.write_file(&format!("{name}-b.yaml"), &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  a: \"2\"\n"));
        let out = c.ok(
            k,
            &[
                "apply",
                "--server-side",
                "-f",
                a.to_str().unwrap_or_default(),
            ],
        );
        assert!(out.contains("serverside-applied"), "{out}");
        let err = c.fails(
            k,
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "-f",
                b.to_str().unwrap_or_default(),
            ],
        );
        assert!(
            err.contains("conflict") && err.contains("\"kubectl\"") && err.contains(".data.a"),
            "{err}"
        );
        assert_eq!(
            c.ok(k, &["get", "cm", &name, "-o", "jsonpath={.data.a}"]),
            "1"
        );
        c.ok(
            k,
            &[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                b.to_str().unwrap_or_default(),
            ],
        );
        assert_eq!(
            c.ok(k, &["get", "cm", &name, "-o", "jsonpath={.data.a}"]),
            "2"
        );
        let mf = c.ok(
            k,
            &[
                "get",
                "cm",
                &name,
                "-o",
                "jsonpath={.metadata.managedFields[*].manager}",
                "--show-managed-fields",
            ],
        );
        assert!(mf.contains("other"), "{mf}");
    }
}

#[test]
fn typed_create_label_annotate_patch_edit_and_formats() {
    let c = Cluster::start();
    for (i, k) in kubectls().into_iter().enumerate() {
        let ns = format!("typed{i}");
        c.ok(k, &["create", "namespace", &ns]);
        c.ok(
            k,
            &["create", "configmap", "cm", "-n", &ns, "--from-literal=k=v"],
        );
        c.ok(
            k,
            &[
                "create",
                "secret",
                "generic",
                "sec",
                "-n",
                &ns,
                "--from-literal=user=admin",
            ],
        );
        c.ok(
            k,
            &[
                "create",
                "deployment",
                "dep",
                "-n",
                &ns,
                "--image=registry.local/app:v1",
                "--replicas=2",
            ],
        );
        assert_eq!(
            c.ok(
                k,
                &["get", "cm", "cm", "-n", &ns, "-o", "jsonpath={.data.k}"]
            ),
            "v"
        );
        assert_eq!(
            c.ok(
                k,
                &[
                    "get",
                    "secret",
                    "sec",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.data.user}"
                ]
            ),
            "YWRtaW4="
        );
        assert_eq!(
            c.ok(
                k,
                &[
                    "get",
                    "deploy",
                    "dep",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.spec.replicas}/{.spec.strategy.type}"
                ]
            ),
            "2/RollingUpdate"
        );

        c.ok(k, &["label", "cm", "cm", "-n", &ns, "tier=backend"]);
        c.ok(k, &["annotate", "cm", "cm", "-n", &ns, "owner=team-a"]);
        let labels = c.ok(
            k,
            &[
                "get",
                "cm",
                "-n",
                &ns,
                "-l",
                "tier in (backend,frontend)",
                "-o",
                "name",
            ],
        );
        assert_eq!(labels.trim(), "configmap/cm");
        // `!=` also selects objects without the label: the namespace's CA ConfigMap,
        // which the root CA publisher puts in every namespace.
        assert_eq!(
            c.ok(
                k,
                &["get", "cm", "-n", &ns, "-l", "tier!=backend", "-o", "name"]
            )
            .trim(),
            "configmap/kube-root-ca.crt"
        );
        assert_eq!(
            c.ok(
                k,
                &[
                    "get",
                    "cm",
                    "cm",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.metadata.annotations.owner}"
                ]
            ),
            "team-a"
        );

        c.ok(
            k,
            &[
                "patch",
                "cm",
                "cm",
                "-n",
                &ns,
                "--type",
                "merge",
                "-p",
                r#"{"data":{"m":"merged"}}"#,
            ],
        );
        c.ok(k, &["patch", "cm", "cm", "-n", &ns, "--type", "json", "-p", r#"[{"op":"add","path":"/data/j","value":"jsonpatched"},{"op":"remove","path":"/data/k"}]"#]);
        c.ok(k, &["patch", "deploy", "dep", "-n", &ns, "--type", "strategic", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"registry.local/app:v2"}]}}}}"#]);
        let data = c.ok(k, &["get", "cm", "cm", "-n", &ns, "-o", "jsonpath={.data}"]);
        assert!(
            data.contains("merged") && data.contains("jsonpatched") && !data.contains("\"k\""),
            "{data}"
        );
        assert_eq!(
            c.ok(
                k,
                &[
                    "get",
                    "deploy",
                    "dep",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.spec.template.spec.containers[*].image}"
                ]
            ),
            "registry.local/app:v2"
        );

        // kubectl edit with an editor script that rewrites a value.
        let editor = c.write_file("editor.sh", "#!/bin/sh\nsed -i 's/merged/edited/' \"$1\"\n");
        std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let out = output_within(
            c.kubectl_cmd(k, &["edit", "cm", "cm", "-n", &ns])
                .env("EDITOR", &editor)
                .env("KUBE_EDITOR", &editor),
            None,
            KUBECTL_LIMIT,
        );
        assert!(
            out.status.success(),
            "edit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            c.ok(
                k,
                &["get", "cm", "cm", "-n", &ns, "-o", "jsonpath={.data.m}"]
            ),
            "edited"
        );

        let y = c.ok(k, &["get", "cm", "cm", "-n", &ns, "-o", "yaml"]);
        assert!(
            y.contains("kind: ConfigMap") && y.contains("resourceVersion:") && y.contains("uid:"),
            "{y}"
        );
        let j: serde_json::Value =
            serde_json::from_str(&c.ok(k, &["get", "cm", "-n", &ns, "-o", "json"]))
                .expect("json list");
        assert_eq!(j["kind"], "List");
        assert_eq!(j["items"][0]["metadata"]["name"], "cm");
        let names = c.ok(k, &["get", "all", "-n", &ns, "-o", "name"]);
        assert!(names.contains("deployment.apps/dep"), "{names}");
        let table = c.ok(k, &["get", "cm", "-n", &ns, "-L", "tier", "--show-labels"]);
        assert!(
            table.contains("TIER") && table.contains("backend") && table.contains("tier=backend"),
            "{table}"
        );
        let all_ns = c.ok(k, &["get", "deploy", "-A"]);
        assert!(
            all_ns.starts_with("NAMESPACE") && all_ns.contains(&ns),
            "{all_ns}"
        );

        c.ok(k, &["delete", "cm", "cm", "-n", &ns]);
        let err = c.fails(k, &["get", "cm", "cm", "-n", &ns]);
        assert!(
            err.contains("NotFound") && err.contains("configmaps \"cm\" not found"),
            "{err}"
        );
        c.ok(k, &["delete", "namespace", &ns]);
        let err = c.fails(k, &["get", "namespace", &ns]);
        assert!(err.contains("not found"), "{err}");
    }
}

#[test]
fn watch_sees_changes_from_another_client() {
    let c = Cluster::start();
    for (i, k) in kubectls().into_iter().enumerate() {
        let name = format!("watched{i}");
        c.ok(k, &["create", "configmap", &name, "--from-literal=a=1"]);
        let w = LineReader::spawn(c.kubectl_cmd(
            k,
            &[
                "get",
                "configmap",
                "-w",
                "-o",
                "custom-columns=NAME:.metadata.name,A:.data.a",
            ],
        ));
        w.wait_for(&name, Duration::from_secs(20));
        c.ok(
            common::KUBECTL_DEFAULT,
            &[
                "patch",
                "configmap",
                &name,
                "--type",
                "merge",
                "-p",
                r#"{"data":{"a":"changed"}}"#,
            ],
        );
        w.wait_for("changed", Duration::from_secs(20));
        // The default table watch too. kubectl prints the header and the current row
        // before any event arrives, so wait for that row first; only a row carrying the
        // label added afterwards can have come from a watch event.
        let t = LineReader::spawn(
            c.kubectl_cmd(k, &["get", "configmap", &name, "-w", "--show-labels"]),
        );
        let initial = t.wait_for(&name, Duration::from_secs(20));
        assert!(initial[0].starts_with("NAME"), "{initial:?}");
        assert!(
            initial.iter().all(|l| !l.contains("seen=yes")),
            "{initial:?}"
        );
        c.ok(
            common::KUBECTL_DEFAULT,
            &["label", "configmap", &name, "seen=yes"],
        );
        let lines = t.wait_for("seen=yes", Duration::from_secs(20));
        let row = lines.last().expect("a row");
        assert!(row.starts_with(&name), "{lines:?}");
    }
}

/// ReplicationController, the kind kubectl and client suites still use: created from a
/// manifest with Kubernetes' defaults (selector and labels from the template, one
/// replica), listed by its short name, scaled through its scale subresource, and
/// refused with kube-apiserver's words when its pods would not restart Always.
#[test]
fn replication_controllers_create_get_and_scale() {
    let c = Cluster::start();
    for (i, k) in kubectls().into_iter().enumerate() {
        let ns = format!("rc{i}");
        c.ok(k, &["create", "namespace", &ns]);
        let rc = c.write_file(
            &format!("rc{i}.yaml"),
            &format!(
                "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: c\n        image: registry.local/app:v1\n"
            ),
        );
        let path = rc.to_string_lossy().into_owned();
        c.ok(k, &["create", "-f", &path]);
        let web = |jsonpath: &str| {
            let output = format!("jsonpath={jsonpath}");
            c.ok(k, &["get", "rc", "web", "-n", &ns, "-o", &output])
        };
        assert_eq!(
            web("{.spec.selector.app}/{.metadata.labels.app}/{.spec.replicas}/{.spec.template.spec.restartPolicy}"),
            "web/web/1/Always"
        );
        let listed = c.ok(k, &["get", "rc", "-n", &ns]);
        assert!(
            listed.lines().next().is_some_and(|h| h.starts_with("NAME")),
            "{listed}"
        );
        assert!(
            listed.lines().skip(1).any(|l| l.starts_with("web ")),
            "{listed}"
        );

        let scaled = c.ok(k, &["scale", "rc", "web", "-n", &ns, "--replicas=3"]);
        assert!(scaled.contains("scaled"), "{scaled}");
        assert_eq!(web("{.spec.replicas}"), "3");
        let scale: serde_json::Value = serde_json::from_str(&c.ok(
            k,
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/replicationcontrollers/web/scale"),
            ],
        ))
        .expect("scale json");
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["selector"], "app=web");

        let never = c.write_file(
            &format!("never{i}.yaml"),
            &format!(
                "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: never\n  namespace: {ns}\nspec:\n  selector:\n    app: never\n  template:\n    metadata:\n      labels:\n        app: never\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: registry.local/app:v1\n"
            ),
        );
        let err = c.fails(k, &["create", "-f", &never.to_string_lossy()]);
        assert!(
            err.contains("The ReplicationController \"never\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""),
            "{err}"
        );
    }
}

/// A Job must say how its pods restart: its template is defaulted as any pod's
/// (Always), which kube-apiserver then refuses for a Job.
#[test]
fn job_without_restart_policy_is_refused() {
    let c = Cluster::start();
    let job = c.write_file(
        "job.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        image: registry.local/app:v1\n",
    );
    let err = c.fails(
        common::KUBECTL_DEFAULT,
        &["create", "-f", &job.to_string_lossy()],
    );
    assert!(
        err.contains("The Job \"once\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""),
        "{err}"
    );
    assert!(c
        .fails(common::KUBECTL_DEFAULT, &["get", "job", "once"])
        .contains("NotFound"));
}
