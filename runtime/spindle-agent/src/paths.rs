//! The agent's data directory, in one place. Every path the agent keeps below
//! `--data-dir` is named here:
//!
//! ```text
//! <data dir>/
//!   images/            pulled images (blobs, manifests), spindle-image's store
//!   wasm-cache/        precompiled Wasm modules by digest
//!   containerd/        a private containerd's root, state and socket
//!   containerd-io/     FIFOs of containers' and execs' stdio
//!   cni/net.d/         the pod network's CNI config
//!   cni/state/         CNI plugins' state (IP allocations)
//!   routes.json        routes to other nodes' pod CIDRs this agent installed
//!   pki/               the node's client certificate and key, the cluster CA and a
//!                      kubeconfig naming them (credentials.rs)
//!   storage/           local-path volumes, one directory per PersistentVolume
//!   pods/              one directory per pod, a nodev,nosuid mount
//!     <uid>/           see [`PodPaths`]
//! ```

use std::path::{Path, PathBuf};

/// The layout of the agent's data directory.
#[derive(Clone, Debug)]
pub struct AgentPaths {
    root: PathBuf,
}

impl AgentPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AgentPaths { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Where the local-path provisioner's volumes live on this node.
    pub fn storage(&self) -> PathBuf {
        self.root.join("storage")
    }

    pub fn wasm_cache(&self) -> PathBuf {
        self.root.join("wasm-cache")
    }

    pub fn containerd(&self) -> PathBuf {
        self.root.join("containerd")
    }

    pub fn containerd_io(&self) -> PathBuf {
        self.root.join("containerd-io")
    }

    pub fn cni_conf(&self) -> PathBuf {
        self.root.join("cni").join("net.d")
    }

    pub fn cni_state(&self) -> PathBuf {
        self.root.join("cni").join("state")
    }

    /// The node's own API credential (`spindle agent`; the embedded agent needs none).
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }

    pub fn routes(&self) -> PathBuf {
        self.root.join("routes.json")
    }

    /// The directory of every pod's directory.
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn pod(&self, uid: &str) -> PodPaths {
        PodPaths::new(self.pods().join(uid))
    }
}

/// One pod's directory:
///
/// ```text
/// pods/<uid>/
///   volumes/<name>/                              each volume (hostPath: a bind mount)
///   volume-subpaths/<volume>/<container>/<i>/    subPath bind mounts, as the kubelet's
///   logs/<container>/                            the container's log files per run
///   etc/hosts, etc/hostname, etc/resolv.conf     what containers see in /etc
///   resolv.conf                                  the pod's DNS config (cluster DNS)
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPaths {
    dir: PathBuf,
}

impl PodPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PodPaths { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn volumes(&self) -> PathBuf {
        self.dir.join("volumes")
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes().join(name)
    }

    /// Where the `index`th volumeMount of `container` (a subPath of `volume`) is bound.
    pub fn volume_subpath(&self, volume: &str, container: &str, index: usize) -> PathBuf {
        self.dir
            .join("volume-subpaths")
            .join(volume)
            .join(container)
            .join(index.to_string())
    }

    pub fn logs(&self, container: &str) -> PathBuf {
        self.dir.join("logs").join(container)
    }

    /// The pod's /etc files for its containers.
    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// The pod's resolv.conf for the cluster DNS policies.
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_as_documented() {
        let p = AgentPaths::new("/var/lib/spindle");
        assert_eq!(p.images(), Path::new("/var/lib/spindle/images"));
        assert_eq!(p.cni_state(), Path::new("/var/lib/spindle/cni/state"));
        let pod = p.pod("u1");
        assert_eq!(pod.dir(), Path::new("/var/lib/spindle/pods/u1"));
        assert_eq!(
            pod.volume_subpath("data", "web", 2),
            Path::new("/var/lib/spindle/pods/u1/volume-subpaths/data/web/2")
        );
        assert_eq!(
            pod.logs("web"),
            Path::new("/var/lib/spindle/pods/u1/logs/web")
        );
    }
}
