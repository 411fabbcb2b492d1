//! The scheduler places pods by nodeSelector, node affinity, taints/tolerations and
//! resource requests; impossible pods stay Pending with the reason; drain moves pods;
//! nodes that stop heartbeating go NotReady and their pods come back elsewhere.

mod common;

use std::time::Duration;

use common::{Cluster, KUBECTL_DEFAULT as K};

const MINUTE: Duration = Duration::from_secs(60);

fn pod(name: &str, extra_spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: registry.local/x:v1\n{extra_spec}")
}

fn node_of(c: &Cluster, pod: &str) -> String {
    c.wait_for_output(
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
        "Running",
        MINUTE,
    );
    c.ok(K, &["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

/// `kubectl create deployment NAME` of `replicas` pods, rolled out.
fn deploy(c: &Cluster, name: &str, replicas: u32) {
    c.ok(
        K,
        &[
            "create",
            "deployment",
            name,
            "--image=registry.local/web:v1",
            &format!("--replicas={replicas}"),
        ],
    );
    c.ok(
        K,
        &[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=90s",
        ],
    );
}

/// How many pods labelled app=web are bound to `node`.
fn web_pods_on(c: &Cluster, node: &str) -> usize {
    c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "name",
        ],
    )
    .lines()
    .count()
}

#[test]
fn scheduler_honours_selectors_affinity_taints_and_resources() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(3, "n", &["--cpu", "2", "--memory", "4Gi"]);
    c.wait_for_output(
        &["get", "nodes", "-o", "name"],
        "node/n-0\nnode/n-1\nnode/n-2",
        MINUTE,
    );
    c.ok(K, &["label", "node", "n-1", "disk=ssd"]);
    c.ok(K, &["taint", "node", "n-2", "dedicated=batch:NoSchedule"]);

    c.create(&pod("wants-ssd", "  nodeSelector:\n    disk: ssd\n"));
    assert_eq!(node_of(&c, "wants-ssd"), "n-1");

    let affinity = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: kubernetes.io/hostname, operator: In, values: [n-0, n-2]}\n";
    c.create(&pod("affine", affinity));
    assert_eq!(
        node_of(&c, "affine"),
        "n-0",
        "n-2 is tainted, so only n-0 fits"
    );

    let tolerant = "  tolerations:\n  - {key: dedicated, operator: Equal, value: batch, effect: NoSchedule}\n  nodeSelector:\n    kubernetes.io/hostname: n-2\n";
    c.create(&pod("tolerant", tolerant));
    assert_eq!(node_of(&c, "tolerant"), "n-2");
    c.create(&pod(
        "intolerant",
        "  nodeSelector:\n    kubernetes.io/hostname: n-2\n",
    ));

    // Requests: 1500m on 2-cpu nodes fits once per node.
    let big = "    resources:\n      requests:\n        cpu: 1500m\n";
    for i in 0..2 {
        c.create(&pod(
            &format!("big-{i}"),
            &format!("{big}  tolerations:\n  - {{key: dedicated, operator: Exists}}\n"),
        ));
    }
    let b0 = node_of(&c, "big-0");
    let b1 = node_of(&c, "big-1");
    assert_ne!(b0, b1, "two 1500m pods cannot share a 2-cpu node");

    c.create(&pod(
        "impossible",
        "    resources:\n      requests:\n        cpu: \"64\"\n",
    ));
    c.wait_for_output(
        &[
            "get",
            "pod",
            "impossible",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].reason}"#,
        ],
        "Unschedulable",
        MINUTE,
    );
    let d = c.ok(K, &["describe", "pod", "impossible"]);
    assert!(
        d.contains("FailedScheduling")
            && d.contains("0/3 nodes are available")
            && d.contains("Insufficient cpu"),
        "{d}"
    );
    assert_eq!(
        c.ok(
            K,
            &["get", "pod", "intolerant", "-o", "jsonpath={.status.phase}"]
        ),
        "Pending"
    );
    let d = c.ok(K, &["describe", "pod", "intolerant"]);
    assert!(
        d.contains("FailedScheduling") && d.contains("untolerated taint"),
        "{d}"
    );
}

#[test]
fn drain_and_node_failure_move_pods() {
    let c = Cluster::start_with(&[
        // Longer than the hollow nodes' 10 s lease renewal, so only the killed one lapses.
        "--node-monitor-grace-period",
        "20s",
        "--default-not-ready-toleration",
        "3s",
    ]);
    let _stable = c.hollow_nodes(2, "stable", &[]);
    let mut doomed = c.hollow_nodes(1, "doomed", &[]);
    c.wait_for_output(
        &["get", "nodes", "-o", "name"],
        "node/doomed-0\nnode/stable-0\nnode/stable-1",
        MINUTE,
    );

    deploy(&c, "web", 6);
    let on = |node: &str| web_pods_on(&c, node);
    assert!(on("stable-0") > 0, "pods should spread over the nodes");

    // Drain: cordon plus evictions; the Deployment re-creates the pods elsewhere.
    c.ok(
        K,
        &["drain", "stable-0", "--ignore-daemonsets", "--timeout=60s"],
    );
    assert_eq!(on("stable-0"), 0);
    assert!(c
        .ok(K, &["get", "node", "stable-0"])
        .contains("SchedulingDisabled"));
    c.ok(K, &["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.ok(K, &["uncordon", "stable-0"]);
    assert!(!c
        .ok(K, &["get", "node", "stable-0"])
        .contains("SchedulingDisabled"));

    // A node that dies: NotReady, tainted, its pods evicted and re-created elsewhere.
    let before = on("doomed-0");
    assert!(before > 0, "expected pods on doomed-0");
    doomed.kill();
    c.wait_for_output(
        &[
            "get",
            "node",
            "doomed-0",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ],
        "Unknown",
        MINUTE,
    );
    let taints = c.ok(
        K,
        &[
            "get",
            "node",
            "doomed-0",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ],
    );
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    // Evicted after the 3 s toleration: every pod there is terminating, and the Deployment
    // is whole again on the remaining nodes.
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        let out = c.ok(K, &["get", "pods", "-l", "app=web", "--field-selector", "spec.nodeName=doomed-0", "-o", r#"jsonpath={range .items[*]}{.metadata.name}|{.metadata.deletionTimestamp}{"\n"}{end}"#]);
        let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        if lines.len() == before && lines.iter().all(|l| !l.ends_with('|')) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pods on the dead node were not evicted: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.wait_for_output(
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
        "6",
        MINUTE,
    );
    let placed = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            r#"jsonpath={range .items[?(@.status.phase=="Running")]}{.spec.nodeName}{"\n"}{end}"#,
        ],
    );
    assert!(
        placed.lines().filter(|n| n.starts_with("stable-")).count() >= 6,
        "replacements must run on the live nodes: {placed}"
    );
}

#[test]
fn disruption_budget_holds_against_parallel_evictions_and_drain() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, EvictParams};

    let c = Cluster::start();
    let _nodes = c.hollow_nodes(2, "pd", &[]);
    c.wait_for_output(
        &["get", "nodes", "-o", "name"],
        "node/pd-0\nnode/pd-1",
        MINUTE,
    );
    deploy(&c, "web", 4);
    c.ok(
        K,
        &[
            "create",
            "poddisruptionbudget",
            "web",
            "--selector=app=web",
            "--max-unavailable=1",
        ],
    );
    let status = r#"jsonpath={.status.expectedPods}/{.status.desiredHealthy}/{.status.currentHealthy}/{.status.disruptionsAllowed}"#;
    c.wait_for_output(&["get", "pdb", "web", "-o", status], "4/3/4/1", MINUTE);
    // kubectl's own columns: NAME, MIN AVAILABLE, MAX UNAVAILABLE, ALLOWED DISRUPTIONS, AGE.
    for kubectl in common::kubectls() {
        let table = c.ok(kubectl, &["get", "pdb", "web"]);
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .expect("a row")
            .split_whitespace()
            .collect();
        assert_eq!(row[..4], ["web", "N/A", "1", "1"], "{table}");
    }

    // With every node cordoned, an evicted pod's replacement cannot become Ready, so the
    // budget allows exactly one eviction however the parallel requests interleave.
    c.ok(K, &["cordon", "pd-0", "pd-1"]);
    let names: Vec<String> = c
        .ok(
            K,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
        )
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let results: Vec<Result<(), String>> = rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(c.kube_client().await, "default");
        let tries = names.iter().map(|n| {
            let pods = pods.clone();
            async move {
                pods.evict(n, &EvictParams::default())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        });
        futures::future::join_all(tries).await
    });
    let passed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(passed, 1, "one eviction fits a budget of one: {results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            e.contains("Cannot evict pod as it would violate the pod's disruption budget"),
            "{e}"
        );
    }
    // The evicted pod is gone and its replacement Pending: three healthy, none to spare.
    c.wait_for_output(&["get", "pdb", "web", "-o", status], "4/3/3/0", MINUTE);
    c.wait_for_output(
        &[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.disruptedPods}",
        ],
        "",
        MINUTE,
    );

    // A drain that would break the budget does not finish, and the pods stay.
    let on_pd0 = || web_pods_on(&c, "pd-0");
    let before = on_pd0();
    assert!(before > 0, "expected pods on pd-0");
    let refused = c.fails(K, &["drain", "pd-0", "--ignore-daemonsets", "--timeout=8s"]);
    assert!(
        refused.contains("disruption budget"),
        "drain should report the budget: {refused}"
    );
    assert_eq!(on_pd0(), before, "a refused eviction must leave the pod");

    // Once the replacement can run elsewhere, the budget opens again and the drain goes
    // through, one pod at a time.
    c.ok(K, &["uncordon", "pd-1"]);
    c.wait_for_output(&["get", "pdb", "web", "-o", status], "4/3/4/1", MINUTE);
    c.ok(
        K,
        &["drain", "pd-0", "--ignore-daemonsets", "--timeout=90s"],
    );
    assert_eq!(on_pd0(), 0);
    c.ok(K, &["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.wait_for_output(&["get", "pdb", "web", "-o", status], "4/3/4/1", MINUTE);

    // A server-side dry run of a drain spends nothing and evicts nothing.
    let on_pd1 = web_pods_on(&c, "pd-1");
    c.ok(
        K,
        &["drain", "pd-1", "--ignore-daemonsets", "--dry-run=server"],
    );
    assert_eq!(web_pods_on(&c, "pd-1"), on_pd1);
    assert_eq!(c.ok(K, &["get", "pdb", "web", "-o", status]), "4/3/4/1");

    // Two budgets over one pod: the eviction API refuses rather than pick one.
    c.ok(
        K,
        &[
            "create",
            "poddisruptionbudget",
            "web-too",
            "--selector=app=web",
            "--min-available=1",
        ],
    );
    let victim = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let refused = rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(c.kube_client().await, "default");
        pods.evict(&victim, &EvictParams::default()).await
    });
    let err = refused.expect_err("two budgets must refuse the eviction");
    assert!(
        err.to_string()
            .contains("more than one PodDisruptionBudget"),
        "{err}"
    );
}

#[test]
fn pod_anti_affinity_and_topology_spread_place_replicas() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(3, "z", &[]);
    c.wait_for_output(
        &["get", "nodes", "-o", "name"],
        "node/z-0\nnode/z-1\nnode/z-2",
        MINUTE,
    );
    for (node, zone) in [("z-0", "a"), ("z-1", "a"), ("z-2", "b")] {
        c.ok(
            K,
            &[
                "label",
                "node",
                node,
                &format!("topology.kubernetes.io/zone={zone}"),
            ],
        );
    }
    let deployment = |name: &str, replicas: u32, placement: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n{placement}      containers:\n      - name: c\n        image: registry.local/{name}:v1\n"
        )
    };
    // One replica per node; the fourth has nowhere to go and says why.
    c.apply(&deployment(
        "solo",
        4,
        "      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - labelSelector: {matchLabels: {app: solo}}\n            topologyKey: kubernetes.io/hostname\n",
    ));
    c.wait_for_output(
        &[
            "get",
            "deploy",
            "solo",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        "3",
        MINUTE,
    );
    let nodes = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=solo",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
    );
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    assert_eq!(nodes, ["z-0", "z-1", "z-2"]);
    c.wait_for_output(
        &[
            "get",
            "pods",
            "-l",
            "app=solo",
            "--field-selector",
            "status.phase=Pending",
            "-o",
            r#"jsonpath={.items[*].status.conditions[?(@.type=="PodScheduled")].message}"#,
        ],
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
        MINUTE,
    );

    // Spread over zones with a skew of at most one: zone a has two nodes, b one, and
    // still each zone gets half.
    c.apply(&deployment(
        "even",
        4,
        "      topologySpreadConstraints:\n      - maxSkew: 1\n        topologyKey: topology.kubernetes.io/zone\n        whenUnsatisfiable: DoNotSchedule\n        labelSelector: {matchLabels: {app: even}}\n",
    ));
    c.ok(
        K,
        &["rollout", "status", "deployment/even", "--timeout=90s"],
    );
    let placed = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=even",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
    );
    let in_b = placed.split_whitespace().filter(|n| *n == "z-2").count();
    assert_eq!(in_b, 2, "zone b must hold half the replicas: {placed}");
}
