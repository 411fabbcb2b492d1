//! DaemonSets end to end on hollow nodes: the status integers a fresh DaemonSet carries,
//! one pod per eligible node (nodeSelector, taints and tolerations), nodes that join and
//! leave, a RollingUpdate that keeps maxUnavailable with `kubectl rollout
//! status|history|undo|restart` and `set image`, OnDelete, ControllerRevisions and the
//! `get ds` table, with both kubectls.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::Api;
use serde_json::Value;

use common::{kubectls, Cluster, KUBECTL_DEFAULT as K};

const MINUTE: Duration = Duration::from_secs(60);

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn daemonset(name: &str, image: &str, extra_spec: &str, pod_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n{pod_spec}      containers:\n      - name: app\n        image: {image}\n"
    )
}

/// The nodes the DaemonSet's pods are bound to, sorted, one entry per pod.
fn pod_nodes(c: &Cluster, name: &str) -> Vec<String> {
    let out = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            &format!("app={name}"),
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\" \"}{end}",
        ],
    );
    let mut v: Vec<String> = out.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

fn ds_json(c: &Cluster, name: &str) -> Value {
    serde_json::from_str(&c.ok(K, &["get", "ds", name, "-o", "json"])).expect("ds json")
}

/// Wait until the DaemonSet has observed its generation and its status says
/// `desired` nodes, all scheduled, ready and up to date, and `misscheduled` extra.
fn wait_settled(c: &Cluster, name: &str, desired: i64, misscheduled: i64) -> Value {
    let mut last = Value::Null;
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(&format!("daemonset {name} to settle"), 2 * MINUTE, || {
            let ds = ds_json(c, name);
            let s = &ds["status"];
            let settled = ds["metadata"]["generation"] == s["observedGeneration"]
                && s["desiredNumberScheduled"] == desired
                && s["currentNumberScheduled"] == desired
                && s["numberReady"] == desired
                && s["updatedNumberScheduled"] == desired
                && s["numberAvailable"] == desired
                && s["numberMisscheduled"] == misscheduled;
            last = s.clone();
            settled.then_some(ds)
        })
    }));
    ok.unwrap_or_else(|_| {
        panic!(
            "{name}: last status {last}\n{}",
            c.ok(
                K,
                &["get", "pods", "-o", "wide", "-l", &format!("app={name}")]
            )
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonsets_on_hollow_nodes() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(3, "hollow", &[]);
    c.wait_for_output(
        &["get", "nodes", "-o", r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#],
        "True True True",
        MINUTE,
    );
    let client = c.kube_client().await;
    let dss: Api<DaemonSet> = Api::default_namespaced(client.clone());

    // --- A fresh DaemonSet carries the four required integers, as Kubernetes
    // serialises them: the create answer, and a typed client decodes it.
    for (i, k) in kubectls().into_iter().enumerate() {
        let manifest = daemonset(
            &format!("fresh-{i}"),
            "registry.local/x:1",
            "",
            "      nodeSelector:\n        nowhere: \"true\"\n",
        );
        let out = c.apply_stdin(k, &["create", "-f", "-", "-o", "json"], &manifest);
        assert!(
            out.status.success(),
            "{k}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let created: Value = serde_json::from_slice(&out.stdout).expect("create answer");
        for f in [
            "currentNumberScheduled",
            "desiredNumberScheduled",
            "numberMisscheduled",
            "numberReady",
        ] {
            assert_eq!(created["status"][f], 0, "{k}: {f} in {}", created["status"]);
        }
        let typed = dss
            .get(&format!("fresh-{i}"))
            .await
            .expect("typed client decodes the DaemonSet");
        assert!(typed.status.is_some());
    }

    // --- One pod per node, each pinned to its node by a matchFields affinity, owned by
    // the DaemonSet and labelled with its revision; the scheduler placed it.
    c.apply(&daemonset("cover", "registry.local/x:1", "", ""));
    wait_settled(&c, "cover", 3, 0);
    assert_eq!(pod_nodes(&c, "cover"), ["hollow-0", "hollow-1", "hollow-2"]);
    let pods: Value =
        serde_json::from_str(&c.ok(K, &["get", "pods", "-l", "app=cover", "-o", "json"]))
            .expect("pods");
    let revisions = c.ok(
        K,
        &[
            "get",
            "controllerrevisions",
            "-l",
            "app=cover",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    for p in pods["items"].as_array().expect("items") {
        let node = p["spec"]["nodeName"].as_str().expect("bound");
        let terms = &p["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        assert_eq!(terms[0]["matchFields"][0]["key"], "metadata.name", "{p}");
        assert_eq!(terms[0]["matchFields"][0]["values"][0], node, "{p}");
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["controller"].as_bool()),
            (Some("DaemonSet"), Some(true))
        );
        let hash = p["metadata"]["labels"]["controller-revision-hash"]
            .as_str()
            .expect("hash label");
        assert_eq!(revisions.trim(), format!("cover-{hash}"));
        assert_eq!(p["metadata"]["labels"]["pod-template-generation"], "1");
        let tols: BTreeSet<String> = p["spec"]["tolerations"]
            .as_array()
            .expect("tolerations")
            .iter()
            .filter(|t| t["tolerationSeconds"].is_null())
            .map(|t| {
                format!(
                    "{}:{}",
                    t["key"].as_str().unwrap_or(""),
                    t["effect"].as_str().unwrap_or("")
                )
            })
            .collect();
        for t in [
            "node.kubernetes.io/not-ready:NoExecute",
            "node.kubernetes.io/unreachable:NoExecute",
            "node.kubernetes.io/disk-pressure:NoSchedule",
            "node.kubernetes.io/memory-pressure:NoSchedule",
            "node.kubernetes.io/pid-pressure:NoSchedule",
            "node.kubernetes.io/unschedulable:NoSchedule",
        ] {
            assert!(tols.contains(t), "{t} missing from {tols:?}");
        }
    }

    // --- nodeSelector: only labelled nodes; a node labelled later gets its pod, one
    // that loses the label loses it.
    c.ok(K, &["label", "node", "hollow-1", "disk=ssd"]);
    c.apply(&daemonset(
        "picky",
        "registry.local/x:1",
        "",
        "      nodeSelector:\n        disk: ssd\n",
    ));
    wait_settled(&c, "picky", 1, 0);
    assert_eq!(pod_nodes(&c, "picky"), ["hollow-1"]);
    c.ok(K, &["label", "node", "hollow-2", "disk=ssd"]);
    wait_settled(&c, "picky", 2, 0);
    c.ok(K, &["label", "node", "hollow-1", "disk-"]);
    wait_settled(&c, "picky", 1, 0);
    wait_for("picky's pod to leave hollow-1", MINUTE, || {
        (pod_nodes(&c, "picky") == ["hollow-2"]).then_some(())
    });

    // --- A NoSchedule taint: no new pod without a toleration, one with it; the pod
    // already there stays and counts as misscheduled.
    c.ok(
        K,
        &["taint", "node", "hollow-0", "dedicated=infra:NoSchedule"],
    );
    c.apply(&daemonset("shy", "registry.local/x:1", "", ""));
    c.apply(&daemonset(
        "brave",
        "registry.local/x:1",
        "",
        "      tolerations:\n      - key: dedicated\n        operator: Exists\n",
    ));
    wait_settled(&c, "shy", 2, 0);
    assert_eq!(pod_nodes(&c, "shy"), ["hollow-1", "hollow-2"]);
    wait_settled(&c, "brave", 3, 0);
    wait_settled(&c, "cover", 2, 1);
    assert_eq!(pod_nodes(&c, "cover"), ["hollow-0", "hollow-1", "hollow-2"]);
    c.ok(K, &["taint", "node", "hollow-0", "dedicated-"]);
    wait_settled(&c, "shy", 3, 0);
    wait_settled(&c, "cover", 3, 0);

    // --- A node that joins gets its pod; a node that is deleted loses it.
    let mut late = c.hollow_nodes(1, "late", &[]);
    wait_settled(&c, "cover", 4, 0);
    assert_eq!(
        pod_nodes(&c, "cover"),
        ["hollow-0", "hollow-1", "hollow-2", "late-0"]
    );
    late.kill();
    c.ok(K, &["delete", "node", "late-0"]);
    wait_settled(&c, "cover", 3, 0);
    wait_for("the pod of the deleted node to go", MINUTE, || {
        (pod_nodes(&c, "cover") == ["hollow-0", "hollow-1", "hollow-2"]).then_some(())
    });

    // --- `get ds` columns as kube-apiserver prints them, with both kubectls.
    for k in kubectls() {
        let out = c.ok(k, &["get", "ds", "picky"]);
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE",
                "SELECTOR",
                "AGE"
            ],
            "{k}"
        );
        let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
        assert_eq!(
            row[..7],
            ["picky", "1", "1", "1", "1", "1", "disk=ssd"],
            "{k}"
        );
        let revs = c.ok(k, &["get", "controllerrevisions"]);
        assert!(
            revs.starts_with("NAME") && revs.contains("daemonset.apps/picky"),
            "{k}: {revs}"
        );
    }

    failed_pods_back_off(&c, &client).await;
    rolling_update(&c, &client).await;
    on_delete(&c);
}

/// `<type> <message>` of the events of `reason` about `name`.
fn typed_events(c: &Cluster, name: &str, reason: &str) -> Vec<String> {
    let sel = format!("involvedObject.name={name},reason={reason}");
    let out = c.ok(
        K,
        &[
            "get",
            "events",
            "--field-selector",
            &sel,
            "-o",
            "jsonpath={range .items[*]}{.type} {.message}{\"\\n\"}{end}",
        ],
    );
    out.lines().map(str::to_string).collect()
}

/// A daemon pod that ends Failed (a kubelet that rejects or evicts it posts that status;
/// here the test does) is deleted with kube's warning and replaced, but each deletion on
/// a node waits twice as long after the previous one as the one before (kube's
/// failedPodsBackoff, 1 s doubling): a pod the node keeps failing is not a hot loop. A
/// pod that Succeeded goes at once.
async fn failed_pods_back_off(c: &Cluster, client: &kube::Client) {
    use kube::api::{Patch, PatchParams};
    use kube::ResourceExt;
    c.ok(K, &["label", "node", "hollow-0", "crash=yes"]);
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut stream = watcher(
        pods.clone(),
        watcher::Config::default().labels("app=crashy"),
    )
    .boxed();
    c.apply(&daemonset(
        "crashy",
        "registry.local/x:1",
        "",
        "      nodeSelector:\n        crash: \"yes\"\n",
    ));
    // Each round: the pod runs, the test fails it, the controller deletes it (seen as
    // its deletionTimestamp). The last round's pod Succeeds instead.
    const ROUNDS: usize = 6;
    let mut ended: Vec<String> = Vec::new();
    let mut gone: Vec<Instant> = Vec::new();
    let deadline = tokio::time::Instant::now() + 2 * MINUTE;
    while gone.len() < ROUNDS {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("crashy: only {} of {ROUNDS} pods replaced", gone.len()))
            .expect("pod watch ended")
            .expect("pod watch");
        let (p, removed) = match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
            watcher::Event::Delete(p) => (p, true),
            _ => continue,
        };
        let name = p.name_any();
        let leaving = removed || p.metadata.deletion_timestamp.is_some();
        if ended.contains(&name) {
            if leaving && ended.len() > gone.len() && ended.last() == Some(&name) {
                gone.push(Instant::now());
            }
            continue;
        }
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if running && !leaving && ended.len() == gone.len() {
            let end = if ended.len() + 1 < ROUNDS {
                "Failed"
            } else {
                "Succeeded"
            };
            let status = serde_json::json!({"status": {"phase": end}});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("end the pod");
            ended.push(name);
        }
    }
    let gaps: Vec<f64> = gone
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    // Failures 2..5 waited 1, 2, 4 and 8 s after the deletion before them.
    for w in gaps[..4].windows(2) {
        assert!(
            w[1] >= 1.5 * w[0],
            "the back-off did not double: gaps between deletions {gaps:?} s"
        );
    }
    // The pod that Succeeded went without the 16 s the next failure would wait.
    assert!(
        gaps[4] < gaps[3] / 2.0,
        "a succeeded pod waited: {gaps:?} s"
    );
    for (i, pod) in ended.iter().enumerate() {
        let (reason, want) = if i + 1 < ROUNDS {
            (
                "FailedDaemonPod",
                format!(
                    "Warning Found failed daemon pod default/{pod} on node hollow-0, will try to kill it"
                ),
            )
        } else {
            (
                "SucceededDaemonPod",
                format!(
                    "Normal Found succeeded daemon pod default/{pod} on node hollow-0, will try to delete it"
                ),
            )
        };
        wait_for(&format!("{reason} event about {pod}"), MINUTE, || {
            typed_events(c, "crashy", reason)
                .contains(&want)
                .then_some(())
        });
    }
    c.ok(K, &["delete", "ds", "crashy"]);
    c.ok(K, &["label", "node", "hollow-0", "crash-"]);
}

/// How many of `nodes` have no Ready pod that is not being deleted, at worst, while
/// `run` goes on: the unavailability a rolling update caused, seen by a pod watch.
async fn worst_unavailable(
    client: &kube::Client,
    app: &str,
    nodes: usize,
    run: impl FnOnce(),
) -> usize {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let cfg = watcher::Config::default().labels(&format!("app={app}"));
    let worst = Arc::new(Mutex::new(0usize));
    let (w, synced) = (worst.clone(), Arc::new(tokio::sync::Notify::new()));
    let s = synced.clone();
    let task = tokio::spawn(async move {
        let mut state: BTreeMap<String, (String, bool)> = BTreeMap::new();
        let mut stream = watcher(pods, cfg).boxed();
        let mut live = false;
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            let ready = |p: &Pod| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
            };
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    let node = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    state.insert(
                        p.metadata.name.clone().unwrap_or_default(),
                        (node, ready(&p)),
                    );
                }
                watcher::Event::Delete(p) => {
                    state.remove(&p.metadata.name.clone().unwrap_or_default());
                }
                watcher::Event::InitDone => {
                    live = true;
                    s.notify_one();
                }
                watcher::Event::Init => state.clear(),
            }
            if live {
                let up: BTreeSet<&String> =
                    state.values().filter(|(_, r)| *r).map(|(n, _)| n).collect();
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                *w = (*w).max(nodes.saturating_sub(up.len()));
            }
        }
    });
    synced.notified().await;
    tokio::task::block_in_place(run);
    task.abort();
    let w = *worst.lock().unwrap_or_else(|e| e.into_inner());
    w
}

fn images(c: &Cluster, app: &str) -> Vec<String> {
    let out = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={range .items[*]}{.spec.containers[0].image}{\" \"}{end}",
        ],
    );
    out.split_whitespace().map(String::from).collect()
}

async fn rolling_update(c: &Cluster, client: &kube::Client) {
    // --- set image rolls out one node at a time (maxUnavailable 1 by default); rollout
    // status waits for it; history and undo work from the ControllerRevisions.
    c.apply(&daemonset("roll", "registry.local/x:1", "", ""));
    wait_settled(c, "roll", 3, 0);
    let worst = worst_unavailable(client, "roll", 3, || {
        c.ok(K, &["set", "image", "ds/roll", "app=registry.local/x:2"]);
        let out = c.ok(K, &["rollout", "status", "ds/roll", "--timeout=120s"]);
        assert!(
            out.contains("daemon set \"roll\" successfully rolled out"),
            "{out}"
        );
    })
    .await;
    assert_eq!(
        worst, 1,
        "maxUnavailable 1: at most (and during a rollout, exactly) one node without a ready pod"
    );
    assert_eq!(images(c, "roll"), ["registry.local/x:2"; 3]);
    for k in kubectls() {
        let hist = c.ok(k, &["rollout", "history", "ds/roll"]);
        let revs: Vec<&str> = hist
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(revs, ["1", "2"], "{k}: {hist}");
    }
    let out = c.ok(kubectls()[1], &["rollout", "undo", "ds/roll"]);
    assert!(out.contains("rolled back"), "{out}");
    c.ok(
        kubectls()[1],
        &["rollout", "status", "ds/roll", "--timeout=120s"],
    );
    wait_settled(c, "roll", 3, 0);
    assert_eq!(images(c, "roll"), ["registry.local/x:1"; 3]);
    let hist = c.ok(K, &["rollout", "history", "ds/roll"]);
    let revs: Vec<&str> = hist
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revs, ["2", "3"], "undo makes revision 1 the newest: {hist}");

    // --- rollout restart replaces every pod under a new revision; maxSurge starts the
    // new pod before the old one goes, so no node is ever without a ready pod.
    let before = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=roll",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    c.ok(
        K,
        &[
            "patch",
            "ds",
            "roll",
            "--type=merge",
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#,
        ],
    );
    wait_settled(c, "roll", 3, 0);
    let worst = worst_unavailable(client, "roll", 3, || {
        c.ok(K, &["rollout", "restart", "ds/roll"]);
        c.ok(K, &["rollout", "status", "ds/roll", "--timeout=120s"]);
    })
    .await;
    assert_eq!(
        worst, 0,
        "maxSurge 1, maxUnavailable 0: never a node without a ready pod"
    );
    wait_settled(c, "roll", 3, 0);
    let after = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=roll",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    let before: BTreeSet<&str> = before.split_whitespace().collect();
    assert!(
        after.split_whitespace().all(|p| !before.contains(p)),
        "{before:?} -> {after}"
    );
    let revs = c.ok(
        K,
        &[
            "get",
            "controllerrevisions",
            "-l",
            "app=roll",
            "-o",
            "jsonpath={.items[*].revision}",
        ],
    );
    let mut revs: Vec<&str> = revs.split_whitespace().collect();
    revs.sort();
    assert_eq!(revs, ["2", "3", "4"]);
}

fn on_delete(c: &Cluster) {
    // --- OnDelete: a new template changes no pod until a pod is deleted; its
    // replacement has the new template. rollout status refuses the strategy, as kube's.
    c.apply(&daemonset(
        "manual",
        "registry.local/x:1",
        "  updateStrategy:\n    type: OnDelete\n",
        "",
    ));
    wait_settled(c, "manual", 3, 0);
    c.ok(K, &["set", "image", "ds/manual", "app=registry.local/x:2"]);
    wait_for("the controller to see the new template", MINUTE, || {
        let ds = ds_json(c, "manual");
        let s = &ds["status"];
        (ds["metadata"]["generation"] == s["observedGeneration"]
            && s["updatedNumberScheduled"] == 0)
            .then_some(())
    });
    assert_eq!(images(c, "manual"), ["registry.local/x:1"; 3]);
    let victim = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=manual",
            "--field-selector",
            "spec.nodeName=hollow-1",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    c.ok(K, &["delete", "pod", victim.trim()]);
    wait_for("the replacement on hollow-1", MINUTE, || {
        let s = ds_json(c, "manual")["status"].clone();
        (s["updatedNumberScheduled"] == 1 && s["numberReady"] == 3).then_some(())
    });
    let mut imgs = images(c, "manual");
    imgs.sort();
    assert_eq!(
        imgs,
        [
            "registry.local/x:1",
            "registry.local/x:1",
            "registry.local/x:2"
        ]
    );
    let out = c.kubectl(K, &["rollout", "status", "ds/manual", "--timeout=10s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rollout status is only available for RollingUpdate strategy type"),
        "{err}"
    );
}

/// The real agent (with containerd) beside hollow nodes: a Wasm DaemonSet runs on every
/// node, its pod on the agent really running; a container DaemonSet (runtimeClassName
/// runc) lands only on the node that has containerd, and is not counted elsewhere.
#[test]
fn daemonsets_follow_the_image_kind_on_a_real_agent() {
    let reg = common::Registry::start();
    let wasm = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let busybox = reg.push_busybox("tests/busybox:v1");
    let c = Cluster::with_agent("real-node", &[]);
    let _nodes = c.hollow_nodes(2, "hollow", &[]);
    c.wait_for_output(
        &["get", "nodes", "-o", r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#],
        "True True True",
        MINUTE,
    );
    let labels = c.ok(
        K,
        &[
            "get",
            "node",
            "real-node",
            "-o",
            "jsonpath={.metadata.labels}",
        ],
    );
    assert!(
        labels.contains(r#""runtime.spindle.dev/containerd":"true""#),
        "the agent needs containerd: {labels}"
    );

    c.apply(&format!(
        "{}        args: [\"sleep\", \"3600\"]\n",
        daemonset("wasm-everywhere", &wasm, "", "")
    ));
    wait_settled(&c, "wasm-everywhere", 3, 0);
    assert_eq!(
        pod_nodes(&c, "wasm-everywhere"),
        ["hollow-0", "hollow-1", "real-node"]
    );

    c.apply(&format!(
        "{}        command: [\"sleep\", \"3600\"]\n",
        daemonset(
            "containers-only",
            &busybox,
            "",
            "      runtimeClassName: runc\n      terminationGracePeriodSeconds: 1\n"
        )
    ));
    wait_settled(&c, "containers-only", 1, 0);
    assert_eq!(pod_nodes(&c, "containers-only"), ["real-node"]);
    let phase = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=containers-only",
            "-o",
            "jsonpath={.items[0].status.phase}",
        ],
    );
    assert_eq!(phase.trim(), "Running");
}
