//! End-to-end tests against a real registry (Debian's `docker-registry`,
//! distribution 2.8), started per test on a port it picks itself.
//!
//! Without the registry binary these tests fail: a skipped test would report `ok` for
//! pulls that never ran (scripts/test installs it).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use spindle_image::{ImageError, ImageStore, PullPolicy, PullSecrets, WasmKind};

const MODULE: &[u8] = b"\0asm\x01\0\0\0";
const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

#[path = "../../../tests/common/listen.rs"]
mod listen;
#[path = "../../../tests/common/registry_server.rs"]
mod registry_server;

/// A running registry, killed when dropped.
struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Self {
        Self::start_with(false)
    }

    fn start_with(htpasswd: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = if htpasswd {
            registry_server::htpasswd_auth(dir.path())
        } else {
            String::new()
        };
        let (child, addr) = registry_server::spawn_registry(dir.path(), &auth);
        Registry { child, addr, dir }
    }

    fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.dir.path().join("registry.log")) {
                eprintln!("--- registry log ---\n{log}");
            }
        }
    }
}

fn wasm_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(bytes).expect("write");
    path
}

/// A module whose bytes differ per `tag`: a custom section named by it.
fn module_with(tag: &str) -> Vec<u8> {
    let mut m = MODULE.to_vec();
    let name = tag.as_bytes();
    m.push(0); // custom section id
    m.push((1 + name.len()) as u8); // section size
    m.push(name.len() as u8);
    m.extend_from_slice(name);
    m
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn plain_client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

/// Pushes an arbitrary manifest with oci-client and returns its digest.
async fn raw_push(reference: &str, layers: &[(&[u8], &str)], config: (&[u8], &str)) -> String {
    let client = plain_client();
    let r: Reference = reference.parse().expect("reference");
    let layers: Vec<ImageLayer> = layers
        .iter()
        .map(|(data, mt)| ImageLayer::new(data.to_vec(), mt.to_string(), None))
        .collect();
    let config = Config::new(config.0.to_vec(), config.1.to_string(), None);
    let manifest = OciImageManifest::build(&layers, &config, None);
    client
        .push(
            &r,
            &layers,
            config,
            &RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .expect("raw push");
    client
        .fetch_manifest_digest(&r, &RegistryAuth::Anonymous)
        .await
        .expect("digest")
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(&dir.path().join("cache")).expect("open store");
    (dir, store)
}

#[tokio::test]
async fn module_push_pull_and_policies() {
    let reg = Registry::start();
    let (dir, store) = store();
    let image = reg.image("demo/hello:v1");
    let none = PullSecrets::new();

    let file = wasm_file(dir.path(), "hello.wasm", MODULE);
    let pushed = spindle_image::push(&file, &image, None)
        .await
        .expect("push");
    assert!(pushed.starts_with("sha256:"), "{pushed}");

    let first = store
        .ensure(&image, PullPolicy::IfNotPresent, &none)
        .await
        .expect("pull");
    assert!(first.pulled);
    assert_eq!(first.image, image);
    assert_eq!(first.resolved, image);
    assert_eq!(first.manifest_digest, pushed);
    assert_eq!(first.wasm().expect("wasm").digest, sha(MODULE));
    assert_eq!(first.wasm().expect("wasm").kind, WasmKind::Module);
    assert_eq!(first.size(), MODULE.len() as u64);
    assert_eq!(
        std::fs::read(&first.wasm().expect("wasm").path).expect("read"),
        MODULE
    );
    assert_eq!(
        first.image_id(),
        format!("{}@{pushed}", reg.image("demo/hello"))
    );

    let second = store
        .ensure(&image, PullPolicy::IfNotPresent, &none)
        .await
        .expect("cached");
    assert!(!second.pulled);
    assert_eq!(
        second.wasm().expect("wasm").path,
        first.wasm().expect("wasm").path
    );

    // Always with an unchanged tag: a HEAD, no download.
    let always = store
        .ensure(&image, PullPolicy::Always, &none)
        .await
        .expect("always");
    assert!(!always.pulled);
    assert_eq!(always.manifest_digest, pushed);

    // New content under the same tag.
    let v2 = module_with("v2");
    let file2 = wasm_file(dir.path(), "hello2.wasm", &v2);
    let pushed2 = spindle_image::push(&file2, &image, None)
        .await
        .expect("push v2");
    assert_ne!(pushed2, pushed);
    // IfNotPresent keeps what the node has.
    let stale = store
        .ensure(&image, PullPolicy::IfNotPresent, &none)
        .await
        .expect("cached");
    assert_eq!(stale.manifest_digest, pushed);
    let fresh = store
        .ensure(&image, PullPolicy::Always, &none)
        .await
        .expect("always v2");
    assert!(fresh.pulled);
    assert_eq!(fresh.manifest_digest, pushed2);
    assert_eq!(
        std::fs::read(&fresh.wasm().expect("wasm").path).expect("read"),
        v2
    );
    assert_eq!(
        store.cached(&image).map(|c| c.manifest_digest),
        Some(pushed2.clone())
    );

    // The first digest is still cached and is served by digest, offline.
    let by_digest = format!("{}@{pushed}", reg.image("demo/hello"));
    let old = store
        .ensure(&by_digest, PullPolicy::Never, &none)
        .await
        .expect("by digest");
    assert_eq!(
        std::fs::read(&old.wasm().expect("wasm").path).expect("read"),
        MODULE
    );
    assert!(!old.pulled);
}

#[tokio::test]
async fn component_artifact_layout() {
    let reg = Registry::start();
    let (dir, store) = store();
    let image = reg.image("demo/comp:1.0");
    let file = wasm_file(dir.path(), "comp.wasm", COMPONENT);
    let digest = spindle_image::push(&file, &image, None)
        .await
        .expect("push");

    // The artifact follows the CNCF Wasm OCI layout.
    let client = plain_client();
    let r: Reference = image.parse().expect("ref");
    let (manifest, got, config) = client
        .pull_manifest_and_config(&r, &RegistryAuth::Anonymous)
        .await
        .expect("manifest");
    assert_eq!(got, digest);
    assert_eq!(
        manifest.config.media_type,
        spindle_image::WASM_CONFIG_V0_MEDIA_TYPE
    );
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(manifest.layers[0].media_type, "application/wasm");
    let config: serde_json::Value = serde_json::from_str(&config).expect("config json");
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(config["layerDigests"][0], sha(COMPONENT).as_str());

    let pulled = store
        .ensure(&image, PullPolicy::IfNotPresent, &PullSecrets::new())
        .await
        .expect("pull");
    assert_eq!(pulled.wasm().expect("wasm").kind, WasmKind::Component);
    assert_eq!(
        std::fs::read(&pulled.wasm().expect("wasm").path).expect("read"),
        COMPONENT
    );
}

#[tokio::test]
async fn never_without_cache() {
    // No registry needed: Never must not try the network at all.
    let (_dir, store) = store();
    let err = store
        .ensure(
            "127.0.0.1:1/demo/absent:v1",
            PullPolicy::Never,
            &PullSecrets::new(),
        )
        .await
        .expect_err("never");
    assert!(matches!(err, ImageError::NeverPull(_)), "{err}");
    assert_eq!(err.reason(), "ErrImageNeverPull");
    assert_eq!(
        err.to_string(),
        "image \"127.0.0.1:1/demo/absent:v1\" is not present on the node and imagePullPolicy is Never"
    );
    assert!(store.cached("127.0.0.1:1/demo/absent:v1").is_none());
}

#[tokio::test]
async fn invalid_names() {
    let (_dir, store) = store();
    let err = store
        .ensure("Not/Valid:x", PullPolicy::IfNotPresent, &PullSecrets::new())
        .await
        .expect_err("invalid");
    assert_eq!(err.reason(), "InvalidImageName");
    assert!(err.to_string().contains("Not/Valid:x"), "{err}");
}

#[tokio::test]
async fn container_image_is_not_wasm() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let image = reg.image("demo/nginx:1");
    raw_push(
        &image,
        &[(
            b"\x1f\x8b\x08\0\0\0\0\0\0\x03\x03\0\0\0\0\0\0\0\0\0",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )],
        (b"{}", "application/vnd.oci.image.config.v1+json"),
    )
    .await;
    let err = store
        .ensure(&image, PullPolicy::IfNotPresent, &PullSecrets::new())
        .await
        .expect_err("not wasm");
    assert!(matches!(err, ImageError::NotWasm(_)), "{err}");
    assert_eq!(err.reason(), "ErrImagePull");
    assert_eq!(
        err.to_string(),
        format!("image \"{image}\" holds no WebAssembly: its layers are application/vnd.oci.image.layer.v1.tar+gzip (a container image; this node runs Wasm only)")
    );

    // A layer typed as Wasm whose bytes are not Wasm is refused too.
    let liar = reg.image("demo/liar:1");
    raw_push(
        &liar,
        &[(b"#!/bin/sh\necho hi\n", "application/wasm")],
        (b"{}", spindle_image::WASM_CONFIG_V0_MEDIA_TYPE),
    )
    .await;
    let err = store
        .ensure(&liar, PullPolicy::IfNotPresent, &PullSecrets::new())
        .await
        .expect_err("not wasm bytes");
    assert!(matches!(err, ImageError::NotWasm(_)), "{err}");
    assert!(err.to_string().contains("Wasm header"), "{err}");
    assert!(store.cached(&liar).is_none());
}

#[tokio::test]
async fn missing_images_are_not_found() {
    let reg = Registry::start();
    let (dir, store) = store();
    let file = wasm_file(dir.path(), "m.wasm", MODULE);
    spindle_image::push(&file, &reg.image("demo/hello:v1"), None)
        .await
        .expect("push");
    for missing in [reg.image("demo/hello:nope"), reg.image("demo/absent:v1")] {
        for policy in [PullPolicy::IfNotPresent, PullPolicy::Always] {
            let err = store
                .ensure(&missing, policy, &PullSecrets::new())
                .await
                .expect_err("missing");
            eprintln!("{policy}: {err}");
            assert!(matches!(err, ImageError::NotFound(_)), "{policy}: {err}");
            assert!(err.to_string().contains(&missing), "{err}");
            assert_eq!(err.reason(), "ErrImagePull");
        }
    }
}

#[tokio::test]
async fn older_wasm_layer_types() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let none = PullSecrets::new();

    let old = reg.image("demo/wasm-to-oci:v1");
    let digest = raw_push(
        &old,
        &[(MODULE, spindle_image::WASM_TO_OCI_LAYER_MEDIA_TYPE)],
        (b"{}", spindle_image::WASM_TO_OCI_CONFIG_MEDIA_TYPE),
    )
    .await;
    let pulled = store
        .ensure(&old, PullPolicy::IfNotPresent, &none)
        .await
        .expect("wasm-to-oci");
    assert_eq!(pulled.manifest_digest, digest);
    assert_eq!(pulled.wasm().expect("wasm").kind, WasmKind::Module);
    assert_eq!(
        std::fs::read(&pulled.wasm().expect("wasm").path).expect("read"),
        MODULE
    );

    let ba = reg.image("demo/bca:v1");
    raw_push(
        &ba,
        &[(COMPONENT, spindle_image::WASM_COMPONENT_LAYER_MEDIA_TYPE)],
        (b"{}", spindle_image::WASM_CONFIG_V0_MEDIA_TYPE),
    )
    .await;
    let pulled = store
        .ensure(&ba, PullPolicy::Always, &none)
        .await
        .expect("component layer");
    assert!(pulled.pulled);
    assert_eq!(pulled.wasm().expect("wasm").kind, WasmKind::Component);
    assert_eq!(
        std::fs::read(&pulled.wasm().expect("wasm").path).expect("read"),
        COMPONENT
    );
}

#[tokio::test]
async fn image_index_with_a_wasm_platform() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let none = PullSecrets::new();
    let wasm_digest = raw_push(
        &reg.image("demo/multi:wasm"),
        &[(COMPONENT, "application/wasm")],
        (b"{}", spindle_image::WASM_CONFIG_V0_MEDIA_TYPE),
    )
    .await;
    let linux_digest = raw_push(
        &reg.image("demo/multi:linux"),
        &[(
            b"not really a tarball",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )],
        (b"{}", "application/vnd.oci.image.config.v1+json"),
    )
    .await;
    let entry = |digest: &str, os: &str, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": 1,
            "platform": {"os": os, "architecture": arch},
        })
    };
    let index = |entries: Vec<serde_json::Value>| -> OciImageIndex {
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .expect("index")
    };
    // Sizes in index entries must be right for the registry to accept them.
    let size_of = |reference: String| async move {
        let client = plain_client();
        let r: Reference = reference.parse().expect("ref");
        let (raw, _) = client
            .pull_manifest_raw(
                &r,
                &RegistryAuth::Anonymous,
                &["application/vnd.oci.image.manifest.v1+json"],
            )
            .await
            .expect("raw manifest");
        raw.len()
    };
    let wasm_size = size_of(reg.image("demo/multi:wasm")).await;
    let linux_size = size_of(reg.image("demo/multi:linux")).await;
    let mut wasm_entry = entry(&wasm_digest, "wasip2", "wasm");
    wasm_entry["size"] = wasm_size.into();
    let mut linux_entry = entry(&linux_digest, "linux", "amd64");
    linux_entry["size"] = linux_size.into();

    let client = plain_client();
    let multi = reg.image("demo/multi:v1");
    client
        .push_manifest_list(
            &multi.parse().expect("ref"),
            &RegistryAuth::Anonymous,
            index(vec![linux_entry.clone(), wasm_entry]),
        )
        .await
        .expect("push index");
    let pulled = store
        .ensure(&multi, PullPolicy::IfNotPresent, &none)
        .await
        .expect("pull index");
    assert!(pulled.pulled);
    assert_eq!(pulled.wasm().expect("wasm").kind, WasmKind::Component);
    assert_ne!(pulled.manifest_digest, wasm_digest, "index digest expected");
    // Always compares against the index digest the registry reports.
    let again = store
        .ensure(&multi, PullPolicy::Always, &none)
        .await
        .expect("always");
    assert!(!again.pulled);

    let linux_only = reg.image("demo/multi:linux-only");
    client
        .push_manifest_list(
            &linux_only.parse().expect("ref"),
            &RegistryAuth::Anonymous,
            index(vec![linux_entry]),
        )
        .await
        .expect("push index");
    let err = store
        .ensure(&linux_only, PullPolicy::IfNotPresent, &none)
        .await
        .expect_err("no wasm platform");
    assert!(matches!(err, ImageError::NotWasm(_)), "{err}");
    assert!(err.to_string().contains("linux/amd64"), "{err}");
}

#[tokio::test]
async fn cache_survives_restart_without_registry() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let image = reg.image("demo/hello:v1");
    let none = PullSecrets::new();
    let file = wasm_file(dir.path(), "m.wasm", MODULE);
    let digest = spindle_image::push(&file, &image, None)
        .await
        .expect("push");
    {
        let store = ImageStore::open(&cache).expect("open");
        let pulled = store
            .ensure(&image, PullPolicy::Always, &none)
            .await
            .expect("pull");
        assert!(pulled.pulled);
    }
    drop(reg);

    let store = ImageStore::open(&cache).expect("reopen");
    let cached = store.cached(&image).expect("cached after restart");
    assert_eq!(cached.manifest_digest, digest);
    let hit = store
        .ensure(&image, PullPolicy::IfNotPresent, &none)
        .await
        .expect("served from cache");
    assert!(!hit.pulled);
    assert_eq!(
        std::fs::read(&hit.wasm().expect("wasm").path).expect("read"),
        MODULE
    );
    // Always must reach the registry, which is gone: a clear pull error.
    let err = store
        .ensure(&image, PullPolicy::Always, &none)
        .await
        .expect_err("registry down");
    eprintln!("{err}");
    assert!(matches!(err, ImageError::Registry(_)), "{err}");
    assert_eq!(err.reason(), "ErrImagePull");
    assert!(err.to_string().contains("cannot reach registry"), "{err}");
}

#[tokio::test]
async fn concurrent_ensures_pull_once() {
    let reg = Registry::start();
    let (dir, store) = store();
    // "localhost" is loopback too, so it is spoken to over plain HTTP.
    let image = format!(
        "localhost:{}/demo/hello:v1",
        reg.addr.rsplit(':').next().unwrap_or("")
    );
    let file = wasm_file(dir.path(), "m.wasm", &module_with("concurrent"));
    spindle_image::push(&file, &image, None)
        .await
        .expect("push");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let image = image.clone();
            tokio::spawn(async move {
                store
                    .ensure(&image, PullPolicy::IfNotPresent, &PullSecrets::new())
                    .await
            })
        })
        .collect();
    let mut pulled = 0;
    for t in tasks {
        let img = t.await.expect("join").expect("ensure");
        pulled += usize::from(img.pulled);
    }
    assert_eq!(pulled, 1);
}

#[tokio::test]
async fn htpasswd_registry_needs_pull_secrets() {
    let reg = Registry::start_with(true);
    let (dir, store) = store();
    let image = reg.image("private/app:v1");
    let file = wasm_file(dir.path(), "m.wasm", MODULE);

    let err = spindle_image::push(&file, &image, None)
        .await
        .expect_err("anonymous push");
    eprintln!("{err}");
    assert!(matches!(err, ImageError::Unauthorized(_)), "{err}");
    spindle_image::push(&file, &image, Some(("tester".into(), "s3cret".into())))
        .await
        .expect("push with credentials");

    let err = store
        .ensure(&image, PullPolicy::IfNotPresent, &PullSecrets::new())
        .await
        .expect_err("anonymous pull");
    eprintln!("{err}");
    assert!(matches!(err, ImageError::Unauthorized(_)), "{err}");
    assert!(err.to_string().contains(&reg.addr), "{err}");
    assert!(err.to_string().contains("imagePullSecrets"), "{err}");

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut secrets = PullSecrets::new();
    // A wrong secret first: the right one is still tried.
    secrets
        .add_dockerconfigjson(
            format!(
                r#"{{"auths": {{"http://{}": {{"auth": "{}"}}}}}}"#,
                reg.addr,
                b64("tester:wrong")
            )
            .as_bytes(),
        )
        .expect("secret");
    let err = store
        .ensure(&image, PullPolicy::IfNotPresent, &secrets)
        .await
        .expect_err("wrong password");
    assert!(matches!(err, ImageError::Unauthorized(_)), "{err}");
    secrets
        .add_dockercfg(
            format!(
                r#"{{"{}": {{"username": "tester", "password": "s3cret"}}}}"#,
                reg.addr
            )
            .as_bytes(),
        )
        .expect("secret");
    let pulled = store
        .ensure(&image, PullPolicy::Always, &secrets)
        .await
        .expect("pull with secret");
    assert!(pulled.pulled);
    assert_eq!(
        std::fs::read(&pulled.wasm().expect("wasm").path).expect("read"),
        MODULE
    );
}

#[test]
fn ensure_future_is_send() {
    fn check<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(dir.path()).expect("open");
    let secrets = PullSecrets::new();
    let fut = store.ensure("x", PullPolicy::IfNotPresent, &secrets);
    check(&fut);
}

/// A hostile registry on 127.0.0.1:0 speaking just enough HTTP/1.1. Under
/// `demo/app`: `:endless` streams a manifest as fast as it can (up to
/// [`FLOOD_BYTES`]), `:declared` announces a 1 TiB `Content-Length` and then
/// sends nothing, `:trickle` sends a byte every 50 ms forever, `:errorbody`
/// answers 404 with an endless body, `:big` is a 5 MiB manifest. `demo/locked`
/// wants a bearer token from `/token` and then serves `:huge`, a valid
/// manifest whose Wasm layer declares 1 TiB; `demo/greedy` names a token
/// realm that floods. `demo/metadata` names the cloud metadata endpoint as its
/// token realm, `demo/redirected` a realm that redirects there, `demo/denied` a
/// realm that refuses with a 64 KiB body. Counts blob requests.
struct HostileRegistry {
    addr: SocketAddr,
    blob_requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Where a hostile registry would like the node to send its credentials: plain HTTP to a
/// host that is not loopback (a cloud metadata endpoint in real life). 0.0.0.0 stands in
/// for it because, should the check ever fail, Linux connects it to this machine (port 9,
/// nothing listening) and no request leaves the host.
const METADATA: &str = "http://0.0.0.0:9/latest/meta-data/iam/security-credentials/";

/// What a flooding answer sends before it gives up: more than the test's
/// memory bound many times over, small enough not to take the machine down
/// when the bound does not hold.
const FLOOD_BYTES: usize = 1 << 30;

/// Sends a chunked body of spaces as fast as the peer reads, up to
/// [`FLOOD_BYTES`].
async fn flood(conn: &mut tokio::net::TcpStream, status: &str) {
    use tokio::io::AsyncWriteExt;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    if conn.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = format!("{:x}\r\n{}\r\n", 64 << 10, " ".repeat(64 << 10));
    for _ in 0..FLOOD_BYTES / (64 << 10) {
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn hostile_registry() -> HostileRegistry {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let blob_requests = std::sync::Arc::new(AtomicUsize::new(0));
    let blobs = blob_requests.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let blobs = blobs.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(b) = conn.read_u8().await else { return };
                    head.push(b);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let path = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let json = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
                let challenge = |realm: &str| {
                    format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}{realm}\",service=\"hostile\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                };
                if path.contains("/blobs/") {
                    blobs.fetch_add(1, Ordering::SeqCst);
                    let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                } else if path.starts_with("/v2/demo/metadata/") {
                    let _ = conn.write_all(format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{METADATA}\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await;
                } else if path.starts_with("/v2/demo/redirected/") {
                    let _ = conn
                        .write_all(challenge("/token-redirect").as_bytes())
                        .await;
                } else if path.starts_with("/token-redirect") {
                    let _ = conn.write_all(format!("HTTP/1.1 302 Found\r\nLocation: {METADATA}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await;
                } else if path.starts_with("/v2/demo/denied/") {
                    let _ = conn.write_all(challenge("/token-denied").as_bytes()).await;
                } else if path.starts_with("/token-denied") {
                    let body = format!("denied{}", "x".repeat(64 << 10));
                    let resp = format!("HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = conn.write_all(resp.as_bytes()).await;
                } else if path.starts_with("/token-flood") {
                    flood(&mut conn, "200 OK").await;
                } else if path.starts_with("/token") {
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"token\":\"good\"}\n").await;
                } else if path.starts_with("/v2/demo/greedy/") {
                    let _ = conn.write_all(challenge("/token-flood").as_bytes()).await;
                } else if path.starts_with("/v2/demo/locked/")
                    && !head.contains("authorization: bearer good\r\n")
                {
                    let _ = conn.write_all(challenge("/token").as_bytes()).await;
                } else if path.ends_with("/manifests/endless") {
                    flood(&mut conn, "200 OK").await;
                } else if path.ends_with("/manifests/errorbody") {
                    flood(&mut conn, "404 Not Found").await;
                } else if path.ends_with("/manifests/declared") {
                    let start = format!(
                        "HTTP/1.1 200 OK\r\n{json}Content-Length: {}\r\n\r\n",
                        1u64 << 40
                    );
                    if conn.write_all(start.as_bytes()).await.is_ok() {
                        // Hold the connection open without sending: only a
                        // client that reads waits here.
                        let _ = conn.read_u8().await;
                    }
                } else if path.ends_with("/manifests/trickle") {
                    let start =
                        format!("HTTP/1.1 200 OK\r\n{json}Transfer-Encoding: chunked\r\n\r\n");
                    if conn.write_all(start.as_bytes()).await.is_err() {
                        return;
                    }
                    while conn.write_all(b"1\r\n \r\n").await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                } else if path.ends_with("/manifests/big") {
                    let body = format!(
                        "{{\"schemaVersion\":2,\"pad\":\"{}\"}}",
                        "x".repeat(5 << 20)
                    );
                    let resp = format!("HTTP/1.1 200 OK\r\n{json}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = conn.write_all(resp.as_bytes()).await;
                } else if path.ends_with("/manifests/huge") {
                    let body = serde_json::json!({
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {
                            "mediaType": "application/vnd.wasm.config.v0+json",
                            "digest": format!("sha256:{}", hex::encode(Sha256::digest(b"{}"))),
                            "size": 2
                        },
                        "layers": [{
                            "mediaType": "application/wasm",
                            "digest": format!("sha256:{}", "ab".repeat(32)),
                            "size": 1u64 << 40
                        }]
                    })
                    .to_string();
                    let resp = format!("HTTP/1.1 200 OK\r\n{json}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = conn.write_all(resp.as_bytes()).await;
                } else {
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").await;
                }
            });
        }
    });
    HostileRegistry {
        addr,
        blob_requests,
    }
}

/// Peak resident memory of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM");
    kib << 10
}

/// SPN-20: a registry named by a pod must not hang a pull or make the node
/// read or download without bound. Manifests, token answers and error bodies
/// are read at most to their limit whatever the registry sends: a flood of
/// 1 GiB fails the pull within a second or two and leaves the process's peak
/// memory within 64 MiB of where it was; a declared 1 TiB manifest is refused
/// from its `Content-Length` without reading; a trickle ends at the request
/// deadline; a layer declaring 1 TiB is refused before any blob is requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_registry_is_bounded() {
    let registry = hostile_registry().await;
    let cache = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(20);
    let limits = spindle_image::PullLimits {
        request_deadline: deadline,
        ..Default::default()
    };
    let store = ImageStore::open_with_limits(cache.path(), false, limits.clone()).unwrap();
    let image = |repo: &str, tag: &str| format!("{}/demo/{repo}:{tag}", registry.addr);
    let none = PullSecrets::default();
    let pull = |image: String, policy| {
        let store = store.clone();
        let none = none.clone();
        async move {
            let start = Instant::now();
            let err = store
                .ensure(&image, policy, &none)
                .await
                .expect_err("a hostile registry's image cannot be pulled");
            let took = start.elapsed();
            eprintln!("{image} ({policy}): {took:?}: {err}");
            assert_eq!(err.reason(), "ErrImagePull", "{err}");
            // Far below the deadline: the limits end these, not the clock.
            assert!(took < Duration::from_secs(5), "{image} took {took:?}");
            err.to_string()
        }
    };

    let before = peak_rss();
    for policy in [PullPolicy::IfNotPresent, PullPolicy::Always] {
        let err = pull(image("app", "endless"), policy).await;
        assert!(err.contains("manifest larger than 4 MiB"), "{err}");
    }
    let err = pull(image("greedy", "v1"), PullPolicy::IfNotPresent).await;
    assert!(err.contains("token answer larger than 1 MiB"), "{err}");
    let err = pull(image("app", "errorbody"), PullPolicy::IfNotPresent).await;
    assert!(err.contains("not found"), "{err}");
    let grown = peak_rss().saturating_sub(before);
    eprintln!("peak memory grew by {} KiB", grown >> 10);
    assert!(
        grown < 64 << 20,
        "floods of {FLOOD_BYTES} bytes grew peak memory by {grown} bytes"
    );

    let err = pull(image("app", "declared"), PullPolicy::IfNotPresent).await;
    assert!(
        err.contains("manifest larger than 4 MiB (Content-Length 1099511627776)"),
        "{err}"
    );
    let err = pull(image("app", "big"), PullPolicy::IfNotPresent).await;
    assert!(err.contains("manifest larger than 4 MiB"), "{err}");

    // Authorized with the token the challenge pointed at, then refused on
    // the declared size.
    let err = pull(image("locked", "huge"), PullPolicy::IfNotPresent).await;
    assert!(err.contains("1099511627776 bytes, more than"), "{err}");
    assert_eq!(
        registry
            .blob_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no blob was requested"
    );

    // A token realm elsewhere than HTTPS or this machine is never asked, nor is
    // one a redirect points at; credentials stay home.
    let mut secrets = PullSecrets::new();
    let auths = serde_json::json!({
        "auths": { registry.addr.to_string(): { "username": "user", "password": "secret" } }
    });
    secrets
        .add_dockerconfigjson(auths.to_string().as_bytes())
        .unwrap();
    let err = store
        .ensure(&image("metadata", "v1"), PullPolicy::IfNotPresent, &secrets)
        .await
        .expect_err("a metadata realm is refused");
    assert_eq!(err.reason(), "ErrImagePull", "{err}");
    assert!(
        err.to_string().contains(&format!(
            "names the token realm {METADATA:?}, which is not HTTPS (plain HTTP is used only to this machine)"
        )),
        "{err}"
    );
    let err = pull(image("redirected", "v1"), PullPolicy::IfNotPresent).await;
    assert!(
        err.contains(&format!(
            "redirect to {METADATA} refused: only HTTPS, or plain HTTP to this machine"
        )),
        "{err}"
    );
    // A refusal's body reaches the pod's message clipped.
    let err = pull(image("denied", "v1"), PullPolicy::IfNotPresent).await;
    assert!(err.contains("HTTP 403 Forbidden: deniedxxx"), "{err}");
    // Only 256 bytes of it are read: "denied" and 250 x.
    let reflected = format!("denied{}", "x".repeat(250));
    assert!(err.contains(&format!("{reflected})")), "{err}");
    assert!(err.len() < 1024, "{} bytes: {err}", err.len());

    // Slow bytes under the size limit: the request deadline ends the pull.
    let short = spindle_image::PullLimits {
        request_deadline: Duration::from_secs(2),
        ..limits
    };
    let store = ImageStore::open_with_limits(cache.path(), false, short).unwrap();
    let start = Instant::now();
    let err = store
        .ensure(&image("app", "trickle"), PullPolicy::IfNotPresent, &none)
        .await
        .expect_err("a trickled manifest cannot be pulled");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "the pull took {took:?}");
    assert_eq!(err.reason(), "ErrImagePull");
    assert!(
        err.to_string().contains("did not answer within 2s"),
        "{err}"
    );
}
