//! Containers through containerd and runc beside Wasm: container pods, mixed pods that
//! share volumes and localhost, exec (with stdin and a TTY), memory limits, Services,
//! and clean removal. Real server and agent (its private containerd), real
//! docker-registry, an image built from busybox-static with umoci and skopeo, kubectl.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{kubectls, output_within, Cluster, Registry, KUBECTL_DEFAULT, KUBECTL_LIMIT};

const WAIT: Duration = Duration::from_secs(90);

fn jsonpath(c: &Cluster, pod: &str, path: &str) -> String {
    c.ok(
        KUBECTL_DEFAULT,
        &["get", "pod", pod, "-o", &format!("jsonpath={path}")],
    )
    .trim()
    .to_string()
}

fn wait_phase(c: &Cluster, pod: &str, phase: &str) {
    c.wait_for_output(
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
        phase,
        WAIT,
    );
}

/// containerd's own view, through its `ctr` client.
fn ctr(c: &Cluster, args: &[&str]) -> String {
    let sock = c.data_dir().join("agent/containerd/containerd.sock");
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&sock)
        .args(["-n", "spindle"])
        .args(args)
        .output()
        .expect("run ctr");
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn curl(url: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", url])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn curl_eventually(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match curl(url) {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!("GET {url}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn pod(name: &str, image: &str, restart: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
{extra}"#
    )
}

#[test]
fn container_pods_run_exec_limit_and_leave_nothing_behind() {
    let reg = Registry::start();
    let image = reg.push_busybox("tests/busybox:v1");
    let c = Cluster::with_agent("ctr-node", &[]);
    let runtimes = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "node",
            "ctr-node",
            "-o",
            "jsonpath={.metadata.labels}",
        ],
    );
    assert!(
        runtimes.contains(r#""spindle.dev/runtimes":"wasm.containerd""#)
            && runtimes.contains(r#""runtime.spindle.dev/containerd":"true""#),
        "{runtimes}"
    );

    // Logs, exit codes and the pod's hostname.
    c.apply(&pod(
        "hello",
        &image,
        "Never",
        "echo hello from busybox; hostname; cat /etc/hostname",
        "",
    ));
    c.apply(&pod(
        "fail",
        &image,
        "Never",
        "echo failing >&2; exit 3",
        "",
    ));
    wait_phase(&c, "hello", "Succeeded");
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "hello"]),
        "hello from busybox\nhello\nhello\n"
    );
    assert_eq!(
        jsonpath(
            &c,
            "hello",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    assert!(
        jsonpath(&c, "hello", "{.status.containerStatuses[0].containerID}")
            .starts_with("containerd://")
    );
    wait_phase(&c, "fail", "Failed");
    assert_eq!(
        jsonpath(
            &c,
            "fail",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "3"
    );
    assert_eq!(c.ok(KUBECTL_DEFAULT, &["logs", "fail"]), "failing\n");

    // A memory bomb under 32Mi ends OOMKilled.
    c.apply(&pod(
        "bomb",
        &image,
        "Never",
        "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
        "    resources:\n      limits:\n        memory: 32Mi\n",
    ));
    wait_phase(&c, "bomb", "Failed");
    assert_eq!(
        jsonpath(
            &c,
            "bomb",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "OOMKilled"
    );
    assert_eq!(
        jsonpath(
            &c,
            "bomb",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "137"
    );

    // Init containers run first, in order, and share volumes with the main container.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: init
spec:
  restartPolicy: Never
  volumes:
  - {{name: work, emptyDir: {{}}}}
  initContainers:
  - name: first
    image: {image}
    command: ["sh", "-c", "echo one > /work/msg"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: second
    image: {image}
    command: ["sh", "-c", "echo two >> /work/msg"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: {image}
    command: ["cat", "/work/msg"]
    volumeMounts: [{{name: work, mountPath: /work}}]
"#
    ));
    wait_phase(&c, "init", "Succeeded");
    assert_eq!(c.ok(KUBECTL_DEFAULT, &["logs", "init"]), "one\ntwo\n");

    // exec: a file, stdin, exit codes and a TTY, with the oldest and newest kubectl; an
    // exec readiness probe.
    c.apply(&pod(
        "box",
        &image,
        "Always",
        "echo exec-file > /tmp/f; trap 'exit 0' TERM; sleep 3600 & wait",
        "    readinessProbe:\n      exec:\n        command: [cat, /tmp/f]\n      periodSeconds: 1\n",
    ));
    wait_phase(&c, "box", "Running");
    c.wait_for_output(
        &[
            "get",
            "pod",
            "box",
            "-o",
            "jsonpath={.status.containerStatuses[0].ready}",
        ],
        "true",
        WAIT,
    );
    for k in kubectls() {
        assert_eq!(
            c.ok(k, &["exec", "box", "--", "cat", "/tmp/f"]),
            "exec-file\n",
            "{k}"
        );
        let out = c.apply_stdin(k, &["exec", "-i", "box", "--", "cat"], "x\n");
        assert!(out.status.success(), "{k}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n", "{k}");
        let out = c.kubectl(k, &["exec", "box", "--", "sh", "-c", "exit 7"]);
        assert_eq!(out.status.code(), Some(7), "{k}: {out:?}");
        // kubectl gives a TTY only when its own stdin is a terminal: run it under one.
        let cmd = format!(
            "{k} --kubeconfig {} exec -it box -- sh -c 'tty; stty size'",
            c.kubeconfig().display()
        );
        let out = output_within(
            Command::new("script").args(["-qec", &cmd, "/dev/null"]),
            None,
            KUBECTL_LIMIT,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("/dev/pts/"), "{k}: no TTY: {text:?}");
    }
    // attach: the container's output and, with -i, its stdin.
    for (i, k) in kubectls().into_iter().enumerate() {
        let name = format!("talk{i}");
        c.apply(&pod(
            &name,
            &image,
            "Never",
            "read line; echo got:$line",
            "    stdin: true\n    stdinOnce: true\n",
        ));
        wait_phase(&c, &name, "Running");
        let out = c.apply_stdin(k, &["attach", "-i", &name, "-c", "main"], "hello\n");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("got:hello"),
            "{k}: {out:?}"
        );
        wait_phase(&c, &name, "Succeeded");
    }

    // Exec into a container that is not there.
    let err = c.fails(
        KUBECTL_DEFAULT,
        &["exec", "box", "-c", "nope", "--", "true"],
    );
    assert!(err.contains("nope"), "{err}");

    // Deleting the pods leaves no task, container, snapshot, mount or netns (the agent
    // removes them as it finishes each pod, as a kubelet does).
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "delete",
            "pod",
            "hello",
            "fail",
            "bomb",
            "box",
            "init",
            "talk0",
            "talk1",
            "--wait=true",
        ],
    );
    let state = c.data_dir().join("agent/containerd/state");
    let pods_dir = c.data_dir().join("agent/pods");
    let leftovers = || {
        let mut left = Vec::new();
        for (what, args) in [
            ("task", &["tasks", "ls", "-q"]),
            ("container", &["containers", "ls", "-q"]),
        ] {
            left.extend(ctr(&c, args).lines().map(|l| format!("{what} {l}")));
        }
        left.extend(
            ctr(&c, &["snapshots", "ls"])
                .lines()
                .filter(|l| l.contains("Active"))
                .map(|l| format!("snapshot {l}")),
        );
        left.extend(
            mounts_under(&state)
                .into_iter()
                .map(|m| format!("mount {m}")),
        );
        left.extend(
            mounts_under(&pods_dir.join(""))
                .into_iter()
                .map(|m| format!("mount {m}")),
        );
        left.extend(c.net.live_netns().into_iter().map(|n| format!("netns {n}")));
        left
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut left = leftovers();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = leftovers();
    }
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// An image whose config sets no PATH (as images built from scratch often do) still
/// runs a command named without its directory, and takes execs so named: the process
/// gets containerd's default PATH, as under containerd's CRI.
#[test]
fn images_without_path_get_the_default_path() {
    let reg = Registry::start();
    let image = reg.push_busybox_without_path("tests/busybox-nopath:v1");
    let c = Cluster::with_agent("nopath-node", &[]);
    c.apply(&pod(
        "nopath",
        &image,
        "Never",
        "echo \"PATH=$PATH\"; exec sleep 3600",
        "",
    ));
    wait_phase(&c, "nopath", "Running");
    let default = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let deadline = Instant::now() + WAIT;
    while c.ok(KUBECTL_DEFAULT, &["logs", "nopath"]).trim() != default {
        assert!(
            Instant::now() < deadline,
            "logs: {:?}; events: {}",
            c.ok(KUBECTL_DEFAULT, &["logs", "nopath"]),
            c.ok(KUBECTL_DEFAULT, &["get", "events"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        c.ok(
            KUBECTL_DEFAULT,
            &["exec", "nopath", "--", "cat", "/etc/hostname"]
        ),
        "nopath\n"
    );
    assert_eq!(
        c.ok(
            KUBECTL_DEFAULT,
            &["exec", "nopath", "--", "sh", "-c", "echo $PATH"]
        ),
        format!("{}\n", &default["PATH=".len()..])
    );
}

#[test]
fn mixed_pods_share_volumes_and_localhost_and_services_reach_containers() {
    let reg = Registry::start();
    let image = reg.push_busybox("tests/busybox:v1");
    let testbox = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let hello = reg.push(
        &common::build_guest(
            "runtime/spindle-wasm/tests/guests/http-hello/Cargo.toml",
            "http-hello",
            "wasm32-wasip2",
        ),
        "tests/http-hello:v1",
    );
    let c = Cluster::with_agent("mixed-node", &[]);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: mixed
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 3
  volumes:
  - name: shared
    emptyDir: {{}}
  containers:
  - name: files
    image: {image}
    command: ["sh", "-c", "echo from-the-container > /shared/msg; echo '<p>served by busybox</p>' > /shared/index.html; exec httpd -f -p 8000 -h /shared"]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
  - name: reader
    image: {testbox}
    args: ["waitcat", "/shared/msg"]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
  - name: web
    image: {hello}
    ports:
    - containerPort: 8080
"#
    ));
    c.wait_for_output(
        &[
            "get",
            "pod",
            "mixed",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"reader\")].state.terminated.reason}",
        ],
        "Completed",
        WAIT,
    );
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "mixed", "-c", "reader"]),
        "from-the-container\n"
    );
    c.wait_for_output(
        &[
            "get",
            "pod",
            "mixed",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"web\")].ready}",
        ],
        "true",
        WAIT,
    );
    let ip = jsonpath(&c, "mixed", "{.status.podIP}");
    // The Wasm component fetches from the container over the pod's localhost.
    let body = curl_eventually(&format!("http://{ip}:8080/fetch/127.0.0.1:8000/index.html"));
    assert!(body.contains("served by busybox"), "{body}");

    // A Deployment of containers behind a ClusterIP Service.
    c.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: files
spec:
  replicas: 2
  selector:
    matchLabels: {{app: files}}
  template:
    metadata:
      labels: {{app: files}}
    spec:
      terminationGracePeriodSeconds: 3
      containers:
      - name: httpd
        image: {image}
        command: ["sh", "-c", "hostname > /www/index.html; exec httpd -f -p 80 -h /www"]
        ports:
        - containerPort: 80
        readinessProbe:
          tcpSocket: {{port: 80}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: files
spec:
  selector: {{app: files}}
  ports:
  - port: 8081
    targetPort: 80
"#
    ));
    c.ok(
        KUBECTL_DEFAULT,
        &["rollout", "status", "deployment/files", "--timeout=90s"],
    );
    let vip = c.ok(
        KUBECTL_DEFAULT,
        &["get", "svc", "files", "-o", "jsonpath={.spec.clusterIP}"],
    );
    let names = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pods",
            "-l",
            "app=files",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 2 && Instant::now() < deadline {
        let body = curl_eventually(&format!("http://{}:8081/", vip.trim()));
        let host = body.trim().to_string();
        assert!(
            names.split_whitespace().any(|n| n == host),
            "{host} not in {names}"
        );
        seen.insert(host);
    }
    assert_eq!(seen.len(), 2, "the Service reached only {seen:?}");

    // A pod asking for runc on a node without containerd could not be placed; this
    // node has it, so the pod runs.
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: classy\nspec:\n  runtimeClassName: runc\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {image}\n    command: [\"true\"]\n"
    ));
    wait_phase(&c, "classy", "Succeeded");
    // A Wasm image under runtimeClassName runc is refused with a reason.
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: misclassed\nspec:\n  runtimeClassName: runc\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: {testbox}\n"
    ));
    c.wait_for_output(
        &[
            "get",
            "pod",
            "misclassed",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        "CreateContainerError",
        WAIT,
    );
    let msg = jsonpath(
        &c,
        "misclassed",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(msg.contains("is a Wasm artifact"), "{msg}");
}
