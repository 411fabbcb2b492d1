//! CPU limits of Wasm pods, alone in their test binary: they measure time, and the
//! other Wasm pod tests would compete with them for the machine's cores. Times are
//! compared as ratios within a round, the median of several rounds.

mod common;

use std::time::Duration;

use common::{Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(90);

/// A pod of the test guest spinning `n` iterations, with an optional CPU limit.
fn spinner(name: &str, image: &str, n: &str, cpu: Option<&str>) -> String {
    let resources = cpu
        .map(|cpu| format!("    resources:\n      limits: {{cpu: \"{cpu}\", memory: 64Mi}}\n"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    args: ["spin", "{n}"]
{resources}"#
    )
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[test]
fn cpu_limit_throttles_a_pod_but_not_its_neighbour() {
    let reg = Registry::start();
    let p1 = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("cpu-node", &[]);
    // The guest's own measure of its run: "spin N took T ms (x)".
    let spin_ms = |pod: &str| -> f64 {
        c.wait_pod_field(pod, "{.status.phase}", "Succeeded", WAIT);
        let out = c.ok(KUBECTL_DEFAULT, &["logs", pod]);
        out.split_whitespace()
            .nth(3)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no time in {out:?}"))
    };
    // The same CPU-bound work: alone with a full core, then at 100m beside an unlimited
    // neighbour that must not be slowed.
    let n = "200000000";
    let (mut tenth_ratios, mut neighbour_ratios) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (full, tenth, neighbour) = (
            format!("full-{round}"),
            format!("tenth-{round}"),
            format!("neighbour-{round}"),
        );
        c.apply(&spinner(&full, &p1, n, Some("1")));
        let full_ms = spin_ms(&full);
        c.apply(&spinner(&tenth, &p1, n, Some("100m")));
        c.apply(&spinner(&neighbour, &p1, n, None));
        let (tenth_ms, neighbour_ms) = (spin_ms(&tenth), spin_ms(&neighbour));
        eprintln!(
            "cpu: 1 core {full_ms} ms, 100m {tenth_ms} ms, unlimited beside it {neighbour_ms} ms"
        );
        tenth_ratios.push(tenth_ms / full_ms);
        neighbour_ratios.push(neighbour_ms / full_ms);
    }
    let (tenth, neighbour) = (median(tenth_ratios), median(neighbour_ratios));
    // A tenth of a core takes about ten times as long.
    assert!(
        tenth >= 4.0,
        "100m took only {tenth:.1}× as long as a full core"
    );
    // A neighbour starved by the throttled pod would take about as long as it does.
    assert!(
        neighbour < 3.0,
        "the unlimited neighbour of a 100m pod took {neighbour:.1}× as long as alone"
    );
}
