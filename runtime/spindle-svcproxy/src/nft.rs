//! The node's Service rules as one nftables table, laid out like kube-proxy's nftables
//! mode:
//!
//! - `services` (jumped to from the `prerouting` and `output` nat hooks, so traffic of
//!   pods and of the node itself is caught) looks the destination up in the
//!   `service-ips` map (ClusterIP . protocol . port) and, for addresses of this node, in
//!   `service-nodeports` (protocol . port);
//! - each Service port has a chain that marks traffic needing masquerade and picks one
//!   ready endpoint with `numgen random mod N`; each endpoint chain DNATs to it;
//! - ports without ready endpoints are in the `no-endpoints` sets, which the filter hooks
//!   reject (the client gets "connection refused" at once, not a timeout);
//! - `postrouting` masquerades marked packets.
//!
//! The whole table is replaced in one `nft -f -` transaction (`table` + `delete table` +
//! the new definition), so the kernel never sees half of an update. nft is driven
//! through its command line, as kube-proxy does, rather than through netlink from Rust:
//! the text is what `nft list table` shows, which keeps what we write and what an
//! operator reads the same.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::model::Snapshot;

/// Packets marked with this bit are masqueraded on the way out (kube-proxy's bit).
const MASQ_MARK: u32 = 0x4000;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("running nft (install nftables): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft rejected the Service rules: {0}")]
    Nft(String),
}

/// A fixed forwarding next to the Services, e.g. the cluster DNS address to the node's
/// own DNS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticDnat {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// TCP or UDP.
    pub protocol: String,
    pub to: SocketAddrV4,
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The `ip` family table the rules live in (a host-global name).
    pub table: String,
    /// Pod traffic: connections to a Service from outside it are masqueraded, so the
    /// endpoint's answer comes back through this node.
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
    /// Forwardings that take precedence over Services with the same address.
    pub statics: Vec<StaticDnat>,
    /// Run nft inside this named network namespace (`ip netns exec`); `None` is the
    /// agent's own namespace.
    pub netns: Option<String>,
    /// Masquerade what this node's pods send out of the cluster's pod network, and only
    /// that: traffic between pods (on any node) keeps its addresses.
    pub pod_masquerade: Option<PodMasquerade>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMasquerade {
    /// This node's pod CIDR (the sources).
    pub pod_cidr: ipnet::Ipv4Net,
    /// Every node's pod CIDR (destinations left alone).
    pub cluster: Vec<ipnet::Ipv4Net>,
}

impl ProxyConfig {
    pub fn new(table: &str) -> Self {
        ProxyConfig {
            table: table.to_owned(),
            cluster_cidr: None,
            statics: Vec::new(),
            netns: None,
            pod_masquerade: None,
        }
    }
}

/// Programs one node's Service rules.
pub struct Proxy {
    cfg: std::sync::Mutex<ProxyConfig>,
    last: Mutex<Option<String>>,
}

fn proto(p: &str) -> Option<&'static str> {
    match p.to_ascii_uppercase().as_str() {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// Chain names may hold `/`, `.` and `-` but no `:`.
fn chain_name(prefix: &str, ns: &str, name: &str, protocol: &str, port: u16) -> String {
    format!("{prefix}-{ns}/{name}/{protocol}/{port}")
}

/// The whole table for `snap`.
pub fn render(cfg: &ProxyConfig, snap: &Snapshot) -> String {
    let t = &cfg.table;
    let mut vips: Vec<String> = Vec::new();
    let mut nodeports: Vec<String> = Vec::new();
    let mut no_ep_vips: Vec<String> = Vec::new();
    let mut no_ep_nodeports: Vec<String> = Vec::new();
    let mut chains = String::new();

    for (i, s) in cfg.statics.iter().enumerate() {
        let Some(p) = proto(&s.protocol) else {
            continue;
        };
        let chain = format!("static-{i}");
        vips.push(format!("{} . {p} . {} : goto {chain}", s.ip, s.port));
        let _ = writeln!(
            chains,
            "  chain {chain} {{\n    meta l4proto {p} dnat to {}:{}\n  }}",
            s.to.ip(),
            s.to.port()
        );
    }
    let taken: Vec<Ipv4Addr> = cfg.statics.iter().map(|s| s.ip).collect();

    for svc in &snap.services {
        if svc.headless || svc.external_name.is_some() && svc.cluster_ips.is_empty() {
            continue;
        }
        let ips: Vec<Ipv4Addr> = svc
            .cluster_ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) if !taken.contains(v4) => Some(*v4),
                _ => None,
            })
            .collect();
        let node_port_svc = matches!(svc.type_.as_str(), "NodePort" | "LoadBalancer");
        for port in &svc.ports {
            let Some(p) = proto(&port.protocol) else {
                continue;
            };
            let node_port = port.node_port.filter(|_| node_port_svc);
            if ips.is_empty() && node_port.is_none() {
                continue;
            }
            let targets: Vec<(Ipv4Addr, u16)> = svc
                .ready_targets(port)
                .into_iter()
                .filter_map(|(ip, n)| match ip {
                    IpAddr::V4(v4) => Some((v4, n)),
                    IpAddr::V6(_) => None,
                })
                .collect();
            if targets.is_empty() {
                for ip in &ips {
                    no_ep_vips.push(format!("{ip} . {p} . {}", port.port));
                }
                if let Some(np) = node_port {
                    no_ep_nodeports.push(format!("{p} . {np}"));
                }
                continue;
            }
            let svc_chain = chain_name("svc", &svc.namespace, &svc.name, p, port.port);
            for ip in &ips {
                vips.push(format!("{ip} . {p} . {} : goto {svc_chain}", port.port));
            }
            let mut body = String::new();
            if let Some(cidr) = cfg.cluster_cidr {
                // From outside the pod network (the node itself, other hosts).
                let _ = writeln!(
                    body,
                    "    ip saddr != {cidr} meta mark set meta mark | {MASQ_MARK:#x}"
                );
            }
            if let Some(np) = node_port {
                let np_chain = chain_name("nodeport", &svc.namespace, &svc.name, p, np);
                nodeports.push(format!("{p} . {np} : goto {np_chain}"));
                let _ = writeln!(
                    chains,
                    "  chain {np_chain} {{\n    meta mark set meta mark | {MASQ_MARK:#x}\n    goto {svc_chain}\n  }}"
                );
            }
            let mut arms = Vec::new();
            for (j, (ip, n)) in targets.iter().enumerate() {
                let ep_chain = format!("ep-{}/{}/{p}/{}/{j}", svc.namespace, svc.name, port.port);
                arms.push(format!("{j} : goto {ep_chain}"));
                // An endpoint reaching itself through the Service (hairpin) must see
                // the answer come from the Service, so it is masqueraded too.
                let _ = writeln!(
                    chains,
                    "  chain {ep_chain} {{\n    ip saddr {ip} meta mark set meta mark | {MASQ_MARK:#x}\n    meta l4proto {p} dnat to {ip}:{n}\n  }}"
                );
            }
            let _ = writeln!(
                body,
                "    numgen random mod {} vmap {{ {} }}",
                targets.len(),
                arms.join(", ")
            );
            let _ = writeln!(chains, "  chain {svc_chain} {{\n{body}  }}");
        }
    }

    for v in [&mut no_ep_vips, &mut no_ep_nodeports] {
        v.sort();
        v.dedup();
    }
    let elements = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!("\n    elements = {{ {} }}", v.join(",\n      "))
        }
    };
    let mut out = String::new();
    // Create-if-missing, delete, define: one transaction that replaces the table.
    let _ = writeln!(out, "table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
    let _ = writeln!(
        out,
        "  map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict{}\n  }}",
        elements(&vips)
    );
    let _ = writeln!(
        out,
        "  map service-nodeports {{\n    type inet_proto . inet_service : verdict{}\n  }}",
        elements(&nodeports)
    );
    let _ = writeln!(
        out,
        "  set no-endpoint-services {{\n    type ipv4_addr . inet_proto . inet_service{}\n  }}",
        elements(&no_ep_vips)
    );
    let _ = writeln!(
        out,
        "  set no-endpoint-nodeports {{\n    type inet_proto . inet_service{}\n  }}",
        elements(&no_ep_nodeports)
    );
    out.push_str(
        "  chain services {
    ip daddr . meta l4proto . th dport vmap @service-ips
    fib daddr type local meta l4proto . th dport vmap @service-nodeports
  }
  chain nat-prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump services
  }
  chain nat-output {
    type nat hook output priority -100; policy accept;
    jump services
  }
",
    );
    let pod_masq = match &cfg.pod_masquerade {
        Some(m) => {
            let mut keep: Vec<String> = m.cluster.iter().map(|c| c.trunc().to_string()).collect();
            keep.push(m.pod_cidr.trunc().to_string());
            keep.sort();
            keep.dedup();
            format!(
                "\n    ip saddr {} ip daddr != {{ {} }} masquerade",
                m.pod_cidr.trunc(),
                keep.join(", ")
            )
        }
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "  chain nat-postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade{pod_masq}\n  }}"
    );
    out.push_str(
        "  chain no-endpoints {
    ip daddr . meta l4proto . th dport @no-endpoint-services reject
    fib daddr type local meta l4proto . th dport @no-endpoint-nodeports reject
  }
  chain filter-input {
    type filter hook input priority -110; policy accept;
    ct state new jump no-endpoints
  }
  chain filter-forward {
    type filter hook forward priority -110; policy accept;
    ct state new jump no-endpoints
  }
  chain filter-output {
    type filter hook output priority -110; policy accept;
    ct state new jump no-endpoints
  }
",
    );
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

impl Proxy {
    pub fn new(cfg: ProxyConfig) -> Self {
        Proxy {
            cfg: std::sync::Mutex::new(cfg),
            last: Mutex::new(None),
        }
    }

    pub fn config(&self) -> ProxyConfig {
        self.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes which pod traffic is masqueraded (the nodes' pod CIDRs changed); takes
    /// effect with the next [`sync`](Self::sync).
    pub fn set_pod_masquerade(&self, m: Option<PodMasquerade>) {
        self.cfg
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pod_masquerade = m;
    }

    /// Replaces the node's Service rules with those for `snap` (nothing is done when
    /// they are unchanged).
    pub async fn sync(&self, snap: &Snapshot) -> Result<(), ProxyError> {
        let cfg = self.config();
        let text = render(&cfg, snap);
        let mut last = self.last.lock().await;
        if last.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        self.nft(&text).await?;
        tracing::debug!(table = %cfg.table, services = snap.services.len(), "Service rules applied");
        *last = Some(text);
        Ok(())
    }

    /// Removes the table (agent stop).
    pub async fn cleanup(&self) -> Result<(), ProxyError> {
        let t = self.config().table;
        self.nft(&format!("table ip {t}\ndelete table ip {t}\n"))
            .await?;
        *self.last.lock().await = None;
        Ok(())
    }

    async fn nft(&self, script: &str) -> Result<(), ProxyError> {
        let mut cmd = match &self.config().netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns, "nft", "-f", "-"]);
                c
            }
            None => {
                let mut c = tokio::process::Command::new("nft");
                c.args(["-f", "-"]);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ProxyError::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(ProxyError::Spawn)?;
        }
        let out = child.wait_with_output().await.map_err(ProxyError::Spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ProxyError::Nft(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointView, ServicePortView, ServiceView};

    fn web(eps: &[(&str, bool)]) -> ServiceView {
        ServiceView {
            namespace: "default".into(),
            name: "web".into(),
            type_: "NodePort".into(),
            cluster_ips: vec!["10.43.0.5".parse().unwrap()],
            headless: false,
            external_name: None,
            ports: vec![ServicePortView {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 80,
                node_port: Some(30080),
            }],
            endpoints: eps
                .iter()
                .map(|(ip, ready)| EndpointView {
                    ip: ip.parse().unwrap(),
                    ready: *ready,
                    hostname: None,
                    node_name: None,
                    ports: vec![("http".into(), "TCP".into(), 8080)],
                })
                .collect(),
        }
    }

    #[test]
    fn ready_endpoints_get_chains_and_unready_ones_none() {
        let mut cfg = ProxyConfig::new("spindle");
        cfg.cluster_cidr = Some("10.42.0.0/16".parse().unwrap());
        let snap = Snapshot {
            services: vec![web(&[
                ("10.42.0.2", true),
                ("10.42.0.3", false),
                ("10.42.0.4", true),
            ])],
        };
        let text = render(&cfg, &snap);
        assert!(
            text.starts_with("table ip spindle\ndelete table ip spindle\n"),
            "{text}"
        );
        assert!(
            text.contains("10.43.0.5 . tcp . 80 : goto svc-default/web/tcp/80"),
            "{text}"
        );
        assert!(
            text.contains("tcp . 30080 : goto nodeport-default/web/tcp/30080"),
            "{text}"
        );
        assert!(text.contains("numgen random mod 2 vmap { 0 : goto ep-default/web/tcp/80/0, 1 : goto ep-default/web/tcp/80/1 }"), "{text}");
        assert!(text.contains("dnat to 10.42.0.2:8080"), "{text}");
        assert!(text.contains("dnat to 10.42.0.4:8080"), "{text}");
        assert!(
            !text.contains("10.42.0.3"),
            "an unready endpoint got traffic:\n{text}"
        );
        assert!(
            text.contains("ip saddr != 10.42.0.0/16 meta mark set"),
            "{text}"
        );
        cfg.pod_masquerade = Some(PodMasquerade {
            pod_cidr: "10.42.1.0/24".parse().unwrap(),
            cluster: vec!["10.42.0.0/24".parse().unwrap()],
        });
        let text = render(&cfg, &snap);
        assert!(
            text.contains(
                "ip saddr 10.42.1.0/24 ip daddr != { 10.42.0.0/24, 10.42.1.0/24 } masquerade"
            ),
            "{text}"
        );
    }

    #[test]
    fn no_ready_endpoints_means_reject_and_statics_win() {
        let mut cfg = ProxyConfig::new("t");
        cfg.statics.push(StaticDnat {
            ip: "10.43.0.10".parse().unwrap(),
            port: 53,
            protocol: "UDP".into(),
            to: "192.0.2.1:5353".parse().unwrap(),
        });
        let mut dns = web(&[]);
        dns.name = "kube-dns".into();
        dns.type_ = "ClusterIP".into();
        dns.cluster_ips = vec!["10.43.0.10".parse().unwrap()];
        let snap = Snapshot {
            services: vec![web(&[("10.42.0.3", false)]), dns],
        };
        let text = render(&cfg, &snap);
        assert!(
            text.contains("elements = { 10.43.0.5 . tcp . 80 }"),
            "{text}"
        );
        assert!(text.contains("elements = { tcp . 30080 }"), "{text}");
        assert!(!text.contains("goto svc-default/web"), "{text}");
        assert!(
            text.contains("10.43.0.10 . udp . 53 : goto static-0"),
            "{text}"
        );
        assert!(text.contains("dnat to 192.0.2.1:5353"), "{text}");
        assert!(
            !text.contains("10.43.0.10 . tcp . 80"),
            "the static address was given to a Service:\n{text}"
        );
    }
}
