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

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use spindle_wasm::{InstanceSpec, OutputSink, RuntimeConfig, WasmRuntime};

struct Discard;

impl OutputSink for Discard {
    fn write(&self, _data: &[u8]) {}
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Load {
    /// Sorted.
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Load {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i]
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<28} {:>9.0} req/s   p50 {:>8.1} µs   p99 {:>8.1} µs   ({} requests, {} errors)",
            self.rate(),
            self.quantile(0.50).as_secs_f64() * 1e6,
            self.quantile(0.99).as_secs_f64() * 1e6,
            self.latencies.len(),
            self.errors
        );
    }
}

/// One keep-alive connection sending `GET path` back to back until `until`.
async fn connection(addr: SocketAddr, path: Arc<str>, until: Instant) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    'reconnect: while Instant::now() < until {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
        else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let req = Request::get(&*path)
                .header("host", "bench.local")
                .body(Empty::new())
                .unwrap();
            let t = Instant::now();
            // `ready` before every request on a reused connection.
            if sender.ready().await.is_err() {
                errors += 1;
                continue 'reconnect;
            }
            let ok = match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    resp.into_body().collect().await.is_ok() && status == StatusCode::OK
                }
                Err(_) => {
                    errors += 1;
                    continue 'reconnect;
                }
            };
            if ok {
                latencies.push(t.elapsed());
            } else {
                errors += 1;
            }
        }
    }
    (latencies, errors)
}

fn load(
    client: &tokio::runtime::Runtime,
    addr: SocketAddr,
    path: &str,
    conns: usize,
    secs: f64,
) -> Load {
    let path: Arc<str> = path.into();
    client.block_on(async {
        let start = Instant::now();
        let until = start + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(connection(addr, path.clone(), until)))
            .collect();
        let mut latencies = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.expect("client task");
            latencies.extend(l);
            errors += e;
        }
        let elapsed = start.elapsed();
        latencies.sort_unstable();
        Load {
            latencies,
            errors,
            elapsed,
        }
    })
}

fn measure(
    client: &tokio::runtime::Runtime,
    name: &str,
    addr: SocketAddr,
    path: &str,
    conns: usize,
    secs: f64,
) -> Load {
    let _ = load(client, addr, path, conns, 1.0);
    let l = load(client, addr, path, conns, secs);
    l.print(name);
    l
}

fn find_wasmtime() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WASMTIME_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("wasmtime"))
        .find(|p| p.is_file())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_wasmtime(bin: &Path, wasm: &Path) -> Result<(KillOnDrop, SocketAddr), String> {
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    println!(
        "baseline: {} ({})",
        String::from_utf8_lossy(&version.stdout).trim(),
        bin.display()
    );
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .args(["serve", "-Scli", "--addr", &addr.to_string()])
        .arg(wasm)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let mut child = KillOnDrop(child);
    let t = Instant::now();
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok((child, addr));
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!("wasmtime serve exited with {status}"));
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err("wasmtime serve did not listen within 60 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".to_owned()
    }
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
