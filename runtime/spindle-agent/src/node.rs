//! This host's Node object and its Lease heartbeat.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use spindle_meta::lease;
use spindle_meta::storage::LOCAL_PATH_ROOT;

use crate::Agent;

pub const RUNTIMES_LABEL: &str = "spindle.dev/runtimes";
/// One label per runtime, for nodeSelectors; the scheduler reads the containerd one
/// (must match `spindle_scheduler`'s `CONTAINERD_LABEL`).
pub const WASM_LABEL: &str = "runtime.spindle.dev/wasm";
pub const CONTAINERD_LABEL: &str = "runtime.spindle.dev/containerd";
/// The version the agent reports as kubeletVersion: the API it serves is Kubernetes 1.33's.
pub const AGENT_VERSION: &str = "v1.33.0+spindle";
/// How often the whole node status is rewritten (the Lease is the heartbeat in between).
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// The first non-loopback IPv4 address of this host (what the kubelet picks by default).
pub fn default_ip() -> Result<IpAddr> {
    let addrs = if_addrs::get_if_addrs().context("listing network interfaces")?;
    addrs
        .iter()
        .filter(|a| !a.is_loopback())
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4())
        .or_else(|| addrs.iter().map(|a| a.ip()).find(|ip| ip.is_ipv4()))
        .context("no IPv4 address on this host")
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".to_string())
}

/// Total memory from /proc/meminfo, as a Kubernetes quantity in Ki (as the kubelet reports).
fn memory_capacity() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_string))
        })
        .map(|kib| format!("{kib}Ki"))
        .unwrap_or_else(|| "0".to_string())
}

fn disk_capacity(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "0".into();
    };
    // SAFETY: statvfs only writes into the struct we pass and reads the C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return "0".into();
    }
    let bytes = st.f_blocks as u128 * st.f_frsize as u128;
    format!("{}Ki", bytes / 1024)
}

fn capacity(agent: &Agent) -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    [
        ("cpu", cpus.to_string()),
        ("memory", memory_capacity()),
        ("pods", agent.opts.max_pods.to_string()),
        ("ephemeral-storage", disk_capacity(agent.paths.root())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect()
}

pub fn labels(agent: &Agent) -> BTreeMap<String, String> {
    let name = agent.opts.node_name.as_str();
    // Label values cannot hold commas, so the set is dot-joined.
    let runtimes = if agent.containers.is_some() {
        "wasm.containerd"
    } else {
        "wasm"
    };
    let mut l: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", std::env::consts::ARCH),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", std::env::consts::ARCH),
        (RUNTIMES_LABEL, runtimes),
        (WASM_LABEL, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // Kubernetes names the architecture the Go way.
    if std::env::consts::ARCH == "x86_64" {
        l.insert("kubernetes.io/arch".into(), "amd64".into());
        l.insert("beta.kubernetes.io/arch".into(), "amd64".into());
    }
    if agent.containers.is_some() {
        l.insert(CONTAINERD_LABEL.into(), "true".into());
    }
    if agent.opts.control_plane {
        l.insert(
            "node-role.kubernetes.io/control-plane".into(),
            "true".into(),
        );
    }
    for (k, v) in &agent.opts.labels {
        l.insert(k.clone(), v.clone());
    }
    l
}

/// Where this node keeps its local-path volumes, for the provisioner that writes the
/// path into the volumes it makes for the node.
fn annotations(agent: &Agent) -> BTreeMap<String, String> {
    let root = agent.host_paths.local_path_root.to_string_lossy();
    BTreeMap::from([(LOCAL_PATH_ROOT.to_string(), root.into_owned())])
}

fn status(agent: &Agent, ready_since: Timestamp) -> NodeStatus {
    let cap = capacity(agent);
    let arch = if std::env::consts::ARCH == "x86_64" {
        "amd64"
    } else {
        std::env::consts::ARCH
    };
    NodeStatus {
        capacity: Some(cap.clone()),
        allocatable: Some(cap),
        conditions: Some(lease::conditions(Timestamp::now(), ready_since)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: agent.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: agent.opts.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(agent.streaming_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch.into(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            container_runtime_version: "wasmtime://48.0.8".to_string(),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            kube_proxy_version: String::new(),
            kubelet_version: AGENT_VERSION.into(),
            machine_id: read_trimmed("/etc/machine-id").unwrap_or_default(),
            operating_system: "linux".into(),
            os_image: os_image(),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid").unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Create the Node, or take over the one a previous run of this agent left, and its Lease.
pub async fn register(agent: &Agent) -> Result<()> {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let now = Timestamp::now();
    let node = Node {
        metadata: ObjectMeta {
            name: Some(agent.opts.node_name.clone()),
            labels: Some(labels(agent)),
            annotations: Some(annotations(agent)),
            ..Default::default()
        },
        spec: None,
        status: None,
    };
    let uid = match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => n.metadata.uid,
        Err(e) if is_status(&e, 409) => {
            // A merge patch keeps labels and taints others set (kubectl label, cordon).
            // The certificate fingerprint annotation older agents wrote is left alone:
            // nothing reads it any more (the API server verifies agents against the CA).
            let patch =
                json!({"metadata": {"labels": labels(agent), "annotations": annotations(agent)}});
            nodes
                .patch(
                    &agent.opts.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .context("updating the existing Node")?
                .metadata
                .uid
        }
        Err(e) => return Err(anyhow::Error::new(e).context("creating the Node")),
    };
    write_status(agent, now).await?;
    lease::ensure_lease(&agent.client, &agent.opts.node_name, uid.as_deref())
        .await
        .context("creating the node Lease")?;
    Ok(())
}

async fn write_status(agent: &Agent, ready_since: Timestamp) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let patch = json!({"status": status(agent, ready_since)});
    nodes
        .patch_status(
            &agent.opts.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Renew the Lease every 10 s and rewrite the status every minute; if the Node was deleted
/// under us, register again (as the kubelet does).
pub async fn heartbeat(agent: Arc<Agent>) {
    let ready_since = Timestamp::now();
    let mut lease_tick = tokio::time::interval(lease::LEASE_RENEW_EVERY);
    let mut last_status = tokio::time::Instant::now();
    lease_tick.tick().await;
    loop {
        lease_tick.tick().await;
        let renewed = lease::renew_lease(&agent.client, &agent.opts.node_name).await;
        let need_register = matches!(&renewed, Err(e) if is_status(e, 404));
        if let Err(e) = &renewed {
            tracing::warn!(error = %e, "renewing the node Lease failed");
        }
        if last_status.elapsed() >= STATUS_EVERY || need_register {
            last_status = tokio::time::Instant::now();
            match write_status(&agent, ready_since).await {
                Err(e) if is_status(&e, 404) || need_register => {
                    if let Err(e) = register(&agent).await {
                        tracing::warn!(error = %e, "registering the node again failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "writing the node status failed"),
                Ok(()) => {}
            }
        }
    }
}
