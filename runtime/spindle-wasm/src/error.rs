use std::path::PathBuf;

/// Everything that can go wrong before a guest runs. Once an [`Instance`](crate::Instance)
/// exists, failures are reported through its [`ExitStatus`](crate::ExitStatus) instead.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("invalid wasm runtime configuration: {0}")]
    Config(String),

    /// wasmtime refused the engine configuration, typically because the pooling
    /// allocator could not reserve its address space.
    #[error("creating the wasm engine failed: {0}")]
    Engine(String),

    #[error("invalid digest {0:?}: expected \"sha256:\" followed by 64 lowercase hex digits")]
    InvalidDigest(String),

    #[error("{path}: content digest is {actual}, expected {expected}")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are Wasm but could not be compiled (failed validation, unsupported
    /// proposal, ...).
    #[error("compiling {digest} failed: {message}")]
    Compile { digest: String, message: String },

    /// The program is not something this runtime can run as a container: not Wasm at
    /// all, a reactor, a component with neither `wasi:cli/run` nor
    /// `wasi:http/incoming-handler` (or started/served the wrong way), or it needs imports
    /// the runtime does not provide. The message says which.
    #[error("{0}")]
    NotRunnable(String),

    #[error("preopen {host} as {guest}: {message}")]
    Preopen {
        host: PathBuf,
        guest: String,
        message: String,
    },

    #[error(
        "instance pool exhausted: all {0} instance slots are in use (RuntimeConfig::max_instances)"
    )]
    PoolExhausted(u32),

    #[error("the program was loaded by a different WasmRuntime")]
    ForeignProgram,

    #[error("wasm runtime task failed: {0}")]
    Task(String),
}

impl WasmError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        WasmError::Io {
            context: context.into(),
            source,
        }
    }
}
