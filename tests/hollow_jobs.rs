//! Batch work without real work: hollow pods that finish as annotated (or by the hollow
//! process's defaults) the way a kubelet reports it, and the TTL-after-finished
//! controller deleting finished Jobs, their pods first, once their TTL has passed. The
//! Jobs here are marked finished through their status subresource, as a Job controller
//! would, so the TTL controller is tested on its own.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, KUBECTL_DEFAULT as K};
use k8s_openapi::jiff::Timestamp;

const MINUTE: Duration = Duration::from_secs(60);

fn pod(name: &str, node: &str, restart: &str, annotations: &[(&str, &str)]) -> String {
    let ann: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let ann = if ann.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{ann}")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{ann}spec:\n  nodeName: {node}\n  restartPolicy: {restart}\n  containers:\n  - name: c\n    image: registry.local/work:v1\n"
    )
}

fn field(c: &Cluster, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let path = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &path]);
    c.ok(K, &args).trim().to_string()
}

/// Poll until `f` gives Some, failing with `what` after `limit`.
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

fn secs_between(from: &str, to: &str) -> i64 {
    let (a, b): (Timestamp, Timestamp) = (
        from.parse().expect("a timestamp"),
        to.parse().expect("a timestamp"),
    );
    b.as_second() - a.as_second()
}

#[test]
fn hollow_pods_finish_as_annotated() {
    let c = Cluster::start();
    let _plain = c.hollow_nodes(1, "fin", &[]);
    let _quick = c.hollow_nodes(1, "quick", &["--pod-run-for", "0s", "--pod-exit-code", "0"]);
    c.wait_for_output(
        &["get", "nodes", "-o", "name"],
        "node/fin-0\nnode/quick-0",
        MINUTE,
    );
    let run = |secs: &'static str, code: &'static str| {
        [
            ("hollow.spindle.dev/run-for", secs),
            ("hollow.spindle.dev/exit-code", code),
        ]
    };
    c.apply(&pod("ok", "fin-0", "Never", &run("3s", "0")));
    c.apply(&pod("bad", "fin-0", "Never", &run("1s", "3")));
    c.apply(&pod("retry", "fin-0", "OnFailure", &run("1s", "1")));
    c.apply(&pod("forever", "fin-0", "Always", &run("1s", "0")));
    c.apply(&pod("plain", "fin-0", "Never", &[]));
    c.apply(&pod("by-flag", "quick-0", "Never", &[]));

    // A run goes Running first, then ends as the kubelet reports an exit: phase by code,
    // the container terminated with its code and reason, no longer ready.
    c.wait_pod_field("ok", "{.status.phase}", "Running", MINUTE);
    c.wait_pod_field("ok", "{.status.phase}", "Succeeded", MINUTE);
    let term = |f: &str| format!("{{.status.containerStatuses[0].state.terminated.{f}}}");
    assert_eq!(
        c.pod_field("ok", &format!("{}|{}", term("exitCode"), term("reason"))),
        "0|Completed"
    );
    let ran = secs_between(
        &c.pod_field("ok", &term("startedAt")),
        &c.pod_field("ok", &term("finishedAt")),
    );
    assert!(
        ran >= 2,
        "ran {ran} s, asked for 3 s (times are whole seconds)"
    );
    assert_eq!(
        c.pod_field(
            "ok",
            "{.status.containerStatuses[0].ready}|{.status.conditions[?(@.type==\"Ready\")].reason}"
        ),
        "false|PodCompleted"
    );
    c.wait_pod_field("bad", "{.status.phase}", "Failed", MINUTE);
    assert_eq!(
        c.pod_field("bad", &format!("{}|{}", term("exitCode"), term("reason"))),
        "3|Error"
    );
    // OnFailure restarts a failed run: the pod stays Running, counting restarts, the
    // exit kept as lastState.
    wait_until("retry's second restart", MINUTE, || {
        let n: u32 = c
            .pod_field("retry", "{.status.containerStatuses[0].restartCount}")
            .parse()
            .unwrap_or(0);
        (n >= 2).then_some(())
    });
    assert_eq!(
        c.pod_field(
            "retry",
            "{.status.phase}|{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "Running|1"
    );
    // Meanwhile (two 1 s runs later, and after ok's 3 s) restartPolicy Always never
    // finished, and a pod with no run-for on a node with no default still runs.
    assert_eq!(
        c.pod_field(
            "forever",
            "{.status.phase}|{.status.containerStatuses[0].restartCount}"
        ),
        "Running|0"
    );
    assert_eq!(c.pod_field("plain", "{.status.phase}"), "Running");
    // The process-wide default: a run of 0 s that exits 0.
    c.wait_pod_field("by-flag", "{.status.phase}", "Succeeded", MINUTE);
    assert_eq!(c.pod_field("by-flag", &term("reason")), "Completed");

    ttl_deletes_finished_jobs(&c);
}

fn job(name: &str, ttl: u32) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  suspend: true\n  ttlSecondsAfterFinished: {ttl}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: registry.local/work:v1\n"
    )
}

/// Mark the Job finished (Complete) now, as a Job controller writes it; returns the
/// finishing time written.
fn finish(c: &Cluster, name: &str) -> String {
    let now = Timestamp::from_second(Timestamp::now().as_second())
        .expect("now")
        .to_string();
    let cond =
        |t: &str| format!(r#"{{"type":"{t}","status":"True","lastTransitionTime":"{now}"}}"#);
    let patch = format!(
        r#"{{"status":{{"startTime":"{now}","completionTime":"{now}","succeeded":1,"conditions":[{},{}]}}}}"#,
        cond("SuccessCriteriaMet"),
        cond("Complete")
    );
    c.ok(
        K,
        &[
            "patch",
            "job",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
    now
}

fn exists(c: &Cluster, what: &[&str]) -> bool {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["--ignore-not-found", "-o", "name"]);
    !c.ok(K, &args).trim().is_empty()
}

fn ttl_deletes_finished_jobs(c: &Cluster) {
    // A finished Job with pods: kept until finish + ttl, then deleted in the foreground
    // (its pods first, so when the Job is gone so are they).
    c.apply(&job("done", 5));
    let finished = finish(c, "done");
    let uid = field(c, &["job", "done"], "{.metadata.uid}");
    // done-b is held by a finalizer of ours, so the foreground wait can be seen.
    for (p, fin) in [("done-a", "[]"), ("done-b", "[test.spindle.dev/hold]")] {
        c.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {p}\n  finalizers: {fin}\n  labels:\n    batch.kubernetes.io/controller-uid: {uid}\n  ownerReferences:\n  - apiVersion: batch/v1\n    kind: Job\n    name: done\n    uid: {uid}\n    controller: true\n    blockOwnerDeletion: true\nspec:\n  nodeName: fin-0\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: registry.local/work:v1\n"
        ));
    }
    c.wait_pod_field("done-a", "{.status.phase}", "Running", MINUTE);
    // Two more Jobs finished at the same moment: one whose long TTL is cut short, one
    // whose short TTL is lengthened before it runs out; each follows its new value.
    // "lengthened" finishes first, so once "shortened" is due, so was its old TTL.
    c.apply(&job("lengthened", 6));
    c.apply(&job("shortened", 600));
    finish(c, "lengthened");
    let shortened_finished = finish(c, "shortened");
    c.ok(
        K,
        &[
            "patch",
            "job",
            "lengthened",
            "--type=merge",
            "-p",
            r#"{"spec":{"ttlSecondsAfterFinished":600}}"#,
        ],
    );
    c.ok(
        K,
        &[
            "patch",
            "job",
            "shortened",
            "--type=merge",
            "-p",
            r#"{"spec":{"ttlSecondsAfterFinished":6}}"#,
        ],
    );

    let gone_at = wait_until("Job done to be deleted", MINUTE, || {
        // "" once gone, "|done" while live, "<time>|done" while being deleted.
        let state = field(
            c,
            &["job", "done", "--ignore-not-found"],
            "{.metadata.deletionTimestamp}|{.metadata.name}",
        );
        (state != "|done").then(|| (Timestamp::now(), state))
    });
    let (gone_at, state) = gone_at;
    let waited = gone_at.as_second() - finished.parse::<Timestamp>().expect("time").as_second();
    assert!(
        waited >= 5,
        "deleted {waited} s after finishing, before its ttl of 5 s"
    );
    // Foreground, as Kubernetes deletes it: the Job stays, marked, while a pod remains.
    assert!(
        !state.is_empty(),
        "the Job went before its pods (not a foreground deletion)"
    );
    assert_eq!(
        field(c, &["job", "done"], "{.metadata.finalizers}"),
        r#"["foregroundDeletion"]"#
    );
    wait_until("pod done-a to go", MINUTE, || {
        (!exists(c, &["pod", "done-a"])).then_some(())
    });
    assert!(exists(c, &["job", "done"]), "the Job went before done-b");
    c.ok(
        K,
        &[
            "patch",
            "pod",
            "done-b",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ],
    );
    wait_until("Job done to be gone", MINUTE, || {
        (!exists(c, &["job", "done"]) && !exists(c, &["pod", "done-b"])).then_some(())
    });

    wait_until("Job shortened to be deleted", MINUTE, || {
        (!exists(c, &["job", "shortened"])).then_some(())
    });
    let now = Timestamp::now().as_second();
    let since = now
        - shortened_finished
            .parse::<Timestamp>()
            .expect("time")
            .as_second();
    assert!(
        since >= 6,
        "shortened went {since} s after finishing, before its ttl of 6 s"
    );
    // The old TTL of 6 s has passed for "lengthened" too, finished before: its new TTL
    // of 600 s holds it.
    assert!(
        exists(c, &["job", "lengthened"]),
        "lengthened was deleted by its old TTL"
    );
}
