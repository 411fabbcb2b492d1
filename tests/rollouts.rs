//! Controllers and scheduler with simulated nodes: Deployments roll out the way
//! `kubectl rollout` expects, deletion cascades, and the scheduler places pods by
//! selectors, affinity, taints and resources.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// Watches the minimum of Ready pods with `app=<name>` while a rollout runs.
struct MinReady {
    stop: Arc<AtomicBool>,
    min: Arc<AtomicI64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl MinReady {
    fn start(c: &Cluster, app: &str) -> MinReady {
        let stop = Arc::new(AtomicBool::new(false));
        let min = Arc::new(AtomicI64::new(i64::MAX));
        let (s, m) = (stop.clone(), min.clone());
        let kubeconfig = c.kubeconfig();
        let selector = format!("app={app}");
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let out = common::output_within(
                    std::process::Command::new(K)
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args(["get", "pods", "-l", &selector, "-o", r#"jsonpath={range .items[*]}{.metadata.deletionTimestamp}|{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#]),
                    None,
                    common::KUBECTL_LIMIT,
                );
                if out.status.success() {
                    let ready = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|l| *l == "|True")
                        .count() as i64;
                    m.fetch_min(ready, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        MinReady {
            stop,
            min,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.min.load(Ordering::SeqCst)
    }
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
    let watch = MinReady::start(&c, "web");
    let f = c.write_file("web.yaml", &deployment("web", 6, "registry.local/web:v2"));
    c.ok(K, &["apply", "-f", f.to_str().unwrap_or_default()]);
    c.ok(K, &["rollout", "status", "deployment/web", "--timeout=90s"]);
    let min = watch.finish();
    assert!(
        min >= 3,
        "ready pods dropped to {min} during the rollout (replicas 4, maxUnavailable 1)"
    );
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
    std::thread::sleep(Duration::from_secs(2));
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
