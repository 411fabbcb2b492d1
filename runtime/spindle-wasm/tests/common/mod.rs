#![allow(dead_code)]

pub mod guest;
pub mod http;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use spindle_wasm::{InstanceSpec, OutputSink, Program, RuntimeConfig, WasmRuntime};

#[derive(Default)]
pub struct Capture(Mutex<Vec<u8>>);

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl OutputSink for Capture {
    fn write(&self, data: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(data);
    }
}

/// Small pools: tests run in parallel in one process and each runtime reserves
/// `max_instances × max_memory_bytes` of address space.
pub fn runtime(cache: &Path) -> WasmRuntime {
    runtime_with(cache, 16)
}

pub fn runtime_with(cache: &Path, max_instances: u32) -> WasmRuntime {
    WasmRuntime::new(config(cache, max_instances)).expect("runtime")
}

/// The tests' runtime: the node's memory budget is not what most tests look at, and one
/// HTTP server may use the whole (small) pool unless a test says otherwise.
pub fn config(cache: &Path, max_instances: u32) -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: cache.to_owned(),
        max_instances,
        max_memory_bytes: 1 << 30,
        worker_threads: 2,
        default_memory_limit: 1 << 30,
        guest_memory_budget: 16 << 30,
        http_max_concurrency: max_instances,
        http_max_queue: 1024,
    }
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes `bytes` into `dir` and returns (digest, path).
pub fn write_wasm(dir: &Path, bytes: &[u8]) -> (String, std::path::PathBuf) {
    let digest = digest_of(bytes);
    let path = dir.join(format!("{}.wasm", &digest[7..19]));
    std::fs::write(&path, bytes).unwrap();
    (digest, path)
}

pub async fn load_wat(rt: &WasmRuntime, dir: &Path, wat: &str) -> Program {
    let bytes = wat::parse_str(wat).expect("valid wat");
    let (digest, path) = write_wasm(dir, &bytes);
    rt.load(&digest, &path).await.expect("load")
}

pub struct Outputs {
    pub stdout: Arc<Capture>,
    pub stderr: Arc<Capture>,
}

pub fn spec(argv: &[&str]) -> (InstanceSpec, Outputs) {
    let stdout = Arc::new(Capture::default());
    let stderr = Arc::new(Capture::default());
    (
        InstanceSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            working_dir: None,
            preopens: vec![],
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            memory_limit: None,
            cpu_millis: None,
            network: false,
            pod_network: None,
            stdin: None,
        },
        Outputs { stdout, stderr },
    )
}

pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("timed out")
}

pub const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// Sleeps for an hour via poll_oneoff with a relative monotonic clock subscription.
pub const SLEEPER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; subscription at 0: userdata 0, tag 0 (clock), clock id 1 (monotonic),
    ;; timeout 3600 s, precision 0, flags 0 (relative)
    (i64.store (i32.const 0) (i64.const 0))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
"#;

/// Spins for the number of iterations given as the module's constant.
pub fn spinner(iterations: u64) -> String {
    format!(
        r#"
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i64)
    (local.set $i (i64.const {iterations}))
    (loop $l
      (local.set $i (i64.sub (local.get $i) (i64.const 1)))
      (br_if $l (i64.ne (local.get $i) (i64.const 0))))))
"#
    )
}

pub const FOREVER: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))
"#;
