//! Object lifecycle semantics: deletion propagation through ownerReferences, the scale,
//! binding and eviction subresources, graceful pod deletion, deletecollection, dry-run.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, KUBECTL_DEFAULT as K};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exists(c: &Cluster, kind: &str, name: &str) -> bool {
    !c.ok(K, &["get", kind, name, "--ignore-not-found", "-o", "name"])
        .trim()
        .is_empty()
}

fn owned_configmap(c: &Cluster, owner: &str, dep: &str) {
    c.ok(K, &["create", "configmap", owner, "--from-literal=a=b"]);
    let uid = c.ok(K, &["get", "cm", owner, "-o", "jsonpath={.metadata.uid}"]);
    let m = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {dep}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {uid}\n    blockOwnerDeletion: true\ndata:\n  x: z\n");
    let out = c.apply_stdin(K, &["create", "-f", "-"], &m);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deletion_propagates_through_owner_references() {
    let c = Cluster::start();
    owned_configmap(&c, "owner-bg", "dep-bg");
    c.ok(K, &["delete", "cm", "owner-bg"]);
    wait_until("background dependents to go", || {
        !exists(&c, "cm", "dep-bg")
    });

    owned_configmap(&c, "owner-fg", "dep-fg");
    c.ok(K, &["delete", "cm", "owner-fg", "--cascade=foreground"]);
    assert!(!exists(&c, "cm", "owner-fg"));
    assert!(
        !exists(&c, "cm", "dep-fg"),
        "foreground deletion left the dependent"
    );

    owned_configmap(&c, "owner-or", "dep-or");
    c.ok(K, &["delete", "cm", "owner-or", "--cascade=orphan"]);
    wait_until("orphaned owner to go", || !exists(&c, "cm", "owner-or"));
    assert!(
        exists(&c, "cm", "dep-or"),
        "orphan deletion removed the dependent"
    );
    assert_eq!(
        c.ok(
            K,
            &[
                "get",
                "cm",
                "dep-or",
                "-o",
                "jsonpath={.metadata.ownerReferences}"
            ]
        ),
        ""
    );
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let c = Cluster::start();
    let m = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n";
    assert!(c.apply_stdin(K, &["create", "-f", "-"], m).status.success());
    c.ok(K, &["delete", "cm", "held", "--wait=false"]);
    assert!(!c
        .ok(
            K,
            &[
                "get",
                "cm",
                "held",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}"
            ]
        )
        .is_empty());
    let err = c.fails(
        K,
        &[
            "patch",
            "cm",
            "held",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/other"}]"#,
        ],
    );
    assert!(
        err.contains("no new finalizers can be added if the object is being deleted"),
        "{err}"
    );
    c.ok(
        K,
        &[
            "patch",
            "cm",
            "held",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    assert!(!exists(&c, "cm", "held"));
}

#[test]
fn scale_subresource_speaks_autoscaling_v1() {
    let c = Cluster::start();
    c.ok(
        K,
        &[
            "create",
            "deployment",
            "web",
            "--image=registry.local/web:v1",
        ],
    );
    for kubectl in common::kubectls() {
        c.ok(kubectl, &["scale", "deployment", "web", "--replicas=5"]);
        assert_eq!(
            c.ok(
                K,
                &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]
            ),
            "5"
        );
        c.ok(kubectl, &["scale", "deployment", "web", "--replicas=1"]);
        assert_eq!(
            c.ok(
                K,
                &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]
            ),
            "1"
        );
    }
    let scale: serde_json::Value = serde_json::from_str(&c.ok(
        K,
        &[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ],
    ))
    .expect("scale json");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=web");
    assert_eq!(
        c.ok(
            K,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.metadata.generation}"
            ]
        ),
        "5",
        "each replica change is a spec change"
    );
}

#[test]
fn binding_graceful_pod_deletion_and_eviction() {
    let c = Cluster::start();
    c.ok(K, &["run", "bound", "--image=registry.local/web:v1"]);
    let pods = c.ok(K, &["get", "pods"]);
    assert!(pods.contains("bound") && pods.contains("Pending"), "{pods}");
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"bound"},"target":{"apiVersion":"v1","kind":"Node","name":"node-a"}}"#;
    let f = c.write_file("binding.json", binding);
    c.ok(
        K,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/bound/binding",
            "-f",
            f.to_str().unwrap_or_default(),
        ],
    );
    assert_eq!(
        c.ok(
            K,
            &["get", "pod", "bound", "-o", "jsonpath={.spec.nodeName}"]
        ),
        "node-a"
    );
    let again = c.kubectl(
        K,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/bound/binding",
            "-f",
            f.to_str().unwrap_or_default(),
        ],
    );
    assert!(
        !again.status.success(),
        "a bound pod must not be bound again"
    );
    assert!(c
        .ok(
            K,
            &[
                "get",
                "pods",
                "--field-selector",
                "spec.nodeName=node-a",
                "-o",
                "name"
            ]
        )
        .contains("pod/bound"));

    // Bound and running on a node: deletion waits for the node's grace period.
    c.ok(K, &["delete", "pod", "bound", "--wait=false"]);
    let table = c.ok(K, &["get", "pod", "bound"]);
    assert!(table.contains("Terminating"), "{table}");
    assert_eq!(
        c.ok(
            K,
            &[
                "get",
                "pod",
                "bound",
                "-o",
                "jsonpath={.metadata.deletionGracePeriodSeconds}"
            ]
        ),
        "30"
    );
    c.ok(
        K,
        &["delete", "pod", "bound", "--grace-period=0", "--force"],
    );
    assert!(!exists(&c, "pod", "bound"));

    c.ok(K, &["run", "evictee", "--image=registry.local/web:v1"]);
    let ev = c.write_file("eviction.json", r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"evictee","namespace":"default"}}"#);
    c.ok(
        K,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/evictee/eviction",
            "-f",
            ev.to_str().unwrap_or_default(),
        ],
    );
    assert!(!exists(&c, "pod", "evictee"));
}

#[test]
fn deletecollection_and_dry_run() {
    let c = Cluster::start();
    for i in 0..3 {
        c.ok(
            K,
            &[
                "create",
                "configmap",
                &format!("batch-{i}"),
                "--from-literal=a=b",
            ],
        );
        c.ok(K, &["label", "cm", &format!("batch-{i}"), "group=batch"]);
    }
    c.ok(K, &["create", "configmap", "keeper", "--from-literal=a=b"]);
    c.ok(
        K,
        &[
            "delete",
            "--raw",
            "/api/v1/namespaces/default/configmaps?labelSelector=group%3Dbatch",
        ],
    );
    let left = c.ok(K, &["get", "cm", "-o", "name"]);
    assert!(
        !left.contains("batch-") && left.contains("keeper"),
        "{left}"
    );

    let out = c.ok(
        K,
        &[
            "create",
            "configmap",
            "dry",
            "--from-literal=a=b",
            "--dry-run=server",
            "-o",
            "jsonpath={.metadata.name}",
        ],
    );
    assert_eq!(out, "dry");
    assert!(!exists(&c, "cm", "dry"), "dry-run stored the object");
    c.ok(K, &["delete", "cm", "keeper", "--dry-run=server"]);
    assert!(exists(&c, "cm", "keeper"), "dry-run deleted the object");

    paging(&c);
}

/// limit/continue as a client reads it off the wire: pages of at most `limit` items, a
/// continue token on every page but the last, and every object exactly once.
fn paging(c: &Cluster) {
    c.ok(K, &["create", "namespace", "paging"]);
    for i in 0..7 {
        c.ok(
            K,
            &["create", "configmap", &format!("page-{i}"), "-n", "paging"],
        );
    }
    let names_of = |list: &serde_json::Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items: {list}"))
            .iter()
            .map(|i| {
                i["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let get = |path: &str| -> serde_json::Value {
        serde_json::from_str(&c.ok(K, &["get", "--raw", path])).expect("list json")
    };
    let mut all = names_of(&get("/api/v1/namespaces/paging/configmaps"));
    all.sort();
    assert!(all.len() >= 7, "{all:?}");
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let mut path = "/api/v1/namespaces/paging/configmaps?limit=2".to_string();
        if !token.is_empty() {
            path.push_str("&continue=");
            path.push_str(&percent_encode(&token));
        }
        let page = get(&path);
        let names = names_of(&page);
        sizes.push(names.len());
        seen.extend(names);
        assert!(sizes.len() <= all.len(), "paging does not end: {sizes:?}");
        match page["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => break,
        }
    }
    // Full pages until the last, which holds the rest.
    let want: Vec<usize> = all.chunks(2).map(<[String]>::len).collect();
    assert_eq!(sizes, want, "page sizes");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, all, "pages {seen:?}");

    // kubectl's --chunk-size walks the same pages, one request per page.
    let out = c.kubectl(
        K,
        &[
            "get",
            "cm",
            "-n",
            "paging",
            "--chunk-size=2",
            "-o",
            "name",
            "-v=6",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), all.len(), "{stdout}");
    let log = String::from_utf8_lossy(&out.stderr);
    let requests = log
        .lines()
        .filter(|l| l.contains("/namespaces/paging/configmaps?") && l.contains("limit=2"))
        .count();
    assert_eq!(requests, want.len(), "{log}");
}

/// Percent-encoding for a query value (continue tokens are base64 with `=`, `+`, `/`).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
