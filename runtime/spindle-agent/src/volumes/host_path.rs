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

/// Check and create (for the `...OrCreate` types) the host path of volume `name`, then
/// bind it onto `target` (the pod's volume directory). Returns the path runtimes mount.
pub fn prepare(
    name: &str,
    hp: &HostPathVolumeSource,
    target: &Path,
    protected: &[PathBuf],
) -> Result<PathBuf, ConfigError> {
    let path = Path::new(&hp.path);
    let kind = Kind::parse(hp.type_.as_deref())
        .ok_or_else(|| err(format!("hostPath type {:?} is not supported", hp.type_)))?;
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(err(format!(
            "hostPath {:?} must be an absolute path without '..'",
            hp.path
        )));
    }
    // Checked before anything is created, and again on the resolved path below.
    refuse_protected(&hp.path, path, protected)?;
    create(kind, path).map_err(|e| err(format!("hostPath {}: {e}", hp.path)))?;
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
    match safe_mount::bind_fd(&fd, target) {
        Ok(()) => Ok(target.to_path_buf()),
        // An agent that may not mount (not root) runs only what its own user may read;
        // it hands runtimes the path it checked.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            tracing::warn!(volume = name, path = %real.display(), "no permission to bind-mount a hostPath; using the checked path");
            Ok(real)
        }
        Err(e) => Err(err(format!("hostPath {}: bind mount: {e}", hp.path))),
    }
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

fn create(kind: Kind, path: &Path) -> std::io::Result<()> {
    match kind {
        Kind::DirectoryOrCreate if !path.exists() => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
        }
        Kind::FileOrCreate if !path.exists() => {
            use std::os::unix::fs::OpenOptionsExt;
            // Only the file: the kubelet does not create its parent directories either.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map(drop)
        }
        _ => Ok(()),
    }
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
        let target = t.path().join("target");
        for p in [
            data.join("server"),
            data.clone(),
            t.path().to_path_buf(),
            PathBuf::from("/"),
            t.path().join("alias/server"),
        ] {
            let e = prepare("v", &hp(&p.to_string_lossy(), ""), &target, &protected)
                .expect_err(&p.to_string_lossy());
            assert!(e.0.contains("is refused"), "{}: {}", p.display(), e.0);
        }
        assert!(!target.exists(), "nothing was mounted");
    }

    #[test]
    fn types_are_checked_as_the_kubelet_does() {
        let t = tempfile::tempdir().expect("tempdir");
        let file = t.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        let target = t.path().join("target");
        let e = prepare("v", &hp(&file.to_string_lossy(), "Directory"), &target, &[])
            .expect_err("file as directory");
        assert!(e.0.ends_with("is not a directory"), "{}", e.0);
        let e = prepare(
            "v",
            &hp(&t.path().to_string_lossy(), "Socket"),
            &target,
            &[],
        )
        .expect_err("dir as socket");
        assert!(e.0.ends_with("is not a socket file"), "{}", e.0);
        let e =
            prepare("v", &hp("/nonexistent/x", "Directory"), &target, &[]).expect_err("missing");
        assert!(e.0.contains("does not exist"), "{}", e.0);
        let e = prepare("v", &hp("relative/x", ""), &target, &[]).expect_err("relative");
        assert!(e.0.contains("absolute"), "{}", e.0);
        let e = prepare("v", &hp("/tmp", "Pipe"), &target, &[]).expect_err("bad type");
        assert!(e.0.contains("not supported"), "{}", e.0);
    }
}
