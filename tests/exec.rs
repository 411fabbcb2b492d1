//! `kubectl exec` into Wasm containers and `kubectl port-forward` to Wasm pods, through
//! the API server to the agent, with the default kubectl (WebSocket) and kubectl 1.27
//! (SPDY).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kubectls, Cluster, LineReader, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(120);

fn wait_running(c: &Cluster, pod: &str) {
    c.wait_for_output(
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
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
        let out = c.apply_stdin(
            k,
            &["exec", "-i", "box", "-c", "main", "--", "testbox", "cat"],
            "x\ny\n",
        );
        assert!(out.status.success(), "{k}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x\ny\n", "{k}");
        // A container that does not exist.
        let err = c.fails(k, &["exec", "box", "-c", "nope", "--", "testbox", "echo"]);
        assert!(err.contains("nope"), "{k}: {err}");
    }
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
            let remote = if target == "pod/web" { "8080" } else { "80" };
            // kubectl picks a free local port itself and says which: no port chosen
            // beforehand that another process could take meanwhile.
            let forward = LineReader::spawn(
                c.kubectl_cmd(k, &["port-forward", target, &format!(":{remote}")]),
            );
            let port = forwarded_port(&forward.wait_for("Forwarding from 127.0.0.1:", WAIT));
            for _ in 0..3 {
                assert_eq!(
                    curl_until(&format!("http://127.0.0.1:{port}/env/POD_NAME")),
                    "web",
                    "{k} {target}"
                );
            }
        }
    }
}

/// The local port of kubectl port-forward's `Forwarding from 127.0.0.1:PORT -> REMOTE`.
fn forwarded_port(lines: &[String]) -> u16 {
    let line = lines.last().expect("a line");
    line.split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// What a stalled `kubectl exec` client got in the end.
struct SlowRead {
    bytes: u64,
    status: std::process::ExitStatus,
    stderr: String,
    /// How much the server's RSS grew at most while it streamed, in MiB.
    rss_growth_mib: u64,
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `kubectl exec` reading nothing of its stdout for `pause` (a client that stalls,
/// as a pipe into a busy program does: kubectl then blocks on its own stdout), then
/// everything, sampling the server's RSS all along.
fn read_slowly(c: &Cluster, k: &str, args: &[&str], pause: Duration) -> SlowRead {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let pid = c.child.as_ref().expect("server running").id();
    let base = vm_rss_kib(pid);
    let (done, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(base)),
    );
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(vm_rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let inner = c.kubectl_cmd(k, args);
    let mut child = Command::new("timeout")
        .arg("120")
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec");
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // The stall itself (not a synchronisation): the agent must hold the command back
    // meanwhile rather than cut the session or queue its output.
    std::thread::sleep(pause);
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 256 << 10];
    let mut bytes = 0u64;
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes += n as u64,
        }
    }
    let status = child.wait().expect("wait kubectl");
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    println!(
        "server VmRSS {} MiB before, {} MiB at most while streaming",
        base / 1024,
        peak.load(Ordering::Relaxed) / 1024
    );
    SlowRead {
        bytes,
        status,
        stderr: stderr.join().expect("stderr reader"),
        rss_growth_mib: peak.load(Ordering::Relaxed).saturating_sub(base) / 1024,
    }
}

/// `kubectl exec` (and so `kubectl cp`, tar over exec) of a command that writes faster
/// than its client reads: the client gets every byte, because the command is held
/// back (its writes block, as on the kubelet's pipes) rather than its session cut or
/// its output queued in the server's memory. Containerd and Wasm, both kubectls.
#[test]
fn exec_output_waits_for_a_slow_client() {
    let reg = Registry::start();
    let wasm = reg.push(&common::testbox("wasm32-wasip2"), "tests/testbox:p2");
    let busybox = reg.push_busybox("tests/busybox:slow");
    let c = Cluster::with_agent("slow-exec-node", &[]);
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ctr}}
spec:
  containers:
  - name: main
    image: {busybox}
    command: [sh, -c, "trap 'exit 0' TERM; sleep 3600 & wait"]
---
apiVersion: v1
kind: Pod
metadata: {{name: wasm}}
spec:
  containers:
  - name: main
    image: {wasm}
    args: [sleep, "0"]
"#
    ));
    wait_running(&c, "ctr");
    wait_running(&c, "wasm");
    // 256 MiB from a container to a client that stalls for 3 s: all of it arrives, and
    // the server holds no more than its bounded queues meanwhile.
    const BIG: u64 = 256 << 20;
    let head = format!("head -c {BIG} /dev/zero");
    let r = read_slowly(
        &c,
        KUBECTL_DEFAULT,
        &["exec", "ctr", "--", "sh", "-c", &head],
        Duration::from_secs(3),
    );
    assert!(r.status.success(), "{}: {}", r.status, r.stderr);
    assert_eq!(r.bytes, BIG, "{}", r.stderr);
    println!(
        "256 MiB to a stalled client: server RSS grew {} MiB",
        r.rss_growth_mib
    );
    assert!(
        r.rss_growth_mib < 100,
        "server RSS grew {} MiB while streaming",
        r.rss_growth_mib
    );
    // SPDY (kubectl 1.27) too, with less data.
    let small = format!("head -c {} /dev/zero", 32 << 20);
    let r = read_slowly(
        &c,
        common::KUBECTL_OLDEST,
        &["exec", "ctr", "--", "sh", "-c", &small],
        Duration::from_secs(2),
    );
    assert!(r.status.success(), "{}: {}", r.status, r.stderr);
    assert_eq!(r.bytes, 32 << 20, "{}", r.stderr);
    // A Wasm guest: one message per line (it flushes each), far more than the queue.
    const LINES: u64 = 200_000;
    let want: u64 = (1..=LINES)
        .map(|i| format!("line {i}\n").len() as u64)
        .sum();
    for k in kubectls() {
        let r = read_slowly(
            &c,
            k,
            &["exec", "wasm", "--", "testbox", "seq", &LINES.to_string()],
            Duration::from_secs(2),
        );
        assert!(r.status.success(), "{k}: {}: {}", r.status, r.stderr);
        assert_eq!(r.bytes, want, "{k}: {}", r.stderr);
    }
    // The server still answers.
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["exec", "ctr", "--", "echo", "ok"]),
        "ok\n"
    );
}
