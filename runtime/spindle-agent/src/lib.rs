//! `spindle-agent` is Spindle's kubelet: it registers this host as a Node, keeps its Lease
//! fresh, watches the pods bound to it and runs them, and reports their status the way
//! Kubernetes does.
//!
//! The pieces:
//! - [`node`]: the Node object (capacity from the machine, conditions, system info) and the
//!   Lease heartbeat.
//! - [`pods`]: one watch of this node's pods feeding one worker task per pod.
//! - [`lifecycle`]: what a pod's worker runs: volumes, init containers in order, each
//!   container under a supervisor whose phases (pull, prepare, run, exit, back-off) are a
//!   state machine, graceful deletion, status; [`reason`] types why a container waits or
//!   ended.
//! - [`runtime`]: the `Runtime`, `Running` and `Console` traits a container kind implements
//!   (runs, then execs and attaches), with the Wasm one over `spindle-wasm`; [`containers`]
//!   is the containerd one.
//! - [`volumes`], [`env`], [`resources`]: the pod's volume directories, container
//!   environments, and resource quantities as the node uses them.
//! - [`stats`]: what the node, its pods and containers use (CPU, memory), sampled for
//!   the Summary API (`/stats/summary`) the API server's metrics API reads.
//! - [`paths`]: the data directory's layout, the one place its paths are named.
//! - [`server`]: the HTTPS endpoint (axum routes; callers authenticated by client
//!   certificate and authorized by SubjectAccessReview) the API server proxies
//!   `kubectl logs`, `exec`, `attach` and `port-forward` to, with [`serving`]'s
//!   certificate from the cluster CA; [`stream`] joins the latter three to the
//!   containers, over the protocols of `spindle-streaming`.
//!
//! The agent runs embedded in `spindle server` (with an in-process API client) or alone as
//! `spindle agent` (joining with a URL and token, which [`credentials`] exchanges for a
//! client certificate of the node's own); the code is the same.

pub mod containers;
pub mod credentials;
pub mod env;
pub mod exec;
pub mod lifecycle;
pub mod local_path;
pub mod metrics;
pub mod node;
pub mod paths;
pub mod podnet;
pub mod pods;
pub mod probes;
pub mod reason;
pub mod resources;
pub mod routes;
pub mod runtime;
pub mod safe_mount;
pub mod server;
pub mod services;
pub mod serving;
pub mod stats;
pub mod status;
pub mod stream;
pub mod tokens;
pub mod volumes;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

/// Events the agent writes per second, and in a burst: the kubelet's defaults
/// (`--event-qps`, `--event-burst`). A node starting a thousand pods a second would
/// otherwise spend most of the API server's writes on Pulled/Created/Started events;
/// beyond the queue they are dropped, as the kubelet's are.
const EVENT_QPS: f64 = 50.0;
const EVENT_BURST: u32 = 100;

/// What an agent is told at start.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub node_name: String,
    /// Everything the agent keeps: images, precompiled modules, pod directories, logs.
    pub data_dir: PathBuf,
    /// Pods this node accepts (allocatable `pods`). Far above Kubernetes' 110: an idle Wasm
    /// pod costs kilobytes, not a process.
    pub max_pods: u32,
    /// Address of the streaming endpoint (logs); port 0 picks a free one.
    pub listen: SocketAddr,
    /// The address reported as the node's InternalIP (default: the host's first address).
    pub node_ip: Option<IpAddr>,
    /// The cluster CA (PEM): the streaming endpoint's callers must present a client
    /// certificate it signed, and it signs the endpoint's serving certificate.
    pub cluster_ca_pem: String,
    /// Extra node labels (`key=value`).
    pub labels: Vec<(String, String)>,
    /// Labels of a server node (control-plane role), as k3s sets them.
    pub control_plane: bool,
    /// Names of the node's pod network (bridge, netns prefix) and where the CNI plugins
    /// are.
    pub net: podnet::NetOptions,
    /// Where containers run (containerd), if anywhere.
    pub containerd: containers::ContainerdOptions,
    /// Host directories besides `data_dir` that no hostPath volume may expose (the
    /// server's store and credentials on a server node).
    pub protected_paths: Vec<PathBuf>,
}

impl AgentOptions {
    /// The directories no hostPath may expose, resolved (a hostPath is compared after
    /// resolving its links too).
    pub fn protected_dirs(&self) -> Vec<PathBuf> {
        std::iter::once(&self.data_dir)
            .chain(&self.protected_paths)
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect()
    }
}

/// Everything a running agent shares between its tasks.
pub struct Agent {
    pub client: kube::Client,
    pub opts: AgentOptions,
    /// Where everything under `opts.data_dir` is.
    pub paths: paths::AgentPaths,
    pub node_ip: IpAddr,
    pub images: spindle_image::ImageStore,
    pub wasm: Arc<runtime::WasmContainers>,
    /// Containers through containerd; `None` on a Wasm-only node.
    pub containers: Option<Arc<containers::ContainerdContainers>>,
    /// Set when the agent stops: no pod gets a new sandbox (a guest restarted during the
    /// shutdown would otherwise get one after the teardown).
    pub stopping: std::sync::atomic::AtomicBool,
    pub events: spindle_meta::events::Recorder,
    pub streaming_port: u16,
    pub pods: pods::PodTable,
    /// The node's pod network; `None` when it could not be set up (pods that need a
    /// network then wait in ContainerCreating with [`Agent::net_unavailable`] as reason).
    pub net: std::sync::OnceLock<spindle_net::Network>,
    pub net_unavailable: std::sync::OnceLock<String>,
    /// The cluster DNS server this agent runs for its pods.
    pub dns: std::sync::OnceLock<spindle_dns::ClusterDns>,
    /// Worker threads of each pod's runtime.
    pub pod_workers: usize,
    /// Every node's pod CIDR (from the Node watch), for the pod masquerade rule.
    pub node_cidrs: tokio::sync::watch::Sender<Vec<ipnet::Ipv4Net>>,
    /// What hostPath volumes may reach: not [`AgentOptions::protected_dirs`] (resolved
    /// once at start), devices and kernel filesystems only with `--allow-privileged`.
    pub host_paths: volumes::HostPolicy,
    /// ServiceAccount tokens of the pods' projected volumes.
    pub tokens: Arc<tokens::TokenManager>,
    /// The last samples of what the node and its containers use (`/stats/summary`).
    pub stats: stats::Stats,
}

/// Every pod's volumes live below `pods`: make it a nodev, nosuid mount, so a device node
/// or set-uid file a container makes in a volume opens nothing for Wasm guests (who do
/// their file I/O as the agent) and for anything else reading the volume on the host.
fn restrict_pods_dir(pods: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(pods).with_context(|| format!("creating {}", pods.display()))?;
    match safe_mount::restrict_in_place(pods) {
        Ok(()) => Ok(()),
        // An agent that may not mount (not root) cannot make device nodes appear either.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            tracing::warn!(dir = %pods.display(), "no permission to mount the pods directory nodev");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("mounting {} nodev,nosuid", pods.display())),
    }
}

/// Run the agent until `shutdown` resolves (then stop every pod's runs and remove their
/// network sandboxes) or the process ends. The pods stay bound to the node: an agent
/// started again takes them back.
pub async fn run(
    client: kube::Client,
    mut opts: AgentOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    metrics::register();
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    // Mount points are listed resolved: a data dir reached through a link or a relative
    // path would hide the pods' mounts from teardown, which would then remove through them.
    opts.data_dir = std::fs::canonicalize(&opts.data_dir)
        .with_context(|| format!("resolving {}", opts.data_dir.display()))?;
    let paths = paths::AgentPaths::new(&opts.data_dir);
    restrict_pods_dir(&paths.pods())?;
    let node_ip = match opts.node_ip {
        Some(ip) => ip,
        None => node::default_ip().context("finding this host's address (set --node-ip)")?,
    };
    let containers = containers::ContainerdContainers::start(&opts.containerd, &paths).await?;
    let images = spindle_image::ImageStore::open_for(&paths.images(), containers.is_some())
        .context("opening the image cache")?;
    let wasm = Arc::new(runtime::WasmContainers::new(&paths.wasm_cache())?);
    let (listener, port) = server::bind(opts.listen).await?;
    let serving = Arc::new(serving::ServingCert::default());
    let client_certs = spindle_meta::tls::client_certs::ClientCerts::for_ca(&opts.cluster_ca_pem)
        .context("the cluster CA")?;
    let tls = server::tls_config(serving.clone(), &client_certs)?;
    let local_path_root = paths.storage();
    let agent = Arc::new(Agent {
        events: spindle_meta::events::Recorder::on_host(client.clone(), "kubelet", &opts.node_name)
            .rate_limited(EVENT_QPS, EVENT_BURST),
        client,
        paths,
        node_ip,
        images,
        wasm,
        containers,
        stopping: std::sync::atomic::AtomicBool::new(false),
        streaming_port: port,
        pods: pods::PodTable::default(),
        net: std::sync::OnceLock::new(),
        net_unavailable: std::sync::OnceLock::new(),
        dns: std::sync::OnceLock::new(),
        node_cidrs: tokio::sync::watch::channel(Vec::new()).0,
        host_paths: volumes::HostPolicy {
            protected: opts.protected_dirs(),
            allow_privileged: opts.containerd.allow_privileged,
            local_path_root,
        },
        tokens: Arc::default(),
        stats: stats::Stats::default(),
        pod_workers: std::thread::available_parallelism()
            .map(|n| n.get().min(4))
            .unwrap_or(2),
        opts,
    });
    node::register(&agent).await?;
    tracing::info!(node = %agent.opts.node_name, ip = %agent.node_ip, port, "node agent registered");
    match pod_network(&agent).await {
        Ok(net) => {
            let _ = agent.net.set(net);
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no pod network on this node: pods that need one stay in ContainerCreating");
            let _ = agent.net_unavailable.set(format!("{e:#}"));
        }
    }
    // After the pod network: its CIDR is who may query the DNS server.
    // Set before any pod starts (the pod watch begins below).
    match start_dns(&agent).await {
        Ok(dns) => {
            let _ = agent.dns.set(dns);
        }
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "no cluster DNS on this node"),
    }
    tokio::spawn(node::heartbeat(agent.clone()));
    // After registration: the approver checks the names asked for against the Node.
    tokio::spawn(serving::run(
        serving,
        agent.client.clone(),
        serving::Identity {
            node_name: agent.opts.node_name.clone(),
            node_ip: agent.node_ip,
            dir: agent.paths.pki(),
        },
    ));
    tokio::spawn(server::serve(agent.clone(), listener, tls, client_certs));
    tokio::spawn(stats::run(agent.clone()));
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    let routes = tokio::spawn(routes::run(agent.clone(), stop_rx.clone()));
    tokio::spawn(local_path::run(agent.clone(), stop_rx.clone()));
    let services = tokio::spawn(services::run(agent.clone(), stop_rx));
    tokio::select! {
        r = pods::run(agent.clone()) => r,
        () = shutdown => {
            let _ = stopping.send(true);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), routes).await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), services).await;
            stop(&agent).await;
            Ok(())
        }
    }
}

/// Ends every pod's runtime and removes every sandbox of this node's pod network.
async fn stop(agent: &Agent) {
    tracing::info!("node agent stopping: removing containers and pod networks");
    agent
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(c) = &agent.containers {
        c.remove_containers().await;
    }
    for h in agent.pods.all() {
        // Dropping a pod's runtime ends the guests on it.
        drop(h.net.lock().await.take());
    }
    if let Some(net) = agent.net.get() {
        if let Err(e) = net.teardown_all().await {
            tracing::warn!(error = %e, "removing pod sandboxes on shutdown");
        }
    }
    if let Some(c) = &agent.containers {
        c.stop_daemon().await;
    }
}

/// The node's pod network over the pod CIDR the control plane gave the Node.
async fn pod_network(agent: &Agent) -> Result<spindle_net::Network> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(agent.client.clone());
    let node = nodes
        .get(&agent.opts.node_name)
        .await
        .context("reading this Node's pod CIDR")?;
    let cidr = node
        .spec
        .and_then(|s| s.pod_cidr)
        .filter(|c| !c.is_empty())
        .context("the Node has no spec.podCIDR")?;
    let cidr: ipnet::Ipv4Net = cidr
        .parse()
        .with_context(|| format!("the Node's podCIDR {cidr:?} is not an IPv4 CIDR"))?;
    let mut cfg = spindle_net::NetConfig::new(agent.paths.root(), cidr);
    cfg.conf_dir = agent.paths.cni_conf();
    cfg.state_dir = agent.paths.cni_state();
    cfg.bridge = agent.opts.net.bridge.clone();
    cfg.netns_prefix = agent.opts.net.netns_prefix.clone();
    cfg.cni_bin_dir = agent.opts.net.cni_bin_dir.clone();
    // The Service proxy's table masquerades pod traffic leaving the cluster's pod
    // network; the bridge plugin's own ipMasq would also hide pod addresses from pods
    // on other nodes (and costs an iptables chain per pod).
    cfg.ip_masq = false;
    let net = tokio::task::spawn_blocking(move || spindle_net::Network::new(cfg))
        .await
        .context("setting up the pod network")??;
    Ok(net)
}

/// The cluster DNS server on the node's address; pods reach it through the cluster DNS
/// Service IP, which the Service proxy forwards here.
async fn start_dns(agent: &Agent) -> Result<spindle_dns::ClusterDns> {
    let cfg = spindle_dns::DnsConfig {
        listen: vec![SocketAddr::new(agent.node_ip, agent.opts.net.dns_port)],
        domain: agent.opts.net.cluster_domain.clone(),
        allowed_clients: dns_clients(agent),
        ..Default::default()
    };
    spindle_dns::ClusterDns::start(cfg)
        .await
        .context("starting the cluster DNS server")
}

/// Who may query the node's DNS server (it listens on the node's address, reachable from
/// outside the cluster): this node's pods (the cluster DNS Service forwards to the
/// local node's server, keeping the pod's address), loopback, and the node's own
/// addresses (host-network pods). Everyone else is refused (review SPN-17).
fn dns_clients(agent: &Agent) -> Vec<ipnet::IpNet> {
    let mut nets = spindle_dns::loopback_clients();
    nets.push(agent.node_ip.into());
    match if_addrs::get_if_addrs() {
        Ok(addrs) => nets.extend(addrs.iter().map(|a| ipnet::IpNet::from(a.ip()))),
        Err(e) => {
            tracing::warn!(error = %e, "listing the node's addresses for the DNS client list")
        }
    }
    if let Some(net) = agent.net.get() {
        nets.push(net.config().pod_cidr.into());
    }
    nets
}
