//! API latency and store throughput benchmark (`cargo bench --bench api`).
//!
//! 1. Starts the real `spindle server` (release build) on a temp data dir and drives it
//!    from a kube-rs client on loopback at a fixed open-loop rate (default 500 req/s):
//!    GET /version (the transport baseline: TLS + HTTP/2 + auth, no store), then
//!    ConfigMap creates and gets. Latency is measured from each request's scheduled send
//!    time, so a stall counts against every request it delays.
//!    A request whose task panics counts as an error; the GETs read only names whose
//!    create succeeded. The three phases run in one server as the admin (system:masters,
//!    which skips RBAC) and as a user with a client certificate whose rights come from a
//!    Role and RoleBinding, with 1,000 other Roles and RoleBindings (for 1,000 other
//!    users) in the cluster, alternating for BENCH_RBAC_ROUNDS rounds (default 3) with
//!    each side's samples pooled: the cost of RBAC is the user's p99 over the admin's
//!    (target: within 1.2x).
//! 2. Measures the store's durable write throughput in-process: one writer and 64
//!    concurrent writers through `SledStore` (group commit), each against a baseline of
//!    raw sled insert + flush per write with the same number of writers (sled coalesces
//!    concurrent flushes too), measured in the same run. Every sample opens a fresh store
//!    in a fresh directory; BENCH_STORE_SAMPLES (default 5) samples of BENCH_STORE_WRITES
//!    (default 2000) writes each, the figure is their median.
//!
//! Environment: BENCH_RATE (req/s, default 500), BENCH_SECS (per phase, default 10),
//! SPINDLE_BENCH_BIN (an earlier `spindle` build to measure instead of this one). Under
//! `cargo test` (no `--bench`) every size is small (`benches/common/size.rs`).

mod common;
#[path = "common/rbac.rs"]
mod rbac;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::Api;
use spindle_store::{SledStore, SledStoreOptions, Store};
use tokio::sync::Mutex;

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    errors: usize,
    n: usize,
    achieved: f64,
}

/// The raw outcome of one or more phases of the same requests: latencies of the requests
/// that succeeded, failures, and the time it took.
#[derive(Default)]
struct Samples {
    lat: Vec<f64>,
    errors: usize,
    wall: Duration,
}

impl Samples {
    /// Pool another run of the same phase into this one.
    fn pool(&mut self, other: Samples) {
        self.lat.extend(other.lat);
        self.errors += other.errors;
        self.wall += other.wall;
    }

    fn stats(&self) -> Stats {
        let mut lat = self.lat.clone();
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
            errors: self.errors,
            n: lat.len(),
            achieved: lat.len() as f64 / self.wall.as_secs_f64(),
        }
    }
}

/// Fire `op(i)` at `rate`/s for `secs`, open loop; latency from the scheduled start.
async fn open_loop<F, Fut>(rate: u64, secs: u64, op: F) -> Samples
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
    // A task that panicked recorded nothing: it is a failed request.
    let mut panicked = 0;
    for t in tasks {
        if t.await.is_err() {
            panicked += 1;
        }
    }
    let wall = start.elapsed();
    let r = results.lock().await;
    Samples {
        lat: r.0.clone(),
        errors: r.1 + panicked,
        wall,
    }
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

/// The three phases of one latency run (or of several, pooled).
#[derive(Default)]
struct Run {
    base: Samples,
    create: Samples,
    get: Samples,
}

impl Run {
    fn pool(&mut self, other: Run) {
        self.base.pool(other.base);
        self.create.pool(other.create);
        self.get.pool(other.get);
    }

    fn print(&self) {
        let base = self.base.stats();
        print_row("GET /version (baseline)", &base, None);
        print_row(
            "POST configmaps (create)",
            &self.create.stats(),
            Some(&base),
        );
        print_row("GET configmap", &self.get.stats(), Some(&base));
    }
}

/// GET /version, then ConfigMap creates (named `<prefix>-<i>`), then gets of those, as
/// `client`.
async fn latency_run(
    client: &kube::Client,
    prefix: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Run> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // Warm up connections and caches.
    for _ in 0..50 {
        client.apiserver_version().await?;
    }
    let c = client.clone();
    let base = open_loop(rate, secs, move |_| {
        let c = c.clone();
        async move { c.apiserver_version().await.is_ok() }
    })
    .await;

    let a = api.clone();
    let created = Arc::new(std::sync::Mutex::new(Vec::new()));
    let names = created.clone();
    let pre = prefix.to_string();
    let create = open_loop(rate, secs, move |i| {
        let a = a.clone();
        let names = names.clone();
        let name = format!("{pre}-{i}");
        async move {
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(name),
                    labels: Some(BTreeMap::from([("bench".into(), "yes".into())])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([("key".to_string(), "x".repeat(256))])),
                ..Default::default()
            };
            let ok = a.create(&PostParams::default(), &cm).await.is_ok();
            if ok {
                names.lock().unwrap_or_else(|e| e.into_inner()).push(i);
            }
            ok
        }
    })
    .await;

    // Read only what exists: a failed create must not turn into a failed GET.
    let names: Arc<Vec<u64>> = Arc::new(std::mem::take(
        &mut *created.lock().unwrap_or_else(|e| e.into_inner()),
    ));
    anyhow::ensure!(!names.is_empty(), "no ConfigMap create succeeded");
    let a = api.clone();
    let pre = prefix.to_string();
    let get = open_loop(rate, secs, move |i| {
        let a = a.clone();
        let name = format!("{pre}-{}", names[i as usize % names.len()]);
        async move { a.get(&name).await.is_ok() }
    })
    .await;
    Ok(Run { base, create, get })
}

async fn api_bench(rate: u64, secs: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A guard: the server stops on error paths too (declared after `dir`, dropped first).
    let mut server =
        common::start_server(dir.path(), "server", &["--disable-agent".into()]).await?;
    let client = server.client.clone();
    let data = dir.path().join("server");
    let roles = common::size("BENCH_RBAC_OBJECTS", 1000, 50);
    rbac::populate(&client, roles).await?;
    let user = rbac::user_client(&data, dir.path()).await?;

    let rounds = common::size("BENCH_RBAC_ROUNDS", 3, 1);
    println!("== API latency at {rate} req/s for {secs} s per phase (kube-rs client, HTTP/2 over TLS, loopback) ==");
    println!(
        "{rounds} round(s), each as the admin (system:masters) then as {} through RBAC with {roles} other Roles and RoleBindings in the cluster; samples pooled per side, so neither side has the quieter moments",
        rbac::USER
    );
    let (mut admin, mut rbac) = (Run::default(), Run::default());
    for round in 0..rounds {
        admin.pool(latency_run(&client, &format!("bench{round}"), rate, secs).await?);
        rbac.pool(latency_run(&user, &format!("rbac{round}"), rate, secs).await?);
    }
    println!("-- as the admin (system:masters)");
    admin.print();
    println!("-- as {} through RBAC", rbac::USER);
    rbac.print();
    let mut within = true;
    for (name, a, r) in [
        ("GET /version", &admin.base, &rbac.base),
        ("POST configmaps", &admin.create, &rbac.create),
        ("GET configmap", &admin.get, &rbac.get),
    ] {
        let (a, r) = (a.stats(), r.stats());
        let ratio = r.p99 / a.p99;
        within &= ratio <= 1.2 && r.errors == 0;
        println!(
            "RBAC vs admin {name:<18} p50 {:>6.2} / {:>6.2} ms  p99 {:>6.2} / {:>6.2} ms  p99 ratio {ratio:.2}x",
            r.p50, a.p50, r.p99, a.p99
        );
    }
    println!(
        "target: RBAC p99 within 1.2x of the admin's -> {}",
        if within { "MET" } else { "NOT MET" }
    );
    let create = admin.create.stats();
    println!(
        "target: create p99 <= 25 ms at 500/s (this run {rate}/s) -> {}",
        if create.p99 <= 25.0 && create.errors == 0 {
            "MET"
        } else {
            "NOT MET"
        }
    );

    server.proc.ensure_alive("spindle server")?;
    drop(server);
    // In quick mode a failed request is a broken benchmark, not a figure.
    let errors = [admin, rbac]
        .iter()
        .map(|r| r.base.errors + r.create.errors + r.get.errors)
        .sum::<usize>();
    anyhow::ensure!(!common::quick() || errors == 0, "{errors} requests failed");
    Ok(())
}

/// Writes per second of `writers` raw sled writers, each `insert` + `flush` per write, on a
/// fresh database.
fn raw_sled(n: usize, writers: usize, value: &[u8]) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path())?;
    let t = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let db = &db;
                scope.spawn(move || -> anyhow::Result<()> {
                    for i in (w..n).step_by(writers) {
                        db.insert(format!("/k/{i}"), value)?;
                        db.flush()?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a sled writer panicked"))?
        })
    })?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Writes per second of `writers` concurrent `SledStore::create` callers on a fresh store.
async fn spindle_store(n: usize, writers: usize, value: &[u8]) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(dir.path(), SledStoreOptions::default())?);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(writers) {
                store.create(&format!("/s/{i}"), value.clone()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Median and range of samples.
fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (mid, v[0], v[v.len() - 1])
}

async fn store_bench(n: usize, samples: usize) -> anyhow::Result<()> {
    println!(
        "\n== Store durable write throughput ({n} writes of 512 B, median of {samples} samples, a fresh store each) =="
    );
    let value = vec![b'x'; 512];
    for writers in [1, 64] {
        // Interleaved, so that a slow moment of the disk does not fall on one side only.
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..samples.max(1) {
            base.push(raw_sled(n, writers, &value)?);
            ours.push(spindle_store(n, writers, &value).await?);
        }
        let (b, blo, bhi) = summary(base);
        let (o, olo, ohi) = summary(ours);
        println!(
            "{:<46} {b:>9.0} writes/s  ({blo:.0}..{bhi:.0})  baseline",
            format!("raw sled insert+flush, {writers} writer(s)")
        );
        println!(
            "{:<46} {o:>9.0} writes/s  ({olo:.0}..{ohi:.0})  {:.2}x",
            format!("SledStore (group commit), {writers} writer(s)"),
            o / b
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    common::announce("api");
    let rate = common::size("BENCH_RATE", 500, 50);
    let secs = common::size("BENCH_SECS", 10, 1);
    let writes = common::size("BENCH_STORE_WRITES", 2000, 100);
    let samples = common::size("BENCH_STORE_SAMPLES", 5, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        api_bench(rate, secs).await?;
        store_bench(writes, samples).await
    })
}
