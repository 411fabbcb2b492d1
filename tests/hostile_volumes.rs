//! Hostile volumes: a pod that plants symbolic links in its own volumes, or names the
//! node's own directories as hostPaths, must not reach the host's files (the security
//! review's SPN-02 and SPN-03). Real server and agent (private containerd and runc), real
//! docker-registry, busybox containers and the testbox Wasm guest, kubectl.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(90);

/// The pod's events as `Reason: message` lines, read from the Event objects themselves.
fn events(c: &Cluster, pod: &str) -> String {
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
    )
}

/// Wait for an event of the pod whose line contains every one of `needles`.
fn wait_event(c: &Cluster, pod: &str, needles: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = events(c, pod);
        if let Some(line) = all.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "pod {pod}: no event with {needles:?}; events:\n{all}\nserver log:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A container planting a link in a shared emptyDir, then `main` mounting it by subPath.
fn planted_pod(name: &str, init_image: &str, init: &str, image: &str, main: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    emptyDir: {{}}
  initContainers:
  - name: plant
    image: {init_image}
    {init}
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
  containers:
  - name: main
    image: {image}
    {main}
    volumeMounts:
    - {{name: shared, mountPath: /mnt, subPath: escape}}
"#
    )
}

fn host_path_pod(name: &str, image: &str, path: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: h
    hostPath: {{path: {path:?}, type: Directory}}
  containers:
  - name: main
    image: {image}
    args: ["cat", "/h/secret"]
    volumeMounts:
    - {{name: h, mountPath: /h}}
"#
    )
}

/// A path from deep inside a pod's volume that climbs to `/` and then names `target`.
fn climbing_link(target: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(24).trim_end_matches('/'),
        target.display()
    )
}

/// The subPath reproductions (containers and Wasm, absolute and relative links, a link
/// planted before the first start and one planted between restarts) all end without the
/// host's file being read, with a clear event; a link that stays inside the volume still
/// works; hostPaths of the node's own data are refused; and the server still answers.
#[test]
fn pods_cannot_reach_host_files_through_their_volumes() {
    let reg = Registry::start();
    let busybox = reg.push_busybox("tests/busybox:v1");
    let wasm = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("vol-node", &[]);
    let host = tempfile::tempdir_in("/var/tmp").expect("host dir");
    let marker = format!("host-secret-{}", std::process::id());
    std::fs::write(host.path().join("secret"), &marker).expect("write host secret");
    let secret_dir = host.path().to_path_buf();
    let sh = |script: &str| format!("command: [\"sh\", \"-c\", {script:?}]");
    let args = |a: &[&str]| format!("args: {a:?}");

    let cases = [
        // The issue's reproduction: a container plants an absolute link.
        planted_pod(
            "ctr-absolute",
            &busybox,
            &sh(&format!("ln -s {} /shared/escape", secret_dir.display())),
            &busybox,
            &sh("cat /mnt/secret; sleep 3600"),
        ),
        // A relative link climbing out of the volume.
        planted_pod(
            "ctr-relative",
            &busybox,
            &sh(&format!(
                "ln -s {} /shared/escape",
                climbing_link(&secret_dir)
            )),
            &busybox,
            &sh("cat /mnt/secret; sleep 3600"),
        ),
        // A Wasm guest plants a relative link (WASI refuses only absolute targets) and a
        // Wasm container mounts it.
        planted_pod(
            "wasm-relative",
            &wasm,
            &args(&["symlink", &climbing_link(&secret_dir), "/shared/escape"]),
            &wasm,
            &args(&["cat", "/mnt/secret"]),
        ),
    ];
    for pod in &cases {
        c.apply(pod);
    }
    for name in ["ctr-absolute", "ctr-relative", "wasm-relative"] {
        let line = wait_event(
            &c,
            name,
            &[
                "Failed",
                "failed to prepare subPath for volumeMount \"shared\" of container \"main\"",
                "resolves outside the volume",
            ],
        );
        assert!(line.contains("escape"), "{name}: {line}");
        c.wait_pod_field(
            name,
            "{.status.containerStatuses[0].state.waiting.reason}",
            "CreateContainerConfigError",
            WAIT,
        );
        // The container never ran, so nothing of the host reached its log.
        assert_eq!(
            c.pod_field(name, "{.status.containerStatuses[0].containerID}"),
            "",
            "{name} started a container"
        );
    }

    // The review's Wasm reproduction: the guest replaces the subPath directory by a link
    // after its first start, then is restarted. The subPath is resolved again at the
    // restart, as the kubelet does, so the start fails instead of showing the host.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: wasm-replant
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    emptyDir: {{}}
  containers:
  - name: g
    image: {wasm}
    args: ["plant", "/host/secret", "/data/esc", {link:?}]
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: data, mountPath: /host, subPath: esc}}
"#,
        link = climbing_link(&secret_dir)
    ));
    let line = wait_event(
        &c,
        "wasm-replant",
        &["Failed", "resolves outside the volume"],
    );
    assert!(line.contains("subPath \"esc\""), "{line}");
    c.wait_pod_field(
        "wasm-replant",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CreateContainerConfigError",
        WAIT,
    );
    for extra in [&[][..], &["--previous"][..]] {
        let mut a = vec!["logs", "wasm-replant"];
        a.extend_from_slice(extra);
        let out = c.kubectl(KUBECTL_DEFAULT, &a);
        let logs = String::from_utf8_lossy(&out.stdout);
        assert!(!logs.contains(&marker), "the guest read the host: {logs}");
    }

    // A container makes a device node in a shared volume (mknod is in the CRI default
    // capabilities); a Wasm container of the pod, whose file I/O is the agent's own, must
    // not be able to open it (volumes are nodev). /dev/null is harmless to open; a disk
    // would not be.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: device-node
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    emptyDir: {{}}
  initContainers:
  - name: plant
    image: {busybox}
    command: ["mknod", "/shared/dev", "c", "1", "3"]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
  containers:
  - name: main
    image: {wasm}
    args: ["cat", "/shared/dev"]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
"#
    ));
    c.wait_pod_field("device-node", "{.status.phase}", "Failed", WAIT);
    let logs = c.ok(KUBECTL_DEFAULT, &["logs", "device-node"]);
    assert!(
        logs.contains("cat /shared/dev:") && logs.contains("denied"),
        "the guest opened a device node: {logs:?}"
    );

    // A container fills a disk emptyDir past its sizeLimit: the pod is evicted as the
    // kubelet does it (Failed, reason Evicted, its message and event) and its disk freed.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: filler
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    emptyDir: {{sizeLimit: 1Mi}}
  containers:
  - name: main
    image: {busybox}
    command: ["sh", "-c", "dd if=/dev/zero of=/scratch/fill bs=1M count=8; sleep 3600"]
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
"#
    ));
    c.wait_pod_field("filler", "{.status.phase}", "Failed", WAIT);
    let message = "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ";
    assert_eq!(c.pod_field("filler", "{.status.reason}"), "Evicted");
    assert_eq!(
        c.ok(
            KUBECTL_DEFAULT,
            &["get", "pod", "filler", "-o", "jsonpath={.status.message}"]
        ),
        message
    );
    wait_event(&c, "filler", &["Evicted", message.trim_end()]);
    let uid = c.pod_field("filler", "{.metadata.uid}");
    let filler_dir = c.data_dir().join("agent/pods").join(&uid);
    let deadline = Instant::now() + WAIT;
    while filler_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "the evicted pod's disk was not freed"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A link that stays inside the volume is followed, as on Kubernetes.
    c.apply(&planted_pod(
        "inside",
        &busybox,
        &sh("mkdir /shared/real && echo inside > /shared/real/f && ln -s real /shared/escape"),
        &busybox,
        &sh("cat /mnt/f"),
    ));
    c.wait_pod_field("inside", "{.status.phase}", "Succeeded", WAIT);
    assert_eq!(c.ok(KUBECTL_DEFAULT, &["logs", "inside"]), "inside\n");

    // hostPath: the node's data, the server's store, and anything above them are refused;
    // another host directory works.
    let data = c.data_dir();
    for (name, path) in [
        ("hp-store", data.join("server").display().to_string()),
        ("hp-agent", data.join("agent").display().to_string()),
        ("hp-root", "/".to_string()),
        // The agent's own memory (/proc/self/mem) for a Wasm guest.
        ("hp-proc", "/proc".to_string()),
    ] {
        c.apply(&host_path_pod(name, &wasm, &path));
        let line = wait_event(&c, name, &["FailedMount", "is refused"]);
        assert!(line.contains(&path), "{name}: {line}");
        assert_eq!(
            c.pod_field(name, "{.status.containerStatuses[0].state.waiting.reason}"),
            "ContainerCreating"
        );
    }
    c.apply(&host_path_pod(
        "hp-allowed",
        &wasm,
        &secret_dir.display().to_string(),
    ));
    c.wait_pod_field("hp-allowed", "{.status.phase}", "Succeeded", WAIT);
    // The log ends the guest's last partial line with a newline, as CRI logs do.
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "hp-allowed"]),
        format!("{marker}\n")
    );

    // Nothing of the host changed, and the server still answers.
    let left: Vec<_> = std::fs::read_dir(&secret_dir)
        .expect("read host dir")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("secret")]);
    assert_eq!(
        std::fs::read_to_string(secret_dir.join("secret")).expect("read"),
        marker
    );
    assert_eq!(c.ok(KUBECTL_DEFAULT, &["get", "--raw", "/readyz"]), "ok");

    // Deleting the pods removes their directories and every bind mount made for them.
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pods", "--all", "--wait=true", "--timeout=60s"],
    );
    // The pods directory itself stays mounted (nodev, nosuid); nothing below it may.
    let below = format!("{}/", data.join("agent/pods").display());
    let deadline = Instant::now() + WAIT;
    loop {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if !mounts.contains(&below) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mounts left under {below}:\n{mounts}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        std::fs::read_to_string(secret_dir.join("secret")).expect("read"),
        marker,
        "teardown touched the hostPath"
    );
}

/// A volume of a type the agent does not implement never becomes an empty directory that
/// goes with the pod (where a user's "persistent" data would silently be lost): the pod
/// stays Pending in ContainerCreating with the kubelet's FailedMount event naming the
/// type, nothing of its volumes is made, and it can still be deleted.
#[test]
fn volumes_of_unsupported_types_hold_the_pod() {
    let reg = Registry::start();
    let wasm = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("vol-types-node", &[]);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: claim
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    emptyDir: {{}}
  - name: data
    nfs: {{server: 192.0.2.1, path: /exports/db}}
  containers:
  - name: main
    image: {wasm}
    args: ["write", "/data/kept", "important"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: scratch, mountPath: /scratch}}
"#
    ));
    let line = wait_event(&c, "claim", &["FailedMount"]);
    assert_eq!(
        line,
        "FailedMount: Unable to attach or mount volumes: unmounted volumes=[data], \
         unattached volumes=[], failed to process volumes=[data]: \
         volume \"data\" has an unsupported type \"nfs\""
    );
    c.wait_pod_field(
        "claim",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "ContainerCreating",
        WAIT,
    );
    // Still held after the agent has tried again: the retry fails the same way (the
    // same event, counted twice), and the pod never left Pending meanwhile.
    let message = line.trim_start_matches("FailedMount: ");
    let deadline = Instant::now() + WAIT;
    loop {
        assert_eq!(c.pod_field("claim", "{.status.phase}"), "Pending");
        let counts = c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "events",
                "--field-selector=involvedObject.name=claim,reason=FailedMount",
                "-o",
                r#"jsonpath={range .items[*]}{.count} {.message}{"\n"}{end}"#,
            ],
        );
        let same = counts
            .lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(_, m)| *m == message)
            .and_then(|(n, _)| n.parse::<u32>().ok())
            .unwrap_or(0);
        if same >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retry failing the same way: {counts}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        c.pod_field(
            "claim",
            "{.status.containerStatuses[0].state.waiting.reason}"
        ),
        "ContainerCreating"
    );
    assert_eq!(
        c.pod_field("claim", "{.status.containerStatuses[0].containerID}"),
        "",
        "the container started"
    );
    let uid = c.pod_field("claim", "{.metadata.uid}");
    let volumes = c.data_dir().join("agent/pods").join(uid).join("volumes");
    assert!(!volumes.exists(), "{} was made", volumes.display());
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pod", "claim", "--wait=true", "--timeout=60s"],
    );
}
