//! `spindle-hollow` owns hollow nodes: simulated kubelets that register nodes, keep their
//! Leases fresh and play the pod lifecycle without running anything (like KWOK).
//!
//! One process plays many nodes cheaply: each node is one small tokio task (its Lease and
//! status heartbeats, spread over the interval); all pods of all nodes come through one
//! watch and are written by one bounded pool of workers; all nodes share one HTTP client.
//! Stopping the process just stops the heartbeats; the control plane then marks the nodes
//! NotReady as it would for real kubelets. Nodes are not deleted on exit.
//!
//! Joining the cluster (URL and k3s-style token), each node's own client certificate
//! (asked for with the token, as a kubelet's TLS bootstrap) and the Lease and
//! node-condition heartbeat are spindle-meta's, shared with the real node agent. Each
//! node writes its Node, Lease and pods as itself (`system:node:<name>`); the watches
//! shared by all nodes run as the first one.

pub mod finish;
mod ipam;
mod node;
mod pods;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::Semaphore;

/// The hollow kubelet's light view of a Pod (also what the cluster benchmark watches).
pub use view::PodView;

/// What `spindle hollow-nodes` was asked for.
#[derive(Clone, Debug)]
pub struct HollowOptions {
    /// API server URL, e.g. https://127.0.0.1:6443
    pub server: String,
    /// Join token (K10<ca-hash>::server:<secret>, as written to <data-dir>/server/token).
    pub token: String,
    pub count: usize,
    pub prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    /// How pods without the `hollow.spindle.dev/` annotations finish, if at all.
    pub finish: finish::FinishDefaults,
}

const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Node registrations in flight at once (each is 2–4 requests).
const REGISTER_CONCURRENCY: usize = 32;

#[derive(Default)]
pub(crate) struct Stats {
    nodes_registered: AtomicUsize,
    lease_renewals: AtomicU64,
    lease_errors: AtomicU64,
    status_updates: AtomicU64,
    status_errors: AtomicU64,
    pods_started: AtomicU64,
    pods_deleted: AtomicU64,
    pod_errors: AtomicU64,
}

/// State shared by all tasks of the process.
pub(crate) struct Hollow {
    /// The first node's client, for the watches all nodes share.
    client: kube::Client,
    /// The join token's client configuration and client, to ask for each node's
    /// certificate (one connection for all of them).
    bootstrap: kube::Config,
    token_client: kube::Client,
    opts: HollowOptions,
    /// One boot per process start, as a rebooted machine would report.
    boot_id: String,
    started: tokio::time::Instant,
    nodes: Vec<node::NodeState>,
    by_name: HashMap<String, usize>,
    register_gate: Semaphore,
    stats: Stats,
}

fn random_boot_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Run the hollow nodes until the process is told to stop (SIGINT/SIGTERM).
pub async fn run(opts: HollowOptions) -> Result<()> {
    if opts.count == 0 {
        bail!("--count must be at least 1");
    }
    if opts.prefix.is_empty() {
        bail!("--prefix must not be empty");
    }
    let nodes = (0..opts.count)
        .map(|i| node::NodeIdentity::new(&opts.prefix, i, opts.pods).map(node::NodeState::new))
        .collect::<Result<Vec<_>>>()?;
    let bootstrap = spindle_meta::token::bootstrap_config(&opts.server, &opts.token).await?;
    let token_client =
        kube::Client::try_from(bootstrap.clone()).context("building the bootstrap client")?;
    let first = sign_up(&bootstrap, &token_client, &nodes[0].id.name).await?;
    let _ = nodes[0].client.set(first.clone());
    let by_name = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.name.clone(), i))
        .collect();
    tracing::info!(count = opts.count, prefix = %opts.prefix, server = %opts.server, "starting hollow nodes");
    let h = Arc::new(Hollow {
        client: first,
        bootstrap,
        token_client,
        opts,
        boot_id: random_boot_id(),
        started: tokio::time::Instant::now(),
        nodes,
        by_name,
        register_gate: Semaphore::new(REGISTER_CONCURRENCY),
        stats: Stats::default(),
    });
    let pods = pods::PodSim::new(h.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..h.nodes.len() {
        tasks.spawn(node::heartbeat(h.clone(), i));
    }
    tasks.spawn(node::watch_nodes(h.clone()));
    tasks.spawn(pods.clone().run());
    tasks.spawn(summary(h.clone(), pods));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
        // Every task loops forever; one ending means a bug, so say so rather than
        // carry on half-working.
        Some(r) = tasks.join_next() => bail!("a hollow-node task ended unexpectedly: {r:?}"),
    }
    tracing::info!("stopping; the nodes will go NotReady once their leases expire");
    tasks.abort_all();
    Ok(())
}

/// How long a node waits for its certificate before registration is tried again.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(120);

/// A client certificate for node `name`, asked for with the join token.
async fn sign_up(
    bootstrap: &kube::Config,
    token_client: &kube::Client,
    name: &str,
) -> Result<kube::Client> {
    use spindle_meta::node_certificate;
    let issued = node_certificate::request(token_client.clone(), name, ISSUE_TIMEOUT)
        .await
        .with_context(|| format!("getting node {name}'s client certificate"))?;
    Ok(node_certificate::client(bootstrap, &issued)?)
}

impl Hollow {
    pub(crate) async fn sign_up(&self, name: &str) -> Result<kube::Client> {
        sign_up(&self.bootstrap, &self.token_client, name).await
    }

    /// Node `i`'s own client (the shared one until it has registered).
    pub(crate) fn node_client(&self, i: usize) -> kube::Client {
        self.nodes[i].client(self)
    }
}

async fn summary(h: Arc<Hollow>, pods: Arc<pods::PodSim>) {
    let mut tick = tokio::time::interval(SUMMARY_EVERY);
    tick.tick().await;
    let s = &h.stats;
    let mut last_errors = 0;
    loop {
        tick.tick().await;
        let errors = s.lease_errors.load(Ordering::Relaxed)
            + s.status_errors.load(Ordering::Relaxed)
            + s.pod_errors.load(Ordering::Relaxed);
        let line = format!(
            "nodes {}/{} registered, pods running {} (queued {}), started {} deleted {}, \
             leases renewed {} status writes {}, errors: lease {} status {} pod {}",
            s.nodes_registered.load(Ordering::Relaxed),
            h.nodes.len(),
            pods.running(),
            pods.queued(),
            s.pods_started.load(Ordering::Relaxed),
            s.pods_deleted.load(Ordering::Relaxed),
            s.lease_renewals.load(Ordering::Relaxed),
            s.status_updates.load(Ordering::Relaxed),
            s.lease_errors.load(Ordering::Relaxed),
            s.status_errors.load(Ordering::Relaxed),
            s.pod_errors.load(Ordering::Relaxed),
        );
        // New errors since the last line are worth a warning; details are at debug.
        if errors > last_errors {
            tracing::warn!("hollow nodes: {line}");
        } else {
            tracing::info!("hollow nodes: {line}");
        }
        last_errors = errors;
    }
}
