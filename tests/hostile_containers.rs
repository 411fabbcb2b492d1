//! Attacks from inside a container pod, against a real server with its agent, the
//! agent's private containerd and runc, and a real registry (issue 21, SPN-04 to
//! SPN-06): capabilities beyond the container without `--allow-privileged`, the
//! kernel surfaces the default seccomp profile closes, `runAsNonRoot` against a root
//! image, a pod rewriting its resolv.conf to hijack the node's DNS, an image whose
//! config claims another image's layer (snapshot poisoning), and unverified snapshots
//! an earlier Spindle left. One cluster for all; each check ends by asking the server
//! something.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(90);
const NODE: &str = "hostile-ctr";
const PHASE: &str = "{.status.phase}";

/// Waits until the pod's container waits with `reason`; returns its message.
fn wait_refused(c: &Cluster, pod: &str, reason: &str) -> String {
    let waiting = "{.status.containerStatuses[0].state.waiting";
    c.wait_pod_field(pod, &format!("{waiting}.reason}}"), reason, WAIT);
    c.pod_field(pod, &format!("{waiting}.message}}"))
}

/// The message of the pod's first `Failed` event (the kubelet's for a container it
/// cannot create).
fn failed_event(c: &Cluster, pod: &str) -> String {
    let selector = format!("involvedObject.name={pod},reason=Failed");
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "events",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={.items[0].message}",
        ],
    )
}

/// The server still answers, and the node is still Ready.
fn alive(c: &Cluster) {
    let ready = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    );
    assert_eq!(ready.trim(), "True");
}

/// A pod of one container `main` running `script`; `pod_extra` goes under `spec`,
/// `ctr_extra` under the container (both indented already).
fn pod(name: &str, image: &str, script: &str, pod_extra: &str, ctr_extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
{pod_extra}  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
{ctr_extra}"#
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `data` as a blob of the OCI layout `dir`; returns its digest.
fn blob(dir: &Path, data: &[u8]) -> String {
    let digest = sha256(data);
    let hex = digest.trim_start_matches("sha256:");
    std::fs::write(dir.join("blobs/sha256").join(hex), data).expect("write blob");
    digest
}

/// Pushes an image whose config claims `diff_id` for its one layer, while the layer
/// (an uncompressed tar) holds only the file `/poisoned`.
fn push_poisoned(reg: &Registry, name: &str, diff_id: &str) -> String {
    let work = tempfile::tempdir().expect("temp dir");
    let layout = work.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout");
    let files = work.path().join("files");
    std::fs::create_dir(&files).expect("files");
    std::fs::write(files.join("poisoned"), "planted by another image\n").expect("file");
    let tar = work.path().join("layer.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&files)
        .arg("-cf")
        .arg(&tar)
        .arg("poisoned"));
    let layer = std::fs::read(&tar).expect("read tar");
    let layer_digest = blob(&layout, &layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    })
    .to_string();
    let config_digest = blob(&layout, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    })
    .to_string();
    let manifest_digest = blob(&layout, manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "v1" },
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let reference = format!("{}/{name}", reg.addr);
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{reference}"),
    ]));
    reference
}

/// The diff IDs of an image in the registry, from its config.
fn diff_ids(reference: &str) -> Vec<String> {
    let config = run(Command::new("skopeo").args([
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&config).expect("config JSON");
    v["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff id").to_string())
        .collect()
}

/// Commits, under the name `name` (on `parent`, if not empty), a snapshot holding
/// `/planted`, without Spindle's verified label: what an older agent (or anyone with
/// containerd's socket) may have left. A gc.root label keeps containerd's collector off
/// it.
fn plant_snapshot(c: &Cluster, name: &str, parent: &str) {
    let key = format!("planted-by-test-{name}");
    let mut prepare = vec!["snapshots", "prepare", &key];
    if !parent.is_empty() {
        prepare.push(parent);
    }
    c.ctr(&prepare);
    let target = tempfile::tempdir().expect("temp dir");
    let mount = c.ctr(&[
        "snapshots",
        "mounts",
        &target.path().display().to_string(),
        &key,
    ]);
    // Without a parent `mount -t bind <dir> <target> -o rbind,rw`; with one, an
    // overlay whose upperdir is the snapshot's own directory.
    let dir = match mount.split("upperdir=").nth(1) {
        Some(rest) => rest.split([',', ' ', '\n']).next().unwrap_or_default(),
        None => mount
            .split_whitespace()
            .skip_while(|w| *w != "bind")
            .nth(1)
            .unwrap_or_else(|| panic!("no bind source in {mount:?}")),
    }
    .to_string();
    std::fs::write(Path::new(&dir).join("planted"), "planted\n").expect("plant");
    let root = "containerd.io/gc.root=planted";
    c.ctr(&["snapshots", "label", &key, root]);
    c.ctr(&["snapshots", "commit", name, &key]);
    c.ctr(&["snapshots", "label", name, root]);
    let info = c.ctr(&["snapshots", "info", name]);
    assert!(!info.contains("spindle.dev/verified"), "{info}");
}

/// The name under which Spindle commits the verified snapshot of `chain_id`.
fn verified_name(chain_id: &str) -> String {
    format!("spindle-verified/{chain_id}")
}

/// The OCI chain IDs of `diff_ids`: the first is its diff ID, each next one
/// `sha256(<chain below> <diff ID>)`.
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match chains.last() {
            None => d.clone(),
            Some(below) => sha256(format!("{below} {d}").as_bytes()),
        };
        chains.push(next);
    }
    chains
}

fn sha256(data: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(tmp.path(), data).expect("write");
    let sum = run(Command::new("sha256sum").arg(tmp.path()));
    format!(
        "sha256:{}",
        sum.split_whitespace().next().expect("sha256sum")
    )
}

/// Pushes `base` with one more layer holding `/layer2`, as `name`.
fn push_two_layers(reg: &Registry, base: &str, name: &str) -> String {
    let work = tempfile::tempdir().expect("temp dir");
    let layout = format!("{}/layout:v1", work.path().display());
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{base}"),
        &format!("oci:{layout}"),
    ]));
    let file = work.path().join("layer2");
    std::fs::write(&file, "second layer\n").expect("file");
    run(Command::new("umoci")
        .args(["insert", "--image", &layout])
        .arg(&file)
        .arg("/layer2"));
    let reference = format!("{}/{name}", reg.addr);
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{layout}"),
        &format!("docker://{reference}"),
    ]));
    reference
}

/// The node's resolv.conf, put back if a check changed it (so a failing run does not
/// leave the machine's DNS hijacked).
struct HostResolv(Vec<u8>);

impl HostResolv {
    fn save() -> HostResolv {
        HostResolv(std::fs::read("/etc/resolv.conf").unwrap_or_default())
    }

    fn unchanged(&self) -> bool {
        std::fs::read("/etc/resolv.conf").unwrap_or_default() == self.0
    }
}

impl Drop for HostResolv {
    fn drop(&mut self) {
        if !self.unchanged() {
            let _ = std::fs::write("/etc/resolv.conf", &self.0);
        }
    }
}

/// CapEff of a root process with containerd CRI's default capabilities: CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
/// NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
const CRI_DEFAULT_CAPEFF: &str = "CapEff:\t00000000a80425fb";

#[test]
fn hostile_containers_are_refused_or_confined() {
    let reg = Registry::start();
    let image = reg.push_busybox("tests/hostile-busybox:v1");
    let busybox_diff_ids = diff_ids(&image);
    let poisoned = push_poisoned(&reg, "tests/poisoned:v1", &busybox_diff_ids[0]);
    let two_layers = push_two_layers(&reg, &image, "tests/two-layers:v1");
    let two_layer_chains = chain_ids(&diff_ids(&two_layers));
    assert_eq!(two_layer_chains.len(), 2);
    let c = Cluster::with_agent(NODE, &[]);
    let host_resolv = HostResolv::save();

    // (e) Snapshot poisoning, first, before busybox's layer is on the node: the
    // poisoned image claims busybox's diff ID for a layer holding /poisoned.
    c.apply(&pod("poison", &poisoned, "sleep 3600", "", ""));
    let msg = wait_refused(&c, "poison", "CreateContainerError");
    assert!(
        msg.contains(&format!(
            "wrong diff id calculated on extraction {:?}",
            busybox_diff_ids[0]
        )),
        "{msg}"
    );
    alive(&c);
    // A snapshot by the name of busybox's verified one, that Spindle did not verify,
    // is not reused.
    plant_snapshot(&c, &verified_name(&busybox_diff_ids[0]), "");
    // (f) Snapshots an earlier Spindle left under the bare chain IDs, unverified, the
    // lower one with a child (which containerd refuses to remove): neither reused
    // nor in the way.
    plant_snapshot(&c, &two_layer_chains[0], "");
    plant_snapshot(&c, &two_layer_chains[1], &two_layer_chains[0]);
    c.apply(&pod(
        "old-snapshots",
        &two_layers,
        "ls /planted 2>&1; cat /layer2",
        "",
        "",
    ));

    // Every other pod at once; each is checked below.
    let caps =
        |add: &str| format!("    securityContext:\n      capabilities:\n        add: [{add}]\n");
    c.apply(&pod(
        "caps-admin",
        &image,
        "sleep 3600",
        "",
        &caps("SYS_ADMIN"),
    ));
    c.apply(&pod("caps-all", &image, "sleep 3600", "", &caps("ALL")));
    c.apply(&pod(
        "confined",
        &image,
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
         unshare -Ur true 2>&1 || echo userns-refused; \
         unshare -m true 2>&1 || echo mountns-refused; \
         mount -t tmpfs t /tmp 2>&1 || echo mount-refused; \
         (echo x > /proc/sys/kernel/domainname) 2>&1 || echo sysctl-refused; \
         ls /poisoned /planted 2>&1; ls /bin/busybox",
        "",
        "",
    ));
    let non_root = "  securityContext:\n    runAsNonRoot: true\n";
    c.apply(&pod("nonroot-root", &image, "id -u", non_root, ""));
    c.apply(&pod(
        "nonroot-1000",
        &image,
        "id -u; grep NoNewPrivs /proc/self/status",
        "  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n",
        "",
    ));
    let hijack = "cat /etc/resolv.conf; echo nameserver 203.0.113.53 > /etc/resolv.conf && echo rewrote; cat /etc/resolv.conf";
    c.apply(&pod(
        "dns-default",
        &image,
        hijack,
        "  dnsPolicy: Default\n",
        "",
    ));
    c.apply(&pod(
        "dns-hostnet",
        &image,
        hijack,
        "  hostNetwork: true\n",
        "",
    ));

    // (a) Capabilities that reach beyond the container need --allow-privileged.
    for (name, cap) in [("caps-admin", "SYS_ADMIN"), ("caps-all", "ALL")] {
        let msg = wait_refused(&c, name, "CreateContainerConfigError");
        assert!(
            msg.contains(&format!("adding capabilities {cap} is not allowed"))
                && msg.contains("--allow-privileged"),
            "{name}: {msg}"
        );
        assert_eq!(failed_event(&c, name), format!("Error: {msg}"), "{name}");
    }
    alive(&c);

    // (a, b) The default container: CRI's capabilities, no_new_privs, the seccomp
    // filter (a user namespace would give every capability inside it, mount
    // included; the filter refuses it with EPERM), a read-only /proc/sys. And (e):
    // neither the poisoned layer's file nor the planted snapshot's, but busybox's.
    c.wait_pod_field("confined", PHASE, "Succeeded", WAIT);
    let logs = c.ok(KUBECTL_DEFAULT, &["logs", "confined"]);
    for want in [
        CRI_DEFAULT_CAPEFF,
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "unshare(0x10000000): Operation not permitted\nuserns-refused",
        "unshare(0x20000): Operation not permitted\nmountns-refused",
        // busybox words EPERM so.
        "mount: permission denied (are you root?)\nmount-refused",
        "Read-only file system\nsysctl-refused",
        "/poisoned: No such file or directory",
        "/planted: No such file or directory",
        "/bin/busybox",
    ] {
        assert!(logs.contains(want), "{want:?} missing from:\n{logs}");
    }
    let info = c.ctr(&["snapshots", "info", &verified_name(&busybox_diff_ids[0])]);
    assert!(info.contains("spindle.dev/verified-chain-id"), "{info}");
    alive(&c);

    // (f) The two-layer image starts on fresh snapshots beside the old ones.
    c.wait_pod_field("old-snapshots", PHASE, "Succeeded", WAIT);
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "old-snapshots"]),
        "ls: /planted: No such file or directory\nsecond layer\n"
    );
    alive(&c);

    // (c) runAsNonRoot, as the kubelet checks it.
    let uid = c.pod_field("nonroot-root", "{.metadata.uid}");
    let msg = wait_refused(&c, "nonroot-root", "CreateContainerConfigError");
    assert_eq!(
        msg,
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"nonroot-root_default({uid})\", container: main)"
        )
    );
    c.wait_pod_field("nonroot-1000", PHASE, "Succeeded", WAIT);
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "nonroot-1000"]),
        "1000\nNoNewPrivs:\t1\n"
    );
    alive(&c);

    // (d) A container rewriting its resolv.conf changes its pod's copy only.
    for name in ["dns-default", "dns-hostnet"] {
        c.wait_pod_field(name, PHASE, "Succeeded", WAIT);
        let logs = c.ok(KUBECTL_DEFAULT, &["logs", name]);
        let before = String::from_utf8_lossy(&host_resolv.0).into_owned();
        assert!(logs.starts_with(&before), "{name}: {logs}");
        assert!(
            logs.ends_with("rewrote\nnameserver 203.0.113.53\n"),
            "{name}: {logs}"
        );
        assert!(
            host_resolv.unchanged(),
            "{name} rewrote the node's /etc/resolv.conf"
        );
    }
    alive(&c);
}
