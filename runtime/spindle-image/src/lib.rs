//! OCI images for the Spindle node agent.
//!
//! This crate owns everything between a Kubernetes `image:` string and a
//! verified `.wasm` file on the node's disk:
//!
//! * parsing and normalising image references (`hello` →
//!   `docker.io/library/hello:latest`) and choosing plain HTTP for loopback
//!   registries, HTTPS for all others;
//! * `imagePullPolicy` semantics ([`PullPolicy`]) and credentials from
//!   `imagePullSecrets` ([`PullSecrets`]);
//! * pulling Wasm artifacts (CNCF Wasm OCI artifact, the older wasm-to-oci
//!   layout, the Bytecode Alliance component layer, and image indexes with a
//!   Wasm platform entry), verifying every digest, and keeping them in a
//!   content-addressed node cache that survives restarts ([`ImageStore`]);
//! * publishing a module or component as a CNCF Wasm artifact ([`push`]).
//!
//! * on nodes that run containers, pulling container images (config and
//!   layers, digests verified) into the same cache, for the containerd runtime
//!   to import ([`ContainerImage`]).
//!
//! It does not run anything: the Wasm runtime takes [`WasmBinary::path`], the
//! containerd runtime a [`ContainerImage`].

mod distribution;
mod error;
mod media;
mod push;
mod reference;
mod registry;
mod secrets;
mod store;

use std::path::PathBuf;

pub use error::ImageError;
pub use media::{
    WASM_COMPONENT_LAYER_MEDIA_TYPE, WASM_CONFIG_V0_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE,
    WASM_TO_OCI_CONFIG_MEDIA_TYPE, WASM_TO_OCI_LAYER_MEDIA_TYPE,
};
pub use push::push;
pub use secrets::PullSecrets;
pub use store::{ImageStore, PullLimits};

/// Kubernetes `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    /// Ask the registry for the current digest every time; download only when
    /// the digest is not cached yet.
    Always,
    /// Use the cached image when there is one, pull otherwise.
    IfNotPresent,
    /// Never contact a registry.
    Never,
}

impl PullPolicy {
    /// The policy Kubernetes applies to a container: the explicit value when
    /// set, otherwise `Always` for `:latest` or an untagged name and
    /// `IfNotPresent` for everything else (including digest references).
    ///
    /// Unknown values are rejected by API validation before they reach a node,
    /// so they fall back to the default rather than failing here.
    pub fn from_k8s(policy: Option<&str>, image: &str) -> Self {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => match reference::tag_of(image) {
                None if reference::has_digest(image) => PullPolicy::IfNotPresent,
                None | Some("latest") => PullPolicy::Always,
                Some(_) => PullPolicy::IfNotPresent,
            },
        }
    }

    /// The Kubernetes spelling of the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

impl std::fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a Wasm binary is, read from its 8-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WasmKind {
    /// A core module (`\0asm` version 1), run as WASI preview 1.
    Module,
    /// A component (`\0asm` 0x0d 00 01 00), run as WASI preview 2.
    Component,
}

impl WasmKind {
    /// Classifies a binary by its first 8 bytes; `None` when it is not Wasm
    /// (or a Wasm encoding this node does not know).
    pub fn detect(header: &[u8]) -> Option<Self> {
        match header.get(..8)? {
            [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00] => Some(WasmKind::Module),
            [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00] => Some(WasmKind::Component),
            _ => None,
        }
    }

    /// The `os` value of the CNCF Wasm artifact config for this kind.
    pub fn wasi_os(self) -> &'static str {
        match self {
            WasmKind::Module => "wasip1",
            WasmKind::Component => "wasip2",
        }
    }
}

impl std::fmt::Display for WasmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WasmKind::Module => "module",
            WasmKind::Component => "component",
        })
    }
}

/// An image present on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The image string as the pod spec gave it.
    pub image: String,
    /// The fully qualified reference (`docker.io/library/hello:latest`).
    pub resolved: String,
    /// Digest of the manifest the reference resolved to (`sha256:...`); for a
    /// multi-platform index this is the index digest, the one a registry
    /// reports for the tag.
    pub manifest_digest: String,
    /// True when this call downloaded from the registry, false when it was
    /// served from the node cache.
    pub pulled: bool,
    /// What the image holds.
    pub content: ImageContent,
}

/// What an image holds: one Wasm binary, or a container's config and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageContent {
    Wasm(WasmBinary),
    Container(ContainerImage),
}

/// The verified Wasm binary of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmBinary {
    /// Digest of the Wasm layer (`sha256:...`).
    pub digest: String,
    /// The verified Wasm bytes, stored under their digest.
    pub path: PathBuf,
    /// Module or component, from the binary's header.
    pub kind: WasmKind,
    /// Size of the Wasm binary in bytes.
    pub size: u64,
}

/// A verified blob in the node cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip)]
    pub path: PathBuf,
}

/// A container image for one platform: its manifest, config and layers, every
/// blob verified and on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl PulledImage {
    /// The Wasm binary, when the image is a Wasm artifact.
    pub fn wasm(&self) -> Option<&WasmBinary> {
        match &self.content {
            ImageContent::Wasm(w) => Some(w),
            ImageContent::Container(_) => None,
        }
    }

    /// The container image, when it is one.
    pub fn container(&self) -> Option<&ContainerImage> {
        match &self.content {
            ImageContent::Container(c) => Some(c),
            ImageContent::Wasm(_) => None,
        }
    }

    /// Bytes the image takes on the node.
    pub fn size(&self) -> u64 {
        match &self.content {
            ImageContent::Wasm(w) => w.size,
            ImageContent::Container(c) => {
                c.manifest.size + c.config.size + c.layers.iter().map(|l| l.size).sum::<u64>()
            }
        }
    }

    /// The value for `status.containerStatuses[].imageID`: `<repository>@<digest>`,
    /// e.g. `127.0.0.1:5000/demo/hello@sha256:...`.
    pub fn image_id(&self) -> String {
        format!(
            "{}@{}",
            reference::repository_of(&self.resolved),
            self.manifest_digest
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policy_follows_kubernetes() {
        let p = |policy, image| PullPolicy::from_k8s(policy, image);
        assert_eq!(p(None, "hello"), PullPolicy::Always);
        assert_eq!(p(None, "hello:latest"), PullPolicy::Always);
        assert_eq!(p(None, "127.0.0.1:5000/demo/hello"), PullPolicy::Always);
        assert_eq!(
            p(None, "127.0.0.1:5000/demo/hello:v1"),
            PullPolicy::IfNotPresent
        );
        let digest = format!("ghcr.io/x/y@sha256:{}", "a".repeat(64));
        assert_eq!(p(None, &digest), PullPolicy::IfNotPresent);
        assert_eq!(p(Some("Never"), "hello"), PullPolicy::Never);
        assert_eq!(p(Some("Always"), "hello:v1"), PullPolicy::Always);
        assert_eq!(p(Some("IfNotPresent"), "hello"), PullPolicy::IfNotPresent);
    }

    #[test]
    fn wasm_kind_from_header() {
        assert_eq!(WasmKind::detect(b"\0asm\x01\0\0\0"), Some(WasmKind::Module));
        assert_eq!(
            WasmKind::detect(b"\0asm\x0d\0\x01\0rest"),
            Some(WasmKind::Component)
        );
        assert_eq!(WasmKind::detect(b"\0asm"), None);
        assert_eq!(WasmKind::detect(b"\x1f\x8b\x08\0\0\0\0\0"), None);
    }

    #[test]
    fn image_id_drops_the_tag() {
        let img = PulledImage {
            image: "x".into(),
            resolved: "127.0.0.1:5000/demo/hello:v1".into(),
            manifest_digest: "sha256:ab".into(),
            pulled: false,
            content: ImageContent::Wasm(WasmBinary {
                digest: "sha256:cd".into(),
                path: PathBuf::new(),
                kind: WasmKind::Module,
                size: 8,
            }),
        };
        assert_eq!(img.image_id(), "127.0.0.1:5000/demo/hello@sha256:ab");
    }
}
