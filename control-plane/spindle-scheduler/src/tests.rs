//! Filter, score and decision tests over hand-built Nodes and Pods.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::algorithm::{filter, Diagnosis, Reason, Usage};
use crate::cache::Cache;
use crate::model::{pod_requests, NodeInfo, PodRecord, SchedPod};

fn node(name: &str, cpu: &str, mem: &str, pods: &str, extra: Value) -> NodeInfo {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": pods},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    });
    merge(&mut v, extra);
    let n: Node = serde_json::from_value(v).expect("test node");
    NodeInfo::from_node(&n)
}

fn small(name: &str) -> NodeInfo {
    node(name, "4", "8Gi", "110", json!({}))
}

fn pod_json(name: &str, extra: Value) -> Pod {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "x"}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).expect("test pod")
}

fn pod(name: &str, extra: Value) -> SchedPod {
    (*PodRecord::from_pod(&pod_json(name, extra), "default-scheduler").pod).clone()
}

fn with_requests(name: &str, cpu: &str, mem: &str) -> SchedPod {
    pod(
        name,
        json!({"spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}),
    )
}

/// JSON merge (objects merged recursively, anything else replaced).
fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn fails(p: &SchedPod, n: &NodeInfo) -> Vec<Reason> {
    let mut r = vec![];
    filter(p, n, &Usage::default(), &mut r);
    r
}

fn fits(p: &SchedPod, n: &NodeInfo) -> bool {
    fails(p, n).is_empty()
}

#[test]
fn ready_and_unschedulable_filters() {
    let p = pod("p", json!({}));
    assert!(fits(&p, &small("n")));
    let not_ready = node(
        "n",
        "4",
        "8Gi",
        "110",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    assert_eq!(fails(&p, &not_ready), [Reason::NotReady]);
    let no_conditions = node(
        "n",
        "4",
        "8Gi",
        "110",
        json!({"status": {"conditions": []}}),
    );
    assert_eq!(fails(&p, &no_conditions), [Reason::NotReady]);
    let cordoned = node(
        "n",
        "4",
        "8Gi",
        "110",
        json!({"spec": {"unschedulable": true}}),
    );
    assert_eq!(fails(&p, &cordoned), [Reason::Unschedulable]);
    // A pod tolerating the unschedulable taint (DaemonSet pods do) may still go there.
    let tolerant = pod(
        "p",
        json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable",
            "operator": "Exists", "effect": "NoSchedule"}]}}),
    );
    assert!(fits(&tolerant, &cordoned));
}

#[test]
fn resource_filter() {
    let n = node("n", "2", "4Gi", "2", json!({}));
    assert!(fits(&with_requests("p", "2", "4Gi"), &n));
    assert_eq!(
        fails(&with_requests("p", "2001m", "1Gi"), &n),
        [Reason::Insufficient("cpu".into())]
    );
    assert_eq!(
        fails(&with_requests("p", "3", "5Gi"), &n),
        [
            Reason::Insufficient("cpu".into()),
            Reason::Insufficient("memory".into())
        ]
    );
    // Against what is already used, including the pod count.
    let mut used = Usage::default();
    used.requested.cpu = 1500;
    used.pods = 1;
    let mut r = vec![];
    assert!(!filter(&with_requests("p", "600m", "0"), &n, &used, &mut r));
    assert_eq!(r, [Reason::Insufficient("cpu".into())]);
    used.pods = 2;
    r.clear();
    assert!(!filter(&pod("p", json!({})), &n, &used, &mut r));
    assert_eq!(r, [Reason::TooManyPods]);
    // Extended resources the node lacks.
    let gpu = pod(
        "p",
        json!({"spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"example.com/gpu": "1"}}}]}}),
    );
    assert_eq!(
        fails(&gpu, &n),
        [Reason::Insufficient("example.com/gpu".into())]
    );
}

/// Requests are the user's numbers: past what i64 holds, sums saturate instead of
/// panicking the scheduler.
#[test]
fn huge_requests_saturate() {
    let huge = json!({"requests": {"cpu": "8E", "memory": "8E"}});
    let p = pod_json(
        "p",
        json!({"spec": {
            "containers": [
                {"name": "a", "image": "x", "resources": huge},
                {"name": "b", "image": "x", "resources": huge}
            ],
            "initContainers": [
                {"name": "s", "image": "x", "restartPolicy": "Always", "resources": huge},
                {"name": "i", "image": "x", "resources": huge}
            ],
            "overhead": {"cpu": "8E", "memory": "8E"}
        }}),
    );
    let (r, nz_cpu, nz_mem) = pod_requests(&p);
    assert_eq!(
        (r.cpu, r.memory, nz_cpu, nz_mem),
        (i64::MAX, i64::MAX, i64::MAX, i64::MAX)
    );
}

#[test]
fn requests_sum_containers_and_max_init() {
    let p = pod_json(
        "p",
        json!({"spec": {
            "containers": [
                {"name": "a", "image": "x", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "image": "x", "resources": {"limits": {"cpu": "200m"}}}
            ],
            "initContainers": [
                {"name": "i1", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}},
                {"name": "i2", "image": "x", "resources": {"requests": {"memory": "1Gi"}}}
            ],
            "overhead": {"cpu": "10m"}
        }}),
    );
    let (r, nz_cpu, _) = pod_requests(&p);
    assert_eq!(r.cpu, 1000 + 10, "the init peak beats the 300m sum");
    assert_eq!(r.memory, 1024 * 1024 * 1024);
    assert_eq!(nz_cpu, 1000 + 10);
    // A sidecar (restartable init container) adds to the sum and to later init peaks.
    let p = pod_json(
        "p",
        json!({"spec": {
            "containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "s", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "i", "image": "x", "resources": {"requests": {"cpu": "120m"}}}
            ]
        }}),
    );
    assert_eq!(pod_requests(&p).0.cpu, 170);
}

#[test]
fn runc_pods_need_a_containerd_node() {
    let wasm_only = small("wasm");
    let both = node(
        "both",
        "4",
        "8Gi",
        "110",
        json!({"metadata": {"labels": {"runtime.spindle.dev/containerd": "true"}}}),
    );
    let runc = pod("p", json!({"spec": {"runtimeClassName": "runc"}}));
    assert_eq!(fails(&runc, &wasm_only), [Reason::NoContainerRuntime]);
    assert!(fits(&runc, &both));
    // Pods without a runtime class go anywhere; their image decides on the node.
    assert!(fits(&pod("q", json!({})), &wasm_only));
    let mut d = Diagnosis {
        nodes: 2,
        ..Default::default()
    };
    d.reasons.insert(Reason::NoContainerRuntime, 2);
    assert_eq!(
        d.message(),
        "0/2 nodes are available: 2 node(s) had no container runtime (containerd)."
    );
}

#[test]
fn node_selector_and_required_affinity() {
    let n = node(
        "n1",
        "4",
        "8Gi",
        "110",
        json!({"metadata": {"labels": {"disk": "ssd", "gen": "5"}}}),
    );
    assert!(fits(
        &pod("p", json!({"spec": {"nodeSelector": {"disk": "ssd"}}})),
        &n
    ));
    assert_eq!(
        fails(
            &pod("p", json!({"spec": {"nodeSelector": {"disk": "hdd"}}})),
            &n
        ),
        [Reason::NodeAffinity]
    );
    let aff = |terms: Value| {
        pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}),
        )
    };
    let expr = |key: &str, op: &str, values: Value| json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]);
    assert!(fits(&aff(expr("disk", "In", json!(["ssd", "nvme"]))), &n));
    assert!(!fits(&aff(expr("disk", "NotIn", json!(["ssd"]))), &n));
    assert!(fits(&aff(expr("zone", "NotIn", json!(["a"]))), &n));
    assert!(fits(&aff(expr("disk", "Exists", json!([]))), &n));
    assert!(!fits(&aff(expr("zone", "Exists", json!([]))), &n));
    assert!(fits(&aff(expr("zone", "DoesNotExist", json!([]))), &n));
    assert!(fits(&aff(expr("gen", "Gt", json!(["4"]))), &n));
    assert!(!fits(&aff(expr("gen", "Gt", json!(["5"]))), &n));
    assert!(fits(&aff(expr("gen", "Lt", json!(["6"]))), &n));
    assert!(
        !fits(&aff(expr("disk", "Lt", json!(["6"]))), &n),
        "non-integer label"
    );
    // Expressions within a term are ANDed, terms are ORed.
    let and = json!([{"matchExpressions": [
        {"key": "disk", "operator": "In", "values": ["ssd"]},
        {"key": "gen", "operator": "In", "values": ["4"]}]}]);
    assert!(!fits(&aff(and), &n));
    let or = json!([
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]},
        {"matchExpressions": [{"key": "gen", "operator": "In", "values": ["5"]}]}]);
    assert!(fits(&aff(or), &n));
    // matchFields on metadata.name.
    let fields = |name: &str| json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}]);
    assert!(fits(&aff(fields("n1")), &n));
    assert_eq!(fails(&aff(fields("n2")), &n), [Reason::NodeAffinity]);
    // An empty term matches nothing.
    assert!(!fits(&aff(json!([{}])), &n));
}

#[test]
fn taints_and_tolerations() {
    let tainted = |effect: &str| {
        node(
            "n",
            "4",
            "8Gi",
            "110",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": effect}]}}),
        )
    };
    let plain = pod("p", json!({}));
    let taint_reason = Reason::Taint {
        key: "dedicated".into(),
        value: "gpu".into(),
    };
    assert_eq!(
        fails(&plain, &tainted("NoSchedule")),
        std::slice::from_ref(&taint_reason)
    );
    assert_eq!(fails(&plain, &tainted("NoExecute")), [taint_reason]);
    assert!(
        fits(&plain, &tainted("PreferNoSchedule")),
        "soft taints only score"
    );
    let tol = |t: Value| pod("p", json!({"spec": {"tolerations": [t]}}));
    let ns = tainted("NoSchedule");
    assert!(fits(
        &tol(
            json!({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"})
        ),
        &ns
    ));
    assert!(
        fits(&tol(json!({"key": "dedicated", "value": "gpu"})), &ns),
        "Equal is the default, empty effect matches all"
    );
    assert!(fits(
        &tol(json!({"key": "dedicated", "operator": "Exists"})),
        &ns
    ));
    assert!(
        fits(&tol(json!({"operator": "Exists"})), &ns),
        "empty key with Exists tolerates everything"
    );
    assert!(!fits(
        &tol(json!({"key": "dedicated", "value": "cpu"})),
        &ns
    ));
    assert!(!fits(
        &tol(json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"})),
        &ns
    ));
    assert!(!fits(
        &tol(json!({"key": "other", "operator": "Exists"})),
        &ns
    ));
}

fn cache_with(nodes: Vec<NodeInfo>) -> Cache {
    let mut c = Cache::default();
    for n in nodes {
        c.upsert_node(n);
    }
    c
}

fn decide_name(c: &mut Cache, p: &SchedPod) -> Option<String> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    c.decide(p, &mut rng)
        .ok()
        .and_then(|s| c.node_name(s).map(str::to_string))
}

#[test]
fn least_allocated_prefers_emptier_node() {
    let mut c = cache_with(vec![small("busy"), small("idle")]);
    let filler = with_requests("filler", "3", "6Gi");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let busy = c.decide(&filler, &mut rng).ok();
    // Whichever node took the filler, the next pod goes to the other one.
    let busy = busy.and_then(|s| c.node_name(s).map(str::to_string));
    let Some(busy) = busy else {
        panic!("filler fits")
    };
    let slot = (0..2).find(|&s| c.node_name(s) == Some(busy.as_str()));
    c.assume("filler", slot.unwrap_or(0), &filler);
    let next = decide_name(&mut c, &with_requests("p", "100m", "100Mi"));
    assert!(next.is_some_and(|n| n != busy));
    // Best-effort pods spread too (counted at default requests for scoring).
    let mut c = cache_with(vec![small("a"), small("b")]);
    let mut placed = std::collections::HashMap::new();
    for i in 0..10 {
        let p = pod(&format!("be{i}"), json!({}));
        let mut rng = rand::rngs::SmallRng::seed_from_u64(i);
        let s = c.decide(&p, &mut rng).ok().unwrap_or(usize::MAX);
        c.assume(&p.uid, s, &p);
        *placed.entry(s).or_insert(0) += 1;
    }
    assert_eq!(placed.len(), 2);
    assert!(placed.values().all(|&n| n == 5), "{placed:?}");
}

#[test]
fn preferred_affinity_and_soft_taints_steer_placement() {
    let labelled = node(
        "fast",
        "4",
        "8Gi",
        "110",
        json!({"metadata": {"labels": {"disk": "ssd"}}}),
    );
    let mut c = cache_with(vec![small("a"), labelled, small("b")]);
    let p = pod(
        "p",
        json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
        ]}}}}),
    );
    for _ in 0..5 {
        assert_eq!(decide_name(&mut c, &p).as_deref(), Some("fast"));
    }
    let soft = |name: &str| {
        node(
            name,
            "4",
            "8Gi",
            "110",
            json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]}}),
        )
    };
    let mut c = cache_with(vec![soft("s1"), small("clean"), soft("s2")]);
    for _ in 0..5 {
        assert_eq!(
            decide_name(&mut c, &pod("p", json!({}))).as_deref(),
            Some("clean")
        );
    }
}

#[test]
fn same_owner_pods_spread() {
    let mut c = cache_with(vec![small("a"), small("b"), small("c")]);
    let owned = |i: usize| {
        pod(
            &format!("rs-{i}"),
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "rs", "uid": "rs-uid", "controller": true}]}}),
        )
    };
    // Load node a with unrelated pods so least-allocated alone would avoid it; then
    // place siblings on b and c: the next sibling must still prefer a.
    let first = owned(0);
    let second = owned(1);
    c.assume("x1", 1, &first);
    c.assume("x2", 2, &second);
    let third = owned(2);
    assert_eq!(decide_name(&mut c, &third).as_deref(), Some("a"));
    // Pods without owners spread by identical labels.
    let labelled = |i: usize| {
        pod(
            &format!("l{i}"),
            json!({"metadata": {"labels": {"app": "web"}}}),
        )
    };
    assert_eq!(labelled(0).spread_key, labelled(1).spread_key);
    assert_ne!(
        labelled(0).spread_key,
        pod("z", json!({"metadata": {"labels": {"app": "db"}}})).spread_key
    );
}

#[test]
fn unschedulable_message_format() {
    let mut c = cache_with(vec![
        node(
            "t",
            "4",
            "8Gi",
            "110",
            json!({"spec": {"taints": [{"key": "key", "value": "value", "effect": "NoSchedule"}]}}),
        ),
        node("small1", "1", "8Gi", "110", json!({})),
        node("small2", "1", "8Gi", "110", json!({})),
    ]);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let d = c.decide(&with_requests("big", "2", "1Gi"), &mut rng);
    let Err(d) = d else { panic!("must not fit") };
    assert_eq!(
        d.message(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu."
    );
    let d = Diagnosis {
        nodes: 4,
        reasons: [
            (Reason::TooManyPods, 1),
            (Reason::Insufficient("memory".into()), 2),
            (Reason::Insufficient("cpu".into()), 2),
            (Reason::Unschedulable, 1),
            (Reason::NodeAffinity, 1),
        ]
        .into_iter()
        .collect(),
    };
    assert_eq!(
        d.message(),
        "0/4 nodes are available: 1 Too many pods, 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory."
    );
    assert_eq!(
        Cache::default()
            .decide(&pod("p", json!({})), &mut rng)
            .err()
            .map(|d| d.message()),
        Some("no nodes available to schedule pods".to_string())
    );
}

#[test]
fn assumed_pods_count_and_forget_frees() {
    let mut c = cache_with(vec![node("only", "1", "1Gi", "110", json!({}))]);
    let p1 = with_requests("p1", "600m", "100Mi");
    let p2 = with_requests("p2", "600m", "100Mi");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let s = c.decide(&p1, &mut rng).ok();
    let Some(s) = s else { panic!("p1 fits") };
    c.assume("p1", s, &p1);
    assert!(c.decide(&p2, &mut rng).is_err(), "assumed p1 holds the cpu");
    c.forget("p1");
    assert!(c.decide(&p2, &mut rng).is_ok());
    // Confirmation by the watch keeps the count once, and forget then does nothing.
    c.assume("p1", s, &p1);
    c.observe_bound("p1", "only", &p1);
    assert!(!c.is_assumed("p1"));
    c.forget("p1");
    assert_eq!(c.usage_of("only").map(|u| u.requested.cpu), Some(600));
    assert!(c.unplace("p1"));
    assert_eq!(
        c.usage_of("only").map(|u| (u.requested.cpu, u.pods)),
        Some((0, 0))
    );
}

/// Not a timed assertion: a smoke benchmark of the sequential decision path at the
/// target scale (1,000 nodes), printing decisions per second. Run with `--nocapture`
/// (release mode for meaningful numbers) to see the figure.
#[test]
fn decision_throughput_1000_nodes() {
    let nodes: Vec<NodeInfo> = (0..1000)
        .map(|i| node(&format!("node-{i}"), "32", "64Gi", "110", json!({})))
        .collect();
    let mut c = cache_with(nodes);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let pods: Vec<SchedPod> = (0..20_000)
        .map(|i| {
            pod(
                &format!("p{i}"),
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "rs", "uid": format!("rs-{}", i % 50), "controller": true}]},
                    "spec": {"containers": [{"name": "c", "image": "x",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}),
            )
        })
        .collect();
    let start = Instant::now();
    let mut placed = 0;
    for p in &pods {
        if let Ok(s) = c.decide(p, &mut rng) {
            c.assume(&p.uid, s, p);
            placed += 1;
        }
    }
    let dt = start.elapsed();
    eprintln!(
        "decided {placed} pods onto 1000 nodes in {dt:?}: {:.0} decisions/s",
        placed as f64 / dt.as_secs_f64()
    );
    assert_eq!(placed, pods.len());
    // 20,000 pods over 1,000 nodes of 110 pods: nobody overcommitted, load spread.
    let per_node: Vec<i64> = (0..1000)
        .filter_map(|i| c.usage_of(&format!("node-{i}")).map(|u| u.pods))
        .collect();
    assert!(per_node.iter().all(|&n| n <= 110));
    assert!(
        per_node.iter().all(|&n| (10..=30).contains(&n)),
        "uneven: {per_node:?}"
    );
}

#[test]
fn the_watch_view_of_a_pod_schedules_like_the_pod() {
    let v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-1", "namespace": "prod", "uid": "u-1", "resourceVersion": "42",
            "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-1", "controller": true}],
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {}}}}],
            "annotations": {"a": "b"}
        },
        "spec": {
            "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}],
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "runtimeClassName": "runc",
            "priority": 7
        },
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}],
                   "containerStatuses": [{"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0}]}
    });
    let full: Pod = serde_json::from_value(v.clone()).expect("pod");
    let view: crate::model::PodView = serde_json::from_value(v).expect("view");
    assert_eq!(
        kube::Resource::meta(&view).resource_version.as_deref(),
        Some("42")
    );
    assert_eq!(
        PodRecord::from_pod(&full, "default-scheduler"),
        PodRecord::from_pod(&view.into_pod(), "default-scheduler")
    );
}

/// Decide and assume, as the scheduling loop does; the chosen node's name.
fn place(c: &mut Cache, key: &str, p: &SchedPod) -> Result<String, String> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    match c.decide(p, &mut rng) {
        Ok(slot) => {
            c.assume(key, slot, p);
            Ok(c.node_name(slot).unwrap_or_default().to_string())
        }
        Err(d) => Err(d.message()),
    }
}

fn labelled(name: &str, labels: Value, spec: Value) -> SchedPod {
    pod(name, json!({"metadata": {"labels": labels}, "spec": spec}))
}

fn zoned(name: &str, zone: &str) -> NodeInfo {
    node(
        name,
        "4",
        "8Gi",
        "110",
        json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
    )
}

#[test]
fn required_anti_affinity_keeps_replicas_apart() {
    let mut c = cache_with(vec![small("n1"), small("n2"), small("n3")]);
    let spec = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    let mut used = std::collections::BTreeSet::new();
    for i in 0..3 {
        let p = labelled(&format!("web-{i}"), json!({"app": "web"}), spec.clone());
        used.insert(place(&mut c, &format!("web-{i}"), &p).expect("fits"));
    }
    assert_eq!(used.len(), 3, "one replica per node: {used:?}");
    let fourth = labelled("web-3", json!({"app": "web"}), spec);
    assert_eq!(
        place(&mut c, "web-3", &fourth),
        Err("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.".into())
    );
    // Another app is not affected by web's rules... unless web's pods exclude it.
    assert!(place(
        &mut c,
        "db",
        &labelled("db", json!({"app": "db"}), json!({}))
    )
    .is_ok());
}

#[test]
fn existing_pods_anti_affinity_is_symmetric() {
    let mut c = cache_with(vec![small("n1"), small("n2")]);
    let loner = labelled(
        "loner",
        json!({"app": "loner"}),
        json!({"nodeName": null, "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
    );
    let at = place(&mut c, "loner", &loner).expect("fits");
    for i in 0..4 {
        let web = labelled(&format!("w{i}"), json!({"app": "web"}), json!({}));
        let n = place(&mut c, &format!("w{i}"), &web).expect("fits");
        assert_ne!(
            n, at,
            "a web pod must keep away from the pod that excludes it"
        );
    }
    // Pods in another namespace are not selected by a term that names none.
    let other = pod(
        "other",
        json!({"metadata": {"namespace": "prod", "labels": {"app": "web"}}}),
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..8 {
        seen.insert(place(&mut c, &format!("o{i}"), &other).expect("fits"));
    }
    assert!(seen.contains(&at), "{seen:?}");
}

#[test]
fn required_affinity_follows_its_target_and_the_first_of_a_group_goes_anywhere() {
    let mut c = cache_with(vec![small("n1"), small("n2"), small("n3")]);
    let db = labelled("db", json!({"app": "db"}), json!({}));
    let db_node = place(&mut c, "db", &db).expect("fits");
    let near_db = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..4 {
        let p = labelled(
            &format!("cache-{i}"),
            json!({"app": "cache"}),
            near_db.clone(),
        );
        assert_eq!(
            place(&mut c, &format!("cache-{i}"), &p).as_ref(),
            Ok(&db_node)
        );
    }
    // Affinity to a label nobody carries: unschedulable, unless the pod carries it.
    let lonely = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "queue"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    let p = labelled("x", json!({"app": "x"}), lonely.clone());
    assert_eq!(
        place(&mut c, "x", &p),
        Err("0/3 nodes are available: 3 node(s) didn't match pod affinity rules.".into())
    );
    let first = labelled("q0", json!({"app": "queue"}), lonely.clone());
    let at = place(&mut c, "q0", &first).expect("the first of a group");
    let second = labelled("q1", json!({"app": "queue"}), lonely);
    assert_eq!(place(&mut c, "q1", &second), Ok(at));
}

#[test]
fn topology_spread_balances_zones_and_needs_the_key() {
    let mut c = cache_with(vec![
        zoned("a1", "a"),
        zoned("a2", "a"),
        zoned("b1", "b"),
        small("nozone"),
    ]);
    let spec = json!({"topologySpreadConstraints": [{"maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}}]});
    let mut zones = std::collections::BTreeMap::<char, usize>::new();
    for i in 0..6 {
        let p = labelled(&format!("w{i}"), json!({"app": "web"}), spec.clone());
        let n = place(&mut c, &format!("w{i}"), &p).expect("fits");
        assert_ne!(n, "nozone", "a node without the key is not a domain");
        *zones.entry(n.chars().next().unwrap_or('?')).or_default() += 1;
        let (lo, hi) = (zones.values().min(), zones.values().max());
        assert!(
            zones.len() < 2 || hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
            "skew above 1: {zones:?}"
        );
    }
    assert_eq!(zones.get(&'a'), Some(&3));
    assert_eq!(zones.get(&'b'), Some(&3));
    // Only the zone-less node left with room: the reason names the missing label.
    let mut tight = cache_with(vec![small("nozone")]);
    let p = labelled("w", json!({"app": "web"}), spec);
    assert_eq!(
        place(&mut tight, "w", &p),
        Err("0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label).".into())
    );
}

#[test]
fn preferred_anti_affinity_and_soft_spread_steer() {
    let mut c = cache_with(vec![small("n1"), small("n2")]);
    let noisy = labelled("noisy", json!({"app": "noisy"}), json!({}));
    let noisy_at = place(&mut c, "noisy", &noisy).expect("fits");
    let shy = json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "noisy"}},
            "topologyKey": "kubernetes.io/hostname"}}]}}});
    let p = labelled("shy", json!({"app": "shy"}), shy);
    assert_ne!(place(&mut c, "shy", &p).expect("fits"), noisy_at);

    // ScheduleAnyway: the less crowded node wins, whatever the owner-based spreading says.
    let mut c = cache_with(vec![small("n1"), small("n2")]);
    let soft = json!({"topologySpreadConstraints": [{"maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"tier": "front"}}}]});
    // A hog makes its node the fuller one, so least-allocated alone would send both
    // front pods to the other node.
    let hog_at = place(&mut c, "hog", &with_requests("hog", "2", "4Gi")).expect("fits");
    let first = labelled("f0", json!({"tier": "front"}), soft.clone());
    let at = place(&mut c, "f0", &first).expect("fits");
    assert_ne!(at, hog_at);
    let second = labelled("f1", json!({"tier": "front", "v": "2"}), soft);
    assert_eq!(place(&mut c, "f1", &second), Ok(hog_at));
}

#[test]
fn affinity_counts_pods_matching_every_term_and_spread_skips_terminating_pods() {
    // Two terms: a pod matching only one of them does not satisfy the rule.
    let mut c = cache_with(vec![zoned("a1", "a"), zoned("b1", "b")]);
    let half = labelled("half", json!({"app": "web"}), json!({}));
    assert!(place(&mut c, "half", &half).is_ok());
    let both = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"},
        {"labelSelector": {"matchLabels": {"tier": "front"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    let p = labelled("p", json!({"app": "api"}), both.clone());
    assert!(place(&mut c, "p", &p).is_err(), "no pod matches both terms");
    // The first pod matching both of its own terms may go anywhere; the next follows it.
    let first = labelled("f", json!({"app": "web", "tier": "front"}), both.clone());
    let at = place(&mut c, "f", &first).expect("first of its group");
    assert_eq!(place(&mut c, "p", &p), Ok(at));

    // Spread: a pod being deleted no longer counts in its zone.
    let mut c = cache_with(vec![zoned("a1", "a"), zoned("b1", "b")]);
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "s"}}}]});
    let s0 = labelled("s0", json!({"app": "s"}), spread.clone());
    let z0 = place(&mut c, "s0", &s0).expect("fits");
    let s1 = labelled("s1", json!({"app": "s"}), spread.clone());
    let z1 = place(&mut c, "s1", &s1).expect("fits");
    assert_ne!(z0, z1);
    // s0 starts terminating: its zone is now the emptier one and must take the next pod.
    let dying = pod(
        "s0",
        json!({"metadata": {"labels": {"app": "s"}, "deletionTimestamp": "2026-01-01T00:00:00Z"}}),
    );
    assert!(
        c.observe_bound("s0", &z0, &dying),
        "new labels/state recount"
    );
    let s2 = labelled("s2", json!({"app": "s"}), spread.clone());
    assert_eq!(place(&mut c, "s2", &s2), Ok(z0));
}

#[test]
fn spread_honours_node_taints_when_asked() {
    let tainted = node(
        "t",
        "4",
        "8Gi",
        "110",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}}),
    );
    let spread = |policy: &str| {
        json!({"topologySpreadConstraints": [{"maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "nodeTaintsPolicy": policy, "labelSelector": {"matchLabels": {"app": "h"}}}]})
    };
    // Ignore (the default): the tainted node is an empty domain, so after one pod on each
    // schedulable node the skew against it blocks a third.
    let mut c = cache_with(vec![small("n1"), small("n2"), tainted.clone()]);
    for i in 0..2 {
        let p = labelled(&format!("i{i}"), json!({"app": "h"}), spread("Ignore"));
        assert!(place(&mut c, &format!("i{i}"), &p).is_ok());
    }
    let p = labelled("i2", json!({"app": "h"}), spread("Ignore"));
    assert!(place(&mut c, "i2", &p).is_err());
    // Honor: the untolerated node is no domain, and the third pod fits.
    let mut c = cache_with(vec![small("n1"), small("n2"), tainted]);
    for i in 0..3 {
        let p = labelled(&format!("h{i}"), json!({"app": "h"}), spread("Honor"));
        assert!(place(&mut c, &format!("h{i}"), &p).is_ok(), "h{i}");
    }
}

fn prioritized(name: &str, cpu: &str, priority: i32) -> SchedPod {
    pod(
        name,
        json!({"spec": {"priority": priority, "containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": cpu}}}]}}),
    )
}

#[test]
fn preemption_evicts_the_fewest_least_important_pods() {
    let mut c = cache_with(vec![
        node("a", "2", "4Gi", "110", json!({})),
        node("b", "2", "4Gi", "110", json!({})),
    ]);
    // a: two small low pods; b: one big pod of middle priority.
    for (key, n, p) in [
        ("a1", "a", prioritized("a1", "1", 1)),
        ("a2", "a", prioritized("a2", "1", 2)),
        ("b1", "b", prioritized("b1", "2", 5)),
    ] {
        c.observe_bound(key, n, &p);
    }
    let high = prioritized("high", "1", 100);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    assert!(c.decide(&high, &mut rng).is_err());
    let p = c.preempt(&high).expect("room can be made");
    // On a the most important candidate (a2) is reprieved; one victim of priority 1
    // beats b's victim of priority 5.
    assert_eq!(p.node, "a");
    let victims: Vec<&str> = p.victims.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(victims, ["a1"]);

    // Nothing of lower priority to evict: kube's wording, per node.
    let low = prioritized("low", "1", 0);
    assert_eq!(
        c.preempt(&low),
        Err("0/2 nodes are available: 2 No preemption victims found for incoming pod.".into())
    );
    // A node the pod cannot use whatever is evicted is not helped by preemption.
    let mut t = cache_with(vec![node(
        "t",
        "2",
        "4Gi",
        "110",
        json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
    )]);
    t.observe_bound("x", "t", &prioritized("x", "2", 1));
    assert_eq!(
        t.preempt(&high),
        Err("0/1 nodes are available: 1 Preemption is not helpful for scheduling.".into())
    );
    // Victims already terminating are waited for, not preempted again.
    let dying = pod(
        "a1",
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"priority": 1, "containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": "1"}}}]}}),
    );
    c.observe_bound("a1", "a", &dying);
    assert!(c.lower_terminating_on("a", 100));
    assert!(!c.lower_terminating_on("b", 100));
}
