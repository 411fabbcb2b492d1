//! The cluster domain: the Service table and the answers made from it.
//!
//! Everything here is synchronous and lock-bounded, so a query never waits on
//! the network while holding the table; following an ExternalName alias or
//! forwarding a name is left to the server, which is told so by [`Outcome`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::{EndpointRecord, ServiceKind, ServiceRecord};

/// What to do with a query.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The name is ours: this is the (authoritative) answer.
    Local(Local),
    /// Not ours: ask the upstream nameservers.
    Forward,
}

/// An authoritative answer from the zone.
#[derive(Debug, Default)]
pub(crate) struct Local {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The answer ends in a CNAME (an ExternalName Service) whose target the
    /// server should resolve for the same type and append, as CoreDNS does:
    /// stub resolvers in pods (glibc, musl) do not chase CNAMEs themselves.
    pub follow: Option<Name>,
}

/// SOA timers, CoreDNS's values (only the minimum, our TTL, matters to
/// clients: it bounds how long they cache an NXDOMAIN).
const SOA_REFRESH: i32 = 7200;
const SOA_RETRY: i32 = 1800;
const SOA_EXPIRE: i32 = 86400;

pub(crate) struct Zone {
    /// The cluster domain, lowercase and fully qualified.
    origin: Name,
    /// `svc.<origin>`, the parent of every Service name.
    svc_origin: Name,
    ttl: u32,
    table: RwLock<Table>,
    serial: AtomicU32,
}

/// Services by namespace, then name; nested so that "does this namespace
/// have Services" (which decides NODATA vs NXDOMAIN for `<ns>.svc.<domain>`)
/// is one lookup, and a query needs no owned key.
#[derive(Default)]
struct Table {
    namespaces: HashMap<String, HashMap<String, ServiceRecord>>,
}

impl Table {
    fn insert(&mut self, service: ServiceRecord) {
        let service = normalize(service);
        self.namespaces
            .entry(service.namespace.clone())
            .or_default()
            .insert(service.name.clone(), service);
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let namespace = namespace.to_ascii_lowercase();
        if let Some(services) = self.namespaces.get_mut(&namespace) {
            services.remove(&name.to_ascii_lowercase());
            if services.is_empty() {
                self.namespaces.remove(&namespace);
            }
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&ServiceRecord> {
        self.namespaces.get(namespace)?.get(name)
    }

    fn services(&self) -> impl Iterator<Item = &ServiceRecord> {
        self.namespaces
            .values()
            .flat_map(|services| services.values())
    }
}

/// Query names are compared lowercased (DNS is case-insensitive), so the
/// table is kept lowercase too; Kubernetes names already are, this only
/// guards against a caller that is not careful.
fn normalize(mut s: ServiceRecord) -> ServiceRecord {
    s.namespace.make_ascii_lowercase();
    s.name.make_ascii_lowercase();
    for (name, protocol, _) in &mut s.ports {
        name.make_ascii_lowercase();
        protocol.make_ascii_lowercase();
    }
    for endpoint in &mut s.endpoints {
        if let Some(hostname) = &mut endpoint.hostname {
            hostname.make_ascii_lowercase();
        }
    }
    s
}

fn wants(qtype: RecordType, rtype: RecordType) -> bool {
    qtype == rtype || qtype == RecordType::ANY
}

/// The first label of an endpoint's name: its hostname, or else its IP with
/// dashes, as CoreDNS names endpoints without a hostname.
fn endpoint_label(endpoint: &EndpointRecord) -> String {
    match &endpoint.hostname {
        Some(hostname) => hostname.clone(),
        None => match endpoint.ip {
            IpAddr::V4(ip) => ip.to_string().replace('.', "-"),
            IpAddr::V6(ip) => ip.to_string().replace(':', "-"),
        },
    }
}

/// The IP written in a pod name label (`10-244-1-5`, `fd00-10-244--5`),
/// decoded the way CoreDNS does: three single dashes make an IPv4 address,
/// anything else is an IPv6 address with `:` spelled `-`.
fn pod_ip(label: &str) -> Option<IpAddr> {
    let text = if label.matches('-').count() == 3 && !label.contains("--") {
        label.replace('-', ".")
    } else {
        label.replace('-', ":")
    };
    text.parse().ok()
}

/// An ExternalName as a fully qualified name: the field holds a DNS name
/// without the trailing dot, and must not be resolved relative to anything.
fn external_name(target: &str) -> Option<Name> {
    let mut name = Name::from_utf8(target.trim_end_matches('.')).ok()?;
    name.set_fqdn(true);
    Some(name)
}

impl Zone {
    /// `origin` must be a valid domain name (checked by the caller).
    pub(crate) fn new(mut origin: Name, ttl: u32) -> Result<Self, String> {
        origin.set_fqdn(true);
        let origin = origin.to_lowercase();
        let svc_origin = origin.prepend_label("svc").map_err(|e| e.to_string())?;
        Ok(Self {
            origin,
            svc_origin,
            ttl,
            table: RwLock::new(Table::default()),
            serial: AtomicU32::new(0),
        })
    }

    pub(crate) fn set_services(&self, services: Vec<ServiceRecord>) {
        // Built outside the lock, so queries only wait for the swap.
        let mut table = Table::default();
        for service in services {
            table.insert(service);
        }
        *self.write() = table;
        self.bump_serial();
    }

    pub(crate) fn upsert(&self, service: ServiceRecord) {
        self.write().insert(service);
        self.bump_serial();
    }

    pub(crate) fn remove(&self, namespace: &str, name: &str) {
        self.write().remove(namespace, name);
        self.bump_serial();
    }

    // A panic while holding the lock cannot leave the table half-updated in
    // a way that matters more than losing DNS for the whole node, so poison
    // is ignored rather than propagated.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The SOA serial is the time of the last change (as in CoreDNS), kept
    /// strictly increasing so that two changes in one second still differ.
    fn bump_serial(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let _ = self
            .serial
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |prev| {
                Some(now.max(prev.wrapping_add(1)))
            });
    }

    /// Answers `qname`/`qtype`, or says the name is not ours.
    pub(crate) fn resolve(&self, qname: &Name, qtype: RecordType) -> Outcome {
        let lower = qname.to_lowercase();
        if !self.origin.zone_of(&lower) {
            return match self.reverse(qname, &lower, qtype) {
                Some(local) => Outcome::Local(local),
                None => Outcome::Forward,
            };
        }
        let labels: Vec<&[u8]> = lower.iter().collect();
        let relative = &labels[..labels.len() - usize::from(self.origin.num_labels())];
        // Kubernetes names are ASCII; a label that is not UTF-8 names nothing.
        let Some(relative) = relative
            .iter()
            .map(|l| std::str::from_utf8(l).ok())
            .collect::<Option<Vec<&str>>>()
        else {
            return Outcome::Local(self.nxdomain());
        };

        let table = self.read();
        let local = match relative.as_slice() {
            [] => self.apex(qtype),
            ["svc"] | ["pod"] | [_, "pod"] => self.nodata(),
            [ns, "svc"] => match table.namespaces.contains_key(*ns) {
                true => self.nodata(),
                false => self.nxdomain(),
            },
            [svc, ns, "svc"] => match table.get(ns, svc) {
                Some(service) => self.service(qname, qtype, service),
                None => self.nxdomain(),
            },
            [label, svc, ns, "svc"] => match table.get(ns, svc) {
                Some(service) => self.below_service(qname, qtype, service, label),
                None => self.nxdomain(),
            },
            [port, proto, svc, ns, "svc"] => match table.get(ns, svc) {
                Some(service) => self.srv_name(qname, qtype, service, port, proto),
                None => self.nxdomain(),
            },
            [ip, _namespace, "pod"] => match pod_ip(ip) {
                // "pods insecure": the name is its own answer, whether or
                // not such a pod exists (that is what CoreDNS does too).
                Some(ip) => self.records(self.addresses(qname, [ip], qtype), Vec::new()),
                None => self.nxdomain(),
            },
            // Among these are the search-list expansions of outside names
            // (`example.com.default.svc.cluster.local`): a fast NXDOMAIN is
            // what sends the pod's resolver on to the next candidate.
            _ => self.nxdomain(),
        };
        Outcome::Local(local)
    }

    fn apex(&self, qtype: RecordType) -> Local {
        let mut answers = Vec::new();
        if wants(qtype, RecordType::SOA) {
            answers.push(self.soa());
        }
        if wants(qtype, RecordType::NS) {
            if let Ok(ns) = self.nameserver_name() {
                answers.push(Record::from_rdata(
                    self.origin.clone(),
                    self.ttl,
                    RData::NS(NS(ns)),
                ));
            }
        }
        self.records(answers, Vec::new())
    }

    /// `<svc>.<ns>.svc.<domain>`.
    fn service(&self, qname: &Name, qtype: RecordType, service: &ServiceRecord) -> Local {
        match &service.kind {
            ServiceKind::ExternalName(target) => self.alias(qname, qtype, target),
            ServiceKind::ClusterIp(ips) if qtype != RecordType::SRV => self.records(
                self.addresses(qname, ips.iter().copied(), qtype),
                Vec::new(),
            ),
            ServiceKind::Headless if qtype != RecordType::SRV => {
                let ips = service.endpoints.iter().map(|e| e.ip);
                self.records(self.addresses(qname, ips, qtype), Vec::new())
            }
            // SRV on the bare Service name lists every port, as CoreDNS does.
            _ => {
                let ports: Vec<_> = service.ports.iter().collect();
                self.srv(qname, service, &ports)
            }
        }
    }

    /// `<label>.<svc>.<ns>.svc.<domain>`: an endpoint of a headless Service,
    /// or the `_<proto>` node between a Service and its SRV names.
    fn below_service(
        &self,
        qname: &Name,
        qtype: RecordType,
        service: &ServiceRecord,
        label: &str,
    ) -> Local {
        if let Some(proto) = label.strip_prefix('_') {
            // An empty non-terminal: it exists (NODATA) iff some SRV name is
            // below it, which keeps resolvers from caching an NXDOMAIN that
            // would, by RFC 8020, hide the SRV names too.
            return match service.ports.iter().any(|(_, p, _)| p == proto) {
                true => self.nodata(),
                false => self.nxdomain(),
            };
        }
        // Endpoint names exist only for headless Services (the DNS spec's
        // rule); a ClusterIP Service's pods are reached through the VIP.
        if service.kind != ServiceKind::Headless {
            return self.nxdomain();
        }
        let ips: Vec<IpAddr> = service
            .endpoints
            .iter()
            .filter(|e| endpoint_label(e) == label)
            .map(|e| e.ip)
            .collect();
        if ips.is_empty() {
            return self.nxdomain();
        }
        self.records(self.addresses(qname, ips, qtype), Vec::new())
    }

    /// `_<port>._<proto>.<svc>.<ns>.svc.<domain>`.
    fn srv_name(
        &self,
        qname: &Name,
        qtype: RecordType,
        service: &ServiceRecord,
        port: &str,
        proto: &str,
    ) -> Local {
        let (Some(port), Some(proto)) = (port.strip_prefix('_'), proto.strip_prefix('_')) else {
            return self.nxdomain();
        };
        let ports: Vec<_> = service
            .ports
            .iter()
            .filter(|(name, p, _)| !name.is_empty() && name == port && p == proto)
            .collect();
        if ports.is_empty() {
            return self.nxdomain();
        }
        if !wants(qtype, RecordType::SRV) {
            return self.nodata();
        }
        self.srv(qname, service, &ports)
    }

    /// SRV records for `ports`, pointing at the Service name (ClusterIP), at
    /// each endpoint (headless) or at the external name, with the targets'
    /// addresses in the additional section to save the client a round trip.
    fn srv(
        &self,
        owner: &Name,
        service: &ServiceRecord,
        ports: &[&(String, String, u16)],
    ) -> Local {
        let targets: Vec<(Name, Vec<IpAddr>)> = match &service.kind {
            ServiceKind::ClusterIp(ips) => self
                .service_name(service)
                .map(|name| (name, ips.clone()))
                .into_iter()
                .collect(),
            ServiceKind::Headless => service
                .endpoints
                .iter()
                .filter_map(|e| Some((self.endpoint_name(service, e)?, vec![e.ip])))
                .collect(),
            ServiceKind::ExternalName(target) => external_name(target)
                .map(|n| (n, Vec::new()))
                .into_iter()
                .collect(),
        };
        let count = (targets.len() * ports.len()).max(1);
        // CoreDNS spreads a weight of 100 over the records of one priority.
        let weight = u16::try_from(100 / count).unwrap_or(1).max(1);
        let answers = ports
            .iter()
            .flat_map(|(_, _, port)| {
                targets.iter().map(move |(target, _)| {
                    Record::from_rdata(
                        owner.clone(),
                        self.ttl,
                        RData::SRV(SRV::new(0, weight, *port, target.clone())),
                    )
                })
            })
            .collect();
        let additionals = targets
            .iter()
            .flat_map(|(target, ips)| self.addresses(target, ips.iter().copied(), RecordType::ANY))
            .collect();
        self.records(answers, additionals)
    }

    /// An ExternalName Service: a CNAME, to be followed unless the CNAME is
    /// what was asked for.
    fn alias(&self, qname: &Name, qtype: RecordType, target: &str) -> Local {
        let Some(target) = external_name(target) else {
            return self.nodata();
        };
        let cname =
            Record::from_rdata(qname.clone(), self.ttl, RData::CNAME(CNAME(target.clone())));
        let follow = !matches!(qtype, RecordType::CNAME | RecordType::ANY);
        Local {
            answers: vec![cname],
            follow: follow.then_some(target),
            ..Local::default()
        }
    }

    /// PTR for a Service's ClusterIP or an endpoint IP, CoreDNS's answer for
    /// reverse names; `None` (forward) for every other address.
    fn reverse(&self, qname: &Name, lower: &Name, qtype: RecordType) -> Option<Local> {
        let net = lower.parse_arpa_name().ok()?;
        if net.prefix_len() != net.max_prefix_len() {
            return None;
        }
        let ip = net.addr();
        let table = self.read();
        let mut names = Vec::new();
        for service in table.services() {
            if matches!(&service.kind, ServiceKind::ClusterIp(ips) if ips.contains(&ip)) {
                names.extend(self.service_name(service));
            }
            for endpoint in service.endpoints.iter().filter(|e| e.ip == ip) {
                names.extend(self.endpoint_name(service, endpoint));
            }
        }
        if names.is_empty() {
            return None;
        }
        if !wants(qtype, RecordType::PTR) {
            return Some(self.nodata());
        }
        let answers = names
            .into_iter()
            .map(|name| Record::from_rdata(qname.clone(), self.ttl, RData::PTR(PTR(name))))
            .collect();
        Some(self.records(answers, Vec::new()))
    }

    fn addresses(
        &self,
        owner: &Name,
        ips: impl IntoIterator<Item = IpAddr>,
        qtype: RecordType,
    ) -> Vec<Record> {
        ips.into_iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(ip) if wants(qtype, RecordType::A) => Some(RData::A(A(ip))),
                IpAddr::V6(ip) if wants(qtype, RecordType::AAAA) => Some(RData::AAAA(AAAA(ip))),
                _ => None,
            })
            .map(|data| Record::from_rdata(owner.clone(), self.ttl, data))
            .collect()
    }

    fn service_name(&self, service: &ServiceRecord) -> Option<Name> {
        self.svc_origin
            .prepend_label(service.namespace.as_str())
            .and_then(|n| n.prepend_label(service.name.as_str()))
            .ok()
    }

    fn endpoint_name(&self, service: &ServiceRecord, endpoint: &EndpointRecord) -> Option<Name> {
        self.service_name(service)?
            .prepend_label(endpoint_label(endpoint).as_str())
            .ok()
    }

    fn nameserver_name(&self) -> Result<Name, hickory_proto::ProtoError> {
        self.origin.prepend_label("dns")?.prepend_label("ns")
    }

    fn soa(&self) -> Record {
        let mname = self
            .nameserver_name()
            .unwrap_or_else(|_| self.origin.clone());
        let rname = self
            .origin
            .prepend_label("hostmaster")
            .unwrap_or_else(|_| self.origin.clone());
        let soa = SOA::new(
            mname,
            rname,
            self.serial.load(Ordering::Relaxed),
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            self.ttl,
        );
        Record::from_rdata(self.origin.clone(), self.ttl, RData::SOA(soa))
    }

    /// A positive answer, or NODATA when no record of the asked type exists
    /// at a name that does (e.g. AAAA of an IPv4-only Service): NXDOMAIN
    /// there would make resolvers like musl give up on the A answer too.
    fn records(&self, answers: Vec<Record>, additionals: Vec<Record>) -> Local {
        if answers.is_empty() {
            return self.nodata();
        }
        Local {
            answers,
            additionals,
            ..Local::default()
        }
    }

    fn nodata(&self) -> Local {
        Local {
            authorities: vec![self.soa()],
            ..Local::default()
        }
    }

    fn nxdomain(&self) -> Local {
        Local {
            rcode: ResponseCode::NXDomain,
            authorities: vec![self.soa()],
            ..Local::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_decode_like_coredns() {
        assert_eq!(pod_ip("10-244-1-5"), Some("10.244.1.5".parse().unwrap()));
        assert_eq!(
            pod_ip("fd00-10-244--5"),
            Some("fd00:10:244::5".parse().unwrap())
        );
        assert_eq!(pod_ip("not-an-ip"), None);
        assert_eq!(pod_ip("10-244-1"), None);
    }

    #[test]
    fn endpoints_without_hostname_are_named_by_ip() {
        let v4 = EndpointRecord {
            ip: "10.1.2.3".parse().unwrap(),
            hostname: None,
        };
        let v6 = EndpointRecord {
            ip: "fd00::7".parse().unwrap(),
            hostname: None,
        };
        let named = EndpointRecord {
            ip: "10.1.2.3".parse().unwrap(),
            hostname: Some("web-0".into()),
        };
        assert_eq!(endpoint_label(&v4), "10-1-2-3");
        assert_eq!(endpoint_label(&v6), "fd00--7");
        assert_eq!(endpoint_label(&named), "web-0");
    }

    #[test]
    fn serial_increases_on_every_change() {
        let zone = Zone::new(Name::from_ascii("cluster.local").unwrap(), 5).unwrap();
        zone.set_services(Vec::new());
        let first = zone.serial.load(Ordering::Relaxed);
        zone.remove("default", "nothing");
        assert!(zone.serial.load(Ordering::Relaxed) > first);
    }
}
