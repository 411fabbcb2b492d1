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

/// Waits until the Job has condition `ty` True; returns its status.
fn wait_condition(c: &Cluster, name: &str, ty: &str) -> Value {
    wait_for(&format!("{name} {ty}"), || {
        let st = status(c, name);
        if condition(&st, ty).0 == "True" {
            Ok(st)
        } else {
            Err(format!("{st:#}"))
        }
    })
}

fn index_of(p: &Value) -> String {
    p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn millis(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("no timestamp: {v}"));
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .as_millisecond()
}

const STRAY: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels:\n    app: strays\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: IMAGE\n    args: [\"sleep\", \"0\"]\n";

const ADOPTER: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: adopter\nspec:\n  manualSelector: true\n  selector:\n    matchLabels:\n      app: strays\n  template:\n    metadata:\n      labels:\n        app: strays\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: IMAGE\n        args: [\"echo\", \"mine\"]\n";

#[test]
fn indexes_fail_and_succeed_by_their_own_rules_and_a_manual_selector_adopts() {
    let (c, image, _reg) = start();
    let by_index = ["exit", "$(JOB_COMPLETION_INDEX)"];
    // Index 0 succeeds; 1 and 2 fail twice (one retry each); 3 matches FailIndex.
    c.apply(&job(
        "per-index",
        &image,
        "  completionMode: Indexed\n  completions: 4\n  parallelism: 4\n  backoffLimitPerIndex: 1\n  podFailurePolicy:\n    rules:\n    - action: FailIndex\n      onExitCodes:\n        operator: In\n        values: [3]",
        &by_index,
    ));
    // No retries and at most one failed index: the second one fails the Job.
    c.apply(&job(
        "max-failed",
        &image,
        "  completionMode: Indexed\n  completions: 4\n  parallelism: 4\n  backoffLimitPerIndex: 0\n  maxFailedIndexes: 1",
        &by_index,
    ));
    // Index i sleeps i seconds (0: for ever); two successes are enough.
    c.apply(&job(
        "enough",
        &image,
        "  completionMode: Indexed\n  completions: 4\n  parallelism: 4\n  successPolicy:\n    rules:\n    - succeededIndexes: \"0\"\n    - succeededCount: 2",
        &["sleep", "$(JOB_COMPLETION_INDEX)"],
    ));
    c.apply(&STRAY.replace("IMAGE", &image));

    // successPolicy: SuccessCriteriaMet, the rest stopped, then Complete.
    for k in kubectls() {
        c.ok(
            k,
            &[
                "wait",
                "--for=condition=complete",
                "job/enough",
                "--timeout=180s",
            ],
        );
    }
    let st = status(&c, "enough");
    let met = (
        "True".to_string(),
        "SuccessPolicy".to_string(),
        "Matched rules at index 1".to_string(),
    );
    assert_eq!(condition(&st, "SuccessCriteriaMet"), met, "{st:#}");
    assert_eq!(condition(&st, "Complete"), met, "{st:#}");
    assert_eq!(st["active"], 0, "{st:#}");
    let done = st["completedIndexes"].as_str().unwrap_or_default();
    assert!(done.starts_with("1,2") || done == "1-3", "{st:#}");
    wait_for("index 0 of enough stopped", || {
        let ps = pods(&c, "enough");
        let zero: Vec<&Value> = ps.iter().filter(|p| index_of(p) == "0").collect();
        let stopped = zero
            .iter()
            .all(|p| p["metadata"]["deletionTimestamp"].is_string() || phase(p) == "Failed");
        if stopped {
            Ok(())
        } else {
            Err(format!("{zero:#?}"))
        }
    });

    // backoffLimitPerIndex: the failed indexes and the per-index failure counts.
    for k in kubectls() {
        c.ok(
            k,
            &[
                "wait",
                "--for=condition=failed",
                "job/per-index",
                "--timeout=180s",
            ],
        );
    }
    let st = status(&c, "per-index");
    let failed = (
        "True".to_string(),
        "FailedIndexes".to_string(),
        "Job has failed indexes".to_string(),
    );
    assert_eq!(condition(&st, "FailureTarget"), failed, "{st:#}");
    assert_eq!(condition(&st, "Failed"), failed, "{st:#}");
    assert_eq!(
        (&st["completedIndexes"], &st["failedIndexes"], &st["failed"]),
        (&Value::from("0"), &Value::from("1-3"), &Value::from(5)),
        "{st:#}"
    );
    let ps = pods(&c, "per-index");
    for (ix, tries) in [("0", 1), ("1", 2), ("2", 2), ("3", 1)] {
        let mut mine: Vec<&Value> = ps.iter().filter(|p| index_of(p) == ix).collect();
        assert_eq!(mine.len(), tries, "index {ix}: {mine:#?}");
        mine.sort_by_key(|p| millis(&p["metadata"]["creationTimestamp"]));
        let counts: Vec<&str> = mine
            .iter()
            .map(|p| {
                p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"]
                    .as_str()
                    .unwrap_or("none")
            })
            .collect();
        let want: Vec<String> = (0..tries).map(|n| n.to_string()).collect();
        assert_eq!(counts, want, "index {ix}");
        if tries == 2 {
            // The index's own back-off: 10 s after its first failure.
            let ended = millis(
                &mine[0]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"],
            );
            let gap = millis(&mine[1]["metadata"]["creationTimestamp"]) - ended / 1000 * 1000;
            assert!(gap >= 9_000, "index {ix} retried after {gap} ms");
        }
    }

    // maxFailedIndexes: no index is retried; more than one failed fails the Job.
    let st = wait_condition(&c, "max-failed", "Failed");
    assert_eq!(
        condition(&st, "Failed"),
        (
            "True".to_string(),
            "MaxFailedIndexesExceeded".to_string(),
            "Job has exceeded the specified maximal number of failed indexes".to_string()
        ),
        "{st:#}"
    );
    let shown = st["failedIndexes"].as_str().unwrap_or_default();
    assert!(
        ["1,2", "1-3", "1,3", "2,3"].contains(&shown),
        "failedIndexes {shown}"
    );
    let ps = pods(&c, "max-failed");
    let mut seen: Vec<String> = ps.iter().map(index_of).collect();
    seen.sort();
    let n = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), n, "an index was retried: {seen:?}");

    // manualSelector: the running orphan is adopted (and counted as the Job's pod)...
    c.wait_pod_field("stray", "{.status.phase}", "Running", WAIT);
    c.apply(&ADOPTER.replace("IMAGE", &image));
    let owner = |c: &Cluster| c.pod_field("stray", "{.metadata.ownerReferences[0].name}");
    let held = |c: &Cluster| c.pod_field("stray", "{.metadata.finalizers}");
    wait_for("stray adopted", || {
        let (o, f) = (owner(&c), held(&c));
        if o == "adopter" && f.contains("batch.kubernetes.io/job-tracking") {
            Ok(())
        } else {
            Err(format!("owner {o:?}, finalizers {f:?}"))
        }
    });
    assert_eq!(
        c.pod_field("stray", "{.metadata.ownerReferences[0].controller}"),
        "true"
    );
    wait_for("adopter counts stray as active", || {
        let st = status(&c, "adopter");
        (st["active"] == 1).then_some(()).ok_or(format!("{st:#}"))
    });
    let sel = "app=strays";
    let list = json_of(&c, &["get", "pods", "-l", sel]);
    let names: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["stray"],
        "the Job started a pod beside the adopted one"
    );
    // ...and released, finalizer and all, once relabelled; the Job then runs its own.
    c.ok(
        common::KUBECTL_OLDEST,
        &["label", "pod", "stray", "app=loose", "--overwrite"],
    );
    wait_for("stray released", || {
        let (o, f) = (owner(&c), held(&c));
        if o.is_empty() && !f.contains("job-tracking") {
            Ok(())
        } else {
            Err(format!("owner {o:?}, finalizers {f:?}"))
        }
    });
    let st = wait_condition(&c, "adopter", "Complete");
    assert_eq!(st["succeeded"], 1, "{st:#}");
    assert_eq!(c.pod_field("stray", "{.status.phase}"), "Running");
    assert_eq!(c.ok(K, &["logs", "job/adopter"]), "mine\n");
}
