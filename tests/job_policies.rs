//! A Job's failure and success policies end to end: a real agent runs the Wasm test
//! guest, whose exit code a Job chooses per index (`exit $(JOB_COMPLETION_INDEX)`), and
//! both kubectls read what the Job controller made of it: podFailurePolicy (FailJob,
//! Ignore, FailIndex), backoffLimitPerIndex and maxFailedIndexes, successPolicy, and
//! manualSelector's adoption and release. Each test's Jobs share one cluster.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::{kubectls, Cluster, Registry, KUBECTL_DEFAULT as K};

const WAIT: Duration = Duration::from_secs(180);

/// A Job manifest: `spec` lines (indented two spaces) and the guest's args.
fn job(name: &str, image: &str, spec: &str, args: &[&str]) -> String {
    let args = serde_json::to_string(args).expect("json");
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}\n  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {image}\n        args: {args}\n"
    )
}

fn json_of(c: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = c.ok(K, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn status(c: &Cluster, name: &str) -> Value {
    json_of(c, &["get", "job", name])["status"].clone()
}

/// The Job's pods, by the name label the server puts on its template.
fn pods(c: &Cluster, name: &str) -> Vec<Value> {
    let sel = format!("batch.kubernetes.io/job-name={name}");
    let list = json_of(c, &["get", "pods", "-l", &sel]);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// (status, reason, message) of condition `ty`, empty strings when absent.
fn condition(st: &Value, ty: &str) -> (String, String, String) {
    let found = st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty));
    let get = |k: &str| {
        found
            .and_then(|c| c[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (get("status"), get("reason"), get("message"))
}

/// Poll `f` until it gives Some, failing with `what` (and the last view) at WAIT.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => panic!("never {what}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

/// Whether a Warning event about Job `name` has this reason and message.
fn has_event(c: &Cluster, name: &str, reason: &str, message: &str) -> bool {
    let sel = format!("involvedObject.kind=Job,involvedObject.name={name}");
    let list = json_of(c, &["get", "events", "--field-selector", &sel]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["reason"] == reason && e["message"] == message)
}

fn start() -> (Cluster, String, Registry) {
    let reg = Registry::start();
    let image = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("policy-node", &["--disable-containerd"]);
    (c, image, reg)
}

#[test]
fn pod_failure_policy_fails_the_job_at_once_or_ignores_the_failure() {
    let (c, image, _reg) = start();
    c.apply(&job(
        "exit42",
        &image,
        "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes:\n        containerName: main\n        operator: In\n        values: [42]",
        &["exit", "42"],
    ));
    // Ignore: the failures do not count toward backoffLimit 0; without the rule the
    // first one would fail the Job.
    c.apply(&job(
        "ignored",
        &image,
        "  backoffLimit: 0\n  podFailurePolicy:\n    rules:\n    - action: Ignore\n      onExitCodes:\n        operator: In\n        values: [5]",
        &["exit", "5"],
    ));

    // Exit code 42 fails the Job at once: one pod, no retry, whatever backoffLimit.
    for k in kubectls() {
        c.ok(
            k,
            &[
                "wait",
                "--for=condition=failed",
                "job/exit42",
                "--timeout=180s",
            ],
        );
    }
    let st = status(&c, "exit42");
    let ps = pods(&c, "exit42");
    assert_eq!(ps.len(), 1, "the Job retried: {ps:#?}");
    let pod = ps[0]["metadata"]["name"].as_str().unwrap_or_default();
    let message =
        format!("Container main for pod default/{pod} failed with exit code 42 matching FailJob rule at index 0");
    let want = (
        "True".to_string(),
        "PodFailurePolicy".to_string(),
        message.clone(),
    );
    assert_eq!(condition(&st, "FailureTarget"), want, "{st:#}");
    assert_eq!(condition(&st, "Failed"), want, "{st:#}");
    assert_eq!(st["failed"], 1, "{st:#}");
    assert_eq!(st["active"], 0, "{st:#}");
    wait_for("the PodFailurePolicy event", || {
        has_event(&c, "exit42", "PodFailurePolicy", &message)
            .then_some(())
            .ok_or_else(String::new)
    });
    for k in kubectls() {
        let shown = c.ok(k, &["get", "job", "exit42", "--no-headers"]);
        assert!(shown.contains("Failed"), "{k}: {shown}");
    }

    // Ignored failures: the Job replaces the pod (after the back-off) and is not failed.
    wait_for("two ignored failures, done with", || {
        let ps = pods(&c, "ignored");
        let failed: Vec<&Value> = ps.iter().filter(|p| phase(p) == "Failed").collect();
        let released = failed.iter().all(|p| {
            p["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)
        });
        if failed.len() >= 2 && released {
            Ok(())
        } else {
            Err(format!("{ps:#?}"))
        }
    });
    let st = status(&c, "ignored");
    assert_eq!(condition(&st, "Failed").0, "", "{st:#}");
    assert_eq!(condition(&st, "FailureTarget").0, "", "{st:#}");
    assert_eq!(st["failed"].as_i64().unwrap_or(0), 0, "{st:#}");

    // Bad policies: 422 with kube-apiserver's words and paths, from both kubectls.
    let bad = job(
        "bad",
        &image,
        "  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes:\n        operator: In\n        values: [42, 0]\n    - action: FailIndex\n      onPodConditions:\n      - type: DisruptionTarget",
        &["exit", "1"],
    );
    for k in kubectls() {
        let out = c.apply_stdin(k, &["apply", "-f", "-"], &bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{k} accepted a bad policy");
        for want in [
            "spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Invalid value: 0: must not be 0 for the In operator",
            "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: []int32{42, 0}: must be ordered",
            "spec.podFailurePolicy.rules[1].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
        ] {
            assert!(err.contains(want), "{k}: no {want:?} in {err}");
        }
        assert!(err.contains("is invalid"), "{k}: {err}");
    }
    let on_failure = job(
        "bad",
        &image,
        "  podFailurePolicy:\n    rules:\n    - action: Ignore\n      onPodConditions:\n      - type: DisruptionTarget",
        &["exit", "1"],
    )
    .replace("restartPolicy: Never", "restartPolicy: OnFailure");
    let out = c.apply_stdin(K, &["apply", "-f", "-"], &on_failure);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified"),
        "{err}"
    );
}
