//! Paths a pod names (subPaths, hostPaths) turned into mounts without following links out
//! of where they must stay.
//!
//! A pod controls the contents of its writable volumes, so anything below a volume root
//! may be a symlink planted by a container or a Wasm guest (`ln -s / vol/escape`). Resolving
//! such a path by name on the host, as mount(2), runc or wasmtime's preopen would, follows
//! the link out of the volume: the bug class of CVE-2017-1002101. The kubelet's fix, done
//! here the same way: open the path relative to the volume root's file descriptor with the
//! kernel confining the walk (`openat2` with `RESOLVE_BENEATH`), then bind-mount that open
//! file (`/proc/self/fd/N`, which names exactly the opened inode) onto a path the agent
//! owns. Runtimes get only agent-owned paths, which nothing in a pod can change.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a pod's path cannot be mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{path:?} must be a relative path that stays inside the volume")]
    NotRelative { path: String },
    #[error("{path:?} resolves outside the volume (through a symbolic link)")]
    Escapes { path: String },
    #[error("{path:?}: a symbolic link in the path is not followed while creating it")]
    SymlinkWhileCreating { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &str, e: impl Into<std::io::Error>) -> MountError {
    MountError::Io {
        path: path.to_string(),
        source: e.into(),
    }
}

/// Open `root` (a directory the agent made or already checked) as the anchor of a walk.
pub fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    Ok(rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Open `sub` beneath the directory `root`, creating missing directories as the kubelet
/// does for a subPath that does not exist yet. Symlinks inside the volume are followed as
/// long as every step stays beneath `root`; one that leads out fails.
pub fn open_beneath(root: &OwnedFd, sub: &str) -> Result<OwnedFd, MountError> {
    let rel = Path::new(sub);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(MountError::NotRelative {
            path: sub.to_string(),
        });
    }
    match openat_beneath(
        root,
        rel,
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        Err(Errno::XDEV) | Err(Errno::LOOP) => {
            return Err(MountError::Escapes {
                path: sub.to_string(),
            })
        }
        Err(e) => return Err(io(sub, e)),
    }
    create_dirs(root, rel, sub)
}

fn openat_beneath(dir: &OwnedFd, rel: &Path, resolve: ResolveFlags) -> rustix::io::Result<OwnedFd> {
    rfs::openat2(
        dir.as_fd(),
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )
}

/// Create the missing directories of `rel` one component at a time, never following a
/// symlink: whatever a pod planted on the way makes this fail instead.
pub fn create_dirs(root: &OwnedFd, rel: &Path, sub: &str) -> Result<OwnedFd, MountError> {
    let strict = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let mut cur = openat_beneath(root, Path::new("."), strict).map_err(|e| io(sub, e))?;
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            continue;
        };
        match rfs::mkdirat(cur.as_fd(), name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io(sub, e)),
        }
        cur = match openat_beneath(&cur, Path::new(name), strict) {
            Ok(fd) => fd,
            Err(Errno::LOOP) | Err(Errno::XDEV) => {
                return Err(MountError::SymlinkWhileCreating {
                    path: sub.to_string(),
                })
            }
            Err(e) => return Err(io(sub, e)),
        };
    }
    Ok(cur)
}

/// Whether the open file is a directory.
pub fn is_dir(fd: &OwnedFd) -> std::io::Result<bool> {
    Ok(FileType::from_raw_mode(rfs::fstat(fd)?.st_mode) == FileType::Directory)
}

/// The type of the open file (without following: the fd was opened on the final object).
pub fn file_type(fd: &OwnedFd) -> std::io::Result<FileType> {
    Ok(FileType::from_raw_mode(rfs::fstat(fd)?.st_mode))
}

/// Make `target` show the open file `fd`: a mount already there is kept if it shows that
/// same file (an agent restart, a container restart, an exec), replaced otherwise
/// (running containers keep their own view of the old one); else `fd` is bound there.
pub fn mount_fd(fd: &OwnedFd, target: &Path, nodev: bool) -> std::io::Result<()> {
    if is_mountpoint(target) {
        if same_file(fd, target).unwrap_or(false) {
            return Ok(());
        }
        unmount(target)?;
    }
    bind_fd(fd, target, nodev)
}

/// Bind-mount the open file `fd` onto `target`, an agent-owned path that is created (a
/// directory or an empty file, matching the source) if missing. Callers decide whether a
/// mount already at `target` may be kept.
/// With `nodev`, device files on the mount cannot be opened and set-uid bits do nothing:
/// Wasm guests do their file I/O as the agent (root, no device cgroup), so a device node
/// a container made in a shared volume would otherwise open the host's disk for them.
fn bind_fd(fd: &OwnedFd, target: &Path, nodev: bool) -> std::io::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if is_dir(fd)? {
        match std::fs::create_dir(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(target)?;
    }
    let source = fd_path(fd);
    rustix::mount::mount_bind(source.as_path(), target)?;
    if nodev {
        if let Err(e) = restrict(target) {
            let _ = unmount(target);
            return Err(e);
        }
    }
    Ok(())
}

/// Make the bind mount at `target` nodev and nosuid (a bind mount takes per-mount flags
/// only through a remount).
pub fn restrict(target: &Path) -> std::io::Result<()> {
    use rustix::mount::MountFlags;
    rustix::mount::mount_remount(
        target,
        MountFlags::BIND | MountFlags::NODEV | MountFlags::NOSUID,
        "",
    )?;
    Ok(())
}

/// Make `dir` a nodev, nosuid mount of itself (once; a mount point is left as it is), so
/// everything below it, and every bind made from below it, carries those flags.
pub fn restrict_in_place(dir: &Path) -> std::io::Result<()> {
    if is_mountpoint(dir) {
        return Ok(());
    }
    rustix::mount::mount_bind(dir, dir)?;
    restrict(dir)
}

/// The kernel's own filesystems (procfs, sysfs, debugfs, ...): a hostPath onto one hands
/// a pod the kernel's knobs or the agent's memory (`/proc/self/mem`).
pub fn is_kernel_fs(fd: &OwnedFd) -> std::io::Result<bool> {
    const KERNEL_FS: [i64; 10] = [
        0x9fa0,      // proc
        0x6265_6572, // sysfs
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x7363_6673, // securityfs
        0xcafe_4a11, // bpf
        0x0027_e0eb, // cgroup
        0x6367_7270, // cgroup2
        0x6265_6570, // configfs
        0xde5e_81e4, // efivarfs
    ];
    let kind = rfs::fstatfs(fd)?.f_type as i64;
    Ok(KERNEL_FS.contains(&kind))
}

/// Whether the open file `fd` is the file at `path` (same device and inode).
fn same_file(fd: &OwnedFd, path: &Path) -> std::io::Result<bool> {
    let a = rfs::fstat(fd)?;
    let b = rfs::stat(path)?;
    Ok(a.st_dev == b.st_dev && a.st_ino == b.st_ino)
}

/// Detach the mount at `target` (busy mounts too: a container keeps its own view).
fn unmount(target: &Path) -> std::io::Result<()> {
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH)?;
    Ok(())
}

/// The magic link that names exactly the file `fd` has open.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Where the open file `fd` is on the host, as the kernel sees it.
pub fn real_path(fd: &OwnedFd) -> std::io::Result<PathBuf> {
    std::fs::read_link(fd_path(fd))
}

/// Open an absolute host path by name (a hostPath), and check that what was opened is the
/// path's canonical form: a link swapped in between the check and the open is caught.
pub fn open_host_path(path: &Path) -> std::io::Result<(OwnedFd, PathBuf)> {
    let canonical = std::fs::canonicalize(path)?;
    let fd = rfs::open(
        &canonical,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if file_type(&fd)? == FileType::Symlink || real_path(&fd)? != canonical {
        return Err(std::io::Error::other(format!(
            "{} changed while it was being opened",
            path.display()
        )));
    }
    Ok((fd, canonical))
}

/// Whether `dir` is a mount point (listed in this process's mount table).
pub fn is_mountpoint(dir: &Path) -> bool {
    mount_points().iter().any(|m| m.as_path() == dir)
}

/// Every mount point of this process's mount namespace, unescaped.
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(OsStr::from_bytes(&unescape(m))))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Unmount every mount at or below `dir` (deepest first) and report those that remain.
pub fn unmount_below(dir: &Path) -> Vec<PathBuf> {
    let below = |m: &PathBuf| m.starts_with(dir);
    let mut mounts: Vec<PathBuf> = mount_points().into_iter().filter(below).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounts {
        // MNT_DETACH: a busy mount (a container still holds it) must not block the agent.
        let _ = unmount(m);
    }
    mount_points().into_iter().filter(below).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_of(dir: &Path) -> OwnedFd {
        open_root(dir).expect("open root")
    }

    #[test]
    fn subpath_inside_is_opened_and_missing_dirs_created() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join("a")).expect("mkdir");
        std::os::unix::fs::symlink("a", t.path().join("link")).expect("symlink");
        let root = root_of(t.path());
        let fd = open_beneath(&root, "link").expect("in-volume link");
        assert_eq!(real_path(&fd).expect("path"), t.path().join("a"));
        let fd = open_beneath(&root, "x/y/z").expect("created");
        assert!(is_dir(&fd).expect("stat"));
        assert_eq!(real_path(&fd).expect("path"), t.path().join("x/y/z"));
    }

    #[test]
    fn links_out_of_the_volume_are_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let vol = t.path().join("vol");
        std::fs::create_dir(&vol).expect("mkdir");
        std::os::unix::fs::symlink("/", vol.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../../../../..", vol.join("rel")).expect("symlink");
        std::os::unix::fs::symlink("/etc", vol.join("dir")).expect("symlink");
        let root = root_of(&vol);
        for sub in ["abs", "rel", "dir/passwd", "rel/etc", "abs/new/dir"] {
            let e = open_beneath(&root, sub).expect_err(sub);
            assert!(
                matches!(
                    e,
                    MountError::Escapes { .. } | MountError::SymlinkWhileCreating { .. }
                ),
                "{sub}: {e}"
            );
        }
        for sub in ["../x", "/etc", "a/../../b"] {
            let e = open_beneath(&root, sub).expect_err(sub);
            assert!(matches!(e, MountError::NotRelative { .. }), "{sub}: {e}");
        }
        // Nothing was created outside the volume.
        assert!(!Path::new("/new").exists());
    }

    #[test]
    fn mountinfo_escapes_are_read() {
        assert_eq!(unescape(r"/a\040b\134c"), b"/a b\\c".to_vec());
        assert_eq!(unescape(r"/plain"), b"/plain".to_vec());
        assert_eq!(unescape(r"/end\04"), br"/end\04".to_vec());
    }
}
