//! The node half of a hollow kubelet: the Node object, its Lease heartbeat and its status.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

use spindle_meta::lease::{conditions, ensure_lease, renew_lease, LEASE_RENEW_EVERY};

use crate::ipam::{self, PodBlock};
use crate::{Hollow, HollowOptions};

/// The kubelet's nodeStatusReportFrequency default is 5 minutes when leases are on; we
/// report more often so `kubectl get nodes` shows live heartbeats, but still rarely.
pub const STATUS_EVERY: Duration = Duration::from_secs(60);
/// Floor between two status writes of one node, so a controller that keeps flipping the
/// Ready condition cannot make us spin.
const MIN_STATUS_GAP: Duration = Duration::from_secs(2);
pub const HOLLOW_LABEL: &str = "spindle.dev/hollow";
pub const KUBELET_VERSION: &str = "v1.33.0-hollow";
const EPHEMERAL_STORAGE: &str = "100Gi";

/// What never changes about one hollow node.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub name: String,
    pub ip: Ipv4Addr,
    pub block: PodBlock,
    /// Derived from the name, so a restarted process reports the same machine.
    pub machine_id: String,
    pub system_uuid: String,
}

impl NodeIdentity {
    pub fn new(prefix: &str, index: usize, max_pods: u32) -> Result<Self> {
        let name = format!("{prefix}-{index}");
        let digest = hex::encode(Sha256::digest(format!("spindle-hollow/{name}")));
        let system_uuid = format!(
            "{}-{}-{}-{}-{}",
            &digest[0..8],
            &digest[8..12],
            &digest[12..16],
            &digest[16..20],
            &digest[20..32]
        );
        Ok(NodeIdentity {
            ip: ipam::node_ip(index)?,
            block: PodBlock::for_node(index, max_pods)?,
            machine_id: digest[32..64].to_string(),
            system_uuid,
            name,
        })
    }
}

/// One node's live state, shared by its heartbeat task and the node watch.
pub struct NodeState {
    pub id: NodeIdentity,
    /// Asks the heartbeat task for a status write now (Ready was lost, or the Node is gone).
    pub wake: Notify,
    /// Set once the Node and its Lease exist.
    pub registered: AtomicBool,
    /// The node's own API client (its client certificate), once issued.
    pub client: OnceLock<kube::Client>,
    /// lastTransitionTime of our Ready=True: kept across status writes, reset when the
    /// control plane had set Ready to something else.
    ready_since: Mutex<Timestamp>,
}

impl NodeState {
    pub fn new(id: NodeIdentity) -> Self {
        NodeState {
            id,
            wake: Notify::new(),
            registered: AtomicBool::new(false),
            client: OnceLock::new(),
            ready_since: Mutex::new(Timestamp::now()),
        }
    }

    /// The node's client; the shared one before registration has issued its own (no
    /// write is made as the node before then).
    pub fn client(&self, h: &Hollow) -> kube::Client {
        self.client.get().unwrap_or(&h.client).clone()
    }

    fn ready_since(&self) -> Timestamp {
        *self.ready_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_ready_since(&self, t: Timestamp) {
        *self.ready_since.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

pub fn labels(id: &NodeIdentity) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", id.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", "hollow"),
        (HOLLOW_LABEL, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn node_status(
    id: &NodeIdentity,
    opts: &HollowOptions,
    boot_id: &str,
    heartbeat: Timestamp,
    ready_since: Timestamp,
) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", opts.cpu.clone()),
        ("memory", opts.memory.clone()),
        ("pods", opts.pods.to_string()),
        ("ephemeral-storage", EPHEMERAL_STORAGE.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(conditions(heartbeat, ready_since)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: id.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: id.name.clone(),
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            boot_id: boot_id.into(),
            container_runtime_version: "hollow://0.1".into(),
            kernel_version: "6.1.0-hollow".into(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: id.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: "Spindle hollow node".into(),
            system_uuid: id.system_uuid.clone(),
            ..Default::default()
        }),
        phase: None,
        ..Default::default()
    }
}

pub fn build_node(id: &NodeIdentity, opts: &HollowOptions, boot_id: &str, now: Timestamp) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels(id)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(id.block.cidr()),
            pod_cidrs: Some(vec![id.block.cidr()]),
            ..Default::default()
        }),
        status: Some(node_status(id, opts, boot_id, now, now)),
    }
}

/// Whether a Node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn ready_transition(node: &Node) -> Option<Timestamp> {
    let c = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    c.last_transition_time.as_ref().map(|t| t.0)
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Create the Node (or take over an existing one, as a restarted kubelet does), write its
/// status at once so it is Ready without waiting for the next heartbeat, and make sure
/// its Lease exists.
async fn register(h: &Hollow, n: &NodeState) -> Result<()> {
    let client = match n.client.get() {
        Some(c) => c.clone(),
        None => {
            let c = h.sign_up(&n.id.name).await?;
            n.client.get_or_init(|| c).clone()
        }
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now();
    let node = build_node(&n.id, &h.opts, &h.boot_id, now);
    let uid = match nodes.create(&PostParams::default(), &node).await {
        Ok(created) => {
            n.set_ready_since(now);
            created.metadata.uid
        }
        Err(e) if is_status(&e, 409) => {
            // Merge patch so labels others added (e.g. by kubectl label) stay.
            let patch = json!({"metadata": {"labels": labels(&n.id)}});
            let existing = nodes
                .patch(&n.id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            n.set_ready_since(ready_transition(&existing).unwrap_or(now));
            write_status(h, n).await?;
            existing.metadata.uid
        }
        Err(e) => return Err(e.into()),
    };
    ensure_lease(&client, &n.id.name, uid.as_deref()).await?;
    n.registered.store(true, Ordering::Relaxed);
    h.stats.nodes_registered.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(node = %n.id.name, "registered");
    Ok(())
}

/// Write the node's whole status. A merge patch replaces the conditions list, which
/// also puts Ready back to True if the node lifecycle controller had set it Unknown.
async fn write_status(h: &Hollow, n: &NodeState) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(n.client(h));
    let status = node_status(
        &n.id,
        &h.opts,
        &h.boot_id,
        Timestamp::now(),
        n.ready_since(),
    );
    let patch = json!({ "status": status });
    nodes
        .patch_status(&n.id.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The first instant at or after `now` on the grid `start + offset + k * period`: each node
/// keeps its own phase, so renewals stay spread even when registration ran late.
pub fn next_slot(start: Instant, offset: Duration, period: Duration, now: Instant) -> Instant {
    let first = start + offset;
    if now <= first {
        return first;
    }
    let behind = (now - first).as_nanos();
    let periods = behind.div_ceil(period.as_nanos().max(1));
    first + period.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX))
}

/// Spread `i` of `count` evenly over `period`.
pub fn phase(i: usize, count: usize, period: Duration) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let i = u32::try_from(i).unwrap_or(0);
    period / count * i
}

/// Register, then heartbeat forever: the Lease every 10 s, the status every 60 s, and the
/// status at once when woken by the node watch.
pub async fn heartbeat(h: Arc<Hollow>, idx: usize) {
    let n = &h.nodes[idx];
    let mut backoff = Duration::from_millis(500);
    loop {
        let res = {
            // Bounded so 1,000 nodes starting at once do not flood the API server.
            let _permit = h.register_gate.acquire().await;
            register(&h, n).await
        };
        match res {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(node = %n.id.name, error = %e, "registering node failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    let count = h.nodes.len();
    let now = Instant::now();
    let lease_at = next_slot(
        h.started,
        phase(idx, count, LEASE_RENEW_EVERY),
        LEASE_RENEW_EVERY,
        now,
    );
    let status_at = next_slot(
        h.started,
        phase(idx, count, STATUS_EVERY),
        STATUS_EVERY,
        now + STATUS_EVERY / 2,
    );
    let mut lease_tick = tokio::time::interval_at(lease_at, LEASE_RENEW_EVERY);
    lease_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut status_tick = tokio::time::interval_at(status_at, STATUS_EVERY);
    status_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last_status = Instant::now();
    loop {
        tokio::select! {
            _ = lease_tick.tick() => match renew_lease(&n.client(&h), &n.id.name).await {
                Ok(()) => { h.stats.lease_renewals.fetch_add(1, Ordering::Relaxed); }
                Err(e) if is_status(&e, 404) => {
                    tracing::info!(node = %n.id.name, "lease or node gone; registering again");
                    reregister(&h, n).await;
                }
                Err(e) => {
                    h.stats.lease_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = %n.id.name, error = %e, "lease renewal failed");
                }
            },
            woken = async {
                tokio::select! {
                    _ = status_tick.tick() => false,
                    _ = n.wake.notified() => true,
                }
            } => {
                if woken {
                    tokio::time::sleep_until(last_status + MIN_STATUS_GAP).await;
                }
                last_status = Instant::now();
                match write_status(&h, n).await {
                    Ok(()) => { h.stats.status_updates.fetch_add(1, Ordering::Relaxed); }
                    Err(e) if is_status(&e, 404) => {
                        tracing::info!(node = %n.id.name, "node object gone; registering again");
                        reregister(&h, n).await;
                    }
                    Err(e) => {
                        h.stats.status_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(node = %n.id.name, error = %e, "status update failed");
                    }
                }
            }
        }
    }
}

async fn reregister(h: &Hollow, n: &NodeState) {
    if n.registered.swap(false, Ordering::Relaxed) {
        h.stats.nodes_registered.fetch_sub(1, Ordering::Relaxed);
    }
    let _permit = h.register_gate.acquire().await;
    if let Err(e) = register(h, n).await {
        // The next heartbeat tick tries again.
        tracing::warn!(node = %n.id.name, error = %e, "registering node again failed");
    }
}

/// One watch over all hollow Nodes: when the control plane marks one of ours not Ready
/// (or it is deleted) while we are alive, wake its heartbeat to write the status now.
pub async fn watch_nodes(h: Arc<Hollow>) {
    let api: Api<Node> = Api::all(h.client.clone());
    let cfg = watcher::Config::default().labels(&format!("{HOLLOW_LABEL}=true"));
    let mut events = watcher(api, cfg).default_backoff().boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                let Some(n) = node_of(&h, &node) else {
                    continue;
                };
                if n.registered.load(Ordering::Relaxed) && !is_ready(&node) {
                    tracing::info!(node = %n.id.name, "node is marked not Ready while we are alive; reporting Ready");
                    n.set_ready_since(Timestamp::now());
                    n.wake.notify_one();
                }
            }
            Ok(watcher::Event::Delete(node)) => {
                let Some(n) = node_of(&h, &node) else {
                    continue;
                };
                if n.registered.load(Ordering::Relaxed) {
                    tracing::info!(node = %n.id.name, "node object deleted; registering again");
                    n.wake.notify_one();
                }
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
        }
    }
}

fn node_of<'a>(h: &'a Hollow, node: &Node) -> Option<&'a NodeState> {
    let name = node.metadata.name.as_deref()?;
    h.by_name.get(name).map(|&i| &h.nodes[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> HollowOptions {
        HollowOptions {
            server: "https://127.0.0.1:6443".into(),
            token: "t".into(),
            count: 3,
            prefix: "hollow".into(),
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: 110,
            finish: Default::default(),
        }
    }

    #[test]
    fn node_object() {
        let id = NodeIdentity::new("hollow", 2, 110).unwrap();
        let now: Timestamp = "2025-01-02T03:04:05Z".parse().unwrap();
        let node = build_node(&id, &opts(), "boot", now);
        let v = serde_json::to_value(&node).unwrap();
        assert_eq!(v["metadata"]["name"], "hollow-2");
        let l = &v["metadata"]["labels"];
        assert_eq!(l["kubernetes.io/hostname"], "hollow-2");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["kubernetes.io/arch"], "amd64");
        assert_eq!(l["node.kubernetes.io/instance-type"], "hollow");
        assert_eq!(l["spindle.dev/hollow"], "true");
        assert_eq!(v["spec"]["podCIDR"], "10.128.2.0/24");
        let s = &v["status"];
        for k in ["capacity", "allocatable"] {
            assert_eq!(s[k]["cpu"], "4");
            assert_eq!(s[k]["memory"], "16Gi");
            assert_eq!(s[k]["pods"], "110");
            assert_eq!(s[k]["ephemeral-storage"], "100Gi");
        }
        assert_eq!(
            s["addresses"][0],
            json!({"type": "InternalIP", "address": "10.255.0.3"})
        );
        assert_eq!(
            s["addresses"][1],
            json!({"type": "Hostname", "address": "hollow-2"})
        );
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "KubeletReady");
        assert_eq!(ready["message"], "kubelet is posting ready status");
        assert_eq!(ready["lastHeartbeatTime"], "2025-01-02T03:04:05Z");
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert!(s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == t && c["status"] == "False"));
        }
        let info = &s["nodeInfo"];
        assert_eq!(info["kubeletVersion"], KUBELET_VERSION);
        assert_eq!(info["containerRuntimeVersion"], "hollow://0.1");
        assert_eq!(info["operatingSystem"], "linux");
        assert_eq!(info["architecture"], "amd64");
        assert_eq!(info["bootID"], "boot");
        assert_eq!(info["machineID"].as_str().unwrap().len(), 32);
        assert!(is_ready(&node));
        // Same name, same machine: a restarted process reports the same identity.
        let again = NodeIdentity::new("hollow", 2, 110).unwrap();
        assert_eq!(again.system_uuid, id.system_uuid);
        assert_ne!(
            NodeIdentity::new("hollow", 3, 110).unwrap().machine_id,
            id.machine_id
        );
    }

    #[test]
    fn heartbeats_are_spread() {
        let p = Duration::from_secs(10);
        assert_eq!(phase(0, 1000, p), Duration::ZERO);
        assert_eq!(phase(500, 1000, p), Duration::from_secs(5));
        let start = Instant::now();
        let off = Duration::from_secs(3);
        assert_eq!(next_slot(start, off, p, start), start + off);
        assert_eq!(
            next_slot(start, off, p, start + Duration::from_secs(4)),
            start + Duration::from_secs(13)
        );
        assert_eq!(
            next_slot(start, off, p, start + Duration::from_secs(13)),
            start + Duration::from_secs(13)
        );
    }
}
