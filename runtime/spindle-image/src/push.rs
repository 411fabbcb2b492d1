//! Publishing a module or component as a CNCF Wasm OCI artifact.

use std::io::IsTerminal;
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use serde::Serialize;

use crate::media::{WASM_CONFIG_V0_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use crate::reference::ImageRef;
use crate::registry::{map_error, new_client, sha256_digest, ErrCtx};
use crate::{ImageError, WasmKind};

/// Chunk size of the upload stream; small enough for a smooth progress bar,
/// large enough to keep per-chunk overhead negligible.
const CHUNK: usize = 256 * 1024;

/// The config blob of the CNCF Wasm artifact (`application/vnd.wasm.config.v0+json`).
/// No `created` timestamp: pushing the same file twice yields the same digest.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    architecture: &'static str,
    os: &'static str,
    layer_digests: [&'a str; 1],
}

/// Publishes the module or component in `file` at `reference` as a CNCF Wasm
/// OCI artifact and returns the manifest digest (`sha256:...`).
///
/// Progress is drawn on stderr when it is a terminal; either way one final
/// line on stderr reports the result.
pub async fn push(
    file: &Path,
    reference: &str,
    auth: Option<(String, String)>,
) -> Result<String, ImageError> {
    let wasm = tokio::fs::read(file)
        .await
        .map_err(|e| ImageError::io(format!("cannot read {}", file.display()), e))?;
    let kind = WasmKind::detect(&wasm).ok_or_else(|| {
        ImageError::NotWasm(format!(
            "{} is not a WebAssembly module or component (it does not start with the Wasm header)",
            file.display()
        ))
    })?;
    let r = ImageRef::parse(reference)?;
    let auth = match auth {
        Some((user, pass)) => RegistryAuth::Basic(user, pass),
        None => RegistryAuth::Anonymous,
    };

    let wasm = Bytes::from(wasm);
    let size = wasm.len() as u64;
    let layer_digest = sha256_digest(&wasm);
    let config = serde_json::to_vec(&WasmConfig {
        architecture: "wasm",
        os: kind.wasi_os(),
        layer_digests: [&layer_digest],
    })
    .map_err(|e| ImageError::Registry(format!("cannot encode the artifact config: {e}")))?;
    let config_digest = sha256_digest(&config);
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
        config: OciDescriptor {
            media_type: WASM_CONFIG_V0_MEDIA_TYPE.to_string(),
            digest: config_digest.clone(),
            size: config.len() as i64,
            ..Default::default()
        },
        layers: vec![OciDescriptor {
            media_type: WASM_LAYER_MEDIA_TYPE.to_string(),
            digest: layer_digest.clone(),
            size: wasm.len() as i64,
            ..Default::default()
        }],
        ..Default::default()
    };
    // The digest is of exactly these bytes, so they are what gets uploaded
    // (oci-client's own push would re-serialise them canonically).
    let manifest_bytes = serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::Registry(format!("cannot encode the manifest: {e}")))?;
    let manifest_digest = sha256_digest(&manifest_bytes);

    let action = format!("failed to push {reference:?}");
    let ctx = ErrCtx {
        action: &action,
        registry: r.registry(),
        subject: &r.resolved,
        auth_hint: "check the registry credentials",
    };
    let err = |e| map_error(e, &ctx);
    // Monolithic: the layer goes up in one streamed PUT instead of a PATCH
    // per chunk.
    let client = new_client(r.registry(), true)?;
    // push_blob* do not record credentials themselves; the token is fetched
    // lazily from what is stored here.
    client.store_auth_if_needed(r.registry(), &auth).await;

    let bar = progress_bar(size, &r.resolved);
    if client
        .blob_exists(&r.reference, &layer_digest)
        .await
        .map_err(err)?
    {
        // Re-pushing a tag with unchanged bytes: nothing to upload.
        bar.set_position(size);
    } else {
        let chunks: Vec<Bytes> = (0..wasm.len())
            .step_by(CHUNK)
            .map(|start| wasm.slice(start..(start + CHUNK).min(wasm.len())))
            .collect();
        let progress = bar.clone();
        let stream = futures::stream::iter(chunks).map(move |chunk| {
            progress.inc(chunk.len() as u64);
            Ok(chunk)
        });
        client
            .push_blob_stream(&r.reference, stream, &layer_digest, Some(size))
            .await
            .map_err(err)?;
    }
    client
        .push_blob(&r.reference, config, &config_digest)
        .await
        .map_err(err)?;
    client
        .push_manifest_raw(
            &r.reference,
            manifest_bytes,
            http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE),
        )
        .await
        .map_err(err)?;
    bar.finish_and_clear();
    eprintln!(
        "pushed {} ({kind}, {size} bytes) as {manifest_digest}",
        r.resolved
    );
    Ok(manifest_digest)
}

/// A byte progress bar on stderr, or a hidden one when stderr is not a
/// terminal (logs and CI get only the final line).
fn progress_bar(size: u64, name: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("pushing {name}"));
    bar
}
