//! Persistent named network namespaces, laid out exactly like `ip netns add`
//! makes them (a bind mount of a netns onto `/run/netns/<name>`), so
//! `ip netns list`, `ip -n <name> ...` and `ip netns exec` work on pod
//! sandboxes while debugging.
//!
//! This is done with syscalls rather than by running `ip netns add`: it
//! keeps iproute2 out of the agent's runtime dependencies, gives typed errors
//! instead of scraped stderr, and the whole procedure is a handful of calls.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::mount::{
    mount_bind, mount_bind_recursive, mount_change, unmount, MountPropagationFlags, UnmountFlags,
};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType, UnshareFlags};

use crate::NetError;

/// Where iproute2 (and so every tool that follows it: containerd, CRI-O,
/// podman) keeps named network namespaces.
pub(crate) const NETNS_RUN_DIR: &str = "/run/netns";

/// `statfs` magic of nsfs, the file system of `/proc/<pid>/ns/*` (and so of
/// a bind mount of one). Kernels before 3.19 used procfs for these.
const NSFS_MAGIC: rustix::fs::FsWord = 0x6e73_6673;

/// Serialises the one-time "make /run/netns a shared mount" step inside this
/// process, so two pods set up at once cannot both decide to bind-mount the
/// directory onto itself and stack two mounts.
static RUN_DIR_INIT: Mutex<()> = Mutex::new(());

/// True when `path` is a live network namespace (a bind mount of an nsfs
/// inode), as opposed to missing, or a stale empty file left behind when the
/// mount went away (host reboot with a persistent /run, manual umount).
pub(crate) fn is_netns(path: &Path) -> bool {
    match rustix::fs::statfs(path) {
        Ok(st) => st.f_type == NSFS_MAGIC || st.f_type == rustix::fs::PROC_SUPER_MAGIC,
        Err(_) => false,
    }
}

/// Creates the named netns at `path` unless a live one is already there
/// (agent restart, retried setup). Blocking: spawns and joins a thread.
pub(crate) fn create(path: &Path) -> Result<(), NetError> {
    if is_netns(path) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new(NETNS_RUN_DIR));
    prepare_run_dir(dir)?;

    // The mount point must exist as a file. A stale one (mount gone) is reused:
    // bind-mounting over it is fine.
    if let Err(e) = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        return Err(NetError::netns(path, "create mount point", e));
    }

    // unshare(CLONE_NEWNET) moves only the calling thread; doing it on a
    // thread of our own (never a tokio worker or a blocking-pool thread, which
    // get reused) keeps the rest of the agent in the host namespace. The
    // thread then pins its new namespace by bind-mounting its own ns link and
    // exits; the mount keeps the namespace alive.
    let target: PathBuf = path.to_path_buf();
    let joined = std::thread::Builder::new()
        .name("spindle-netns-create".into())
        .spawn(move || -> io::Result<()> {
            // SAFETY: NEWNET does not touch the file-descriptor table or any
            // other state shared with the other threads of the process; the
            // hazard unshare_unsafe documents (FILES) does not apply.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
            // thread-self, not self: /proc/self/ns/net is the main thread's
            // namespace, which is the host's.
            mount_bind("/proc/thread-self/ns/net", &target)?;
            Ok(())
        })
        .map_err(|e| NetError::netns(path, "spawn thread", e))?
        .join();
    let result = match joined {
        Ok(r) => r.map_err(|e| NetError::netns(path, "unshare and bind-mount", e)),
        Err(_) => Err(NetError::netns(
            path,
            "create",
            io::Error::other("creating thread panicked"),
        )),
    };
    if result.is_err() {
        // Leave no empty file that would later look like a dead sandbox.
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Makes the netns directory a shared mount point, as `ip netns add` does, so
/// namespaces mounted there later propagate into mount namespaces cloned from
/// this one (containers, `systemd` services with PrivateMounts) and the
/// other way round.
fn prepare_run_dir(dir: &Path) -> Result<(), NetError> {
    let _once = RUN_DIR_INIT.lock().unwrap_or_else(|p| p.into_inner());
    std::fs::create_dir_all(dir).map_err(|e| NetError::netns(dir, "create directory", e))?;
    let shared = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    match mount_change(dir, shared) {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point yet. Bind it onto itself, then retry.
        Err(rustix::io::Errno::INVAL) => {
            mount_bind_recursive(dir, dir)
                .map_err(|e| NetError::netns(dir, "bind-mount onto itself", e.into()))?;
            mount_change(dir, shared).map_err(|e| NetError::netns(dir, "make shared", e.into()))
        }
        Err(e) => Err(NetError::netns(dir, "make shared", e.into())),
    }
}

/// Removes the named netns at `path` like `ip netns del`: lazily unmount (the
/// namespace itself lives on while processes or sockets still use it) and
/// remove the mount point. Missing or already unmounted is success.
pub(crate) fn remove(path: &Path) -> Result<(), NetError> {
    match unmount(path, UnmountFlags::DETACH) {
        // EINVAL: not a mount point (stale file); ENOENT: already gone.
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(NetError::netns(path, "unmount", e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::netns(path, "remove mount point", e)),
    }
}

/// Runs `f` on a new OS thread that has joined the netns at `path`, and
/// returns its result. A panic in `f` is resumed on the caller.
pub(crate) fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
    // Opened (and checked) here so a missing netns is an error for the
    // caller rather than a failure inside the thread.
    if !is_netns(path) {
        return Err(NetError::netns(
            path,
            "enter",
            io::Error::new(
                io::ErrorKind::NotFound,
                "not a network namespace (sandbox torn down?)",
            ),
        ));
    }
    let ns = File::open(path).map_err(|e| NetError::netns(path, "open", e))?;
    // A scoped thread lets `f` borrow from the caller. The thread is fresh
    // and dies afterwards, so no other code ever runs in the pod's namespace
    // by accident; sockets created by `f` keep the pod namespace for life.
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("spindle-netns-enter".into())
            .spawn_scoped(s, move || -> Result<T, NetError> {
                move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(LinkNameSpaceType::Network),
                )
                .map_err(|e| NetError::netns(path, "setns", e.into()))?;
                Ok(f())
            })
            .map_err(|e| NetError::netns(path, "spawn thread", e))?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Builds a multi-threaded tokio runtime whose threads all join the netns at
/// `path`. The builder runs on a thread already inside the namespace (so the
/// workers it spawns inherit it), and every thread the runtime starts later
/// (blocking pool threads may be spawned from outside callers) joins it again
/// on start.
///
/// With `resolv_conf`, the threads also get a mount namespace of their own in
/// which that file is bind-mounted over `/etc/resolv.conf`: name lookups made
/// through the C library on these threads (getaddrinfo, which tokio and so
/// wasmtime's `ip-name-lookup` use) then ask the pod's nameservers, from the
/// pod's network. The rest of the file system is the host's, as before.
pub(crate) fn runtime_in(
    path: &Path,
    name: &str,
    workers: usize,
    resolv_conf: Option<&Path>,
) -> Result<crate::PodRuntime, NetError> {
    let ns = std::sync::Arc::new(File::open(path).map_err(|e| NetError::netns(path, "open", e))?);
    let thread_name = format!("pod-{name}");
    let resolv = resolv_conf.map(Path::to_path_buf);
    let rt = run_in(
        path,
        move || -> Result<tokio::runtime::Runtime, NetError> {
            let mnt = match &resolv {
                Some(file) => Some(std::sync::Arc::new(private_resolv_conf(file)?)),
                None => None,
            };
            let on_start = ns.clone();
            tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(thread_name)
            .enable_all()
            .on_thread_start(move || {
                if let Err(e) = move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(on_start.as_ref()),
                    Some(LinkNameSpaceType::Network),
                ) {
                    tracing::error!(error = %e, "a pod runtime thread could not join the pod's network namespace");
                }
                if let Some(mnt) = &mnt {
                    // Joining a mount namespace needs a file system context of
                    // the thread's own.
                    // SAFETY: FS unshares only the root/cwd/umask context; no file
                    // descriptor table is touched (that would be FILES).
                    let unshared = unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS) };
                    let joined = unshared.and_then(|()| {
                        move_into_link_name_space(
                            std::os::fd::AsFd::as_fd(mnt.as_ref()),
                            Some(LinkNameSpaceType::Mount),
                        )
                    });
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "a pod runtime thread could not join the pod's mount namespace");
                    }
                }
            })
            .build()
            .map_err(|e| NetError::netns(path, "start a runtime", e))
        },
    )??;
    Ok(crate::PodRuntime { rt: Some(rt) })
}

/// Moves the calling thread into a new mount namespace (not propagating back
/// to the host) with `file` over /etc/resolv.conf, and returns that namespace.
fn private_resolv_conf(file: &Path) -> Result<File, NetError> {
    let etc = Path::new("/etc/resolv.conf");
    // SAFETY: FS and NEWNS leave the file descriptor table shared (FILES is
    // what could make descriptors unusable across threads); only this thread's
    // view of mounts changes.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS) }
        .map_err(|e| NetError::netns(etc, "unshare the mount namespace", e.into()))?;
    mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(|e| NetError::netns(etc, "make mounts private", e.into()))?;
    mount_bind(file, etc)
        .map_err(|e| NetError::netns(etc, "bind-mount the pod's resolv.conf", e.into()))?;
    File::open("/proc/thread-self/ns/mnt")
        .map_err(|e| NetError::netns(etc, "open the mount namespace", e))
}
