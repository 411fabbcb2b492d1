//! persistentVolumeClaim and generic ephemeral volumes: the PersistentVolume bound to the
//! claim, bind-mounted onto the pod's volume directory. The data lives outside the pod's
//! directory, so it outlives the pod; teardown unmounts before it removes anything.
//!
//! A PV's source decides where the data is: `hostPath` and `local` go through the same
//! checks as a hostPath volume (never the agent's own data), and a volume made by the
//! built-in local-path provisioner is a directory named after the PV below the agent's
//! storage root, created here on first use without following links.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim, Pod, Volume,
};

use super::host_path::{self, HostPolicy};
use crate::env::{ConfigError, Sources};
use crate::safe_mount;
use spindle_meta::storage::{LOCAL_PATH_PROVISIONER, PROVISIONED_BY};

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The claim a volume uses and whether the pod asked for it read-only: its
/// `persistentVolumeClaim`, or for a generic ephemeral volume the claim named
/// `<pod>-<volume>` that the ephemeral volume controller makes for the pod.
pub fn claim_of(pod: &Pod, v: &Volume) -> Option<(String, bool)> {
    if let Some(c) = &v.persistent_volume_claim {
        return Some((c.claim_name.clone(), c.read_only.unwrap_or(false)));
    }
    v.ephemeral.as_ref().map(|_| {
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        (format!("{pod_name}-{}", v.name), false)
    })
}

/// How long a claim found not yet bound (or its volume not yet visible) is looked at
/// again before the pod is failed: the scheduler binds a pod once the claim names its
/// volume, and the binder writes the claim's Bound phase just after, so a pod may well
/// get here first. The kubelet too waits for its volumes rather than fail the pod.
const BIND_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const RECHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// Why a claim cannot be mounted: for now, or for good.
enum Unready {
    NotYet(ConfigError),
    Refused(ConfigError),
}

/// Mount the volume behind claim `name` onto `target`; returns the path runtimes mount.
pub async fn prepare(
    pod: &Pod,
    v: &Volume,
    name: &str,
    target: &Path,
    src: &Sources,
    policy: &HostPolicy,
) -> Result<PathBuf, ConfigError> {
    let deadline = tokio::time::Instant::now() + BIND_WAIT;
    loop {
        match bound_volume(pod, v, name, src).await {
            Ok(pv) => return mount_volume(&pv, target, policy),
            Err(Unready::NotYet(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(RECHECK).await
            }
            Err(Unready::NotYet(e) | Unready::Refused(e)) => return Err(e),
        }
    }
}

/// The volume claim `name` is bound to.
async fn bound_volume(
    pod: &Pod,
    v: &Volume,
    name: &str,
    src: &Sources,
) -> Result<PersistentVolume, Unready> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    // A read refused now may be allowed in a moment: the node authorizer learns of the
    // pod's binding and the claim's volume from the same watch the agent saw the pod
    // through, and may lag it. Retried within the bind wait, then reported.
    let pvc = src
        .claim(name)
        .await
        .map_err(Unready::NotYet)?
        .ok_or_else(|| {
            Unready::Refused(err(format!("persistentvolumeclaim {name:?} not found")))
        })?;
    check_claim(pod, v, ns, name, &pvc)?;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    src.volume(&pv_name)
        .await
        .map_err(Unready::NotYet)?
        .ok_or_else(|| {
            Unready::NotYet(err(format!(
                "error processing PVC {ns}/{name}: persistentvolume {pv_name:?} not found"
            )))
        })
}

/// What the kubelet checks of a claim before it mounts it (its wording).
fn check_claim(
    pod: &Pod,
    v: &Volume,
    ns: &str,
    name: &str,
    pvc: &PersistentVolumeClaim,
) -> Result<(), Unready> {
    if v.ephemeral.is_some() {
        let owned = pvc
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == pod.metadata.uid.as_ref() && o.controller == Some(true));
        if !owned {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            return Err(Unready::Refused(err(format!(
                "PVC {ns}/{name} was not created for pod {ns}/{pod_name} (pod is not owner)"
            ))));
        }
    }
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(Unready::Refused(err(format!(
            "error processing PVC {ns}/{name}: PVC is being deleted"
        ))));
    }
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref());
    if !bound || volume.is_none_or(str::is_empty) {
        return Err(Unready::NotYet(err(format!(
            "error processing PVC {ns}/{name}: PVC is not bound"
        ))));
    }
    Ok(())
}

fn mount_volume(
    pv: &PersistentVolume,
    target: &Path,
    policy: &HostPolicy,
) -> Result<PathBuf, ConfigError> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let provisioner = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .map(String::as_str);
    if provisioner == Some(LOCAL_PATH_PROVISIONER) {
        return local_path(name, target, &policy.local_path_root);
    }
    let spec = pv.spec.as_ref();
    if let Some(hp) = spec.and_then(|s| s.host_path.as_ref()) {
        let source = HostPathVolumeSource {
            path: hp.path.clone(),
            type_: hp.type_.clone(),
        };
        return host_path::prepare(&source, target, policy);
    }
    if let Some(local) = spec.and_then(|s| s.local.as_ref()) {
        // A local PV names a directory that must exist; nothing is created for it.
        let source = HostPathVolumeSource {
            path: local.path.clone(),
            type_: Some("Directory".into()),
        };
        return host_path::prepare(&source, target, policy);
    }
    Err(err(format!(
        "persistentvolume {name:?} has a volume source this node cannot mount (hostPath, local and local-path volumes only)"
    )))
}

/// The local-path volume `name` under `root`, mounted at `target`.
fn local_path(name: &str, target: &Path, root: &Path) -> Result<PathBuf, ConfigError> {
    let fail = |e: &dyn std::fmt::Display| err(format!("local-path volume {name}: {e}"));
    let dir = open_local_path(name, root).map_err(|e| fail(&e))?;
    safe_mount::mount_fd(&dir, target, true).map_err(|e| fail(&e))?;
    Ok(target.to_path_buf())
}

/// Open, creating it if missing, the directory of local-path volume `name` (mode 0777
/// when made, as k3s's provisioner makes them, so a container of any user can write).
/// Never follows a link: the directory is the root's own child or nothing.
fn open_local_path(name: &str, root: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    check_name(name)?;
    std::fs::create_dir_all(root)?;
    let root_fd = safe_mount::open_root(root)?;
    let fresh = !root.join(name).exists();
    let dir =
        safe_mount::create_dirs(&root_fd, Path::new(name), name).map_err(std::io::Error::other)?;
    if fresh {
        // Through the descriptor (an O_PATH one, which fchmod refuses): the
        // directory just made, not whatever the name shows by now.
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::PermissionsExt;
        let by_fd = format!("/proc/self/fd/{}", dir.as_raw_fd());
        std::fs::set_permissions(by_fd, std::fs::Permissions::from_mode(0o777))?;
    }
    Ok(dir)
}

/// A PV name is a DNS subdomain; refusing anything else keeps a local-path volume one
/// component below its root.
fn check_name(name: &str) -> std::io::Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(std::io::Error::other(format!(
            "{name:?} is not a valid local-path volume name"
        )));
    }
    Ok(())
}

/// Remove local-path volume `name` below `root` (its PersistentVolume was deleted with
/// reclaim policy Delete). Never follows a link out of the root.
pub fn remove_local_path(name: &str, root: &Path) -> std::io::Result<()> {
    check_name(name)?;
    let path = root.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
        Ok(_) => std::fs::remove_file(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A local-path volume is a 0777 directory named after its PV below the storage
    /// root, shown at the target; it outlives the mount and goes on removal.
    #[test]
    fn local_path_volumes_live_below_the_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("storage");
        let target = t.path().join("pod/volumes/data");
        let shown = local_path("pvc-1", &target, &root).expect("mount");
        assert_eq!(shown, target);
        std::fs::write(target.join("kept"), "42").expect("write through the mount");
        let dir = root.join("pvc-1");
        let mode = std::fs::metadata(&dir).expect("made").permissions().mode();
        assert_eq!(mode & 0o777, 0o777);
        safe_mount::unmount_below(&t.path().join("pod"));
        assert_eq!(
            std::fs::read_to_string(dir.join("kept")).expect("kept"),
            "42"
        );
        // A second use finds the data.
        local_path("pvc-1", &target, &root).expect("mount again");
        assert_eq!(
            std::fs::read_to_string(target.join("kept")).expect("read"),
            "42"
        );
        safe_mount::unmount_below(&t.path().join("pod"));
        remove_local_path("pvc-1", &root).expect("remove");
        assert!(!dir.exists());
    }

    /// Names that would leave the root, and a link planted where the volume goes, are
    /// refused: nothing outside the root is mounted or removed.
    #[test]
    fn local_path_never_leaves_its_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("storage");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "x").expect("write");
        let target = t.path().join("target");
        for name in ["", "..", "../outside", "a/b", ".hidden"] {
            local_path(name, &target, &root).expect_err(name);
            remove_local_path(name, &root).expect_err(name);
        }
        std::os::unix::fs::symlink(&outside, root.join("pvc-link")).expect("symlink");
        let e = local_path("pvc-link", &target, &root).expect_err("through a link");
        assert!(e.0.contains("pvc-link"), "{}", e.0);
        assert!(!safe_mount::is_mountpoint(&target));
        remove_local_path("pvc-link", &root).expect("the link itself goes");
        assert!(
            outside.join("secret").exists(),
            "the link's target is untouched"
        );
    }
}
