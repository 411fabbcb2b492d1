//! StatefulSets end to end, with both kubectls: stable names and identity, OrderedReady
//! (each pod Running and Ready before the next is created, scale-down from the top),
//! Parallel, `ordinals.start`, a deleted pod coming back under its name, `kubectl
//! scale`, a RollingUpdate with a partition and maxUnavailable, `kubectl rollout
//! status|history|undo`, OnDelete, validation as kube-apiserver words it — on hollow
//! nodes — and, on the real agent, Wasm pods that reach `web-0.<svc>` through the
//! headless Service and the cluster DNS.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::Value;

use common::{kubectls, Cluster, Registry, KUBECTL_DEFAULT as K};

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

/// A StatefulSet `name` of `image` governed by Service `svc`; `extra` is more spec
/// (indented two spaces), `pod` more pod spec (six spaces).
fn statefulset(name: &str, image: &str, extra: &str, pod: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {name}\nspec:\n  serviceName: nginx\n{extra}  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n{pod}      containers:\n      - name: app\n        image: {image}\n"
    )
}

fn sts_json(c: &Cluster, name: &str) -> Value {
    serde_json::from_str(&c.ok(K, &["get", "sts", name, "-o", "json"])).expect("sts json")
}

/// Wait until the set has observed its generation and has `n` pods, all ready and of
/// the update revision, which is the current one.
fn wait_settled(c: &Cluster, name: &str, n: i64) -> Value {
    let mut last = Value::Null;
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(&format!("statefulset {name} to settle"), 2 * MINUTE, || {
            let sts = sts_json(c, name);
            let s = &sts["status"];
            let settled = sts["metadata"]["generation"] == s["observedGeneration"]
                && s["replicas"] == n
                && s["readyReplicas"] == n
                && s["availableReplicas"] == n
                && s["updatedReplicas"] == n
                && s["currentReplicas"] == n
                && s["currentRevision"] == s["updateRevision"];
            last = s.clone();
            settled.then_some(sts)
        })
    }));
    ok.unwrap_or_else(|_| {
        panic!(
            "{name}: last status {last}\n{}\n{}",
            c.ok(
                K,
                &["get", "pods", "-o", "wide", "-l", &format!("app={name}")]
            ),
            c.log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// `name → value at jsonpath` of the set's pods.
fn pods_by(c: &Cluster, app: &str, path: &str) -> BTreeMap<String, String> {
    let out = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            &format!("jsonpath={{range .items[*]}}{{.metadata.name}}={path}{{\"\\n\"}}{{end}}"),
        ],
    );
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn names(c: &Cluster, app: &str) -> Vec<String> {
    pods_by(c, app, "{.metadata.uid}").into_keys().collect()
}

/// One pod as a watch event showed it.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    uid: String,
    ready: bool,
    terminating: bool,
    deleted: bool,
}

/// Records every watch event of one app's pods, in order, from after the initial list.
struct Timeline {
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<Vec<Seen>, String>>,
}

impl Timeline {
    fn start(c: &Cluster, app: &str) -> Timeline {
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let pods: Api<Pod> = Api::default_namespaced(rt.block_on(c.kube_client()));
        let cfg = watcher::Config::default().labels(&format!("app={app}"));
        let (listed_tx, listed_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(async move {
            let mut stream = std::pin::pin!(watcher(pods, cfg));
            let mut seen = Vec::new();
            let mut listed = false;
            loop {
                let ev = tokio::select! {
                    ev = stream.next() => ev,
                    _ = &mut stopped => return Ok(seen),
                };
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => return Err(format!("the pod watch failed: {e}")),
                    None => return Err("the pod watch ended".into()),
                };
                let (p, deleted) = match ev {
                    watcher::Event::Init if listed => {
                        return Err("the pod watch restarted: events were missed".into())
                    }
                    watcher::Event::InitDone => {
                        listed = true;
                        let _ = listed_tx.send(());
                        continue;
                    }
                    watcher::Event::Init | watcher::Event::InitApply(_) => continue,
                    watcher::Event::Apply(p) => (p, false),
                    watcher::Event::Delete(p) => (p, true),
                };
                seen.push(Seen {
                    name: p.name_any(),
                    uid: p.uid().unwrap_or_default(),
                    ready: running_and_ready(&p),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    deleted,
                });
            }
        });
        if listed_rx.recv_timeout(MINUTE).is_err() {
            let why = rt.block_on(task);
            panic!("the pod watch did not list: {why:?}");
        }
        Timeline { rt, stop, task }
    }

    fn finish(self) -> Vec<Seen> {
        let Timeline { rt, stop, task } = self;
        let _ = stop.send(());
        match rt.block_on(task) {
            Ok(Ok(seen)) => seen,
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("the pod watch task: {e}"),
        }
    }
}

fn running_and_ready(p: &Pod) -> bool {
    let s = p.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        && s.and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Check that every pod of `prefix` created during the timeline was created while all
/// pods of lower ordinals were Running and Ready (and not terminating); returns the
/// order in which pods were created.
fn assert_created_in_order(prefix: &str, events: &[Seen]) -> Vec<String> {
    let mut state: BTreeMap<i32, Seen> = BTreeMap::new();
    let mut created = Vec::new();
    let ordinal = |name: &str| -> i32 {
        name.strip_prefix(&format!("{prefix}-"))
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not a pod of {prefix}"))
    };
    for e in events {
        let ord = ordinal(&e.name);
        let new = state.get(&ord).is_none_or(|s| s.uid != e.uid);
        if new && !e.deleted {
            for (o, s) in state.range(..ord) {
                assert!(
                    s.ready && !s.terminating && !s.deleted,
                    "{} was created while {prefix}-{o} was {s:?}\ntimeline: {events:#?}",
                    e.name
                );
            }
            created.push(e.name.clone());
        }
        state.insert(ord, e.clone());
    }
    created
}

/// The order in which pods of the timeline began terminating (or went), each only
/// after every higher ordinal of the same scale-down was gone.
fn assert_deleted_from_the_top(prefix: &str, events: &[Seen]) -> Vec<String> {
    let mut gone: Vec<String> = Vec::new();
    let mut started: Vec<String> = Vec::new();
    for e in events {
        if (e.terminating || e.deleted) && !started.contains(&e.name) {
            // Every pod that started going earlier must be gone before the next starts.
            for s in &started {
                assert!(
                    gone.contains(s),
                    "{} began terminating while {s} was still there\n{events:#?}",
                    e.name
                );
            }
            started.push(e.name.clone());
        }
        if e.deleted {
            gone.push(e.name.clone());
        }
    }
    let ords: Vec<i32> = started
        .iter()
        .filter_map(|n| n.strip_prefix(&format!("{prefix}-"))?.parse().ok())
        .collect();
    let mut sorted = ords.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ords, sorted, "scale-down goes from the highest ordinal");
    started
}

fn nodes_ready(c: &Cluster, n: usize) {
    c.wait_for_output(
        &["get", "nodes", "-o", r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#],
        &vec!["True"; n].join(" "),
        MINUTE,
    );
}

#[test]
fn statefulsets_on_hollow_nodes() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(2, "hollow", &[]);
    nodes_ready(&c, 2);

    validation(&c);

    // --- OrderedReady: web-0, web-1, web-2 in order, each created only once its
    // predecessors are Running and Ready (seen by a watch from before the create).
    let watch = Timeline::start(&c, "web");
    c.apply(&statefulset(
        "web",
        "registry.local/web:1",
        "  replicas: 3\n",
        "",
    ));
    let sts = wait_settled(&c, "web", 3);
    let created = assert_created_in_order("web", &watch.finish());
    assert_eq!(created, ["web-0", "web-1", "web-2"]);
    let status = &sts["status"];
    assert_eq!(status["collisionCount"], 0, "{status}");
    let revision = status["updateRevision"].as_str().expect("updateRevision");
    assert!(revision.starts_with("web-"), "{revision}");
    let pod: Value =
        serde_json::from_str(&c.ok(K, &["get", "pod", "web-1", "-o", "json"])).expect("pod json");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "1");
    assert_eq!(labels["controller-revision-hash"], revision);
    assert_eq!(pod["spec"]["hostname"], "web-1");
    assert_eq!(pod["spec"]["subdomain"], "nginx");
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("StatefulSet"), Some(true))
    );
    let events = c.ok(
        K,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web,reason=SuccessfulCreate",
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ],
    );
    assert!(
        events.contains("create Pod web-0 in StatefulSet web successful"),
        "{events}"
    );
    for k in kubectls() {
        let out = c.ok(k, &["get", "sts", "web"]);
        let row: Vec<&str> = out
            .lines()
            .nth(1)
            .expect("row")
            .split_whitespace()
            .collect();
        assert_eq!(row[..2], ["web", "3/3"], "{k}: {out}");
    }

    // --- A deleted pod comes back under its name (a new pod).
    let before = pods_by(&c, "web", "{.metadata.uid}");
    c.ok(K, &["delete", "pod", "web-1", "--wait=false"]);
    wait_for("web-1 to come back", MINUTE, || {
        let now = pods_by(&c, "web", "{.metadata.uid}");
        (now.get("web-1")
            .is_some_and(|u| Some(u) != before.get("web-1")))
        .then_some(())
    });
    wait_settled(&c, "web", 3);
    assert_eq!(names(&c, "web"), ["web-0", "web-1", "web-2"]);

    // --- kubectl scale down goes from the top, one pod at a time; back up in order.
    let watch = Timeline::start(&c, "web");
    c.ok(K, &["scale", "sts", "web", "--replicas=1"]);
    wait_settled(&c, "web", 1);
    wait_for("web-1 and web-2 to go", MINUTE, || {
        (names(&c, "web") == ["web-0"]).then_some(())
    });
    let deleted = assert_deleted_from_the_top("web", &watch.finish());
    assert_eq!(deleted, ["web-2", "web-1"]);
    let watch = Timeline::start(&c, "web");
    c.ok(kubectls()[1], &["scale", "sts", "web", "--replicas=3"]);
    wait_settled(&c, "web", 3);
    assert_eq!(
        assert_created_in_order("web", &watch.finish()),
        ["web-1", "web-2"]
    );

    rolling_update(&c);
    parallel_and_ordinals(&c);
    max_unavailable(&c);
    on_delete(&c);
    claims(&c);
}

fn validation(c: &Cluster) {
    for k in kubectls() {
        let bad = statefulset(
            "bad",
            "registry.local/web:1",
            "  podManagementPolicy: Sometimes\n",
            "",
        );
        let out = c.apply_stdin(k, &["create", "-f", "-"], &bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains(
                    "spec.podManagementPolicy: Invalid value: \"Sometimes\": must be 'OrderedReady' or 'Parallel'"
                ),
            "{k}: {err}"
        );
        let mismatch = statefulset("bad", "registry.local/web:1", "", "").replace(
            "      labels:\n        app: bad\n",
            "      labels:\n        app: other\n",
        );
        let out = c.apply_stdin(k, &["create", "-f", "-"], &mismatch);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("`selector` does not match template `labels`"),
            "{k}: {err}"
        );
        let empty = statefulset("bad", "registry.local/web:1", "", "").replace(
            "  selector:\n    matchLabels:\n      app: bad\n",
            "  selector: {}\n",
        );
        let out = c.apply_stdin(k, &["create", "-f", "-"], &empty);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("spec.selector: Invalid value: ")
                && err.contains(": empty selector is invalid for statefulset"),
            "{k}: {err}"
        );
    }
    c.apply(&statefulset(
        "fixed",
        "registry.local/web:1",
        "  replicas: 0\n",
        "",
    ));
    for k in kubectls() {
        let err = c.fails(
            k,
            &[
                "patch",
                "sts",
                "fixed",
                "--type=merge",
                "-p",
                r#"{"spec":{"serviceName":"other"}}"#,
            ],
        );
        assert!(
            err.contains("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"),
            "{k}: {err}"
        );
    }
    // The mutable fields may change.
    c.ok(
        K,
        &[
            "patch",
            "sts",
            "fixed",
            "--type=merge",
            "-p",
            r#"{"spec":{"minReadySeconds":1,"updateStrategy":{"rollingUpdate":{"partition":1}}}}"#,
        ],
    );
    c.ok(K, &["delete", "sts", "fixed"]);
}

fn images(c: &Cluster, app: &str) -> BTreeMap<String, String> {
    pods_by(c, app, "{.spec.containers[0].image}")
}

fn history_revisions(c: &Cluster, k: &str, what: &str) -> Vec<String> {
    let hist = c.ok(k, &["rollout", "history", what]);
    hist.lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

fn rolling_update(c: &Cluster) {
    // --- partition 2: only web-2 takes the new template; rollout status says the
    // partitioned roll out is complete.
    c.ok(
        K,
        &[
            "patch",
            "sts",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
        ],
    );
    c.ok(K, &["set", "image", "sts/web", "app=registry.local/web:2"]);
    let out = c.ok(K, &["rollout", "status", "sts/web", "--timeout=120s"]);
    assert!(
        out.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{out}"
    );
    let imgs = images(c, "web");
    assert_eq!(
        imgs.values().map(String::as_str).collect::<Vec<_>>(),
        [
            "registry.local/web:1",
            "registry.local/web:1",
            "registry.local/web:2"
        ],
        "{imgs:?}"
    );
    let s = sts_json(c, "web")["status"].clone();
    assert_eq!(
        (s["updatedReplicas"].as_i64(), s["currentReplicas"].as_i64()),
        (Some(1), Some(2)),
        "{s}"
    );
    assert_ne!(s["currentRevision"], s["updateRevision"], "{s}");
    // A pod below the partition that is deleted comes back at the current revision.
    c.ok(K, &["delete", "pod", "web-0", "--wait=false"]);
    wait_for("web-0 back at the current revision", MINUTE, || {
        let s = sts_json(c, "web")["status"].clone();
        (s["readyReplicas"] == 3 && s["currentReplicas"] == 2).then_some(())
    });
    assert_eq!(images(c, "web")["web-0"], "registry.local/web:1");

    // --- partition 0: the rest rolls, from the top down; rollout status waits for it.
    let watch = Timeline::start(c, "web");
    c.ok(
        K,
        &[
            "patch",
            "sts",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
        ],
    );
    let out = c.ok(
        kubectls()[1],
        &["rollout", "status", "sts/web", "--timeout=120s"],
    );
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    let sts = wait_settled(c, "web", 3);
    assert_eq!(
        assert_deleted_from_the_top("web", &watch.finish()),
        ["web-1", "web-0"]
    );
    assert!(images(c, "web")
        .values()
        .all(|i| i == "registry.local/web:2"));
    let v2 = sts["status"]["currentRevision"].clone();
    for k in kubectls() {
        assert_eq!(history_revisions(c, k, "sts/web"), ["1", "2"], "{k}");
    }

    // --- undo goes back to the first template, which becomes revision 3.
    let out = c.ok(K, &["rollout", "undo", "sts/web"]);
    assert!(out.contains("rolled back"), "{out}");
    let out = c.ok(K, &["rollout", "status", "sts/web", "--timeout=120s"]);
    assert!(out.contains("roll out complete"), "{out}");
    let sts = wait_settled(c, "web", 3);
    assert!(images(c, "web")
        .values()
        .all(|i| i == "registry.local/web:1"));
    assert_ne!(sts["status"]["currentRevision"], v2);
    assert_eq!(history_revisions(c, K, "sts/web"), ["2", "3"]);
}

fn parallel_and_ordinals(c: &Cluster) {
    // --- Pods that cannot be placed stay Pending: OrderedReady creates only the first,
    // Parallel creates them all at once.
    let nowhere = "      nodeSelector:\n        nowhere: \"true\"\n";
    c.apply(&statefulset(
        "ordered",
        "registry.local/web:1",
        "  replicas: 3\n",
        nowhere,
    ));
    c.apply(&statefulset(
        "par",
        "registry.local/web:1",
        "  replicas: 3\n  podManagementPolicy: Parallel\n",
        nowhere,
    ));
    wait_for("par's three pending pods", MINUTE, || {
        let s = sts_json(c, "par")["status"].clone();
        (s["replicas"] == 3).then_some(())
    });
    // par's pods were made after ordered's first: ordered has had its passes.
    wait_for("ordered's status", MINUTE, || {
        let s = sts_json(c, "ordered")["status"].clone();
        (s["replicas"] == 1 && s["readyReplicas"] == 0).then_some(())
    });
    assert_eq!(names(c, "par"), ["par-0", "par-1", "par-2"]);
    assert_eq!(names(c, "ordered"), ["ordered-0"]);
    c.ok(K, &["delete", "sts", "ordered", "par"]);

    // --- ordinals.start numbers the pods from 5.
    c.apply(&statefulset(
        "five",
        "registry.local/web:1",
        "  replicas: 2\n  ordinals:\n    start: 5\n",
        "",
    ));
    wait_settled(c, "five", 2);
    assert_eq!(names(c, "five"), ["five-5", "five-6"]);
    c.ok(
        K,
        &[
            "patch",
            "sts",
            "five",
            "--type=merge",
            "-p",
            r#"{"spec":{"ordinals":{"start":0}}}"#,
        ],
    );
    wait_settled(c, "five", 2);
    wait_for(
        "five-5 and five-6 to be replaced by five-0, five-1",
        MINUTE,
        || (names(c, "five") == ["five-0", "five-1"]).then_some(()),
    );
}

/// Most pods of `app` not Ready (or being deleted) at once while `run` goes on.
fn worst_unavailable(c: &Cluster, app: &str, n: usize, run: impl FnOnce()) -> usize {
    let watch = Timeline::start(c, app);
    run();
    let mut state: BTreeMap<String, bool> = BTreeMap::new();
    for p in names(c, app) {
        state.insert(p, true);
    }
    let mut worst = 0;
    for e in watch.finish() {
        if e.deleted {
            state.insert(e.name, false);
        } else {
            state.insert(e.name, e.ready && !e.terminating);
        }
        let up = state.values().filter(|r| **r).count();
        worst = worst.max(n.saturating_sub(up));
    }
    worst
}

fn max_unavailable(c: &Cluster) {
    // --- maxUnavailable 2: two pods are replaced at a time, never more.
    c.apply(&statefulset(
        "wide",
        "registry.local/web:1",
        "  replicas: 4\n  podManagementPolicy: Parallel\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxUnavailable: 2\n",
        "",
    ));
    wait_settled(c, "wide", 4);
    let worst = worst_unavailable(c, "wide", 4, || {
        c.ok(K, &["set", "image", "sts/wide", "app=registry.local/web:2"]);
        c.ok(K, &["rollout", "status", "sts/wide", "--timeout=120s"]);
        wait_settled(c, "wide", 4);
    });
    assert_eq!(
        worst, 2,
        "maxUnavailable 2: at most, and during the update exactly, two pods down"
    );
    assert!(images(c, "wide")
        .values()
        .all(|i| i == "registry.local/web:2"));
}

fn on_delete(c: &Cluster) {
    // --- OnDelete: a new template changes no pod until one is deleted; rollout status
    // refuses the strategy, as kubectl does.
    c.apply(&statefulset(
        "manual",
        "registry.local/web:1",
        "  replicas: 2\n  updateStrategy:\n    type: OnDelete\n",
        "",
    ));
    wait_settled(c, "manual", 2);
    c.ok(
        K,
        &["set", "image", "sts/manual", "app=registry.local/web:2"],
    );
    wait_for("the new revision to be observed", MINUTE, || {
        let sts = sts_json(c, "manual");
        let s = &sts["status"];
        (sts["metadata"]["generation"] == s["observedGeneration"]
            && s["updatedReplicas"] == 0
            && s["currentReplicas"] == 2)
            .then_some(())
    });
    c.ok(K, &["delete", "pod", "manual-1", "--wait=false"]);
    wait_for("manual-1 at the new revision", MINUTE, || {
        let s = sts_json(c, "manual")["status"].clone();
        (s["updatedReplicas"] == 1 && s["readyReplicas"] == 2).then_some(())
    });
    let imgs = images(c, "manual");
    assert_eq!(imgs["manual-0"], "registry.local/web:1");
    assert_eq!(imgs["manual-1"], "registry.local/web:2");
    let out = c.kubectl(K, &["rollout", "status", "sts/manual", "--timeout=10s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rollout status is only available for RollingUpdate strategy type"),
        "{err}"
    );
}

/// A claim as a user sees it: (uid, being deleted, owners as `Kind/name/controller`).
fn claim(c: &Cluster, name: &str) -> Option<(String, bool, String)> {
    let out = c.kubectl(
        K,
        &[
            "get",
            "pvc",
            name,
            "-o",
            "jsonpath={.metadata.uid} {.metadata.deletionTimestamp} {range .metadata.ownerReferences[*]}{.kind}/{.name}/{.controller} {end}",
        ],
    );
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "{err}"
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    let uid = words.next().unwrap_or_default().to_string();
    let rest: Vec<&str> = words.collect();
    let deleting = rest
        .first()
        .is_some_and(|w| w.contains('T') && !w.contains('/'));
    let owners = rest
        .iter()
        .filter(|w| w.contains('/'))
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    Some((uid, deleting, owners))
}

/// Gone, or being deleted (the pvc-protection finalizer holds a claim until no pod uses
/// it): what the garbage collector does to a claim whose owner went.
fn claim_going(c: &Cluster, name: &str) -> bool {
    claim(c, name).is_none_or(|(_, deleting, _)| deleting)
}

fn claims(c: &Cluster) {
    // --- One claim per template and pod, named <template>-<set>-<ordinal>, mounted by
    // its pod; whenScaled Delete: a scaled-down pod owns its claims, which go with it,
    // while the claims of the pods in range have no owner.
    // Hollow nodes run no provisioner: the claims bind at once to static volumes of a
    // class without one (the built-in local-path class would wait for a node's agent).
    let mut volumes = String::from(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: manual\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\n",
    );
    for i in 0..6 {
        volumes.push_str(&format!(
            "---\napiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: sts-pv-{i}\nspec:\n  storageClassName: manual\n  capacity: {{storage: 1Mi}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: /var/tmp/sts-pv-{i}}}\n"
        ));
    }
    c.apply(&volumes);
    let templates = "  volumeClaimTemplates:\n  - metadata:\n      name: data\n    spec:\n      storageClassName: manual\n      accessModes: [ReadWriteOnce]\n      resources:\n        requests:\n          storage: 1Mi\n";
    c.apply(&statefulset(
        "db",
        "registry.local/db:1",
        &format!("  replicas: 2\n  persistentVolumeClaimRetentionPolicy:\n    whenScaled: Delete\n    whenDeleted: Retain\n{templates}"),
        "",
    ));
    wait_settled(c, "db", 2);
    let vols = pods_by(
        c,
        "db",
        "{.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName}",
    );
    assert_eq!(vols["db-0"], "data-db-0");
    assert_eq!(vols["db-1"], "data-db-1");
    let labels = c.ok(
        K,
        &[
            "get",
            "pvc",
            "data-db-1",
            "-o",
            "jsonpath={.metadata.labels.app}",
        ],
    );
    assert_eq!(labels, "db", "the selector's labels");
    let events = c.ok(
        K,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=db",
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ],
    );
    assert!(
        events.contains("create Claim data-db-1 Pod db-1 in StatefulSet db success"),
        "{events}"
    );
    let (db0, deleting, owners) = claim(c, "data-db-0").expect("data-db-0");
    assert!(!deleting && owners.is_empty(), "{owners}");
    c.ok(K, &["scale", "sts", "db", "--replicas=1"]);
    wait_for("data-db-1 to go with db-1", MINUTE, || {
        claim_going(c, "data-db-1").then_some(())
    });
    wait_settled(c, "db", 1);
    let (uid, deleting, owners) = claim(c, "data-db-0").expect("data-db-0");
    assert!(
        uid == db0 && !deleting && owners.is_empty(),
        "data-db-0 stays: {owners}"
    );
    c.ok(K, &["delete", "sts", "db"]);

    // --- whenDeleted Delete (set after creation), whenScaled Retain: the set owns the
    // claims; scaling down keeps them and the pod that comes back mounts the same
    // claim; deleting the set deletes them.
    c.apply(&statefulset(
        "db2",
        "registry.local/db:1",
        &format!("  replicas: 2\n{templates}"),
        "",
    ));
    wait_settled(c, "db2", 2);
    assert_eq!(claim(c, "data-db2-1").map(|c| c.2), Some(String::new()));
    c.ok(
        K,
        &[
            "patch",
            "sts",
            "db2",
            "--type=merge",
            "-p",
            r#"{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenDeleted":"Delete"}}}"#,
        ],
    );
    wait_for("the set to own its claims", MINUTE, || {
        let owned = |n: &str| claim(c, n).is_some_and(|(_, _, o)| o == "StatefulSet/db2/true");
        (owned("data-db2-0") && owned("data-db2-1")).then_some(())
    });
    let before = claim(c, "data-db2-1").expect("data-db2-1");
    c.ok(K, &["scale", "sts", "db2", "--replicas=1"]);
    wait_settled(c, "db2", 1);
    wait_for("db2-1 to go", MINUTE, || {
        (names(c, "db2") == ["db2-0"]).then_some(())
    });
    assert_eq!(
        claim(c, "data-db2-1"),
        Some(before.clone()),
        "Retain on scale-down"
    );
    c.ok(K, &["scale", "sts", "db2", "--replicas=2"]);
    wait_settled(c, "db2", 2);
    assert_eq!(
        claim(c, "data-db2-1"),
        Some(before),
        "db2-1 is back on its claim"
    );
    c.ok(K, &["delete", "sts", "db2"]);
    wait_for("the claims to go with the set", MINUTE, || {
        (claim_going(c, "data-db2-0") && claim_going(c, "data-db2-1")).then_some(())
    });

    // --- Retain on both: the claims outlive the set.
    c.apply(&statefulset(
        "keep",
        "registry.local/db:1",
        &format!("  replicas: 1\n{templates}"),
        "",
    ));
    wait_settled(c, "keep", 1);
    let kept = claim(c, "data-keep-0");
    c.ok(K, &["delete", "sts", "keep"]);
    wait_for("keep-0 to go", MINUTE, || {
        names(c, "keep").is_empty().then_some(())
    });
    assert_eq!(claim(c, "data-keep-0"), kept);
    assert!(kept.is_some_and(|(_, deleting, owners)| !deleting && owners.is_empty()));
}

/// The real agent: http-hello Wasm pods as a StatefulSet behind a headless Service,
/// created in order as their readiness probes pass, reachable from another pod as
/// `web-0.nginx` (the pod's resolver, the cluster DNS, the Service's endpoints).
#[test]
fn statefulset_pods_resolve_through_the_headless_service() {
    let reg = Registry::start();
    let wasm = common::build_guest(
        "runtime/spindle-wasm/tests/guests/http-hello/Cargo.toml",
        "http-hello",
        "wasm32-wasip2",
    );
    let image = reg.push(&wasm, "tests/http-hello:sts");
    let c = Cluster::with_agent("real-node", &[]);
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\nspec:\n  clusterIP: None\n  selector:\n    app: web\n  ports:\n  - port: 8080\n",
    );
    let pod_spec = "      terminationGracePeriodSeconds: 1\n";
    let manifest = format!(
        "{}        ports:\n        - containerPort: 8080\n        env:\n        - name: POD_NAME\n          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}\n        readinessProbe:\n          httpGet: {{path: /env/POD_NAME, port: 8080}}\n          periodSeconds: 1\n",
        statefulset("web", &image, "  replicas: 2\n", pod_spec)
    );
    let watch = Timeline::start(&c, "web");
    c.apply(&manifest);
    wait_settled(&c, "web", 2);
    assert_eq!(
        assert_created_in_order("web", &watch.finish()),
        ["web-0", "web-1"]
    );
    // web-1 reaches web-0 by name, and web-0 web-1.
    for (from, to) in [("web-1", "web-0"), ("web-0", "web-1")] {
        for name in [
            format!("{to}.nginx"),
            format!("{to}.nginx.default.svc.cluster.local"),
        ] {
            let got = wait_for(&format!("{from} to fetch from {name}"), MINUTE, || {
                let out = c.kubectl(
                    K,
                    &[
                        "exec",
                        from,
                        "--",
                        "http-hello",
                        "fetch",
                        &format!("{name}:8080/env/POD_NAME"),
                    ],
                );
                let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
                (out.status.success() && !text.is_empty()).then_some(text)
            });
            assert_eq!(got, format!("200 {to}"), "{from} -> {name}");
        }
    }
    let slice = c.ok(
        K,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=nginx",
            "-o",
            "jsonpath={.items[0].endpoints[*].hostname}",
        ],
    );
    let mut hosts: Vec<&str> = slice.split_whitespace().collect();
    hosts.sort();
    assert_eq!(hosts, ["web-0", "web-1"]);
}
