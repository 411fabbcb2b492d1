//! Pod network sandboxes for the node agent: what the CRI runtime (containerd,
//! CRI-O) does for a pod sandbox's network in a Kubernetes node.
//!
//! This crate owns, per pod:
//!
//! * a persistent named network namespace `/run/netns/<prefix>-<pod uid>`,
//!   created like `ip netns add` (so `ip netns` tooling sees it);
//! * its wiring by the standard CNI plugins from the containernetworking
//!   project, executed per the CNI spec (1.0.0): `loopback` for `lo`, then the
//!   network config list `bridge` (a veth `eth0` on the host bridge, which is
//!   the pod CIDR's gateway and masquerades egress) with `host-local` IPAM,
//!   then `firewall` (FORWARD accepts for the pod) and `portmap` for
//!   `hostPort`s;
//! * a record per sandbox under the state dir, so setup after an agent restart
//!   returns the existing sandbox, teardown runs DEL with what ADD was given,
//!   and [`Network::list`] can find orphans.
//!
//! It also owns the CNI config it writes (`<conf_dir>/10-<bridge>.conflist`)
//! and the host-local IPAM state (`<state_dir>/ipam/<bridge>/`). The host
//! bridge itself is created by the bridge plugin on first use and left in
//! place on teardown, as in Kubernetes.
//!
//! [`Sandbox::enter`] runs code inside a pod's namespace on a throwaway OS
//! thread: sockets created there (the agent's listeners for Wasm pods) live in
//! the pod's network for their whole life, while no tokio worker thread ever
//! changes namespace.
//!
//! Everything here needs root (CAP_SYS_ADMIN for mounts and setns,
//! CAP_NET_ADMIN for the plugins) and the Debian packages
//! `containernetworking-plugins` and `iptables` (which the first depends on).

mod cni;
mod error;
mod masq;
mod netns;
mod record;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tracing::{debug, info, warn};

pub use error::NetError;

use cni::{Cmd, Invocation};
use record::{Record, Records};

/// The interface name of the pod side of the veth, as in Kubernetes.
const POD_IFNAME: &str = "eth0";

/// The plugins the configs below use; all are checked at start-up.
const PLUGINS: [&str; 5] = ["loopback", "bridge", "host-local", "firewall", "portmap"];

/// How the node's pod network is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Directory of the CNI plugin binaries (default `/usr/lib/cni`, where
    /// Debian's containernetworking-plugins puts them).
    pub cni_bin_dir: PathBuf,
    /// Where the network config list is written (under the agent's data dir).
    pub conf_dir: PathBuf,
    /// host-local IPAM state (`ipam/`) and our sandbox records
    /// (`sandboxes/`), under the agent's data dir so they survive restarts.
    pub state_dir: PathBuf,
    /// Host bridge name; also the CNI network name, so two agents on one host
    /// with different bridges keep separate IPAM state and iptables chains.
    /// At most 15 characters.
    pub bridge: String,
    /// Netns names are `<prefix>-<pod uid>`.
    pub netns_prefix: String,
    /// This node's pod CIDR; the first address is the gateway, on the bridge.
    pub pod_cidr: ipnet::Ipv4Net,
    /// MTU of the bridge and the pods' `eth0`.
    pub mtu: u32,
    /// Let the bridge plugin masquerade everything the pods send outside the pod
    /// CIDR (its `ipMasq`). Off when the caller masquerades itself, e.g. to leave
    /// traffic to other nodes' pods unNATed.
    pub ip_masq: bool,
}

impl NetConfig {
    /// Defaults for an agent whose data dir is `data_dir`: plugins from
    /// `/usr/lib/cni`, config in `<data_dir>/cni/net.d`, state in
    /// `<data_dir>/cni/state`, bridge `spindle0`, netns prefix `spindle`,
    /// MTU 1500.
    pub fn new(data_dir: &Path, pod_cidr: ipnet::Ipv4Net) -> Self {
        NetConfig {
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            conf_dir: data_dir.join("cni").join("net.d"),
            state_dir: data_dir.join("cni").join("state"),
            bridge: "spindle0".into(),
            netns_prefix: "spindle".into(),
            pod_cidr,
            mtu: 1500,
            ip_masq: true,
        }
    }
}

/// The pod a sandbox is for. Namespace and name only go to the plugins as
/// `K8S_POD_NAMESPACE`/`K8S_POD_NAME` in CNI_ARGS, as kubelet passes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A container port published on the node (a `hostPort`), applied by the
/// portmap plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (case-insensitive: Kubernetes spells them in
    /// upper case).
    pub protocol: String,
    /// Host address to publish on; `None` (or `0.0.0.0`) means all.
    pub host_ip: Option<String>,
}

/// A pod's network: its namespace and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    pub uid: String,
    /// `/run/netns/<prefix>-<uid>`.
    pub netns_path: PathBuf,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl Sandbox {
    /// Runs `f` on a fresh OS thread that has joined the pod's network
    /// namespace and returns its result; sockets `f` creates belong to the
    /// pod's network for good. The calling thread's namespace never changes.
    ///
    /// This blocks the caller until `f` returns: keep `f` short (create and
    /// bind sockets, then hand them back) or call it from `spawn_blocking`.
    /// A panic in `f` is resumed on the caller.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
        netns::run_in(&self.netns_path, f)
    }

    /// A tokio runtime whose every thread (workers and blocking pool) lives
    /// in the pod's network namespace: whatever runs on it opens its sockets
    /// in the pod's network, including code that creates sockets itself
    /// (WASI sockets, HTTP clients) and cannot be handed a pre-made one.
    /// `name` labels its threads. With `resolv_conf`, C-library name lookups on
    /// these threads use that file instead of the host's `/etc/resolv.conf`.
    pub fn runtime(
        &self,
        name: &str,
        workers: usize,
        resolv_conf: Option<&Path>,
    ) -> Result<PodRuntime, NetError> {
        netns::runtime_in(&self.netns_path, name, workers, resolv_conf)
    }
}

/// A tokio runtime inside a pod's network namespace (see
/// [`Sandbox::runtime`]). Dropping it stops its threads without waiting,
/// which is safe from async code too.
pub struct PodRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl PodRuntime {
    pub fn handle(&self) -> tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the runtime is only taken out in drop"),
        }
    }
}

impl Drop for PodRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PodRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRuntime").finish_non_exhaustive()
    }
}

/// The node's pod network. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NetConfig,
    /// The network config list (bridge + portmap), as written to disk.
    conflist: Value,
    conflist_path: PathBuf,
    /// A single-plugin network for `lo`, run separately from the list the
    /// way containerd and CRI-O do.
    loopback: Value,
    records: Records,
    /// PATH handed to the plugins.
    path_env: String,
    /// One lock per pod uid, so setup and teardown of the same pod never
    /// interleave while different pods proceed in parallel.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// Validates `cfg`, checks that the plugins (and iptables, which they
    /// run) are installed and speak CNI 1.0.0, and writes the network config
    /// list. Blocking (a few short file writes and plugin VERSION calls);
    /// meant for agent start-up.
    pub fn new(cfg: NetConfig) -> Result<Self, NetError> {
        validate_config(&cfg)?;
        let path_env = plugin_path_env();
        for plugin in PLUGINS {
            cni::check_version(&cfg.cni_bin_dir, plugin, &path_env)?;
        }
        // bridge (ipMasq) and portmap exec iptables; without it ADD fails
        // half-way with a message about exec, so say it up front.
        if !on_path(&path_env, "iptables") {
            return Err(NetError::ToolMissing {
                tool: "iptables",
                package: "iptables",
                path: path_env,
            });
        }

        let cidr = cfg.pod_cidr.trunc();
        let gateway = gateway_of(&cfg.pod_cidr);
        let ipam_dir = cfg.state_dir.join("ipam");
        let conflist = json!({
            "cniVersion": cni::CNI_VERSION,
            "name": cfg.bridge,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": cfg.bridge,
                    "isGateway": true,
                    "ipMasq": cfg.ip_masq,
                    // Lets a pod reach itself through its own hostPort or a
                    // Service VIP (kubelet's default hairpin-veth mode).
                    "hairpinMode": true,
                    "mtu": cfg.mtu,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": cidr.to_string(), "gateway": gateway.to_string() }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": ipam_dir,
                    }
                },
                {
                    // Accepts the pod's traffic in the filter FORWARD chain.
                    // The bridge plugin relies on FORWARD accepting it, which
                    // fails on hosts with a DROP policy (any Docker host); and
                    // with br_netfilter loaded that includes pod-to-pod
                    // traffic on the bridge.
                    "type": "firewall"
                },
                {
                    "type": "portmap",
                    "capabilities": { "portMappings": true },
                    // Masquerade hairpin and localhost-originated hostPort
                    // traffic, so 127.0.0.1:<hostPort> works.
                    "snat": true
                }
            ]
        });
        let loopback = json!({
            "cniVersion": cni::CNI_VERSION,
            "name": "cni-loopback",
            "type": "loopback",
        });

        for dir in [&cfg.conf_dir, &cfg.state_dir, &ipam_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| NetError::io(format!("creating {}", dir.display()), e))?;
        }
        let conflist_path = cfg.conf_dir.join(format!("10-{}.conflist", cfg.bridge));
        write_atomic(&conflist_path, &conflist)?;
        info!(conflist = %conflist_path.display(), bridge = %cfg.bridge, pod_cidr = %cidr, "pod network configured");

        Ok(Network {
            inner: Arc::new(Inner {
                records: Records::new(&cfg.state_dir),
                cfg,
                conflist,
                conflist_path,
                loopback,
                path_env,
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The config this network was built from.
    pub fn config(&self) -> &NetConfig {
        &self.inner.cfg
    }

    /// The network config list written by [`Network::new`].
    pub fn conflist_path(&self) -> &Path {
        &self.inner.conflist_path
    }

    /// host-local's reservation directory: one file per allocated IP, named
    /// after the address and holding the pod uid.
    pub fn ipam_dir(&self) -> PathBuf {
        self.inner
            .cfg
            .state_dir
            .join("ipam")
            .join(&self.inner.cfg.bridge)
    }

    /// The netns path a pod's sandbox has (or would have).
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        Path::new(netns::NETNS_RUN_DIR).join(format!("{}-{uid}", self.inner.cfg.netns_prefix))
    }

    /// Creates the pod's sandbox: netns, `lo` up, `eth0` with an address
    /// from the pod CIDR, `port_mappings` published. If the pod already has
    /// a sandbox that passes CNI CHECK (agent restart, retry), returns it
    /// unchanged (its port mappings are those it was created with). A
    /// recorded sandbox that fails CHECK, or whose netns is gone, is torn
    /// down and created anew.
    pub async fn setup(
        &self,
        pod: &PodRef,
        port_mappings: &[PortMapping],
    ) -> Result<Sandbox, NetError> {
        validate_pod(pod)?;
        let mappings = port_mappings_json(port_mappings)?;
        let lock = self.lock(&pod.uid);
        let result = {
            let _held = lock.lock().await;
            self.setup_locked(pod, mappings).await
        };
        self.unlock(&pod.uid, lock);
        result
    }

    async fn setup_locked(&self, pod: &PodRef, mappings: Value) -> Result<Sandbox, NetError> {
        let uid = pod.uid.as_str();
        let existing = self.inner.records.load(uid).await;
        let existing = match existing {
            Ok(r) => r,
            Err(e) => {
                warn!(%uid, error = %e, "unreadable sandbox record; recreating the sandbox");
                None
            }
        };
        if let Some(rec) = &existing {
            if let Some(sandbox) = sandbox_of(rec) {
                if netns::is_netns(&rec.netns_path) {
                    match self.check(rec).await {
                        Ok(()) => {
                            debug!(%uid, ip = %sandbox.ip, "reusing existing pod sandbox");
                            return Ok(sandbox);
                        }
                        Err(e) => {
                            warn!(%uid, error = %e, "existing pod sandbox failed CNI CHECK; recreating it")
                        }
                    }
                } else {
                    warn!(%uid, netns = %rec.netns_path.display(), "pod sandbox's netns is gone; recreating it");
                }
            }
        }
        if existing.is_some()
            || self.inner.records.exists(uid).await
            || netns::is_netns(&self.netns_path(uid))
        {
            self.teardown_locked(uid, existing).await?;
        }
        self.create(pod, mappings).await
    }

    async fn create(&self, pod: &PodRef, mappings: Value) -> Result<Sandbox, NetError> {
        let uid = pod.uid.as_str();
        let netns_path = self.netns_path(uid);
        {
            let p = netns_path.clone();
            tokio::task::spawn_blocking(move || netns::create(&p))
                .await
                .map_err(|e| NetError::netns(&netns_path, "create", std::io::Error::other(e)))??;
        }
        let mut rec = Record {
            uid: uid.to_string(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            netns_path: netns_path.clone(),
            config: self.inner.conflist.clone(),
            port_mappings: mappings,
            loopback_result: None,
            result: None,
            ip: None,
            gateway: None,
        };
        // Recorded before ADD: if the agent dies mid-ADD, the record is what
        // lets a later teardown (or orphan cleanup) find and undo it.
        if let Err(e) = self.inner.records.store(&rec).await {
            let _ = netns::remove(&netns_path);
            return Err(e);
        }

        match self.add(&mut rec).await {
            Ok(sandbox) => {
                info!(%uid, ip = %sandbox.ip, netns = %netns_path.display(), "pod sandbox created");
                Ok(sandbox)
            }
            Err(e) => {
                // Like kubelet after a failed RunPodSandbox: undo whatever
                // part of ADD happened so IPs and iptables rules do not leak.
                if let Err(cleanup) = self.teardown_locked(uid, Some(rec)).await {
                    warn!(%uid, error = %cleanup, "cleaning up after failed pod network setup");
                }
                Err(e)
            }
        }
    }

    async fn add(&self, rec: &mut Record) -> Result<Sandbox, NetError> {
        let netns = rec.netns_path.to_string_lossy().into_owned();
        let cni_args = cni_args(&rec.uid, &rec.namespace, &rec.name);
        let lo = self.invocation(&rec.uid, &netns, "lo", &cni_args);
        let lo_conf = cni::plugin_config(
            &self.inner.loopback,
            &self.inner.loopback,
            None,
            &Map::new(),
        );
        rec.loopback_result = cni::exec(&lo, Cmd::Add, &lo_conf).await?;

        let inv = self.invocation(&rec.uid, &netns, POD_IFNAME, &cni_args);
        let runtime = runtime_config(&rec.port_mappings);
        let mut prev: Option<Value> = None;
        for plugin in plugins_of(&rec.config) {
            let conf = cni::plugin_config(&rec.config, plugin, prev.as_ref(), &runtime);
            let out = cni::exec(&inv, Cmd::Add, &conf).await?;
            // Each plugin's result is the next one's prevResult; the last is
            // the list's result.
            prev = out.or(prev);
        }
        let result =
            prev.ok_or_else(|| NetError::Config("network config list has no plugins".into()))?;
        let (ip, gateway) =
            cni::pod_ipv4(&result, POD_IFNAME).ok_or_else(|| NetError::BadResult {
                plugin: "bridge".into(),
                command: Cmd::Add.as_str(),
                uid: rec.uid.clone(),
                reason: format!("no IPv4 address for {POD_IFNAME} in {result}"),
            })?;
        rec.ip = Some(ip);
        rec.gateway = Some(gateway.unwrap_or_else(|| gateway_of(&self.inner.cfg.pod_cidr)));
        rec.result = Some(result);
        self.inner.records.store(rec).await?;
        sandbox_of(rec)
            .ok_or_else(|| NetError::Config("sandbox record incomplete after ADD".into()))
    }

    /// CNI CHECK of every plugin against the cached ADD results.
    async fn check(&self, rec: &Record) -> Result<(), NetError> {
        let netns = rec.netns_path.to_string_lossy().into_owned();
        let cni_args = cni_args(&rec.uid, &rec.namespace, &rec.name);
        let lo = self.invocation(&rec.uid, &netns, "lo", &cni_args);
        let lo_conf = cni::plugin_config(
            &self.inner.loopback,
            &self.inner.loopback,
            rec.loopback_result.as_ref(),
            &Map::new(),
        );
        cni::exec(&lo, Cmd::Check, &lo_conf).await?;
        let inv = self.invocation(&rec.uid, &netns, POD_IFNAME, &cni_args);
        let runtime = runtime_config(&rec.port_mappings);
        for plugin in plugins_of(&rec.config) {
            let conf = cni::plugin_config(&rec.config, plugin, rec.result.as_ref(), &runtime);
            cni::exec(&inv, Cmd::Check, &conf).await?;
        }
        Ok(())
    }

    /// Removes the pod's sandbox: CNI DEL (in reverse plugin order, with the
    /// ADD result as prevResult; also when the netns is already gone, so the
    /// IP is released), then the netns and the record. A pod without a
    /// sandbox is success. On a DEL failure the record is kept so a later
    /// call retries.
    pub async fn teardown(&self, uid: &str) -> Result<(), NetError> {
        if !valid_uid(uid) {
            return Err(NetError::InvalidUid(uid.to_string()));
        }
        let lock = self.lock(uid);
        let result = {
            let _held = lock.lock().await;
            let rec = match self.inner.records.load(uid).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(%uid, error = %e, "unreadable sandbox record; tearing down with the current config");
                    None
                }
            };
            self.teardown_locked(uid, rec).await
        };
        self.unlock(uid, lock);
        result
    }

    async fn teardown_locked(&self, uid: &str, rec: Option<Record>) -> Result<(), NetError> {
        let netns_path = rec
            .as_ref()
            .map(|r| r.netns_path.clone())
            .unwrap_or_else(|| self.netns_path(uid));
        let alive = netns::is_netns(&netns_path);
        if rec.is_none() && !alive && !self.inner.records.exists(uid).await {
            // Never set up (or already torn down), except perhaps a stale
            // mount point file.
            return netns::remove(&netns_path);
        }

        // Without a readable record: DEL with what we would have used, which
        // is right unless the config changed in between.
        let (config, mappings, result, loopback_result, namespace, name) = match &rec {
            Some(r) => (
                r.config.clone(),
                r.port_mappings.clone(),
                r.result.clone(),
                r.loopback_result.clone(),
                r.namespace.clone(),
                r.name.clone(),
            ),
            None => (
                self.inner.conflist.clone(),
                json!([]),
                None,
                None,
                String::new(),
                String::new(),
            ),
        };
        // Per the spec a DEL without a namespace must still release
        // resources: the plugins then skip the interfaces and free the IP.
        let netns = if alive {
            netns_path.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let cni_args = cni_args(uid, &namespace, &name);
        let inv = self.invocation(uid, &netns, POD_IFNAME, &cni_args);
        let runtime = runtime_config(&mappings);
        for plugin in plugins_of(&config).iter().rev() {
            let conf = cni::plugin_config(&config, plugin, result.as_ref(), &runtime);
            cni::exec(&inv, Cmd::Del, &conf).await?;
        }
        if masquerades(&config) {
            let network = config
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            masq::remove_leftovers(&self.inner.path_env, network, uid).await?;
        }
        if alive {
            let lo = self.invocation(uid, &netns, "lo", &cni_args);
            let lo_conf = cni::plugin_config(
                &self.inner.loopback,
                &self.inner.loopback,
                loopback_result.as_ref(),
                &Map::new(),
            );
            cni::exec(&lo, Cmd::Del, &lo_conf).await?;
        }
        {
            let p = netns_path.clone();
            tokio::task::spawn_blocking(move || netns::remove(&p))
                .await
                .map_err(|e| NetError::netns(&netns_path, "remove", std::io::Error::other(e)))??;
        }
        self.inner.records.remove(uid).await?;
        info!(%uid, "pod sandbox removed");
        Ok(())
    }

    /// UIDs of the pods that have a sandbox record, sorted: compare with the
    /// pods that should exist to find orphans.
    pub async fn list(&self) -> Vec<String> {
        match self.inner.records.uids().await {
            Ok(uids) => uids,
            Err(e) => {
                warn!(dir = %self.inner.records.dir().display(), error = %e, "listing pod sandboxes");
                Vec::new()
            }
        }
    }

    /// Tears down every recorded sandbox (agent stop), in parallel. All are
    /// attempted; the first error is returned.
    pub async fn teardown_all(&self) -> Result<(), NetError> {
        let mut tasks = tokio::task::JoinSet::new();
        for uid in self.list().await {
            let net = self.clone();
            tasks.spawn(async move { net.teardown(&uid).await });
        }
        let mut first = None;
        while let Some(joined) = tasks.join_next().await {
            let res = joined
                .unwrap_or_else(|e| Err(NetError::io("teardown task", std::io::Error::other(e))));
            if let Err(e) = res {
                warn!(error = %e, "tearing down pod sandbox");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn invocation<'a>(
        &'a self,
        uid: &'a str,
        netns: &'a str,
        ifname: &'a str,
        cni_args: &'a str,
    ) -> Invocation<'a> {
        Invocation {
            bin_dir: &self.inner.cfg.cni_bin_dir,
            path_env: &self.inner.path_env,
            uid,
            netns,
            ifname,
            cni_args,
        }
    }

    fn lock(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(uid.to_string()).or_default().clone()
    }

    /// Drops the uid's lock entry once nobody else holds or waits for it,
    /// so the map does not grow with every pod ever run. Clones are only
    /// made under the map lock, so the count cannot rise behind our back.
    fn unlock(&self, uid: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            locks.remove(uid);
        }
    }
}

fn sandbox_of(rec: &Record) -> Option<Sandbox> {
    Some(Sandbox {
        uid: rec.uid.clone(),
        netns_path: rec.netns_path.clone(),
        ip: rec.ip?,
        gateway: rec.gateway?,
    })
    .filter(|_| rec.result.is_some())
}

fn plugins_of(config: &Value) -> Vec<&Value> {
    config
        .get("plugins")
        .and_then(Value::as_array)
        .map(|p| p.iter().collect())
        .unwrap_or_default()
}

/// Whether the config's bridge plugin sets up ipMasq rules.
fn masquerades(config: &Value) -> bool {
    plugins_of(config).iter().any(|p| {
        cni::plugin_type(p) == "bridge" && p.get("ipMasq").and_then(Value::as_bool) == Some(true)
    })
}

fn runtime_config(mappings: &Value) -> Map<String, Value> {
    let mut rt = Map::new();
    if mappings.as_array().is_some_and(|m| !m.is_empty()) {
        rt.insert("portMappings".into(), mappings.clone());
    }
    rt
}

/// CNI_ARGS as kubelet's dockershim/containerd pass them; IgnoreUnknown
/// keeps plugins that do not know the K8S_ keys from rejecting them.
fn cni_args(uid: &str, namespace: &str, name: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={uid};K8S_POD_UID={uid}"
    )
}

fn gateway_of(cidr: &ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).saturating_add(1))
}

/// A valid CNI container ID (spec: alphanumeric first, then alphanumerics,
/// `_`, `.`, `-`), short enough for a file name with prefix and suffix.
/// Kubernetes pod UIDs (UUIDs) always are.
pub(crate) fn valid_uid(uid: &str) -> bool {
    valid_name(uid) && uid.len() <= 200
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn validate_pod(pod: &PodRef) -> Result<(), NetError> {
    if !valid_uid(&pod.uid) {
        return Err(NetError::InvalidUid(pod.uid.clone()));
    }
    for (field, value) in [("namespace", &pod.namespace), ("name", &pod.name)] {
        if value.contains([';', '=']) {
            return Err(NetError::InvalidPodField {
                field,
                value: value.clone(),
            });
        }
    }
    Ok(())
}

fn validate_config(cfg: &NetConfig) -> Result<(), NetError> {
    // IFNAMSIZ is 16 including the NUL; the bridge name is also the CNI
    // network name, which the spec restricts like container IDs.
    if cfg.bridge.len() > 15 || !valid_name(&cfg.bridge) {
        return Err(NetError::Config(format!(
            "bridge name {:?} must be 1-15 letters, digits, '_', '.' or '-', starting with a letter or digit",
            cfg.bridge
        )));
    }
    if !valid_name(&cfg.netns_prefix) || cfg.netns_prefix.len() > 40 {
        return Err(NetError::Config(format!(
            "netns prefix {:?} must be 1-40 letters, digits, '_', '.' or '-', starting with a letter or digit",
            cfg.netns_prefix
        )));
    }
    // A /31 or /32 leaves no address for pods next to the gateway.
    if cfg.pod_cidr.prefix_len() > 30 {
        return Err(NetError::Config(format!(
            "pod CIDR {} is too small (at most /30)",
            cfg.pod_cidr
        )));
    }
    if !(576..=65535).contains(&cfg.mtu) {
        return Err(NetError::Config(format!(
            "MTU {} out of range 576-65535",
            cfg.mtu
        )));
    }
    Ok(())
}

/// The portMappings runtime config (CNI conventions document), validated.
/// Mappings without a host port are not published, as in kubelet.
fn port_mappings_json(mappings: &[PortMapping]) -> Result<Value, NetError> {
    let mut out = Vec::new();
    for m in mappings {
        let bad = |reason: &str| NetError::InvalidPortMapping {
            mapping: format!("{m:?}"),
            reason: reason.to_string(),
        };
        if m.host_port == 0 {
            continue;
        }
        if m.container_port == 0 {
            return Err(bad("container port must not be 0"));
        }
        let protocol = m.protocol.to_ascii_lowercase();
        if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
            return Err(bad("protocol must be tcp, udp or sctp"));
        }
        let mut obj = json!({
            "hostPort": m.host_port,
            "containerPort": m.container_port,
            "protocol": protocol,
        });
        if let Some(host_ip) = m.host_ip.as_deref().filter(|h| !h.is_empty()) {
            let ip: IpAddr = host_ip
                .parse()
                .map_err(|_| bad("host IP is not an IP address"))?;
            if !ip.is_unspecified() {
                obj["hostIP"] = json!(ip.to_string());
            }
        }
        out.push(obj);
    }
    Ok(Value::Array(out))
}

/// The agent's PATH plus the sbin directories, where iptables lives.
fn plugin_path_env() -> String {
    let current = std::env::var("PATH").unwrap_or_default();
    let mut parts: Vec<&str> = current.split(':').filter(|p| !p.is_empty()).collect();
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !parts.contains(&dir) {
            parts.push(dir);
        }
    }
    parts.join(":")
}

fn on_path(path_env: &str, tool: &str) -> bool {
    path_env
        .split(':')
        .any(|dir| Path::new(dir).join(tool).is_file())
}

fn write_atomic(path: &Path, value: &Value) -> Result<(), NetError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| NetError::io("serialising CNI config", e.into()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .map_err(|e| NetError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        NetError::io(
            format!("renaming {} to {}", tmp.display(), path.display()),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_follow_the_cni_container_id_rules() {
        assert!(valid_uid("0b8e4f4c-2d5a-4a53-9e8e-1f0b0a6c7d21"));
        assert!(valid_uid("a.b_c-d"));
        for bad in [
            "",
            "-a",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "a;b",
            &"x".repeat(201),
        ] {
            assert!(!valid_uid(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn port_mappings_are_normalised_and_validated() {
        let m = |host_port, container_port, protocol: &str, host_ip: Option<&str>| PortMapping {
            host_port,
            container_port,
            protocol: protocol.into(),
            host_ip: host_ip.map(String::from),
        };
        let v = port_mappings_json(&[
            m(8080, 80, "TCP", None),
            m(0, 81, "tcp", None),
            m(53, 53, "udp", Some("0.0.0.0")),
            m(9000, 9000, "tcp", Some("127.0.0.1")),
        ])
        .expect("valid");
        assert_eq!(
            v,
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 53, "containerPort": 53, "protocol": "udp"},
                {"hostPort": 9000, "containerPort": 9000, "protocol": "tcp", "hostIP": "127.0.0.1"}
            ])
        );
        assert!(port_mappings_json(&[m(1, 1, "icmp", None)]).is_err());
        assert!(port_mappings_json(&[m(1, 0, "tcp", None)]).is_err());
        assert!(port_mappings_json(&[m(1, 1, "tcp", Some("nope"))]).is_err());
    }

    #[test]
    fn config_validation() {
        let cidr: ipnet::Ipv4Net = "10.42.0.0/24".parse().expect("cidr");
        let ok = NetConfig::new(Path::new("/tmp/x"), cidr);
        assert!(validate_config(&ok).is_ok());
        assert_eq!(
            gateway_of(&"10.42.7.0/24".parse().expect("cidr")),
            Ipv4Addr::new(10, 42, 7, 1)
        );
        let long = NetConfig {
            bridge: "a-very-long-bridge".into(),
            ..ok.clone()
        };
        assert!(validate_config(&long).is_err());
        let tiny = NetConfig {
            pod_cidr: "10.0.0.0/31".parse().expect("cidr"),
            ..ok
        };
        assert!(validate_config(&tiny).is_err());
    }

    #[test]
    fn cni_args_carry_the_pod_identity() {
        assert_eq!(
            cni_args("u1", "default", "web"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=u1;K8S_POD_UID=u1"
        );
    }
}
