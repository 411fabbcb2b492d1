//! DaemonSet rollout benchmark (`cargo bench --bench daemonsets`): a release
//! `spindle server --disable-agent` with BENCH_DS_NODES (default 1000) hollow nodes.
//!
//! 1. Baseline, in the same run on the same server: a Deployment of one replica per node
//!    (the ReplicaSet path to the same number of pods), rolling update maxUnavailable 10 %,
//!    maxSurge 0: time from create to every replica available, then from an image update
//!    to the rollout complete; its pods are then deleted and waited for.
//! 2. A DaemonSet over every node, rolling update maxUnavailable 10 % (maxSurge 0): time
//!    from create to every node's pod available, then from `set image` to the update
//!    complete as `kubectl rollout status` judges it (observedGeneration, desired, updated
//!    and available all at the node count).
//!
//! Figures: each phase's time, nodes/s, per-pod time from its first appearance in a watch
//! to the watch seeing it Ready (p50, p99), and the DaemonSet's time over the Deployment's.
//! Under `cargo test` (no `--bench`) the size is small: see `common::size`.

mod common;
use common::{announce, size, start_server, Proc};

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, Node, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use spindle_hollow::PodView;

const NS: &str = "default";

fn template(app: &str) -> (LabelSelector, PodTemplateSpec) {
    let labels = BTreeMap::from([("app".to_string(), app.to_string())]);
    (
        LabelSelector {
            match_labels: Some(labels.clone()),
            ..Default::default()
        },
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                termination_grace_period_seconds: Some(0),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("registry.local/app:v1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        },
    )
}

fn ten_percent() -> Option<IntOrString> {
    Some(IntOrString::String("10%".into()))
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    let (selector, template) = template(name);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector,
            template,
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: ten_percent(),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn daemonset(name: &str) -> DaemonSet {
    let (selector, template) = template(name);
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector,
            template,
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: ten_percent(),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn image_update() -> serde_json::Value {
    serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "registry.local/app:v2"}]}}}})
}

/// Per-pod times from a watch: first seen -> seen Ready, for the pods seen from `mark` on.
#[derive(Default)]
struct PodTimes {
    seen: HashMap<String, Instant>,
    ready: HashMap<String, Duration>,
}

type Shared = Arc<Mutex<PodTimes>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, PodTimes> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Watch the pods of app `app` in the background, recording their times into `times`.
async fn watch_pods(client: &Client, app: &str, times: Shared) -> tokio::task::JoinHandle<()> {
    let api: Api<PodView> = Api::namespaced(client.clone(), NS);
    let cfg = watcher::Config::default().labels(&format!("app={app}"));
    let mut events = watcher(api, cfg).boxed();
    // The watch is open (its initial list done) before anything is created.
    while !matches!(
        events.next().await,
        Some(Ok(watcher::Event::InitDone)) | None
    ) {}
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let Ok(watcher::Event::Apply(p)) = ev else {
                continue;
            };
            let at = Instant::now();
            let Some(name) = p.0.metadata.name.clone() else {
                continue;
            };
            let ready =
                p.0.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let mut t = lock(&times);
            let first = *t.seen.entry(name.clone()).or_insert(at);
            if ready {
                t.ready
                    .entry(name)
                    .or_insert(at.saturating_duration_since(first));
            }
        }
    })
}

/// p50 and p99 (ms) of the Ready times of the pods `names`.
fn percentiles(times: &Shared, names: &[String]) -> (f64, f64) {
    let t = lock(times);
    let mut v: Vec<Duration> = names
        .iter()
        .filter_map(|n| t.ready.get(n).copied())
        .collect();
    v.sort();
    let pct = |p: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize - 1;
        v[i.min(v.len() - 1)].as_secs_f64() * 1e3
    };
    (pct(50.0), pct(99.0))
}

/// Names seen so far (to split the pods of the first rollout from the update's).
fn seen_names(times: &Shared) -> Vec<String> {
    lock(times).seen.keys().cloned().collect()
}

async fn wait_nodes_ready(client: &Client, n: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let api: Api<Node> = Api::all(client.clone());
    loop {
        let ready = api
            .list(&ListParams::default())
            .await?
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
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Poll `done` every 50 ms (a status read of one object) until it holds; the time taken.
async fn until<F, Fut>(what: &str, t: Instant, mut done: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    while !done().await? {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(900),
            "{what} not done after 15 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(t.elapsed())
}

/// As `kubectl rollout status deployment` judges a Deployment done.
async fn deployment_done(api: &Api<Deployment>, name: &str, n: i32) -> anyhow::Result<bool> {
    let d = api.get(name).await?;
    let s = d.status.unwrap_or_default();
    Ok(s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(n)
        && s.replicas == Some(n)
        && s.available_replicas == Some(n))
}

/// As `kubectl rollout status daemonset` judges a DaemonSet done.
async fn daemonset_done(api: &Api<DaemonSet>, name: &str, n: i32) -> anyhow::Result<bool> {
    let ds = api.get(name).await?;
    let s = ds.status.unwrap_or_default();
    Ok(s.observed_generation >= ds.metadata.generation
        && s.desired_number_scheduled == n
        && s.updated_number_scheduled == Some(n)
        && s.number_available == Some(n))
}

/// One phase's figures.
struct Phase {
    took: Duration,
    p50: f64,
    p99: f64,
}

/// A workload's two phases: create -> all available, image update -> rollout complete.
struct Rollout {
    create: Phase,
    update: Phase,
}

async fn deployment_rollout(client: &Client, nodes: usize) -> anyhow::Result<Rollout> {
    let name = "base";
    let n = nodes as i32;
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let times: Shared = Default::default();
    let watch = watch_pods(client, name, times.clone()).await;
    let t = Instant::now();
    api.create(&PostParams::default(), &deployment(name, n))
        .await?;
    let took = until("Deployment create", t, || deployment_done(&api, name, n)).await?;
    let first = seen_names(&times);
    let (p50, p99) = percentiles(&times, &first);
    let create = Phase { took, p50, p99 };
    let t = Instant::now();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Strategic(&image_update()),
    )
    .await?;
    let took = until("Deployment update", t, || deployment_done(&api, name, n)).await?;
    let new: Vec<String> = seen_names(&times)
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    let (p50, p99) = percentiles(&times, &new);
    let update = Phase { took, p50, p99 };
    watch.abort();
    // Its pods go before the DaemonSet is measured, so their deletion does not overlap.
    api.delete(name, &DeleteParams::foreground()).await?;
    let pods: Api<PodView> = Api::namespaced(client.clone(), NS);
    let lp = ListParams::default()
        .labels(&format!("app={name}"))
        .limit(1);
    until("Deployment deletion", Instant::now(), || async {
        Ok(pods.list(&lp).await?.items.is_empty())
    })
    .await?;
    Ok(Rollout { create, update })
}

async fn daemonset_rollout(client: &Client, nodes: usize) -> anyhow::Result<Rollout> {
    let name = "bench";
    let n = nodes as i32;
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), NS);
    let times: Shared = Default::default();
    let watch = watch_pods(client, name, times.clone()).await;
    let t = Instant::now();
    api.create(&PostParams::default(), &daemonset(name)).await?;
    let took = until("DaemonSet create", t, || daemonset_done(&api, name, n)).await?;
    let first = seen_names(&times);
    let (p50, p99) = percentiles(&times, &first);
    let create = Phase { took, p50, p99 };
    let t = Instant::now();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Strategic(&image_update()),
    )
    .await?;
    let took = until("DaemonSet update", t, || daemonset_done(&api, name, n)).await?;
    let new: Vec<String> = seen_names(&times)
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    let (p50, p99) = percentiles(&times, &new);
    let update = Phase { took, p50, p99 };
    watch.abort();
    Ok(Rollout { create, update })
}

fn main() -> anyhow::Result<()> {
    announce("daemonsets");
    let nodes = size("BENCH_DS_NODES", 1000usize, 5);
    let work = common::Work::new()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut s = start_server(work.path(), "server", &["--disable-agent".to_string()]).await?;
        let mut cmd = Command::new(common::bin());
        cmd.args(["hollow-nodes", "--server", &s.url, "--token", &s.token])
            .args(["--count", &nodes.to_string(), "--prefix", "hollow"])
            .args(["--pods", "110"]);
        let mut hollow = Proc::spawn(cmd, &work.path().join("hollow.log"), "spindle hollow-nodes")?;
        let ready = wait_nodes_ready(&s.client, nodes).await?;
        println!(
            "== DaemonSet rollout over {nodes} hollow nodes (maxUnavailable 10%, maxSurge 0) =="
        );
        println!(
            "{nodes} hollow nodes Ready after {:.1} s",
            ready.as_secs_f64()
        );
        let base = deployment_rollout(&s.client, nodes).await?;
        let ds = daemonset_rollout(&s.client, nodes).await?;
        s.proc.ensure_alive("spindle server")?;
        hollow.ensure_alive("spindle hollow-nodes")?;
        println!(
            "{:<52} {:>8} {:>9} {:>11} {:>11} {:>7}",
            "", "time s", "nodes/s", "pod p50 ms", "pod p99 ms", "ratio"
        );
        let rows = [
            (
                "Deployment, 1 replica/node: create -> available",
                &base.create,
                &base.create,
            ),
            (
                "DaemonSet: apply -> all pods available",
                &ds.create,
                &base.create,
            ),
            (
                "Deployment: image update -> rollout complete",
                &base.update,
                &base.update,
            ),
            (
                "DaemonSet: image update -> rollout complete",
                &ds.update,
                &base.update,
            ),
        ];
        for (what, p, b) in rows {
            let secs = p.took.as_secs_f64();
            println!(
                "{what:<52} {secs:>8.2} {:>9.1} {:>11.1} {:>11.1} {:>6.2}x",
                nodes as f64 / secs,
                p.p50,
                p.p99,
                secs / b.took.as_secs_f64()
            );
        }
        println!(
            "(ratio: the DaemonSet's time over the Deployment's for the same pods, same server)"
        );
        anyhow::Ok(())
    })
}
