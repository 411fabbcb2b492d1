//! The examples in examples/ build, publish and run as their README says: the hello
//! component as a Deployment, the job module as a pod that ends Succeeded, the web
//! component behind its Service answering on the ClusterIP from every pod, and the mixed
//! pod (a container sidecar and a Wasm component) answering through both.

mod common;

use std::time::Duration;

use common::{Cluster, Registry, KUBECTL_DEFAULT};

#[test]
fn examples_run() {
    let reg = Registry::start();
    let hello = common::build_guest("examples/Cargo.toml", "hello", "wasm32-wasip2");
    let job = common::build_guest("examples/Cargo.toml", "job", "wasm32-wasip1");
    reg.push(&hello, "examples/hello:v1");
    reg.push(&job, "examples/job:v1");
    let web = common::build_guest("examples/Cargo.toml", "web", "wasm32-wasip2");
    reg.push(&web, "examples/web:v1");
    let mixed = common::build_guest("examples/Cargo.toml", "mixed", "wasm32-wasip2");
    reg.push(&mixed, "examples/mixed:v1");
    reg.push_busybox("examples/busybox:v1");
    let c = Cluster::with_agent("examples-node", &[]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    // The manifests name the registry scripts/up runs; point them at this test's.
    for file in [
        "hello/app.yaml",
        "job/pod.yaml",
        "web/app.yaml",
        "mixed/app.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(file))
            .expect("example manifest")
            .replace("127.0.0.1:5000", &reg.addr);
        let out = c.apply_stdin(KUBECTL_DEFAULT, &["apply", "-f", "-"], &text);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "rollout",
            "status",
            "-n",
            "hello",
            "deployment/hello",
            "--timeout=90s",
        ],
    );
    c.wait_for_output(
        &[
            "get",
            "pod",
            "-n",
            "hello",
            "primes",
            "-o",
            "jsonpath={.status.phase}",
        ],
        "Succeeded",
        Duration::from_secs(90),
    );
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "-n", "hello", "primes"]),
        "there are 78498 primes below 1000000\n"
    );
    let pods = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pods",
            "-n",
            "hello",
            "-l",
            "app=hello",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    for pod in pods.split_whitespace() {
        c.wait_for_output(
            &["logs", "-n", "hello", pod],
            &format!("hello from spindle from {pod}"),
            Duration::from_secs(30),
        );
    }

    c.ok(
        KUBECTL_DEFAULT,
        &[
            "rollout",
            "status",
            "-n",
            "web",
            "deployment/web",
            "--timeout=90s",
        ],
    );
    let ip = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "svc",
            "-n",
            "web",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let mut seen = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "http://{ip}/ answered only from {seen:?}"
        );
        let out = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "5", &format!("http://{ip}/")])
            .output()
            .expect("curl");
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(pod) = body
            .strip_prefix("hello from ")
            .and_then(|r| r.split_whitespace().next())
        {
            seen.insert(pod.to_string());
        }
    }

    // The mixed pods: the Wasm component answers with the file its container sidecar
    // serves on the pod's localhost.
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "rollout",
            "status",
            "-n",
            "mixed",
            "deployment/mixed",
            "--timeout=90s",
        ],
    );
    let ip = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "svc",
            "-n",
            "mixed",
            "mixed",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let out = std::process::Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            "--retry",
            "10",
            "--retry-all-errors",
            &format!("http://{ip}/hello.txt"),
        ])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.starts_with("/hello.txt from the files sidecar of mixed-")
            && body.contains("(14 words):\nContainers and Wasm components share this pod"),
        "{body:?}"
    );
}
