//! The `spindle` binary: parses the command line and hands over to the crates.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};
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
    /// Changes kept for watches to resume from; older resourceVersions get 410 Expired.
    #[arg(long, default_value_t = 20_000)]
    watch_history: usize,
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
            };
            rt.block_on(spindle_apiserver::run(cfg))
        }
    }
}
