//! End-to-end tests: a real server on 127.0.0.1, queried over UDP and TCP
//! with hickory's client, and with hickory's resolver configured from the
//! pod resolv.conf we generate. Forwarding goes to a second, in-test hickory
//! server standing in for the internet (it serves the root zone, so any name
//! it does not know gets a genuine NXDOMAIN).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::TokioResolver;
use hickory_server::net::client::{Client, ClientHandle};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use spindle_dns::{
    resolv_conf, ClusterDns, DnsConfig, DnsError, EndpointRecord, ServiceKind, ServiceRecord,
};
use tokio::net::{TcpListener, UdpSocket};

const DOMAIN: &str = "cluster.local";

#[derive(Clone, Copy, Debug)]
enum Transport {
    Udp,
    Tcp,
}
use Transport::{Tcp, Udp};

async fn query(server: SocketAddr, transport: Transport, name: &str, rtype: RecordType) -> Message {
    // from_ascii keeps the case (from_str would lowercase, IDNA-style).
    let name = Name::from_ascii(name).unwrap();
    let provider = TokioRuntimeProvider::default();
    let mut client = match transport {
        Udp => {
            let stream = UdpClientStream::builder(server, provider)
                .with_timeout(Some(Duration::from_secs(5)))
                .build();
            let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
            tokio::spawn(bg);
            client
        }
        Tcp => {
            let (stream, sender) =
                TcpClientStream::new(server, None, Some(Duration::from_secs(5)), provider);
            let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
            tokio::spawn(bg);
            client
        }
    };
    let response = client
        .query(name.clone(), DNSClass::IN, rtype)
        .await
        .unwrap_or_else(|e| panic!("{name} {rtype} over {transport:?}: {e}"));
    response.into_message()
}

fn ips(message: &Message) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn assert_negative(message: &Message, rcode: ResponseCode) {
    assert_eq!(message.metadata.response_code, rcode, "{message}");
    assert!(message.answers.is_empty(), "{message}");
    let soa = message
        .authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some((r.name.clone(), soa.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SOA in authority: {message}"));
    assert_eq!(soa.0, Name::from_str("cluster.local.").unwrap());
    assert_eq!(soa.1.minimum, 5, "negative TTL is the record TTL");
}

fn service(ns: &str, name: &str, kind: ServiceKind) -> ServiceRecord {
    ServiceRecord {
        namespace: ns.into(),
        name: name.into(),
        kind,
        ports: Vec::new(),
        endpoints: Vec::new(),
    }
}

fn cluster_ip(ns: &str, name: &str, ips: &[&str]) -> ServiceRecord {
    service(
        ns,
        name,
        ServiceKind::ClusterIp(ips.iter().map(|s| ip(s)).collect()),
    )
}

fn endpoint(ip_: &str, hostname: Option<&str>) -> EndpointRecord {
    EndpointRecord {
        ip: ip(ip_),
        hostname: hostname.map(Into::into),
    }
}

/// Binds UDP and TCP on one free loopback port.
async fn bind_loopback() -> (UdpSocket, TcpListener) {
    for _ in 0..16 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no free port pair");
}

/// The stand-in for the internet's DNS: authoritative for the root zone,
/// knowing only `example.com`, `db.example.com` and `www.example.org`.
struct FakeUpstream {
    addr: SocketAddr,
    _server: Server<Catalog>,
}

async fn fake_upstream() -> FakeUpstream {
    let root = Name::root();
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        root.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(
        Name::from_str("a.root-servers.test.").unwrap(),
        Name::from_str("hostmaster.root-servers.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        60,
    );
    let records = [
        Record::from_rdata(root.clone(), 60, RData::SOA(soa)),
        Record::from_rdata(
            Name::from_str("example.com.").unwrap(),
            60,
            RData::A(A::new(192, 0, 2, 10)),
        ),
        Record::from_rdata(
            Name::from_str("db.example.com.").unwrap(),
            60,
            RData::A(A::new(192, 0, 2, 20)),
        ),
        Record::from_rdata(
            Name::from_str("www.example.org.").unwrap(),
            60,
            RData::CNAME(CNAME(Name::from_str("db.example.com.").unwrap())),
        ),
    ];
    for record in records {
        assert!(zone.upsert_mut(record, 1));
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&root), vec![Arc::new(zone)]);
    let mut server = Server::new(catalog);
    let (udp, tcp) = bind_loopback().await;
    let addr = udp.local_addr().unwrap();
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);
    FakeUpstream {
        addr,
        _server: server,
    }
}

async fn start(upstreams: Vec<SocketAddr>) -> (ClusterDns, SocketAddr) {
    let dns = ClusterDns::start(DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        domain: DOMAIN.into(),
        upstreams,
        ttl: 5,
        allowed_clients: spindle_dns::loopback_clients(),
    })
    .await
    .unwrap();
    let addr = dns.local_addrs()[0];
    assert_ne!(addr.port(), 0);
    (dns, addr)
}

#[tokio::test]
async fn cluster_ip_service_over_udp_and_tcp() {
    let (dns, addr) = start(Vec::new()).await;
    dns.set_services(vec![
        cluster_ip("default", "web", &["10.96.0.20"]),
        cluster_ip("prod", "api", &["10.96.0.30", "fd00::30"]),
    ]);
    for transport in [Udp, Tcp] {
        let m = query(
            addr,
            transport,
            "web.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(ips(&m), vec![ip("10.96.0.20")]);
        assert_eq!(m.answers[0].ttl, 5);

        // Case does not matter, and the answer echoes the asker's case.
        let m = query(
            addr,
            transport,
            "WEB.Default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m), vec![ip("10.96.0.20")]);
        assert_eq!(
            m.answers[0].name.to_ascii(),
            "WEB.Default.svc.cluster.local."
        );

        // IPv4-only Service: AAAA is NODATA, not NXDOMAIN.
        let m = query(
            addr,
            transport,
            "web.default.svc.cluster.local.",
            RecordType::AAAA,
        )
        .await;
        assert_negative(&m, ResponseCode::NoError);

        // Dual-stack Service.
        let m = query(
            addr,
            transport,
            "api.prod.svc.cluster.local.",
            RecordType::AAAA,
        )
        .await;
        assert_eq!(ips(&m), vec![ip("fd00::30")]);
        let m = query(
            addr,
            transport,
            "api.prod.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m), vec![ip("10.96.0.30")]);
    }
    dns.shutdown().await;
}

#[tokio::test]
async fn headless_service_answers_each_ready_endpoint() {
    let (dns, addr) = start(Vec::new()).await;
    let mut db = service("data", "db", ServiceKind::Headless);
    db.endpoints = vec![
        endpoint("10.244.1.5", Some("db-0")),
        endpoint("10.244.2.6", Some("db-1")),
        endpoint("10.244.3.7", None),
    ];
    dns.upsert(db);
    for transport in [Udp, Tcp] {
        let m = query(addr, transport, "db.data.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.answers.len(), 3, "one A per endpoint: {m}");
        assert_eq!(
            ips(&m),
            vec![ip("10.244.1.5"), ip("10.244.2.6"), ip("10.244.3.7")]
        );
    }
    // No ready endpoints: the name exists but has no address.
    dns.upsert(service("data", "empty", ServiceKind::Headless));
    let m = query(addr, Udp, "empty.data.svc.cluster.local.", RecordType::A).await;
    assert_negative(&m, ResponseCode::NoError);
}

#[tokio::test]
async fn endpoint_hostname_records() {
    let (dns, addr) = start(Vec::new()).await;
    let mut db = service("data", "db", ServiceKind::Headless);
    db.endpoints = vec![
        endpoint("10.244.1.5", Some("db-0")),
        endpoint("10.244.2.6", Some("db-1")),
        endpoint("10.244.3.7", None),
    ];
    dns.upsert(db);
    for transport in [Udp, Tcp] {
        let m = query(
            addr,
            transport,
            "db-1.db.data.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m), vec![ip("10.244.2.6")]);
        // Endpoints without a hostname are named by their dashed IP.
        let m = query(
            addr,
            transport,
            "10-244-3-7.db.data.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m), vec![ip("10.244.3.7")]);
        let m = query(
            addr,
            transport,
            "db-9.db.data.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_negative(&m, ResponseCode::NXDomain);
    }
    // ClusterIP Services have no per-endpoint names.
    let mut web = cluster_ip("default", "web", &["10.96.0.20"]);
    web.endpoints = vec![endpoint("10.244.1.9", Some("web-0"))];
    dns.upsert(web);
    let m = query(
        addr,
        Udp,
        "web-0.web.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_negative(&m, ResponseCode::NXDomain);
}

#[tokio::test]
async fn external_name_is_a_cname_followed_upstream() {
    let upstream = fake_upstream().await;
    let (dns, addr) = start(vec![upstream.addr]).await;
    dns.set_services(vec![
        service(
            "default",
            "db",
            ServiceKind::ExternalName("db.example.com".into()),
        ),
        // An alias of an in-cluster Service is followed from the table.
        service(
            "default",
            "web-alias",
            ServiceKind::ExternalName("web.default.svc.cluster.local".into()),
        ),
        cluster_ip("default", "web", &["10.96.0.20"]),
        // Points at itself: the chase must stop.
        service(
            "default",
            "loop",
            ServiceKind::ExternalName("loop.default.svc.cluster.local".into()),
        ),
    ]);
    let target = Name::from_str("db.example.com.").unwrap();
    for transport in [Udp, Tcp] {
        let m = query(
            addr,
            transport,
            "db.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        assert_eq!(
            m.answers[0].data,
            RData::CNAME(CNAME(target.clone())),
            "CNAME first: {m}"
        );
        assert_eq!(m.answers[1].name, target);
        assert_eq!(ips(&m), vec![ip("192.0.2.20")]);

        // Asking for the CNAME itself gets only the CNAME.
        let m = query(
            addr,
            transport,
            "db.default.svc.cluster.local.",
            RecordType::CNAME,
        )
        .await;
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::CNAME(CNAME(target.clone())));

        let m = query(
            addr,
            transport,
            "web-alias.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m), vec![ip("10.96.0.20")]);
    }
    let m = query(addr, Udp, "loop.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(ips(&m).is_empty());
}

#[tokio::test]
async fn srv_records_for_named_ports() {
    let (dns, addr) = start(Vec::new()).await;
    let mut web = cluster_ip("default", "web", &["10.96.0.20"]);
    web.ports = vec![
        ("http".into(), "tcp".into(), 80),
        ("dns".into(), "udp".into(), 53),
    ];
    let mut db = service("data", "db", ServiceKind::Headless);
    db.ports = vec![("pg".into(), "tcp".into(), 5432)];
    db.endpoints = vec![
        endpoint("10.244.1.5", Some("db-0")),
        endpoint("10.244.2.6", None),
    ];
    dns.set_services(vec![web, db]);

    for transport in [Udp, Tcp] {
        let m = query(
            addr,
            transport,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        assert_eq!(m.answers.len(), 1, "{m}");
        let RData::SRV(srv) = &m.answers[0].data else {
            panic!("not SRV: {m}")
        };
        assert_eq!(srv.port, 80);
        assert_eq!(srv.target.to_ascii(), "web.default.svc.cluster.local.");
        assert_eq!((srv.priority, srv.weight), (0, 100));
        // The target's address comes along in the additional section.
        assert!(m
            .additionals
            .iter()
            .any(|r| r.name == srv.target && r.data == RData::A(A::new(10, 96, 0, 20))));

        let m = query(
            addr,
            transport,
            "_dns._udp.web.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert!(matches!(&m.answers[0].data, RData::SRV(s) if s.port == 53));

        // Headless: one SRV per endpoint, targets are endpoint names.
        let m = query(
            addr,
            transport,
            "_pg._tcp.db.data.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        let mut targets: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => {
                    assert_eq!(s.port, 5432);
                    s.target.to_ascii()
                }
                other => panic!("not SRV: {other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            vec![
                "10-244-2-6.db.data.svc.cluster.local.",
                "db-0.db.data.svc.cluster.local."
            ]
        );
    }
    // Unknown port or wrong protocol: NXDOMAIN; the `_tcp` node exists.
    let m = query(
        addr,
        Udp,
        "_https._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_negative(&m, ResponseCode::NXDomain);
    let m = query(
        addr,
        Udp,
        "_http._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_negative(&m, ResponseCode::NXDomain);
    let m = query(
        addr,
        Udp,
        "_tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_negative(&m, ResponseCode::NoError);
    // SRV of the bare Service name lists every port.
    let m = query(addr, Udp, "web.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(m.answers.len(), 2, "{m}");
}

#[tokio::test]
async fn pod_records_answer_the_ip_in_the_name() {
    let (_dns, addr) = start(Vec::new()).await;
    for transport in [Udp, Tcp] {
        let m = query(
            addr,
            transport,
            "10-244-1-5.default.pod.cluster.local.",
            RecordType::A,
        )
        .await;
        assert!(m.metadata.authoritative);
        assert_eq!(ips(&m), vec![ip("10.244.1.5")]);
        let m = query(
            addr,
            transport,
            "fd00-10-244--5.kube-system.pod.cluster.local.",
            RecordType::AAAA,
        )
        .await;
        assert_eq!(ips(&m), vec![ip("fd00:10:244::5")]);
    }
    let m = query(
        addr,
        Udp,
        "10-244-1-5.default.pod.cluster.local.",
        RecordType::AAAA,
    )
    .await;
    assert_negative(&m, ResponseCode::NoError);
    let m = query(
        addr,
        Udp,
        "not-an-ip.default.pod.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_negative(&m, ResponseCode::NXDomain);
}

#[tokio::test]
async fn unknown_names_in_the_domain_are_nxdomain_with_soa() {
    let (dns, addr) = start(Vec::new()).await;
    dns.upsert(cluster_ip("default", "web", &["10.96.0.20"]));
    for transport in [Udp, Tcp] {
        for name in [
            "nope.default.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "other.svc.cluster.local.",
            "anything.cluster.local.",
            "a.b.web.default.svc.cluster.local.",
            // What a pod's resolver tries first for `example.com` (ndots:5).
            "example.com.default.svc.cluster.local.",
            "example.com.svc.cluster.local.",
            "example.com.cluster.local.",
        ] {
            let m = query(addr, transport, name, RecordType::A).await;
            assert_negative(&m, ResponseCode::NXDomain);
            assert!(m.metadata.authoritative, "{name}");
        }
        // Names that exist without records of their own are NODATA.
        for name in [
            "default.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
        ] {
            let m = query(addr, transport, name, RecordType::A).await;
            assert_negative(&m, ResponseCode::NoError);
        }
    }
    let m = query(addr, Udp, "cluster.local.", RecordType::SOA).await;
    assert!(matches!(m.answers[0].data, RData::SOA(_)), "{m}");
}

#[tokio::test]
async fn updates_are_visible_immediately() {
    let (dns, addr) = start(Vec::new()).await;
    let name = "web.default.svc.cluster.local.";
    let m = query(addr, Udp, name, RecordType::A).await;
    assert_negative(&m, ResponseCode::NXDomain);

    dns.upsert(cluster_ip("default", "web", &["10.96.0.20"]));
    assert_eq!(
        ips(&query(addr, Udp, name, RecordType::A).await),
        vec![ip("10.96.0.20")]
    );

    // A clone is the same server.
    dns.clone()
        .upsert(cluster_ip("default", "web", &["10.96.0.21"]));
    assert_eq!(
        ips(&query(addr, Tcp, name, RecordType::A).await),
        vec![ip("10.96.0.21")]
    );

    dns.remove("default", "web");
    assert_negative(
        &query(addr, Udp, name, RecordType::A).await,
        ResponseCode::NXDomain,
    );
    // The namespace is gone with its last Service.
    assert_negative(
        &query(addr, Udp, "default.svc.cluster.local.", RecordType::A).await,
        ResponseCode::NXDomain,
    );

    dns.upsert(cluster_ip("default", "web", &["10.96.0.20"]));
    dns.set_services(vec![cluster_ip("default", "other", &["10.96.0.40"])]);
    assert_negative(
        &query(addr, Udp, name, RecordType::A).await,
        ResponseCode::NXDomain,
    );
    assert_eq!(
        ips(&query(addr, Udp, "other.default.svc.cluster.local.", RecordType::A).await),
        vec![ip("10.96.0.40")]
    );
}

#[tokio::test]
async fn outside_names_are_forwarded_upstream() {
    let upstream = fake_upstream().await;
    let (_dns, addr) = start(vec![upstream.addr]).await;
    for transport in [Udp, Tcp] {
        let m = query(addr, transport, "example.com.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        assert!(!m.metadata.authoritative, "forwarded answers are not ours");
        assert!(m.metadata.recursion_available);
        assert_eq!(ips(&m), vec![ip("192.0.2.10")]);

        // CNAME chains come through whole.
        let m = query(addr, transport, "www.example.org.", RecordType::A).await;
        assert!(matches!(m.answers[0].data, RData::CNAME(_)), "{m}");
        assert_eq!(ips(&m), vec![ip("192.0.2.20")]);

        // The upstream's NXDOMAIN and its SOA are passed on.
        let m = query(addr, transport, "missing.example.com.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m}");
        assert!(m
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA));
    }
}

#[tokio::test]
async fn no_upstream_means_servfail_for_outside_names() {
    let (_dns, addr) = start(Vec::new()).await;
    let m = query(addr, Udp, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn short_names_are_not_expanded_by_the_server() {
    let upstream = fake_upstream().await;
    let (dns, addr) = start(vec![upstream.addr]).await;
    dns.upsert(cluster_ip("default", "web", &["10.96.0.20"]));
    // `web` and `web.default` are outside the domain as far as the server
    // is concerned: they go upstream, where they do not exist.
    for name in ["web.", "web.default.", "web.default.svc."] {
        let m = query(addr, Udp, name, RecordType::A).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}: {m}"
        );
        assert!(m.answers.is_empty());
    }
}

/// The resolver a pod runs, configured from the resolv.conf we generate:
/// short names resolve through the search list, outside names after the
/// search-list candidates fail.
#[tokio::test]
async fn pod_resolver_with_generated_resolv_conf() {
    let upstream = fake_upstream().await;
    let (dns, addr) = start(vec![upstream.addr]).await;
    dns.set_services(vec![
        cluster_ip("default", "web", &["10.96.0.20"]),
        cluster_ip("prod", "api", &["10.96.0.30"]),
    ]);
    let conf = resolv_conf(addr.ip(), "default", DOMAIN);
    let (parsed, options) = hickory_resolver::system_conf::parse_resolv_conf(&conf).unwrap();
    assert_eq!(options.ndots, 5);
    let (domain, search, _) = parsed.into_parts();
    // resolv.conf has no port; point the name server at ours.
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut c| {
            c.port = addr.port();
            c
        })
        .collect();
    let config = ResolverConfig::from_parts(
        domain,
        search,
        vec![NameServerConfig::new(addr.ip(), true, connections)],
    );
    let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .unwrap();

    let lookup = |name: &'static str| {
        let resolver = resolver.clone();
        async move {
            resolver.lookup(name, RecordType::A).await.map(|l| {
                l.answers()
                    .iter()
                    .filter_map(|r| match r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
        }
    };
    assert_eq!(lookup("web").await.unwrap(), vec![ip("10.96.0.20")]);
    assert_eq!(lookup("api.prod").await.unwrap(), vec![ip("10.96.0.30")]);
    assert_eq!(
        lookup("api.prod.svc").await.unwrap(),
        vec![ip("10.96.0.30")]
    );
    assert_eq!(lookup("example.com").await.unwrap(), vec![ip("192.0.2.10")]);
    assert!(
        lookup("api").await.is_err(),
        "other namespaces need the namespace"
    );
}

#[tokio::test]
async fn reverse_lookups_of_service_and_endpoint_ips() {
    let upstream = fake_upstream().await;
    let (dns, addr) = start(vec![upstream.addr]).await;
    let mut db = service("data", "db", ServiceKind::Headless);
    db.endpoints = vec![endpoint("10.244.1.5", Some("db-0"))];
    dns.set_services(vec![cluster_ip("default", "web", &["10.96.0.20"]), db]);

    let m = query(addr, Udp, "20.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    assert!(m.metadata.authoritative);
    assert_eq!(
        m.answers[0].data,
        RData::PTR(hickory_proto::rr::rdata::PTR(
            Name::from_str("web.default.svc.cluster.local.").unwrap()
        ))
    );
    let m = query(addr, Tcp, "5.1.244.10.in-addr.arpa.", RecordType::PTR).await;
    assert!(matches!(&m.answers[0].data,
        RData::PTR(p) if p.0.to_ascii() == "db-0.db.data.svc.cluster.local."));
    // Addresses we do not own go upstream (which has no reverse zone data).
    let m = query(addr, Udp, "1.2.0.192.in-addr.arpa.", RecordType::PTR).await;
    assert!(!m.metadata.authoritative);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn start_rejects_bad_config_and_shutdown_stops_serving() {
    let no_listen = ClusterDns::start(DnsConfig {
        listen: Vec::new(),
        domain: DOMAIN.into(),
        upstreams: Vec::new(),
        ttl: 5,
        allowed_clients: spindle_dns::loopback_clients(),
    })
    .await;
    assert!(matches!(no_listen, Err(DnsError::NoListenAddress)));

    let bad_domain = ClusterDns::start(DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        domain: "bad..domain".into(),
        upstreams: Vec::new(),
        ttl: 5,
        allowed_clients: spindle_dns::loopback_clients(),
    })
    .await;
    assert!(matches!(bad_domain, Err(DnsError::InvalidDomain { .. })));

    // A taken port is a bind error, not a panic.
    let (dns, addr) = start(Vec::new()).await;
    let taken = ClusterDns::start(DnsConfig {
        listen: vec![addr],
        domain: DOMAIN.into(),
        upstreams: Vec::new(),
        ttl: 5,
        allowed_clients: spindle_dns::loopback_clients(),
    })
    .await;
    assert!(matches!(taken, Err(DnsError::Bind { .. })));

    dns.shutdown().await;
    // The port is free again: TCP connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let (dns, addr) = start(Vec::new()).await;
    let mut big = service("default", "big", ServiceKind::Headless);
    big.endpoints = (0..200u8)
        .map(|i| endpoint(&format!("10.244.{}.{}", i / 100, i), None))
        .collect();
    dns.upsert(big);
    let name = "big.default.svc.cluster.local.";
    let udp = query(addr, Udp, name, RecordType::A).await;
    assert!(
        udp.metadata.truncation,
        "200 A records exceed a UDP payload"
    );
    let tcp = query(addr, Tcp, name, RecordType::A).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 200);
}

#[tokio::test]
async fn in_process_lookup_follows_the_pod_search_list() {
    let (dns, _) = start(Vec::new()).await;
    dns.set_services(vec![
        cluster_ip("default", "web", &["10.96.0.20"]),
        cluster_ip("prod", "web", &["10.96.0.21"]),
        service(
            "default",
            "ext",
            ServiceKind::ExternalName("example.org".into()),
        ),
    ]);
    let search = |ns: &str| {
        vec![
            format!("{ns}.svc.{DOMAIN}"),
            format!("svc.{DOMAIN}"),
            DOMAIN.to_string(),
        ]
    };
    // The short name is the Service of the pod's own namespace.
    assert_eq!(
        dns.lookup_ipv4("web", &search("default")),
        Some(vec![ip("10.96.0.20")])
    );
    assert_eq!(
        dns.lookup_ipv4("web", &search("prod")),
        Some(vec![ip("10.96.0.21")])
    );
    assert_eq!(
        dns.lookup_ipv4("web.prod", &search("default")),
        Some(vec![ip("10.96.0.21")])
    );
    assert_eq!(
        dns.lookup_ipv4(&format!("web.default.svc.{DOMAIN}."), &[]),
        Some(vec![ip("10.96.0.20")])
    );
    // Not the cluster's, or no address: left to the ordinary resolver.
    assert_eq!(dns.lookup_ipv4("nothing", &search("default")), None);
    assert_eq!(dns.lookup_ipv4("example.org", &search("default")), None);
    assert_eq!(dns.lookup_ipv4("ext", &search("default")), None);
}

/// Relays UDP queries to `upstream` one at a time, counting them: the
/// count is what the "internet" saw.
async fn counting_relay(upstream: SocketAddr) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            back.send_to(&buf[..n], upstream).await.unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(5), back.recv(&mut buf)).await;
            if let Ok(Ok(n)) = reply {
                let _ = front.send_to(&buf[..n], client).await;
            }
        }
    });
    (addr, seen)
}

fn raw_query(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

/// One query over UDP from a socket bound to `from`.
async fn query_from_udp(from: IpAddr, server: SocketAddr, name: &str) -> Message {
    let socket = UdpSocket::bind(SocketAddr::new(from, 0)).await.unwrap();
    socket.send_to(&raw_query(name), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// One query over TCP from a socket bound to `from`.
async fn query_from_tcp(from: IpAddr, server: SocketAddr, name: &str) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let q = raw_query(name);
    stream
        .write_all(&(q.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&q).await.unwrap();
    let read = async {
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer within 5 s");
    Message::from_vec(&buf).unwrap()
}

/// SPN-17: the server listens on the node's address, so it must not be an
/// open resolver. A client outside the allowed networks (here 127.0.0.2,
/// with only 127.0.0.1/32 allowed) gets REFUSED for outside names, which
/// never reach the upstream, and for cluster names too; an allowed client
/// still gets both answered.
#[tokio::test]
async fn clients_outside_the_allowed_networks_are_refused() {
    let upstream = fake_upstream().await;
    let (relay, seen) = counting_relay(upstream.addr).await;
    let dns = ClusterDns::start(DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        domain: DOMAIN.into(),
        upstreams: vec![relay],
        ttl: 5,
        allowed_clients: vec!["127.0.0.1/32".parse().unwrap()],
    })
    .await
    .unwrap();
    let addr = dns.local_addrs()[0];
    dns.set_services(vec![cluster_ip("default", "web", &["10.96.0.20"])]);
    let (inside, outside) = (ip("127.0.0.1"), ip("127.0.0.2"));

    let m = query_from_udp(inside, addr, "example.com.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert_eq!(ips(&m), vec![ip("192.0.2.10")]);
    let forwarded = seen.load(std::sync::atomic::Ordering::SeqCst);
    assert!(forwarded >= 1, "the allowed query went upstream");

    for name in ["example.org.", "web.default.svc.cluster.local."] {
        let udp = query_from_udp(outside, addr, name).await;
        let tcp = query_from_tcp(outside, addr, name).await;
        for m in [udp, tcp] {
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{m}");
            assert!(m.answers.is_empty(), "{m}");
            assert!(!m.metadata.recursion_available, "{m}");
        }
    }
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        forwarded,
        "refused queries must not reach the upstream"
    );

    // The server still answers its own clients.
    let m = query_from_tcp(inside, addr, "web.default.svc.cluster.local.").await;
    assert_eq!(ips(&m), vec![ip("10.96.0.20")]);
}
