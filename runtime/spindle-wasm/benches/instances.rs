//! Start latency and density of WASI p1 instances.
//!
//! `cargo bench -p spindle-wasm --bench instances`
//!
//! - latency: start → exit of a cached module through `WasmRuntime` (p50/p99), beside a
//!   baseline of the bare wasmtime work for the same module on the same engine
//!   (synchronous instantiate + `_start` on the calling thread), and their ratio, plus
//!   the bare asynchronous variant (fiber, no thread hand-off) to show where time goes;
//! - density: `SPINDLE_BENCH_INSTANCES` (default 10,000) instances that sleep in
//!   `poll_oneoff`, started at once: time until all are instantiated, RSS and memory
//!   mappings per instance, then the time to kill them all.
//!
//! `SPINDLE_BENCH_RUNS` sets the number of latency runs (default 1,000);
//! `SPINDLE_BENCH_MAX_INSTANCES` overrides the pool size (default: `RuntimeConfig::default()`).
//! Under `cargo test` (no `--bench`) the sizes are small (`benches/common/size.rs`).

#[path = "../../../benches/common/size.rs"]
mod size;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spindle_wasm::{ExitReason, InstanceSpec, OutputSink, RuntimeConfig, WasmRuntime};
use wasmtime::{Linker, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::WasiCtxBuilder;

const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// Sleeps for an hour in poll_oneoff (relative monotonic clock subscription).
const SLEEPER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "some data so the module has a memory image")
  (func (export "_start")
    (i64.store (i32.const 0) (i64.const 0))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
"#;

struct Discard;

impl OutputSink for Discard {
    fn write(&self, _data: &[u8]) {}
}

fn spec() -> InstanceSpec {
    InstanceSpec {
        argv: vec!["bench".into()],
        env: vec![("A".into(), "1".into())],
        working_dir: None,
        preopens: vec![],
        stdout: Arc::new(Discard),
        stderr: Arc::new(Discard),
        memory_limit: Some(64 << 20),
        cpu_millis: None,
        network: false,
        pod_network: None,
        stdin: None,
    }
}

fn write_wasm(dir: &std::path::Path, wat: &str) -> (String, std::path::PathBuf, Vec<u8>) {
    let bytes = wat::parse_str(wat).expect("wat");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let path = dir.join(format!("{}.wasm", &digest[7..19]));
    std::fs::write(&path, &bytes).expect("write wasm");
    (digest, path, bytes)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

async fn latency_ours(
    rt: &WasmRuntime,
    dir: &std::path::Path,
    runs: usize,
) -> (Vec<Duration>, Vec<u8>) {
    let (digest, path, bytes) = write_wasm(dir, HELLO);
    let program = rt.load(&digest, &path).await.expect("load");
    // Warm up (pool slots, page cache, code).
    for _ in 0..20 {
        rt.start(&program, spec()).expect("start").wait().await;
    }
    let mut ours = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let st = rt.start(&program, spec()).expect("start").wait().await;
        ours.push(t.elapsed());
        assert_eq!(st.reason, ExitReason::Completed);
    }
    (ours, bytes)
}

/// The same module on the same engine without the runtime around it: synchronous
/// instantiate + `_start` on the calling thread. Must run outside any tokio runtime,
/// because wasmtime-wasi's synchronous bindings block on their own.
fn latency_bare(rt: &WasmRuntime, bytes: &[u8], runs: usize) -> Vec<Duration> {
    let module = Module::new(rt.engine(), bytes).expect("compile");
    let mut linker: Linker<WasiP1Ctx> = Linker::new(rt.engine());
    p1::add_to_linker_sync(&mut linker, |s| s).expect("link");
    let pre = linker.instantiate_pre(&module).expect("pre");
    let bare = || {
        let t = Instant::now();
        let wasi = WasiCtxBuilder::new()
            .args(&["bench"])
            .env("A", "1")
            .build_p1();
        let mut store = Store::new(rt.engine(), wasi);
        // The engine has epoch interruption on; give the bare run a far deadline.
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = pre.instantiate(&mut store).expect("instantiate");
        instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .expect("_start")
            .call(&mut store, ())
            .expect("run");
        t.elapsed()
    };
    for _ in 0..20 {
        bare();
    }
    (0..runs).map(|_| bare()).collect()
}

/// The same again, asynchronously (fiber, async WASI) on a current-thread runtime: the
/// wasmtime part of our path without the hand-off to the runtime's threads and back.
fn latency_bare_async(rt: &WasmRuntime, bytes: &[u8], runs: usize) -> Vec<Duration> {
    let module = Module::new(rt.engine(), bytes).expect("compile");
    let mut linker: Linker<WasiP1Ctx> = Linker::new(rt.engine());
    p1::add_to_linker_async(&mut linker, |s| s).expect("link");
    let pre = linker.instantiate_pre(&module).expect("pre");
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bare = || async {
        let t = Instant::now();
        let wasi = WasiCtxBuilder::new()
            .args(&["bench"])
            .env("A", "1")
            .build_p1();
        let mut store = Store::new(rt.engine(), wasi);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .expect("_start")
            .call_async(&mut store, ())
            .await
            .expect("run");
        t.elapsed()
    };
    local.block_on(async {
        for _ in 0..20 {
            bare().await;
        }
        let mut out = Vec::with_capacity(runs);
        for _ in 0..runs {
            out.push(bare().await);
        }
        out
    })
}

fn report_latency(mut ours: Vec<Duration>, mut base: Vec<Duration>, mut base_async: Vec<Duration>) {
    ours.sort();
    base.sort();
    base_async.sort();
    let (o50, o99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
    let (b50, b99) = (percentile(&base, 0.5), percentile(&base, 0.99));
    let (a50, a99) = (percentile(&base_async, 0.5), percentile(&base_async, 0.99));
    println!(
        "start latency, cached p1 module, {} runs (start → exit):",
        ours.len()
    );
    println!("  WasmRuntime::start+wait   p50 {o50:>10.1?}  p99 {o99:>10.1?}");
    println!("  bare wasmtime (sync)      p50 {b50:>10.1?}  p99 {b99:>10.1?}");
    println!("  bare wasmtime (async)     p50 {a50:>10.1?}  p99 {a99:>10.1?}");
    println!(
        "  ratio to sync baseline    p50 {:>9.2}×  p99 {:>9.2}×",
        o50.as_secs_f64() / b50.as_secs_f64(),
        o99.as_secs_f64() / b99.as_secs_f64()
    );
}

async fn density(rt: &WasmRuntime, dir: &std::path::Path, n: usize, max_instances: u32) {
    let (digest, path, _) = write_wasm(dir, SLEEPER);
    let program = rt.load(&digest, &path).await.expect("load");
    let metrics = rt.engine().pooling_allocator_metrics().expect("pooling");

    let rss0 = status_kib("VmRSS:");
    let maps0 = mappings();
    let t = Instant::now();
    let mut instances = Vec::with_capacity(n);
    for i in 0..n {
        match rt.start(&program, spec()) {
            Ok(inst) => instances.push(inst),
            Err(e) => {
                println!("  start #{i} failed: {e}");
                break;
            }
        }
    }
    let started = t.elapsed();
    // Instantiation happens on the runtime's threads; failed ones give their slot back,
    // so the two counts meet either way.
    let deadline = Instant::now() + Duration::from_secs(300);
    while metrics.core_instances() < u64::from(rt.live_instances()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = t.elapsed();
    let live = metrics.core_instances();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = status_kib("VmRSS:");
    let maps1 = mappings();
    let failed = instances.len() - live as usize;

    println!("density: {n} sleeping p1 instances, pool of {max_instances} slots × 4 GiB");
    println!(
        "  start() calls            {started:>10.1?}  ({:.1?} each)",
        started / n.max(1) as u32
    );
    println!("  all instantiated after   {ready:>10.1?}  ({live} live, {failed} failed)");
    println!(
        "  RSS                      {:>7} MiB → {} MiB, {:.1} KiB per live instance",
        rss0 / 1024,
        rss1 / 1024,
        (rss1.saturating_sub(rss0)) as f64 / live.max(1) as f64
    );
    println!(
        "  memory mappings          {maps0} → {maps1}, {:.2} per live instance (vm.max_map_count {})",
        (maps1.saturating_sub(maps0)) as f64 / live.max(1) as f64,
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap_or_default()
            .trim()
    );

    let t = Instant::now();
    for inst in &instances {
        inst.kill();
    }
    let mut killed = 0;
    let mut first_failure = None;
    for inst in &mut instances {
        let st = inst.wait().await;
        if st.reason == ExitReason::Killed {
            killed += 1;
        } else if first_failure.is_none() {
            first_failure = Some(st);
        }
    }
    println!(
        "  kill all                 {:>10.1?}  ({killed} killed)",
        t.elapsed()
    );
    if let Some(st) = &first_failure {
        println!("  first failure: {st:?}");
    }
    // In quick mode an instance that did not run until killed is a broken benchmark.
    assert!(
        !size::quick() || (killed == n && first_failure.is_none()),
        "{killed}/{n} instances ran until killed; first other end: {first_failure:?}"
    );
}

fn main() {
    size::announce("instances");
    let runs = size::size("SPINDLE_BENCH_RUNS", 1000, 20);
    let n = size::size("SPINDLE_BENCH_INSTANCES", 10_000, 50);
    let dir = tempfile::tempdir().expect("tempdir");
    // The agent's side: a small runtime of its own, as in the node agent.
    let agent = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("agent runtime");
    let defaults = RuntimeConfig::default();
    let max_instances = std::env::var("SPINDLE_BENCH_MAX_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(defaults.max_instances);
    let cfg = RuntimeConfig {
        cache_dir: dir.path().join("cache"),
        max_instances,
        ..defaults
    };
    let t = Instant::now();
    let rt = WasmRuntime::new(cfg).expect("runtime");
    println!("WasmRuntime::new            {:>10.1?}", t.elapsed());
    let (ours, bytes) = agent.block_on(latency_ours(&rt, dir.path(), runs));
    let base = latency_bare(&rt, &bytes, runs);
    let base_async = latency_bare_async(&rt, &bytes, runs);
    report_latency(ours, base, base_async);
    agent.block_on(density(&rt, dir.path(), n, max_instances));
}
