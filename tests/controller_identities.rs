//! The controllers work under their own identities, as kube-controller-manager with
//! `--use-service-account-credentials`: each is the ServiceAccount
//! `kube-system/<controller>` bound to the bootstrap ClusterRole
//! `system:controller:<controller>`, none is in system:masters. Checked through the API
//! (access reviews with both kubectls), and at work: a controller whose role loses a rule
//! is refused in Kubernetes' words naming its ServiceAccount, and resumes once the rule is
//! back; a Job runs to completion on hollow nodes.

mod common;

use std::time::{Duration, Instant};

use common::{kubectls, Cluster, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(120);
const JOB_CONTROLLER: &str = "system:serviceaccount:kube-system:job-controller";
const RS_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kubectl auth can-i` as `user`: "yes" or "no" (can-i exits 1 on "no").
fn can_i(c: &Cluster, kubectl: &str, user: &str, args: &[&str]) -> String {
    let who = format!("--as={user}");
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    all.push(&who);
    let out = c.kubectl(kubectl, &all);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn replica_set(replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: idle
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: idle}}
  template:
    metadata:
      labels: {{app: idle}}
    spec:
      containers:
      - name: main
        image: idle
"#
    )
}

fn pods_of_replica_set(c: &Cluster) -> usize {
    c.ok(
        KUBECTL_DEFAULT,
        &["get", "pods", "-l", "app=idle", "-o", "name"],
    )
    .lines()
    .count()
}

#[test]
fn controllers_work_as_their_own_service_accounts() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(1, "hollow", &[]);

    // The bootstrap policy: Kubernetes' controller roles, each bound to its account.
    let roles = c.ok(KUBECTL_DEFAULT, &["get", "clusterroles", "-o", "name"]);
    for name in [
        "job-controller",
        "replicaset-controller",
        "deployment-controller",
        "statefulset-controller",
        "persistent-volume-binder",
        "certificate-controller",
        "node-controller",
        "endpointslice-controller",
    ] {
        assert!(
            roles.contains(&format!(
                "clusterrole.rbac.authorization.k8s.io/system:controller:{name}\n"
            )),
            "no role for {name} in:\n{roles}"
        );
    }
    let subjects = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "clusterrolebinding",
            "system:controller:job-controller",
            "-o",
            "jsonpath={.roleRef.name} {.subjects[*].kind} {.subjects[*].namespace}/{.subjects[*].name}",
        ],
    );
    assert_eq!(
        subjects,
        "system:controller:job-controller ServiceAccount kube-system/job-controller"
    );
    // The controller manager makes its controllers' accounts, as Kubernetes' does.
    c.wait_for_output(
        &[
            "get",
            "serviceaccount",
            "-n",
            "kube-system",
            "job-controller",
            "-o",
            "name",
        ],
        "serviceaccount/job-controller",
        WAIT,
    );

    // Each identity holds its role and nothing more; the informers' identity reads all
    // and writes nothing but its own few kinds.
    let kcm = "system:kube-controller-manager";
    let quota = "system:serviceaccount:kube-system:resourcequota-controller";
    let expected: [(&str, &[&str], &str); 14] = [
        (JOB_CONTROLLER, &["create", "pods"], "yes"),
        (JOB_CONTROLLER, &["update", "jobs.batch/status"], "yes"),
        (JOB_CONTROLLER, &["get", "secrets", "-A"], "no"),
        (JOB_CONTROLLER, &["create", "deployments.apps"], "no"),
        (JOB_CONTROLLER, &["delete", "nodes"], "no"),
        (RS_CONTROLLER, &["create", "pods"], "yes"),
        (RS_CONTROLLER, &["create", "jobs.batch"], "no"),
        (
            quota,
            &["update", "resourcequotas", "--subresource=status"],
            "yes",
        ),
        (quota, &["update", "resourcequotas"], "no"),
        (quota, &["list", "deployments.apps", "-A"], "yes"),
        (quota, &["get", "secrets", "-A"], "no"),
        (kcm, &["list", "secrets", "-A"], "yes"),
        (kcm, &["create", "pods"], "no"),
        (kcm, &["get", "deployments.apps"], "no"),
    ];
    for k in kubectls() {
        for (user, args, answer) in expected {
            assert_eq!(can_i(&c, k, user, args), answer, "{k} {user} {args:?}");
        }
    }
    let list = c.ok(
        KUBECTL_DEFAULT,
        &["auth", "can-i", "--list", &format!("--as={JOB_CONTROLLER}")],
    );
    let row = |resource: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(resource))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        row("jobs.batch").as_deref(),
        Some("jobs.batch [] [] [get list patch update watch]"),
        "{list}"
    );
    assert_eq!(row("secrets"), None, "{list}");

    // At work: a Job completes with the job controller in no system:masters.
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: short
spec:
  completions: 2
  template:
    metadata:
      annotations:
        hollow.spindle.dev/run-for: 1s
        hollow.spindle.dev/exit-code: "0"
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: idle
"#,
    );
    c.wait_for_output(
        &[
            "get",
            "job",
            "short",
            "-o",
            "jsonpath={.status.succeeded}/{.status.conditions[?(@.type==\"Complete\")].status}",
        ],
        "2/True",
        WAIT,
    );

    // A ReplicaSet makes its pods; with the rule to create pods taken from its role
    // (pinned against the bootstrap reconciliation), the controller is refused as its
    // ServiceAccount, and it recovers once the rule is back.
    c.apply(&replica_set(1));
    wait_until("the ReplicaSet's first pod", WAIT, || {
        (pods_of_replica_set(&c) == 1).then_some(())
    });
    let role = "system:controller:replicaset-controller";
    let rules = c.ok(
        KUBECTL_DEFAULT,
        &["get", "clusterrole", role, "-o", "jsonpath={.rules}"],
    );
    let rules: serde_json::Value = serde_json::from_str(&rules).expect("rules");
    let without_pods: Vec<serde_json::Value> = rules
        .as_array()
        .expect("a list of rules")
        .iter()
        .filter(|r| {
            !r["resources"]
                .as_array()
                .is_some_and(|x| x.contains(&"pods".into()))
        })
        .cloned()
        .collect();
    assert!(without_pods.len() < rules.as_array().map_or(0, Vec::len));
    let pin = |rules: &serde_json::Value| {
        serde_json::json!({
            "metadata": {"annotations": {"rbac.authorization.kubernetes.io/autoupdate": "false"}},
            "rules": rules,
        })
        .to_string()
    };
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "patch",
            "clusterrole",
            role,
            "--type=merge",
            "-p",
            &pin(&without_pods.into()),
        ],
    );
    wait_until("the replicaset controller to lose the right", WAIT, || {
        (can_i(&c, KUBECTL_DEFAULT, RS_CONTROLLER, &["create", "pods"]) == "no").then_some(())
    });
    c.apply(&replica_set(3));
    let refused = format!(
        "User \"{RS_CONTROLLER}\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    wait_until(
        "the FailedCreate event naming the controller's account",
        WAIT,
        || {
            let events = c.ok(
                KUBECTL_DEFAULT,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=idle,reason=FailedCreate",
                    "-o",
                    "jsonpath={range .items[*]}{.type} {.message}{\"\\n\"}{end}",
                ],
            );
            events
                .lines()
                .any(|l| l.starts_with("Warning ") && l.contains(&refused))
                .then_some(())
        },
    );
    assert_eq!(
        pods_of_replica_set(&c),
        1,
        "no pod is made without the right"
    );
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "patch",
            "clusterrole",
            role,
            "--type=merge",
            "-p",
            &pin(&rules),
        ],
    );
    wait_until(
        "the ReplicaSet's three pods once the rule is back",
        WAIT,
        || (pods_of_replica_set(&c) == 3).then_some(()),
    );
}
