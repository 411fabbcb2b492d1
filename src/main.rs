//! The `spindle` binary: parses the command line and hands over to the crates.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};

// The API server churns through many short-lived JSON values; glibc malloc spent half the
// server's CPU in consolidation and fragmented memory under load (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

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
    Server(ServerArgs),
    /// Register N simulated nodes that keep their Leases fresh and play kubelet for the
    /// pods bound to them without running anything (like KWOK).
    HollowNodes(HollowArgs),
}

#[derive(Parser)]
struct HollowArgs {
    /// API server URL, e.g. https://127.0.0.1:6443
    #[arg(long)]
    server: String,
    /// Join token (from <data-dir>/server/token).
    #[arg(long, env = "SPINDLE_TOKEN")]
    token: String,
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
}

#[derive(Parser)]
struct ServerArgs {
    /// Where state lives (default /var/lib/spindle as root, else ~/.spindle).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
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
    /// Run without the controllers and the scheduler (API server and store only).
    #[arg(long)]
    disable_controllers: bool,
    /// Run without the scheduler (pods stay Pending unless bound by someone else).
    #[arg(long)]
    disable_scheduler: bool,
}

/// Durations like Kubernetes flags take them: 300s, 5m, 1h, 1m30s (or plain seconds).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = 0.0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                _ => return Err(format!("invalid duration {s:?}")),
            }
        };
        let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("invalid duration {s:?}: missing unit"));
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

fn default_data_dir() -> PathBuf {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        PathBuf::from("/var/lib/spindle")
    } else {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".spindle")
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Server(a) => {
            if let Some(ep) = a.datastore_endpoint {
                bail!("--datastore-endpoint {ep}: external datastores (etcd) are not supported yet; run without it to use the embedded store");
            }
            let data_dir = a.data_dir.unwrap_or_else(default_data_dir);
            let kubeconfig = a
                .write_kubeconfig
                .unwrap_or_else(|| data_dir.join("kubeconfig.yaml"));
            if !a.disable_agent {
                tracing::warn!(node = ?a.node_name, "the node agent is not part of this build yet; running the control plane only");
            }
            let cfg = spindle_apiserver::ServerConfig {
                data_dir,
                bind_address: a.bind_address,
                port: a.https_listen_port,
                kubeconfig,
                token: a.token,
                tls_sans: a.tls_san,
                watch_history: a.watch_history,
                default_toleration_seconds: a.default_not_ready_toleration.as_secs(),
            };
            let ctrl_opts = spindle_controllers::Options {
                node_monitor_grace_period: a.node_monitor_grace_period,
                default_not_ready_toleration: a.default_not_ready_toleration,
            };
            let disable_controllers = a.disable_controllers;
            let disable_scheduler = a.disable_scheduler || a.disable_controllers;
            rt.block_on(async move {
                let (server, listener, acceptor) = spindle_apiserver::start(&cfg).await?;
                if !disable_controllers {
                    let state = server.state.clone();
                    tokio::spawn(async move {
                        let client = state.in_process_client("system:kube-controller-manager");
                        if let Err(e) = spindle_controllers::run_all(client, ctrl_opts).await {
                            tracing::error!(error = %e, "controllers stopped");
                        }
                    });
                }
                if !disable_scheduler {
                    let state = server.state.clone();
                    tokio::spawn(async move {
                        let client = state.in_process_client("system:kube-scheduler");
                        if let Err(e) = spindle_scheduler::run(
                            client,
                            spindle_scheduler::SchedulerOptions::default(),
                        )
                        .await
                        {
                            tracing::error!(error = %e, "scheduler stopped");
                        }
                    });
                }
                server.serve(listener, acceptor).await
            })
        }
        Cmd::HollowNodes(h) => rt.block_on(spindle_hollow::run(spindle_hollow::HollowOptions {
            server: h.server,
            token: h.token,
            count: h.count,
            prefix: h.prefix,
            cpu: h.cpu,
            memory: h.memory,
            pods: h.pods,
        })),
    }
}
