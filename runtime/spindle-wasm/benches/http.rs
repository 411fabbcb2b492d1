//! Throughput and latency of `WasmRuntime::serve_http`, beside `wasmtime serve` running
//! the same component on the same machine in the same run.
//!
//! `cargo bench -p spindle-wasm --bench http`
//!
//! The component is tests/guests/http-hello (built with cargo for wasm32-wasip2). Each
//! server gets `SPINDLE_BENCH_CONNECTIONS` (default 16) keep-alive HTTP/1.1 client
//! connections sending `GET SPINDLE_BENCH_PATH` (default `/`) back to back for
//! `SPINDLE_BENCH_SECS` (default 10) seconds after a 1 s warm-up; the client runs on
//! `SPINDLE_BENCH_CLIENT_THREADS` (default 1) threads of its own. Both servers run at once
//! and are measured `SPINDLE_BENCH_ROUNDS` (default 5) times in alternating order (A B,
//! B A, ...). Reported: medians over the rounds of requests/s and p50/p99 latency,
//! errors, and the ratios spindle / wasmtime (flagged when a side had errors). Under
//! `cargo test` (no `--bench`) the sizes are small (`benches/common/size.rs`).
//!
//! The baseline is the `wasmtime` CLI from `$WASMTIME_BIN` or `PATH`
//! (`cargo install wasmtime-cli --version <the workspace's wasmtime> --locked`), run as
//! `wasmtime serve -Scli --addr 127.0.0.1:<port> http_hello.wasm`; its version is
//! checked against Cargo.lock's and a difference reported. Without it the baseline is
//! reported missing. Both servers create one instance per request with the
//! pooling allocator and use every core; spindle-wasm additionally applies a 64 MiB
//! memory limiter and its 1 ms epoch ticker (wasmtime serve has no epoch interruption
//! unless `--wasm timeout` is given).

#[path = "../tests/common/guest.rs"]
mod guest;
#[path = "../../../benches/common/load.rs"]
mod load;
#[path = "../../../benches/common/size.rs"]
mod size;

use std::net::TcpListener;
use std::sync::Arc;

use load::{rounds, wasmtime_baseline};
use sha2::{Digest, Sha256};
use size::{announce, size};
use spindle_wasm::{InstanceSpec, OutputSink, RuntimeConfig, WasmRuntime};

struct Discard;

impl OutputSink for Discard {
    fn write(&self, _data: &[u8]) {}
}

fn main() {
    announce("http");
    let conns: usize = size("SPINDLE_BENCH_CONNECTIONS", 16, 4);
    let secs: f64 = size("SPINDLE_BENCH_SECS", 10.0, 0.5);
    let n_rounds: usize = size("SPINDLE_BENCH_ROUNDS", 5, 2);
    let path: String = size("SPINDLE_BENCH_PATH", "/".to_owned(), "/".to_owned());
    let client_threads: usize = size("SPINDLE_BENCH_CLIENT_THREADS", 1, 1);

    let wasm = guest::http_hello();
    let bytes = std::fs::read(&wasm).expect("guest wasm");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let cache = tempfile::tempdir().expect("cache dir");
    let cfg = RuntimeConfig {
        cache_dir: cache.path().to_owned(),
        ..RuntimeConfig::default()
    };
    println!(
        "http bench: GET {path}, {conns} keep-alive connections, {secs} s, client on {client_threads} thread(s), \
         {} server worker threads, {} cores",
        cfg.worker_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rt = WasmRuntime::new(cfg).expect("runtime");
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads.max(1))
        .enable_all()
        .build()
        .expect("client runtime");

    let program = client
        .block_on(rt.load(&digest, &wasm))
        .expect("load http-hello");
    let spec = InstanceSpec {
        argv: vec!["http-hello".into()],
        env: vec![("GREETING".into(), "hi".into())],
        working_dir: None,
        preopens: vec![],
        stdout: Arc::new(Discard),
        stderr: Arc::new(Discard),
        memory_limit: Some(64 << 20),
        cpu_millis: None,
        network: false,
        pod_network: None,
        stdin: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut server = rt.serve_http(&program, spec, listener).expect("serve_http");
    let (baseline, version_note) = wasmtime_baseline(&wasm);
    let mut sides = vec![("spindle-wasm serve_http", server.local_addr())];
    if let Some((_, addr)) = &baseline {
        sides.push(("wasmtime serve", *addr));
    }
    let measured = rounds(&client, &sides, &path, conns, secs, n_rounds);
    drop(baseline);
    let stats = server.stats();
    server.stop();
    client.block_on(server.wait());
    println!(
        "  server stats: {} connections, {} requests, {} failed, {} rejected",
        stats.connections, stats.requests, stats.failed, stats.rejected
    );
    if let [ours, theirs] = measured.as_slice() {
        println!(
            "ratio spindle/wasmtime: {}{version_note}",
            ours.ratios(theirs)
        );
    }
    // Failed requests on our side are a broken run in quick mode.
    assert!(
        !size::quick() || measured[0].errors() == 0,
        "{} requests to serve_http failed",
        measured[0].errors()
    );
}
