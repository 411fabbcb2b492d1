//! hostPath volumes: the types Kubernetes defines, checked the way the kubelet checks them,
//! never a path that exposes the agent's own data or the server's store, and mounted from
//! an open file descriptor onto the pod's volume directory so that no runtime resolves the
//! host path by name (a link swapped in later cannot redirect the mount).

use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::HostPathVolumeSource;
use rustix::fs::FileType;

use crate::env::ConfigError;
use crate::safe_mount;

/// The hostPath types of the Kubernetes API, with what each requires of the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    fn parse(s: Option<&str>) -> Option<Kind> {
        Some(match s.unwrap_or("") {
            "" => Kind::Unset,
            "DirectoryOrCreate" => Kind::DirectoryOrCreate,
            "Directory" => Kind::Directory,
            "FileOrCreate" => Kind::FileOrCreate,
            "File" => Kind::File,
            "Socket" => Kind::Socket,
            "CharDevice" => Kind::CharDevice,
            "BlockDevice" => Kind::BlockDevice,
            _ => return None,
        })
    }

    /// The file type the kind requires and the kubelet's words when it is something else.
    fn required(self) -> Option<(FileType, &'static str)> {
        Some(match self {
            Kind::Unset => return None,
            Kind::DirectoryOrCreate | Kind::Directory => (FileType::Directory, "a directory"),
            Kind::FileOrCreate | Kind::File => (FileType::RegularFile, "a file"),
            Kind::Socket => (FileType::Socket, "a socket file"),
            Kind::CharDevice => (FileType::CharacterDevice, "a character device"),
            Kind::BlockDevice => (FileType::BlockDevice, "a block device"),
        })
    }
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// What this node lets hostPath volumes reach.
#[derive(Clone, Debug, Default)]
pub struct HostPolicy {
    /// Directories no hostPath may be in or above (the agent's data, the server's store).
    pub protected: Vec<PathBuf>,
    /// `--allow-privileged`: device nodes and the kernel's filesystems may be mounted.
    pub allow_privileged: bool,
    /// Where local-path PersistentVolumes live (inside the agent's data, so no
    /// hostPath reaches them; only their own claims do).
    pub local_path_root: PathBuf,
}

/// Check and create (for the `...OrCreate` types) the host path of volume `name`, then
/// bind it onto `target` (the pod's volume directory). Returns the path runtimes mount.
/// Without `--allow-privileged`, device types and the kernel's filesystems are refused
/// and the mount is nodev: Wasm guests open files as the agent itself (root, outside any
/// device cgroup), so a device node or `/proc/self/mem` would be the host's.
pub fn prepare(
    hp: &HostPathVolumeSource,
    target: &Path,
    policy: &HostPolicy,
) -> Result<PathBuf, ConfigError> {
    let protected = policy.protected.as_slice();
    let path = Path::new(&hp.path);
    let kind = Kind::parse(hp.type_.as_deref())
        .ok_or_else(|| err(format!("hostPath type {:?} is not supported", hp.type_)))?;
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(err(format!(
            "hostPath {:?} must be an absolute path without '..'",
            hp.path
        )));
    }
    if matches!(kind, Kind::CharDevice | Kind::BlockDevice) && !policy.allow_privileged {
        return Err(err(format!(
            "hostPath {} of type {:?} is refused: device volumes need an agent started with --allow-privileged",
            hp.path,
            hp.type_.as_deref().unwrap_or_default()
        )));
    }
    // Checked before anything is created, and again on the resolved path below.
    refuse_protected(&hp.path, path, protected)?;
    create(kind, path, protected).map_err(|e| err(format!("hostPath {}: {e}", hp.path)))?;
    let (fd, real) = safe_mount::open_host_path(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => err(format!(
            "hostPath type check failed: {} does not exist",
            hp.path
        )),
        _ => err(format!("hostPath {}: {e}", hp.path)),
    })?;
    refuse_protected(&hp.path, &real, protected)?;
    if let Some((want, words)) = kind.required() {
        let got = safe_mount::file_type(&fd).map_err(|e| err(format!("hostPath {e}")))?;
        if got != want {
            return Err(err(format!(
                "hostPath type check failed: {} is not {words}",
                hp.path
            )));
        }
    }
    if !policy.allow_privileged && safe_mount::is_kernel_fs(&fd).unwrap_or(true) {
        return Err(err(format!(
            "hostPath {} is refused: it is on a kernel filesystem (proc, sys, ...), which needs an agent started with --allow-privileged",
            hp.path
        )));
    }
    // Non-recursive, unlike the kubelet's rbind: the nodev flag set here would not reach
    // filesystems mounted below the path (a devtmpfs, a procfs).
    safe_mount::mount_fd(&fd, target, !policy.allow_privileged).map_err(|e| {
        err(format!(
            "hostPath {}: bind mount: {e} (hostPath volumes need an agent that may mount)",
            hp.path
        ))
    })?;
    Ok(target.to_path_buf())
}

/// A path inside a protected directory, or one that contains it, would hand the pod the
/// node's credentials or the cluster's store.
fn refuse_protected(shown: &str, path: &Path, protected: &[PathBuf]) -> Result<(), ConfigError> {
    for p in protected {
        if path.starts_with(p) || p.starts_with(path) {
            return Err(err(format!(
                "hostPath {shown} is refused: it exposes {}, which holds the node agent's or the cluster's data",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Create what an `...OrCreate` type asks for. The existing part of the path is resolved
/// and checked against the protected directories first, and the missing part is created
/// one component at a time without following links, so a link planted on the way (by a
/// pod with another hostPath) cannot make root create anything inside a protected place.
fn create(kind: Kind, path: &Path, protected: &[PathBuf]) -> std::io::Result<()> {
    if !matches!(kind, Kind::DirectoryOrCreate | Kind::FileOrCreate) || path.exists() {
        return Ok(());
    }
    let (base, rest) = existing_ancestor(path)?;
    let resolved = base.join(&rest);
    if let Err(e) = refuse_protected(&path.to_string_lossy(), &resolved, protected) {
        return Err(std::io::Error::other(e.0));
    }
    let root = safe_mount::open_root(&base)?;
    match kind {
        Kind::DirectoryOrCreate => safe_mount::create_dirs(&root, &rest, &path.to_string_lossy())
            .map(drop)
            .map_err(std::io::Error::other),
        _ => {
            // Only the file: the kubelet does not create its parent directories either.
            let (Some(parent), Some(name)) = (rest.parent(), rest.file_name()) else {
                return Err(std::io::Error::other("no file name"));
            };
            if parent != Path::new("") {
                return Err(std::io::ErrorKind::NotFound.into());
            }
            use rustix::fs::{Mode, OFlags};
            rustix::fs::openat(
                &root,
                name,
                OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
            .map_err(Into::into)
        }
    }
}

/// The longest existing prefix of `path`, resolved, and the missing rest.
fn existing_ancestor(path: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let mut base = path.to_path_buf();
    let mut rest = Vec::new();
    while !base.exists() {
        let Some(name) = base.file_name().map(ToOwned::to_owned) else {
            return Err(std::io::ErrorKind::NotFound.into());
        };
        rest.push(name);
        if !base.pop() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
    }
    let rest: PathBuf = rest.iter().rev().collect();
    Ok((std::fs::canonicalize(&base)?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(path: &str, kind: &str) -> HostPathVolumeSource {
        HostPathVolumeSource {
            path: path.to_string(),
            type_: Some(kind.to_string()),
        }
    }

    #[test]
    fn protected_dirs_and_their_ancestors_are_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let data = t.path().join("spindle");
        std::fs::create_dir_all(data.join("server")).expect("mkdir");
        std::os::unix::fs::symlink(&data, t.path().join("alias")).expect("symlink");
        let protected = vec![data.clone()];
        let policy = |p: &[PathBuf]| HostPolicy {
            protected: p.to_vec(),
            ..HostPolicy::default()
        };
        let target = t.path().join("target");
        for p in [
            data.join("server"),
            data.clone(),
            t.path().to_path_buf(),
            PathBuf::from("/"),
            t.path().join("alias/server"),
        ] {
            let e = prepare(&hp(&p.to_string_lossy(), ""), &target, &policy(&protected))
                .expect_err(&p.to_string_lossy());
            assert!(e.0.contains("is refused"), "{}: {}", p.display(), e.0);
        }
        assert!(!target.exists(), "nothing was mounted");
        // A link planted on the way to a path to be created leads into the data dir:
        // refused before root creates anything there.
        let made = data.join("made-by-pod");
        let e = prepare(
            &hp(
                &t.path().join("alias/made-by-pod").to_string_lossy(),
                "DirectoryOrCreate",
            ),
            &target,
            &policy(&protected),
        )
        .expect_err("created through a link");
        assert!(e.0.contains("is refused"), "{}", e.0);
        assert!(!made.exists(), "created inside the protected dir");
    }

    #[test]
    fn kernel_filesystems_and_devices_need_allow_privileged() {
        let t = tempfile::tempdir().expect("tempdir");
        let target = t.path().join("target");
        for (path, kind) in [("/proc", "Directory"), ("/sys", ""), ("/proc/self", "")] {
            let e = prepare(&hp(path, kind), &target, &HostPolicy::default()).expect_err(path);
            assert!(e.0.contains("kernel filesystem"), "{path}: {}", e.0);
        }
        let e = prepare(
            &hp("/dev/null", "CharDevice"),
            &target,
            &HostPolicy::default(),
        )
        .expect_err("device");
        assert!(e.0.contains("--allow-privileged"), "{}", e.0);
        assert!(!target.exists(), "nothing was mounted");
    }

    #[test]
    fn types_are_checked_as_the_kubelet_does() {
        let t = tempfile::tempdir().expect("tempdir");
        let file = t.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        let target = t.path().join("target");
        let e = prepare(
            &hp(&file.to_string_lossy(), "Directory"),
            &target,
            &HostPolicy::default(),
        )
        .expect_err("file as directory");
        assert!(e.0.ends_with("is not a directory"), "{}", e.0);
        let e = prepare(
            &hp(&t.path().to_string_lossy(), "Socket"),
            &target,
            &HostPolicy::default(),
        )
        .expect_err("dir as socket");
        assert!(e.0.ends_with("is not a socket file"), "{}", e.0);
        let e = prepare(
            &hp("/nonexistent/x", "Directory"),
            &target,
            &HostPolicy::default(),
        )
        .expect_err("missing");
        assert!(e.0.contains("does not exist"), "{}", e.0);
        let e =
            prepare(&hp("relative/x", ""), &target, &HostPolicy::default()).expect_err("relative");
        assert!(e.0.contains("absolute"), "{}", e.0);
        let e =
            prepare(&hp("/tmp", "Pipe"), &target, &HostPolicy::default()).expect_err("bad type");
        assert!(e.0.contains("not supported"), "{}", e.0);
    }
}
