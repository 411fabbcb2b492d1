//! The node's view of Services: one watch of Services and EndpointSlices feeding both the
//! Service proxy (nftables rules) and the cluster DNS table.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use spindle_dns::{EndpointRecord, ServiceKind, ServiceRecord};
use spindle_svcproxy::{PodMasquerade, Proxy, ProxyConfig, Snapshot, StaticDnat};

use crate::Agent;

/// The DNS records of a snapshot's Services.
pub fn dns_records(snap: &Snapshot) -> Vec<ServiceRecord> {
    snap.services
        .iter()
        .map(|s| {
            let kind = if s.type_ == "ExternalName" {
                ServiceKind::ExternalName(s.external_name.clone().unwrap_or_default())
            } else if s.headless {
                ServiceKind::Headless
            } else {
                ServiceKind::ClusterIp(s.cluster_ips.clone())
            };
            let ready: Vec<_> = s.endpoints.iter().filter(|e| e.ready).collect();
            // Headless Services publish their endpoints' ports in SRV, as CoreDNS does.
            let ports = if s.headless {
                let mut ports: Vec<(String, String, u16)> = ready
                    .iter()
                    .flat_map(|e| e.ports.iter())
                    .map(|(n, p, port)| (n.clone(), p.to_ascii_lowercase(), *port))
                    .collect();
                ports.sort();
                ports.dedup();
                ports
            } else {
                s.ports
                    .iter()
                    .map(|p| (p.name.clone(), p.protocol.to_ascii_lowercase(), p.port))
                    .collect()
            };
            ServiceRecord {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                kind,
                ports,
                endpoints: ready
                    .iter()
                    .map(|e| EndpointRecord {
                        ip: e.ip,
                        hostname: e.hostname.clone(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The proxy's configuration on this node: the agent's table, and the cluster DNS
/// address forwarded to this node's DNS server.
pub fn proxy_config(agent: &Agent, dns: Option<SocketAddr>) -> ProxyConfig {
    let mut cfg = ProxyConfig::new(&agent.opts.net.nft_table);
    if let Some(SocketAddr::V4(to)) = dns {
        // A DNS server on all addresses is reached on the node's own.
        let to = match (to.ip().is_unspecified(), agent.node_ip) {
            (true, IpAddr::V4(node)) => SocketAddrV4::new(node, to.port()),
            _ => to,
        };
        for protocol in ["UDP", "TCP"] {
            cfg.statics.push(StaticDnat {
                ip: agent.opts.net.cluster_dns,
                port: 53,
                protocol: protocol.into(),
                to,
            });
        }
    }
    cfg
}

/// Keeps the DNS table and the Service rules in step with the cluster until `stop`;
/// then removes the rules.
pub async fn run(agent: Arc<Agent>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let dns_addr = agent
        .dns
        .get()
        .and_then(|d| d.local_addrs().first().copied());
    let proxy = Proxy::new(proxy_config(&agent, dns_addr));
    let own_cidr = agent.net.get().map(|n| n.config().pod_cidr);
    let mut node_cidrs = agent.node_cidrs.subscribe();
    let mut snapshots = spindle_svcproxy::watch::watch(agent.client.clone());
    loop {
        if let Some(pod_cidr) = own_cidr {
            proxy.set_pod_masquerade(Some(PodMasquerade {
                pod_cidr,
                cluster: node_cidrs.borrow_and_update().clone(),
            }));
        }
        let snap = snapshots.borrow_and_update().clone();
        if let Some(dns) = agent.dns.get() {
            dns.set_services(dns_records(&snap));
        }
        let ok = match proxy.sync(&snap).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "programming Service rules failed; retrying");
                false
            }
        };
        tokio::select! {
            changed = snapshots.changed(), if ok => {
                if changed.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep(std::time::Duration::from_secs(1)), if !ok => {}
            changed = node_cidrs.changed(), if ok => {
                if changed.is_err() {
                    break;
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if let Err(e) = proxy.cleanup().await {
        tracing::warn!(error = %e, "removing Service rules");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_svcproxy::{EndpointView, ServicePortView, ServiceView};

    #[test]
    fn headless_services_publish_ready_endpoints() {
        let snap = Snapshot {
            services: vec![ServiceView {
                namespace: "default".into(),
                name: "db".into(),
                type_: "ClusterIP".into(),
                cluster_ips: vec![],
                headless: true,
                external_name: None,
                ports: vec![ServicePortView {
                    name: "sql".into(),
                    protocol: "TCP".into(),
                    port: 5432,
                    node_port: None,
                }],
                endpoints: vec![
                    EndpointView {
                        ip: "10.42.0.2".parse().unwrap(),
                        ready: true,
                        hostname: Some("db-0".into()),
                        node_name: None,
                        ports: vec![("sql".into(), "TCP".into(), 5433)],
                    },
                    EndpointView {
                        ip: "10.42.0.3".parse().unwrap(),
                        ready: false,
                        hostname: None,
                        node_name: None,
                        ports: vec![("sql".into(), "TCP".into(), 5433)],
                    },
                ],
            }],
        };
        let recs = dns_records(&snap);
        assert_eq!(recs[0].kind, ServiceKind::Headless);
        assert_eq!(recs[0].endpoints.len(), 1);
        assert_eq!(recs[0].ports, vec![("sql".into(), "tcp".into(), 5433)]);
    }
}
