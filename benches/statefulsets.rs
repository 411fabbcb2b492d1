//! StatefulSet storage benchmark (`cargo bench --bench statefulsets`): real processes on
//! this machine, a real OCI registry (Debian's docker-registry) and the test guest
//! `tests/guests/testbox`.
//!
//! One fresh `spindle server --disable-agent` with one standalone `spindle agent` (node
//! `bench`) joined over HTTPS. A StatefulSet of BENCH_STS_REPLICAS (default 100) pods,
//! podManagementPolicy Parallel, each pod the testbox p1 module running `sleep 0` (it
//! runs until stopped; Ready as soon as it runs, no probe), is created in two variants:
//! - `plain`: no claims;
//! - `claims`: a volumeClaimTemplate on the default class (`local-path`,
//!   WaitForFirstConsumer), mounted at /data: each pod's claim is placed on the node by
//!   the scheduler, provisioned by the control plane's local-path provisioner, bound by the PV binder, then the pod is
//!   bound and its directory mounted.
//!
//! Both run BENCH_STS_ROUNDS times (default 3), alternating which goes first, on the
//! same cluster, each run cleaned up (pods, claims, volumes gone) before the next, so
//! the machine's noise falls on both alike.
//!
//! Figures, per run and overall: the time from the create call to the watch seeing every
//! pod Ready; the per-pod time from its first appearance in a watch to the watch seeing
//! it Ready (p50, p99); the CPU time the server and the agent spent per pod. The target
//! of issue 14: storage adds <= 2 ms per pod at p50 (claims p50 - plain p50, all runs
//! pooled). Under `cargo test` (no `--bench`) sizes are small: see `common::size`.

mod common;
use common::{
    announce, cpu_secs, create_namespace, size, start_registry, start_server, testbox,
    wait_node_ready, Net, Proc, Server,
};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, PodSpec,
    PodTemplateSpec, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

const NS: &str = "sts";
const NODE: &str = "bench";
/// Storage may add at most this much to a pod's start at p50 (issue 14).
const TARGET_ADDED_MS: f64 = 2.0;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    Claims,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Claims => "claims",
        }
    }
}

fn statefulset(name: &str, image: &str, n: i32, variant: Variant) -> StatefulSet {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    let claims = variant == Variant::Claims;
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            // No class: the default one (local-path) is applied at admission.
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity("1Mi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    };
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(n),
            service_name: Some(name.into()),
            pod_management_policy: Some("Parallel".into()),
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
                    termination_grace_period_seconds: Some(1),
                    containers: vec![Container {
                        name: "main".into(),
                        image: Some(image.into()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        args: Some(vec!["sleep".into(), "0".into()]),
                        volume_mounts: claims.then(|| {
                            vec![VolumeMount {
                                name: "data".into(),
                                mount_path: "/data".into(),
                                ..Default::default()
                            }]
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims.then(|| vec![claim]),
            ..Default::default()
        }),
        status: None,
    }
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize - 1;
    v[i.min(v.len() - 1)].as_secs_f64() * 1e3
}

/// One run's figures.
struct Run {
    variant: Variant,
    round: usize,
    elapsed: Duration,
    /// Per pod: first seen by the watch -> seen Ready.
    pods: Vec<Duration>,
    server_cpu: f64,
    agent_cpu: f64,
}

/// Create the StatefulSet and wait for every pod Ready, timing pods on the way.
async fn run_set(
    s: &Server,
    agent: &Proc,
    name: &str,
    image: &str,
    n: usize,
    variant: Variant,
    round: usize,
) -> anyhow::Result<Run> {
    let sets: Api<StatefulSet> = Api::namespaced(s.client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), NS);
    let cfg = watcher::Config::default().labels(&format!("app={name}"));
    let mut events = watcher(pods, cfg).boxed();
    // The watch is open (its initial list done) before the create.
    while !matches!(
        events.next().await,
        Some(Ok(watcher::Event::InitDone)) | None
    ) {}
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut done: HashMap<String, Duration> = HashMap::new();
    let limit = Duration::from_secs(120 + n as u64);
    let cpu_before = (cpu_secs(s.proc.pid()), cpu_secs(agent.pid()));
    let t = Instant::now();
    sets.create(
        &PostParams::default(),
        &statefulset(name, image, n as i32, variant),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + limit;
    while done.len() < n {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                anyhow::bail!("StatefulSet {name}: {} of {n} pods Ready after {limit:?}", done.len());
            }
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    let at = Instant::now();
                    let Some(pod) = p.metadata.name.clone() else { continue };
                    let first = *seen.entry(pod.clone()).or_insert(at);
                    if ready(&p) {
                        done.entry(pod).or_insert(at.saturating_duration_since(first));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => eprintln!("pod watch error (retrying): {e}"),
                None => anyhow::bail!("pod watch ended"),
            },
        }
    }
    let elapsed = t.elapsed();
    // Where the time went before a pod existed: its creation, not its start.
    let appeared = seen.values().map(|at| at.saturating_duration_since(t));
    let (first, last) = appeared.fold((Duration::MAX, Duration::ZERO), |(lo, hi), d| {
        (lo.min(d), hi.max(d))
    });
    println!(
        "  {name}: pods first seen {:.1} .. {:.1} ms after the create",
        first.as_secs_f64() * 1e3,
        last.as_secs_f64() * 1e3
    );
    let cpu_after = (cpu_secs(s.proc.pid()), cpu_secs(agent.pid()));
    Ok(Run {
        variant,
        round,
        elapsed,
        pods: done.into_values().collect(),
        server_cpu: cpu_after.0 - cpu_before.0,
        agent_cpu: cpu_after.1 - cpu_before.1,
    })
}

/// Poll `done` every 100 ms until it holds (at most 5 min).
async fn until<F, Fut>(what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let t = Instant::now();
    while !done().await? {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(300),
            "{what} not done after 5 min"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Delete the set, its pods and its claims, and wait until their volumes are gone too,
/// so the next run starts from the same state.
async fn clean_up(client: &Client, name: &str) -> anyhow::Result<()> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("app={name}"));
    sets.delete(name, &DeleteParams::background()).await?;
    pods.delete_collection(&DeleteParams::default(), &lp)
        .await?;
    until(&format!("{name}'s pods to go"), || async {
        Ok(pods.list(&lp).await?.items.is_empty())
    })
    .await?;
    claims
        .delete_collection(&DeleteParams::default(), &lp)
        .await?;
    until(&format!("{name}'s claims and volumes to go"), || async {
        Ok(claims.list(&lp).await?.items.is_empty()
            && volumes.list(&ListParams::default()).await?.items.is_empty())
    })
    .await
}

fn row(what: &str, n: usize, elapsed: Duration, pods: &[Duration], server: f64, agent: f64) {
    println!(
        "{what:<22} {:>9.2} {:>11.1} {:>11.1} {:>15.3} {:>14.3}",
        elapsed.as_secs_f64(),
        pct(pods, 50.0),
        pct(pods, 99.0),
        server * 1e3 / n as f64,
        agent * 1e3 / n as f64,
    );
}

async fn bench(work: &Path, image: &str, n: usize, rounds: usize) -> anyhow::Result<()> {
    let net = Net::fresh();
    let mut args = net.server_args();
    args.push("--disable-agent".into());
    let mut s = start_server(work, "server", &args).await?;
    let mut cmd = Command::new(common::bin());
    cmd.args(["agent", "--server", &s.url, "--node-name", NODE])
        .args(["--node-ip", "127.0.0.1", "--agent-port", "0"])
        .args(["--max-pods", "1000", "--data-dir"])
        .arg(work.join("agent-data"))
        .args(net.agent_args())
        .env("SPINDLE_TOKEN", &s.token);
    let mut agent = Proc::spawn(cmd, &work.join("agent.log"), "spindle agent")?;
    wait_node_ready(&s.client, NODE).await?;
    create_namespace(&s.client, NS).await?;

    // Warm-up: pull and compile the module, and provision one claim, outside the
    // measurement.
    let t = Instant::now();
    run_set(&s, &agent, "warm", image, 1, Variant::Claims, 0).await?;
    println!(
        "warm-up (pull + compile + one claimed pod): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    clean_up(&s.client, "warm").await?;

    let mut runs = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Variant::Plain, Variant::Claims]
        } else {
            [Variant::Claims, Variant::Plain]
        };
        for variant in order {
            let name = format!("{}-{round}", variant.label());
            let r = run_set(&s, &agent, &name, image, n, variant, round).await?;
            s.proc.ensure_alive("spindle server")?;
            agent.ensure_alive("spindle agent")?;
            clean_up(&s.client, &name).await?;
            runs.push(r);
        }
    }

    println!(
        "{:<22} {:>9} {:>11} {:>11} {:>15} {:>14}",
        "", "time s", "pod p50 ms", "pod p99 ms", "server CPU ms", "agent CPU ms"
    );
    for r in &runs {
        row(
            &format!("round {} {}", r.round, r.variant.label()),
            n,
            r.elapsed,
            &r.pods,
            r.server_cpu,
            r.agent_cpu,
        );
    }
    let mut p50 = HashMap::new();
    for variant in [Variant::Plain, Variant::Claims] {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.variant == variant).collect();
        let pods: Vec<Duration> = mine.iter().flat_map(|r| r.pods.iter().copied()).collect();
        let total = n * mine.len();
        let elapsed = mine.iter().map(|r| r.elapsed).sum::<Duration>() / mine.len() as u32;
        row(
            &format!("all rounds {}", variant.label()),
            total,
            elapsed,
            &pods,
            mine.iter().map(|r| r.server_cpu).sum(),
            mine.iter().map(|r| r.agent_cpu).sum(),
        );
        p50.insert(variant.label(), pct(&pods, 50.0));
    }
    println!("(time: create -> every pod Ready, the mean over rounds for `all rounds`; pod: first seen -> Ready; CPU columns: per pod, all threads of the process)");
    let added = p50["claims"] - p50["plain"];
    let verdict = if added <= TARGET_ADDED_MS {
        "MET"
    } else {
        "NOT MET"
    };
    println!(
        "storage adds {added:.1} ms per pod at p50 (claims {:.1} - plain {:.1}; target <= {TARGET_ADDED_MS} ms: {verdict})",
        p50["claims"], p50["plain"]
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    announce("statefulsets");
    let n = size("BENCH_STS_REPLICAS", 100, 5);
    let rounds = size("BENCH_STS_ROUNDS", 3, 1);
    common::run_in_work(|work| async move {
        let reg = start_registry(&work)?;
        let p1 = testbox(&reg, "wasm32-wasip1", "p1")?;
        println!(
            "== StatefulSet of {n}, Parallel, on one real agent, p1 module `sleep 0`: local-path claims vs none, {rounds} round(s) =="
        );
        bench(&work, &p1, n, rounds).await
    })
}
