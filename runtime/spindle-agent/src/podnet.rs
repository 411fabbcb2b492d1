//! A pod's network on this node: its sandbox (network namespace and IP from the node's
//! pod CIDR, through the CNI plugins), the tokio runtime its Wasm guests run on inside
//! that namespace, and the node-wide network the sandboxes hang off.
//!
//! A sandbox is made when the first container that can use a network starts: WASI p1
//! modules have no sockets at all, so a pod of only p1 modules gets no namespace and no
//! IP (which keeps such pods as cheap as they are, and keeps them from using up the pod
//! CIDR). `hostNetwork: true` pods use the node's namespace and report the node's IP.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use spindle_net::{Network, PodRef, PodRuntime, PortMapping, Sandbox};

/// How the node's pod network is named and found; host-global names come from flags so
/// that two agents (or clusters) on one host do not collide.
#[derive(Clone, Debug)]
pub struct NetOptions {
    pub bridge: String,
    pub netns_prefix: String,
    pub cni_bin_dir: std::path::PathBuf,
    /// The cluster DNS Service IP pods are told to use (`kube-system/kube-dns`).
    pub cluster_dns: std::net::Ipv4Addr,
    pub cluster_domain: String,
    /// Port of the agent's DNS server on the node's address (0: any free port; the
    /// Service IP's port 53 is forwarded to it).
    pub dns_port: u16,
    /// nftables table of the Service proxy (host-global).
    pub nft_table: String,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            bridge: "spindle0".into(),
            netns_prefix: "spindle".into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            cluster_dns: std::net::Ipv4Addr::new(10, 43, 0, 10),
            cluster_domain: spindle_dns::DEFAULT_DOMAIN.into(),
            dns_port: 53,
            nft_table: "spindle".into(),
        }
    }
}

/// The network a pod's containers run in.
pub struct PodNet {
    /// `None` for host-network pods.
    pub sandbox: Option<Sandbox>,
    /// Where the pod's Wasm guests run (threads in the pod's namespace); `None` for
    /// host-network pods, which run on the shared runtime.
    pub runtime: Option<PodRuntime>,
    pub ip: IpAddr,
    /// Cluster names for the pod's outgoing requests (its namespace's search list).
    pub names: Option<Arc<dyn spindle_wasm::NameResolver>>,
}

/// A pod's view of the cluster DNS: its table, with the pod's search list.
pub struct PodNames {
    dns: spindle_dns::ClusterDns,
    search: Vec<String>,
}

impl PodNames {
    pub fn new(dns: spindle_dns::ClusterDns, namespace: &str, domain: &str) -> Self {
        let domain = domain.trim_end_matches('.');
        PodNames {
            dns,
            search: vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
        }
    }
}

impl spindle_wasm::NameResolver for PodNames {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<IpAddr>> + Send + 'a>> {
        Box::pin(async move {
            let ips = self.dns.lookup_ipv4(host, &self.search)?;
            // Headless Services answer with every ready endpoint: spread over them.
            let i = rand::random_range(0..ips.len());
            ips.get(i).copied()
        })
    }
}

impl PodNet {
    pub fn host(ip: IpAddr) -> Self {
        PodNet {
            sandbox: None,
            runtime: None,
            ip,
            names: None,
        }
    }

    /// What a Wasm instance of this pod needs to run in the pod's network.
    pub fn wasm(&self) -> Option<spindle_wasm::PodNetwork> {
        self.runtime.as_ref().map(|rt| spindle_wasm::PodNetwork {
            executor: rt.handle(),
            resolver: self.names.clone(),
        })
    }

    /// Binds a TCP listener on `port` in the pod's network (all addresses).
    pub fn listen(&self, port: u16) -> std::io::Result<std::net::TcpListener> {
        let bind = move || std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port));
        match &self.sandbox {
            Some(sb) => sb
                .enter(bind)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            None => bind(),
        }
    }
}

pub fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's hostPorts, for the portmap plugin.
pub fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
            Some(PortMapping {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                host_ip: p.host_ip.clone().filter(|s| !s.is_empty()),
            })
        })
        .collect()
}

/// Creates (or finds again, after an agent restart) the pod's sandbox and its runtime.
pub async fn setup(
    net: &Network,
    pod: &Pod,
    workers: usize,
    names: Option<Arc<dyn spindle_wasm::NameResolver>>,
    resolv_conf: Option<&std::path::Path>,
) -> Result<PodNet, String> {
    let pref = PodRef {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
    };
    let sandbox = net
        .setup(&pref, &port_mappings(pod))
        .await
        .map_err(|e| format!("setting up the pod's network: {e}"))?;
    let runtime = sandbox
        .runtime(&pref.name, workers, resolv_conf)
        .map_err(|e| format!("starting the pod's runtime: {e}"))?;
    Ok(PodNet {
        ip: IpAddr::V4(sandbox.ip),
        sandbox: Some(sandbox),
        runtime: Some(runtime),
        names,
    })
}

/// The pod's `/etc/resolv.conf` as the kubelet writes it for its dnsPolicy: ClusterFirst
/// (the default) points at the cluster DNS with the namespace's search list, `None`
/// starts empty, `Default` keeps the host's (`None` returned); `dnsConfig` is then merged
/// in as the kubelet merges it (so a ClusterFirst pod keeps the cluster search list).
pub fn resolv_conf(pod: &Pod, cluster_dns: std::net::Ipv4Addr, domain: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let mut conf = match policy {
        "Default" => return None,
        "None" => spindle_dns::ResolvConf::default(),
        _ => spindle_dns::ResolvConf::cluster_first(IpAddr::V4(cluster_dns), ns, domain),
    };
    if let Some(cfg) = &spec.dns_config {
        let options: Vec<(String, Option<String>)> = cfg
            .options
            .iter()
            .flatten()
            .map(|o| (o.name.clone().unwrap_or_default(), o.value.clone()))
            .collect();
        conf.append(
            cfg.nameservers.as_deref().unwrap_or_default(),
            cfg.searches.as_deref().unwrap_or_default(),
            &options,
        );
    }
    Some(conf.render())
}
