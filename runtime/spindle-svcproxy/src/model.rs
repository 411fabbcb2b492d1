//! What the proxy and the DNS server know of a Service: its addresses and ports, and the
//! endpoints of its EndpointSlices, merged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Every Service of the cluster with its endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: Vec<ServiceView>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    /// ClusterIP, NodePort, LoadBalancer or ExternalName.
    pub type_: String,
    /// Empty for headless (`clusterIP: None`) and ExternalName Services.
    pub cluster_ips: Vec<IpAddr>,
    pub headless: bool,
    pub external_name: Option<String>,
    pub ports: Vec<ServicePortView>,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortView {
    /// May be empty for a single-port Service.
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    pub port: u16,
    pub node_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    pub ip: IpAddr,
    pub ready: bool,
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    /// (port name, protocol, port) as the EndpointSlice lists them.
    pub ports: Vec<(String, String, u16)>,
}

impl ServiceView {
    /// The ready endpoints' addresses for one Service port: the EndpointSlice port with
    /// the same name and protocol.
    pub fn ready_targets(&self, port: &ServicePortView) -> Vec<(IpAddr, u16)> {
        self.endpoints
            .iter()
            .filter(|e| e.ready)
            .filter_map(|e| {
                e.ports
                    .iter()
                    .find(|(n, p, _)| *n == port.name && *p == port.protocol)
                    .map(|(_, _, n)| (e.ip, *n))
            })
            .collect()
    }
}

/// Builds the snapshot from the cached objects. Endpoints come from every EndpointSlice
/// labelled `kubernetes.io/service-name=<service>` in the Service's namespace; an address
/// listed by two slices counts once.
pub fn snapshot<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Snapshot {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let (Some(ns), Some(svc)) = (
            s.metadata.namespace.clone(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .cloned(),
        ) else {
            continue;
        };
        by_service.entry((ns, svc)).or_default().push(s);
    }
    let mut out: Vec<ServiceView> = services
        .into_iter()
        .filter_map(|svc| {
            let namespace = svc.metadata.namespace.clone()?;
            let name = svc.metadata.name.clone()?;
            let spec = svc.spec.clone().unwrap_or_default();
            let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
            let raw_ips: Vec<String> = spec
                .cluster_ips
                .clone()
                .filter(|v| !v.is_empty())
                .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
                .unwrap_or_default();
            let headless = raw_ips.iter().any(|ip| ip == "None");
            let cluster_ips = raw_ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(ServicePortView {
                        name: p.name.clone().unwrap_or_default(),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: u16::try_from(p.port).ok()?,
                        node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                    })
                })
                .collect();
            let mut endpoints: Vec<EndpointView> = Vec::new();
            for slice in by_service
                .get(&(namespace.clone(), name.clone()))
                .into_iter()
                .flatten()
            {
                let ports: Vec<(String, String, u16)> = slice
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            p.name.clone().unwrap_or_default(),
                            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            u16::try_from(p.port?).ok()?,
                        ))
                    })
                    .collect();
                for e in &slice.endpoints {
                    // A nil `ready` means ready (discovery/v1).
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    for addr in &e.addresses {
                        let Ok(ip) = addr.parse() else { continue };
                        if endpoints.iter().any(|x| x.ip == ip) {
                            continue;
                        }
                        endpoints.push(EndpointView {
                            ip,
                            ready,
                            hostname: e.hostname.clone(),
                            node_name: e.node_name.clone(),
                            ports: ports.clone(),
                        });
                    }
                }
            }
            endpoints.sort_by_key(|e| e.ip);
            Some(ServiceView {
                namespace,
                name,
                type_,
                cluster_ips,
                headless,
                external_name: spec.external_name.clone(),
                ports,
                endpoints,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Snapshot { services: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn merges_slices_and_readiness() {
        let svc: Service = obj(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"], "type": "NodePort",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
        }));
        let headless: Service = obj(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]},
        }));
        let slice = |name: &str, addrs: &[(&str, Option<bool>)]| -> EndpointSlice {
            obj(serde_json::json!({
                "metadata": {"name": name, "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": addrs.iter().map(|(a, r)| serde_json::json!({
                    "addresses": [a], "conditions": {"ready": r}
                })).collect::<Vec<_>>(),
            }))
        };
        let s1 = slice(
            "web-1",
            &[("10.42.0.2", Some(true)), ("10.42.0.3", Some(false))],
        );
        let s2 = slice("web-2", &[("10.42.0.4", None), ("10.42.0.2", Some(true))]);
        let snap = snapshot([&svc, &headless], [&s1, &s2]);
        assert_eq!(snap.services.len(), 2);
        let db = &snap.services[0];
        assert!(db.headless && db.cluster_ips.is_empty());
        let web = &snap.services[1];
        assert_eq!(
            web.cluster_ips,
            vec!["10.43.0.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(web.endpoints.len(), 3, "{:?}", web.endpoints);
        let targets = web.ready_targets(&web.ports[0]);
        assert_eq!(
            targets,
            vec![
                ("10.42.0.2".parse().unwrap(), 8080),
                ("10.42.0.4".parse().unwrap(), 8080)
            ]
        );
        assert_eq!(web.ports[0].node_port, Some(30080));
    }
}
