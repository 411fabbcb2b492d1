//! Resource metrics end to end: the agent measures its pods (Wasm guests from the
//! runtime's own accounting, containers from their cgroups) and the node, serves the
//! kubelet's Summary API through `nodes/proxy`, and the API server answers
//! `metrics.k8s.io`, so `kubectl top` works with both kubectls. Real server and agent,
//! real registry, real kubectl.

mod common;

use std::time::{Duration, Instant};

use common::{kubectls, Cluster, Registry, KUBECTL_DEFAULT};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const NODE: &str = "metrics-node";

/// A pod of `image` running `args`, with its labels and limits.
fn pod(name: &str, ns: &str, image: &str, args: &str, labels: &str, limits: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{{labels}}}
spec:
  containers:
  - name: main
    image: {image}
    args: {args}
    resources:
      limits: {{{limits}}}
"#
    )
}

/// The rows of `kubectl top` (header left out), split into columns.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .filter(|r: &Vec<String>| !r.is_empty())
        .collect()
}

/// `kubectl top` with `args` until it has a row whose first column is `first`.
fn top_until(c: &Cluster, kubectl: &str, args: &[&str], first: &str) -> Vec<Vec<String>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = c.kubectl(kubectl, args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let rows = rows(&text);
        if out.status.success() && rows.iter().any(|r| r[0] == first) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?} never showed {first}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Millicores of a `kubectl top` CPU cell ("198m").
fn millis(cell: &str) -> f64 {
    cell.strip_suffix('m')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("CPU cell {cell:?}"))
}

/// MiB of a `kubectl top` memory cell ("50Mi").
fn mib(cell: &str) -> f64 {
    cell.strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("memory cell {cell:?}"))
}

fn row<'a>(rows: &'a [Vec<String>], first: &str) -> &'a [String] {
    rows.iter()
        .find(|r| r[0] == first)
        .unwrap_or_else(|| panic!("no row {first} in {rows:?}"))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The pod's CPU in `kubectl top`, over `n` sampling windows: the agent samples every
/// 5 s, so each read waits for a new timestamp.
fn cpu_samples(c: &Cluster, ns: &str, name: &str, n: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let mut last_stamp = String::new();
    let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}");
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        assert!(Instant::now() < deadline, "no {n} CPU samples of {name}");
        let m: Value = serde_json::from_str(&c.ok(KUBECTL_DEFAULT, &["get", "--raw", &path]))
            .expect("PodMetrics JSON");
        let stamp = m["timestamp"].as_str().unwrap_or_default().to_string();
        if stamp != last_stamp {
            let rows = rows(&c.ok(KUBECTL_DEFAULT, &["top", "pod", name, "-n", ns]));
            out.push(millis(&row(&rows, name)[1]));
            last_stamp = stamp;
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    out
}

fn summary(c: &Cluster, kubectl: &str) -> Value {
    let path = format!("/api/v1/nodes/{NODE}/proxy/stats/summary");
    serde_json::from_str(&c.ok(kubectl, &["get", "--raw", &path])).expect("Summary JSON")
}

fn pod_stats<'a>(s: &'a Value, ns: &str, name: &str) -> &'a Value {
    s["pods"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["podRef"]["name"] == name && p["podRef"]["namespace"] == ns)
        })
        .unwrap_or_else(|| panic!("no pod {ns}/{name} in the Summary: {s}"))
}

#[test]
fn kubectl_top_and_the_summary_api_show_wasm_pods_and_the_node() {
    let reg = Registry::start();
    let image = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:metrics");
    let c = Cluster::with_agent(NODE, &[]);
    c.ok(KUBECTL_DEFAULT, &["create", "namespace", "busy"]);
    c.apply(&pod(
        "holder",
        "default",
        &image,
        r#"["hold", "50"]"#,
        "tier: mem",
        "memory: 128Mi",
    ));
    c.apply(&pod(
        "spinner",
        "busy",
        &image,
        r#"["loop"]"#,
        "tier: cpu",
        "cpu: 200m, memory: 32Mi",
    ));
    for (ns, p) in [("default", "holder"), ("busy", "spinner")] {
        c.wait_for_output(
            &["get", "pod", p, "-n", ns, "-o", "jsonpath={.status.phase}"],
            "Running",
            WAIT,
        );
    }
    for k in kubectls() {
        // The guest's linear memory grew by 50 MiB: its working set.
        let rows = top_until(&c, k, &["top", "pods"], "holder");
        let held = mib(&row(&rows, "holder")[2]);
        eprintln!("{k}: the 50 MiB holder uses {held} MiB");
        assert!((45.0..=70.0).contains(&held), "{k}: holder uses {held} MiB");
        // All namespaces, by container, and sorted by memory.
        let rows = top_until(&c, k, &["top", "pods", "--containers", "-A"], "busy");
        assert!(
            rows.iter().any(|r| r[..3] == ["busy", "spinner", "main"]),
            "{k}: {rows:?}"
        );
        assert!(
            rows.iter().any(|r| r[..3] == ["default", "holder", "main"]),
            "{k}: {rows:?}"
        );
        let rows = rows_of(&c, k, &["top", "pods", "-A", "--sort-by=memory"]);
        assert_eq!(rows[0][..2], ["default", "holder"], "{k}: {rows:?}");
        assert_eq!(rows[1][..2], ["busy", "spinner"], "{k}: {rows:?}");
        // A label selector picks pods as `kubectl get -l` does.
        let rows = rows_of(&c, k, &["top", "pods", "-A", "-l", "tier=cpu"]);
        assert_eq!(rows.len(), 1, "{k}: {rows:?}");
        assert_eq!(rows[0][1], "spinner");
        // The node, with its share of the allocatable.
        let rows = top_until(&c, k, &["top", "nodes"], NODE);
        let node = row(&rows, NODE);
        assert!(millis(&node[1]) > 0.0, "{k}: {node:?}");
        assert!(mib(&node[3]) > held, "{k}: {node:?}");
    }
    // The spinner runs at its 200m limit: compared as a ratio over several windows.
    let samples = cpu_samples(&c, "busy", "spinner", 3);
    eprintln!("spinner at 200m: {samples:?} millicores");
    let used = median(samples) / 200.0;
    assert!(
        (0.5..=1.15).contains(&used),
        "a spinning guest limited to 200m used {:.0}% of it",
        used * 100.0
    );
    // The sleeping holder uses next to nothing.
    let idle = millis(
        &row(
            &rows_of(&c, KUBECTL_DEFAULT, &["top", "pod", "holder"]),
            "holder",
        )[1],
    );
    assert!(idle < 20.0, "a sleeping guest used {idle}m");
    summary_through_nodes_proxy_and_who_may_read_metrics(&c);
}

fn rows_of(c: &Cluster, kubectl: &str, args: &[&str]) -> Vec<Vec<String>> {
    rows(&c.ok(kubectl, args))
}

/// The Summary of the node running `holder` (50 MiB), through `nodes/proxy`, and who
/// may read it and the metrics API.
fn summary_through_nodes_proxy_and_who_may_read_metrics(c: &Cluster) {
    for k in kubectls() {
        let s = summary(c, k);
        let node = &s["node"];
        assert_eq!(node["nodeName"], NODE);
        assert!(node["cpu"]["usageNanoCores"].as_u64().is_some(), "{node}");
        assert!(
            node["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
            "{node}"
        );
        let ws = node["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
        assert!(
            ws > 0 && Some(ws) <= node["memory"]["usageBytes"].as_u64(),
            "{node}"
        );
        let p = pod_stats(&s, "default", "holder");
        let uid = c.pod_field("holder", "{.metadata.uid}");
        assert_eq!(p["podRef"]["uid"], uid.as_str());
        let main = &p["containers"][0];
        assert_eq!(main["name"], "main");
        assert!(main["cpu"]["usageNanoCores"].as_u64().is_some(), "{main}");
        assert!(
            main["cpu"]["usageCoreNanoSeconds"].as_u64().is_some(),
            "{main}"
        );
        let ws = main["memory"]["workingSetBytes"].as_u64().unwrap_or(0) as f64;
        assert!((45.0..=70.0).contains(&(ws / f64::from(1 << 20))), "{main}");
        assert_eq!(
            main["memory"]["usageBytes"],
            main["memory"]["workingSetBytes"]
        );
        assert_eq!(
            p["memory"]["workingSetBytes"],
            main["memory"]["workingSetBytes"]
        );
    }
    // A user with no rights reads neither the node nor the metrics API.
    let path = format!("/api/v1/nodes/{NODE}/proxy/stats/summary");
    for k in kubectls() {
        let err = c.fails(k, &["get", "--raw", &path, "--as=jane"]);
        assert!(
            err.contains(r#"User "jane" cannot get resource "nodes/proxy""#),
            "{k}: {err}"
        );
        let err = c.fails(k, &["top", "pods", "--as=jane"]);
        assert!(err.contains("forbidden"), "{k}: {err}");
    }
    // The view role holds the metrics of its namespace's pods, as with metrics-server,
    // and still not the node's proxy.
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "create",
            "rolebinding",
            "jane-view",
            "--clusterrole=view",
            "--user=jane",
        ],
    );
    for k in kubectls() {
        top_until(c, k, &["top", "pods", "--as=jane"], "holder");
        let err = c.fails(k, &["get", "--raw", &path, "--as=jane"]);
        assert!(err.contains("forbidden"), "{k}: {err}");
        let err = c.fails(k, &["top", "pods", "-A", "--as=jane"]);
        assert!(err.contains("forbidden"), "{k}: {err}");
    }
    // metrics-server's NotFound for a pod without metrics.
    let err = c.fails(KUBECTL_DEFAULT, &["top", "pod", "nosuch"]);
    assert!(
        err.contains(r#"podmetrics.metrics.k8s.io "default/nosuch" not found"#),
        "{err}"
    );
}

#[test]
fn kubectl_top_shows_a_container_pods_cgroup_usage() {
    let reg = Registry::start();
    let image = reg.push_busybox("tests/busybox:metrics");
    let c = Cluster::with_agent(NODE, &[]);
    // A shell holding about 20 MB in a variable and spinning at its 300m limit.
    let script =
        r#"["sh", "-c", "x=$(head -c 20000000 /dev/zero | tr '\\0' a); while :; do :; done"]"#;
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: {script}
    resources:
      limits: {{cpu: 300m, memory: 128Mi}}
"#
    ));
    c.wait_pod_field("shell", "{.status.phase}", "Running", WAIT);
    for k in kubectls() {
        let rows = top_until(&c, k, &["top", "pod", "shell"], "shell");
        let mem = mib(&row(&rows, "shell")[2]);
        eprintln!("{k}: the container holding 20 MB uses {mem} MiB");
        assert!(mem >= 15.0, "{k}: the shell's cgroup holds {mem} MiB");
    }
    let samples = cpu_samples(&c, "default", "shell", 3);
    eprintln!("container at 300m: {samples:?} millicores");
    let used = median(samples) / 300.0;
    assert!(
        (0.5..=1.15).contains(&used),
        "a spinning container limited to 300m used {:.0}% of it",
        used * 100.0
    );
    let s = summary(&c, KUBECTL_DEFAULT);
    let main = &pod_stats(&s, "default", "shell")["containers"][0];
    let usage = main["memory"]["usageBytes"].as_u64().unwrap_or(0);
    let ws = main["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    assert!(ws > 0 && ws <= usage, "{main}");
}
