//! The node's image cache and the pull path.
//!
//! Layout under the cache root:
//!
//! ```text
//! blobs/sha256/<hex>              verified Wasm binaries and container blobs
//!                                 (manifest, config, layers), named by digest
//! manifests/<alg>/<hex>.json      manifest digest -> Wasm digest, kind, size
//!                                 or the container image's blobs
//! refs/<sha256(reference)>.json   fully qualified reference -> the same
//! tmp/                            downloads in progress (emptied on open)
//! ```
//!
//! Every file is written to `tmp/` and renamed into place, so a crash leaves
//! either the old state or the new one, never a torn file that would later be
//! served as an image.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::distribution::RegistryClient;
use crate::error::chain;
use crate::media::{
    container_index_entry, index_not_wasm, is_container_manifest, neither_message,
    wasm_index_entry, wasm_layer, MANIFEST_ACCEPT,
};
use crate::reference::ImageRef;
use crate::registry::{auth_candidates, auth_fingerprint, sha256_digest, sha256_hex, ErrCtx};
use crate::{
    Blob, ContainerImage, ImageContent, ImageError, PullPolicy, PullSecrets, PulledImage,
    WasmBinary, WasmKind,
};

/// Clients kept per (registry, credential); beyond this the map is dropped and
/// rebuilt, which only costs new TLS sessions and tokens.
const MAX_CLIENTS: usize = 64;

/// The node's cache of Wasm images. Cheap to clone; clones share the cache,
/// the registry clients and the per-image pull locks.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// A client per (registry, credential); reusing them keeps connections
    /// and bearer tokens.
    clients: Mutex<HashMap<(String, String), RegistryClient>>,
    /// One async lock per reference so concurrent `ensure` calls pull once.
    /// Weak entries vanish with their last user.
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Whether container images are pulled (the node runs containers) or
    /// refused as not Wasm.
    containers: bool,
    limits: PullLimits,
}

/// Bounds on what a registry may make the node fetch (review SPN-20): any pod
/// can name any registry, so a hostile one must not hang a pull or fill the
/// node.
#[derive(Clone, Debug)]
pub struct PullLimits {
    /// Overall time for one manifest request (tag HEAD, manifest or index GET,
    /// token exchange included). oci-client's read timeout counts per read,
    /// so a registry trickling bytes would otherwise hold a pull forever.
    pub request_deadline: Duration,
    /// Largest manifest, index or image config accepted: the OCI distribution
    /// spec's 4 MiB, the size registries must accept.
    pub max_manifest_bytes: u64,
    /// Largest declared container layer, refused before any download. Generous:
    /// real layers of ML and SDK images reach a few GiB.
    pub max_layer_bytes: u64,
    /// Largest declared Wasm module: a module is read whole into memory to be
    /// compiled, and real modules are tens of MiB.
    pub max_wasm_bytes: u64,
}

impl Default for PullLimits {
    fn default() -> Self {
        PullLimits {
            request_deadline: Duration::from_secs(60),
            max_manifest_bytes: 4 << 20,
            max_layer_bytes: 8 << 30,
            max_wasm_bytes: 512 << 20,
        }
    }
}

/// What the cache knows about one manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    manifest_digest: String,
    #[serde(flatten)]
    content: EntryContent,
}

/// Records written before container images existed are the `Wasm` shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum EntryContent {
    Container {
        container: ContainerEntry,
    },
    Wasm {
        wasm_digest: String,
        kind: WasmKind,
        size: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerEntry {
    manifest: Blob,
    config: Blob,
    layers: Vec<Blob>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RefRecord {
    reference: String,
    #[serde(flatten)]
    entry: Entry,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every update is a
    // single insert or retain.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl ImageStore {
    /// Opens (creating if needed) the cache rooted at `root`.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        Self::open_for(root, false)
    }

    /// Opens the cache; with `containers`, container images are pulled too
    /// (for a node that runs them) instead of being refused as not Wasm.
    pub fn open_for(root: &Path, containers: bool) -> Result<Self, ImageError> {
        Self::open_with_limits(root, containers, PullLimits::default())
    }

    /// Opens the cache as [`ImageStore::open_for`], with other pull limits.
    pub fn open_with_limits(
        root: &Path,
        containers: bool,
        limits: PullLimits,
    ) -> Result<Self, ImageError> {
        for dir in ["blobs/sha256", "manifests", "refs", "tmp"] {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).map_err(|e| {
                ImageError::io(
                    format!("cannot create image cache directory {}", dir.display()),
                    e,
                )
            })?;
        }
        // Anything left in tmp/ is a download a crash interrupted; it was
        // never renamed into place, so nothing refers to it.
        if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                clients: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
                containers,
                limits,
            }),
        })
    }

    /// The cache root this store was opened on.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Makes `image` present according to `policy` and returns where its Wasm
    /// binary is. Concurrent calls for the same image pull once.
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        secrets: &PullSecrets,
    ) -> Result<PulledImage, ImageError> {
        let r = ImageRef::parse(image)?;
        let lock = self.lock_for(&r.resolved);
        let _held = lock.lock().await;

        let cached = self.lookup(&r);
        // What a digest names cannot change, so a cached copy answers every
        // policy without asking the registry.
        if r.reference.digest().is_some() {
            if let Some(hit) = cached {
                return Ok(hit);
            }
        }
        match policy {
            PullPolicy::Never => cached.ok_or_else(|| {
                ImageError::NeverPull(format!(
                    "image {image:?} is not present on the node and imagePullPolicy is Never"
                ))
            }),
            PullPolicy::IfNotPresent => match cached {
                Some(hit) => Ok(hit),
                None => self.pull(&r, secrets).await,
            },
            PullPolicy::Always => self.pull_always(&r, secrets).await,
        }
    }

    /// The cached copy of `image`, without any network access.
    pub fn cached(&self, image: &str) -> Option<PulledImage> {
        let r = ImageRef::parse(image).ok()?;
        self.lookup(&r)
    }

    fn lookup(&self, r: &ImageRef) -> Option<PulledImage> {
        let entry = self
            .read_ref(&r.resolved)
            .or_else(|| r.reference.digest().and_then(|d| self.read_manifest(d)))?;
        self.present(r, &entry, false)
    }

    /// The image for `entry` when its blobs are on disk with the recorded sizes.
    fn present(&self, r: &ImageRef, entry: &Entry, pulled: bool) -> Option<PulledImage> {
        let content = match &entry.content {
            EntryContent::Wasm {
                wasm_digest,
                kind,
                size,
            } => {
                let path = self.blob_path(sha256_hex(wasm_digest)?);
                let meta = std::fs::metadata(&path).ok()?;
                if !meta.is_file() || meta.len() != *size {
                    return None;
                }
                ImageContent::Wasm(WasmBinary {
                    digest: wasm_digest.clone(),
                    path,
                    kind: *kind,
                    size: *size,
                })
            }
            EntryContent::Container { container } => {
                let fill = |b: &Blob| -> Option<Blob> {
                    let path = self.blob_path(sha256_hex(&b.digest)?);
                    let meta = std::fs::metadata(&path).ok()?;
                    (meta.is_file() && meta.len() == b.size).then(|| Blob { path, ..b.clone() })
                };
                ImageContent::Container(ContainerImage {
                    manifest: fill(&container.manifest)?,
                    config: fill(&container.config)?,
                    layers: container
                        .layers
                        .iter()
                        .map(fill)
                        .collect::<Option<Vec<_>>>()?,
                })
            }
        };
        Some(PulledImage {
            image: r.given.clone(),
            resolved: r.resolved.clone(),
            manifest_digest: entry.manifest_digest.clone(),
            pulled,
            content,
        })
    }

    /// `Always`: one manifest HEAD; the blobs are downloaded only when the
    /// registry's current digest is not cached.
    async fn pull_always(
        &self,
        r: &ImageRef,
        secrets: &PullSecrets,
    ) -> Result<PulledImage, ImageError> {
        let digest = self
            .with_auth(r, secrets, |client| async move {
                let action = action(r);
                let ctx = pull_ctx(r, &action);
                let max = self.inner.limits.max_manifest_bytes;
                let head = client.manifest_digest(&r.reference, MANIFEST_ACCEPT, max, &ctx);
                self.deadline(head, &ctx).await?
            })
            .await?;
        if let Some(entry) = self.read_manifest(&digest) {
            if let Some(hit) = self.present(r, &entry, false) {
                self.write_ref(r, &entry).await?;
                return Ok(hit);
            }
        }
        self.pull(r, secrets).await
    }

    async fn pull(&self, r: &ImageRef, secrets: &PullSecrets) -> Result<PulledImage, ImageError> {
        self.with_auth(r, secrets, |client| self.pull_with(client, r))
            .await
    }

    /// Runs `op` with each matching credential in turn until one is not
    /// refused, as the kubelet does with several imagePullSecrets.
    async fn with_auth<T, F, Fut>(
        &self,
        r: &ImageRef,
        secrets: &PullSecrets,
        op: F,
    ) -> Result<T, ImageError>
    where
        F: Fn(RegistryClient) -> Fut,
        Fut: Future<Output = Result<T, ImageError>>,
    {
        let mut refused = None;
        for auth in auth_candidates(secrets, r) {
            let client = self.client(r.registry(), auth)?;
            match op(client).await {
                Err(e @ ImageError::Unauthorized(_)) => refused = Some(e),
                other => return other,
            }
        }
        Err(refused.unwrap_or_else(|| {
            ImageError::Registry(format!("{}: no credentials to try", action(r)))
        }))
    }

    async fn pull_with(
        &self,
        client: RegistryClient,
        r: &ImageRef,
    ) -> Result<PulledImage, ImageError> {
        let action = action(r);
        let ctx = pull_ctx(r, &action);
        let (body, digest) = self.pull_manifest(&client, &r.reference, &ctx).await?;
        verify_manifest(&body, &digest, r.reference.digest(), &ctx)?;

        // For an index, the Wasm platform's manifest is fetched by digest; the
        // blob is then addressed through that same reference.
        let (manifest, blob_ref, manifest_body): (OciImageManifest, Reference, Vec<u8>) =
            match parse_manifest(&body, &ctx)? {
                OciManifest::Image(m) => (m, r.reference.clone(), body.to_vec()),
                OciManifest::ImageIndex(index) => {
                    let entry = wasm_index_entry(&index.manifests)
                        .or_else(|| {
                            self.inner
                                .containers
                                .then(|| container_index_entry(&index.manifests))
                                .flatten()
                        })
                        .ok_or_else(|| {
                            ImageError::NotWasm(index_not_wasm(&r.given, &index.manifests))
                        })?;
                    let child = r.reference.clone_with_digest(entry.digest.clone());
                    let (body, child_digest) = self.pull_manifest(&client, &child, &ctx).await?;
                    verify_manifest(&body, &child_digest, Some(&entry.digest), &ctx)?;
                    match parse_manifest(&body, &ctx)? {
                        OciManifest::Image(m) => (m, child, body.to_vec()),
                        OciManifest::ImageIndex(_) => {
                            return Err(ImageError::Registry(format!(
                                "{action}: its image index points at another index ({}); nested indexes are not supported",
                                entry.digest
                            )))
                        }
                    }
                }
            };

        let layer = match wasm_layer(&r.given, &manifest) {
            Ok(layer) => layer,
            Err(_) if self.inner.containers && is_container_manifest(&manifest) => {
                let entry = self
                    .pull_container(&client, &blob_ref, &ctx, &manifest, &manifest_body)
                    .await?;
                let entry = Entry {
                    manifest_digest: digest,
                    content: EntryContent::Container { container: entry },
                };
                return self.record(r, entry).await;
            }
            Err(_) if self.inner.containers => {
                return Err(ImageError::NotWasm(neither_message(&r.given, &manifest)))
            }
            Err(msg) => return Err(ImageError::NotWasm(msg)),
        };
        let hex = sha256_hex(&layer.digest).ok_or_else(|| {
            ImageError::Registry(format!(
                "{action}: its Wasm layer has digest {:?}; only sha256 digests are supported",
                layer.digest
            ))
        })?;
        let size = u64::try_from(layer.size).map_err(|_| {
            ImageError::Registry(format!(
                "{action}: its manifest gives the Wasm layer a negative size"
            ))
        })?;
        self.check_size(
            layer,
            size,
            self.inner.limits.max_wasm_bytes,
            "Wasm layer",
            &ctx,
        )?;

        // Blobs are content-addressed: another tag may already have brought
        // these exact bytes.
        let kind = match self.blob_kind(hex, size) {
            Some(kind) => kind,
            None => self
                .download(&client, &blob_ref, layer, hex, size, Some(r), &ctx)
                .await?
                .ok_or_else(|| {
                    ImageError::NotWasm(format!("image {:?} holds no WebAssembly", r.given))
                })?,
        };
        let entry = Entry {
            manifest_digest: digest,
            content: EntryContent::Wasm {
                wasm_digest: layer.digest.clone(),
                kind,
                size,
            },
        };
        self.record(r, entry).await
    }

    /// Writes the records of a complete pull and returns the image.
    async fn record(&self, r: &ImageRef, entry: Entry) -> Result<PulledImage, ImageError> {
        self.write_manifest(&entry).await?;
        self.write_ref(r, &entry).await?;
        tracing::info!(image = %r.resolved, digest = %entry.manifest_digest, "pulled image");
        self.present(r, &entry, true).ok_or_else(|| {
            ImageError::io(
                format!(
                    "{}: the downloaded blobs vanished from the cache",
                    action(r)
                ),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }

    /// Downloads a container image's config and layers (those not cached yet)
    /// and stores its manifest, all under their digests.
    async fn pull_container(
        &self,
        client: &RegistryClient,
        blob_ref: &Reference,
        ctx: &ErrCtx<'_>,
        manifest: &OciImageManifest,
        manifest_body: &[u8],
    ) -> Result<ContainerEntry, ImageError> {
        let mut blobs = Vec::with_capacity(manifest.layers.len() + 1);
        for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let hex = sha256_hex(&desc.digest).ok_or_else(|| {
                ImageError::Registry(format!(
                    "{}: blob digest {:?} is not sha256; only sha256 digests are supported",
                    ctx.action, desc.digest
                ))
            })?;
            let size = u64::try_from(desc.size).map_err(|_| {
                ImageError::Registry(format!(
                    "{}: its manifest gives blob {} a negative size",
                    ctx.action, desc.digest
                ))
            })?;
            let (max, what) = if std::ptr::eq(desc, &manifest.config) {
                (self.inner.limits.max_manifest_bytes, "image config")
            } else {
                (self.inner.limits.max_layer_bytes, "layer")
            };
            self.check_size(desc, size, max, what, ctx)?;
            let cached = std::fs::metadata(self.blob_path(hex)).is_ok_and(|m| m.len() == size);
            if !cached {
                self.download(client, blob_ref, desc, hex, size, None, ctx)
                    .await?;
            }
            blobs.push(Blob {
                media_type: desc.media_type.clone(),
                digest: desc.digest.clone(),
                size,
                path: PathBuf::new(),
            });
        }
        let manifest_digest = sha256_digest(manifest_body);
        let hex = sha256_hex(&manifest_digest).unwrap_or_default().to_string();
        self.write_blob(&hex, manifest_body).await?;
        let config = blobs.remove(0);
        Ok(ContainerEntry {
            manifest: Blob {
                media_type: manifest
                    .media_type
                    .clone()
                    .unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_string()),
                digest: manifest_digest,
                size: manifest_body.len() as u64,
                path: PathBuf::new(),
            },
            config,
            layers: blobs,
        })
    }

    /// A manifest or index by reference, within the request deadline and the
    /// manifest size limit (which bounds the bytes read, not only kept: see
    /// `distribution`). Returns the body and the digest the registry reported
    /// (the body's own when it reported none).
    async fn pull_manifest(
        &self,
        client: &RegistryClient,
        reference: &Reference,
        ctx: &ErrCtx<'_>,
    ) -> Result<(bytes::Bytes, String), ImageError> {
        let max = self.inner.limits.max_manifest_bytes;
        let get = client.manifest(reference, MANIFEST_ACCEPT, max, ctx);
        let manifest = self.deadline(get, ctx).await??;
        let digest = manifest
            .reported_digest
            .unwrap_or_else(|| sha256_digest(&manifest.body));
        Ok((manifest.body, digest))
    }

    /// `op` within [`PullLimits::request_deadline`].
    async fn deadline<T>(
        &self,
        op: impl Future<Output = T>,
        ctx: &ErrCtx<'_>,
    ) -> Result<T, ImageError> {
        let limit = self.inner.limits.request_deadline;
        tokio::time::timeout(limit, op).await.map_err(|_| {
            ImageError::Registry(format!(
                "{}: registry {} did not answer within {limit:?}",
                ctx.action, ctx.registry
            ))
        })
    }

    /// Refuses a blob whose declared size is over `max`, before downloading it.
    fn check_size(
        &self,
        desc: &OciDescriptor,
        size: u64,
        max: u64,
        what: &str,
        ctx: &ErrCtx<'_>,
    ) -> Result<(), ImageError> {
        if size <= max {
            return Ok(());
        }
        Err(ImageError::Registry(format!(
            "{}: its manifest declares {what} {} of {size} bytes, more than the {max} bytes allowed",
            ctx.action, desc.digest
        )))
    }

    /// Stores already verified bytes under their digest.
    async fn write_blob(&self, hex: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let dest = self.blob_path(hex);
        let tmp = TempFile(self.temp_path(hex));
        let write = async {
            let mut file = tokio::fs::File::create(&tmp.0).await?;
            file.write_all(bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp.0, &dest).await
        };
        write
            .await
            .map_err(|e| ImageError::io(format!("cannot store {}", dest.display()), e))?;
        tmp.keep();
        Ok(())
    }

    /// The kind of an already cached blob, if it is complete.
    fn blob_kind(&self, hex: &str, size: u64) -> Option<WasmKind> {
        let mut file = std::fs::File::open(self.blob_path(hex)).ok()?;
        if file.metadata().ok()?.len() != size {
            return None;
        }
        let mut header = [0u8; 8];
        file.read_exact(&mut header).ok()?;
        WasmKind::detect(&header)
    }

    /// Streams a blob into `tmp/`, checking size, digest and (for a Wasm layer
    /// of image `wasm`) the Wasm header, and renames it into `blobs/` only when
    /// all hold. Returns the Wasm kind of a Wasm layer.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        client: &RegistryClient,
        blob_ref: &Reference,
        layer: &OciDescriptor,
        hex: &str,
        size: u64,
        wasm: Option<&ImageRef>,
        ctx: &ErrCtx<'_>,
    ) -> Result<Option<WasmKind>, ImageError> {
        let get = client.blob(blob_ref, &layer.digest, size, ctx);
        let mut res = self.deadline(get, ctx).await??;
        let tmp = TempFile(self.temp_path(hex));
        let mut file = tokio::fs::File::create(&tmp.0)
            .await
            .map_err(|e| ImageError::io(format!("cannot create {}", tmp.0.display()), e))?;
        let write_err = |e| ImageError::io(format!("cannot write {}", tmp.0.display()), e);

        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut header: Vec<u8> = Vec::with_capacity(8);
        let not_wasm = || {
            ImageError::NotWasm(format!(
                "image {:?} holds no WebAssembly: its {} layer {} does not start with the Wasm header",
                wasm.map(|r| r.given.as_str()).unwrap_or_default(), layer.media_type, layer.digest
            ))
        };
        while let Some(chunk) = res.chunk().await.map_err(|e| stream_error(e, layer, ctx))? {
            written += chunk.len() as u64;
            if written > size {
                return Err(ImageError::DigestMismatch(format!(
                    "{}: registry {} sent more than the {size} bytes its manifest declares for layer {}",
                    ctx.action, ctx.registry, layer.digest
                )));
            }
            if wasm.is_some() && header.len() < 8 {
                let take = (8 - header.len()).min(chunk.len());
                header.extend_from_slice(&chunk[..take]);
                // Stop early on a non-Wasm layer instead of downloading it all.
                if header.len() == 8 && WasmKind::detect(&header).is_none() {
                    return Err(not_wasm());
                }
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(write_err)?;
        }
        file.flush().await.map_err(write_err)?;
        file.sync_all().await.map_err(write_err)?;
        drop(file);

        if written != size {
            return Err(ImageError::DigestMismatch(format!(
                "{}: layer {} from registry {} is {written} bytes, its manifest declares {size}",
                ctx.action, layer.digest, ctx.registry
            )));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != layer.digest {
            return Err(ImageError::DigestMismatch(format!(
                "{}: layer from registry {} does not match its digest (expected {}, got {actual})",
                ctx.action, ctx.registry, layer.digest
            )));
        }
        let kind = match wasm {
            Some(_) => Some(WasmKind::detect(&header).ok_or_else(not_wasm)?),
            None => None,
        };
        let dest = self.blob_path(hex);
        tokio::fs::rename(&tmp.0, &dest)
            .await
            .map_err(|e| ImageError::io(format!("cannot store {}", dest.display()), e))?;
        tmp.keep();
        Ok(kind)
    }

    fn client(&self, registry: &str, auth: RegistryAuth) -> Result<RegistryClient, ImageError> {
        let key = (registry.to_string(), auth_fingerprint(&auth));
        let mut clients = lock(&self.inner.clients);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let client = RegistryClient::new(registry, auth)?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.inner.locks);
        locks.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = locks.get(key).and_then(Weak::upgrade) {
            return existing;
        }
        let fresh = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.to_string(), Arc::downgrade(&fresh));
        fresh
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(hex)
    }

    fn ref_path(&self, resolved: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(resolved.as_bytes()));
        self.inner.root.join("refs").join(format!("{name}.json"))
    }

    /// `manifests/<alg>/<hex>.json`, only for digests safe to use as a path.
    fn manifest_path(&self, digest: &str) -> Option<PathBuf> {
        let (alg, hex) = digest.split_once(':')?;
        let ok = |s: &str, extra: fn(u8) -> bool| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || extra(b))
        };
        if !ok(alg, |b| b.is_ascii_lowercase()) || !ok(hex, |b| matches!(b, b'a'..=b'f')) {
            return None;
        }
        Some(
            self.inner
                .root
                .join("manifests")
                .join(alg)
                .join(format!("{hex}.json")),
        )
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.inner
            .root
            .join("tmp")
            .join(format!("{name}.{}.{n}.part", std::process::id()))
    }

    fn read_ref(&self, resolved: &str) -> Option<Entry> {
        let record: RefRecord = read_json(&self.ref_path(resolved))?;
        // The file name is a hash; the stored name guards against reading
        // another reference's record.
        (record.reference == resolved).then_some(record.entry)
    }

    fn read_manifest(&self, digest: &str) -> Option<Entry> {
        let entry: Entry = read_json(&self.manifest_path(digest)?)?;
        (entry.manifest_digest == digest).then_some(entry)
    }

    async fn write_ref(&self, r: &ImageRef, entry: &Entry) -> Result<(), ImageError> {
        let record = RefRecord {
            reference: r.resolved.clone(),
            entry: entry.clone(),
        };
        self.write_json(&self.ref_path(&r.resolved), &record).await
    }

    async fn write_manifest(&self, entry: &Entry) -> Result<(), ImageError> {
        match self.manifest_path(&entry.manifest_digest) {
            Some(path) => self.write_json(&path, entry).await,
            // An unusual digest algorithm: the reference record still serves
            // the image, only the by-digest shortcut is lost.
            None => Ok(()),
        }
    }

    async fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| {
            ImageError::io(
                format!("cannot encode {}", path.display()),
                std::io::Error::other(e),
            )
        })?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| ImageError::io(format!("cannot create {}", dir.display()), e))?;
        }
        let tmp = TempFile(self.temp_path("record"));
        let write = async {
            let mut file = tokio::fs::File::create(&tmp.0).await?;
            file.write_all(&bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp.0, path).await
        };
        write
            .await
            .map_err(|e| ImageError::io(format!("cannot write {}", path.display()), e))?;
        tmp.keep();
        Ok(())
    }
}

/// A file in `tmp/` that is removed unless it was renamed into place.
struct TempFile(PathBuf);

impl TempFile {
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            // Treated as not cached: the next pull rewrites it.
            tracing::warn!(path = %path.display(), error = %e, "unreadable image cache record");
            None
        }
    }
}

fn action(r: &ImageRef) -> String {
    format!("failed to pull image {:?}", r.given)
}

fn pull_ctx<'a>(r: &'a ImageRef, action: &'a str) -> ErrCtx<'a> {
    ErrCtx {
        action,
        registry: r.registry(),
        subject: &r.resolved,
        auth_hint: "check the pod's imagePullSecrets",
    }
}

/// The manifest bytes must hash to what the registry reported and, for a
/// digest reference, to the digest asked for.
fn verify_manifest(
    body: &[u8],
    reported: &str,
    expected: Option<&str>,
    ctx: &ErrCtx<'_>,
) -> Result<(), ImageError> {
    let actual = sha256_digest(body);
    for want in std::iter::once(reported).chain(expected) {
        if want.starts_with("sha256:") && want != actual {
            return Err(ImageError::DigestMismatch(format!(
                "{}: manifest from registry {} does not match its digest (expected {want}, got {actual})",
                ctx.action, ctx.registry
            )));
        }
    }
    Ok(())
}

fn parse_manifest(body: &[u8], ctx: &ErrCtx<'_>) -> Result<OciManifest, ImageError> {
    serde_json::from_slice(body).map_err(|e| {
        ImageError::Registry(format!(
            "{}: registry {} returned a manifest that is neither an OCI image manifest nor an index: {e}",
            ctx.action, ctx.registry
        ))
    })
}

/// A blob download that broke off; its digest is checked once it is in.
fn stream_error(e: reqwest::Error, layer: &OciDescriptor, ctx: &ErrCtx<'_>) -> ImageError {
    ImageError::Registry(format!(
        "{}: download of layer {} from registry {} failed: {}",
        ctx.action,
        layer.digest,
        ctx.registry,
        chain(&e)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrCtx<'static> {
        ErrCtx {
            action: "failed to pull image \"x\"",
            registry: "r",
            subject: "r/x:latest",
            auth_hint: "",
        }
    }

    #[test]
    fn manifest_digest_is_checked() {
        let body = b"{}";
        let good = sha256_digest(body);
        verify_manifest(body, &good, Some(&good), &ctx()).expect("matches");
        let bad = sha256_digest(b"other");
        let err = verify_manifest(body, &bad, None, &ctx()).expect_err("reported mismatch");
        assert!(matches!(err, ImageError::DigestMismatch(_)), "{err}");
        let err = verify_manifest(body, &good, Some(&bad), &ctx()).expect_err("asked mismatch");
        assert!(matches!(err, ImageError::DigestMismatch(_)), "{err}");
    }

    #[test]
    fn corrupt_and_truncated_cache_entries_are_misses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("open");
        let r = ImageRef::parse("127.0.0.1:1/a/b:v1").expect("ref");
        let bytes = b"\0asm\x01\0\0\0".to_vec();
        let digest = sha256_digest(&bytes);
        let hex = sha256_hex(&digest).expect("hex").to_string();
        std::fs::write(store.blob_path(&hex), &bytes).expect("blob");
        let entry = Entry {
            manifest_digest: sha256_digest(b"m"),
            content: EntryContent::Wasm {
                wasm_digest: digest,
                kind: WasmKind::Module,
                size: 8,
            },
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(store.write_ref(&r, &entry)).expect("write");
        assert!(store.cached("127.0.0.1:1/a/b:v1").is_some());
        // A truncated blob is not served.
        std::fs::write(store.blob_path(&hex), b"\0asm").expect("truncate");
        assert!(store.cached("127.0.0.1:1/a/b:v1").is_none());
        // Nor is a record that does not parse.
        std::fs::write(store.blob_path(&hex), &bytes).expect("blob");
        std::fs::write(store.ref_path(&r.resolved), b"{").expect("corrupt");
        assert!(store.cached("127.0.0.1:1/a/b:v1").is_none());
        // Temp files of a crashed download are removed on open.
        std::fs::write(dir.path().join("tmp/x.part"), b"junk").expect("tmp");
        ImageStore::open(dir.path()).expect("reopen");
        assert!(!dir.path().join("tmp/x.part").exists());
    }

    #[test]
    fn store_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<ImageStore>();
        check::<PullSecrets>();
    }
}
