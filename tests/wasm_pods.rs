//! Wasm pods end to end: a real registry (docker-registry), `spindle push` of the test
//! guest, `spindle server` with its embedded agent, and kubectl.

mod common;

use std::time::{Duration, Instant};

use common::{kubectls, Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(90);

fn phase(c: &Cluster, pod: &str) -> String {
    c.ok(
        KUBECTL_DEFAULT,
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
    )
}

fn wait_phase(c: &Cluster, pod: &str, want: &str) {
    c.wait_for_output(
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
        want,
        WAIT,
    );
}

/// One Event about a pod, as `kubectl get events` returns it.
#[derive(Debug)]
struct Event {
    type_: String,
    reason: String,
    message: String,
}

/// The Events whose involvedObject is `pod` (the Event objects, not `describe`'s text,
/// which also prints conditions and container states of similar names).
fn events(c: &Cluster, pod: &str) -> Vec<Event> {
    let out = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=Pod,involvedObject.name={pod}"),
            "-o",
            "json",
        ],
    );
    let list: serde_json::Value = serde_json::from_str(&out).expect("event list");
    let field = |e: &serde_json::Value, f: &str| e[f].as_str().unwrap_or_default().to_string();
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {out}"))
        .iter()
        .map(|e| Event {
            type_: field(e, "type"),
            reason: field(e, "reason"),
            message: field(e, "message"),
        })
        .collect()
}

/// Waits for an Event about `pod` with this type and reason whose message `fits`;
/// returns its message. Agents publish events off the start path, so they may lag.
fn wait_event(
    c: &Cluster,
    pod: &str,
    type_: &str,
    reason: &str,
    fits: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = events(c, pod);
        if let Some(e) = seen
            .iter()
            .find(|e| e.type_ == type_ && e.reason == reason && fits(&e.message))
        {
            return e.message.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {type_} {reason} event that fits about {pod}; events: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The container's waiting reason and message once the reason is one of `reasons`.
fn wait_waiting(c: &Cluster, pod: &str, reasons: &[&str]) -> (String, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}",
            ],
        );
        let (reason, message) = out.split_once('|').unwrap_or(("", ""));
        if reasons.contains(&reason) {
            return (reason.to_string(), message.to_string());
        }
        assert!(
            Instant::now() < deadline,
            "{pod} never waited with {reasons:?}: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A single-container pod running the test guest with `args`.
fn pod(name: &str, image: &str, policy: &str, args: &[&str], extra_container: &str) -> String {
    let args = serde_json::to_string(args).expect("json");
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: {image}
    args: {args}
{extra_container}
"#
    )
}

#[test]
fn p1_and_p2_pods_log_and_finish() {
    let reg = Registry::start();
    let p1 = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let p2 = reg.push(&common::testbox("wasm32-wasip2"), "tests/testbox:p2");
    let c = Cluster::with_agent("wasm-node", &["--disable-containerd"]);

    c.apply(&pod(
        "hello-p1",
        &p1,
        "Never",
        &["echo", "hello from p1"],
        "",
    ));
    c.apply(&pod(
        "hello-p2",
        &p2,
        "Never",
        &["echo", "hello from p2"],
        "",
    ));
    c.apply(&pod("exit-3", &p1, "Never", &["exit", "3"], ""));
    c.apply(&pod("argv", &p2, "Never", &[], ""));
    wait_phase(&c, "hello-p1", "Succeeded");
    wait_phase(&c, "hello-p2", "Succeeded");
    wait_phase(&c, "exit-3", "Failed");
    wait_phase(&c, "argv", "Succeeded");
    for k in kubectls() {
        assert_eq!(c.ok(k, &["logs", "hello-p1"]), "hello from p1\n");
        assert_eq!(c.ok(k, &["logs", "hello-p2"]), "hello from p2\n");
    }
    // With no command, argv[0] is the image name, as for a process.
    assert_eq!(c.ok(KUBECTL_DEFAULT, &["logs", "argv"]).trim(), p2);
    let code = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pod",
            "exit-3",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}",
        ],
    );
    assert_eq!(code, "3 Error");
    let done = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pod",
            "hello-p2",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason} {.status.conditions[?(@.type==\"Ready\")].reason}",
        ],
    );
    assert_eq!(done, "Completed PodCompleted");
    // The events of a pod's life, as the kubelet records them. hello-p1 is the first
    // pod of its image, so it pulls it.
    let normal = |reason: &str, fits: &dyn Fn(&str) -> bool| {
        wait_event(&c, "hello-p1", "Normal", reason, fits);
    };
    normal("Scheduled", &|m| {
        m == "Successfully assigned default/hello-p1 to wasm-node"
    });
    normal("Pulling", &|m| m == format!("Pulling image \"{p1}\""));
    normal("Pulled", &|m| {
        m.starts_with(&format!("Successfully pulled image \"{p1}\" in "))
    });
    normal("Created", &|m| m == "Created container: main");
    normal("Started", &|m| m == "Started container main");
    // --timestamps, --tail
    let ts = c.ok(KUBECTL_DEFAULT, &["logs", "hello-p1", "--timestamps"]);
    assert!(
        ts.starts_with("20") && ts.trim_end().ends_with("Z hello from p1"),
        "{ts}"
    );

    // Stopping a running container is a Killing event.
    c.apply(&pod("sleeper", &p2, "Never", &["sleep", "0"], ""));
    wait_phase(&c, "sleeper", "Running");
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pod", "sleeper", "--wait=false"],
    );
    wait_event(&c, "sleeper", "Normal", "Killing", |m| {
        m == "Stopping container main"
    });

    // An image that is not Wasm (a real container image, on a Wasm-only node) fails
    // with ErrImagePull and says what it holds.
    let busybox = reg.push_busybox("tests/busybox:v1");
    c.apply(&pod("not-wasm", &busybox, "Never", &[], ""));
    let (_, message) = wait_waiting(&c, "not-wasm", &["ErrImagePull", "ImagePullBackOff"]);
    let holds = format!(
        "image \"{busybox}\" holds no WebAssembly: its layers are application/vnd.oci.image.layer.v1.tar+gzip (a container image; this node runs Wasm only)"
    );
    assert!(message.contains(&holds), "{message}");
    let failed = wait_event(&c, "not-wasm", "Warning", "Failed", |m| {
        m.starts_with("Failed to pull image")
    });
    assert_eq!(
        failed,
        format!("Failed to pull image \"{busybox}\": {holds}")
    );
    wait_event(&c, "not-wasm", "Warning", "Failed", |m| {
        m == "Error: ErrImagePull"
    });
    wait_event(&c, "not-wasm", "Normal", "BackOff", |m| {
        m == format!("Back-off pulling image \"{busybox}\"")
    });

    // An image that was never pushed is a different failure, and says so.
    let missing = format!("{}/tests/nothing:v1", reg.addr);
    c.apply(&pod("missing", &missing, "Never", &[], ""));
    let (_, message) = wait_waiting(&c, "missing", &["ErrImagePull", "ImagePullBackOff"]);
    assert!(
        message.contains(&missing)
            && message.contains("not found in registry")
            && !message.contains("WebAssembly"),
        "{message}"
    );
    let failed = wait_event(&c, "missing", "Warning", "Failed", |m| {
        m.starts_with("Failed to pull image")
    });
    assert!(failed.contains("not found in registry"), "{failed}");
    // The agent reports the runtimes it has (this one is Wasm-only by flag).
    let label = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "node",
            "wasm-node",
            "-o",
            "jsonpath={.metadata.labels.spindle\\.dev/runtimes}",
        ],
    );
    assert_eq!(label, "wasm");
}

#[test]
fn crash_loop_back_off_and_previous_logs() {
    let reg = Registry::start();
    let p1 = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("crash-node", &[]);
    c.apply(&pod("crasher", &p1, "Always", &["fail", "on purpose"], ""));
    // First restart is immediate, the second after 10 s of back-off.
    c.wait_for_output(
        &[
            "get",
            "pod",
            "crasher",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        "2",
        WAIT,
    );
    c.wait_for_output(
        &[
            "get",
            "pod",
            "crasher",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        "CrashLoopBackOff",
        WAIT,
    );
    let last = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pod",
            "crasher",
            "-o",
            "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}",
        ],
    );
    assert_eq!(last, "1");
    assert_eq!(phase(&c, "crasher"), "Running");
    for k in kubectls() {
        let prev = c.ok(k, &["logs", "crasher", "--previous"]);
        assert_eq!(prev, "failing: on purpose\n");
    }
    let table = c.ok(KUBECTL_DEFAULT, &["get", "pod", "crasher"]);
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    // The BackOff event itself, not the CrashLoopBackOff state describe also prints.
    wait_event(&c, "crasher", "Warning", "BackOff", |m| {
        m.starts_with("Back-off restarting failed container main in pod crasher_default(")
    });
}

#[test]
fn env_volumes_and_init_containers() {
    let reg = Registry::start();
    let p1 = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let p2 = reg.push(&common::testbox("wasm32-wasip2"), "tests/testbox:p2");
    let c = Cluster::with_agent("vol-node", &[]);
    c.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hi there
  color: blue
"#,
    );
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: sharing
spec:
  restartPolicy: Never
  volumes:
  - name: scratch
    emptyDir: {{}}
  - name: cfg
    configMap:
      name: settings
  initContainers:
  - name: init
    image: {p1}
    args: ["write", "/work/from-init.txt", "made by init"]
    volumeMounts:
    - name: scratch
      mountPath: /work
  containers:
  - name: writer
    image: {p2}
    args: ["write", "/shared/note.txt", "written by writer"]
    volumeMounts:
    - name: scratch
      mountPath: /shared
  - name: reader
    image: {p1}
    args: ["waitcat", "/data/note.txt"]
    volumeMounts:
    - name: scratch
      mountPath: /data
  - name: init-output
    image: {p1}
    args: ["cat", "/data/from-init.txt"]
    volumeMounts:
    - name: scratch
      mountPath: /data
      readOnly: true
  - name: env
    image: {p2}
    args: ["env", "GREETING", "POD", "NS"]
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef:
          name: settings
          key: greeting
    - name: POD
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: NS
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
  - name: config-files
    image: {p1}
    args: ["ls", "/etc/config"]
    volumeMounts:
    - name: cfg
      mountPath: /etc/config
  - name: host-file
    image: {p1}
    args: ["cat", "/etc/passwd"]
"#
    );
    c.apply(&manifest);
    // A read-only mount cannot be written, and it is the mount that refuses: the same
    // write on the same kind of volume mounted read-write succeeds.
    let writer = |name: &str, read_only: bool| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  volumes:
  - name: scratch
    emptyDir: {{}}
  containers:
  - name: main
    image: {p1}
    args: ["write", "/data/x", "nope"]
    volumeMounts:
    - name: scratch
      mountPath: /data
      readOnly: {read_only}
"#
        )
    };
    c.apply(&writer("readonly", true));
    c.apply(&writer("readwrite", false));
    wait_phase(&c, "readonly", "Failed");
    wait_phase(&c, "readwrite", "Succeeded");
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "readwrite"]),
        "wrote /data/x\n"
    );
    // wasmtime-wasi refuses the write at its own permission check on the read-only
    // preopen (EPERM), before any host call; a kubelet's read-only bind mount would
    // answer EROFS.
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "readonly"]),
        "write /data/x: Operation not permitted (os error 63)\n"
    );
    // host-file fails (the host's /etc is not there), so the pod ends Failed.
    wait_phase(&c, "sharing", "Failed");
    let logs = |container: &str| c.ok(KUBECTL_DEFAULT, &["logs", "sharing", "-c", container]);
    assert_eq!(logs("reader"), "written by writer\n");
    assert_eq!(logs("init-output"), "made by init\n");
    assert_eq!(logs("env"), "GREETING=hi there\nPOD=sharing\nNS=default\n");
    assert_eq!(logs("config-files"), "color\ngreeting\n");
    assert!(
        logs("host-file").contains("cat /etc/passwd"),
        "{}",
        logs("host-file")
    );
    assert_eq!(logs("init"), "wrote /work/from-init.txt\n");
    let codes = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pod",
            "sharing",
            "-o",
            "jsonpath={range .status.containerStatuses[*]}{.name}={.state.terminated.exitCode} {end}",
        ],
    );
    assert_eq!(
        codes.trim(),
        "writer=0 reader=0 init-output=0 env=0 config-files=0 host-file=1"
    );
}

#[test]
fn memory_and_cpu_limits() {
    let reg = Registry::start();
    let p1 = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("limits-node", &[]);
    let limited = |name: &str, args: &[&str], cpu: &str, memory: &str| {
        pod(
            name,
            &p1,
            "Never",
            args,
            &format!(
                "    resources:\n      limits:\n        cpu: \"{cpu}\"\n        memory: {memory}\n"
            ),
        )
    };
    c.apply(&limited("hog", &["alloc", "300"], "1", "64Mi"));
    wait_phase(&c, "hog", "Failed");
    let term = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pod",
            "hog",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode}",
        ],
    );
    assert_eq!(term, "OOMKilled 137");
    wait_event(&c, "hog", "Warning", "OOMKilled", |m| {
        m.starts_with("Container main exceeded its memory limit and was killed")
    });

    // Every valid quantity is a limit, exactly: a 1Pi memory limit (a suffix the agent
    // once did not know, so the limit vanished and the downward API refused the pod)
    // runs, and reads back through resourceFieldRef as the kubelet computes it. Small
    // requests keep it schedulable (requests default to the limits).
    let field = |var: &str, resource: &str, divisor: &str| {
        format!(
            "      - name: {var}\n        valueFrom:\n          resourceFieldRef: {{resource: {resource}, divisor: {divisor}}}\n"
        )
    };
    c.apply(&pod(
        "peta",
        &p1,
        "Never",
        &["env", "MEM_GI", "CPU_M"],
        &format!(
            "    resources:\n      requests: {{cpu: 10m, memory: 1Mi}}\n      limits:\n        cpu: 1500m\n        memory: 1Pi\n    env:\n{}{}",
            field("MEM_GI", "limits.memory", "1Gi"),
            field("CPU_M", "limits.cpu", "1m"),
        ),
    ));
    wait_phase(&c, "peta", "Succeeded");
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "peta"]),
        "MEM_GI=1048576\nCPU_M=1500\n"
    );
    // The CPU limit's effect on run time is measured in wasm_cpu.rs, a binary of its own.
}

/// The sleepers' grace period, in seconds: far beyond `WAIT`, so a deletion that waited
/// it out could not pass for a prompt one.
const GRACE: u64 = 900;

#[test]
fn deployment_rolls_out_and_deleted_pods_are_replaced() {
    let reg = Registry::start();
    let p2 = reg.push(&common::testbox("wasm32-wasip2"), "tests/testbox:p2");
    let c = Cluster::with_agent("deploy-node", &[]);
    c.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sleepers
spec:
  replicas: 3
  selector:
    matchLabels: {{app: sleepers}}
  template:
    metadata:
      labels: {{app: sleepers}}
    spec:
      terminationGracePeriodSeconds: {GRACE}
      containers:
      - name: main
        image: {p2}
        args: ["sleep", "0"]
"#
    ));
    c.ok(
        KUBECTL_DEFAULT,
        &["rollout", "status", "deployment/sleepers", "--timeout=90s"],
    );
    let names = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pods",
            "-l",
            "app=sleepers",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    let victim = names.split_whitespace().next().expect("a pod").to_string();
    // The guest ends at once when stopped: its pod is gone long before the grace period
    // (GRACE, ten times the wait) would run out.
    c.ok(KUBECTL_DEFAULT, &["delete", "pod", &victim, "--wait=false"]);
    let deadline = Instant::now() + WAIT;
    while !c
        .ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pods",
                "--field-selector",
                &format!("metadata.name={victim}"),
                "-o",
                "name",
            ],
        )
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "a deleted running Wasm pod is still there after {WAIT:?}: waiting out its grace period?"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok(
        KUBECTL_DEFAULT,
        &["rollout", "status", "deployment/sleepers", "--timeout=90s"],
    );
    c.wait_for_output(
        &[
            "get",
            "deployment",
            "sleepers",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        "3",
        WAIT,
    );
    let after = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "pods",
            "-l",
            "app=sleepers",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    assert!(!after.split_whitespace().any(|n| n == victim), "{after}");
    // Its directory and volumes went with it.
    let pods_dir = c.data_dir().join("agent").join("pods");
    let dirs = std::fs::read_dir(&pods_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(dirs, 3, "pod directories left in {}", pods_dir.display());
}

#[test]
fn secret_downward_host_and_memory_volumes() {
    let reg = Registry::start();
    let p1 = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("files-node", &[]);
    let host_dir = c.dir.path().join("host-share");
    c.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: live
data:
  setting: one
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  token: s3cr3t
  other: ignored
"#,
    );
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: files
  labels:
    tier: backend
spec:
  restartPolicy: Never
  volumes:
  - name: secret
    secret:
      secretName: creds
      items:
      - key: token
        path: auth/token
        mode: 0400
  - name: info
    downwardAPI:
      items:
      - path: labels
        fieldRef:
          fieldPath: metadata.labels
      - path: name
        fieldRef:
          fieldPath: metadata.name
  - name: live
    configMap:
      name: live
  - name: host
    hostPath:
      path: {host}
      type: DirectoryOrCreate
  - name: fast
    emptyDir:
      medium: Memory
      sizeLimit: 8Mi
  containers:
  - name: reader
    image: {p1}
    args: ["cat", "/secret/auth/token", "/info/labels", "/info/name"]
    volumeMounts:
    - {{name: secret, mountPath: /secret}}
    - {{name: info, mountPath: /info}}
  - name: host-writer
    image: {p1}
    args: ["write", "/host/from-pod.txt", "hello host"]
    volumeMounts:
    - {{name: host, mountPath: /host}}
  - name: ram-writer
    image: {p1}
    args: ["write", "/fast/x", "in memory"]
    volumeMounts:
    - {{name: fast, mountPath: /fast}}
  - name: sleeper
    image: {p1}
    args: ["sleep", "0"]
    volumeMounts:
    - {{name: live, mountPath: /live}}
"#,
        host = host_dir.display()
    );
    c.apply(&manifest);
    c.wait_for_output(
        &[
            "get",
            "pod",
            "files",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"reader\")].state.terminated.exitCode}",
        ],
        "0",
        WAIT,
    );
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "files", "-c", "reader"]),
        "s3cr3ttier=\"backend\"files\n"
    );
    c.wait_for_output(
        &[
            "get",
            "pod",
            "files",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"host-writer\")].state.terminated.exitCode}",
        ],
        "0",
        WAIT,
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("from-pod.txt")).expect("file the pod wrote"),
        "hello host\n"
    );
    // The pod's volumes on the node: the secret file has its mode; the Memory emptyDir is
    // a tmpfs; the configMap follows an edit of its source.
    let uid = c.ok(
        KUBECTL_DEFAULT,
        &["get", "pod", "files", "-o", "jsonpath={.metadata.uid}"],
    );
    let vols = c
        .data_dir()
        .join("agent")
        .join("pods")
        .join(&uid)
        .join("volumes");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(vols.join("secret/auth/token"))
            .expect("secret file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o400);
    let fast = vols.join("fast");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let is_tmpfs = mounts
        .lines()
        .any(|l| l.contains(&format!(" {} ", fast.display())) && l.contains("tmpfs"));
    assert!(is_tmpfs, "{} is not a tmpfs", fast.display());
    assert_eq!(
        std::fs::read_to_string(vols.join("live/setting")).expect("cm"),
        "one"
    );
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "patch",
            "configmap",
            "live",
            "-p",
            r#"{"data":{"setting":"two"}}"#,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    while std::fs::read_to_string(vols.join("live/setting")).unwrap_or_default() != "two" {
        assert!(
            Instant::now() < deadline,
            "the configMap volume never saw the edit"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Deleting the pod removes its directory and unmounts its tmpfs.
    c.ok(KUBECTL_DEFAULT, &["delete", "pod", "files", "--wait=true"]);
    assert!(!vols.exists(), "{} left behind", vols.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&uid),
        "a mount of the deleted pod is left: {}",
        mounts
            .lines()
            .filter(|l| l.contains(&uid))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
