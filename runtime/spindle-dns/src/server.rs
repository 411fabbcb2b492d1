//! Sockets, the hickory request handler, and forwarding to the upstreams.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as ResolveDnsError, NetError};
use hickory_resolver::TokioResolver;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, info, warn};

use crate::zone::{Outcome, Zone};
use crate::{DnsConfig, DnsError, ServiceRecord};

/// A TCP client that sends nothing for this long is dropped, so idle
/// connections cannot pile up.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection before the writer pushes back.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Upper bound for one upstream exchange: below the 5 s a glibc or musl
/// resolver waits per try, so a dead upstream yields SERVFAIL (and the client
/// tries its next server) rather than a client-side timeout.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Overall bound for a forwarded query, all upstreams and retries included.
const FORWARD_DEADLINE: Duration = Duration::from_secs(4);
/// ExternalName Services may point at each other; a cycle must end.
const MAX_ALIAS_CHAIN: usize = 8;
/// With port 0, TCP gets the port the kernel gave UDP; if that one is taken
/// for TCP, start over with a fresh UDP port this many times.
const BIND_ATTEMPTS: usize = 16;

/// A running cluster DNS server.
///
/// Clones share the server; the Service table is updated through any of
/// them and the change is visible to the next query. The server stops on
/// [`ClusterDns::shutdown`], or when the last clone is dropped.
#[derive(Clone)]
pub struct ClusterDns {
    inner: Arc<Inner>,
}

struct Inner {
    zone: Arc<Zone>,
    addrs: Vec<SocketAddr>,
    // Taken out by shutdown; dropping the hickory `Server` aborts its tasks,
    // which is what makes dropping the last handle stop serving.
    server: Mutex<Option<Server<Handler>>>,
}

impl ClusterDns {
    /// Binds UDP and TCP on every listen address and starts serving.
    pub async fn start(cfg: DnsConfig) -> Result<Self, DnsError> {
        if cfg.listen.is_empty() {
            return Err(DnsError::NoListenAddress);
        }
        let invalid_domain = |reason: String| DnsError::InvalidDomain {
            domain: cfg.domain.clone(),
            reason,
        };
        let trimmed = cfg.domain.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(invalid_domain("empty".into()));
        }
        let origin = Name::from_ascii(trimmed).map_err(|e| invalid_domain(e.to_string()))?;
        let zone = Arc::new(Zone::new(origin, cfg.ttl).map_err(invalid_domain)?);

        let upstreams = without_loops(&cfg.upstreams, &cfg.listen);
        let resolver = match upstreams.is_empty() {
            true => {
                warn!("cluster DNS has no upstream nameservers; names outside {trimmed} will fail");
                None
            }
            false => Some(upstream_resolver(&upstreams)?),
        };

        let mut server = Server::new(Handler {
            zone: zone.clone(),
            resolver,
            allowed_clients: cfg.allowed_clients.clone(),
        });
        let mut addrs = Vec::with_capacity(cfg.listen.len());
        for &addr in &cfg.listen {
            let (udp, tcp) = bind_pair(addr).await?;
            let local = udp.local_addr().map_err(|source| DnsError::Bind {
                addr,
                protocol: "udp",
                source,
            })?;
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
            addrs.push(local);
        }
        info!(listen = ?addrs, domain = trimmed, ?upstreams, allowed_clients = ?cfg.allowed_clients, "cluster DNS serving");

        Ok(Self {
            inner: Arc::new(Inner {
                zone,
                addrs,
                server: Mutex::new(Some(server)),
            }),
        })
    }

    /// The bound addresses, one per [`DnsConfig::listen`] entry, with the
    /// real port when port 0 was asked for. TCP listens on the same port.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.addrs.clone()
    }

    /// Replaces the whole Service table.
    pub fn set_services(&self, services: Vec<ServiceRecord>) {
        self.inner.zone.set_services(services);
    }

    /// Adds a Service, or replaces the one with the same namespace and name.
    pub fn upsert(&self, service: ServiceRecord) {
        self.inner.zone.upsert(service);
    }

    /// The IPv4 addresses `name` has in the cluster domain, answered from the table
    /// without a query on the wire (for in-process clients such as the Wasm runtime's
    /// HTTP client), with a pod's search list: `search` holds the domains to try first,
    /// in order, for names with fewer than five dots (`ndots:5`). `None` when the name
    /// is not the cluster's (the caller then uses an ordinary resolver), or has no
    /// address (ExternalName aliases included).
    pub fn lookup_ipv4(&self, name: &str, search: &[String]) -> Option<Vec<IpAddr>> {
        let name = name.trim_end_matches('.');
        let mut candidates: Vec<String> = Vec::new();
        if name.matches('.').count() < 5 {
            candidates.extend(search.iter().map(|d| format!("{name}.{d}")));
        }
        candidates.push(name.to_owned());
        for candidate in candidates {
            let Ok(qname) = Name::from_ascii(format!("{candidate}.")) else {
                continue;
            };
            if let Outcome::Local(local) = self.inner.zone.resolve(&qname, RecordType::A) {
                let ips: Vec<IpAddr> = local
                    .answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    })
                    .collect();
                if !ips.is_empty() {
                    return Some(ips);
                }
            }
        }
        None
    }

    /// Removes a Service; removing one that is not there is not an error.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.inner.zone.remove(namespace, name);
    }

    /// Stops accepting queries and waits for the server's tasks to end. Other
    /// clones stay usable for table updates but no longer serve.
    pub async fn shutdown(self) {
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut server) = server {
            if let Err(error) = server.shutdown_gracefully().await {
                warn!(%error, "cluster DNS shut down with an error");
            }
        }
    }
}

/// Binds a UDP socket and a TCP listener on the same address and port.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let attempts = if addr.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let bind_error = |protocol, source| DnsError::Bind {
            addr,
            protocol,
            source,
        };
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_error("udp", e))?;
        let local = udp.local_addr().map_err(|e| bind_error("udp", e))?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < attempts => {
                debug!(%local, "TCP port taken, picking another UDP port");
            }
            Err(e) => return Err(bind_error("tcp", e)),
        }
    }
}

/// Drops upstreams that are this server itself: forwarding to them would
/// send a query round in circles until it times out.
fn without_loops(upstreams: &[SocketAddr], listen: &[SocketAddr]) -> Vec<SocketAddr> {
    upstreams
        .iter()
        .copied()
        .filter(|up| {
            let is_self = listen.iter().any(|l| {
                up == l
                    || (l.port() == up.port()
                        && l.ip().is_unspecified()
                        && (up.ip().is_loopback() || up.ip().is_unspecified()))
            });
            if is_self {
                warn!(upstream = %up, "ignoring upstream nameserver that is this server");
            }
            !is_self
        })
        .collect()
}

fn upstream_resolver(upstreams: &[SocketAddr]) -> Result<TokioResolver, DnsError> {
    let name_servers = upstreams
        .iter()
        .map(|up| {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = up.port();
                    c
                })
                .collect();
            NameServerConfig::new(up.ip(), true, connections)
        })
        .collect();
    // No domain or search list: the server gets fully qualified names and
    // must forward them as they are.
    let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
    let mut options = ResolverOpts::default();
    options.timeout = UPSTREAM_TIMEOUT;
    // The host's /etc/hosts is not the cluster's business (and a pod asking
    // for `localhost.` never gets here: its own resolver answers that).
    options.use_hosts_file = ResolveHosts::Never;
    // A forwarder must pass CNAME chains on (RFC 1034 4.3.2).
    options.preserve_intermediates = true;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map_err(|e| DnsError::Upstream(e.to_string()))
}

/// The response to one query, before it is put on the wire.
#[derive(Default)]
struct Reply {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            ..Self::default()
        }
    }
}

struct Handler {
    zone: Arc<Zone>,
    resolver: Option<TokioResolver>,
    /// See [`DnsConfig::allowed_clients`].
    allowed_clients: Vec<ipnet::IpNet>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let allowed = self.allows(request.src().ip());
        let reply = if allowed {
            self.reply(request).await
        } else {
            debug!(client = %request.src(), "refusing DNS query from outside the allowed networks");
            Reply::code(ResponseCode::Refused)
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = reply.authoritative;
        // We recurse on the client's behalf (by forwarding), like CoreDNS, but
        // only for the clients allowed to use it.
        metadata.recursion_available = allowed;
        metadata.response_code = reply.rcode;
        // Answer EDNS with EDNS (RFC 6891), which is also what lets a UDP
        // response grow past 512 bytes before hickory sets TC.
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(%error, "sending DNS response failed");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

impl Handler {
    fn allows(&self, client: IpAddr) -> bool {
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
        let client = client.to_canonical();
        self.allowed_clients.iter().any(|net| net.contains(&client))
    }

    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Reply::code(ResponseCode::BADVERS);
        }
        // Exactly one question, as every real resolver sends.
        let Ok(info) = request.request_info() else {
            return Reply::code(ResponseCode::FormErr);
        };
        let query = info.query.original();
        if query.query_class() != DNSClass::IN {
            return Reply::code(ResponseCode::Refused);
        }
        let qtype = query.query_type();
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            // No zone transfers of the Service table (CoreDNS refuses them
            // unless its transfer plugin is set up).
            return Reply::code(ResponseCode::Refused);
        }
        self.answer(query.name(), qtype).await
    }

    async fn answer(&self, qname: &Name, qtype: RecordType) -> Reply {
        let local = match self.zone.resolve(qname, qtype) {
            Outcome::Forward => return self.forward(qname, qtype).await,
            Outcome::Local(local) => local,
        };
        let mut reply = Reply {
            rcode: local.rcode,
            authoritative: true,
            answers: local.answers,
            authorities: local.authorities,
            additionals: local.additionals,
        };
        // Chase ExternalName aliases: inside the domain from the table,
        // outside through the upstreams. If the chase fails the CNAME alone
        // still goes out, which is what CoreDNS does as well.
        let mut target = local.follow;
        let mut hops = 0;
        while let Some(name) = target.take() {
            hops += 1;
            if hops > MAX_ALIAS_CHAIN {
                warn!(%qname, "ExternalName alias chain too long");
                break;
            }
            match self.zone.resolve(&name, qtype) {
                Outcome::Local(next) => {
                    if next.rcode == ResponseCode::NoError {
                        reply.answers.extend(next.answers);
                        reply.additionals.extend(next.additionals);
                        target = next.follow;
                    }
                }
                Outcome::Forward => {
                    let upstream = self.forward(&name, qtype).await;
                    if upstream.rcode == ResponseCode::NoError {
                        reply.answers.extend(upstream.answers);
                    }
                }
            }
        }
        reply
    }

    /// Asks the upstreams, returning their verdict as it came (NXDOMAIN with
    /// their SOA, NODATA, REFUSED...), and SERVFAIL when none answered.
    async fn forward(&self, qname: &Name, qtype: RecordType) -> Reply {
        let Some(resolver) = &self.resolver else {
            return Reply::code(ResponseCode::ServFail);
        };
        let lookup = tokio::time::timeout(FORWARD_DEADLINE, resolver.lookup(qname.clone(), qtype));
        match lookup.await {
            Ok(Ok(lookup)) => Reply {
                answers: lookup.answers().to_vec(),
                ..Reply::default()
            },
            Ok(Err(NetError::Dns(ResolveDnsError::NoRecordsFound(none)))) => Reply {
                rcode: none.response_code,
                authorities: match (none.authorities, none.soa) {
                    (Some(authorities), _) => authorities.to_vec(),
                    (None, Some(soa)) => vec![soa.into_record_of_rdata()],
                    (None, None) => Vec::new(),
                },
                ..Reply::default()
            },
            Ok(Err(NetError::Dns(ResolveDnsError::ResponseCode(rcode)))) => Reply::code(rcode),
            Ok(Err(error)) => {
                debug!(%qname, %qtype, %error, "upstream lookup failed");
                Reply::code(ResponseCode::ServFail)
            }
            Err(_) => {
                debug!(%qname, %qtype, "upstream lookup timed out");
                Reply::code(ResponseCode::ServFail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_that_are_this_server_are_dropped() {
        let listen: Vec<SocketAddr> = vec!["0.0.0.0:53".parse().unwrap()];
        let upstreams: Vec<SocketAddr> = vec![
            "127.0.0.1:53".parse().unwrap(),
            "127.0.0.53:5353".parse().unwrap(),
            "192.0.2.1:53".parse().unwrap(),
        ];
        assert_eq!(
            without_loops(&upstreams, &listen),
            vec![
                "127.0.0.53:5353".parse::<SocketAddr>().unwrap(),
                "192.0.2.1:53".parse().unwrap()
            ]
        );
        let listen: Vec<SocketAddr> = vec!["10.96.0.10:53".parse().unwrap()];
        let upstreams: Vec<SocketAddr> = vec!["10.96.0.10:53".parse().unwrap()];
        assert!(without_loops(&upstreams, &listen).is_empty());
    }
}
