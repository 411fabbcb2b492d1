//! Ownership by selector, as kube-controller-manager's ControllerRefManager does it: a
//! ReplicaSet adopts the orphans its selector matches, releases the pods relabelled out
//! of it (the classic debugging move: take a misbehaving pod out of rotation and get a
//! replacement), and leaves another controller's pods alone. No nodes: the pods stay
//! Pending, which is all ownership needs.

mod common;

use std::time::Duration;

use common::{Cluster, KUBECTL_DEFAULT as K};

const MINUTE: Duration = Duration::from_secs(60);

fn pod(name: &str, app: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  containers:
  - name: c
    image: registry.local/none:v1
"#
    )
}

fn replica_set(name: &str, app: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      containers:
      - name: c
        image: registry.local/none:v1
"#
    )
}

/// Names of the pods labelled `app=<app>` that are not being deleted, sorted.
fn live_pods(c: &Cluster, app: &str) -> Vec<String> {
    let out = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}|{.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ],
    );
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_suffix('|'))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn wait_live_pods(c: &Cluster, app: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        let pods = live_pods(c, app);
        if pods.len() == n {
            return pods;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {n} pods app={app}: {pods:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn controller_of(c: &Cluster, pod: &str) -> String {
    c.pod_field(
        pod,
        "{.metadata.ownerReferences[?(@.controller==true)].name}",
    )
}

/// Messages of the events with `reason` about object `name`.
fn events(c: &Cluster, name: &str, reason: &str) -> Vec<String> {
    c.ok(
        K,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            &format!(
                "jsonpath={{range .items[?(@.reason==\"{reason}\")]}}{{.message}}{{\"\\n\"}}{{end}}"
            ),
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn replica_sets_adopt_release_and_ignore_pods_by_their_labels() {
    let c = Cluster::start();

    // An orphan already there is adopted: the ReplicaSet creates one pod, not two. The
    // budget counts the pods the controllers' shared cache holds: once it counts the
    // orphan, the ReplicaSet's first pass sees it too.
    c.apply(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: observer\nspec:\n  minAvailable: 0\n  selector:\n    matchLabels: {app: frontend}\n",
    );
    c.apply(&pod("stray", "frontend"));
    c.wait_for_output(
        &[
            "get",
            "pdb",
            "observer",
            "-o",
            "jsonpath={.status.expectedPods}",
        ],
        "1",
        MINUTE,
    );
    c.apply(&replica_set("frontend", "frontend", 2));
    c.wait_pod_field(
        "stray",
        "{.metadata.ownerReferences[0].name}",
        "frontend",
        MINUTE,
    );
    assert_eq!(
        c.pod_field("stray", "{.metadata.ownerReferences[0].kind}"),
        "ReplicaSet"
    );
    let pods = wait_live_pods(&c, "frontend", 2);
    c.wait_for_output(
        &["get", "rs", "frontend", "-o", "jsonpath={.status.replicas}"],
        "2",
        MINUTE,
    );
    let created = events(&c, "frontend", "SuccessfulCreate");
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(events(&c, "frontend", "SuccessfulDelete").is_empty());

    // Relabelled out: released (no ownerReference, not deleted) and replaced.
    let debugged = pods
        .iter()
        .find(|p| *p != "stray")
        .cloned()
        .unwrap_or_default();
    c.ok(K, &["label", "pod", &debugged, "app=debug", "--overwrite"]);
    c.wait_pod_field(&debugged, "{.metadata.ownerReferences}", "", MINUTE);
    let replaced = wait_live_pods(&c, "frontend", 2);
    assert!(!replaced.contains(&debugged), "{replaced:?}");
    assert_eq!(live_pods(&c, "debug"), std::slice::from_ref(&debugged));
    for p in &replaced {
        assert_eq!(controller_of(&c, p), "frontend", "{p}");
    }

    // Labelled back: adopted again, and the one pod too many (whichever ranks lowest) is
    // deleted. Were it not adopted, it would stay beside two owned pods.
    c.ok(
        K,
        &["label", "pod", &debugged, "app=frontend", "--overwrite"],
    );
    c.wait_for_output(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=frontend,reason=SuccessfulDelete",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        "SuccessfulDelete",
        MINUTE,
    );
    let after = wait_live_pods(&c, "frontend", 2);
    for p in &after {
        assert_eq!(controller_of(&c, p), "frontend", "{p}");
    }
    assert!(live_pods(&c, "debug").is_empty());

    // The uid the controllers' patches carry is a precondition: a write naming another
    // uid is refused, so it cannot land on a deleted-and-recreated namesake.
    let err = c.fails(
        K,
        &[
            "patch",
            "pod",
            &after[0],
            "-p",
            r#"{"metadata":{"uid":"not-its-uid","labels":{"x":"y"}}}"#,
        ],
    );
    assert!(
        err.contains(r#"metadata.uid: Invalid value: "not-its-uid": field is immutable"#),
        "{err}"
    );

    // An overlapping ReplicaSet leaves frontend's pods alone and makes its own.
    c.apply(&replica_set("overlap", "frontend", 1));
    let all = wait_live_pods(&c, "frontend", 3);
    let owners: Vec<String> = all.iter().map(|p| controller_of(&c, p)).collect();
    assert_eq!(
        owners.iter().filter(|o| *o == "frontend").count(),
        2,
        "{all:?} {owners:?}"
    );
    assert_eq!(
        owners.iter().filter(|o| *o == "overlap").count(),
        1,
        "{all:?} {owners:?}"
    );
    for p in &after {
        assert_eq!(controller_of(&c, p), "frontend", "{p}");
    }
}

#[test]
fn a_deployment_adopts_the_replica_sets_it_orphaned() {
    let c = Cluster::start();
    let create = [
        "create",
        "deployment",
        "web",
        "--image=registry.local/none:v1",
        "--replicas=2",
    ];
    c.ok(K, &create);
    let rs_of = |c: &Cluster| {
        c.ok(
            K,
            &[
                "get",
                "rs",
                "-l",
                "app=web",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.metadata.ownerReferences[0].name}{\"\\n\"}{end}",
            ],
        )
        .trim()
        .to_string()
    };
    let deadline = std::time::Instant::now() + MINUTE;
    while !rs_of(&c).ends_with("=web") {
        assert!(std::time::Instant::now() < deadline, "{}", rs_of(&c));
        std::thread::sleep(Duration::from_millis(200));
    }
    let rs = rs_of(&c);
    let rs_name = rs.split('=').next().unwrap_or_default().to_string();
    c.ok(K, &["delete", "deployment", "web", "--cascade=orphan"]);
    c.wait_for_output(
        &[
            "get",
            "rs",
            &rs_name,
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ],
        "",
        MINUTE,
    );
    // The same Deployment again: it takes its ReplicaSet back instead of making another.
    c.ok(K, &create);
    c.wait_for_output(
        &[
            "get",
            "rs",
            &rs_name,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].name}",
        ],
        "web",
        MINUTE,
    );
    assert_eq!(rs_of(&c), format!("{rs_name}=web"));
    // Relabelled out of the Deployment's selector: released, and a new one is made.
    c.ok(K, &["label", "rs", &rs_name, "app=debug", "--overwrite"]);
    c.wait_for_output(
        &[
            "get",
            "rs",
            &rs_name,
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ],
        "",
        MINUTE,
    );
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        let now = rs_of(&c);
        if now.ends_with("=web") && !now.contains(&rs_name) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{now}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// ReplicationController, served by the same replica controller as ReplicaSets: its pods
/// come up and report ready, `kubectl scale rc` adds pods, a relabelled pod is released
/// and replaced, and deleting it takes its pods along (not the released one).
#[test]
fn replication_controllers_keep_their_pods() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(1, "hollow", &[]);
    c.apply(
        r#"apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: legacy}
    spec:
      containers:
      - name: c
        image: registry.local/none:v1
"#,
    );
    let pods = wait_live_pods(&c, "legacy", 2);
    for p in &pods {
        assert_eq!(controller_of(&c, p), "legacy", "{p}");
        assert_eq!(
            c.pod_field(
                p,
                "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].apiVersion}"
            ),
            "ReplicationController/v1"
        );
    }
    // A budget as a share of the controller's scale: the disruption controller finds
    // the ReplicationController behind the pods.
    c.apply(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: legacy\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels: {app: legacy}\n",
    );
    c.wait_for_output(
        &[
            "get",
            "pdb",
            "legacy",
            "-o",
            "jsonpath={.status.expectedPods}/{.status.desiredHealthy}",
        ],
        "2/1",
        MINUTE,
    );
    let status = "jsonpath={.status.replicas}/{.status.fullyLabeledReplicas}/{.status.readyReplicas}/{.status.availableReplicas}/{.status.observedGeneration}";
    c.wait_for_output(&["get", "rc", "legacy", "-o", status], "2/2/2/2/1", MINUTE);

    c.ok(K, &["scale", "rc", "legacy", "--replicas=3"]);
    wait_live_pods(&c, "legacy", 3);
    c.wait_for_output(&["get", "rc", "legacy", "-o", status], "3/3/3/3/2", MINUTE);
    let created = events(&c, "legacy", "SuccessfulCreate");
    assert_eq!(created.len(), 3, "{created:?}");

    let debugged = pods[0].clone();
    c.ok(K, &["label", "pod", &debugged, "app=debug", "--overwrite"]);
    c.wait_pod_field(&debugged, "{.metadata.ownerReferences}", "", MINUTE);
    let replaced = wait_live_pods(&c, "legacy", 3);
    assert!(!replaced.contains(&debugged), "{replaced:?}");

    c.ok(K, &["delete", "rc", "legacy"]);
    c.wait_for_output(
        &["get", "pods", "-l", "app=legacy", "-o", "name"],
        "",
        MINUTE,
    );
    assert_eq!(live_pods(&c, "debug"), [debugged]);
}
