//! Throughput and latency of `WasmRuntime::serve_http`, beside `wasmtime serve` running
//! the same component on the same machine in the same run.
//!
//! `cargo bench -p spindle-wasm --bench http`
//!
//! The component is tests/guests/http-hello (built with cargo for wasm32-wasip2). Each
//! server gets `SPINDLE_BENCH_CONNECTIONS` (default 16) keep-alive HTTP/1.1 client
//! connections sending `GET SPINDLE_BENCH_PATH` (default `/`) back to back for
//! `SPINDLE_BENCH_SECS` (default 10) seconds after a 1 s warm-up; the client runs on
//! `SPINDLE_BENCH_CLIENT_THREADS` (default 1) threads of its own. Reported: requests/s,
//! p50/p99 latency, errors, and the ratios spindle / wasmtime.
//!
//! The baseline is the `wasmtime` CLI from `$WASMTIME_BIN` or `PATH`
//! (`cargo install wasmtime-cli --version 48.0.8 --locked`), run as
//! `wasmtime serve -Scli --addr 127.0.0.1:<port> http_hello.wasm`. Without it the
//! baseline is reported missing. Both servers create one instance per request with the
//! pooling allocator and use every core; spindle-wasm additionally applies a 64 MiB
//! memory limiter and its 1 ms epoch ticker (wasmtime serve has no epoch interruption
//! unless `--wasm timeout` is given).

#[path = "../tests/common/guest.rs"]
mod guest;
#[path = "../../../benches/common/load.rs"]
mod load;

use std::net::TcpListener;
use std::sync::Arc;

use load::{env_or, find_wasmtime, measure, ratio, start_wasmtime};
use sha2::{Digest, Sha256};
use spindle_wasm::{InstanceSpec, OutputSink, RuntimeConfig, WasmRuntime};

struct Discard;

impl OutputSink for Discard {
    fn write(&self, _data: &[u8]) {}
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let conns: usize = env_or("SPINDLE_BENCH_CONNECTIONS", 16);
    let secs: f64 = env_or("SPINDLE_BENCH_SECS", 10.0);
    let path: String = env_or("SPINDLE_BENCH_PATH", "/".to_owned());
    let client_threads: usize = env_or("SPINDLE_BENCH_CLIENT_THREADS", 1);

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
    let ours = measure(
        &client,
        "spindle-wasm serve_http",
        server.local_addr(),
        &path,
        conns,
        secs,
    );
    let stats = server.stats();
    server.stop();
    client.block_on(server.wait());
    println!(
        "  server stats: {} connections, {} requests, {} failed, {} rejected",
        stats.connections, stats.requests, stats.failed, stats.rejected
    );

    let Some(bin) = find_wasmtime() else {
        println!(
            "baseline missing: no wasmtime CLI on PATH or in $WASMTIME_BIN \
             (cargo install wasmtime-cli --version 48.0.8 --locked); no ratio"
        );
        return;
    };
    let (child, addr) = match start_wasmtime(&bin, &wasm) {
        Ok(x) => x,
        Err(e) => {
            println!("baseline missing: {e}; no ratio");
            return;
        }
    };
    let theirs = measure(&client, "wasmtime serve", addr, &path, conns, secs);
    drop(child);

    println!(
        "ratio spindle/wasmtime: throughput {}   p50 {}   p99 {}",
        ratio(ours.rate(), theirs.rate()),
        ratio(
            ours.quantile(0.5).as_secs_f64(),
            theirs.quantile(0.5).as_secs_f64()
        ),
        ratio(
            ours.quantile(0.99).as_secs_f64(),
            theirs.quantile(0.99).as_secs_f64()
        ),
    );
}
