//! Jobs end to end: a real agent runs the Wasm test guest as a Job's pods, driven by
//! both kubectls. Several Jobs share one cluster (they select their own pods), so
//! their waits overlap.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{kubectls, Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(180);
/// A finalizer the test puts on a pod to keep it while it looks at its owner.
const HOLD: &str = "tests.spindle.dev/hold";

fn job(name: &str, image: &str, spec: &str, args: &[&str]) -> String {
    let args = serde_json::to_string(args).expect("json");
    format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{spec}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        args: {args}
"#
    )
}

fn get_json(c: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = c.ok(KUBECTL_DEFAULT, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn job_status(c: &Cluster, name: &str) -> Value {
    get_json(c, &["get", "job", name])["status"].clone()
}

/// The Job's pods (by the label the server puts on its template).
fn pods_of(c: &Cluster, name: &str) -> Vec<Value> {
    let list = get_json(
        c,
        &[
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={name}"),
        ],
    );
    list["items"].as_array().cloned().unwrap_or_default()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn count_phase(pods: &[Value], want: &str) -> usize {
    pods.iter().filter(|p| phase(p) == want).count()
}

fn condition<'a>(status: &'a Value, ty: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

/// (status, reason) of the condition, empty when absent.
fn cond(status: &Value, ty: &str) -> (String, String) {
    condition(status, ty).map_or_else(Default::default, |c| {
        (
            c["status"].as_str().unwrap_or("").into(),
            c["reason"].as_str().unwrap_or("").into(),
        )
    })
}

/// Waits until the Job has condition `ty` True; returns its status.
fn wait_condition(c: &Cluster, name: &str, ty: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = job_status(c, name);
        if cond(&st, ty).0 == "True" {
            return st;
        }
        assert!(Instant::now() < deadline, "job {name} never {ty}: {st:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (reason, message) of the Events about Job `name`.
fn events(c: &Cluster, name: &str) -> Vec<(String, String)> {
    let list = get_json(
        c,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=Job,involvedObject.name={name}"),
        ],
    );
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn wait_event(c: &Cluster, name: &str, reason: &str, fits: impl Fn(&str) -> bool) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        seen = events(c, name);
        if seen.iter().any(|(r, m)| r == reason && fits(m)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no {reason} event about job {name}: {seen:?}");
}

fn ts(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("no timestamp: {v}"));
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .as_millisecond()
}

/// Watches the pods with `label` from before they exist until `done` of them
/// succeeded, and returns the most that were active (neither finished nor deleted) at
/// any one revision of the store: the exact history, not a sample.
fn most_active(c: &Cluster, label: String, done: usize) -> std::thread::JoinHandle<usize> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(c.kube_client());
    std::thread::spawn(move || {
        rt.block_on(async move {
            use futures::StreamExt;
            use k8s_openapi::api::core::v1::Pod;
            use kube::api::{ListParams, WatchEvent, WatchParams};
            let api: kube::Api<Pod> = kube::Api::default_namespaced(client);
            let list = api
                .list(&ListParams::default().labels(&label))
                .await
                .expect("list pods");
            let mut rv = list.metadata.resource_version.unwrap_or_default();
            let mut state: BTreeMap<String, (bool, bool)> = BTreeMap::new();
            let mut most = 0;
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                let wp = WatchParams::default().labels(&label).timeout(30);
                let mut stream = api.watch(&wp, &rv).await.expect("watch pods").boxed();
                while let Some(ev) = stream.next().await {
                    let (pod, gone) = match ev.expect("watch event") {
                        WatchEvent::Added(p) | WatchEvent::Modified(p) => (p, false),
                        WatchEvent::Deleted(p) => (p, true),
                        _ => continue,
                    };
                    rv = pod.metadata.resource_version.clone().unwrap_or_default();
                    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                    let finished = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
                    let active = !gone && !finished && pod.metadata.deletion_timestamp.is_none();
                    let ok = phase.as_deref() == Some("Succeeded");
                    state.insert(pod.metadata.name.unwrap_or_default(), (active, ok));
                    most = most.max(state.values().filter(|(a, _)| *a).count());
                    if state.values().filter(|(_, ok)| *ok).count() >= done {
                        return most;
                    }
                }
            }
            panic!("{label}: never {done} succeeded pods");
        })
    })
}

/// `kubectl describe` output with each run of spaces and tabs folded to one space, so
/// a check reads as the line a user sees whatever the column widths.
fn describe(c: &Cluster, k: &str, what: &[&str]) -> Vec<String> {
    let mut args = vec!["describe"];
    args.extend(what);
    c.ok(k, &args)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn assert_line(lines: &[String], what: &str, fits: impl Fn(&str) -> bool) {
    assert!(
        lines.iter().any(|l| fits(l)),
        "describe shows no {what}:\n{}",
        lines.join("\n")
    );
}

/// `kubectl get jobs NAME`: the header and the row, split into columns.
fn get_row(c: &Cluster, k: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let out = c.ok(k, &["get", "jobs", name]);
    let mut lines = out
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>());
    let head = lines.next().unwrap_or_default();
    let row = lines.next().unwrap_or_default();
    (head, row)
}

fn no_finalizers(pods: &[Value]) -> bool {
    pods.iter().all(|p| {
        p["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty)
    })
}

#[test]
fn jobs_run_complete_fail_and_stop_as_kubernetes_does() {
    let reg = Registry::start();
    let image = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("job-node", &["--disable-containerd"]);

    let watch = most_active(&c, "batch.kubernetes.io/job-name=many".into(), 50);
    c.apply(&job(
        "many",
        &image,
        "  completions: 50\n  parallelism: 5",
        &["echo", "done"],
    ));
    c.apply(&job(
        "indexed",
        &image,
        "  completions: 6\n  parallelism: 3\n  completionMode: Indexed",
        &["env", "JOB_COMPLETION_INDEX"],
    ));
    c.apply(&job("failing", &image, "  backoffLimit: 2", &["exit", "3"]));
    c.apply(&job(
        "deadline",
        &image,
        "  activeDeadlineSeconds: 3\n  parallelism: 2\n  completions: 2",
        &["sleep", "600"],
    ));
    for i in 0..kubectls().len() {
        c.apply(&job(
            &format!("doomed-{i}"),
            &image,
            "  parallelism: 2\n  completions: 2",
            &["sleep", "600"],
        ));
    }

    // 50 completions, 5 at a time; `kubectl wait` sees it complete.
    for k in kubectls() {
        c.ok(
            k,
            &[
                "wait",
                "--for=condition=complete",
                "job/many",
                "--timeout=180s",
            ],
        );
    }
    let st = job_status(&c, "many");
    assert_eq!(st["succeeded"], 50, "{st:#}");
    assert_eq!(st["active"], 0, "{st:#}");
    assert!(st["completionTime"].is_string() && st["startTime"].is_string());
    assert_eq!(
        cond(&st, "SuccessCriteriaMet"),
        ("True".into(), "CompletionsReached".into())
    );
    assert_eq!(
        cond(&st, "Complete"),
        ("True".into(), "CompletionsReached".into())
    );
    let pods = pods_of(&c, "many");
    assert_eq!(pods.len(), 50, "one pod per completion");
    assert_eq!(count_phase(&pods, "Succeeded"), 50);
    assert!(
        no_finalizers(&pods),
        "tracking finalizers left on counted pods"
    );
    let most = watch.join().expect("pod watch");
    assert!(most <= 5, "{most} pods ran at once with parallelism 5");
    assert!(most >= 2, "pods ran one at a time with parallelism 5");
    for p in &pods {
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["controller"].as_bool()),
            (Some("Job"), Some(true))
        );
    }
    for k in kubectls() {
        assert_eq!(c.ok(k, &["logs", "job/many"]), "done\n");
    }
    wait_event(&c, "many", "SuccessfulCreate", |m| {
        m.starts_with("Created pod: many-")
    });
    // 50 "Created pod" events go through the event correlator as in Kubernetes: nine
    // of their own, then one combined event whose count goes up, and no more writes
    // once the controller used its burst of 25 on this Job.
    wait_event(&c, "many", "SuccessfulCreate", |m| {
        m.starts_with("(combined from similar events): Created pod: many-")
    });
    let created = events(&c, "many")
        .into_iter()
        .filter(|(reason, _)| reason == "SuccessfulCreate")
        .count();
    assert_eq!(created, 10, "nine events and a combined one");
    // What `kubectl describe` and `kubectl get` print of it. The columns are the
    // server's Table, so kubectl 1.27 shows the STATUS column a 1.28+ server adds too.
    for k in kubectls() {
        let d = describe(&c, k, &["job", "many"]);
        assert_line(&d, "Parallelism", |l| l == "Parallelism: 5");
        assert_line(&d, "Completions", |l| l == "Completions: 50");
        assert_line(&d, "Completion Mode", |l| {
            l == "Completion Mode: NonIndexed"
        });
        assert_line(&d, "Pods Statuses", |l| {
            l == "Pods Statuses: 0 Active (0 Ready) / 50 Succeeded / 0 Failed"
        });
        let events = d
            .iter()
            .position(|l| l == "Events:")
            .map_or(&d[..0], |at| &d[at..]);
        assert_line(events, "SuccessfulCreate event", |l| {
            l.starts_with("Normal SuccessfulCreate ")
                && l.contains(" job-controller Created pod: many-")
        });
        assert_line(events, "combined SuccessfulCreate event", |l| {
            l.starts_with("Normal SuccessfulCreate ")
                && l.contains(" job-controller (combined from similar events): Created pod: many-")
        });
        let (head, row) = get_row(&c, k, "many");
        assert_eq!(
            head,
            ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
            "{k} get jobs"
        );
        assert_eq!(row[..3], ["many", "Complete", "50/50"], "{k} get jobs");
    }

    // Indexed: each index ran once, told its index, under its hostname.
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "wait",
            "--for=condition=complete",
            "job/indexed",
            "--timeout=180s",
        ],
    );
    let st = job_status(&c, "indexed");
    assert_eq!(
        (&st["completedIndexes"], &st["succeeded"]),
        (&Value::from("0-5"), &Value::from(6))
    );
    let pods = pods_of(&c, "indexed");
    let mut logged: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let ix = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap_or("?");
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            ix
        );
        assert!(
            name.starts_with(&format!("indexed-{ix}-")),
            "{name} for index {ix}"
        );
        assert_eq!(p["spec"]["hostname"], format!("indexed-{ix}"));
        let log = c.ok(KUBECTL_DEFAULT, &["logs", name]);
        assert_eq!(log, format!("JOB_COMPLETION_INDEX={ix}\n"));
        *logged.entry(ix.to_string()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = (0..6).map(|i| (i.to_string(), 1)).collect();
    assert_eq!(logged, want, "every index logged exactly once");
    let d = describe(&c, KUBECTL_DEFAULT, &["job", "indexed"]);
    assert_line(&d, "Completion Mode", |l| l == "Completion Mode: Indexed");
    assert_line(&d, "Completed Indexes", |l| l == "Completed Indexes: 0-5");
    wait_event(&c, "indexed", "Completed", |m| m == "Job completed");
    let d = describe(&c, KUBECTL_DEFAULT, &["job", "indexed"]);
    assert_line(&d, "Completed event", |l| {
        l.starts_with("Normal Completed ") && l.ends_with(" job-controller Job completed")
    });

    // kubectl create job, with each kubectl. The command replaces the guest's argv
    // whole, argv[0] included, as for a process.
    for (i, k) in kubectls().into_iter().enumerate() {
        let name = format!("hello-{i}");
        c.ok(
            k,
            &[
                "create",
                "job",
                &name,
                &format!("--image={image}"),
                "--",
                "testbox",
                "echo",
                "hello",
            ],
        );
        c.ok(
            k,
            &[
                "wait",
                "--for=condition=complete",
                &format!("job/{name}"),
                "--timeout=180s",
            ],
        );
        assert_eq!(c.ok(k, &["logs", &format!("job/{name}")]), "hello\n");
    }

    // Suspend after the first success, resume: the count goes on where it was. Each
    // pod runs 3 s, which leaves the time to suspend before the second success.
    c.apply(&job(
        "paused",
        &image,
        "  completions: 4\n  parallelism: 1",
        &["sleep", "3"],
    ));
    wait_until("paused has a success", || {
        job_status(&c, "paused")["succeeded"].as_i64() >= Some(1)
    });
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "patch",
            "job",
            "paused",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
    );
    let st = wait_condition(&c, "paused", "Suspended");
    assert_eq!(cond(&st, "Suspended").1, "JobSuspended");
    wait_until("paused has no active pod", || {
        job_status(&c, "paused")["active"] == 0
            && count_phase(&pods_of(&c, "paused"), "Running")
                + count_phase(&pods_of(&c, "paused"), "Pending")
                == 0
    });
    let before = job_status(&c, "paused")["succeeded"].as_i64().unwrap_or(0);
    assert!(before < 4, "suspended too late to show anything: {before}");
    wait_event(&c, "paused", "Suspended", |m| m == "Job suspended");
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "patch",
            "job",
            "paused",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ],
    );
    let st = wait_condition(&c, "paused", "Complete");
    assert_eq!(
        cond(&st, "Suspended"),
        ("False".into(), "JobResumed".into())
    );
    assert_eq!(st["succeeded"], 4, "{st:#}");
    assert_eq!(count_phase(&pods_of(&c, "paused"), "Succeeded"), 4);
    wait_event(&c, "paused", "Resumed", |m| m == "Job resumed");

    // activeDeadlineSeconds stops the long one and its pods.
    let st = wait_condition(&c, "deadline", "Failed");
    assert_eq!(cond(&st, "Failed").1, "DeadlineExceeded");
    assert_eq!(
        cond(&st, "FailureTarget"),
        ("True".into(), "DeadlineExceeded".into())
    );
    assert_eq!(st["active"], 0);
    wait_until("the deadline job's pods are gone", || {
        pods_of(&c, "deadline").is_empty()
    });
    wait_event(&c, "deadline", "DeadlineExceeded", |m| {
        m == "Job was active longer than specified deadline"
    });

    // backoffLimit 2: three failed pods, each after a longer pause, then Failed.
    let st = wait_condition(&c, "failing", "Failed");
    assert_eq!(cond(&st, "Failed").1, "BackoffLimitExceeded");
    assert_eq!(cond(&st, "FailureTarget").1, "BackoffLimitExceeded");
    assert_eq!(st["failed"], 3, "{st:#}");
    let mut pods = pods_of(&c, "failing");
    assert_eq!((pods.len(), count_phase(&pods, "Failed")), (3, 3));
    wait_event(&c, "failing", "BackoffLimitExceeded", |m| {
        m == "Job has reached the specified backoff limit"
    });
    pods.sort_by_key(|p| ts(&p["metadata"]["creationTimestamp"]));
    let ended =
        |p: &Value| ts(&p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]);
    let gap1 = ts(&pods[1]["metadata"]["creationTimestamp"]) - ended(&pods[0]) / 1000 * 1000;
    let gap2 = ts(&pods[2]["metadata"]["creationTimestamp"]) - ended(&pods[1]) / 1000 * 1000;
    // The first replacement waits the 10 s back-off; the second twice that.
    assert!(gap1 >= 9_000, "replaced after {gap1} ms");
    assert!(
        gap2 as f64 >= gap1 as f64 * 1.5,
        "back-off did not grow: {gap1} ms then {gap2} ms"
    );

    // `delete --cascade=foreground`: the Job stays, marked with the foregroundDeletion
    // finalizer, until its pods are gone. A finalizer of the test's own holds one pod,
    // so "pods first" is seen, not raced: its sibling goes, it waits, the Job waits.
    for (i, k) in kubectls().into_iter().enumerate() {
        let name = format!("doomed-{i}");
        wait_until("doomed runs 2 pods", || {
            job_status(&c, &name)["active"] == 2
        });
        let pods = pods_of(&c, &name);
        let held = pods[0]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let other = pods[1]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "patch",
                "pod",
                &held,
                "--type=json",
                "-p",
                &format!(r#"[{{"op":"add","path":"/metadata/finalizers/-","value":"{HOLD}"}}]"#),
            ],
        );
        let out = c.ok(
            k,
            &[
                "delete",
                "job",
                &name,
                "--cascade=foreground",
                "--wait=false",
            ],
        );
        assert_eq!(out, format!("job.batch \"{name}\" deleted\n"));
        wait_until("the unheld pod is gone and the held one is going", || {
            let pods = pods_of(&c, &name);
            pods.iter().all(|p| p["metadata"]["name"] != other.as_str())
                && pods.iter().any(|p| {
                    p["metadata"]["name"] == held.as_str()
                        && p["metadata"]["deletionTimestamp"].is_string()
                })
        });
        let out = c.kubectl(KUBECTL_DEFAULT, &["get", "job", &name, "-o", "json"]);
        assert!(
            out.status.success(),
            "{k}: the Job went before its held pod: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: Value = serde_json::from_slice(&out.stdout).expect("job json");
        assert!(j["metadata"]["deletionTimestamp"].is_string(), "{j:#}");
        assert_eq!(
            j["metadata"]["finalizers"],
            serde_json::json!(["foregroundDeletion"]),
            "{k}: the Job went before its pods"
        );
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "patch",
                "pod",
                &held,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
        );
        wait_until("the doomed job is gone", || {
            !c.ok(KUBECTL_DEFAULT, &["get", "jobs", "-o", "name"])
                .contains(&format!("job.batch/{name}\n"))
        });
        assert!(pods_of(&c, &name).is_empty());
    }
}

/// kill -9 of the server mid-Job: after the restart the Job counts every pod that
/// succeeded exactly once.
#[test]
fn a_server_crash_neither_loses_nor_adds_completions() {
    let reg = Registry::start();
    let image = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let mut c = Cluster::with_agent("crash-node", &["--disable-containerd"]);
    c.apply(&job(
        "steady",
        &image,
        "  completions: 20\n  parallelism: 4",
        &["sleep", "1"],
    ));
    wait_until("some completions counted", || {
        job_status(&c, "steady")["succeeded"].as_i64() >= Some(4)
    });
    let before = job_status(&c, "steady")["succeeded"].as_i64().unwrap_or(0);
    c.kill9();
    c.launch();
    let st = wait_condition(&c, "steady", "Complete");
    let pods = pods_of(&c, "steady");
    let (ok, failed) = (
        count_phase(&pods, "Succeeded"),
        count_phase(&pods, "Failed"),
    );
    assert!(before < 20, "the kill came after the end");
    assert_eq!(st["succeeded"], 20, "{st:#}");
    assert_eq!(ok, 20, "pods that succeeded");
    // A pod the crash interrupted may fail; it is then counted once as a failure.
    assert_eq!(st["failed"].as_i64().unwrap_or(0), failed as i64, "{st:#}");
    assert_eq!(
        pods.len(),
        20 + failed,
        "a pod for each completion and each failure"
    );
    assert!(no_finalizers(&pods));
    assert!(st["uncountedTerminatedPods"]
        .as_object()
        .is_none_or(|u| u.values().all(|v| v.as_array().is_none_or(Vec::is_empty))));
}
