//! HorizontalPodAutoscalers end to end, as a user runs them: `kubectl autoscale` (which
//! writes autoscaling/v1 before kubectl 1.33) on the web example, load the test puts on
//! the Service, the Deployment scaled up within a minute and back down once the load
//! stops, with kube's events, conditions and `kubectl get hpa` targets, through both
//! kubectls and both API versions.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{kubectls, Cluster, Registry, KUBECTL_DEFAULT, KUBECTL_OLDEST};

/// Requests in flight at once: enough to keep one pod far above half its 50m request.
const LOAD_THREADS: usize = 4;

/// Threads that keep asking the Service for CPU work until `stop` is set.
fn load(addr: SocketAddr, path: &'static str, stop: Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    (0..LOAD_THREADS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let req =
                        format!("GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
                    let mut answer = Vec::new();
                    if s.write_all(req.as_bytes()).is_ok() {
                        let _ = s.read_to_end(&mut answer);
                    }
                }
            })
        })
        .collect()
}

fn jsonpath(c: &Cluster, kubectl: &str, what: &[&str], path: &str) -> String {
    let mut args = vec!["get", "-n", "web"];
    args.extend_from_slice(what);
    let path = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &path]);
    c.ok(kubectl, &args).trim().to_string()
}

/// The HPA as autoscaling/v1 serves it (kubectl itself reads the preferred v2).
fn v1(c: &Cluster) -> serde_json::Value {
    let path = "/apis/autoscaling/v1/namespaces/web/horizontalpodautoscalers/web";
    let out = c.ok(KUBECTL_DEFAULT, &["get", "--raw", path]);
    serde_json::from_str(&out).expect("an HPA")
}

fn replicas(c: &Cluster) -> i64 {
    jsonpath(
        c,
        KUBECTL_DEFAULT,
        &["deployment", "web"],
        "{.spec.replicas}",
    )
    .parse()
    .unwrap_or(0)
}

/// Waits for the web Deployment's rollout.
fn rolled_out(c: &Cluster) {
    let args = [
        "rollout",
        "status",
        "-n",
        "web",
        "deployment/web",
        "--timeout=120s",
    ];
    c.ok(KUBECTL_DEFAULT, &args);
}

/// The messages of the HPA's events.
fn hpa_events(c: &Cluster) -> String {
    let sel = "involvedObject.kind=HorizontalPodAutoscaler";
    let args = [
        "get",
        "events",
        "-n",
        "web",
        "--field-selector",
        sel,
        "-o",
        "jsonpath={.items[*].message}",
    ];
    c.ok(KUBECTL_DEFAULT, &args)
}

/// Poll `f` until it holds, failing with `what` after `limit`; how long it took.
fn within(c: &Cluster, limit: Duration, what: &str, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let hpa = c.kubectl(KUBECTL_DEFAULT, &["describe", "hpa", "-n", "web", "web"]);
    panic!(
        "{what} not within {limit:?}\n{}\n{}",
        String::from_utf8_lossy(&hpa.stdout),
        hpa_events(c)
    );
}

/// The TARGETS cell of `kubectl get hpa`.
fn targets(c: &Cluster, kubectl: &str) -> String {
    let out = c.ok(kubectl, &["get", "hpa", "-n", "web", "web"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap_or("");
    let row = lines.next().unwrap_or("");
    let at = header.find("TARGETS").expect("a TARGETS column");
    let end = header.find("MINPODS").expect("a MINPODS column");
    row.get(at..end).unwrap_or("").trim().to_string()
}

#[test]
fn kubectl_autoscale_scales_a_wasm_deployment_up_under_load_and_back_down() {
    let reg = Registry::start();
    let web = common::build_guest("examples/Cargo.toml", "web", "wasm32-wasip2");
    reg.push(&web, "examples/web:v1");
    let c = Cluster::with_agent("hpa-node", &["--horizontal-pod-autoscaler-sync-period=3s"]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/web");
    let app = std::fs::read_to_string(root.join("app.yaml"))
        .expect("web manifest")
        .replace("127.0.0.1:5000", &reg.addr)
        .replace("replicas: 3", "replicas: 1");
    c.apply(&app);
    rolled_out(&c);

    // kubectl before 1.33 writes autoscaling/v1; the server keeps v2, and serves both.
    c.ok(
        KUBECTL_OLDEST,
        &[
            "autoscale",
            "deployment",
            "web",
            "-n",
            "web",
            "--cpu-percent=50",
            "--min=1",
            "--max=4",
        ],
    );
    assert_eq!(v1(&c)["spec"]["targetCPUUtilizationPercentage"], 50);
    let v2 = &["hpa.v2.autoscaling", "web"];
    assert_eq!(
        jsonpath(
            &c,
            KUBECTL_DEFAULT,
            v2,
            "{.spec.metrics[0].resource.target.averageUtilization}"
        ),
        "50"
    );
    // A short scale-down window (v2 only) so that the test need not wait five minutes.
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "patch",
            "hpa",
            "web",
            "-n",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":5}}}}"#,
        ],
    );
    // The v1 view carries what v1 has no field for in kube's annotation.
    let hpa = v1(&c);
    let behavior = &hpa["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/behavior"];
    let behavior = behavior.as_str().unwrap_or("");
    assert!(
        behavior.contains("\"stabilizationWindowSeconds\":5"),
        "{hpa}"
    );

    scales_under_load(&c, "/busy?ms=200");
}

/// The HPA named web in namespace web, already created, holds one idle pod, scales up
/// within a minute of load on `path` through the Service, and back to one pod once the
/// load stops (its scale-down window set short).
fn scales_under_load(c: &Cluster, path: &'static str) {
    // Idle: the utilization is measured and low.
    within(c, Duration::from_secs(60), "a measured utilization", || {
        targets(c, KUBECTL_DEFAULT).ends_with("%/50%")
            && !targets(c, KUBECTL_DEFAULT).contains("unknown")
    });
    for k in kubectls() {
        let t = targets(c, k);
        // kubectl 1.27 shows the server's columns as they are.
        assert!(t.starts_with("cpu: ") && t.ends_with("%/50%"), "{k}: {t}");
    }
    assert_eq!(replicas(c), 1);

    let ip = jsonpath(c, KUBECTL_DEFAULT, &["svc", "web"], "{.spec.clusterIP}");
    let addr: SocketAddr = format!("{ip}:80").parse().expect("service address");
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(addr, path, stop.clone());
    let up = within(c, Duration::from_secs(60), "a scale-up under load", || {
        replicas(c) >= 2
    });
    println!("scaled up {up:?} after the load started");
    let messages = hpa_events(c);
    assert!(
        messages.contains("reason: cpu resource utilization (percentage of request) above target"),
        "{messages}"
    );
    let used: i64 = jsonpath(
        c,
        KUBECTL_DEFAULT,
        &["hpa", "web"],
        "{.status.currentMetrics[0].resource.current.averageUtilization}",
    )
    .parse()
    .expect("a current utilization");
    assert!(used > 50, "under load, yet {used}% of the request");
    let d = c.ok(KUBECTL_DEFAULT, &["describe", "hpa", "-n", "web", "web"]);
    assert!(
        d.contains("ScalingActive   True    ValidMetricFound"),
        "{d}"
    );
    assert!(d.contains("SuccessfulRescale"), "{d}");

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let down = within(c, Duration::from_secs(90), "a scale-down once idle", || {
        replicas(c) == 1
    });
    println!("scaled down {down:?} after the load stopped");
    let messages = hpa_events(c);
    assert!(
        messages.contains("New size: 1; reason: All metrics below target"),
        "{messages}"
    );
}

/// A busybox httpd whose CGI script counts for a while: a container Deployment the
/// same HPA scales, created from a v2 manifest.
const CONTAINER_APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: web}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cgi, namespace: web}
data:
  busy: |
    #!/bin/sh
    echo "Content-Type: text/plain"
    echo
    i=0
    while [ $i -lt 20000 ]; do i=$((i+1)); done
    echo busy
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: REGISTRY/hpa/busybox:v1
        command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 2}
        resources:
          requests: {cpu: 50m}
          limits: {memory: 32Mi}
        volumeMounts: [{name: cgi, mountPath: /www/cgi-bin}]
      volumes:
      - name: cgi
        configMap: {name: cgi, defaultMode: 0755}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"#;

#[test]
fn a_v2_hpa_scales_a_container_deployment_up_under_load_and_back_down() {
    let reg = Registry::start();
    reg.push_busybox("hpa/busybox:v1");
    let c = Cluster::with_agent("hpa-ctr", &["--horizontal-pod-autoscaler-sync-period=3s"]);
    c.apply(&CONTAINER_APP.replace("REGISTRY", &reg.addr));
    rolled_out(&c);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/web");
    let hpa = std::fs::read_to_string(root.join("hpa.yaml"))
        .expect("hpa manifest")
        .replace(
            "stabilizationWindowSeconds: 30",
            "stabilizationWindowSeconds: 5",
        );
    c.apply(&hpa);
    scales_under_load(&c, "/cgi-bin/busy");
}
