//! PersistentVolumes, PersistentVolumeClaims and StorageClasses end to end: served with
//! kube-apiserver's tables, defaults, admission and errors, bound by the PV binder, and
//! placed by the scheduler, driven with both kubectl versions.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{kubectls, Cluster, KUBECTL_DEFAULT};

/// A `kubectl get` table as rows of column name → cell. Columns are found in the header
/// (tabwriter pads with at least three spaces), so empty cells keep their place.
fn table(out: &str) -> Vec<HashMap<String, String>> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts: Vec<(usize, String)> = Vec::new();
    let mut i = 0;
    for part in header.split("   ") {
        let name = part.trim();
        if !name.is_empty() {
            let at = header[i..].find(name).map_or(i, |p| p + i);
            starts.push((at, name.to_string()));
            i = at + name.len();
        }
    }
    lines
        .map(|line| {
            let mut row = HashMap::new();
            for (n, (at, name)) in starts.iter().enumerate() {
                let end = starts
                    .get(n + 1)
                    .map_or(line.len(), |s| s.0.min(line.len()));
                let cell = line.get((*at).min(line.len())..end).unwrap_or("");
                row.insert(name.clone(), cell.trim().to_string());
            }
            row
        })
        .collect()
}

fn header(out: &str) -> Vec<String> {
    out.lines()
        .next()
        .unwrap_or_default()
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

const WAIT: Duration = Duration::from_secs(90);

fn host_path_pv(name: &str, size: &str, class: &str, path: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}
  labels: {{size: "{size}"}}
spec:
  capacity: {{storage: {size}}}
  accessModes: [ReadWriteOnce]
  storageClassName: "{class}"
  hostPath: {{path: {path}}}
"#
    )
}

fn claim(name: &str, size: &str, class: Option<&str>) -> String {
    let class = class.map_or(String::new(), |c| format!("  storageClassName: \"{c}\"\n"));
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: {size}}}}}
{class}"#
    )
}

fn apply_with(c: &Cluster, kubectl: &str, manifest: &str) -> String {
    let out = c.apply_stdin(kubectl, &["apply", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "{kubectl} apply failed: {}\n{manifest}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply_fails(c: &Cluster, kubectl: &str, manifest: &str) -> String {
    let out = c.apply_stdin(kubectl, &["apply", "-f", "-"], manifest);
    assert!(
        !out.status.success(),
        "{kubectl} apply should have failed:\n{manifest}"
    );
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn jsonpath(c: &Cluster, kubectl: &str, what: &[&str], path: &str) -> String {
    let path = format!("jsonpath={path}");
    let mut args: Vec<&str> = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", &path]);
    c.ok(kubectl, &args).trim().to_string()
}

/// The kinds as kube-apiserver serves them: the built-in default class, the tables of
/// `kubectl get pv,pvc,sc`, the defaults and admission (default class, protection
/// finalizers), and validation errors word for word.
#[test]
fn storage_kinds_are_served_as_kube_apiserver_serves_them() {
    let c = Cluster::start();
    c.wait_for_output(
        &[
            "get",
            "storageclass",
            "local-path",
            "-o",
            "jsonpath={.provisioner}",
        ],
        "spindle.dev/local-path",
        Duration::from_secs(60),
    );
    for (i, k) in kubectls().into_iter().enumerate() {
        let out = c.ok(k, &["get", "sc"]);
        assert_eq!(
            header(&out),
            [
                "NAME",
                "PROVISIONER",
                "RECLAIMPOLICY",
                "VOLUMEBINDINGMODE",
                "ALLOWVOLUMEEXPANSION",
                "AGE"
            ],
            "{k}: {out}"
        );
        let rows = table(&out);
        let local = rows
            .iter()
            .find(|r| r["NAME"] == "local-path (default)")
            .unwrap_or_else(|| panic!("{k}: no default local-path class in\n{out}"));
        assert_eq!(local["PROVISIONER"], "spindle.dev/local-path");
        assert_eq!(local["RECLAIMPOLICY"], "Delete");
        assert_eq!(local["VOLUMEBINDINGMODE"], "WaitForFirstConsumer");
        assert_eq!(local["ALLOWVOLUMEEXPANSION"], "false");

        // A static volume: Retain and Filesystem by default, protected by a finalizer.
        let pv = format!("kinds-pv-{i}");
        apply_with(&c, k, &host_path_pv(&pv, "1024Mi", "manual", "/srv/kinds"));
        let out = c.ok(k, &["get", "pv", &pv]);
        assert_eq!(
            header(&out),
            [
                "NAME",
                "CAPACITY",
                "ACCESS MODES",
                "RECLAIM POLICY",
                "STATUS",
                "CLAIM",
                "STORAGECLASS",
                "VOLUMEATTRIBUTESCLASS",
                "REASON",
                "AGE"
            ],
            "{k}: {out}"
        );
        let row = &table(&out)[0];
        assert_eq!(row["NAME"], pv);
        assert_eq!(row["CAPACITY"], "1Gi", "{out}");
        assert_eq!(row["ACCESS MODES"], "RWO");
        assert_eq!(row["RECLAIM POLICY"], "Retain");
        assert_eq!(row["STORAGECLASS"], "manual");
        assert_eq!(row["VOLUMEATTRIBUTESCLASS"], "<unset>");
        assert_eq!(
            jsonpath(
                &c,
                k,
                &["pv", &pv],
                "{.spec.volumeMode} {.metadata.finalizers}"
            ),
            "Filesystem [\"kubernetes.io/pv-protection\"]"
        );
        let wide = table(&c.ok(k, &["get", "pv", &pv, "-o", "wide"]));
        assert_eq!(wide[0]["VOLUMEMODE"], "Filesystem");

        // A claim without a class gets the default one; "" means no class and stays.
        let defaulted = format!("kinds-default-{i}");
        let classless = format!("kinds-none-{i}");
        apply_with(&c, k, &claim(&defaulted, "1Gi", None));
        apply_with(&c, k, &claim(&classless, "1Gi", Some("")));
        assert_eq!(
            jsonpath(
                &c,
                k,
                &["pvc", &defaulted],
                "{.spec.storageClassName} {.spec.volumeMode} {.metadata.finalizers}"
            ),
            "local-path Filesystem [\"kubernetes.io/pvc-protection\"]"
        );
        assert_eq!(
            jsonpath(&c, k, &["pvc", &classless], "{.spec.storageClassName}|"),
            "|"
        );
        let out = c.ok(k, &["get", "pvc", &defaulted]);
        assert_eq!(
            header(&out),
            [
                "NAME",
                "STATUS",
                "VOLUME",
                "CAPACITY",
                "ACCESS MODES",
                "STORAGECLASS",
                "VOLUMEATTRIBUTESCLASS",
                "AGE"
            ],
            "{k}: {out}"
        );
        let row = &table(&out)[0];
        assert_eq!(row["STATUS"], "Pending");
        assert_eq!(row["STORAGECLASS"], "local-path");
        assert_eq!(row["CAPACITY"], "");
        let described = c.ok(k, &["describe", "pvc", &defaulted]);
        assert!(
            described.contains("StorageClass:  local-path")
                && described.contains("Status:        Pending"),
            "{k}: {described}"
        );
        let out = c.ok(k, &["get", "pv,pvc,sc"]);
        assert!(
            out.contains(&format!("persistentvolume/{pv}"))
                && out.contains(&format!("persistentvolumeclaim/{defaulted}"))
                && out.contains("storageclass.storage.k8s.io/local-path (default)"),
            "{k}: {out}"
        );

        // Errors, word for word.
        let bad = format!("kinds-bad-{i}");
        let no_size = format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {bad}\nspec:\n  accessModes: [ReadWriteOnce]\n"
        );
        assert_eq!(
            apply_fails(&c, k, &no_size),
            format!("The PersistentVolumeClaim \"{bad}\" is invalid: spec.resources[storage]: Required value")
        );
        let local_anywhere = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {bad}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  local: {{path: /mnt/disk}}\n"
        );
        assert_eq!(
            apply_fails(&c, k, &local_anywhere),
            format!("The PersistentVolume \"{bad}\" is invalid: spec.nodeAffinity: Required value: Local volume requires node affinity")
        );
        let grow = claim(&classless, "2Gi", Some(""));
        assert!(
            apply_fails(&c, k, &grow).ends_with("spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"),
            "{k}"
        );
        let moved = host_path_pv(&pv, "1024Mi", "manual", "/srv/elsewhere");
        assert!(
            apply_fails(&c, k, &moved).contains("spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation"),
            "{k}"
        );
        let class = format!("kinds-class-{i}");
        apply_with(
            &c,
            k,
            &format!("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: {class}\nprovisioner: example.com/one\n"),
        );
        assert_eq!(
            jsonpath(
                &c,
                k,
                &["sc", &class],
                "{.reclaimPolicy} {.volumeBindingMode}"
            ),
            "Delete Immediate"
        );
        let err = c.fails(
            k,
            &[
                "patch",
                "sc",
                &class,
                "--type",
                "merge",
                "-p",
                r#"{"provisioner":"example.com/two"}"#,
            ],
        );
        assert!(
            err.contains(&format!("The StorageClass \"{class}\" is invalid: provisioner: Forbidden: updates to provisioner are forbidden.")),
            "{k}: {err}"
        );
    }
    // Nothing refused was stored.
    let names = c.ok(KUBECTL_DEFAULT, &["get", "pv,pvc", "-o", "name"]);
    assert!(!names.contains("kinds-bad"), "{names}");
}

/// The newest Event about `name` with `reason`, as `type reason: message`.
fn event(c: &Cluster, name: &str, reason: &str) -> String {
    let selector = format!("involvedObject.name={name},reason={reason}");
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ],
    )
    .lines()
    .last()
    .unwrap_or_default()
    .to_string()
}

/// Poll until an Event about `name` with `reason` exists; returns it.
fn wait_event(c: &Cluster, name: &str, reason: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let e = event(c, name, reason);
        if !e.is_empty() {
            return e;
        }
        if Instant::now() > deadline {
            let log = c.log();
            let tail = &log[log.len().saturating_sub(4000)..];
            panic!("no {reason} event for {name}; server log tail:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_jsonpath(c: &Cluster, what: &[&str], path: &str, want: &str) {
    let path = format!("jsonpath={path}");
    let mut args: Vec<&str> = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", &path]);
    c.wait_for_output(&args, want, WAIT);
}

fn pod_with_claim(name: &str, claim: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 0
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
  containers:
  - name: main
    image: registry.invalid/never:pulled
    volumeMounts:
    - {{name: data, mountPath: /data}}
"#
    )
}

/// Static binding as kube-controller-manager does it: the smallest fitting volume of the
/// class, pre-bound volumes and claims, selectors; the events when nothing fits; Retain
/// keeps a volume Released; a bound claim grows only when its class allows and never
/// shrinks below its capacity.
#[test]
fn the_binder_matches_claims_to_volumes() {
    let c = Cluster::start();
    for (pv, size, path) in [
        ("small", "1Gi", "/srv/s"),
        ("big", "5Gi", "/srv/b"),
        ("mid", "2Gi", "/srv/m"),
    ] {
        c.apply(&host_path_pv(pv, size, "manual", path));
    }
    c.apply(&claim("c1", "1Gi", Some("manual")));
    wait_jsonpath(
        &c,
        &["pvc", "c1"],
        "{.status.phase} {.spec.volumeName}",
        "Bound small",
    );
    for k in kubectls() {
        let row = &table(&c.ok(k, &["get", "pvc", "c1"]))[0];
        assert_eq!(
            (
                row["STATUS"].as_str(),
                row["VOLUME"].as_str(),
                row["CAPACITY"].as_str(),
                row["ACCESS MODES"].as_str()
            ),
            ("Bound", "small", "1Gi", "RWO"),
            "{k}"
        );
    }
    wait_jsonpath(
        &c,
        &["pv", "small"],
        "{.status.phase} {.spec.claimRef.namespace}/{.spec.claimRef.name}",
        "Bound default/c1",
    );
    let row = table(&c.ok(KUBECTL_DEFAULT, &["get", "pv", "small"]))[0].clone();
    assert_eq!(
        (row["STATUS"].as_str(), row["CLAIM"].as_str()),
        ("Bound", "default/c1")
    );
    assert_eq!(
        jsonpath(&c, KUBECTL_DEFAULT, &["pvc", "c1"], "{.metadata.annotations.pv\\.kubernetes\\.io/bind-completed} {.metadata.annotations.pv\\.kubernetes\\.io/bound-by-controller}"),
        "yes yes"
    );
    assert_eq!(
        jsonpath(&c, KUBECTL_DEFAULT, &["pv", "big"], "{.status.phase}"),
        "Available"
    );

    // A volume reserved for a claim by claimRef goes to it, though a smaller one fits.
    c.apply(&format!(
        "{}  claimRef: {{namespace: default, name: reserved}}\n",
        host_path_pv("for-reserved", "8Gi", "manual", "/srv/r")
    ));
    c.apply(&claim("reserved", "1Gi", Some("manual")));
    wait_jsonpath(
        &c,
        &["pvc", "reserved"],
        "{.status.phase} {.spec.volumeName}",
        "Bound for-reserved",
    );
    // A claim naming its volume gets that one.
    c.apply(&format!(
        "{}  volumeName: big\n",
        claim("named", "1Gi", Some("manual"))
    ));
    wait_jsonpath(
        &c,
        &["pvc", "named"],
        "{.status.phase} {.spec.volumeName}",
        "Bound big",
    );
    // A selector: only the volume labelled size=2Gi.
    c.apply(&format!(
        "{}  selector: {{matchLabels: {{size: 2Gi}}}}\n",
        claim("picky", "100Mi", Some("manual"))
    ));
    wait_jsonpath(
        &c,
        &["pvc", "picky"],
        "{.status.phase} {.spec.volumeName}",
        "Bound mid",
    );

    // Nothing fits: the claim stays Pending with kube-controller-manager's event.
    c.apply(&claim("huge", "100Gi", Some("manual")));
    assert_eq!(
        wait_event(&c, "huge", "ProvisioningFailed"),
        "Warning ProvisioningFailed: storageclass.storage.k8s.io \"manual\" not found"
    );
    c.apply(&claim("classless", "1Gi", Some("")));
    assert_eq!(
        wait_event(&c, "classless", "FailedBinding"),
        "Normal FailedBinding: no persistent volumes available for this claim and no storage class is set"
    );
    for pvc in ["huge", "classless"] {
        assert_eq!(
            jsonpath(&c, KUBECTL_DEFAULT, &["pvc", pvc], "{.status.phase}"),
            "Pending"
        );
    }

    // A bound claim never shrinks below its volume's capacity, and grows only when its
    // class allows expansion.
    let out = c.apply_stdin(
        KUBECTL_DEFAULT,
        &["apply", "-f", "-"],
        &claim("picky", "50Mi", Some("manual")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"),
        "{err}"
    );
    let grow = c.fails(
        KUBECTL_DEFAULT,
        &[
            "patch",
            "pvc",
            "c1",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
        ],
    );
    assert!(
        grow.contains("persistentvolumeclaims \"c1\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"),
        "{grow}"
    );

    // Retain: the claim goes, the volume stays Released with its claimRef.
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pvc", "c1", "--wait=true", "--timeout=60s"],
    );
    wait_jsonpath(
        &c,
        &["pv", "small"],
        "{.status.phase} {.spec.claimRef.name}",
        "Released c1",
    );
    for k in kubectls() {
        let row = &table(&c.ok(k, &["get", "pv", "small"]))[0];
        assert_eq!(
            (row["STATUS"].as_str(), row["RECLAIM POLICY"].as_str()),
            ("Released", "Retain"),
            "{k}"
        );
    }
    // pv-protection: a bound volume being deleted waits for its claim.
    c.ok(KUBECTL_DEFAULT, &["delete", "pv", "mid", "--wait=false"]);
    assert_eq!(
        jsonpath(
            &c,
            KUBECTL_DEFAULT,
            &["pv", "mid"],
            "{.status.phase} {.metadata.finalizers}"
        ),
        "Bound [\"kubernetes.io/pv-protection\"]"
    );
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pvc", "picky", "--wait=true", "--timeout=60s"],
    );
    c.ok(
        KUBECTL_DEFAULT,
        &["wait", "--for=delete", "pv/mid", "--timeout=60s"],
    );
}

/// WaitForFirstConsumer and the scheduler: a local-path claim waits for a pod, the
/// scheduler picks the node and writes it on the claim, the local-path provisioner makes
/// a volume there and the binder binds it; a pod naming a missing claim stays Pending
/// with kube-scheduler's message; a claim in use is deleted only after its pod.
#[test]
fn local_path_claims_wait_for_their_pod_and_are_protected() {
    let c = Cluster::with_agent("pv-node", &[]);
    c.wait_for_output(
        &[
            "get",
            "sc",
            "local-path",
            "-o",
            "jsonpath={.volumeBindingMode}",
        ],
        "WaitForFirstConsumer",
        WAIT,
    );
    c.apply(&claim("lp", "64Mi", None));
    assert_eq!(
        wait_event(&c, "lp", "WaitForFirstConsumer"),
        "Normal WaitForFirstConsumer: waiting for first consumer to be created before binding"
    );
    assert_eq!(
        jsonpath(&c, KUBECTL_DEFAULT, &["pvc", "lp"], "{.status.phase}"),
        "Pending"
    );

    c.apply(&pod_with_claim("missing-claim", "nowhere"));
    c.wait_pod_field(
        "missing-claim",
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        "0/1 nodes are available: persistentvolumeclaim \"nowhere\" not found.",
        WAIT,
    );
    assert_eq!(c.pod_field("missing-claim", "{.spec.nodeName}"), "");

    c.apply(&pod_with_claim("consumer", "lp"));
    wait_jsonpath(&c, &["pvc", "lp"], "{.status.phase}", "Bound");
    c.wait_pod_field("consumer", "{.spec.nodeName}", "pv-node", WAIT);
    let uid = jsonpath(&c, KUBECTL_DEFAULT, &["pvc", "lp"], "{.metadata.uid}");
    let pv = format!("pvc-{uid}");
    assert_eq!(
        jsonpath(
            &c,
            KUBECTL_DEFAULT,
            &["pvc", "lp"],
            "{.spec.volumeName} {.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ),
        format!("{pv} pv-node")
    );
    let storage = c.data_dir().join("agent/storage");
    assert_eq!(
        jsonpath(&c, KUBECTL_DEFAULT, &["pv", &pv], "{.spec.hostPath.path} {.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]} {.spec.persistentVolumeReclaimPolicy} {.status.phase}"),
        format!("{}/{pv} pv-node Delete Bound", storage.display())
    );
    assert_eq!(
        wait_event(&c, "lp", "ExternalProvisioning"),
        "Normal ExternalProvisioning: Waiting for a volume to be created either by the external provisioner 'spindle.dev/local-path' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
    );
    assert_eq!(
        wait_event(&c, "lp", "ProvisioningSucceeded"),
        format!("Normal ProvisioningSucceeded: Successfully provisioned volume {pv}")
    );
    // Scheduled pods with the claim bound stay on the volume's node: a second pod too.
    c.apply(&pod_with_claim("second", "lp"));
    c.wait_pod_field("second", "{.spec.nodeName}", "pv-node", WAIT);

    // pvc-protection: the claim in use is Terminating until its pods are gone.
    c.ok(KUBECTL_DEFAULT, &["delete", "pvc", "lp", "--wait=false"]);
    for k in kubectls() {
        let row = &table(&c.ok(k, &["get", "pvc", "lp"]))[0];
        assert_eq!(row["STATUS"], "Terminating", "{k}");
    }
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pod", "consumer", "--wait=true", "--timeout=60s"],
    );
    assert_eq!(
        jsonpath(
            &c,
            KUBECTL_DEFAULT,
            &["pvc", "lp"],
            "{.metadata.finalizers}"
        ),
        "[\"kubernetes.io/pvc-protection\"]"
    );
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pod", "second", "--wait=true", "--timeout=60s"],
    );
    c.ok(
        KUBECTL_DEFAULT,
        &["wait", "--for=delete", "pvc/lp", "--timeout=60s"],
    );
    // Reclaim Delete: the provisioned volume goes with its claim.
    c.ok(
        KUBECTL_DEFAULT,
        &["wait", "--for=delete", &format!("pv/{pv}"), "--timeout=60s"],
    );
}
