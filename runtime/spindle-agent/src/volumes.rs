//! A pod's volumes as directories on the node, shared by all its containers: each volume
//! is one directory under `<pod dir>/volumes/<name>`, which the runtimes mount (Wasm:
//! preopen) at each container's mountPath. configMap, secret and downwardAPI volumes are
//! files written by the agent and rewritten when their source changes.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use crate::env::{self, ConfigError, Sources};
use crate::runtime::Mount;

/// Where each volume of a pod lives on the node.
#[derive(Clone, Debug, Default)]
pub struct PodVolumes {
    pub dirs: HashMap<String, PathBuf>,
    /// Volumes this agent mounted (tmpfs) and must unmount.
    pub mounts: Vec<PathBuf>,
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Set up every volume of the pod under `pod_dir`. Idempotent: a second call (agent
/// restart, or a refresh) reuses what is there and rewrites generated files.
pub async fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    src: &mut Sources,
    host_ip: &str,
) -> Result<PodVolumes, ConfigError> {
    let mut out = PodVolumes::default();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(out);
    };
    let root = pod_dir.join("volumes");
    for v in spec.volumes.iter().flatten() {
        let dir = volume_dir(pod, v, &root, &mut out).await?;
        write_contents(pod, v, &dir, src, host_ip).await?;
        out.dirs.insert(v.name.clone(), dir);
    }
    Ok(out)
}

/// Rewrite the generated volumes (configMap, secret, downwardAPI) from their sources.
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

/// Whether any volume is generated from API objects (and so worth refreshing).
pub fn has_generated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter()
                .any(|v| v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some())
        })
}

async fn volume_dir(
    pod: &Pod,
    v: &Volume,
    root: &Path,
    out: &mut PodVolumes,
) -> Result<PathBuf, ConfigError> {
    if let Some(hp) = &v.host_path {
        let path = PathBuf::from(&hp.path);
        let kind = hp.type_.as_deref().unwrap_or("");
        match kind {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path)
                .map_err(|e| err(format!("hostPath {}: {e}", hp.path)))?,
            "" | "Directory" => {
                if !path.is_dir() {
                    return Err(err(format!(
                        "hostPath type check failed: {} is not a directory",
                        hp.path
                    )));
                }
            }
            other => {
                return Err(err(format!(
                    "hostPath type {other:?} is not supported for Wasm containers: WASI mounts directories only"
                )))
            }
        }
        return Ok(path);
    }
    let dir = root.join(&v.name);
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("volume {:?}: {e}", v.name)))?;
    if let Some(ed) = &v.empty_dir {
        if ed.medium.as_deref() == Some("Memory") {
            let size = ed
                .size_limit
                .as_ref()
                .and_then(|q| env::quantity_f64(&q.0))
                .map(|b| b as u64);
            match mount_tmpfs(&dir, size) {
                Ok(true) => out.mounts.push(dir.clone()),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    pod = ?pod.metadata.name,
                    volume = %v.name,
                    error = %e,
                    "could not mount tmpfs for a Memory emptyDir; using a plain directory"
                ),
            }
        }
    }
    Ok(dir)
}

/// Mount a tmpfs at `dir` unless one is there already (agent restart). Returns whether
/// `dir` is now a tmpfs mount this agent owns.
fn mount_tmpfs(dir: &Path, size: Option<u64>) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    if is_mountpoint(dir) {
        return Ok(true);
    }
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let opts = match size {
        Some(s) => format!("mode=0777,size={s}"),
        None => "mode=0777".to_string(),
    };
    let data = std::ffi::CString::new(opts)?;
    let fstype = c"tmpfs";
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

fn is_mountpoint(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|m| m == want)
}

/// Unmount what the pod mounted and remove its directory.
pub fn teardown(pod_dir: &Path) {
    let prefix = pod_dir.to_string_lossy().to_string();
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(4)) {
            if m.starts_with(&prefix) {
                if let Ok(c) = std::ffi::CString::new(m) {
                    // SAFETY: a valid C string; MNT_DETACH never blocks on busy mounts.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(pod_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %pod_dir.display(), error = %e, "removing the pod directory");
        }
    }
}

/// Write files so the directory holds exactly `files` (path relative to dir -> bytes,
/// mode). Each file is written to a temporary name and renamed, so a reader sees the old
/// or the new content, never half of it.
fn sync_files(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> Result<(), ConfigError> {
    for (rel, (bytes, mode)) in files {
        if rel.split('/').any(|p| p == ".." || p.is_empty()) || rel.starts_with('/') {
            return Err(err(format!("invalid path {rel:?} in volume items")));
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(format!("{rel}: {e}")))?;
        }
        if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("f")
        ));
        std::fs::write(&tmp, bytes).map_err(|e| err(format!("{rel}: {e}")))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| err(format!("{rel}: {e}")))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(format!("{rel}: {e}")))?;
    }
    // Keys removed from the source go away from the volume.
    remove_stale(dir, dir, files);
    Ok(())
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
        if path.is_dir() {
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
    if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.map(|m| m as u32).unwrap_or(0o644);
        let optional = cm.optional.unwrap_or(false);
        let data = match src.config_map(&cm.name).await? {
            Some(d) => d
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect::<BTreeMap<_, _>>(),
            None if optional => BTreeMap::new(),
            None => return Err(err(format!("configmap {:?} not found", cm.name))),
        };
        let files = project(&data, cm.items.as_ref(), mode, "ConfigMap", optional)?;
        return sync_files(dir, &files);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.map(|m| m as u32).unwrap_or(0o644);
        let optional = s.optional.unwrap_or(false);
        let data = match src.secret_bytes(&name).await? {
            Some(d) => d,
            None if optional => BTreeMap::new(),
            None => return Err(err(format!("secret {name:?} not found"))),
        };
        let files = project(&data, s.items.as_ref(), mode, "Secret", optional)?;
        return sync_files(dir, &files);
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.map(|m| m as u32).unwrap_or(0o644);
        let mut files = BTreeMap::new();
        for item in d.items.iter().flatten() {
            let value = downward_item(pod, item, host_ip)?;
            let m = item.mode.map(|m| m as u32).unwrap_or(mode);
            files.insert(item.path.clone(), (value.into_bytes(), m));
        }
        return sync_files(dir, &files);
    }
    Ok(())
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
        return env::resource_value(c, &r.resource, r.divisor.as_ref());
    }
    Ok(String::new())
}

/// The mounts of one container: each volumeMount's volume directory (or a subPath of it)
/// at its mountPath. configMap, secret and downwardAPI volumes are always read-only, as in
/// Kubernetes.
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
    for m in c.volume_mounts.iter().flatten() {
        let dir = vols
            .dirs
            .get(&m.name)
            .ok_or_else(|| err(format!("volumeMount {:?}: no volume of that name", m.name)))?;
        let generated = spec_vols.iter().any(|v| {
            v.name == m.name
                && (v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some())
        });
        let mut host = dir.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(err(format!(
                    "subPath {sub:?} must be a relative path inside the volume"
                )));
            }
            host = dir.join(sub);
            std::fs::create_dir_all(&host).map_err(|e| err(format!("subPath {sub}: {e}")))?;
        }
        out.push(Mount {
            host,
            guest: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false) || generated,
        });
    }
    Ok(out)
}
