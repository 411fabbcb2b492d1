//! Which manifests and layers hold WebAssembly.

use oci_client::manifest::{ImageIndexEntry, OciImageManifest};

/// Layer media type of the CNCF Wasm OCI artifact.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Config media type of the CNCF Wasm OCI artifact.
pub const WASM_CONFIG_V0_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type used by Bytecode Alliance tooling for components.
pub const WASM_COMPONENT_LAYER_MEDIA_TYPE: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Layer media type of the older wasm-to-oci layout (oci-client's constant).
pub const WASM_TO_OCI_LAYER_MEDIA_TYPE: &str = oci_client::manifest::WASM_LAYER_MEDIA_TYPE;
/// Config media type of the older wasm-to-oci layout.
pub const WASM_TO_OCI_CONFIG_MEDIA_TYPE: &str = oci_client::manifest::WASM_CONFIG_MEDIA_TYPE;

const WASM_LAYER_TYPES: [&str; 3] = [
    WASM_LAYER_MEDIA_TYPE,
    WASM_COMPONENT_LAYER_MEDIA_TYPE,
    WASM_TO_OCI_LAYER_MEDIA_TYPE,
];

/// Everything a registry may answer for a tag: an image manifest or an index.
pub(crate) const MANIFEST_ACCEPT: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// The index entry to run on this node: the first whose platform is WASI or
/// whose architecture is `wasm`.
pub(crate) fn wasm_index_entry(entries: &[ImageIndexEntry]) -> Option<&ImageIndexEntry> {
    entries.iter().find(|e| {
        e.platform.as_ref().is_some_and(|p| {
            let os = p.os.to_string();
            matches!(os.as_str(), "wasip1" | "wasip2" | "wasi")
                || p.architecture.to_string() == "wasm"
        })
    })
}

/// The index entry for a container on this machine: Linux on the host's
/// architecture, in the OCI spelling.
pub(crate) fn container_index_entry(entries: &[ImageIndexEntry]) -> Option<&ImageIndexEntry> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    entries.iter().find(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.os.to_string() == "linux" && p.architecture.to_string() == arch)
    })
}

/// Whether a manifest is a container image: layers that are all filesystem
/// tarballs (OCI or Docker media types).
pub(crate) fn is_container_manifest(manifest: &OciImageManifest) -> bool {
    !manifest.layers.is_empty()
        && manifest
            .layers
            .iter()
            .all(|l| l.media_type.contains(".tar") || l.media_type.contains("rootfs"))
}

/// The distinct media types of a manifest's layers, sorted (for messages).
fn layer_types(manifest: &OciImageManifest) -> Vec<&str> {
    let mut types: Vec<&str> = manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    types.sort_unstable();
    types.dedup();
    types
}

/// For a node that runs containers too: what an image that is neither holds.
pub(crate) fn neither_message(image: &str, manifest: &OciImageManifest) -> String {
    format!(
        "image {image:?} holds neither WebAssembly nor a container filesystem: its layers are [{}] (config {}); this node runs Wasm artifacts and container images",
        layer_types(manifest).join(", "),
        manifest.config.media_type
    )
}

/// Message for an index without a Wasm platform.
pub(crate) fn index_not_wasm(image: &str, entries: &[ImageIndexEntry]) -> String {
    let platforms: Vec<String> = entries
        .iter()
        .map(|e| match &e.platform {
            Some(p) => format!("{}/{}", p.os, p.architecture),
            None => "unspecified".to_string(),
        })
        .collect();
    if platforms.is_empty() {
        format!("image {image:?} holds no WebAssembly: its image index lists no manifests")
    } else {
        format!(
            "image {image:?} holds no WebAssembly: its image index has platforms {} and none is wasm/wasi (a container image; this node runs Wasm only)",
            platforms.join(", ")
        )
    }
}

/// The Wasm layer of a manifest, or the message saying why there is none.
pub(crate) fn wasm_layer<'m>(
    image: &str,
    manifest: &'m OciImageManifest,
) -> Result<&'m oci_client::manifest::OciDescriptor, String> {
    if let Some(layer) = manifest
        .layers
        .iter()
        .find(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()))
    {
        return Ok(layer);
    }
    if manifest.layers.is_empty() {
        return Err(format!(
            "image {image:?} holds no WebAssembly: its manifest has no layers"
        ));
    }
    let types = layer_types(manifest);
    let container = types
        .iter()
        .any(|t| t.contains(".tar") || t.contains("rootfs"));
    let what = if container {
        "a container image"
    } else {
        "not a Wasm artifact"
    };
    Err(format!(
        "image {image:?} holds no WebAssembly: its layers are {} ({what}; this node runs Wasm only)",
        types.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layer_types: &[&str]) -> OciImageManifest {
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:00", "size": 2},
            "layers": layer_types.iter().map(|t| serde_json::json!({"mediaType": t, "digest": "sha256:11", "size": 1})).collect::<Vec<_>>(),
        }))
        .expect("manifest")
    }

    #[test]
    fn picks_any_wasm_layer_type() {
        for t in WASM_LAYER_TYPES {
            let m = manifest(&["application/vnd.oci.empty.v1+json", t]);
            assert_eq!(wasm_layer("x", &m).expect("wasm").media_type, t);
        }
    }

    #[test]
    fn container_image_is_named() {
        let m = manifest(&[
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ]);
        let msg = wasm_layer("nginx", &m).expect_err("no wasm");
        assert_eq!(
            msg,
            "image \"nginx\" holds no WebAssembly: its layers are application/vnd.oci.image.layer.v1.tar+gzip (a container image; this node runs Wasm only)"
        );
    }

    #[test]
    fn index_platforms() {
        let entries: Vec<ImageIndexEntry> = serde_json::from_value(serde_json::json!([
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:aa", "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:bb", "size": 1,
             "platform": {"os": "wasip2", "architecture": "wasm"}},
        ]))
        .expect("entries");
        assert_eq!(
            wasm_index_entry(&entries).expect("wasm").digest,
            "sha256:bb"
        );
        assert!(wasm_index_entry(&entries[..1]).is_none());
        let msg = index_not_wasm("x", &entries[..1]);
        assert!(msg.contains("linux/amd64"), "{msg}");
    }
}
