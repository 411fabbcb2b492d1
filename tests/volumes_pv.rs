//! PersistentVolumes, PersistentVolumeClaims and StorageClasses end to end: served with
//! kube-apiserver's tables, defaults, admission and errors, bound by the PV binder, and
//! placed by the scheduler, driven with both kubectl versions.

mod common;

use std::collections::HashMap;
use std::time::Duration;

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
