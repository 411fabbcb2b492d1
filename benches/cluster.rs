//! Cluster-scale benchmark (`cargo bench --bench cluster`): the scheduler and the
//! controllers against hollow nodes, all real processes on this machine.
//!
//! 1. Scheduler throughput: a release `spindle server --disable-scheduler` with
//!    BENCH_NODES (default 1000) hollow nodes and BENCH_PODS (default 10000) pending pods;
//!    then the scheduler is started in this process (over HTTPS, as an external scheduler
//!    would run) and the time from its start to the last pod bound gives pods/s. Baseline in
//!    the same run: binding another batch of pods round-robin with the same request
//!    concurrency and no scheduling decisions at all (the API's own binding ceiling).
//! 2. Deployments at scale: BENCH_SCALE pods (default "7500,15000,30000") on the same
//!    number of hollow nodes, through Deployments of 1000 replicas; time from apply to
//!    all Running and the server's resident memory, one fresh server per size.
//!
//! The DaemonSet rollout over hollow nodes is `benches/daemonsets.rs`.
//!
//! Under `cargo test` (no `--bench`) every size is small (`benches/common/size.rs`).

mod common;
use common::{size, Proc};

// The scheduler runs in this process: give it the allocator it has inside `spindle server`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Binding, Container, Node, ObjectReference, Pod, PodSpec, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

struct Server {
    proc: Proc,
    _dir: tempfile::TempDir,
    url: String,
    token: String,
    client: Client,
}

async fn start_server(extra: &[&str]) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let child = Command::new(common::bin())
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
        .args(extra)
        .env("SPINDLE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let proc = Proc(child);
    let kubeconfig = data.join("kubeconfig.yaml");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        anyhow::ensure!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&kubeconfig)?;
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap_or_default()
        .to_string();
    let token = std::fs::read_to_string(data.join("server/token"))?
        .trim()
        .to_string();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    Ok(Server {
        proc,
        _dir: dir,
        url,
        token,
        client,
    })
}

fn hollow(s: &Server, count: usize) -> anyhow::Result<Proc> {
    Ok(Proc(
        Command::new(common::bin())
            .args([
                "hollow-nodes",
                "--server",
                &s.url,
                "--token",
                &s.token,
                "--count",
                &count.to_string(),
                "--prefix",
                "hollow",
                "--pods",
                "110",
            ])
            .env("SPINDLE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    ))
}

async fn wait_nodes_ready(client: &Client, n: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let api: Api<Node> = Api::all(client.clone());
    loop {
        let nodes = api.list(&ListParams::default()).await?;
        let ready = nodes
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= n {
            return Ok(t.elapsed());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(300),
            "only {ready}/{n} nodes became Ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn bare_pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([("bench".to_string(), "sched".to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("registry.local/bench:v1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

async fn create_pods(client: &Client, prefix: &str, n: usize) -> anyhow::Result<()> {
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some(format!("bench-{prefix}")),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = ns.create(&PostParams::default(), &namespace).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &format!("bench-{prefix}"));
    let errors = Arc::new(AtomicUsize::new(0));
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let api = api.clone();
            let errors = errors.clone();
            async move {
                if api
                    .create(&PostParams::default(), &bare_pod(&format!("{prefix}-{i}")))
                    .await
                    .is_err()
                {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .await;
    anyhow::ensure!(
        errors.load(Ordering::SeqCst) == 0,
        "{} pod creates failed",
        errors.load(Ordering::SeqCst)
    );
    Ok(())
}

/// Time until `n` pods in `ns` are bound, and when the first bind was seen, counted from a
/// watch (one decode per change on the server, shared with every other watcher) so that
/// measuring adds little load.
async fn wait_bound(
    client: &Client,
    ns: &str,
    n: usize,
    since: Instant,
) -> anyhow::Result<(Duration, Duration)> {
    use kube::runtime::watcher;
    // The hollow kubelet's light view of a pod: parsing whole Pods for 20,000 events in the
    // process that runs the scheduler would take CPU from the scheduler being measured.
    let api: Api<spindle_hollow::PodView> = Api::namespaced(client.clone(), ns);
    let mut bound = std::collections::HashSet::new();
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let deadline = since + Duration::from_secs(600);
    let mut first = None;
    while bound.len() < n {
        let ev = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {n} pods bound", bound.len()))?;
        let pods: Vec<spindle_hollow::PodView> = match ev {
            Some(Ok(watcher::Event::Apply(p))) | Some(Ok(watcher::Event::InitApply(p))) => vec![p],
            Some(Ok(_)) => vec![],
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("watch ended"),
        };
        for p in pods {
            if p.0
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
            {
                bound.insert(p.0.metadata.name.unwrap_or_default());
                first.get_or_insert_with(|| since.elapsed());
            }
        }
    }
    Ok((since.elapsed(), first.unwrap_or_default()))
}

async fn scheduler_bench(nodes: usize, pods: usize) -> anyhow::Result<()> {
    println!("== Scheduler throughput: {pods} pods onto {nodes} hollow nodes ==");
    let s = start_server(&["--disable-scheduler"]).await?;
    let _h = hollow(&s, nodes)?;
    let took = wait_nodes_ready(&s.client, nodes).await?;
    println!(
        "{nodes} hollow nodes Ready after {:.1} s",
        took.as_secs_f64()
    );

    // Baseline: bind directly, round-robin, same concurrency, no decisions.
    create_pods(&s.client, "base", pods).await?;
    let t = Instant::now();
    let failures = Arc::new(AtomicUsize::new(0));
    futures::stream::iter(0..pods)
        .for_each_concurrent(128, |i| {
            let client = s.client.clone();
            let failures = failures.clone();
            async move {
                let b = Binding {
                    metadata: ObjectMeta {
                        name: Some(format!("base-{i}")),
                        ..Default::default()
                    },
                    target: ObjectReference {
                        kind: Some("Node".into()),
                        name: Some(format!("hollow-{}", i % nodes)),
                        ..Default::default()
                    },
                };
                let body = serde_json::to_vec(&b).unwrap_or_default();
                let req = http_binding(&format!("base-{i}"), body);
                if client.request_text(req).await.is_err() {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .await;
    let base = pods as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(
        failures.load(Ordering::SeqCst) == 0,
        "{} baseline bindings failed",
        failures.load(Ordering::SeqCst)
    );
    println!(
        "{:<48} {:>8.0} pods/s  1.00x",
        "direct round-robin binding (baseline)", base
    );

    create_pods(&s.client, "sched", pods).await?;
    // What a client pays to list every pod (typed, in pages as the scheduler does): the
    // floor of the scheduler's start-up.
    let t = Instant::now();
    let all: Api<Pod> = Api::all(s.client.clone());
    let (mut listed, mut cont) = (0usize, None::<String>);
    loop {
        let mut lp = ListParams::default().limit(5000);
        if let Some(c) = &cont {
            lp = lp.continue_token(c);
        }
        let page = all.list(&lp).await?;
        listed += page.items.len();
        cont = page.metadata.continue_.filter(|c| !c.is_empty());
        if cont.is_none() {
            break;
        }
    }
    println!(
        "{:<48} {:>8.1} s",
        format!("list of all {listed} pods (typed, pages of 5000)"),
        t.elapsed().as_secs_f64()
    );
    // The same, untyped: the server's and the transport's share.
    let t = Instant::now();
    let (mut bytes, mut cont) = (0usize, None::<String>);
    loop {
        let mut uri = "/api/v1/pods?limit=5000".to_string();
        if let Some(c) = &cont {
            uri.push_str(&format!("&continue={c}"));
        }
        let req = http::Request::get(uri).body(Vec::new())?;
        let text = s.client.request_text(req).await?;
        bytes += text.len();
        let v: serde_json::Value = serde_json::from_str(&text)?;
        cont = v["metadata"]["continue"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        if cont.is_none() {
            break;
        }
    }
    println!(
        "{:<48} {:>8.1} s  ({} MiB)",
        "list of all pods (untyped JSON)",
        t.elapsed().as_secs_f64(),
        bytes >> 20
    );
    let client = s.client.clone();
    let t = Instant::now();
    let sched = tokio::spawn(spindle_scheduler::run(
        client,
        spindle_scheduler::SchedulerOptions::default(),
    ));
    let (took, first) = wait_bound(&s.client, "bench-sched", pods, t).await?;
    sched.abort();
    let rate = pods as f64 / took.as_secs_f64();
    // Like scheduler_perf's SchedulingThroughput: pods bound per second once scheduling
    // runs, i.e. without the scheduler's start-up (initial list of every pod and node).
    let steady = (pods - 1) as f64 / (took - first).as_secs_f64().max(1e-3);
    println!(
        "{:<48} {:>8.1} s  (initial sync: list of {} pods and {nodes} nodes)",
        "scheduler start -> first bind",
        first.as_secs_f64(),
        2 * pods
    );
    println!(
        "{:<48} {:>8.0} pods/s  {:.2}x",
        "spindle scheduler, first to last bind",
        steady,
        steady / base
    );
    println!(
        "{:<48} {:>8.0} pods/s  {:.2}x   (target >= 2000 pods/s: {})",
        "spindle scheduler, start to last bind",
        rate,
        rate / base,
        if rate >= 2000.0 { "MET" } else { "NOT MET" }
    );
    println!("server RSS: {:.0} MiB", rss_mib(s.proc.0.id()));
    Ok(())
}

fn http_binding(pod: &str, body: Vec<u8>) -> http::Request<Vec<u8>> {
    http::Request::post(format!("/api/v1/namespaces/bench-base/pods/{pod}/binding"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_default()
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("registry.local/app:v1".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Running pods, read from the Deployments' status (a handful of objects) rather than by
/// listing tens of thousands of pods while the server is being measured.
async fn running(client: &Client) -> anyhow::Result<usize> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|d| d.status.as_ref()?.available_replicas)
        .map(|n| n.max(0) as usize)
        .sum())
}

async fn scale_bench(nodes: usize, total: usize) -> anyhow::Result<(f64, f64)> {
    let s = start_server(&[]).await?;
    let _h = hollow(&s, nodes)?;
    wait_nodes_ready(&s.client, nodes).await?;
    let api: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let per = 1000usize.min(total);
    let t = Instant::now();
    for i in 0..total.div_ceil(per) {
        let n = per.min(total - i * per) as i32;
        api.create(
            &PostParams::default(),
            &deployment(&format!("scale-{i}"), n),
        )
        .await?;
    }
    let mut peak = 0.0f64;
    loop {
        peak = peak.max(rss_mib(s.proc.0.id()));
        let r = running(&s.client).await?;
        if r >= total {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(1200),
            "only {r}/{total} pods running after 20 min"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mib(s.proc.0.id()).max(peak);
    Ok((secs, rss))
}

fn main() -> anyhow::Result<()> {
    common::announce("cluster");
    let nodes = size("BENCH_NODES", 1000, 3);
    let pods = size("BENCH_PODS", 10_000, 30);
    let scales: Vec<usize> = size(
        "BENCH_SCALE",
        "7500,15000,30000".to_owned(),
        "20,40".to_owned(),
    )
    .split(',')
    .filter_map(|s| s.trim().parse().ok())
    .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        scheduler_bench(nodes, pods).await?;
        println!("\n== Deployments at scale on {nodes} hollow nodes (1000 replicas per Deployment) ==");
        let mut prev: Option<(usize, f64, f64)> = None;
        for total in scales {
            let (secs, rss) = scale_bench(nodes, total).await?;
            let growth = prev.map(|(pt, ps, pr)| format!("  x{:.2} pods -> time x{:.2}, RSS x{:.2}", total as f64 / pt as f64, secs / ps, rss / pr)).unwrap_or_default();
            println!("{total:>6} pods: apply -> all Running {secs:>7.1} s ({:>6.0} pods/s), server RSS {rss:>6.0} MiB{growth}", total as f64 / secs);
            prev = Some((total, secs, rss));
        }
        anyhow::Ok(())
    })
}
