//! Claims on the node: a pod's persistentVolumeClaim, generic ephemeral and projected
//! volumes as the agent mounts them. Data written through a claim outlives the pod, is
//! seen by the next pod (Wasm or container) and by nothing else; the built-in local-path
//! provisioner makes a directory per volume on the node the pod landed on and removes it
//! with the claim. Real server and agent (private containerd and runc), docker-registry,
//! the testbox Wasm guest and busybox, both kubectls.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{kubectls, Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(90);

fn wait_until(what: &str, c: &Cluster, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; server log:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn jsonpath(c: &Cluster, args: &[&str], path: &str) -> String {
    let mut all = args.to_vec();
    let p = format!("jsonpath={path}");
    all.extend(["-o", &p]);
    // Empty while the object does not exist.
    let out = c.kubectl(KUBECTL_DEFAULT, &all);
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::new()
    }
}

/// A pod that runs `args` once with claim `claim` at /data (and whatever `extra`
/// volume lines add), on `image`.
fn claim_pod(name: &str, image: &str, claim_volume: &str, args: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    {claim_volume}
  containers:
  - name: main
    image: {image}
    {args}
    volumeMounts:
    - {{name: data, mountPath: /data}}
"#
    )
}

/// Runs the pod to its end and returns (phase, logs).
fn run_pod(c: &Cluster, manifest: &str, name: &str) -> (String, String) {
    c.apply(manifest);
    wait_until(&format!("pod {name} to finish"), c, || {
        let phase = c.pod_field(name, "{.status.phase}");
        phase == "Succeeded" || phase == "Failed"
    });
    let phase = c.pod_field(name, "{.status.phase}");
    let logs = c.ok(KUBECTL_DEFAULT, &["logs", name]);
    (phase, logs)
}

fn delete_pod(c: &Cluster, name: &str) {
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pod", name, "--wait=true", "--timeout=60s"],
    );
}

/// A static hostPath PV and its claim: the data a Wasm pod writes is read back by a new
/// Wasm pod and by a container, survives their deletion, and a read-only use of the
/// claim cannot change it.
#[test]
fn a_claim_keeps_its_data_across_pods_and_runtimes() {
    let reg = Registry::start();
    let wasm = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let busybox = reg.push_busybox("tests/busybox:claims");
    let c = Cluster::with_agent("claims-node", &[]);
    let host = tempfile::tempdir().expect("tempdir");
    let host_dir = host.path().join("pv-data");
    c.apply(&format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: static-pv
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: manual
  hostPath: {{path: {}, type: DirectoryOrCreate}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: static-claim
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
"#,
        host_dir.display()
    ));
    wait_until("the claim to bind", &c, || {
        jsonpath(&c, &["get", "pvc", "static-claim"], "{.status.phase}") == "Bound"
    });
    let volume = "persistentVolumeClaim: {claimName: static-claim}";
    let (phase, logs) = run_pod(
        &c,
        &claim_pod(
            "writer",
            &wasm,
            volume,
            r#"args: ["write", "/data/kept", "written-by-wasm"]"#,
        ),
        "writer",
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    delete_pod(&c, "writer");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("kept")).expect("the file is on the PV"),
        "written-by-wasm\n"
    );
    for (name, image, args) in [
        ("wasm-reader", &wasm, r#"args: ["cat", "/data/kept"]"#),
        ("ctr-reader", &busybox, r#"command: ["cat", "/data/kept"]"#),
    ] {
        let (phase, logs) = run_pod(&c, &claim_pod(name, image, volume, args), name);
        assert_eq!(
            (phase.as_str(), logs.as_str()),
            ("Succeeded", "written-by-wasm\n")
        );
    }
    // A read-only use of the claim: the write fails, the data stays.
    let read_only = "persistentVolumeClaim: {claimName: static-claim, readOnly: true}";
    let (phase, logs) = run_pod(
        &c,
        &claim_pod(
            "ro-writer",
            &wasm,
            read_only,
            r#"args: ["write", "/data/kept", "overwritten"]"#,
        ),
        "ro-writer",
    );
    assert_eq!(phase, "Failed", "{logs}");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("kept")).expect("still there"),
        "written-by-wasm\n"
    );
    // Deleting every pod leaves the host directory and the binding alone.
    for p in ["wasm-reader", "ctr-reader", "ro-writer"] {
        delete_pod(&c, p);
    }
    assert!(host_dir.join("kept").exists());
    assert_eq!(
        jsonpath(&c, &["get", "pv", "static-pv"], "{.status.phase}"),
        "Bound"
    );
}

/// The agent's local-path volume directory of PV `pv`.
fn local_path_dir(c: &Cluster, pv: &str) -> PathBuf {
    c.data_dir().join("agent/storage").join(pv)
}

/// The default class: a claim waits for its first pod, is provisioned on that pod's node
/// as a directory of the agent's, and goes with the claim (reclaim Delete). A generic
/// ephemeral volume gets its claim with the pod and loses it with the pod. A projected
/// volume shows a ConfigMap and the pod's own labels in one directory.
#[test]
fn local_path_ephemeral_and_projected_volumes() {
    let reg = Registry::start();
    let wasm = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::with_agent("local-path-node", &[]);
    for k in kubectls() {
        let classes = c.ok(k, &["get", "storageclass"]);
        assert!(
            classes.contains("local-path (default)") && classes.contains("spindle.dev/local-path"),
            "{k}: {classes}"
        );
    }
    c.apply(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: lp-claim
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
"#,
    );
    assert_eq!(
        jsonpath(&c, &["get", "pvc", "lp-claim"], "{.spec.storageClassName}"),
        "local-path"
    );
    // WaitForFirstConsumer: the binder says it waits, and no volume comes while no
    // pod uses the claim.
    wait_until("the claim to wait for its first consumer", &c, || {
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "events",
                "--field-selector=involvedObject.name=lp-claim",
                "-o",
                "jsonpath={.items[*].reason}",
            ],
        )
        .contains("WaitForFirstConsumer")
    });
    assert_eq!(
        jsonpath(&c, &["get", "pvc", "lp-claim"], "{.status.phase}"),
        "Pending"
    );
    let (phase, logs) = run_pod(
        &c,
        &claim_pod(
            "lp-writer",
            &wasm,
            "persistentVolumeClaim: {claimName: lp-claim}",
            r#"args: ["write", "/data/kept", "on-the-node"]"#,
        ),
        "lp-writer",
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    let pv = jsonpath(&c, &["get", "pvc", "lp-claim"], "{.spec.volumeName}");
    assert!(pv.starts_with("pvc-"), "{pv:?}");
    assert_eq!(
        jsonpath(
            &c,
            &["get", "pv", &pv],
            "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
        ),
        "local-path-node"
    );
    let dir = local_path_dir(&c, &pv);
    assert_eq!(
        std::fs::read_to_string(dir.join("kept")).expect("the data is in the node's directory"),
        "on-the-node\n"
    );
    delete_pod(&c, "lp-writer");
    assert!(dir.join("kept").exists(), "the data outlives the pod");
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pvc", "lp-claim", "--wait=true", "--timeout=60s"],
    );
    wait_until("the released volume to go", &c, || {
        !dir.exists()
            && !c
                .kubectl(KUBECTL_DEFAULT, &["get", "pv", &pv])
                .status
                .success()
    });

    // A generic ephemeral volume: its claim comes and goes with the pod.
    c.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
---
apiVersion: v1
kind: Pod
metadata:
  name: eph
  labels: {{tier: batch}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    ephemeral:
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources: {{requests: {{storage: 16Mi}}}}
  - name: info
    projected:
      sources:
      - configMap: {{name: settings}}
      - downwardAPI:
          items:
          - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
  containers:
  - name: main
    image: {wasm}
    args: ["cat", "/info/mode", "/info/labels"]
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: info, mountPath: /info}}
"#
    ));
    wait_until("pod eph to finish", &c, || {
        c.pod_field("eph", "{.status.phase}") == "Succeeded"
    });
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "eph"]).trim_end(),
        "fasttier=\"batch\""
    );
    let owner = jsonpath(
        &c,
        &["get", "pvc", "eph-scratch"],
        "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    );
    assert_eq!(owner, "Pod/eph");
    let eph_pv = jsonpath(&c, &["get", "pvc", "eph-scratch"], "{.spec.volumeName}");
    assert!(local_path_dir(&c, &eph_pv).is_dir());
    delete_pod(&c, "eph");
    wait_until("the ephemeral claim and its volume to go", &c, || {
        !c.kubectl(KUBECTL_DEFAULT, &["get", "pvc", "eph-scratch"])
            .status
            .success()
            && !local_path_dir(&c, &eph_pv).exists()
    });
    assert!(Path::new(&c.data_dir()).exists());
}
