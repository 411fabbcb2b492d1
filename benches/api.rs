//! API latency and store throughput benchmark (`cargo bench --bench api`).
//!
//! 1. Starts the real `spindle server` (release build) on a temp data dir and drives it
//!    from a kube-rs client on loopback at a fixed open-loop rate (default 500 req/s):
//!    GET /version (the transport baseline: TLS + HTTP/2 + auth, no store), then
//!    ConfigMap creates and gets. Latency is measured from each request's scheduled send
//!    time, so a stall counts against every request it delays.
//! 2. Measures the store's durable write throughput in-process: one writer and 64
//!    concurrent writers through `SledStore` (group commit), against a baseline of raw
//!    sled insert + flush per write measured in the same run.
//!
//! Environment: BENCH_RATE (req/s, default 500), BENCH_SECS (per phase, default 10),
//! SPINDLE_BENCH_BIN (an earlier `spindle` build to measure instead of this one).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client};
use spindle_store::{SledStore, SledStoreOptions, Store};
use tokio::sync::Mutex;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    errors: usize,
    n: usize,
    achieved: f64,
}

fn stats(mut lat: Vec<f64>, errors: usize, wall: Duration) -> Stats {
    lat.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() as f64 - 1.0) * q).round() as usize]
        }
    };
    Stats {
        p50: pick(0.50),
        p99: pick(0.99),
        max: lat.last().copied().unwrap_or(f64::NAN),
        errors,
        n: lat.len(),
        achieved: lat.len() as f64 / wall.as_secs_f64(),
    }
}

/// Fire `op(i)` at `rate`/s for `secs`, open loop; latency from the scheduled start.
async fn open_loop<F, Fut>(rate: u64, secs: u64, op: F) -> Stats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let results = Arc::new(Mutex::new((Vec::with_capacity(total as usize), 0usize)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let op = op.clone();
        let results = results.clone();
        tasks.push(tokio::spawn(async move {
            let ok = op(i).await;
            let ms = scheduled.elapsed().as_secs_f64() * 1000.0;
            let mut r = results.lock().await;
            if ok {
                r.0.push(ms);
            } else {
                r.1 += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = start.elapsed();
    let r = results.lock().await;
    stats(r.0.clone(), r.1, wall)
}

fn print_row(name: &str, s: &Stats, baseline: Option<&Stats>) {
    let ratio = baseline
        .map(|b| format!("{:>6.2}x", s.p99 / b.p99))
        .unwrap_or_else(|| "   1.00x".into());
    println!(
        "{name:<28} n={:<6} err={:<4} rate={:>7.1}/s  p50={:>7.2} ms  p99={:>7.2} ms  max={:>8.2} ms  p99 vs baseline {ratio}",
        s.n, s.errors, s.achieved, s.p50, s.p99, s.max
    );
}

async fn api_bench(rate: u64, secs: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut child = Command::new(common::bin())
        .args([
            "server",
            "--disable-agent",
            "--https-listen-port",
            "0",
            "--bind-address",
            "127.0.0.1",
            "--data-dir",
        ])
        .arg(&data)
        .env("SPINDLE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let kubeconfig = data.join("kubeconfig.yaml");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        anyhow::ensure!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // Warm up connections and caches.
    for _ in 0..50 {
        client.apiserver_version().await?;
    }

    println!("== API latency at {rate} req/s for {secs} s per phase (kube-rs client, HTTP/2 over TLS, loopback) ==");
    let c = client.clone();
    let base = open_loop(rate, secs, move |_| {
        let c = c.clone();
        async move { c.apiserver_version().await.is_ok() }
    })
    .await;
    print_row("GET /version (baseline)", &base, None);

    let a = api.clone();
    let create = open_loop(rate, secs, move |i| {
        let a = a.clone();
        async move {
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("bench-{i}")),
                    labels: Some(BTreeMap::from([("bench".into(), "yes".into())])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([("key".to_string(), "x".repeat(256))])),
                ..Default::default()
            };
            a.create(&PostParams::default(), &cm).await.is_ok()
        }
    })
    .await;
    print_row("POST configmaps (create)", &create, Some(&base));

    let a = api.clone();
    let n = create.n.max(1) as u64;
    let get = open_loop(rate, secs, move |i| {
        let a = a.clone();
        async move { a.get(&format!("bench-{}", i % n)).await.is_ok() }
    })
    .await;
    print_row("GET configmap", &get, Some(&base));
    println!(
        "target: create p99 <= 25 ms at 500/s -> {}",
        if create.p99 <= 25.0 && create.errors == 0 {
            "MET"
        } else {
            "NOT MET"
        }
    );

    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

async fn store_bench() -> anyhow::Result<()> {
    const N: usize = 2000;
    println!("\n== Store durable write throughput ({N} writes of 512 B each) ==");
    let value = vec![b'x'; 512];

    // Baseline: what a naive store does, one fsync'd sled write per request.
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path())?;
    let t = Instant::now();
    for i in 0..N {
        db.insert(format!("/k/{i}"), value.as_slice())?;
        db.flush()?;
    }
    let base = N as f64 / t.elapsed().as_secs_f64();
    println!(
        "{:<44} {:>9.0} writes/s  1.00x",
        "raw sled insert+flush per write (baseline)", base
    );
    drop(db);

    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(dir.path(), SledStoreOptions::default())?);
    let t = Instant::now();
    for i in 0..N {
        store.create(&format!("/s/{i}"), value.clone()).await?;
    }
    let seq = N as f64 / t.elapsed().as_secs_f64();
    println!(
        "{:<44} {:>9.0} writes/s  {:.2}x",
        "SledStore, 1 writer",
        seq,
        seq / base
    );

    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..N).step_by(64) {
                store.create(&format!("/c/{i}"), value.clone()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let conc = N as f64 / t.elapsed().as_secs_f64();
    println!(
        "{:<44} {:>9.0} writes/s  {:.2}x",
        "SledStore, 64 concurrent writers",
        conc,
        conc / base
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rate = env_num("BENCH_RATE", 500);
    let secs = env_num("BENCH_SECS", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        api_bench(rate, secs).await?;
        store_bench().await
    })
}
