//! A pod's volumes as directories on the node, shared by all its containers: each volume
//! is one directory under `<pod dir>/volumes/<name>`, which the runtimes mount (Wasm:
//! preopen) at each container's mountPath. configMap, secret, downwardAPI and projected
//! volumes are files written by the agent and rewritten when their source changes;
//! hostPath and claim volumes are bind mounts of directories outside the pod's.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Volume,
};

use crate::env::{self, ConfigError, Sources};
use crate::paths::PodPaths;
use crate::runtime::Mount;
use crate::safe_mount;

mod claim;
mod host_path;
pub use claim::remove_local_path;
pub use host_path::HostPolicy;

/// Where each volume of a pod lives on the node.
#[derive(Clone, Debug, Default)]
pub struct PodVolumes {
    pub dirs: HashMap<String, PathBuf>,
    /// The pod's directory: subPath mounts are made under it.
    pub paths: PodPaths,
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Set up every volume of the pod in its directory. Idempotent: a second call (agent
/// restart, or a refresh) reuses what is there and rewrites generated files. `hosts` says
/// what hostPath volumes may reach.
pub async fn prepare(
    pod: &Pod,
    paths: &PodPaths,
    src: &mut Sources,
    host_ip: &str,
    hosts: &HostPolicy,
) -> Result<PodVolumes, ConfigError> {
    let mut out = PodVolumes {
        paths: paths.clone(),
        ..Default::default()
    };
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(out);
    };
    // Nothing is made for a pod with a volume the agent cannot provide.
    if let Some(msg) = unsupported_message(pod) {
        return Err(err(msg));
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(hp) = &v.host_path {
            // A second source would also write into the host directory (and prune it).
            if source_count(v) > 1 {
                return Err(err(format!(
                    "volume {:?} may not specify more than 1 volume type",
                    v.name
                )));
            }
            let dir = host_path::prepare(hp, &paths.volume(&v.name), hosts)?;
            out.dirs.insert(v.name.clone(), dir);
            continue;
        }
        if let Some((claim, _)) = claim::claim_of(pod, v) {
            let dir = claim::prepare(pod, v, &claim, &paths.volume(&v.name), src, hosts).await?;
            out.dirs.insert(v.name.clone(), dir);
            continue;
        }
        let dir = volume_dir(pod, v, paths)?;
        write_contents(pod, v, &dir, src, host_ip).await?;
        out.dirs.insert(v.name.clone(), dir);
    }
    Ok(out)
}

/// The volume types this agent implements. Any other (nfs, csi, ...) must never become a
/// plain directory: data a user expects to persist would live in the pod's directory and
/// go with the pod.
const SUPPORTED: [&str; 8] = [
    "emptyDir",
    "hostPath",
    "configMap",
    "secret",
    "downwardAPI",
    "persistentVolumeClaim",
    "ephemeral",
    "projected",
];

/// The pod's volumes of a type this agent does not implement, with their type, as the
/// API spells it. A volume that names no source at all is an emptyDir, as the API
/// server's defaulting makes it.
pub fn unsupported(pod: &Pod) -> Vec<(String, String)> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .filter_map(|v| {
            let json = serde_json::to_value(v).ok()?;
            let kind = json
                .as_object()?
                .keys()
                .find(|k| *k != "name" && !SUPPORTED.contains(&k.as_str()))?
                .clone();
            Some((v.name.clone(), kind))
        })
        .collect()
}

/// Why the pod's volumes cannot be set up on this node, worded as the kubelet's volume
/// manager reports volumes it cannot process ("Unable to attach or mount volumes: " is
/// the event's prefix); `None` when every volume is of a type the agent implements.
pub fn unsupported_message(pod: &Pod) -> Option<String> {
    let bad = unsupported(pod);
    if bad.is_empty() {
        return None;
    }
    let names: Vec<&str> = bad.iter().map(|(n, _)| n.as_str()).collect();
    let why: Vec<String> = bad
        .iter()
        .map(|(n, t)| format!("volume {n:?} has an unsupported type {t:?}"))
        .collect();
    Some(format!(
        "unmounted volumes=[{}], unattached volumes=[], failed to process volumes=[{}]: {}",
        names.join(" "),
        names.join(" "),
        why.join("; ")
    ))
}

/// A disk emptyDir with a sizeLimit, which the agent measures.
#[derive(Clone, Debug)]
pub struct DiskLimit {
    pub name: String,
    pub dir: PathBuf,
    pub bytes: u64,
    /// The limit as the pod wrote it, for the eviction message.
    pub quantity: String,
}

/// The disk emptyDirs of the pod that have a sizeLimit (memory ones are bounded by their
/// tmpfs size instead).
pub fn disk_limits(pod: &Pod, vols: &PodVolumes) -> Vec<DiskLimit> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .filter_map(|v| {
            let ed = v.empty_dir.as_ref()?;
            if ed.medium.as_deref() == Some("Memory") {
                return None;
            }
            let q = ed.size_limit.as_ref()?;
            Some(DiskLimit {
                name: v.name.clone(),
                dir: vols.dirs.get(&v.name)?.clone(),
                bytes: crate::resources::bytes(q)?,
                quantity: q.0.clone(),
            })
        })
        .collect()
}

/// Bytes of disk used below `dir` (allocated blocks, as du counts them), without
/// following links or leaving the directory's filesystem.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != top.dev() {
                continue;
            }
            total = total.saturating_add(m.blocks().saturating_mul(512));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// How many sources a volume names (Kubernetes allows exactly one).
fn source_count(v: &Volume) -> usize {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| {
            j.as_object()
                .map(|o| o.keys().filter(|k| *k != "name").count())
        })
        .unwrap_or(0)
}

/// Rewrite the generated volumes (configMap, secret, downwardAPI, projected) from their
/// sources.
pub async fn refresh(
    pod: &Pod,
    vols: &PodVolumes,
    src: &mut Sources,
    host_ip: &str,
) -> Result<(), ConfigError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(dir) = vols.dirs.get(&v.name) {
            write_contents(pod, v, dir, src, host_ip).await?;
        }
    }
    Ok(())
}

/// Whether the volume's files are generated from API objects (configMap, secret,
/// downwardAPI, projected): written by the agent, refreshed, always read-only.
fn is_generated(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

/// Whether any volume is generated from API objects (and so worth refreshing).
pub fn has_generated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| vs.iter().any(is_generated))
}

/// Whether every generated volume of the pod is one the ServiceAccount admission plugin
/// added (`kube-api-access-<suffix>`).
pub fn only_service_account_volumes(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter()
                .filter(|v| is_generated(v))
                .all(|v| v.name.starts_with("kube-api-access-") && v.projected.is_some())
        })
}

fn volume_dir(pod: &Pod, v: &Volume, paths: &PodPaths) -> Result<PathBuf, ConfigError> {
    let dir = paths.volume(&v.name);
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("volume {:?}: {e}", v.name)))?;
    if let Some(ed) = &v.empty_dir {
        if ed.medium.as_deref() == Some("Memory") {
            let size = memory_volume_size(pod, ed.size_limit.as_ref());
            if let Err(e) = mount_tmpfs(&dir, size) {
                tracing::warn!(
                    pod = ?pod.metadata.name,
                    volume = %v.name,
                    error = %e,
                    "could not mount tmpfs for a Memory emptyDir; using a plain directory"
                );
            }
        }
    }
    Ok(dir)
}

/// The size of a memory-backed emptyDir, as the kubelet sizes it: its sizeLimit, but
/// never more than the pod's memory limit (the sum of its containers' limits, when each
/// has one); without either, the tmpfs default.
fn memory_volume_size(
    pod: &Pod,
    size_limit: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Option<u64> {
    let limit = size_limit.and_then(crate::resources::bytes);
    let pod_limit = pod.spec.as_ref().and_then(|s| {
        s.containers.iter().try_fold(0u64, |sum, c| {
            let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
            Some(sum.saturating_add(crate::resources::bytes(q)?))
        })
    });
    match (limit, pod_limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Mount a tmpfs at `dir` unless one is there already (agent restart).
fn mount_tmpfs(dir: &Path, size: Option<u64>) -> std::io::Result<()> {
    if safe_mount::is_mountpoint(dir) {
        return Ok(());
    }
    let opts = match size {
        Some(s) => format!("mode=0777,size={s}"),
        None => "mode=0777".to_string(),
    };
    use rustix::mount::{mount, MountFlags};
    mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(std::ffi::CString::new(opts)?.as_c_str()),
    )?;
    Ok(())
}

/// Unmount what the pod mounted and remove its directory. If a mount cannot be removed the
/// directory stays: removing through a mount would delete what it shows (a hostPath's host
/// files).
pub fn teardown(pod_dir: &Path) {
    let left = safe_mount::unmount_below(pod_dir);
    if !left.is_empty() {
        tracing::warn!(
            dir = %pod_dir.display(),
            mounts = ?left,
            "mounts under the pod directory could not be removed; keeping the directory"
        );
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(pod_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %pod_dir.display(), error = %e, "removing the pod directory");
        }
    }
}

/// Write files so the directory holds exactly `files` (path relative to dir -> bytes,
/// mode). Each file is written to a temporary name and renamed, so a reader sees the old
/// or the new content, never half of it. No step follows a symbolic link: a link found
/// where a directory or file should be is an error (write) or removed (stale entries).
fn sync_files(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> Result<(), ConfigError> {
    for (rel, (bytes, mode)) in files {
        if rel.split('/').any(|p| p == ".." || p.is_empty()) || rel.starts_with('/') {
            return Err(err(format!("invalid path {rel:?} in volume items")));
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            make_dirs_nofollow(dir, parent).map_err(|e| err(format!("{rel}: {e}")))?;
        }
        if read_nofollow(&path).as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("f")
        ));
        write_new(&tmp, bytes, *mode).map_err(|e| err(format!("{rel}: {e}")))?;
        // rename replaces a link at `path` itself, never what it points to.
        std::fs::rename(&tmp, &path).map_err(|e| err(format!("{rel}: {e}")))?;
    }
    // Keys removed from the source go away from the volume.
    remove_stale(dir, dir, files);
    Ok(())
}

/// Create the directories from `root` down to `dir`, refusing any that is a link.
fn make_dirs_nofollow(root: &Path, dir: &Path) -> std::io::Result<()> {
    let rel = dir.strip_prefix(root).map_err(std::io::Error::other)?;
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    cur.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&cur)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_nofollow(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).ok()?;
    Some(out)
}

/// Write a fresh file: whatever (file or link) was left at `path` is removed first, and
/// the file is created exclusively, so the write cannot land through a link.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)?;
    // The umask may have narrowed the requested mode.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
}

fn remove_stale(root: &Path, dir: &Path, keep: &BTreeMap<String, (Vec<u8>, u32)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        // The entry's own type: a link to a directory is a link, never descended into.
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            remove_stale(root, &path, keep);
            if keep.keys().all(|k| !k.starts_with(&format!("{rel}/"))) {
                let _ = std::fs::remove_dir_all(&path);
            }
        } else if !keep.contains_key(&rel) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
    optional: bool,
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, ConfigError> {
    let mut files = BTreeMap::new();
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(b) => {
                        let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
                        files.insert(it.path.clone(), (b.clone(), mode));
                    }
                    None if optional => {}
                    None => {
                        return Err(err(format!(
                            "configmap references non-existent {what} key: {}",
                            it.key
                        )))
                    }
                }
            }
        }
        _ => {
            for (k, b) in data {
                files.insert(k.clone(), (b.clone(), default_mode));
            }
        }
    }
    Ok(files)
}

async fn write_contents(
    pod: &Pod,
    v: &Volume,
    dir: &Path,
    src: &mut Sources,
    host_ip: &str,
) -> Result<(), ConfigError> {
    let files = if let Some(cm) = &v.config_map {
        let mode = mode_or_default(cm.default_mode);
        config_map_files(src, &cm.name, cm.items.as_ref(), mode, cm.optional).await?
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = mode_or_default(s.default_mode);
        secret_files(src, &name, s.items.as_ref(), mode, s.optional).await?
    } else if let Some(d) = &v.downward_api {
        let mode = mode_or_default(d.default_mode);
        downward_files(pod, d.items.as_ref(), mode, host_ip)?
    } else if let Some(p) = &v.projected {
        projected_files(pod, p, src, host_ip).await?
    } else {
        return Ok(());
    };
    sync_files(dir, &files)
}

/// Files of each volume: relative path -> (bytes, mode).
type Files = BTreeMap<String, (Vec<u8>, u32)>;

fn mode_or_default(mode: Option<i32>) -> u32 {
    mode.map(|m| m as u32).unwrap_or(0o644)
}

async fn config_map_files(
    src: &mut Sources,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    optional: Option<bool>,
) -> Result<Files, ConfigError> {
    let optional = optional.unwrap_or(false);
    let data = match src.config_map(name).await? {
        Some(d) => d
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect::<BTreeMap<_, _>>(),
        None if optional => BTreeMap::new(),
        None => return Err(err(format!("configmap {name:?} not found"))),
    };
    project(&data, items, mode, "ConfigMap", optional)
}

async fn secret_files(
    src: &mut Sources,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    optional: Option<bool>,
) -> Result<Files, ConfigError> {
    let optional = optional.unwrap_or(false);
    let data = match src.secret_bytes(name).await? {
        Some(d) => d,
        None if optional => BTreeMap::new(),
        None => return Err(err(format!("secret {name:?} not found"))),
    };
    project(&data, items, mode, "Secret", optional)
}

fn downward_files(
    pod: &Pod,
    items: Option<&Vec<DownwardAPIVolumeFile>>,
    mode: u32,
    host_ip: &str,
) -> Result<Files, ConfigError> {
    let mut files = BTreeMap::new();
    for item in items.into_iter().flatten() {
        let value = downward_item(pod, item, host_ip)?;
        let m = item.mode.map(|m| m as u32).unwrap_or(mode);
        files.insert(item.path.clone(), (value.into_bytes(), m));
    }
    Ok(files)
}

/// A projected volume: the files of each of its sources in one directory, the
/// volume's defaultMode for those without their own.
async fn projected_files(
    pod: &Pod,
    p: &ProjectedVolumeSource,
    src: &mut Sources,
    host_ip: &str,
) -> Result<Files, ConfigError> {
    let mode = mode_or_default(p.default_mode);
    let mut files = Files::new();
    for source in p.sources.iter().flatten() {
        let more = if let Some(cm) = &source.config_map {
            config_map_files(src, &cm.name, cm.items.as_ref(), mode, cm.optional).await?
        } else if let Some(s) = &source.secret {
            secret_files(src, &s.name, s.items.as_ref(), mode, s.optional).await?
        } else if let Some(d) = &source.downward_api {
            downward_files(pod, d.items.as_ref(), mode, host_ip)?
        } else if let Some(t) = &source.service_account_token {
            let audience = t.audience.as_deref().unwrap_or("");
            let token = src
                .service_account_token(pod, audience, t.expiration_seconds)
                .await?;
            Files::from([(t.path.clone(), (token.into_bytes(), mode))])
        } else {
            // clusterTrustBundle: refused, never an empty file.
            return Err(err(
                "projected volume: only configMap, secret, downwardAPI and serviceAccountToken sources are supported on this node",
            ));
        };
        files.extend(more);
    }
    Ok(files)
}

fn downward_item(
    pod: &Pod,
    item: &DownwardAPIVolumeFile,
    host_ip: &str,
) -> Result<String, ConfigError> {
    if let Some(f) = &item.field_ref {
        return env::field_value(pod, &f.field_path, "", host_ip)
            .ok_or_else(|| err(format!("unsupported fieldPath {:?}", f.field_path)));
    }
    if let Some(r) = &item.resource_field_ref {
        let spec = pod.spec.as_ref().ok_or_else(|| err("pod has no spec"))?;
        let name = r.container_name.clone().unwrap_or_default();
        let c: &Container = spec
            .containers
            .iter()
            .find(|c| c.name == name)
            .or_else(|| spec.containers.first())
            .ok_or_else(|| err(format!("container {name:?} not found")))?;
        return crate::resources::field_value(c, &r.resource, r.divisor.as_ref());
    }
    Ok(String::new())
}

/// The mounts of one container: each volumeMount's volume directory (or a subPath of it)
/// at its mountPath. configMap, secret and downwardAPI volumes are always read-only, as in
/// Kubernetes. A subPath is resolved inside its volume without following links out of it
/// and bind-mounted under `<pod>/volume-subpaths/<volume>/<container>/<index>` (as the
/// kubelet does), so a runtime is only ever given paths the agent owns.
pub fn container_mounts(
    pod: &Pod,
    c: &Container,
    vols: &PodVolumes,
) -> Result<Vec<Mount>, ConfigError> {
    let spec_vols = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
        let dir = vols
            .dirs
            .get(&m.name)
            .ok_or_else(|| err(format!("volumeMount {:?}: no volume of that name", m.name)))?;
        // Generated volumes are always read-only, and so is a claim the pod
        // mounts with `readOnly: true`.
        let generated = spec_vols.iter().any(|v| {
            v.name == m.name
                && (is_generated(v)
                    || claim::claim_of(pod, v).is_some_and(|(_, read_only)| read_only))
        });
        let mut host = dir.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            let target = vols.paths.volume_subpath(&m.name, &c.name, index);
            subpath_mount(dir, sub, &target).map_err(|e| {
                err(format!(
                    "failed to prepare subPath for volumeMount {:?} of container {:?}: {e}",
                    m.name, c.name
                ))
            })?;
            host = target;
        }
        out.push(Mount {
            host,
            guest: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false) || generated,
        });
    }
    Ok(out)
}

/// Resolve `sub` beneath the volume directory and bind it at `target`. The subPath is
/// resolved again at every container start and exec, as the kubelet does: a mount made
/// earlier is kept only while it still shows what the subPath names now, so a subPath
/// replaced by a link out of the volume fails the start instead of being ignored.
fn subpath_mount(volume: &Path, sub: &str, target: &Path) -> Result<(), String> {
    let root = safe_mount::open_root(volume).map_err(|e| format!("volume directory: {e}"))?;
    let fd = safe_mount::open_beneath(&root, sub).map_err(|e| format!("subPath {e}"))?;
    // nodev even for a subPath of a hostPath: the subPath is what the runtime is given.
    safe_mount::mount_fd(&fd, target, true).map_err(|e| format!("subPath {sub:?}: bind mount: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}], "volumes": volumes},
        }))
        .expect("pod")
    }

    /// A client that is never reached: preparation must refuse before reading anything.
    fn offline() -> Sources {
        let cfg = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        Sources::new(kube::Client::try_from(cfg).expect("client"), "default")
    }

    #[tokio::test]
    async fn unsupported_types_are_refused_and_nothing_is_made() {
        let pod = pod(serde_json::json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "data", "csi": {"driver": "x"}},
            {"name": "share", "nfs": {"server": "192.0.2.1", "path": "/x"}},
        ]));
        assert_eq!(
            unsupported(&pod),
            vec![
                ("data".to_string(), "csi".to_string()),
                ("share".to_string(), "nfs".to_string())
            ]
        );
        let t = tempfile::tempdir().expect("tmp");
        let paths = PodPaths::new(t.path().join("pod"));
        let e = prepare(&pod, &paths, &mut offline(), "", &HostPolicy::default())
            .await
            .expect_err("an unsupported volume");
        assert_eq!(
            e.0,
            "unmounted volumes=[data share], unattached volumes=[], failed to process volumes=[data share]: \
             volume \"data\" has an unsupported type \"csi\"; \
             volume \"share\" has an unsupported type \"nfs\""
        );
        assert!(!paths.volumes().exists(), "no volume directory is made");
    }

    #[test]
    fn implemented_types_pass() {
        let pod = pod(serde_json::json!([
            {"name": "a", "emptyDir": {"medium": "Memory"}},
            {"name": "b", "configMap": {"name": "cm"}},
            {"name": "c", "secret": {"secretName": "s"}},
            {"name": "d", "downwardAPI": {"items": []}},
            {"name": "e", "hostPath": {"path": "/tmp"}},
            {"name": "f"},
        ]));
        assert!(unsupported(&pod).is_empty());
        assert_eq!(unsupported_message(&pod), None);
    }
}
