//! The `spindle` binary: parses the command line and hands over to the crates.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};

// The API server churns through many short-lived JSON values; glibc malloc spent half the
// server's CPU in consolidation and fragmented memory under load (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
// Durations as Kubernetes flags take them (Go's syntax: 300s, 5m, 1h, 1m30s).
use spindle_meta::names::parse_duration;

#[derive(Parser)]
#[command(
    name = "spindle",
    version,
    about = "A WebAssembly-first workload orchestrator that speaks the Kubernetes API"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(
        long,
        global = true,
        default_value = "text",
        env = "SPINDLE_LOG_FORMAT"
    )]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the control plane (API server and store) and, unless --disable-agent, a node agent.
    Server(Box<ServerArgs>),
    /// Run a node agent that joins a server and runs the pods bound to this node.
    Agent(AgentArgs),
    /// Publish a Wasm module or component to an OCI registry as a CNCF Wasm artifact.
    Push(PushArgs),
    /// Register N simulated nodes that keep their Leases fresh and play kubelet for the
    /// pods bound to them without running anything (like KWOK).
    HollowNodes(HollowArgs),
}

#[derive(Parser)]
struct HollowArgs {
    /// API server URL, e.g. https://127.0.0.1:6443
    #[arg(long)]
    server: String,
    /// Join token (from <data-dir>/server/token); or --token-file, or the environment.
    #[arg(long, env = "SPINDLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "SPINDLE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    count: usize,
    #[arg(long, default_value = "hollow")]
    prefix: String,
    #[arg(long, default_value = "4")]
    cpu: String,
    #[arg(long, default_value = "16Gi")]
    memory: String,
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// How long pods "run" before their containers exit (a Go duration, e.g. 2s or 0s),
    /// unless the pod's hollow.spindle.dev/run-for annotation says otherwise. Pods with
    /// restartPolicy Always never finish. Unset: pods run until deleted.
    #[arg(long, value_parser = parse_duration)]
    pod_run_for: Option<std::time::Duration>,
    /// The exit code of those containers, unless hollow.spindle.dev/exit-code says.
    #[arg(long, default_value_t = 0)]
    pod_exit_code: i32,
}

/// Flags the agent has alone and embedded in the server.
#[derive(Parser, Clone)]
struct NodeFlags {
    /// Pods this node accepts (idle Wasm pods cost kilobytes, so far above 110).
    #[arg(long, default_value_t = 20_000)]
    max_pods: u32,
    /// Address reported as the node's InternalIP (default: the host's first address).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Port of the agent's streaming endpoint (logs); 0 picks a free port.
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// Extra node labels, key=value.
    #[arg(long = "node-label")]
    node_labels: Vec<String>,
    /// Host bridge of the pod network (host-global: give each agent on one host its own).
    #[arg(long, default_value = "spindle0")]
    cni_bridge: String,
    /// Pod network namespaces are /run/netns/<prefix>-<pod uid>.
    #[arg(long, default_value = "spindle")]
    netns_prefix: String,
    /// Where the CNI plugins are (Debian's containernetworking-plugins).
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin_dir: PathBuf,
    /// The cluster DNS Service IP given to pods (default: the 10th address of the
    /// service CIDR, 10.43.0.10).
    #[arg(long)]
    cluster_dns: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Port of the node's DNS server on the node address (0: any free port).
    #[arg(long, default_value_t = 53)]
    cluster_dns_port: u16,
    /// nftables table the Service proxy programs (host-global).
    #[arg(long, default_value = "spindle")]
    nft_table: String,
    /// containerd's socket for container images (default: start a private containerd
    /// under the data dir when containerd and runc are installed).
    #[arg(long)]
    containerd_socket: Option<PathBuf>,
    /// Run Wasm only, even if containerd is installed.
    #[arg(long)]
    disable_containerd: bool,
    /// The containerd namespace the agent owns.
    #[arg(long, default_value = "spindle")]
    containerd_namespace: String,
    /// Let pods run privileged containers.
    #[arg(long)]
    allow_privileged: bool,
}

#[derive(Parser)]
struct AgentArgs {
    /// API server URL, e.g. https://10.0.0.1:6443
    #[arg(long, env = "SPINDLE_URL")]
    server: String,
    /// Join token (from <server data-dir>/server/token). Prefer --token-file or the
    /// environment: a command line is visible to every local user.
    #[arg(long, env = "SPINDLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "SPINDLE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Name of this node (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Where the agent keeps images, compiled modules, pods and logs
    /// (default /var/lib/spindle/agent as root, else ~/.spindle/agent).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    node: NodeFlags,
}

#[derive(Parser)]
struct PushArgs {
    /// The .wasm file (a WASI p1 module or a p2 component).
    file: PathBuf,
    /// Where to publish it, e.g. 127.0.0.1:5000/demo/hello:v1
    reference: String,
    /// Registry user name (with --password).
    #[arg(long, env = "SPINDLE_REGISTRY_USER")]
    username: Option<String>,
    #[arg(long, env = "SPINDLE_REGISTRY_PASSWORD")]
    password: Option<String>,
}

#[derive(Parser)]
struct ServerArgs {
    #[command(flatten)]
    node: NodeFlags,
    /// Where state lives (default /var/lib/spindle as root, else ~/.spindle).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// The address pods reach the API server at, published as the endpoint of the
    /// `kubernetes` Service (default: the bind address, or this host's address when
    /// binding all addresses; none when binding loopback only).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Where to write the admin kubeconfig (default <data-dir>/kubeconfig.yaml).
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Run only the control plane, no node agent.
    #[arg(long)]
    disable_agent: bool,
    /// Name of this host's node (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Node join token (default: generated once and kept in <data-dir>/server/token).
    #[arg(long, env = "SPINDLE_TOKEN")]
    token: Option<String>,
    /// External datastore (etcd). Reserved: the embedded store is the only backend yet.
    #[arg(long)]
    datastore_endpoint: Option<String>,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Changes kept (on disk) for watches to resume from; older resourceVersions get 410.
    #[arg(long, default_value_t = 100_000)]
    watch_history: usize,
    /// A node whose Lease is not renewed for this long becomes NotReady.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How long pods tolerate a NotReady/unreachable node by default before eviction.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    default_not_ready_toleration: std::time::Duration,
    /// The longest certificate the CSR signer issues (kube-controller-manager's
    /// --cluster-signing-duration).
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    cluster_signing_duration: std::time::Duration,
    /// How often the horizontal pod autoscaler looks at each HPA.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How long an HPA without `behavior` keeps its highest recent recommendation before
    /// scaling down.
    #[arg(long, default_value = "5m0s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// Run without the controllers and the scheduler (API server and store only).
    #[arg(long)]
    disable_controllers: bool,
    /// Run without the scheduler (pods stay Pending unless bound by someone else).
    #[arg(long)]
    disable_scheduler: bool,
    /// Pod addresses; each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// Service ClusterIP addresses.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: String,
    /// NodePort range, LOW-HIGH.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Connections the API port serves at once; more are closed when accepted. The API
    /// port's limits default to `ConnLimits::default()`, their one home.
    #[arg(long, hide = true)]
    api_max_connections: Option<usize>,
    /// Time a client has to finish the TLS handshake on the API port.
    #[arg(long, value_parser = parse_duration, hide = true)]
    api_tls_handshake_timeout: Option<std::time::Duration>,
    /// Time a client has to send a request's headers on the API port.
    #[arg(long, value_parser = parse_duration, hide = true)]
    api_header_read_timeout: Option<std::time::Duration>,
    /// Time a connection to the API port may go without a request in flight.
    #[arg(long, value_parser = parse_duration, hide = true)]
    api_idle_timeout: Option<std::time::Duration>,
    /// Time a client has to send a request's body on the API port.
    #[arg(long, value_parser = parse_duration, hide = true)]
    api_body_read_timeout: Option<std::time::Duration>,
}

/// Raise the soft open-files limit to the hard one, as Go programs (kube-apiserver,
/// the kubelet, containerd) do at start: the soft limit is often 1024, and the server,
/// the store, the embedded agent and its pods all share it.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current.is_some() && lim.current != lim.maximum {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "raising the open-files limit");
        }
    }
}

fn net_ranges(a: &ServerArgs) -> Result<spindle_apiserver::alloc::NetRanges> {
    use spindle_apiserver::alloc::parse_cidr;
    let cluster = parse_cidr(&a.cluster_cidr).map_err(|e| anyhow::anyhow!("--cluster-cidr {e}"))?;
    let service = parse_cidr(&a.service_cidr).map_err(|e| anyhow::anyhow!("--service-cidr {e}"))?;
    let ports = a
        .service_node_port_range
        .split_once('-')
        .and_then(|(l, h)| Some((l.trim().parse::<u16>().ok()?, h.trim().parse::<u16>().ok()?)))
        .filter(|(l, h)| l <= h)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--service-node-port-range {:?} must be LOW-HIGH",
                a.service_node_port_range
            )
        })?;
    Ok(spindle_apiserver::alloc::NetRanges {
        service_cidr: service,
        cluster_cidr: cluster,
        node_cidr_len: 24,
        node_ports: ports,
    })
}

fn default_data_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/lib/spindle")
    } else {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".spindle")
    }
}

/// The node name a kubelet defaults to: the host name, lower-cased.
fn hostname() -> String {
    let uts = rustix::system::uname();
    let name = uts.nodename().to_string_lossy().trim().to_lowercase();
    if name.is_empty() {
        "spindle-node".to_string()
    } else {
        name
    }
}

fn agent_options(
    node_name: Option<String>,
    data_dir: PathBuf,
    flags: NodeFlags,
    cluster_ca_pem: String,
    control_plane: bool,
    cluster_dns: std::net::Ipv4Addr,
    protected_paths: Vec<PathBuf>,
) -> Result<spindle_agent::AgentOptions> {
    let mut labels = Vec::new();
    for l in &flags.node_labels {
        match l.split_once('=') {
            Some((k, v)) => labels.push((k.to_string(), v.to_string())),
            None => bail!("--node-label {l:?} must be key=value"),
        }
    }
    Ok(spindle_agent::AgentOptions {
        node_name: node_name.unwrap_or_else(hostname),
        data_dir,
        max_pods: flags.max_pods,
        listen: std::net::SocketAddr::new(
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            flags.agent_port,
        ),
        node_ip: flags.node_ip,
        cluster_ca_pem,
        labels,
        control_plane,
        net: spindle_agent::podnet::NetOptions {
            bridge: flags.cni_bridge,
            netns_prefix: flags.netns_prefix,
            cni_bin_dir: flags.cni_bin_dir,
            cluster_dns: flags.cluster_dns.unwrap_or(cluster_dns),
            cluster_domain: flags.cluster_domain,
            dns_port: flags.cluster_dns_port,
            nft_table: flags.nft_table,
        },
        containerd: spindle_agent::containers::ContainerdOptions {
            socket: flags.containerd_socket,
            disabled: flags.disable_containerd,
            namespace: flags.containerd_namespace,
            allow_privileged: flags.allow_privileged,
        },
        protected_paths,
    })
}

/// The join token from the flag or SPINDLE_TOKEN, else from the file (--token-file or
/// SPINDLE_TOKEN_FILE).
fn join_token(token: Option<String>, file: Option<&std::path::Path>) -> Result<String> {
    match (token, file) {
        (Some(t), _) => Ok(t),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map(|t| t.trim().to_string())
            .map_err(|e| anyhow::anyhow!("reading --token-file {}: {e}", f.display())),
        (None, None) => bail!(
            "a join token is required: --token-file FILE, or SPINDLE_TOKEN in the environment"
        ),
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPINDLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

/// SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
    tracing::info!("signal received: shutting down");
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    raise_open_files_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Server(a) => {
            let net = net_ranges(&a)?;
            let service_dns = std::net::Ipv4Addr::from(u32::from(net.service_cidr.0) + 10);
            let cluster_dns = a.node.cluster_dns.unwrap_or(service_dns);
            // The `kubernetes` Service takes the first address of the Service CIDR, and
            // the serving certificate names it, so in-cluster clients can verify it.
            let api_service_ip = std::net::Ipv4Addr::from(u32::from(net.service_cidr.0) + 1);
            let mut tls_sans = a.tls_san.clone();
            tls_sans.push(api_service_ip.to_string());
            let advertise = match a.advertise_address {
                Some(ip) => Some(ip),
                None if a.bind_address.is_loopback() => None,
                None if a.bind_address.is_unspecified() => Some(match a.node.node_ip {
                    Some(ip) => ip,
                    None => spindle_agent::node::default_ip()?,
                }),
                None => Some(a.bind_address),
            };
            if let Some(ep) = a.datastore_endpoint {
                bail!("--datastore-endpoint {ep}: external datastores (etcd) are not supported yet; run without it to use the embedded store");
            }
            let data_dir = a.data_dir.unwrap_or_else(default_data_dir);
            let kubeconfig = a
                .write_kubeconfig
                .unwrap_or_else(|| data_dir.join("kubeconfig.yaml"));
            let agent_data_dir = data_dir.join("agent");
            // No hostPath may expose the store, the CA and the token, or the admin kubeconfig.
            let protected = vec![data_dir.clone(), kubeconfig.clone()];
            let d = spindle_apiserver::ConnLimits::default();
            let cfg = spindle_apiserver::ServerConfig {
                data_dir,
                bind_address: a.bind_address,
                port: a.https_listen_port,
                kubeconfig,
                token: a.token,
                tls_sans,
                watch_history: a.watch_history,
                default_toleration_seconds: a.default_not_ready_toleration.as_secs(),
                net,
                limits: spindle_apiserver::ConnLimits {
                    max_connections: a.api_max_connections.unwrap_or(d.max_connections),
                    tls_handshake_timeout: a
                        .api_tls_handshake_timeout
                        .unwrap_or(d.tls_handshake_timeout),
                    header_read_timeout: a.api_header_read_timeout.unwrap_or(d.header_read_timeout),
                    idle_timeout: a.api_idle_timeout.unwrap_or(d.idle_timeout),
                    body_read_timeout: a.api_body_read_timeout.unwrap_or(d.body_read_timeout),
                },
            };
            let mut ctrl_opts = spindle_controllers::Options {
                node_monitor_grace_period: a.node_monitor_grace_period,
                default_not_ready_toleration: a.default_not_ready_toleration,
                hpa: spindle_controllers::hpa::Settings {
                    sync_period: a.horizontal_pod_autoscaler_sync_period,
                    downscale_stabilization: a.horizontal_pod_autoscaler_downscale_stabilization,
                },
                root_ca: None,
                signing: None,
                legacy_tokens: None,
            };
            let cluster_signing_duration = a.cluster_signing_duration;
            let disable_controllers = a.disable_controllers;
            let disable_agent = a.disable_agent;
            let node_name = a.node_name.clone();
            let node_flags = a.node.clone();
            let disable_scheduler = a.disable_scheduler || a.disable_controllers;
            rt.block_on(async move {
                let (server, listener, acceptor) = spindle_apiserver::start(&cfg).await?;
                ctrl_opts.signing = Some(spindle_controllers::certificates::Signing {
                    ca: std::sync::Arc::new(spindle_meta::certificates::SigningCa::from_pem(
                        &server.pki.ca_pem,
                        &server.pki.ca_key_pem,
                    )?),
                    max_duration: cluster_signing_duration,
                });
                ctrl_opts.root_ca = Some(server.state.ca_pem.to_string());
                // The token controller signs legacy tokens with the API server's
                // ServiceAccount key, which stays in the API server.
                let key = server.state.sa_signer.clone();
                ctrl_opts.legacy_tokens = Some(spindle_controllers::serviceaccount_token::Signer(
                    std::sync::Arc::new(move |t| {
                        let claims = spindle_apiserver::sa_legacy::LegacyClaims::new(
                            t.namespace,
                            t.secret,
                            t.account,
                            t.account_uid,
                        );
                        Ok(spindle_apiserver::sa_legacy::sign(&key, &claims)?)
                    }),
                ));
                if !disable_controllers {
                    let state = server.state.clone();
                    tokio::spawn(async move {
                        // As kube-controller-manager with --use-service-account-credentials:
                        // the shared informers read as system:kube-controller-manager, each
                        // controller works as its own ServiceAccount in kube-system, all
                        // with only their bootstrap roles.
                        let informers =
                            state.in_process_client("system:kube-controller-manager", &[]);
                        let client_for = move |name: &str| {
                            state.service_account_client(
                                spindle_controllers::identity::NAMESPACE,
                                name,
                            )
                        };
                        if let Err(e) =
                            spindle_controllers::run_all(informers, client_for, ctrl_opts).await
                        {
                            tracing::error!(error = %e, "controllers stopped");
                        }
                    });
                }
                if !disable_scheduler {
                    let state = server.state.clone();
                    // Supervised like each controller: a panic restarts the scheduler
                    // (its watches end with it) instead of ending scheduling for good.
                    tokio::spawn(spindle_controllers::supervise("scheduler", move || {
                        // Only its bootstrap roles: system:kube-scheduler and
                        // system:volume-scheduler.
                        let client = state.in_process_client("system:kube-scheduler", &[]);
                        spindle_scheduler::run(client, spindle_scheduler::SchedulerOptions::default())
                    }));
                }
                {
                    // kube-apiserver's own loopback identity is in system:masters too.
                    let client = server
                        .state
                        .in_process_client("system:apiserver", &["system:masters"]);
                    let api_port = server.addr.port();
                    tokio::spawn(async move {
                        if let Err(e) = spindle_controllers::bootstrap::ensure_kubernetes_service(client.clone(), api_service_ip, advertise, api_port).await {
                            tracing::warn!(error = format!("{e:#}"), "creating the kubernetes Service");
                        }
                        if let Err(e) = spindle_controllers::bootstrap::ensure_dns_service(client.clone(), cluster_dns).await {
                            tracing::warn!(error = format!("{e:#}"), "creating the kube-dns Service");
                        }
                        if let Err(e) = spindle_controllers::bootstrap::ensure_default_storage_class(client).await {
                            tracing::warn!(error = format!("{e:#}"), "creating the local-path StorageClass");
                        }
                    });
                }
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                let mut agent_task = None;
                if !disable_agent {
                    let state = server.state.clone();
                    let opts = agent_options(
                        node_name,
                        agent_data_dir,
                        node_flags,
                        state.ca_pem.to_string(),
                        true,
                        cluster_dns,
                        protected,
                    )?;
                    agent_task = Some(tokio::spawn(async move {
                        let client =
                            state.in_process_client(
                                &format!("system:node:{}", opts.node_name),
                                &["system:nodes"],
                            );
                        if let Err(e) =
                            spindle_agent::run(client, opts, stopped(stop_rx)).await
                        {
                            tracing::error!(error = format!("{e:#}"), "node agent stopped");
                        }
                    }));
                }
                tokio::select! {
                    r = server.serve(listener, acceptor) => r,
                    () = terminated() => {
                        // The embedded agent removes its pods' networks before the exit.
                        let _ = stop_tx.send(true);
                        if let Some(t) = agent_task {
                            let _ = tokio::time::timeout(std::time::Duration::from_secs(20), t).await;
                        }
                        Ok(())
                    }
                }
            })
        }
        Cmd::Agent(a) => {
            let data_dir = a
                .data_dir
                .unwrap_or_else(|| default_data_dir().join("agent"));
            let token = join_token(a.token, a.token_file.as_deref())?;
            spindle_meta::token::JoinToken::parse(&token)
                .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
            // k3s's default service CIDR 10.43.0.0/16 gives 10.43.0.10.
            let mut opts = agent_options(
                a.node_name,
                data_dir,
                a.node,
                // Known once the token has fetched (and verified) it, below.
                String::new(),
                false,
                std::net::Ipv4Addr::new(10, 43, 0, 10),
                // A server may share this host: its default data dir stays out of reach.
                vec![default_data_dir()],
            )?;
            rt.block_on(async move {
                // The token only bootstraps: the agent talks to the API server with a
                // client certificate of its own (system:node:<name>).
                let client = spindle_agent::credentials::node_client(
                    &a.server,
                    Some(&token),
                    &opts.node_name,
                    &opts.data_dir,
                )
                .await?;
                opts.cluster_ca_pem = spindle_agent::credentials::cluster_ca(&opts.data_dir)?;
                spindle_agent::run(client, opts, terminated()).await
            })
        }
        Cmd::Push(p) => rt.block_on(async move {
            let auth = match (p.username, p.password) {
                (Some(u), Some(pw)) => Some((u, pw)),
                (None, None) => None,
                _ => bail!("--username and --password go together"),
            };
            let digest = spindle_image::push(&p.file, &p.reference, auth).await?;
            println!("{}@{digest}", p.reference);
            Ok(())
        }),
        Cmd::HollowNodes(h) => rt.block_on(spindle_hollow::run(spindle_hollow::HollowOptions {
            token: join_token(h.token, h.token_file.as_deref())?,
            server: h.server,
            count: h.count,
            prefix: h.prefix,
            cpu: h.cpu,
            memory: h.memory,
            pods: h.pods,
            finish: spindle_hollow::finish::FinishDefaults {
                run_for: h.pod_run_for,
                exit_code: h.pod_exit_code,
            },
        })),
    }
}
