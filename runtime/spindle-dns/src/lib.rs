//! The cluster DNS server: what CoreDNS with the `kubernetes` plugin is in a
//! Kubernetes cluster, built on hickory-dns.
//!
//! [`ClusterDns`] serves the cluster domain (normally `cluster.local`) from an
//! in-memory table of Services that the node agent keeps current through
//! [`ClusterDns::set_services`], [`ClusterDns::upsert`] and
//! [`ClusterDns::remove`], and forwards every other name to upstream
//! nameservers. The answers follow the Kubernetes DNS specification as CoreDNS
//! implements it, because that is what workloads and their client libraries
//! expect:
//!
//! | name | answer |
//! | --- | --- |
//! | `<svc>.<ns>.svc.<domain>` A/AAAA | the ClusterIPs; for a headless Service the ready endpoint IPs |
//! | `<hostname>.<svc>.<ns>.svc.<domain>` | the endpoint with that hostname (or dashed IP) of a headless Service |
//! | `<svc>.<ns>.svc.<domain>` of an ExternalName Service | CNAME to the external name, followed for the asked type |
//! | `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV | one record per port (and per endpoint if headless) |
//! | `a-b-c-d.<ns>.pod.<domain>` | the IP written in the name ("pods insecure") |
//! | reverse names of Service and endpoint IPs | PTR to the Service or endpoint name |
//! | any other name in the domain | NXDOMAIN (NODATA where the name exists), with the SOA in authority |
//! | names outside the domain | forwarded, recursion desired, to [`DnsConfig::upstreams`] |
//! | anything, from a client outside [`DnsConfig::allowed_clients`] | REFUSED |
//!
//! Only clients in [`DnsConfig::allowed_clients`] (the agent passes its pod
//! network, loopback and the node's own addresses) get answers. CoreDNS is
//! reachable only through the cluster DNS ClusterIP, which outsiders cannot
//! route to; this server listens on the node's address, so without the check
//! it would be an open recursive resolver (amplification, abuse of the node's
//! upstreams) and would list the cluster's Services and pod addresses to
//! anyone. Outsiders are refused for cluster names too, not only for
//! recursion: Service and endpoint records are internal (review SPN-17).
//!
//! The server does no search-path expansion: a pod's resolver does that, from
//! the `/etc/resolv.conf` that [`resolv_conf`] writes, and a quick NXDOMAIN for
//! expanded forms such as `example.com.default.svc.cluster.local` is what
//! lets it move on to `example.com`.

mod server;
mod zone;

use std::net::{IpAddr, SocketAddr};

pub use server::ClusterDns;

/// Where and how the cluster DNS server runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Addresses to serve on; each gets a UDP socket and a TCP listener on the
    /// same port. Port 0 picks a free port (see [`ClusterDns::local_addrs`]).
    pub listen: Vec<SocketAddr>,
    /// The cluster domain, e.g. `cluster.local` (a trailing dot is allowed).
    pub domain: String,
    /// Nameservers for names outside the cluster domain, tried over UDP and
    /// TCP. Empty means such names get SERVFAIL.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of the records the server makes up, and the negative-caching TTL
    /// in its SOA: short, because Services come and go.
    pub ttl: u32,
    /// Source networks whose queries are answered; everyone else gets
    /// REFUSED for every name, and nothing is forwarded for them.
    pub allowed_clients: Vec<ipnet::IpNet>,
}

impl Default for DnsConfig {
    /// No listen address yet, `cluster.local`, the host's nameservers
    /// ([`system_upstreams`]), a TTL of 5 seconds, as CoreDNS does, and
    /// only loopback clients ([`loopback_clients`]).
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            domain: DEFAULT_DOMAIN.to_owned(),
            upstreams: system_upstreams(),
            ttl: DEFAULT_TTL,
            allowed_clients: loopback_clients(),
        }
    }
}

/// `127.0.0.0/8` and `::1/128`: the host itself.
pub fn loopback_clients() -> Vec<ipnet::IpNet> {
    vec![
        ipnet::IpNet::new_assert(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)), 8),
        ipnet::IpNet::from(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
    ]
}

/// The cluster domain Kubernetes uses unless told otherwise.
pub const DEFAULT_DOMAIN: &str = "cluster.local";
/// CoreDNS's default TTL for the records of the `kubernetes` plugin.
pub const DEFAULT_TTL: u32 = 5;

/// What a Service name resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// A Service with virtual IPs (one per family when dual-stack).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the name resolves to the ready endpoints.
    Headless,
    /// `type: ExternalName`: the name is an alias (CNAME) of this DNS name.
    ExternalName(String),
}

/// One Service as the DNS server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    pub namespace: String,
    pub name: String,
    pub kind: ServiceKind,
    /// `(port name, protocol "tcp"|"udp"|"sctp", port)`, used for SRV records.
    /// For a headless Service these should be the EndpointSlice ports (the
    /// target ports), as CoreDNS uses those; for others the Service ports.
    pub ports: Vec<(String, String, u16)>,
    /// The ready endpoints; only used for headless Services (and PTR).
    pub endpoints: Vec<EndpointRecord>,
}

/// A ready endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    pub ip: IpAddr,
    /// `hostname` of the endpoint (from the pod's `spec.hostname`, as set
    /// for StatefulSet pods), giving it `<hostname>.<svc>.<ns>.svc.<domain>`.
    pub hostname: Option<String>,
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("no listen address configured for the cluster DNS server")]
    NoListenAddress,
    #[error("invalid cluster domain {domain:?}: {reason}")]
    InvalidDomain { domain: String, reason: String },
    #[error("binding DNS {protocol} socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the upstream resolver: {0}")]
    Upstream(String),
}

/// The `/etc/resolv.conf` a pod in `namespace` gets, as the kubelet writes it
/// for `dnsPolicy: ClusterFirst`.
///
/// `ndots:5` makes the resolver try the search list before the name as given
/// for any name with fewer than five dots, so that `svc`, `svc.ns` and
/// `svc.ns.svc` all resolve inside the cluster.
pub fn resolv_conf(nameserver: IpAddr, namespace: &str, domain: &str) -> String {
    ResolvConf::cluster_first(nameserver, namespace, domain).render()
}

/// A pod's resolver settings as the kubelet computes them from its dnsPolicy and
/// dnsConfig, before they are written out as `resolv.conf`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`.
    pub options: Vec<String>,
}

/// glibc reads at most three nameservers; the kubelet drops the rest.
const MAX_NAMESERVERS: usize = 3;
/// The kubelet's limit on search domains.
const MAX_SEARCHES: usize = 32;

impl ResolvConf {
    /// `dnsPolicy: ClusterFirst`: the cluster DNS, the namespace's search list, ndots:5.
    pub fn cluster_first(nameserver: IpAddr, namespace: &str, domain: &str) -> Self {
        let domain = domain.trim_end_matches('.');
        ResolvConf {
            nameservers: vec![nameserver.to_string()],
            searches: vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
            options: vec!["ndots:5".into()],
        }
    }

    /// A pod's `dnsConfig` added to what its policy gave, as the kubelet merges them:
    /// nameservers and searches appended without repeats, options by name (the pod's
    /// value replaces the policy's).
    pub fn append(
        &mut self,
        nameservers: &[String],
        searches: &[String],
        options: &[(String, Option<String>)],
    ) {
        for (list, more) in [
            (&mut self.nameservers, nameservers),
            (&mut self.searches, searches),
        ] {
            for item in more {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        for (name, value) in options {
            let option = match value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            };
            let same = |o: &String| o.split(':').next() == Some(name.as_str());
            match self.options.iter_mut().find(|o| same(o)) {
                Some(existing) => *existing = option,
                None => self.options.push(option),
            }
        }
    }

    /// The file as containerd writes it for the kubelet: the search line, one line per
    /// nameserver, the options line; empty parts are left out.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let searches = &self.searches[..self.searches.len().min(MAX_SEARCHES)];
        if !searches.is_empty() {
            text.push_str(&format!("search {}\n", searches.join(" ")));
        }
        for n in self.nameservers.iter().take(MAX_NAMESERVERS) {
            text.push_str(&format!("nameserver {n}\n"));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }
}

/// The host's nameservers, for [`DnsConfig::upstreams`].
///
/// Read from `/etc/resolv.conf`, leaving out loopback addresses: on a host
/// with systemd-resolved (or another local stub) that file names only
/// `127.0.0.53`, which is useless from a pod and a loop if the cluster DNS
/// listens there. The stub's real upstreams are then taken from
/// `/run/systemd/resolve/resolv.conf`, as the kubelet does. Only when neither
/// file names anything else are the loopback ones kept, as a local resolver
/// beats none ([`ClusterDns::start`] still drops any that is the server itself).
pub fn system_upstreams() -> Vec<SocketAddr> {
    let read = |path: &str| {
        std::fs::read(path)
            .map(|data| upstreams_from_resolv_conf(&data))
            .unwrap_or_default()
    };
    choose_upstreams(read("/etc/resolv.conf"), || {
        read("/run/systemd/resolve/resolv.conf")
    })
}

/// The nameservers in the text of a resolv.conf, on port 53.
pub fn upstreams_from_resolv_conf(data: &[u8]) -> Vec<SocketAddr> {
    // hickory's parser (the resolv-conf crate) errors when no nameserver is
    // listed; that is just "none" here.
    let Ok((config, _)) = hickory_resolver::system_conf::parse_resolv_conf(data) else {
        return Vec::new();
    };
    config
        .name_servers()
        .iter()
        .map(|ns| {
            let port = ns.connections.first().map_or(53, |c| c.port);
            SocketAddr::new(ns.ip, port)
        })
        .collect()
}

fn choose_upstreams(
    primary: Vec<SocketAddr>,
    stub_upstreams: impl FnOnce() -> Vec<SocketAddr>,
) -> Vec<SocketAddr> {
    let (loopback, remote): (Vec<_>, Vec<_>) =
        primary.into_iter().partition(|a| a.ip().is_loopback());
    if !remote.is_empty() {
        return remote;
    }
    let behind_stub: Vec<_> = stub_upstreams()
        .into_iter()
        .filter(|a| !a.ip().is_loopback())
        .collect();
    if !behind_stub.is_empty() {
        return behind_stub;
    }
    loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_what_the_kubelet_writes() {
        assert_eq!(
            resolv_conf("10.96.0.10".parse().unwrap(), "default", "cluster.local."),
            "search default.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn dns_config_merges_as_the_kubelet_merges_it() {
        let mut conf =
            ResolvConf::cluster_first("10.96.0.10".parse().unwrap(), "web", "cluster.local");
        conf.append(
            &[
                "10.96.0.10".into(),
                "192.0.2.53".into(),
                "192.0.2.54".into(),
                "192.0.2.55".into(),
            ],
            &["svc.cluster.local".into(), "corp.example".into()],
            &[("ndots".into(), Some("2".into())), ("edns0".into(), None)],
        );
        assert_eq!(
            conf.render(),
            "search web.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.96.0.10\n\
             nameserver 192.0.2.53\n\
             nameserver 192.0.2.54\n\
             options ndots:2 edns0\n"
        );
        assert_eq!(ResolvConf::default().render(), "");
    }

    #[test]
    fn parses_nameservers_from_resolv_conf() {
        let data = b"# comment\nsearch example.org\nnameserver 10.0.0.2\nnameserver 2001:db8::53\noptions ndots:1\n";
        assert_eq!(
            upstreams_from_resolv_conf(data),
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert!(upstreams_from_resolv_conf(b"search example.org\n").is_empty());
    }

    #[test]
    fn loopback_stubs_are_replaced_by_their_upstreams() {
        let stub = vec!["127.0.0.53:53".parse().unwrap()];
        let real: Vec<SocketAddr> = vec!["192.0.2.1:53".parse().unwrap()];
        assert_eq!(choose_upstreams(stub.clone(), || real.clone()), real);
        // Nothing better known: keep the local resolver.
        assert_eq!(choose_upstreams(stub.clone(), Vec::new), stub);
        // Remote servers listed directly win, and loopback ones among them go.
        let mixed = vec![stub[0], "192.0.2.9:53".parse().unwrap()];
        assert_eq!(
            choose_upstreams(mixed, || unreachable!()),
            vec!["192.0.2.9:53".parse().unwrap()]
        );
    }
}
