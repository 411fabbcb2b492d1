use k8s_openapi::api::apps::v1::{DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use serde_json::json;
use spindle_scheduler::PodFit;

use super::*;

fn node(name: &str, labels: serde_json::Value, taints: &[(&str, &str)]) -> Node {
    Node {
        metadata: serde_json::from_value(json!({"name": name, "labels": labels}))
            .expect("metadata"),
        spec: Some(NodeSpec {
            taints: Some(
                taints
                    .iter()
                    .map(|(k, e)| Taint {
                        key: (*k).into(),
                        effect: (*e).into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

fn daemon_pod(spec: serde_json::Value) -> Pod {
    let ds: DaemonSetSpec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": spec}}))
    .expect("spec");
    let t = daemon_template(&ds);
    Pod {
        metadata: Default::default(),
        spec: t.spec,
        status: None,
    }
}

fn run(pod: &Pod, n: &Node) -> (bool, bool) {
    should_run(PodFit::new(pod).on(n))
}

#[test]
fn eligibility_follows_selector_affinity_taints_and_runtime() {
    let plain = daemon_pod(json!({"containers": [{"name": "c", "image": "x.wasm"}]}));
    let a = node("a", json!({"disk": "ssd"}), &[]);
    assert_eq!(run(&plain, &a), (true, true));

    let selective = daemon_pod(json!({"nodeSelector": {"disk": "ssd"},
        "containers": [{"name": "c", "image": "x"}]}));
    assert_eq!(run(&selective, &a), (true, true));
    assert_eq!(run(&selective, &node("b", json!({}), &[])), (false, false));

    let affine = daemon_pod(json!({"containers": [{"name": "c", "image": "x"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]}}}}));
    assert_eq!(run(&affine, &a), (false, false));
    assert_eq!(run(&affine, &node("b", json!({}), &[])), (true, true));

    // A NoSchedule taint keeps new pods away but lets a running one stay; NoExecute
    // sends it away; a toleration lets it in.
    let no_sched = node("t", json!({}), &[("dedicated", "NoSchedule")]);
    assert_eq!(run(&plain, &no_sched), (false, true));
    let no_exec = node("t", json!({}), &[("dedicated", "NoExecute")]);
    assert_eq!(run(&plain, &no_exec), (false, false));
    let tolerant = daemon_pod(json!({"containers": [{"name": "c", "image": "x"}],
        "tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
    assert_eq!(run(&tolerant, &no_exec), (true, true));

    // The taints kube's daemon pods tolerate by default.
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        assert_eq!(
            run(&plain, &node("p", json!({}), &[(key, effect)])),
            (true, true),
            "{key}"
        );
    }
    let net = node(
        "n",
        json!({}),
        &[("node.kubernetes.io/network-unavailable", "NoSchedule")],
    );
    assert_eq!(run(&plain, &net), (false, true));
    let host =
        daemon_pod(json!({"hostNetwork": true, "containers": [{"name": "c", "image": "x"}]}));
    assert_eq!(run(&host, &net), (true, true));

    // A container pod goes only where containerd runs.
    let runc = daemon_pod(json!({"runtimeClassName": "runc",
        "containers": [{"name": "c", "image": "nginx"}]}));
    assert_eq!(run(&runc, &a), (false, false));
    let ctr = node("c", json!({"runtime.spindle.dev/containerd": "true"}), &[]);
    assert_eq!(run(&runc, &ctr), (true, true));
}

#[test]
fn daemon_tolerations_have_no_seconds_and_replace_the_users() {
    let p = daemon_pod(json!({"containers": [{"name": "c", "image": "x"}],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 30}]}));
    let tols = p.spec.and_then(|s| s.tolerations).unwrap_or_default();
    assert_eq!(tols.len(), 6, "{tols:?}");
    assert!(
        tols.iter().all(|t| t.toleration_seconds.is_none()),
        "{tols:?}"
    );
}

#[test]
fn pinning_replaces_required_terms_and_is_read_back() {
    let mut p = daemon_pod(json!({"containers": [{"name": "c", "image": "x"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "disk", "operator": "Exists"}]}]}}}}));
    let spec = p.spec.as_mut().expect("spec");
    pin_to_node(spec, "n7");
    let v = serde_json::to_value(&spec.affinity).expect("json");
    assert_eq!(
        v.pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms"),
        Some(
            &json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}])
        )
    );
    assert_eq!(target_node(&p).as_deref(), Some("n7"));
    let fit = PodFit::new(&p);
    assert!(fit.on(&node("n7", json!({}), &[])).placeable);
    assert!(!fit.on(&node("n8", json!({}), &[])).placeable);
}

fn strategy(surge: Option<IntOrString>, unavailable: Option<IntOrString>) -> DaemonSetSpec {
    DaemonSetSpec {
        update_strategy: Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_surge: surge,
                max_unavailable: unavailable,
            }),
        }),
        ..Default::default()
    }
}

#[test]
fn max_counts_round_up_and_never_stall() {
    let pct = |s: &str| Some(IntOrString::String(s.into()));
    assert_eq!(max_counts(&DaemonSetSpec::default(), 7), Ok((0, 1)));
    assert_eq!(max_counts(&strategy(None, pct("10%")), 1000), Ok((0, 100)));
    assert_eq!(max_counts(&strategy(None, pct("10%")), 7), Ok((0, 1)));
    assert_eq!(
        max_counts(&strategy(pct("25%"), Some(IntOrString::Int(0))), 6),
        Ok((2, 0))
    );
    assert_eq!(
        max_counts(
            &strategy(Some(IntOrString::Int(0)), Some(IntOrString::Int(0))),
            6
        ),
        Ok((0, 1))
    );
    assert!(max_counts(&strategy(None, pct("x")), 6).is_err());
}

fn st(name: &str, available: bool) -> PodState {
    PodState {
        name: name.into(),
        available,
    }
}

#[test]
fn rolling_without_surge_keeps_unavailability_under_the_limit() {
    let old = |n: &str, a| NodePods::new(n, [(st(&format!("old-{n}"), a), false)]);
    let new = |n: &str, a| NodePods::new(n, [(st(&format!("new-{n}"), a), true)]);
    // Three old available pods, limit 1: one goes.
    let nodes = [old("a", true), old("b", true), old("c", true)];
    assert_eq!(
        rolling_step(&nodes, 0, 1),
        (vec!["old-a".to_string()], vec![])
    );
    // A new pod not yet available uses the budget: nothing more goes...
    let nodes = [new("a", false), old("b", true), old("c", true)];
    assert_eq!(rolling_step(&nodes, 0, 1).0, Vec::<String>::new());
    // ...except an old pod that is unavailable anyway.
    let nodes = [new("a", false), old("b", false), old("c", true)];
    assert_eq!(rolling_step(&nodes, 0, 1).0, vec!["old-b".to_string()]);
    // A node whose pod is being replaced (none now) counts as unavailable.
    let empty = NodePods::new("a", []);
    assert_eq!(
        rolling_step(&[empty, old("b", true)], 0, 1).0,
        Vec::<String>::new()
    );
    // A limit of 2 takes two at a time.
    let nodes = [
        new("a", true),
        old("b", true),
        old("c", true),
        old("d", true),
    ];
    assert_eq!(
        rolling_step(&nodes, 0, 2).0,
        vec!["old-b".to_string(), "old-c".to_string()]
    );
    // Two old pods on one node: left to the manage step, and unavailable meanwhile.
    let twice = NodePods::new("a", [(st("x", true), false), (st("y", true), false)]);
    assert_eq!(twice.split, None);
    assert_eq!(
        rolling_step(&[twice, old("b", true)], 0, 1).0,
        Vec::<String>::new()
    );
}

#[test]
fn rolling_with_surge_starts_new_pods_first() {
    let old = |n: &str| NodePods::new(n, [(st(&format!("old-{n}"), true), false)]);
    let both = |n: &str, a| {
        NodePods::new(
            n,
            [
                (st(&format!("old-{n}"), true), false),
                (st(&format!("new-{n}"), a), true),
            ],
        )
    };
    assert_eq!(
        rolling_step(&[old("a"), old("b"), old("c")], 1, 0),
        (vec![], vec!["a".to_string()])
    );
    // The surged pod is not available yet: wait.
    assert_eq!(
        rolling_step(&[both("a", false), old("b")], 1, 0),
        (vec![], vec![])
    );
    // It is: the old pod goes, and the surge budget is free for the next node.
    assert_eq!(
        rolling_step(&[both("a", true), old("b")], 1, 0),
        (vec!["old-a".to_string()], vec!["b".to_string()])
    );
}
