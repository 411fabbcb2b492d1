//! Numbers a user may write into workloads, at the edge of what they can hold: grace
//! periods, deadlines, minReadySeconds, tolerationSeconds, maxSurge and percentages.
//! Created through kubectl, each reaches the controllers' arithmetic; none may panic a
//! server task, and the controllers keep doing their work (a Deployment still rolls out).

mod common;

use std::time::Duration;

use common::{Cluster, KUBECTL_DEFAULT as K};

const MINUTE: Duration = Duration::from_secs(60);
const I64_MAX: &str = "9223372036854775807";
const I32_MAX: &str = "2147483647";

fn deployment(name: &str, replicas: u32, extra_spec: &str, strategy: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
{extra_spec}
  strategy:
{strategy}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: {I64_MAX}
      activeDeadlineSeconds: {I32_MAX}
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: {I64_MAX}}}
      containers:
      - name: app
        image: registry.local/app:v1
"#
    )
}

fn rolled_out(c: &Cluster, name: &str) {
    c.ok(
        K,
        &[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=120s",
        ],
    );
}

#[test]
fn huge_numbers_in_workloads_leave_the_controllers_working() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(2, "hollow", &[]);
    c.wait_for_output(
        &["get", "nodes", "-o", "name"],
        "node/hollow-0\nnode/hollow-1",
        MINUTE,
    );

    // maxSurge far past any replica count, as a number and as a percentage; deadlines
    // and history at their maximum.
    let surge = deployment(
        "surge",
        2,
        &format!("  progressDeadlineSeconds: {}\n  revisionHistoryLimit: {I32_MAX}", i32::MAX - 1),
        &format!("    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: {I32_MAX}\n      maxUnavailable: 0"),
    );
    c.apply(&surge);
    let percent = deployment(
        "percent",
        2,
        "",
        &format!("    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: \"{I64_MAX}%\"\n      maxUnavailable: 1"),
    );
    c.apply(&percent);
    // minReadySeconds at its maximum: ready pods never become available, and the
    // ReplicaSet asks to be looked at again in 68 years.
    let patient = deployment(
        "patient",
        1,
        &format!("  minReadySeconds: {I32_MAX}"),
        "    type: Recreate",
    );
    c.apply(&patient);
    c.apply(&format!(
        r#"apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: surge
spec:
  maxUnavailable: {I32_MAX}
  selector:
    matchLabels: {{app: surge}}
"#
    ));
    rolled_out(&c, "surge");
    rolled_out(&c, "percent");
    c.wait_for_output(
        &[
            "get",
            "rs",
            "-l",
            "app=patient",
            "-o",
            "jsonpath={.items[0].status.readyReplicas}/{.items[0].status.availableReplicas}",
        ],
        "1/0",
        MINUTE,
    );

    // Each of them rolls and scales again.
    c.ok(
        K,
        &[
            "set",
            "image",
            "deployment/surge",
            "app=registry.local/app:v2",
        ],
    );
    rolled_out(&c, "surge");
    c.ok(
        K,
        &[
            "set",
            "image",
            "deployment/percent",
            "app=registry.local/app:v2",
        ],
    );
    rolled_out(&c, "percent");
    c.ok(K, &["scale", "deployment/surge", "--replicas=3"]);
    rolled_out(&c, "surge");
    c.ok(K, &["delete", "pods", "-l", "app=surge", "--wait=false"]);

    // Requests past what any sum can hold reach the scheduler's arithmetic: the pod
    // stays Pending for want of CPU, and scheduling goes on.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: greedy
spec:
  containers:
  - {name: a, image: registry.local/app:v1, resources: {requests: {cpu: 8E, memory: 8E}}}
  - {name: b, image: registry.local/app:v1, resources: {requests: {cpu: 8E, memory: 8E}}}
"#,
    );
    c.wait_pod_field(
        "greedy",
        "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        "Unschedulable",
        MINUTE,
    );

    // The controllers and the scheduler still work: a plain Deployment rolls out, and the
    // budget is computed.
    c.ok(
        K,
        &[
            "create",
            "deployment",
            "after",
            "--image=registry.local/app:v1",
            "--replicas=2",
        ],
    );
    rolled_out(&c, "after");
    c.wait_for_output(
        &[
            "get",
            "pdb",
            "surge",
            "-o",
            "jsonpath={.status.expectedPods}",
        ],
        "3",
        MINUTE,
    );
    let log = c.log();
    assert!(
        !log.contains("panicked"),
        "a server task panicked:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
