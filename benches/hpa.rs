//! HPA reaction benchmark (`cargo bench --bench hpa`): real processes on this machine, a
//! real OCI registry (Debian's docker-registry), the web example (a wasi:http component
//! with a `/busy` endpoint) and a busybox httpd container whose CGI script counts.
//!
//! One `spindle server --disable-agent` and one standalone `spindle agent` (node `bench`,
//! with containerd). Two Deployments of one pod each (CPU request 50m), each behind a
//! Service with an HPA (CPU utilization 50 %, 1 to 4 pods, a 5 s scale-down window):
//! `wasm` (the web example) and `container` (busybox httpd). Each round, for each in
//! turn (alternating which goes first), four threads put load on its Service, and the
//! benchmark measures
//! - `decide`: from the load's start to the Deployment's replicas raised by the HPA;
//! - `ready`: from the load's start to a second pod Ready;
//! - `start`: `ready - decide`, the part that is the new pod starting;
//!
//! then stops the load and waits for the HPA to scale back to one pod. The controller's
//! sync period is kube's 15 s (3 s in quick mode) unless BENCH_HPA_SYNC says otherwise; `decide` is mostly
//! the sampling and sync delay, `start` is where a Wasm pod and a container differ.
//! Figures: p50 and p99 per variant over BENCH_HPA_ROUNDS rounds (default 5), and the
//! ratio Wasm / container. Under `cargo test` (no `--bench`) one round runs.

mod common;
use common::{announce, size, start_registry, start_server, wait_node_ready, Net, Proc};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};

const NS: &str = "hpa";
const NODE: &str = "bench";
const LOAD_THREADS: usize = 4;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Wasm,
    Container,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Wasm => "wasm",
            Variant::Container => "container",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Variant::Wasm => "/busy?ms=200",
            Variant::Container => "/cgi-bin/busy",
        }
    }
}

fn manifests(web: &str, busybox: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cgi, namespace: {NS}}}
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
metadata: {{name: wasm, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: wasm}}}}
  template:
    metadata: {{labels: {{app: wasm}}}}
    spec:
      containers:
      - name: web
        image: {web}
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}
        resources: {{requests: {{cpu: 50m}}, limits: {{memory: 32Mi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: container, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: container}}}}
  template:
    metadata: {{labels: {{app: container}}}}
    spec:
      containers:
      - name: httpd
        image: {busybox}
        command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1}}
        resources: {{requests: {{cpu: 50m}}, limits: {{memory: 32Mi}}}}
        volumeMounts: [{{name: cgi, mountPath: /www/cgi-bin}}]
      volumes:
      - name: cgi
        configMap: {{name: cgi, defaultMode: 0755}}
"#
    ) + &["wasm", "container"]
        .map(|app| {
            format!(
                r#"---
apiVersion: v1
kind: Service
metadata: {{name: {app}, namespace: {NS}}}
spec:
  selector: {{app: {app}}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {app}, namespace: {NS}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {app}}}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}
  behavior:
    scaleDown: {{stabilizationWindowSeconds: 5}}
"#
            )
        })
        .concat()
}

/// Threads that keep asking `addr` for CPU work until the flag is set.
fn load(
    addr: SocketAddr,
    path: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
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
                        format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
                    let mut answer = Vec::new();
                    if s.write_all(req.as_bytes()).is_ok() {
                        let _ = s.read_to_end(&mut answer);
                    }
                }
            })
        })
        .collect()
}

/// (spec.replicas, status.readyReplicas) of a Deployment.
async fn replicas(api: &Api<Deployment>, name: &str) -> anyhow::Result<(i32, i32)> {
    let d = api.get(name).await?;
    let spec = d.spec.and_then(|s| s.replicas).unwrap_or(0);
    let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    Ok((spec, ready))
}

async fn wait_for(
    what: &str,
    limit: Duration,
    mut f: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if f().await? {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(start.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One round of one variant: (decide, ready).
async fn react(client: &Client, v: Variant) -> anyhow::Result<(Duration, Duration)> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let name = v.name();
    wait_for("one idle pod", Duration::from_secs(180), async || {
        Ok(replicas(&api, name).await? == (1, 1))
    })
    .await?;
    let svc: Api<Service> = Api::namespaced(client.clone(), NS);
    let ip = svc
        .get(name)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_default();
    let addr: SocketAddr = format!("{ip}:80").parse()?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(addr, v.path(), stop.clone());
    let t0 = Instant::now();
    let mut decide = None;
    let result = wait_for("a second pod Ready", Duration::from_secs(180), async || {
        let (spec, ready) = replicas(&api, name).await?;
        if spec >= 2 && decide.is_none() {
            decide = Some(t0.elapsed());
        }
        Ok(ready >= 2)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let ready = result?;
    Ok((decide.unwrap_or(ready), ready))
}

fn pct(xs: &[Duration], p: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().map(|d| d.as_secs_f64()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn busybox_image(reg: &str, work: &Path) -> anyhow::Result<String> {
    let reference = format!("{reg}/bench/busybox:v1");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-image");
    let out = Command::new("bash")
        .arg(script)
        .arg(&reference)
        .arg(work.join("busybox-image"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "busybox-image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(reference)
}

async fn bench(work: &Path, web: &str, busybox: &str, rounds: usize) -> anyhow::Result<()> {
    let net = Net::fresh();
    let mut args = net.server_args();
    args.push("--disable-agent".into());
    // Quick mode (CI) syncs often to stay short; a measurement uses kube's default.
    let default_sync = if common::size::quick() { "3s" } else { "15s" };
    let sync = std::env::var("BENCH_HPA_SYNC").unwrap_or_else(|_| default_sync.into());
    args.push(format!("--horizontal-pod-autoscaler-sync-period={sync}"));
    let mut s = start_server(work, "server", &args).await?;
    let mut cmd = Command::new(common::bin());
    cmd.args(["agent", "--server", &s.url, "--node-name", NODE])
        .args(["--node-ip", "127.0.0.1", "--agent-port", "0", "--data-dir"])
        .arg(work.join("agent-data"))
        .args(net.agent_args())
        .env("SPINDLE_TOKEN", &s.token);
    let mut agent = Proc::spawn(cmd, &work.join("agent.log"), "spindle agent")?;
    wait_node_ready(&s.client, NODE).await?;
    let manifest = work.join("hpa.yaml");
    std::fs::write(&manifest, manifests(web, busybox))?;
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(work.join("server/kubeconfig.yaml"))
        .arg("apply")
        .arg("-f")
        .arg(&manifest)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "== HPA reaction, sync period {sync}, {LOAD_THREADS} load threads, {rounds} round(s) =="
    );
    let mut figures: Vec<(Variant, Duration, Duration)> = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Variant::Wasm, Variant::Container]
        } else {
            [Variant::Container, Variant::Wasm]
        };
        for v in order {
            let (decide, ready) = react(&s.client, v).await?;
            s.proc.ensure_alive("spindle server")?;
            agent.ensure_alive("spindle agent")?;
            println!(
                "round {round} {:<9}  decide {:>6.2} s  ready {:>6.2} s  start {:>6.3} s",
                v.name(),
                decide.as_secs_f64(),
                ready.as_secs_f64(),
                (ready - decide).as_secs_f64()
            );
            figures.push((v, decide, ready));
        }
    }
    let mut p50 = std::collections::HashMap::new();
    for v in [Variant::Wasm, Variant::Container] {
        let mine: Vec<_> = figures.iter().filter(|f| f.0 == v).collect();
        let decide: Vec<Duration> = mine.iter().map(|f| f.1).collect();
        let ready: Vec<Duration> = mine.iter().map(|f| f.2).collect();
        let start: Vec<Duration> = mine.iter().map(|f| f.2 - f.1).collect();
        println!(
            "{:<9}  decide p50 {:>6.2} s p99 {:>6.2} s | ready p50 {:>6.2} s p99 {:>6.2} s | start p50 {:>6.3} s p99 {:>6.3} s",
            v.name(),
            pct(&decide, 50.0),
            pct(&decide, 99.0),
            pct(&ready, 50.0),
            pct(&ready, 99.0),
            pct(&start, 50.0),
            pct(&start, 99.0)
        );
        p50.insert(v.name(), (pct(&ready, 50.0), pct(&start, 50.0)));
    }
    let (w, c) = (p50["wasm"], p50["container"]);
    println!(
        "wasm / container at p50: load -> Ready {:.2}x, new pod start {:.2}x",
        w.0 / c.0,
        w.1 / c.1
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    announce("hpa");
    let rounds = size("BENCH_HPA_ROUNDS", 5, 1);
    common::run_in_work(|work| async move {
        let reg = start_registry(&work)?;
        let web = common::build_guest("examples/Cargo.toml", "web", "wasm32-wasip2")?;
        let web = common::push(&reg, &web, "bench/web:v1")?;
        let busybox = busybox_image(&reg.addr, &work)?;
        bench(&work, &web, &busybox, rounds).await
    })
}
