//! Controllers and scheduler with simulated nodes: Deployments roll out the way
//! `kubectl rollout` expects, deletion cascades, and the scheduler places pods by
//! selectors, affinity, taints and resources.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use common::{Cluster, KUBECTL_DEFAULT as K};

const MINUTE: Duration = Duration::from_secs(60);

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations:
    kubernetes.io/change-cause: "image {image}"
spec:
  replicas: {replicas}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 1
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: {image}
        resources:
          requests:
            cpu: 10m
            memory: 16Mi
"#
    )
}

fn nodes_ready(c: &Cluster, n: usize) {
    c.wait_for_output(
        &["get", "nodes", "-o", r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#],
        &vec!["True"; n].join("\n"),
        MINUTE,
    );
}

/// Follows the pods of one app through a watch while a rollout runs. Every event updates
/// the count of available pods, so no dip between two samples can go unseen, and a
/// failing watch fails the test rather than leaving the minimum untouched.
struct RolloutWatch {
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<Seen, String>>,
}

/// What the watch saw after its initial list.
#[derive(Debug)]
struct Seen {
    /// The fewest available pods (Ready and not being deleted) at any moment.
    min_available: usize,
    /// Watch events after the initial list.
    events: usize,
    /// The pod-template-hash of every pod seen: one per ReplicaSet.
    templates: BTreeSet<String>,
}

impl RolloutWatch {
    fn start(c: &Cluster, app: &str) -> RolloutWatch {
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let pods: Api<Pod> = Api::default_namespaced(rt.block_on(c.kube_client()));
        let cfg = watcher::Config::default().labels(&format!("app={app}"));
        let (listed_tx, listed_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(async move {
            let mut stream = std::pin::pin!(watcher(pods, cfg));
            let mut available: BTreeMap<String, bool> = BTreeMap::new();
            let mut seen = Seen {
                min_available: usize::MAX,
                events: 0,
                templates: BTreeSet::new(),
            };
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
                match ev {
                    // A relist means events in between were not seen.
                    watcher::Event::Init if listed => {
                        return Err("the pod watch restarted during the rollout".into())
                    }
                    watcher::Event::Init => {}
                    watcher::Event::InitDone => {
                        listed = true;
                        let _ = listed_tx.send(());
                    }
                    watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                        let labels = p.metadata.labels.clone().unwrap_or_default();
                        if let Some(h) = labels.get("pod-template-hash") {
                            seen.templates.insert(h.clone());
                        }
                        available.insert(p.name_any(), is_available(&p));
                        seen.events += usize::from(listed);
                    }
                    watcher::Event::Delete(p) => {
                        available.remove(&p.name_any());
                        seen.events += 1;
                    }
                }
                if listed {
                    let now = available.values().filter(|a| **a).count();
                    seen.min_available = seen.min_available.min(now);
                }
            }
        });
        if listed_rx.recv_timeout(MINUTE).is_err() {
            let why = rt.block_on(task);
            panic!("the pod watch did not list: {why:?}");
        }
        RolloutWatch { rt, stop, task }
    }

    fn finish(self) -> Seen {
        let RolloutWatch { rt, stop, task } = self;
        let _ = stop.send(());
        match rt.block_on(task) {
            Ok(Ok(seen)) => seen,
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("the pod watch task: {e}"),
        }
    }
}

/// Ready and not being deleted: what the Deployment controller counts as available
/// (minReadySeconds is 0 here).
fn is_available(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[test]
fn deployment_rollouts_behave_like_kubernetes() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(3, "hollow", &[]);
    nodes_ready(&c, 3);

    let f = c.write_file("web.yaml", &deployment("web", 4, "registry.local/web:v1"));
    c.ok(K, &["apply", "-f", f.to_str().unwrap_or_default()]);
    c.ok(K, &["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.ok(
        K,
        &[
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=60s",
        ],
    );
    assert_eq!(
        c.ok(
            K,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.status.readyReplicas}"
            ]
        ),
        "4"
    );
    let pods = c.ok(K, &["get", "pods", "-l", "app=web", "-o", "wide"]);
    assert_eq!(
        pods.lines().filter(|l| l.contains("Running")).count(),
        4,
        "{pods}"
    );

    // New image and more replicas: a rolling update that never drops below 4 - 1 ready.
    let watch = RolloutWatch::start(&c, "web");
    let f = c.write_file("web.yaml", &deployment("web", 6, "registry.local/web:v2"));
    c.ok(K, &["apply", "-f", f.to_str().unwrap_or_default()]);
    c.ok(K, &["rollout", "status", "deployment/web", "--timeout=90s"]);
    let seen = watch.finish();
    eprintln!("rollout watch: {seen:?}");
    assert!(
        seen.min_available >= 3,
        "available pods dropped to {} during the rollout (replicas 4, maxUnavailable 1): {seen:?}",
        seen.min_available
    );
    // The watch followed the rollout itself: pods of both templates, and at least an
    // add and a Ready change for each of the 6 new pods plus a delete for each old one.
    assert_eq!(seen.templates.len(), 2, "{seen:?}");
    assert!(seen.events >= 6 * 2 + 4, "{seen:?}");
    let images = c.ok(
        K,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ],
    );
    assert_eq!(
        images
            .split_whitespace()
            .filter(|i| *i == "registry.local/web:v2")
            .count(),
        6,
        "{images}"
    );

    let history = c.ok(K, &["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("image registry.local/web:v1")
            && history.contains("image registry.local/web:v2"),
        "{history}"
    );
    let rs = c.ok(K, &["get", "rs", "-l", "app=web", "-o", "name"]);
    assert_eq!(rs.lines().count(), 2, "one ReplicaSet per template: {rs}");

    c.ok(K, &["rollout", "undo", "deployment/web"]);
    c.ok(K, &["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert_eq!(
        c.ok(
            K,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}"
            ]
        ),
        "registry.local/web:v1"
    );

    c.ok(K, &["scale", "deployment/web", "--replicas=8"]);
    c.ok(K, &["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.wait_for_output(
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
        "8",
        MINUTE,
    );
    c.ok(K, &["scale", "deployment/web", "--replicas=2"]);
    c.ok(K, &["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.wait_for_output(
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.replicas}/{.status.availableReplicas}",
        ],
        "2/2",
        MINUTE,
    );
}

#[test]
fn rollout_restart_pause_resume_and_deletion() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(2, "hollow", &[]);
    nodes_ready(&c, 2);
    let f = c.write_file("api.yaml", &deployment("api", 2, "registry.local/api:v1"));
    c.ok(K, &["apply", "-f", f.to_str().unwrap_or_default()]);
    c.ok(K, &["rollout", "status", "deployment/api", "--timeout=90s"]);

    c.ok(K, &["rollout", "restart", "deployment/api"]);
    c.ok(K, &["rollout", "status", "deployment/api", "--timeout=90s"]);
    assert_eq!(
        c.ok(K, &["get", "rs", "-l", "app=api", "-o", "name"])
            .lines()
            .count(),
        2
    );

    c.ok(K, &["rollout", "pause", "deployment/api"]);
    c.ok(
        K,
        &[
            "set",
            "image",
            "deployment/api",
            "app=registry.local/api:v3",
        ],
    );
    // Once the controller has processed the paused spec (observedGeneration caught up
    // with the generation the image change made), no new ReplicaSet may exist.
    let generation = c.ok(
        K,
        &[
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    );
    c.wait_for_output(
        &[
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.status.observedGeneration}",
        ],
        &generation,
        MINUTE,
    );
    assert_eq!(
        c.ok(K, &["get", "rs", "-l", "app=api", "-o", "name"])
            .lines()
            .count(),
        2,
        "a paused deployment must not roll out"
    );
    c.ok(K, &["rollout", "resume", "deployment/api"]);
    c.ok(K, &["rollout", "status", "deployment/api", "--timeout=90s"]);
    assert_eq!(
        c.ok(K, &["get", "rs", "-l", "app=api", "-o", "name"])
            .lines()
            .count(),
        3
    );
    let d = c.ok(K, &["describe", "deployment", "api"]);
    assert!(d.contains("ScalingReplicaSet"), "{d}");
    // The deployment's events list in the order they happened (as on Kubernetes, whose
    // event names carry the time), so describe tells the rollout's story in order.
    let times = c.ok(
        K,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Deployment,involvedObject.name=api",
            "-o",
            "jsonpath={range .items[*]}{.eventTime}{\"\\n\"}{end}",
        ],
    );
    let times: Vec<&str> = times.lines().collect();
    assert!(times.len() >= 4, "{times:?}");
    // RFC 3339 with a fixed number of fraction digits sorts as text.
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "events out of order: {times:?}"
    );

    // --cascade=orphan keeps ReplicaSets and pods; a plain delete removes them.
    c.ok(K, &["delete", "deployment", "api", "--cascade=orphan"]);
    assert_eq!(
        c.ok(K, &["get", "rs", "-l", "app=api", "-o", "name"])
            .lines()
            .count(),
        3
    );
    assert!(!c
        .ok(K, &["get", "pods", "-l", "app=api", "-o", "name"])
        .trim()
        .is_empty());
    let f = c.write_file(
        "gone.yaml",
        &deployment("gone", 2, "registry.local/gone:v1"),
    );
    c.ok(K, &["apply", "-f", f.to_str().unwrap_or_default()]);
    c.ok(
        K,
        &["rollout", "status", "deployment/gone", "--timeout=90s"],
    );
    c.ok(K, &["delete", "deployment", "gone"]);
    c.wait_for_output(
        &["get", "rs,pods", "-l", "app=gone", "-o", "name"],
        "",
        MINUTE,
    );

    c.ok(K, &["create", "namespace", "doomed"]);
    c.ok(
        K,
        &[
            "create",
            "deployment",
            "d",
            "-n",
            "doomed",
            "--image=registry.local/x:v1",
            "--replicas=2",
        ],
    );
    c.ok(
        K,
        &[
            "rollout",
            "status",
            "deployment/d",
            "-n",
            "doomed",
            "--timeout=90s",
        ],
    );
    c.ok(K, &["delete", "namespace", "doomed"]);
    c.wait_for_output(
        &[
            "get",
            "namespace",
            "doomed",
            "--ignore-not-found",
            "-o",
            "name",
        ],
        "",
        MINUTE,
    );
    assert_eq!(
        c.ok(K, &["get", "deploy,rs,pods", "-n", "doomed", "-o", "name"])
            .trim(),
        ""
    );
}
