//! `kubectl exec` into Wasm containers and `kubectl port-forward` to Wasm pods, through
//! the API server to the agent, with the default kubectl (WebSocket) and kubectl 1.27
//! (SPDY).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kubectls, Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(120);

fn wait_running(c: &Cluster, pod: &str) {
    c.wait_for_output(
        &[
            "get",
            "pod",
            pod,
            "-o",
            r#"jsonpath={.status.containerStatuses[0].state.running.startedAt}{.status.phase}"#,
        ],
        "Running",
        WAIT,
    );
}

#[test]
fn exec_runs_commands_in_wasm_containers() {
    let reg = Registry::start();
    let p2 = reg.push(&common::testbox("wasm32-wasip2"), "tests/testbox:p2");
    let p1 = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("exec-node", &[]);
    c.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: files}}
data: {{greeting: "hello from a volume"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: box}}
spec:
  containers:
  - name: main
    image: {p2}
    args: [sleep, "0"]
    env: [{{name: COLOR, value: blue}}]
    volumeMounts: [{{name: files, mountPath: /files}}]
  - name: side
    image: {p1}
    args: [sleep, "0"]
  volumes: [{{name: files, configMap: {{name: files}}}}]
"#
    ));
    c.wait_for_output(
        &["get", "pod", "box", "-o", "jsonpath={.status.phase}"],
        "Running",
        WAIT,
    );
    for k in kubectls() {
        // Output, env and volumes of the container.
        assert_eq!(
            c.ok(
                k,
                &["exec", "box", "-c", "main", "--", "testbox", "echo", "hi", "there"]
            ),
            "hi there\n",
            "{k}"
        );
        assert_eq!(
            c.ok(
                k,
                &["exec", "box", "-c", "main", "--", "testbox", "env", "COLOR"]
            ),
            "COLOR=blue\n"
        );
        assert_eq!(
            c.ok(
                k,
                &[
                    "exec",
                    "box",
                    "-c",
                    "main",
                    "--",
                    "testbox",
                    "cat",
                    "/files/greeting"
                ]
            ),
            "hello from a volume"
        );
        // A p1 module too, and stderr apart from stdout.
        let out = c.kubectl(
            k,
            &[
                "exec", "box", "-c", "side", "--", "testbox", "stderr", "oops",
            ],
        );
        assert!(out.status.success(), "{k}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n", "{k}");
        assert!(out.stdout.is_empty());
        // The exit code comes back (from a p1 module: WASI p2's exit carries only
        // success or failure, so a component's non-zero code is 1).
        let out = c.kubectl(
            k,
            &["exec", "box", "-c", "side", "--", "testbox", "exit", "3"],
        );
        assert_eq!(out.status.code(), Some(3), "{k}: {out:?}");
        let out = c.kubectl(
            k,
            &["exec", "box", "-c", "main", "--", "testbox", "exit", "3"],
        );
        assert_eq!(out.status.code(), Some(1), "{k}: {out:?}");
        let out = c.kubectl(
            k,
            &["exec", "box", "-c", "main", "--", "testbox", "exit", "0"],
        );
        assert_eq!(out.status.code(), Some(0), "{k}: {out:?}");
        // stdin.
        let mut child = c
            .kubectl_cmd(
                k,
                &["exec", "-i", "box", "-c", "main", "--", "testbox", "cat"],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl exec -i");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"x\ny\n")
            .expect("write stdin");
        let out = child.wait_with_output().expect("kubectl exec -i");
        assert!(out.status.success(), "{k}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x\ny\n", "{k}");
        // A container that does not exist.
        let err = c.fails(k, &["exec", "box", "-c", "nope", "--", "testbox", "echo"]);
        assert!(err.contains("nope"), "{k}: {err}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn curl_until(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "5", url])
            .output()
            .expect("curl");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Runs kubectl port-forward until dropped.
struct Forward(std::process::Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn port_forward_reaches_pods_and_services() {
    let reg = Registry::start();
    let image = reg.push(
        &common::build_guest(
            "runtime/spindle-wasm/tests/guests/http-hello/Cargo.toml",
            "http-hello",
            "wasm32-wasip2",
        ),
        "tests/http-hello:v1",
    );
    let c = Cluster::with_agent("pf-node", &[]);
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  containers:
  - name: web
    image: {image}
    ports: [{{containerPort: 8080}}]
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    readinessProbe:
      exec: {{command: [http-hello, connect, "127.0.0.1:8080"]}}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    ));
    // The exec readiness probe (a new instance in the pod's network, connecting to the
    // served port) makes the pod Ready.
    c.wait_for_output(
        &[
            "get",
            "pod",
            "web",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ],
        "True",
        WAIT,
    );
    for k in kubectls() {
        for target in ["pod/web", "svc/web"] {
            let port = free_port();
            let remote = if target == "pod/web" { "8080" } else { "80" };
            let child = c
                .kubectl_cmd(k, &["port-forward", target, &format!("{port}:{remote}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("kubectl port-forward");
            let _guard = Forward(child);
            for _ in 0..3 {
                assert_eq!(
                    curl_until(&format!("http://127.0.0.1:{port}/env/POD_NAME")),
                    "web",
                    "{k} {target}"
                );
            }
        }
    }
    let _ = wait_running;
    let _ = KUBECTL_DEFAULT;
}
