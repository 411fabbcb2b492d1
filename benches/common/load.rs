//! The HTTP load generator and `wasmtime serve` baseline shared by the HTTP benchmarks
//! (spindle-wasm's `http` and the project's `services`): keep-alive HTTP/1.1 client
//! connections sending GETs back to back, with latencies and error counts.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

#[path = "../../tests/common/listen.rs"]
mod listen;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Load {
    /// Sorted.
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i]
    }

    pub fn print(&self, name: &str) {
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

pub fn load(
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

pub fn measure(
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

pub fn find_wasmtime() -> Option<PathBuf> {
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

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_wasmtime(bin: &Path, wasm: &Path) -> Result<(KillOnDrop, SocketAddr), String> {
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    println!(
        "baseline: {} ({})",
        String::from_utf8_lossy(&version.stdout).trim(),
        bin.display()
    );
    // Port 0: wasmtime picks a free port itself, read back from its own socket below, so
    // no other process can take the port in between and what answers is this child.
    let child = Command::new(bin)
        .args(["serve", "-Scli", "--addr", "127.0.0.1:0"])
        .arg(wasm)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let mut child = KillOnDrop(child);
    let t = Instant::now();
    loop {
        if let Some(port) = listen::listening_port(child.0.id()) {
            return Ok((child, SocketAddr::from(([127, 0, 0, 1], port))));
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

pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".to_owned()
    }
}
