//! Wasm pod benchmark (`cargo bench --bench pods`): real processes on this machine, a real
//! OCI registry (Debian's docker-registry) and the test guest `tests/guests/testbox`.
//!
//! Every node, measured or baseline, is a separate process that talks to a release
//! `spindle server --disable-agent` over HTTPS with a watch and status PATCHes: the measured
//! node is a standalone `spindle agent`, the baseline one `spindle hollow-nodes` node
//! (`hollow-0`) that reports Running without running anything. The baseline is so the
//! control plane's own floor through the same transport, and "above the floor" is what the
//! node's runtime adds. Each cluster gets its own bridge, netns prefix, nftables table,
//! CIDRs and DNS port (`common::Net`), so a `scripts/up` cluster may run beside it.
//!
//! 1. Pod start latency (node `bench`): BENCH_STARTS (default 200) pods, one at a time,
//!    each created only once the previous one is Running; latency = from just before the
//!    create call to the moment a pod watch (opened beforehand) sees phase Running. Run for
//!    the hollow node, the p1 module and the p2 component of testbox (`sleep 0`: idles
//!    forever), images pre-pulled and compiled by one warm-up pod each; the p2 component
//!    twice, with its own network sandbox (netns and IP through the CNI plugins; p1 modules
//!    have no sockets and get none) and with `hostNetwork: true`.
//! 2. Density, twice on a fresh server and agent (node `dense`): BENCH_DENSITY (default
//!    10000) idle pods with `hostNetwork: true` (no netns, no CNI, no IP), half p1 and half
//!    p2; then BENCH_DENSITY_SANDBOX (default 240) idle p2 pods each with its own netns and
//!    IP (a node's pod CIDR is a /24, so at most 253 such pods). Created 64 at a time; time
//!    to all Running and the agent's proportional memory (PSS) per pod. Kernel memory of
//!    the sandboxes (netns, veth) is not in any process's PSS and is not counted.
//! 3. Containers beside Wasm (skipped without containerd), node `mix` with the agent's
//!    private containerd: BENCH_CONTAINER_STARTS (default 100) pods one at a time, as in 1,
//!    for a container (busybox-static built by scripts/busybox-image, `sleep`) and for the
//!    Wasm p2 component, each with its own netns and with `hostNetwork: true`, images
//!    cached; the ratio is container / Wasm. Then BENCH_IDLE (default 50) idle pods of each
//!    kind (own netns): memory per pod = growth of the summed PSS of the agent, containerd,
//!    the shims and the containers' processes, divided by the pod count; the same sum for
//!    both kinds.
//!
//! Under `cargo test` (no `--bench`) every size is small: see `common::size`.

mod common;
use common::{
    announce, create_namespace, pss_kib, quick, rss_kib, size, start_registry, start_server,
    testbox, wait_node_ready, Net, Proc, Server,
};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::mpsc;

const TARGET_P50_MS: f64 = 5.0;
const TARGET_P99_MS: f64 = 25.0;
const TARGET_PODS: usize = 10_000;
const TARGET_KIB_PER_POD: f64 = 1024.0;

fn hollow(work: &Path, s: &Server, pods: usize) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(common::bin());
    cmd.args([
        "hollow-nodes",
        "--server",
        &s.url,
        "--token",
        &s.token,
        "--count",
        "1",
        "--prefix",
        "hollow",
        "--pods",
        &pods.to_string(),
    ]);
    Proc::spawn(cmd, &work.join("hollow.log"), "spindle hollow-nodes")
}

/// The measured node: a standalone agent, over HTTPS like the hollow node.
fn agent(work: &Path, s: &Server, net: &Net, node: &str) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(common::bin());
    cmd.args(["agent", "--server", &s.url, "--node-name", node])
        .args(["--node-ip", "127.0.0.1", "--agent-port", "0"])
        .args(["--max-pods", "20000", "--data-dir"])
        .arg(agent_data(work))
        .args(net.agent_args())
        .env("SPINDLE_TOKEN", &s.token);
    Proc::spawn(cmd, &work.join("agent.log"), "spindle agent")
}

fn agent_data(work: &Path) -> std::path::PathBuf {
    work.join("agent-data")
}

/// A control plane alone, with `net`'s address ranges; nodes join it over HTTPS.
async fn control_plane(dir: &Path, net: &Net) -> anyhow::Result<Server> {
    let mut args = net.server_args();
    args.push("--disable-agent".into());
    start_server(dir, "server", &args).await
}

/// What a pod runs: a testbox image (`sleep 0` idles forever) or, with `command`, a
/// container image.
#[derive(Clone, Copy)]
struct Work<'a> {
    image: &'a str,
    command: Option<&'a [&'a str]>,
}

impl<'a> Work<'a> {
    fn wasm(image: &'a str) -> Self {
        Work {
            image,
            command: None,
        }
    }
}

/// A container that idles and ends at once on SIGTERM.
const CONTAINER_IDLE: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"];

fn pod(
    name: &str,
    label: &str,
    node: &str,
    work: Work<'_>,
    restart: &str,
    host_network: bool,
) -> Pod {
    let (command, args) = match work.command {
        Some(c) => (Some(c.iter().map(|s| s.to_string()).collect()), None),
        None => (None, Some(vec!["sleep".into(), "0".into()])),
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("bench".to_string(), label.to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_selector: Some(BTreeMap::from([(
                "kubernetes.io/hostname".to_string(),
                node.to_string(),
            )])),
            restart_policy: Some(restart.into()),
            host_network: Some(host_network),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "main".into(),
                image: Some(work.image.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                command,
                args,
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Why a pod's container is not running, if it says (waiting other than creating,
/// terminated, or a previous run that ended).
fn failure(p: &Pod) -> Option<String> {
    let status = p.status.as_ref()?;
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if !matches!(
                reason.as_str(),
                "" | "ContainerCreating" | "PodInitializing"
            ) {
                return Some(format!(
                    "waiting {reason}: {}",
                    w.message.clone().unwrap_or_default()
                ));
            }
        }
        let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        if let Some(t) = cs
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .or(last)
        {
            return Some(format!(
                "terminated {} (exit {}): {}",
                t.reason.clone().unwrap_or_default(),
                t.exit_code,
                t.message.clone().unwrap_or_default()
            ));
        }
    }
    if phase(p) == "Failed" {
        return Some(format!(
            "phase Failed: {} {}",
            status.reason.clone().unwrap_or_default(),
            status.message.clone().unwrap_or_default()
        ));
    }
    None
}

/// Pods of `ns` as a watch sees them, each with the instant this process received it; the
/// watch is driven by its own task so that timestamps do not wait for the reader.
fn watch_pods(client: &Client, ns: &str) -> (mpsc::UnboundedReceiver<(Instant, Pod)>, Abort) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                    if tx.send((now, p)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("pod watch error (retrying): {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    (rx, Abort(task))
}

struct Abort(tokio::task::JoinHandle<()>);
impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------
// 1. Start latency.

struct Latencies(Vec<Duration>);

impl Latencies {
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort();
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize - 1;
        v[i.min(v.len() - 1)].as_secs_f64() * 1e3
    }
}

/// Create `n` pods one after another, each once the previous is Running.
async fn start_loop(
    api: &Api<Pod>,
    rx: &mut mpsc::UnboundedReceiver<(Instant, Pod)>,
    label: &str,
    node: &str,
    work: Work<'_>,
    n: usize,
    host_network: bool,
) -> anyhow::Result<Latencies> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{label}-{i}");
        let p = pod(&name, label, node, work, "Always", host_network);
        let t = Instant::now();
        api.create(&PostParams::default(), &p).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (at, p) = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .map_err(|_| anyhow::anyhow!("{name} not Running after 60 s"))?
                .ok_or_else(|| anyhow::anyhow!("pod watch ended"))?;
            if p.metadata.name.as_deref() != Some(name.as_str()) {
                continue;
            }
            if phase(&p) == "Running" {
                out.push(at.saturating_duration_since(t));
                break;
            }
            if let Some(why) = failure(&p) {
                anyhow::bail!("{name} failed to start: {why}");
            }
        }
    }
    Ok(Latencies(out))
}

/// Delete the pods labelled `label` and wait until they are gone.
async fn delete_pods(api: &Api<Pod>, label: &str) -> anyhow::Result<()> {
    let lp = ListParams::default().labels(&format!("bench={label}"));
    let names: Vec<String> = api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    futures::stream::iter(names)
        .for_each_concurrent(16, |n| async move {
            let _ = api.delete(&n, &DeleteParams::default()).await;
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = api.list(&lp).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        // Leftover pods would weigh on the next loop's figures: stop rather than measure.
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} {label} pods still not gone after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn latency_bench(work: &Path, p1: &str, p2: &str, n: usize) -> anyhow::Result<()> {
    println!("== Pod start latency: {n} pods one at a time (create -> watch sees Running) ==");
    let dir = work.join("latency");
    std::fs::create_dir_all(&dir)?;
    let net = Net::fresh();
    let mut s = control_plane(&dir, &net).await?;
    let mut a = agent(&dir, &s, &net, "bench")?;
    let mut h = hollow(&dir, &s, n.max(100) + 10)?;
    wait_node_ready(&s.client, "bench").await?;
    wait_node_ready(&s.client, "hollow-0").await?;
    create_namespace(&s.client, "lat").await?;
    let api: Api<Pod> = Api::namespaced(s.client.clone(), "lat");
    let (mut rx, _watch) = watch_pods(&s.client, "lat");

    // Warm-up: pull and compile both images, and settle the watch and the connections.
    let t = Instant::now();
    let warm = start_loop(&api, &mut rx, "warm-p1", "bench", Work::wasm(p1), 1, false).await?;
    let warm2 = start_loop(&api, &mut rx, "warm-p2", "bench", Work::wasm(p2), 1, false).await?;
    let warm3 = start_loop(
        &api,
        &mut rx,
        "warm-hollow",
        "hollow-0",
        Work::wasm(p1),
        3,
        false,
    )
    .await?;
    println!(
        "warm-up (pull + compile): p1 {:.0} ms, p2 {:.0} ms; hollow {:.1} ms; total {:.1} s",
        warm.pct(100.0),
        warm2.pct(100.0),
        warm3.pct(100.0),
        t.elapsed().as_secs_f64()
    );
    for l in ["warm-p1", "warm-p2", "warm-hollow"] {
        delete_pods(&api, l).await?;
    }

    let base = start_loop(
        &api,
        &mut rx,
        "hollow",
        "hollow-0",
        Work::wasm(p1),
        n,
        false,
    )
    .await?;
    delete_pods(&api, "hollow").await?;
    let wasm_p1 = start_loop(&api, &mut rx, "p1", "bench", Work::wasm(p1), n, false).await?;
    delete_pods(&api, "p1").await?;
    let wasm_p2 = start_loop(&api, &mut rx, "p2", "bench", Work::wasm(p2), n, false).await?;
    delete_pods(&api, "p2").await?;
    let wasm_p2_host =
        start_loop(&api, &mut rx, "p2host", "bench", Work::wasm(p2), n, true).await?;
    delete_pods(&api, "p2host").await?;
    s.proc.ensure_alive("spindle server")?;
    a.ensure_alive("spindle agent")?;
    h.ensure_alive("spindle hollow-nodes")?;

    let (b50, b99) = (base.pct(50.0), base.pct(99.0));
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>10} {:>10} {:>12}",
        "", "p50 ms", "p99 ms", "max ms", "p50 ratio", "p99 ratio", "p50 - floor"
    );
    println!(
        "{:<40} {b50:>9.2} {b99:>9.2} {:>9.2} {:>10} {:>10} {:>12}",
        "hollow node (floor, baseline)",
        base.pct(100.0),
        "-",
        "-",
        "-"
    );
    for (what, l) in [
        ("Wasm p1 module (testbox sleep)", &wasm_p1),
        ("Wasm p2 component, own netns (CNI)", &wasm_p2),
        ("Wasm p2 component, hostNetwork", &wasm_p2_host),
    ] {
        let (p50, p99) = (l.pct(50.0), l.pct(99.0));
        let met = p50 <= TARGET_P50_MS && p99 <= TARGET_P99_MS;
        // At or below the floor, the runtime's own cost is lost in the noise.
        let note = if p50 - b50 > 0.0 {
            ""
        } else {
            " (at or below the floor: runtime share not measurable)"
        };
        println!(
            "{what:<40} {p50:>9.2} {p99:>9.2} {:>9.2} {:>9.2}x {:>9.2}x {:>9.2} ms{note}   (target p50 <= {TARGET_P50_MS} ms, p99 <= {TARGET_P99_MS} ms: {})",
            l.pct(100.0),
            p50 / b50,
            p99 / b99,
            p50 - b50,
            if met { "MET" } else { "NOT MET" }
        );
    }
    println!(
        "agent PSS {:.0} MiB, server PSS {:.0} MiB",
        pss_kib(a.pid()) / 1024.0,
        pss_kib(s.proc.pid()) / 1024.0
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Density.

#[derive(Default)]
struct DensityState {
    running: HashSet<String>,
    failed: HashMap<String, String>,
    first_failure: Option<String>,
}

/// How the density pods are networked.
#[derive(Clone, Copy, PartialEq)]
enum Sandbox {
    /// `hostNetwork: true`: no netns, no CNI, no IP; half p1 modules, half p2 components.
    HostNetwork,
    /// Each pod its own netns and IP through the CNI plugins; p2 components (p1 modules
    /// have no sockets and get no sandbox).
    PerPod,
}

async fn density_bench(
    work: &Path,
    p1: &str,
    p2: &str,
    n: usize,
    sandbox: Sandbox,
) -> anyhow::Result<()> {
    let (what, sub) = match sandbox {
        Sandbox::HostNetwork => ("hostNetwork, half p1, half p2", "density"),
        Sandbox::PerPod => ("own netns + CNI each, p2", "density-sandbox"),
    };
    println!("\n== Density: {n} idle Wasm pods ({what}) on one standalone agent ==");
    let dir = work.join(sub);
    std::fs::create_dir_all(&dir)?;
    let net = Net::fresh();
    let mut s = control_plane(&dir, &net).await?;
    let mut a = agent(&dir, &s, &net, "dense")?;
    wait_node_ready(&s.client, "dense").await?;
    create_namespace(&s.client, "dense").await?;
    // Let the freshly started agent settle before measuring its idle footprint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agent_idle = pss_kib(a.pid());
    let server_idle = pss_kib(s.proc.pid());
    println!(
        "agent PSS idle (no pods): {:.1} MiB (RSS {:.1} MiB); server PSS: {:.1} MiB",
        agent_idle / 1024.0,
        rss_kib(a.pid()) / 1024.0,
        server_idle / 1024.0
    );

    let api: Api<Pod> = Api::namespaced(s.client.clone(), "dense");
    let state = Arc::new(Mutex::new(DensityState::default()));
    let (mut rx, _watch) = watch_pods(&s.client, "dense");
    let counter = {
        let state = state.clone();
        tokio::spawn(async move {
            while let Some((_, p)) = rx.recv().await {
                let name = p.metadata.name.clone().unwrap_or_default();
                let running = phase(&p) == "Running"
                    && p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|cs| {
                            cs.iter()
                                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                        });
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                if running {
                    st.running.insert(name.clone());
                    st.failed.remove(&name);
                } else {
                    st.running.remove(&name);
                    if let Some(why) = failure(&p) {
                        if st.first_failure.is_none() {
                            st.first_failure = Some(format!("{name}: {why}"));
                        }
                        st.failed.insert(name, why);
                    }
                }
            }
        })
    };
    let _counter = Abort(counter);

    let t = Instant::now();
    let create_errors = Arc::new(AtomicUsize::new(0));
    let first_create_error = Arc::new(Mutex::new(None::<String>));
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let api = api.clone();
            let errors = create_errors.clone();
            let first = first_create_error.clone();
            let (kind, image) = if i % 2 == 0 && sandbox == Sandbox::HostNetwork {
                ("p1", p1)
            } else {
                ("p2", p2)
            };
            async move {
                // A node's pod CIDR (a /24) and its bridge (1024 ports) bound how many
                // pods can have their own network: the large run goes without.
                let p = pod(
                    &format!("{kind}-{i}"),
                    kind,
                    "dense",
                    Work::wasm(image),
                    "Never",
                    sandbox == Sandbox::HostNetwork,
                );
                if let Err(e) = api.create(&PostParams::default(), &p).await {
                    errors.fetch_add(1, Ordering::SeqCst);
                    first
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e.to_string());
                }
            }
        })
        .await;
    let created_in = t.elapsed();
    let created = n - create_errors.load(Ordering::SeqCst);
    println!(
        "created {created}/{n} pods in {:.1} s ({:.0} pods/s)",
        created_in.as_secs_f64(),
        created as f64 / created_in.as_secs_f64()
    );
    if let Some(e) = first_create_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        println!("first create error: {e}");
    }

    // Wait for every created pod to be Running, or for progress to stop.
    let mut last_progress = (0usize, 0usize, Instant::now());
    let mut peak_agent = agent_idle;
    let (running, failed, first_failure, all_in) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_agent = peak_agent.max(pss_kib(a.pid()));
        let (r, f, first) = {
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            (st.running.len(), st.failed.len(), st.first_failure.clone())
        };
        if r >= created {
            break (r, f, first, Some(t.elapsed()));
        }
        if (r, f) != (last_progress.0, last_progress.1) {
            last_progress = (r, f, Instant::now());
        }
        let stalled = last_progress.2.elapsed() > Duration::from_secs(60);
        if stalled || t.elapsed() > Duration::from_secs(1200) {
            println!(
                "gave up waiting: {r} Running, {f} failed, no progress for {:.0} s",
                last_progress.2.elapsed().as_secs_f64()
            );
            break (r, f, first, None);
        }
        if a.ensure_alive("spindle agent").is_err() {
            println!("the agent process died");
            break (r, f, first, None);
        }
    };
    match all_in {
        Some(d) => println!(
            "all {running} pods Running after {:.1} s ({:.0} pods/s)",
            d.as_secs_f64(),
            running as f64 / d.as_secs_f64()
        ),
        None => println!(
            "only {running}/{n} pods Running after {:.1} s",
            t.elapsed().as_secs_f64()
        ),
    }
    if failed > 0 || first_failure.is_some() {
        println!(
            "{failed} pods failed; first failure seen: {}",
            first_failure.unwrap_or_default()
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent_after = pss_kib(a.pid());
    peak_agent = peak_agent.max(agent_after);
    let server_after = pss_kib(s.proc.pid());
    let per_pod = (agent_after - agent_idle) / running.max(1) as f64;
    let total_per_pod = agent_after / running.max(1) as f64;
    println!(
        "{:<44} {:>10.1} MiB",
        "agent PSS before (idle, no pods)",
        agent_idle / 1024.0
    );
    println!(
        "{:<44} {:>10.1} MiB  (peak while starting {:.1} MiB; RSS {:.1} MiB)",
        format!("agent PSS after ({running} pods Running)"),
        agent_after / 1024.0,
        peak_agent / 1024.0,
        rss_kib(a.pid()) / 1024.0
    );
    println!(
        "{:<44} {:>10.1} KiB  (agent PSS / pods: {total_per_pod:.1} KiB)",
        "agent PSS per pod ((after - before) / pods)", per_pod
    );
    println!(
        "{:<44} {:>10.1} MiB  (idle {:.1} MiB)",
        "server PSS (reference)",
        server_after / 1024.0,
        server_idle / 1024.0
    );
    if sandbox == Sandbox::HostNetwork {
        let met = running >= TARGET_PODS && per_pod <= TARGET_KIB_PER_POD;
        println!(
            "target >= {TARGET_PODS} hostNetwork pods at <= 1 MiB agent memory each: {} ({running} pods, {per_pod:.1} KiB/pod)",
            if met { "MET" } else { "NOT MET" }
        );
    }
    s.proc.ensure_alive("spindle server")?;
    a.ensure_alive("spindle agent")?;
    // In quick mode a pod that did not start is a broken benchmark, not a finding.
    anyhow::ensure!(
        !quick() || (all_in.is_some() && failed == 0 && created == n),
        "density run incomplete: {running}/{n} Running, {failed} failed"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Containers beside Wasm.

/// Proportional memory (KiB) of `roots` and all their descendants: pages they share are
/// counted once in the sum, not once per process.
fn tree_pss_kib(roots: &[u32]) -> f64 {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // "pid (comm) state ppid ...": the comm may hold spaces, so split after ')'.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
            {
                parent.insert(pid, ppid);
            }
        }
    }
    let roots: HashSet<u32> = roots.iter().copied().collect();
    let under = |mut pid: u32| loop {
        if roots.contains(&pid) {
            return true;
        }
        match parent.get(&pid) {
            Some(&p) if p > 1 => pid = p,
            _ => return false,
        }
    };
    parent
        .keys()
        .filter(|p| under(**p))
        .map(|p| pss_kib(*p))
        .filter(|r| r.is_finite())
        .sum()
}

/// The agent's containerd and the shims it started (they are re-parented away from it).
fn containerd_pids(data: &Path) -> Vec<u32> {
    let needle = data.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("containerd") && cmd.contains(&needle) {
            out.push(pid);
        }
    }
    out
}

async fn containers_bench(
    work: &Path,
    p2: &str,
    busybox: &str,
    n: usize,
    idle: usize,
) -> anyhow::Result<()> {
    println!("\n== Containers beside Wasm on one agent: {n} pods one at a time, then {idle} idle pods of each ==");
    let dir = work.join("containers");
    std::fs::create_dir_all(&dir)?;
    let net = Net::fresh();
    let mut s = control_plane(&dir, &net).await?;
    let mut a = agent(&dir, &s, &net, "mix")?;
    let mut h = hollow(&dir, &s, n.max(100) + 10)?;
    wait_node_ready(&s.client, "mix").await?;
    wait_node_ready(&s.client, "hollow-0").await?;
    create_namespace(&s.client, "mix").await?;
    let api: Api<Pod> = Api::namespaced(s.client.clone(), "mix");
    let (mut rx, _watch) = watch_pods(&s.client, "mix");
    let ctr = Work {
        image: busybox,
        command: Some(CONTAINER_IDLE),
    };
    let wasm = Work::wasm(p2);
    let t = Instant::now();
    let w1 = start_loop(&api, &mut rx, "warm-ctr", "mix", ctr, 1, false).await?;
    let w2 = start_loop(&api, &mut rx, "warm-wasm", "mix", wasm, 1, false).await?;
    println!(
        "warm-up (pull, unpack, compile): container {:.0} ms, Wasm {:.0} ms; total {:.1} s",
        w1.pct(100.0),
        w2.pct(100.0),
        t.elapsed().as_secs_f64()
    );
    for l in ["warm-ctr", "warm-wasm"] {
        delete_pods(&api, l).await?;
    }
    // The control plane's own floor: the same loop on a hollow node.
    let base = start_loop(&api, &mut rx, "hollow", "hollow-0", wasm, n, false).await?;
    delete_pods(&api, "hollow").await?;
    let mut rows = Vec::new();
    for (what, host) in [("own netns", false), ("hostNetwork", true)] {
        let c = start_loop(&api, &mut rx, "ctr", "mix", ctr, n, host).await?;
        delete_pods(&api, "ctr").await?;
        let w = start_loop(&api, &mut rx, "wasm", "mix", wasm, n, host).await?;
        delete_pods(&api, "wasm").await?;
        rows.push((what, c, w));
    }
    println!("{:<34} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "max ms");
    println!(
        "{:<34} {:>9.2} {:>9.2} {:>9.2}",
        "hollow node (control-plane floor)",
        base.pct(50.0),
        base.pct(99.0),
        base.pct(100.0)
    );
    for (what, c, w) in &rows {
        for (kind, l) in [("container", c), ("Wasm p2", w)] {
            println!(
                "{:<34} {:>9.2} {:>9.2} {:>9.2}",
                format!("{kind}, {what}"),
                l.pct(50.0),
                l.pct(99.0),
                l.pct(100.0)
            );
        }
        println!(
            "{:<34} {:>8.1}x {:>8.1}x   (target: Wasm >= 20x faster)",
            format!("container / Wasm, {what}"),
            c.pct(50.0) / w.pct(50.0),
            c.pct(99.0) / w.pct(99.0)
        );
        // What the runtimes add above the control plane's floor (p50). At or below the
        // floor the difference is noise and no ratio of it means anything.
        let (cb, wb) = (c.pct(50.0) - base.pct(50.0), w.pct(50.0) - base.pct(50.0));
        let share = if cb > 0.0 && wb > 0.0 {
            format!("{:.1}x", cb / wb)
        } else {
            "not measurable (a runtime at or below the floor)".to_owned()
        };
        println!(
            "{:<34} {cb:>9.2} {wb:>9.2} ms above the floor (container, Wasm): {share}",
            format!("  runtime share, {what}"),
        );
    }
    h.ensure_alive("spindle hollow-nodes")?;

    // Memory per idle pod: all the processes that hold pods (the server holds none).
    let data = agent_data(&dir);
    let measure = || {
        let mut roots = containerd_pids(&data);
        roots.push(a.pid());
        tree_pss_kib(&roots)
    };
    // Wasm first: memory a process frees is not always returned to the system, so the
    // smaller measurement goes where the allocator has not grown yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_wasm = measure();
    let _ = start_loop(&api, &mut rx, "idle-wasm", "mix", wasm, idle, false).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_wasm = measure();
    delete_pods(&api, "idle-wasm").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = measure();
    let _ = start_loop(&api, &mut rx, "idle-ctr", "mix", ctr, idle, false).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_ctr = measure();
    delete_pods(&api, "idle-ctr").await?;
    let per_ctr = (with_ctr - base) / idle as f64;
    let per_wasm = (with_wasm - base_wasm) / idle as f64;
    println!(
        "memory per idle pod (agent + containerd + shims + containers, PSS): container {per_ctr:.0} KiB, Wasm p2 {per_wasm:.0} KiB, ratio {}",
        if per_wasm > 0.0 {
            format!("{:.1}x", per_ctr / per_wasm)
        } else {
            "not measurable (no growth for Wasm)".to_owned()
        }
    );
    s.proc.ensure_alive("spindle server")?;
    a.ensure_alive("spindle agent")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    announce("pods");
    let starts = size("BENCH_STARTS", 200, 3);
    let density = size("BENCH_DENSITY", 10_000, 20);
    let density_sandbox = size("BENCH_DENSITY_SANDBOX", 240, 4);
    let container_starts = size("BENCH_CONTAINER_STARTS", 100, 2);
    let idle = size("BENCH_IDLE", 50, 2);
    common::run_in_work(|work| async move {
        let reg = start_registry(&work)?;
        let p1 = testbox(&reg, "wasm32-wasip1", "p1")?;
        let p2 = testbox(&reg, "wasm32-wasip2", "p2")?;
        if starts > 0 {
            latency_bench(&work, &p1, &p2, starts).await?;
        }
        if density > 0 {
            density_bench(&work, &p1, &p2, density, Sandbox::HostNetwork).await?;
        }
        if density_sandbox > 0 {
            density_bench(&work, &p1, &p2, density_sandbox, Sandbox::PerPod).await?;
        }
        let have_containerd = ["containerd", "runc", "umoci", "skopeo"].iter().all(|b| {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if container_starts > 0 && have_containerd {
            let busybox = format!("{}/bench/busybox:v1", reg.addr);
            let st = Command::new("bash")
                .arg("scripts/busybox-image")
                .arg(&busybox)
                .arg(work.join("busybox-image"))
                .status()?;
            anyhow::ensure!(st.success(), "scripts/busybox-image failed");
            containers_bench(&work, &p2, &busybox, container_starts, idle).await?;
        } else if container_starts > 0 {
            println!("\n(containers section skipped: containerd, runc, umoci or skopeo missing)");
        }
        anyhow::Ok(())
    })
}
