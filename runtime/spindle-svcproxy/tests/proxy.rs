//! The proxy against the real kernel: a "node" network namespace with a bridge and two
//! "pod" namespaces behind it (all made here, so the machine's own ruleset is never
//! touched), TCP servers in the pods, and connections from the node and from a pod.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use spindle_net::Sandbox;
use spindle_svcproxy::{
    EndpointView, Proxy, ProxyConfig, ServicePortView, ServiceView, Snapshot, StaticDnat,
};

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces of one test; removed on drop, also after a failed assertion.
struct Lab {
    node: String,
    pods: Vec<String>,
    subnet: u8,
}

impl Lab {
    fn new(tag: &str, subnet: u8) -> Lab {
        let base = format!("spx{}{tag}", std::process::id() & 0xfff);
        let lab = Lab {
            node: format!("{base}n"),
            pods: vec![format!("{base}a"), format!("{base}b")],
            subnet,
        };
        ip(&["netns", "add", &lab.node]);
        ip(&["-n", &lab.node, "link", "set", "lo", "up"]);
        ip(&["-n", &lab.node, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &lab.node,
            "addr",
            "add",
            &format!("{}/24", lab.gateway()),
            "dev",
            "br0",
        ]);
        ip(&["-n", &lab.node, "link", "set", "br0", "up"]);
        // Service VIPs are routed nowhere in particular, as on a host with a default route.
        ip(&["-n", &lab.node, "route", "add", "default", "dev", "br0"]);
        let sysctl = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .output()
            .expect("sysctl");
        assert!(sysctl.status.success());
        for (i, pod) in lab.pods.iter().enumerate() {
            ip(&["netns", "add", pod]);
            ip(&["-n", pod, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &lab.node,
                "link",
                "add",
                &format!("v{i}"),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod,
            ]);
            ip(&[
                "-n",
                &lab.node,
                "link",
                "set",
                &format!("v{i}"),
                "master",
                "br0",
                "up",
            ]);
            // As the CNI bridge plugin's hairpinMode sets it: a pod may reach itself
            // through a Service.
            ip(&[
                "-n",
                &lab.node,
                "link",
                "set",
                &format!("v{i}"),
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ]);
            ip(&[
                "-n",
                pod,
                "addr",
                "add",
                &format!("{}/24", lab.pod_ip(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", pod, "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                pod,
                "route",
                "add",
                "default",
                "via",
                &lab.gateway().to_string(),
            ]);
        }
        lab
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, self.subnet, 1)
    }

    fn pod_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, self.subnet, 2 + i as u8)
    }

    fn sandbox(&self, name: &str, ip: Ipv4Addr) -> Sandbox {
        Sandbox {
            uid: name.to_owned(),
            netns_path: PathBuf::from("/run/netns").join(name),
            ip,
            gateway: self.gateway(),
        }
    }

    fn node(&self) -> Sandbox {
        self.sandbox(&self.node, self.gateway())
    }

    fn pod(&self, i: usize) -> Sandbox {
        self.sandbox(&self.pods[i], self.pod_ip(i))
    }

    /// A server in pod `i` answering every connection with its own name.
    fn serve(&self, i: usize) {
        let listener = self
            .pod(i)
            .enter(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080)))
            .expect("enter pod")
            .expect("bind in pod");
        let name = format!("pod{i}");
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(name.as_bytes());
            }
        });
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain([&self.node]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Connects from inside `from` and reads the answer.
/// How long [`fetch`] waits for a connection: a dropped SYN fails after this long, with
/// `TimedOut`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn fetch(from: &Sandbox, addr: SocketAddr) -> std::io::Result<String> {
    from.enter(|| {
        let mut conn = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut s = String::new();
        conn.read_to_string(&mut s)?;
        Ok(s)
    })
    .map_err(|e| std::io::Error::other(e.to_string()))?
}

fn service(name: &str, vip: &str, node_port: Option<u16>, eps: &[(Ipv4Addr, bool)]) -> ServiceView {
    ServiceView {
        namespace: "default".into(),
        name: name.into(),
        type_: if node_port.is_some() {
            "NodePort"
        } else {
            "ClusterIP"
        }
        .into(),
        cluster_ips: vec![vip.parse().expect("vip")],
        headless: false,
        external_name: None,
        ports: vec![ServicePortView {
            name: String::new(),
            protocol: "TCP".into(),
            port: 80,
            node_port,
        }],
        endpoints: eps
            .iter()
            .map(|(ip, ready)| EndpointView {
                ip: (*ip).into(),
                ready: *ready,
                hostname: None,
                node_name: None,
                ports: vec![(String::new(), "TCP".into(), 8080)],
            })
            .collect(),
    }
}

fn table_exists(lab: &Lab, table: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", &lab.node, "nft", "list", "table", "ip", table,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test]
async fn cluster_ips_and_node_ports_reach_ready_endpoints_only() {
    let lab = Lab::new("x", 201);
    lab.serve(0);
    lab.serve(1);
    let mut cfg = ProxyConfig::new("spxtest");
    cfg.netns = Some(lab.node.clone());
    cfg.cluster_cidr = Some(format!("10.98.{}.0/24", lab.subnet).parse().expect("cidr"));
    cfg.statics.push(StaticDnat {
        ip: "10.97.0.10".parse().expect("ip"),
        port: 53,
        protocol: "TCP".into(),
        to: format!("{}:8080", lab.pod_ip(1)).parse().expect("addr"),
    });
    let proxy = Proxy::new(cfg);
    let (a, b) = (lab.pod_ip(0), lab.pod_ip(1));
    let snap = Snapshot {
        services: vec![
            service("web", "10.97.0.5", Some(30080), &[(a, true), (b, true)]),
            service("one", "10.97.0.6", None, &[(a, true), (b, false)]),
            service("empty", "10.97.0.7", None, &[(b, false)]),
        ],
    };
    proxy.sync(&snap).await.expect("sync");
    let node = lab.node();

    // Both ready endpoints serve the ClusterIP, from the node and from a pod.
    let vip: SocketAddr = "10.97.0.5:80".parse().expect("addr");
    let mut seen = HashSet::new();
    for _ in 0..40 {
        seen.insert(fetch(&node, vip).expect("node -> ClusterIP"));
    }
    assert_eq!(
        seen,
        HashSet::from(["pod0".to_string(), "pod1".to_string()])
    );
    let mut seen = HashSet::new();
    for _ in 0..40 {
        // pod0 reaching itself through the Service too (hairpin, masqueraded).
        seen.insert(fetch(&lab.pod(0), vip).expect("pod -> ClusterIP"));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // The NodePort on the node's address.
    let np = SocketAddr::new(lab.gateway().into(), 30080);
    assert!(fetch(&node, np)
        .expect("node -> NodePort")
        .starts_with("pod"));
    assert!(fetch(&lab.pod(1), np)
        .expect("pod -> NodePort")
        .starts_with("pod"));

    // An unready endpoint gets nothing.
    for _ in 0..20 {
        assert_eq!(
            fetch(&node, "10.97.0.6:80".parse().expect("addr")).expect("one"),
            "pod0"
        );
    }
    // No ready endpoint at all: refused (an answer, as kube-proxy's REJECT gives), not a
    // SYN dropped until the client gives up.
    let started = std::time::Instant::now();
    let err = fetch(&node, "10.97.0.7:80".parse().expect("addr")).expect_err("empty answered");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        started.elapsed() < CONNECT_TIMEOUT,
        "{:?}",
        started.elapsed()
    );

    // The static forwarding.
    assert_eq!(
        fetch(&node, "10.97.0.10:53".parse().expect("addr")).expect("static"),
        "pod1"
    );

    // The Service removed: its address no longer leads anywhere.
    let snap = Snapshot {
        services: snap.services[1..].to_vec(),
    };
    proxy.sync(&snap).await.expect("sync");
    assert!(
        fetch(&node, vip).is_err(),
        "a deleted Service still answers"
    );
    assert!(
        fetch(&node, np).is_err(),
        "a deleted NodePort still answers"
    );

    proxy.cleanup().await.expect("cleanup");
    assert!(!table_exists(&lab, "spxtest"));
}
