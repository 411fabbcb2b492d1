//! Job throughput benchmark (`cargo bench --bench jobs`): real processes on this machine,
//! a real OCI registry (Debian's docker-registry) and the test guest `tests/guests/testbox`.
//!
//! An Indexed Job of BENCH_JOB_COMPLETIONS (default 10,000) completions, parallelism
//! BENCH_JOB_PARALLELISM (default 100), each pod the testbox p1 module running `exit 0`,
//! is run twice, each time on a fresh `spindle server --disable-agent` with one node
//! joined over HTTPS:
//! - the floor: a `spindle hollow-nodes` node (`hollow-0`, `--pod-run-for 0s`) that
//!   reports every pod Succeeded as soon as it is bound: what the control plane alone
//!   (Job controller, scheduler, API server, the node's status writes) can do;
//! - the measured run: a standalone `spindle agent` (node `bench`) that really runs each
//!   pod's module, image pulled and compiled by one warm-up pod first.
//!
//! Figures: completions/s (completions over the time from the Job's create call to the
//! watch seeing its Complete condition), and the per-pod time from the pod's first
//! appearance in a watch to the watch seeing it Succeeded (p50, p99), and the CPU time the
//! server and the node process spent per completion. The targets of
//! issue 13: >= 1,000 completions/s on the real agent, and its run within 1.5x of the
//! floor's time. Under `cargo test` (no `--bench`) sizes are small: see `common::size`.

mod common;
use common::{
    announce, cpu_secs, create_namespace, size, start_registry, start_server, testbox,
    wait_node_ready, Net, Proc, Server,
};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

const TARGET_COMPLETIONS_PER_SEC: f64 = 1000.0;
const TARGET_RATIO: f64 = 1.5;

/// Where a run's pods go.
#[derive(Clone, Copy, PartialEq)]
enum Node {
    Hollow,
    Agent,
}

impl Node {
    fn name(self) -> &'static str {
        match self {
            Node::Hollow => "hollow-0",
            Node::Agent => "bench",
        }
    }
}

fn job(name: &str, image: &str, node: &str, completions: i32, parallelism: i32) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(completions),
            parallelism: Some(parallelism),
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    node_selector: Some(BTreeMap::from([(
                        "kubernetes.io/hostname".to_string(),
                        node.to_string(),
                    )])),
                    restart_policy: Some("Never".into()),
                    termination_grace_period_seconds: Some(1),
                    containers: vec![Container {
                        name: "main".into(),
                        image: Some(image.into()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        args: Some(vec!["exit".into(), "0".into()]),
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

fn finished(j: &Job) -> Option<&str> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// Per-pod times: first seen by the watch -> seen Succeeded.
#[derive(Default)]
struct PodTimes {
    seen: HashMap<String, Instant>,
    /// Counted once: later events of a pod (its deletion) are not new runs.
    counted: HashSet<String>,
    done: Vec<Duration>,
}

impl PodTimes {
    fn on(&mut self, at: Instant, p: &Pod) {
        let Some(name) = p.metadata.name.clone() else {
            return;
        };
        let first = *self.seen.entry(name.clone()).or_insert(at);
        let succeeded = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded");
        if succeeded && self.counted.insert(name) {
            self.done.push(at.saturating_duration_since(first));
        }
    }

    fn pct(&self, p: f64) -> f64 {
        let mut v = self.done.clone();
        v.sort();
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize - 1;
        v[i.min(v.len() - 1)].as_secs_f64() * 1e3
    }
}

struct RunResult {
    elapsed: Duration,
    completions: usize,
    pods: PodTimes,
    /// CPU seconds the server and the node process used during the run.
    server_cpu: f64,
    node_cpu: f64,
    /// API writes during the run (store revisions taken).
    writes: u64,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.completions as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU milliseconds per completion.
    fn per_completion(&self, cpu: f64) -> f64 {
        cpu * 1e3 / self.completions as f64
    }
}

/// The store's revision: every write to any object takes the next one (as etcd's), so
/// the difference over a run counts the API writes it took.
async fn revision(client: &Client) -> anyhow::Result<u64> {
    let list = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await?;
    Ok(list
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("0")
        .parse()?)
}

/// Create the Job and wait for its Complete condition, timing pods on the way.
async fn run_job(client: &Client, ns: &str, j: Job, n: usize) -> anyhow::Result<RunResult> {
    let name = j.metadata.name.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // Both watches are open (their initial lists done) before the create.
    let mut job_events = watcher(jobs.clone(), watcher::Config::default()).boxed();
    let mut pod_events = watcher(pods, watcher::Config::default()).boxed();
    while !matches!(
        job_events.next().await,
        Some(Ok(watcher::Event::InitDone)) | None
    ) {}
    while !matches!(
        pod_events.next().await,
        Some(Ok(watcher::Event::InitDone)) | None
    ) {}
    let mut times = PodTimes::default();
    let limit = Duration::from_secs(120 + n as u64 / 10);
    let t = Instant::now();
    jobs.create(&PostParams::default(), &j).await?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                anyhow::bail!("Job {name} not finished after {limit:?}: {} pods succeeded", times.done.len());
            }
            ev = pod_events.next() => match ev {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => times.on(Instant::now(), &p),
                Some(Ok(_)) => {}
                Some(Err(e)) => eprintln!("pod watch error (retrying): {e}"),
                None => anyhow::bail!("pod watch ended"),
            },
            ev = job_events.next() => match ev {
                Some(Ok(watcher::Event::Apply(jb) | watcher::Event::InitApply(jb))) => {
                    match finished(&jb) {
                        Some("Complete") => {
                            let elapsed = t.elapsed();
                            return Ok(RunResult { elapsed, completions: n, pods: times, server_cpu: 0.0, node_cpu: 0.0, writes: 0 });
                        }
                        Some(other) => anyhow::bail!("Job {name} ended {other}: {:?}", jb.status),
                        None => {}
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => eprintln!("job watch error (retrying): {e}"),
                None => anyhow::bail!("job watch ended"),
            },
        }
    }
}

/// One fresh control plane with one node of `kind`; the Job run on it.
async fn measure(
    work: &Path,
    kind: Node,
    image: &str,
    n: usize,
    parallelism: usize,
) -> anyhow::Result<RunResult> {
    let dir = work.join(match kind {
        Node::Hollow => "hollow",
        Node::Agent => "agent",
    });
    std::fs::create_dir_all(&dir)?;
    let net = Net::fresh();
    let mut args = net.server_args();
    args.push("--disable-agent".into());
    let mut s: Server = start_server(&dir, "server", &args).await?;
    let mut node = match kind {
        Node::Hollow => {
            let mut cmd = Command::new(common::bin());
            cmd.args(["hollow-nodes", "--server", &s.url, "--token", &s.token])
                .args(["--count", "1", "--prefix", "hollow", "--pods"])
                .arg((parallelism + 10).to_string())
                .args(["--pod-run-for", "0s", "--pod-exit-code", "0"]);
            Proc::spawn(cmd, &dir.join("hollow.log"), "spindle hollow-nodes")?
        }
        Node::Agent => {
            let mut cmd = Command::new(common::bin());
            cmd.args(["agent", "--server", &s.url, "--node-name", "bench"])
                .args(["--node-ip", "127.0.0.1", "--agent-port", "0"])
                .args(["--max-pods", "20000", "--data-dir"])
                .arg(dir.join("agent-data"))
                .args(net.agent_args())
                .env("SPINDLE_TOKEN", &s.token);
            Proc::spawn(cmd, &dir.join("agent.log"), "spindle agent")?
        }
    };
    wait_node_ready(&s.client, kind.name()).await?;
    create_namespace(&s.client, "jobs").await?;
    if kind == Node::Agent {
        // Warm-up: pull and compile the module once, outside the measurement.
        let warm = job("warm", image, kind.name(), 1, 1);
        let w = run_job(&s.client, "jobs", warm, 1).await?;
        println!(
            "warm-up (pull + compile + run): {:.0} ms",
            w.elapsed.as_secs_f64() * 1e3
        );
    }
    let cpu = |s: &Server, node: &Proc| (cpu_secs(s.proc.pid()), cpu_secs(node.pid()));
    let rv_before = revision(&s.client).await?;
    let before = cpu(&s, &node);
    let mut r = run_job(
        &s.client,
        "jobs",
        job(
            "throughput",
            image,
            kind.name(),
            n as i32,
            parallelism as i32,
        ),
        n,
    )
    .await?;
    let after = cpu(&s, &node);
    (r.server_cpu, r.node_cpu) = (after.0 - before.0, after.1 - before.1);
    r.writes = revision(&s.client).await?.saturating_sub(rv_before);
    s.proc.ensure_alive("spindle server")?;
    node.ensure_alive(match kind {
        Node::Hollow => "spindle hollow-nodes",
        Node::Agent => "spindle agent",
    })?;
    Ok(r)
}

fn main() -> anyhow::Result<()> {
    announce("jobs");
    let n = size("BENCH_JOB_COMPLETIONS", 10_000, 50);
    let parallelism = size("BENCH_JOB_PARALLELISM", 100, 100);
    common::run_in_work(|work| async move {
        let reg = start_registry(&work)?;
        let p1 = testbox(&reg, "wasm32-wasip1", "p1")?;
        println!(
            "== Job throughput: Indexed Job, {n} completions, parallelism {parallelism}, p1 module `exit 0` =="
        );
        let floor = measure(&work, Node::Hollow, &p1, n, parallelism).await?;
        let wasm = measure(&work, Node::Agent, &p1, n, parallelism).await?;
        println!(
            "{:<44} {:>10} {:>14} {:>11} {:>11} {:>13} {:>11} {:>8}",
            "",
            "time s",
            "completions/s",
            "pod p50 ms",
            "pod p99 ms",
            "server CPU ms",
            "node CPU ms",
            "writes"
        );
        for (what, r) in [
            ("hollow node, pods finish at once (floor)", &floor),
            ("real agent, Wasm p1 module", &wasm),
        ] {
            println!(
                "{what:<44} {:>10.2} {:>14.1} {:>11.1} {:>11.1} {:>13.3} {:>11.3} {:>8.2}",
                r.elapsed.as_secs_f64(),
                r.rate(),
                r.pods.pct(50.0),
                r.pods.pct(99.0),
                r.per_completion(r.server_cpu),
                r.per_completion(r.node_cpu),
                r.writes as f64 / r.completions as f64,
            );
        }
        println!("(CPU and writes columns: per completion; CPU of all threads of the process, on a shared machine a better comparison of builds than time; writes: API writes, all objects, store revisions taken)");
        let ratio = wasm.elapsed.as_secs_f64() / floor.elapsed.as_secs_f64();
        let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
        println!(
            "Wasm time / floor time: {ratio:.2}x (target <= {TARGET_RATIO}x: {})",
            verdict(ratio <= TARGET_RATIO)
        );
        println!(
            "Wasm completions/s: {:.1} (target >= {TARGET_COMPLETIONS_PER_SEC}: {})",
            wasm.rate(),
            verdict(wasm.rate() >= TARGET_COMPLETIONS_PER_SEC)
        );
        anyhow::Ok(())
    })
}
