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

/// Several rounds of `load` against each side, in an order that alternates (A B, B A, A B,
/// ...) so that no side always runs first or last (warm caches, CPU frequency, a
/// neighbour's burst); every side is warmed up for 1 s first. Each figure reported is the
/// median over the rounds.
pub fn rounds(
    client: &tokio::runtime::Runtime,
    sides: &[(&str, SocketAddr)],
    path: &str,
    conns: usize,
    secs: f64,
    rounds: usize,
) -> Vec<Rounds> {
    for (_, addr) in sides {
        let _ = load(client, *addr, path, conns, secs.min(1.0));
    }
    let mut out: Vec<Rounds> = sides
        .iter()
        .map(|(name, _)| Rounds {
            name: (*name).to_owned(),
            loads: Vec::new(),
        })
        .collect();
    for r in 0..rounds.max(1) {
        let mut order: Vec<usize> = (0..sides.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            out[i]
                .loads
                .push(load(client, sides[i].1, path, conns, secs));
        }
    }
    for r in &out {
        r.print();
    }
    out
}

/// One side's loads over the rounds of `rounds`.
pub struct Rounds {
    pub name: String,
    pub loads: Vec<Load>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Rounds {
    /// Median requests/s over the rounds.
    pub fn rate(&self) -> f64 {
        median(self.loads.iter().map(Load::rate).collect())
    }

    /// Median over the rounds of each round's `q` latency quantile, in seconds.
    pub fn quantile(&self, q: f64) -> f64 {
        median(
            self.loads
                .iter()
                .map(|l| l.quantile(q).as_secs_f64())
                .collect(),
        )
    }

    pub fn errors(&self) -> u64 {
        self.loads.iter().map(|l| l.errors).sum()
    }

    pub fn print(&self) {
        let rates: Vec<f64> = self.loads.iter().map(Load::rate).collect();
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<28} {:>9.0} req/s   p50 {:>8.1} µs   p99 {:>8.1} µs   (median of {} rounds, req/s {lo:.0}..{hi:.0}; {} requests, {} errors)",
            self.name,
            self.rate(),
            self.quantile(0.50) * 1e6,
            self.quantile(0.99) * 1e6,
            self.loads.len(),
            self.loads.iter().map(|l| l.latencies.len()).sum::<usize>(),
            self.errors()
        );
    }

    /// "throughput x   p50 y   p99 z" of `self` over `base`; when either side had errors
    /// the line says so, since a side that fails requests fast or slow skews the ratio.
    pub fn ratios(&self, base: &Rounds) -> String {
        let mut line = format!(
            "throughput {}   p50 {}   p99 {}",
            ratio(self.rate(), base.rate()),
            ratio(self.quantile(0.5), base.quantile(0.5)),
            ratio(self.quantile(0.99), base.quantile(0.99)),
        );
        for side in [self, base] {
            if side.errors() > 0 {
                line.push_str(&format!(
                    "   [FLAGGED: {} had {} errors, not like for like]",
                    side.name,
                    side.errors()
                ));
            }
        }
        line
    }

    /// Both sides served every request.
    pub fn clean(&self, base: &Rounds) -> bool {
        self.errors() == 0 && base.errors() == 0
    }
}

/// The wasmtime version this workspace builds (Cargo.lock), the one a fair baseline runs.
pub fn pinned_wasmtime() -> &'static str {
    const LOCK: &str = include_str!("../../Cargo.lock");
    LOCK.split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.split("\nversion = \"").nth(1))
        .and_then(|v| v.split('"').next())
        .unwrap_or("unknown")
}

/// How to install the baseline.
pub fn install_hint() -> String {
    format!(
        "cargo install wasmtime-cli --version {} --locked",
        pinned_wasmtime()
    )
}

/// Compares the CLI's version with the crate's and says so: a baseline on another wasmtime
/// release is still printed, but not as a like-for-like comparison.
fn check_wasmtime_version(bin: &Path) -> bool {
    let out = Command::new(bin).arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    // "wasmtime 48.0.8 (abcdef 2025-..)" or "wasmtime-cli 48.0.8".
    let cli = text.split_whitespace().nth(1).unwrap_or("unknown");
    let pinned = pinned_wasmtime();
    if cli == pinned {
        println!("baseline wasmtime CLI {cli} = the workspace's wasmtime crate {pinned}");
        true
    } else {
        println!(
            "WARNING: baseline wasmtime CLI is {cli:?} but the workspace builds wasmtime {pinned}: \
             the ratio compares different wasmtime releases ({})",
            install_hint()
        );
        false
    }
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

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `wasmtime serve` baseline both HTTP benches compare with: the CLI found, its version
/// checked against the crate's, the component served. `None` (said on stdout) when there is
/// no CLI or it does not start; the note marks every ratio when the versions differ.
pub fn wasmtime_baseline(wasm: &Path) -> (Option<(KillOnDrop, SocketAddr)>, &'static str) {
    let Some(bin) = find_wasmtime() else {
        println!(
            "baseline missing: no wasmtime CLI on PATH or in $WASMTIME_BIN ({}); no ratio",
            install_hint()
        );
        return (None, "");
    };
    let note = if check_wasmtime_version(&bin) {
        ""
    } else {
        "   [wasmtime CLI version differs from the crate's: see above]"
    };
    match start_wasmtime(&bin, wasm) {
        Ok(b) => (Some(b), note),
        Err(e) => {
            println!("baseline missing: {e}; no ratio");
            (None, note)
        }
    }
}

fn start_wasmtime(bin: &Path, wasm: &Path) -> Result<(KillOnDrop, SocketAddr), String> {
    println!("baseline: wasmtime serve ({})", bin.display());
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
