//! The examples in examples/ build, publish and run as their README says: the hello
//! component as a Deployment, the job module as a pod that ends Succeeded, as an Indexed
//! Job whose every index logs its slice and as a CronJob that starts Jobs, the web
//! component behind its Service answering on the ClusterIP from every pod, and the mixed
//! pod (a container sidecar and a Wasm component) answering through both, and the counter
//! StatefulSet keeping its count on its claims across a pod's deletion.

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
    let counter = common::build_guest("examples/Cargo.toml", "counter", "wasm32-wasip2");
    reg.push(&counter, "examples/counter:v1");
    reg.push_busybox("examples/busybox:v1");
    let c = Cluster::with_agent("examples-node", &[]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    // The manifests name the registry scripts/up runs; point them at this test's.
    for file in [
        "hello/app.yaml",
        "job/pod.yaml",
        "job/indexed-job.yaml",
        "job/cronjob.yaml",
        "web/app.yaml",
        "mixed/app.yaml",
        "counter/app.yaml",
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

    counter_keeps_its_count(&c);

    // Last: the CronJob waits for a minute boundary, and the hello pods' logs above
    // are checked before their heartbeats start.
    indexed_job_and_cronjob(&c);
}

/// The counter StatefulSet: its pods count on POST and keep the count on their claims,
/// so a deleted pod comes back under its name with its count.
fn counter_keeps_its_count(c: &Cluster) {
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "rollout",
            "status",
            "-n",
            "counter",
            "statefulset/counter",
            "--timeout=180s",
        ],
    );
    let curl = |method: &str, ip: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "5",
                "--retry",
                "10",
                "--retry-all-errors",
            ])
            .args(["-X", method, &format!("http://{ip}:8080/")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ip = |pod: &str| {
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pod",
                "-n",
                "counter",
                pod,
                "-o",
                "jsonpath={.status.podIP}",
            ],
        )
    };
    let first = ip("counter-0");
    assert_eq!(curl("POST", &first), "counter-0: 1\n");
    assert_eq!(curl("POST", &first), "counter-0: 2\n");
    assert_eq!(curl("GET", &ip("counter-1")), "counter-1: 0\n");
    let uid = |pod: &str| {
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pod",
                "-n",
                "counter",
                pod,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        )
    };
    let old = uid("counter-0");
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "delete",
            "pod",
            "-n",
            "counter",
            "counter-0",
            "--wait=true",
            "--timeout=60s",
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ready = c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pods",
                "-n",
                "counter",
                "-o",
                "jsonpath={range .items[?(@.metadata.name==\"counter-0\")]}{.metadata.uid} {.status.conditions[?(@.type==\"Ready\")].status}{end}",
            ],
        );
        if ready.ends_with(" True") && !ready.starts_with(&old) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counter-0 did not come back Ready: {ready:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(curl("GET", &ip("counter-0")), "counter-0: 2\n");
}

/// The Indexed Job completes, each index having logged its own slice once, the slices
/// adding up to the primes below a million; the CronJob starts a Job of its own.
fn indexed_job_and_cronjob(c: &Cluster) {
    let k = |args: &[&str]| c.ok(KUBECTL_DEFAULT, args);
    k(&[
        "wait",
        "-n",
        "hello",
        "--for=condition=complete",
        "job/primes-indexed",
        "--timeout=180s",
    ]);
    let pods = k(&[
        "get",
        "pods",
        "-n",
        "hello",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}|{.metadata.ownerReferences[0].name}|{.status.phase}{\"\\n\"}{end}",
    ]);
    let mut slices = Vec::new();
    for line in pods.lines() {
        let parts: Vec<&str> = line.split('|').collect();
        if parts.get(1) != Some(&"primes-indexed") || parts.get(2) != Some(&"Succeeded") {
            continue;
        }
        let log = k(&["logs", "-n", "hello", parts[0]]);
        // "index 3: 7863 primes in [300000, 400000)"
        let parsed = log.trim().strip_prefix("index ").and_then(|r| {
            let (i, r) = r.split_once(": ")?;
            let (n, r) = r.split_once(" primes in [")?;
            let (lo, hi) = r.strip_suffix(')')?.split_once(", ")?;
            Some((
                i.parse::<u64>().ok()?,
                n.parse::<u64>().ok()?,
                lo.parse::<u64>().ok()?,
                hi.parse::<u64>().ok()?,
            ))
        });
        slices.push(parsed.unwrap_or_else(|| panic!("pod {}: unexpected log {log:?}", parts[0])));
    }
    slices.sort();
    let indexes: Vec<u64> = slices.iter().map(|s| s.0).collect();
    assert_eq!(
        indexes,
        (0..10).collect::<Vec<_>>(),
        "every index once: {slices:?}"
    );
    for (i, _, lo, hi) in &slices {
        assert_eq!((*lo, *hi), (i * 100_000, (i + 1) * 100_000), "{slices:?}");
    }
    assert_eq!(
        slices.iter().map(|s| s.1).sum::<u64>(),
        78_498,
        "{slices:?}"
    );

    // The CronJob: at the next minute its controller creates a Job it owns, named after
    // the scheduled minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let job = loop {
        let jobs = k(&[
            "get",
            "jobs",
            "-n",
            "hello",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}|{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}{\"\\n\"}{end}",
        ]);
        let found = jobs.lines().find_map(|l| {
            let (name, owner) = l.split_once('|')?;
            (owner == "CronJob/primes-every-minute").then(|| name.to_string())
        });
        if let Some(j) = found {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CronJob made no Job: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let minutes = job.strip_prefix("primes-every-minute-").unwrap_or("");
    assert!(
        !minutes.is_empty() && minutes.bytes().all(|b| b.is_ascii_digit()),
        "{job}"
    );
    k(&[
        "wait",
        "-n",
        "hello",
        "--for=condition=complete",
        &format!("job/{job}"),
        "--timeout=120s",
    ]);
}
