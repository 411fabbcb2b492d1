//! Turning a `.wasm` file into something [`WasmRuntime::start`](crate::WasmRuntime::start)
//! can instantiate: kind detection, the on-disk cache of precompiled code, and the checks
//! that the program is a WASI command this runtime can satisfy.

use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{Engine, ExternType, InstancePre, Linker, Module, Precompiled};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::instance::{GuestState, P2Ctx};
use crate::WasmError;

/// What sort of WASI program a [`Program`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgramKind {
    /// A WASI preview 1 command: a core module exporting `_start`.
    Module,
    /// A WASI preview 2 command: a component exporting `wasi:cli/run`.
    Component,
    /// A component exporting `wasi:http/incoming-handler`, for
    /// [`WasmRuntime::serve_http`](crate::WasmRuntime::serve_http). If it exports
    /// `wasi:cli/run` as well it can also be [started](crate::WasmRuntime::start) as a
    /// command (see [`Program::exports_run`]).
    HttpComponent,
}

/// Where the code of a [`Program`] came from when it was first loaded in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadOrigin {
    /// Compiled from the `.wasm` bytes (and written to the cache directory).
    Compiled,
    /// Deserialized from the cache directory without compiling.
    DiskCache,
}

/// Counters of [`WasmRuntime::load`](crate::WasmRuntime::load) outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads that had to run the compiler.
    pub compiled: u64,
    /// Loads served by deserializing a precompiled artifact from the cache directory.
    pub disk_hits: u64,
    /// Loads served from the in-memory cache.
    pub memory_hits: u64,
}

#[derive(Default)]
pub(crate) struct StatCounters {
    pub(crate) compiled: AtomicU64,
    pub(crate) disk_hits: AtomicU64,
    pub(crate) memory_hits: AtomicU64,
}

impl StatCounters {
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
        }
    }
}

/// A loaded, ready-to-instantiate program. Cheap to clone; all clones share the code.
#[derive(Clone)]
pub struct Program {
    pub(crate) inner: Arc<ProgramInner>,
}

pub(crate) struct ProgramInner {
    digest: String,
    kind: ProgramKind,
    origin: LoadOrigin,
    pub(crate) runtime_id: u64,
    pub(crate) entry: Entry,
}

pub(crate) enum Entry {
    Module(InstancePre<GuestState<WasiP1Ctx>>),
    /// At least one of the two is there.
    Component {
        command: Option<CommandPre<GuestState<P2Ctx>>>,
        proxy: Option<ProxyPre<GuestState<P2Ctx>>>,
    },
}

impl Program {
    pub fn kind(&self) -> ProgramKind {
        self.inner.kind
    }

    /// The content digest it was loaded under (`sha256:<hex>`).
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// True for a component exporting `wasi:http/incoming-handler`: it can be served
    /// with [`WasmRuntime::serve_http`](crate::WasmRuntime::serve_http).
    pub fn exports_http(&self) -> bool {
        matches!(&self.inner.entry, Entry::Component { proxy: Some(_), .. })
    }

    /// True for a command (a p1 module with `_start` or a component exporting
    /// `wasi:cli/run`): it can be run with [`WasmRuntime::start`](crate::WasmRuntime::start).
    pub fn exports_run(&self) -> bool {
        match &self.inner.entry {
            Entry::Module(_) => true,
            Entry::Component { command, .. } => command.is_some(),
        }
    }

    pub fn origin(&self) -> LoadOrigin {
        self.inner.origin
    }

    /// True if loading this program ran the compiler, false if the code came from the
    /// cache directory.
    pub fn compiled(&self) -> bool {
        self.inner.origin == LoadOrigin::Compiled
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("digest", &self.inner.digest)
            .field("kind", &self.inner.kind)
            .field("origin", &self.inner.origin)
            .finish()
    }
}

/// Returns the hex part of a `sha256:<hex>` digest. The hex becomes a file name in the
/// cache directory, so anything but exactly 64 lowercase hex digits is refused.
pub(crate) fn digest_hex(digest: &str) -> Result<&str, WasmError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or_else(|| WasmError::InvalidDigest(digest.to_owned()))?;
    Ok(hex)
}

/// Tells a core module from a component by the preamble, without parsing further.
pub(crate) fn detect_kind(bytes: &[u8]) -> Result<ProgramKind, String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly binary (missing the \\0asm header)".to_owned());
    }
    match [bytes[4], bytes[5], bytes[6], bytes[7]] {
        [1, 0, 0, 0] => Ok(ProgramKind::Module),
        // Components share the magic; bytes 6..8 are the layer, 1 for components.
        [_, _, 1, 0] => Ok(ProgramKind::Component),
        v => Err(format!(
            "unsupported WebAssembly binary version/layer {:02x}{:02x} {:02x}{:02x}",
            v[0], v[1], v[2], v[3]
        )),
    }
}

/// Feeds `Hash` output into SHA-256, so the engine compatibility key is stable across
/// builds of this crate (std's `DefaultHasher` makes no such promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let out = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Everything needed to load a program, shared with the blocking threads that compile.
pub(crate) struct Loader {
    pub(crate) engine: Engine,
    pub(crate) p1_linker: Linker<GuestState<WasiP1Ctx>>,
    pub(crate) p2_linker: ComponentLinker<GuestState<P2Ctx>>,
    pub(crate) cache_dir: PathBuf,
    /// Part of every artifact's file name: artifacts of an engine with another
    /// configuration or wasmtime version are never even opened.
    pub(crate) compat: String,
    pub(crate) runtime_id: u64,
    pub(crate) stats: Arc<StatCounters>,
}

pub(crate) fn compat_key(engine: &Engine) -> String {
    let mut h = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..8])
}

enum Code {
    Module(Module),
    Component(Component),
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Loader {
    fn artifact_path(&self, hex: &str) -> PathBuf {
        self.cache_dir.join(format!("{hex}-{}.cwasm", self.compat))
    }

    /// Runs on a blocking thread: may compile for seconds.
    pub(crate) fn load(&self, digest: &str, wasm_path: &Path) -> Result<Program, WasmError> {
        let hex = digest_hex(digest)?;
        let artifact = self.artifact_path(hex);
        let (code, origin) = match self.load_artifact(&artifact) {
            Some(code) => {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                (code, LoadOrigin::DiskCache)
            }
            None => {
                let code = self.compile(digest, hex, wasm_path, &artifact)?;
                self.stats.compiled.fetch_add(1, Ordering::Relaxed);
                (code, LoadOrigin::Compiled)
            }
        };
        let (kind, entry) = match code {
            Code::Module(m) => (ProgramKind::Module, Entry::Module(self.command_module(&m)?)),
            Code::Component(c) => {
                let (command, proxy) = self.component_entry(&c)?;
                let kind = if proxy.is_some() {
                    ProgramKind::HttpComponent
                } else {
                    ProgramKind::Component
                };
                (kind, Entry::Component { command, proxy })
            }
        };
        Ok(Program {
            inner: Arc::new(ProgramInner {
                digest: digest.to_owned(),
                kind,
                origin,
                runtime_id: self.runtime_id,
                entry,
            }),
        })
    }

    /// A missing or unusable artifact is not an error: the caller compiles instead.
    fn load_artifact(&self, path: &Path) -> Option<Code> {
        let kind = match Engine::detect_precompiled_file(path) {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                tracing::warn!(path = %path.display(), "cache artifact is not precompiled wasm; recompiling");
                return None;
            }
            Err(_) => return None,
        };
        // SAFETY: artifacts in the cache directory are only ever written by `compile`
        // below (whole file, then renamed into place) from wasmtime's own output, and the
        // file name pins the engine configuration. The cache directory must be writable
        // by the node agent only; that is the trust boundary this relies on.
        let loaded = unsafe {
            match kind {
                Precompiled::Module => {
                    Module::deserialize_file(&self.engine, path).map(Code::Module)
                }
                Precompiled::Component => {
                    Component::deserialize_file(&self.engine, path).map(Code::Component)
                }
            }
        };
        match loaded {
            Ok(code) => Some(code),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot use cached artifact; recompiling");
                None
            }
        }
    }

    fn compile(
        &self,
        digest: &str,
        hex: &str,
        wasm_path: &Path,
        artifact: &Path,
    ) -> Result<Code, WasmError> {
        let bytes = fs::read(wasm_path)
            .map_err(|e| WasmError::io(format!("reading {}", wasm_path.display()), e))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != hex {
            return Err(WasmError::DigestMismatch {
                path: wasm_path.to_owned(),
                expected: digest.to_owned(),
                actual: format!("sha256:{actual}"),
            });
        }
        let kind = detect_kind(&bytes).map_err(WasmError::NotRunnable)?;
        let started = std::time::Instant::now();
        let compiled = match kind {
            ProgramKind::Module => self.engine.precompile_module(&bytes),
            ProgramKind::Component | ProgramKind::HttpComponent => {
                self.engine.precompile_component(&bytes)
            }
        }
        .map_err(|e| WasmError::Compile {
            digest: digest.to_owned(),
            message: format!("{e:#}"),
        })?;
        tracing::info!(digest, ?kind, elapsed = ?started.elapsed(), "compiled wasm program");
        self.write_artifact(artifact, &compiled)?;
        // SAFETY: `compiled` is wasmtime's output for this very engine.
        let code = unsafe {
            match kind {
                ProgramKind::Module => {
                    Module::deserialize_file(&self.engine, artifact).map(Code::Module)
                }
                ProgramKind::Component | ProgramKind::HttpComponent => {
                    Component::deserialize_file(&self.engine, artifact).map(Code::Component)
                }
            }
        };
        code.map_err(|e| WasmError::Compile {
            digest: digest.to_owned(),
            message: format!("loading the freshly compiled artifact: {e:#}"),
        })
    }

    /// Whole file under a temporary name, then rename: a crash or a concurrent loader in
    /// another process never leaves a truncated artifact under the final name, and a file
    /// that is already mapped by someone is never modified in place.
    fn write_artifact(&self, path: &Path, bytes: &[u8]) -> Result<(), WasmError> {
        let tmp = path.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let ctx = || format!("writing {}", tmp.display());
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(WasmError::io(ctx(), e));
        }
        Ok(())
    }

    fn command_module(
        &self,
        module: &Module,
    ) -> Result<InstancePre<GuestState<WasiP1Ctx>>, WasmError> {
        for import in module.imports() {
            if import.module() != "wasi_snapshot_preview1" {
                return Err(WasmError::NotRunnable(format!(
                    "module imports `{}::{}`, which this runtime does not provide \
                     (a WASI p1 command may only import wasi_snapshot_preview1)",
                    import.module(),
                    import.name()
                )));
            }
        }
        match module.get_export("_start") {
            Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
            Some(_) => {
                return Err(WasmError::NotRunnable(
                    "module export _start is not a function of type () -> (): not a WASI command"
                        .to_owned(),
                ))
            }
            None if module.get_export("_initialize").is_some() => {
                return Err(WasmError::NotRunnable(
                    "module exports no _start function: not a WASI command \
                     (it exports _initialize, so it is a reactor)"
                        .to_owned(),
                ))
            }
            None => {
                return Err(WasmError::NotRunnable(
                    "module exports no _start function: not a WASI command".to_owned(),
                ))
            }
        }
        self.p1_linker
            .instantiate_pre(module)
            .map_err(|e| WasmError::NotRunnable(format!("module cannot be linked: {e:#}")))
    }

    /// A component is runnable if it exports `wasi:cli/run` (a command) or
    /// `wasi:http/incoming-handler` (an HTTP handler), or both.
    #[allow(clippy::type_complexity)]
    fn component_entry(
        &self,
        component: &Component,
    ) -> Result<
        (
            Option<CommandPre<GuestState<P2Ctx>>>,
            Option<ProxyPre<GuestState<P2Ctx>>>,
        ),
        WasmError,
    > {
        let pre = self
            .p2_linker
            .instantiate_pre(component)
            .map_err(|e| WasmError::NotRunnable(format!("component cannot be linked: {e:#}")))?;
        let proxy = ProxyPre::new(pre.clone());
        let command = CommandPre::new(pre);
        match (command, proxy) {
            (Err(run), Err(http)) => Err(WasmError::NotRunnable(format!(
                "component exports neither wasi:cli/run (not a WASI command: {run:#}) nor \
                 wasi:http/incoming-handler (not an HTTP handler: {http:#})"
            ))),
            (command, proxy) => Ok((command.ok(), proxy.ok())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_must_be_sha256_hex() {
        let ok = format!("sha256:{}", "ab".repeat(32));
        assert!(digest_hex(&ok).is_ok());
        for bad in [
            "sha256:abc".to_owned(),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:../{}", "a".repeat(61)),
        ] {
            assert!(
                matches!(digest_hex(&bad), Err(WasmError::InvalidDigest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn kind_from_preamble() {
        assert_eq!(detect_kind(b"\0asm\x01\0\0\0"), Ok(ProgramKind::Module));
        assert_eq!(
            detect_kind(b"\0asm\x0d\0\x01\0"),
            Ok(ProgramKind::Component)
        );
        assert!(detect_kind(b"#!/bin/sh\n").is_err());
        assert!(detect_kind(b"\0asm").is_err());
    }
}
