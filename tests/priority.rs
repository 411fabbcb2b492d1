//! PriorityClass and preemption end to end: the two system classes, classes created,
//! listed and refused in Kubernetes' words with each supported kubectl, the Priority
//! admission plugin filling `spec.priority` in (and refusing unknown classes and
//! mismatched priorities), and on a full hollow node a high-priority pod preempting a
//! low-priority one: the victim deleted with a Preempted event, the preemptor nominated
//! to the node and running there.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);
const K: &str = KUBECTL_DEFAULT;

fn pod(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}  containers:\n  - name: c\n    image: registry.local/x:v1\n    resources:\n      requests:\n        cpu: 800m\n")
}

fn refused(c: &Cluster, manifest: &str) -> String {
    let out = c.apply_stdin(K, &["create", "-f", "-"], manifest);
    assert!(!out.status.success(), "created: {manifest}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn priority_classes_and_priority_admission() {
    let c = Cluster::start();
    for (name, value) in [
        ("system-cluster-critical", "2000000000"),
        ("system-node-critical", "2000001000"),
    ] {
        let got = c.ok(K, &["get", "pc", name, "-o", "jsonpath={.value}"]);
        assert_eq!(got, value);
    }
    for (i, kubectl) in kubectls().into_iter().enumerate() {
        let high = format!("high-{i}");
        c.ok(
            kubectl,
            &[
                "create",
                "priorityclass",
                &high,
                "--value=1000",
                "--description=important",
            ],
        );
        let got = c.ok(
            kubectl,
            &[
                "get",
                "priorityclass",
                &high,
                "-o",
                "jsonpath={.preemptionPolicy} {.description}",
            ],
        );
        assert_eq!(got, "PreemptLowerPriority important");
        let table = c.ok(kubectl, &["get", "pc", &high]);
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(header[..3], ["NAME", "VALUE", "GLOBAL-DEFAULT"], "{table}");
        let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(row[..3], [high.as_str(), "1000", "false"], "{table}");

        let huge = format!("huge-{i}");
        let err = c.fails(
            kubectl,
            &["create", "priorityclass", &huge, "--value=1000000001"],
        );
        assert!(
            err.contains(&format!("PriorityClass.scheduling.k8s.io \"{huge}\" is invalid: value: Forbidden: maximum allowed value of a user defined priority is 1000000000")),
            "{err}"
        );
        let err = c.fails(
            kubectl,
            &["create", "priorityclass", "system-mine", "--value=5"],
        );
        assert!(
            err.contains("metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"),
            "{err}"
        );
        let err = c.fails(
            kubectl,
            &[
                "patch",
                "pc",
                &high,
                "--type=merge",
                "-p",
                r#"{"value":5,"preemptionPolicy":"Never"}"#,
            ],
        );
        assert!(
            err.contains("value: Forbidden: may not be changed in an update.")
                && err.contains("preemptionPolicy: Invalid value: \"Never\": field is immutable"),
            "{err}"
        );
    }

    // Admission: the class's value, 0 without one, refusals in kube's words.
    c.create(&pod("plain", ""));
    assert_eq!(
        c.pod_field("plain", "{.spec.priority} {.spec.preemptionPolicy}"),
        "0 PreemptLowerPriority"
    );
    c.create(&pod("important", "  priorityClassName: high-0\n"));
    assert_eq!(c.pod_field("important", "{.spec.priority}"), "1000");
    let err = refused(&c, &pod("lost", "  priorityClassName: nope\n"));
    assert!(
        err.contains("pods \"lost\" is forbidden: no PriorityClass with name nope was found"),
        "{err}"
    );
    let err = refused(
        &c,
        &pod("wrong", "  priorityClassName: high-0\n  priority: 5\n"),
    );
    assert!(
        err.contains("pods \"wrong\" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"),
        "{err}"
    );

    // One global default, which pods without a class get.
    c.ok(
        K,
        &[
            "create",
            "priorityclass",
            "fallback",
            "--value=7",
            "--global-default",
            "--preemption-policy=Never",
        ],
    );
    let err = c.fails(
        K,
        &[
            "create",
            "priorityclass",
            "second",
            "--value=8",
            "--global-default",
        ],
    );
    assert!(
        err.contains("priorityclasses.scheduling.k8s.io \"second\" is forbidden: PriorityClass fallback is already marked as default. Only one default can exist"),
        "{err}"
    );
    c.create(&pod("defaulted", ""));
    assert_eq!(
        c.pod_field(
            "defaulted",
            "{.spec.priorityClassName} {.spec.priority} {.spec.preemptionPolicy}"
        ),
        "fallback 7 Never"
    );
}

fn wait_events(c: &Cluster, pod: &str, reason: &str, want: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        last = c.event_messages(&format!("involvedObject.name={pod},reason={reason}"));
        if last.contains(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no {reason} event on {pod} with {want:?}; last {last:?}");
}

#[test]
fn a_high_priority_pod_preempts_a_low_priority_one_on_a_full_node() {
    let c = Cluster::start();
    let _node = c.hollow_nodes(1, "full", &["--cpu", "1", "--memory", "4Gi"]);
    c.wait_for_output(&["get", "nodes", "-o", "name"], "node/full-0", WAIT);
    c.ok(K, &["create", "priorityclass", "low", "--value=10"]);
    c.ok(K, &["create", "priorityclass", "high", "--value=1000"]);
    c.ok(
        K,
        &[
            "create",
            "priorityclass",
            "polite",
            "--value=2000",
            "--preemption-policy=Never",
        ],
    );

    c.create(&pod("victim", "  priorityClassName: low\n"));
    c.wait_pod_field(
        "victim",
        "{.status.phase} {.spec.nodeName}",
        "Running full-0",
        WAIT,
    );
    let victim_uid = c.pod_field("victim", "{.metadata.uid}");

    // Higher, but never preempts: it waits, and says why.
    c.create(&pod("polite", "  priorityClassName: polite\n"));
    wait_events(
        &c,
        "polite",
        "FailedScheduling",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.",
    );
    c.ok(K, &["delete", "pod", "polite"]);

    c.create(&pod("preemptor", "  priorityClassName: high\n"));
    c.wait_pod_field(
        "preemptor",
        "{.status.phase} {.spec.nodeName}",
        "Running full-0",
        WAIT,
    );
    let uid = c.pod_field("preemptor", "{.metadata.uid}");
    c.wait_for_output(
        &["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"],
        "preemptor",
        WAIT,
    );
    assert_eq!(
        c.pod_field("preemptor", "{.status.nominatedNodeName}"),
        "full-0"
    );
    let selector = format!("involvedObject.uid={victim_uid},reason=Preempted");
    c.wait_for_output(
        &[
            "get",
            "events",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={.items[*].message}",
        ],
        &format!("Preempted by pod {uid} on node full-0"),
        WAIT,
    );
    wait_events(
        &c,
        "preemptor",
        "FailedScheduling",
        "0/1 nodes are available: 1 Insufficient cpu.",
    );

    // Nothing lower left to evict: the lower pod waits, with kube's preemption text.
    c.create(&pod("late", "  priorityClassName: low\n"));
    wait_events(
        &c,
        "late",
        "FailedScheduling",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
    );
    assert_eq!(c.pod_field("late", "{.spec.nodeName}"), "");
}
