//! End-to-end tests against the real CNI plugins, real network namespaces and
//! real iptables rules. They need root and the Debian packages
//! containernetworking-plugins and iproute2 (scripts/test installs them);
//! without them they fail, saying so, rather than skip.
//!
//! Each test gets its own bridge (`spt<random>`), netns prefix, pod CIDR
//! (`10.244.<random>.0/24`, not routed on the host yet) and state dir, so
//! tests run in parallel with each other and with other agents on the host;
//! a guard tears everything down, also when a test fails.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use spindle_net::{NetConfig, NetError, Network, PodRef, PortMapping, Sandbox};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Third octets of 10.244.x.0/24 taken by tests of this process.
static USED_OCTETS: Mutex<Option<HashSet<u8>>> = Mutex::new(None);

struct TestNet {
    net: Network,
    cfg: NetConfig,
    _dir: tempfile::TempDir,
}

impl TestNet {
    fn new() -> Self {
        Self::with_prefix_len(24)
    }

    /// A test network whose pod CIDR is the first /`len` of a free /24.
    fn with_prefix_len(len: u8) -> Self {
        assert!(
            is_root(),
            "these tests must run as root: they create network namespaces and run the CNI plugins"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let bridge = unique_bridge();
        let cfg = NetConfig {
            netns_prefix: bridge.clone(),
            bridge,
            ..NetConfig::new(
                dir.path(),
                ipnet::Ipv4Net::new(unique_cidr().network(), len).expect("prefix length"),
            )
        };
        let net = match Network::new(cfg.clone()) {
            Ok(n) => n,
            Err(e) => panic!(
                "cannot set up the pod network ({e}); install the packages with \
                 `DEBIAN_FRONTEND=noninteractive apt-get install -y containernetworking-plugins iproute2 nftables`"
            ),
        };
        TestNet {
            net,
            cfg,
            _dir: dir,
        }
    }

    /// Tears every sandbox down and checks that nothing is left behind: no
    /// netns, no IP reservation, no iptables rule of this network (ipMasq
    /// and portmap rules carry `name: "<network>"` comments, firewall rules
    /// name the pod IPs).
    async fn finish(self) {
        self.net.teardown_all().await.expect("teardown_all");
        assert!(self.net.list().await.is_empty());
        let prefix = format!("{}-", self.cfg.netns_prefix);
        let netns = cmd_output("ip", &["netns", "list"]);
        assert!(
            !netns.lines().any(|l| l.starts_with(&prefix)),
            "netns left behind: {netns}"
        );
        assert!(reserved_ips(&self.net).is_empty(), "IPs left reserved");
        let rules = cmd_output("iptables-save", &[]);
        let tag = format!("name: \\\"{}\\\"", self.cfg.bridge);
        let net = self.cfg.pod_cidr.network().octets();
        let subnet = format!(" {}.{}.{}.", net[0], net[1], net[2]);
        let leaked: Vec<&str> = rules
            .lines()
            .filter(|l| l.contains(&tag) || l.contains(&subnet))
            .collect();
        assert!(leaked.is_empty(), "iptables rules left behind: {leaked:#?}");
    }

    fn netns_name(&self, uid: &str) -> String {
        format!("{}-{uid}", self.cfg.netns_prefix)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, where blocking on a future is
        // not allowed: run the async teardown on a thread with its own.
        let net = self.net.clone();
        let torn = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(net.teardown_all()))
        })
        .join();
        if !matches!(torn, Ok(Ok(Ok(())))) {
            eprintln!("teardown_all in test cleanup failed: {torn:?}");
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.cfg.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    // The effective uid, from /proc: no libc binding needed for one number.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn unique_bridge() -> String {
    loop {
        let name = format!("spt{:08x}", rand::random::<u32>());
        if !Path::new("/sys/class/net").join(&name).exists() {
            return name;
        }
    }
}

/// A 10.244.x.0/24 that neither another test of this process nor anything
/// routed on the host uses.
fn unique_cidr() -> ipnet::Ipv4Net {
    let routes = cmd_output("ip", &["-4", "route", "show", "table", "all"]);
    let mut used = USED_OCTETS.lock().unwrap_or_else(|p| p.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    let start: u8 = rand::random();
    for i in 0..=255u8 {
        let octet = start.wrapping_add(i);
        let prefix = format!("10.244.{octet}.");
        if !used.contains(&octet) && !routes.contains(&prefix) {
            used.insert(octet);
            return format!("10.244.{octet}.0/24").parse().expect("valid CIDR");
        }
    }
    panic!("no free 10.244.x.0/24 left on this host");
}

fn cmd_output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} {args:?} ({e}); install iproute2"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sandbox's netns path is a network namespace of its own (an nsfs file, not the
/// host's namespace) and holds the pod's address.
fn assert_pod_netns(sb: &Sandbox) {
    use std::os::unix::fs::MetadataExt;
    let path = &sb.netns_path;
    let ns = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let host = std::fs::metadata("/proc/self/ns/net").expect("the host's netns");
    assert_eq!(
        ns.dev(),
        host.dev(),
        "{} is not a namespace",
        path.display()
    );
    assert_ne!(
        ns.ino(),
        host.ino(),
        "{} is the host's namespace",
        path.display()
    );
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("netns name");
    let addrs = cmd_output("ip", &["-n", name, "-4", "-o", "addr", "show"]);
    assert!(
        addrs.contains(&format!(" {}/", sb.ip)),
        "{name} lacks {}: {addrs}",
        sb.ip
    );
}

/// The nat rules that DNAT `host_port` to the pod (portmap's iptables rules).
fn dnat_rules(host_port: u16, sb: &Sandbox) -> Vec<String> {
    let to = format!("--to-destination {}:8080", sb.ip);
    let dport = format!("--dport {host_port} ");
    cmd_output("iptables-save", &["-t", "nat"])
        .lines()
        .filter(|l| l.contains(&to) && l.contains(&dport))
        .map(str::to_string)
        .collect()
}

fn pod(uid: &str) -> PodRef {
    PodRef {
        uid: uid.into(),
        namespace: "default".into(),
        name: format!("pod-{uid}"),
    }
}

/// Binds a listener inside the pod and serves one connection with `reply`.
fn serve_once_in(sandbox: &Sandbox, port: u16, reply: &'static [u8]) -> SocketAddr {
    serve_in(sandbox, port, reply, 1)
}

/// Binds one listener inside the pod and answers `count` connections with
/// `reply`. One listener for all of them: re-binding the port per
/// connection races the previous listener's close.
fn serve_in(sandbox: &Sandbox, port: u16, reply: &'static [u8], count: usize) -> SocketAddr {
    let listener = sandbox
        .enter(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .expect("enter pod netns")
        .expect("bind in pod");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for _ in 0..count {
            if let Ok((mut conn, _)) = listener.accept() {
                let _ = conn.write_all(reply);
            }
        }
    });
    SocketAddr::new(IpAddr::V4(sandbox.ip), port)
}

fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = String::new();
    conn.read_to_string(&mut buf)?;
    Ok(buf)
}

fn netns_link(path: &str) -> PathBuf {
    std::fs::read_link(path).expect("read ns link")
}

#[tokio::test]
async fn setup_gives_an_address_in_the_cidr_and_wires_eth0() {
    let t = TestNet::new();
    let sb = t.net.setup(&pod("a"), &[]).await.expect("setup");

    assert!(
        t.cfg.pod_cidr.contains(&sb.ip),
        "{} not in {}",
        sb.ip,
        t.cfg.pod_cidr
    );
    assert_ne!(sb.ip, sb.gateway);
    assert_eq!(
        sb.gateway,
        Ipv4Addr::from(u32::from(t.cfg.pod_cidr.network()) + 1)
    );
    assert_eq!(
        sb.netns_path,
        Path::new("/run/netns").join(t.netns_name("a"))
    );

    // Laid out like `ip netns add`, so iproute2 sees and enters it.
    let name = t.netns_name("a");
    assert!(cmd_output("ip", &["netns", "list"]).contains(&name));
    let eth0 = cmd_output(
        "ip",
        &["-n", &name, "-4", "-o", "addr", "show", "dev", "eth0"],
    );
    let want = format!("inet {}/{}", sb.ip, t.cfg.pod_cidr.prefix_len());
    assert!(eth0.contains(&want), "eth0 in the pod: {eth0}");
    let route = cmd_output("ip", &["-n", &name, "-4", "route", "show", "default"]);
    assert!(
        route.contains(&format!("via {}", sb.gateway)),
        "pod routes: {route}"
    );
    assert!(t
        .net
        .config()
        .conf_dir
        .join(format!("10-{}.conflist", t.cfg.bridge))
        .is_file());

    // The firewall plugin accepts the pod's traffic in FORWARD.
    let filter = cmd_output("iptables-save", &["-t", "filter"]);
    assert!(
        filter.contains(&format!(" {}/32", sb.ip)),
        "no FORWARD rules for the pod: {filter}"
    );

    // lo is up: a loopback connection inside the pod works.
    let echoed = sb
        .enter(|| -> std::io::Result<String> {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let addr = l.local_addr()?;
            let server = std::thread::spawn(move || -> std::io::Result<()> {
                let (mut c, _) = l.accept()?;
                c.write_all(b"lo")
            });
            let got = fetch(addr)?;
            server.join().expect("server thread")?;
            Ok(got)
        })
        .expect("enter")
        .expect("loopback in pod");
    assert_eq!(echoed, "lo");

    // enter runs in the pod's namespace and leaves the caller's alone.
    let host_ns = netns_link("/proc/thread-self/ns/net");
    let inside = sb
        .enter(|| netns_link("/proc/thread-self/ns/net"))
        .expect("enter");
    assert_ne!(inside, host_ns);
    assert_eq!(netns_link("/proc/thread-self/ns/net"), host_ns);

    // The host reaches the pod's address through the bridge.
    let addr = serve_once_in(&sb, 0, b"hello from pod");
    assert_eq!(fetch(addr).expect("host -> pod"), "hello from pod");
    t.finish().await;
}

#[tokio::test]
async fn two_pods_get_distinct_ips_and_reach_each_other() {
    let t = TestNet::new();
    let a = t.net.setup(&pod("a"), &[]).await.expect("setup a");
    let b = t.net.setup(&pod("b"), &[]).await.expect("setup b");
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.netns_path, b.netns_path);
    assert!(t.cfg.pod_cidr.contains(&b.ip));

    let addr = serve_once_in(&a, 8080, b"from a");
    let got = b.enter(|| fetch(addr)).expect("enter b").expect("b -> a");
    assert_eq!(got, "from a");

    // And the other way round, via the pod IP of b.
    let addr = serve_once_in(&b, 9090, b"from b");
    let got = a.enter(|| fetch(addr)).expect("enter a").expect("a -> b");
    assert_eq!(got, "from b");
    assert_eq!(t.net.list().await, vec!["a".to_string(), "b".to_string()]);
    t.finish().await;
}

#[tokio::test]
async fn a_pod_runtime_opens_its_sockets_in_the_pod() {
    let t = TestNet::new();
    let a = t.net.setup(&pod("a"), &[]).await.expect("setup a");
    let rt = a.runtime("a", 2, None).expect("pod runtime");
    // Sockets made by tasks on the pod runtime, on worker and blocking
    // threads alike, are in the pod: reachable on the pod IP from the host.
    let worker = rt
        .handle()
        .spawn(async { tokio::net::TcpListener::bind("0.0.0.0:0").await })
        .await
        .expect("task")
        .expect("bind on a worker thread");
    let port = worker.local_addr().expect("addr").port();
    let serve = rt.handle().spawn(async move {
        if let Ok((mut conn, _)) = worker.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = conn.write_all(b"from the pod runtime").await;
        }
    });
    let addr = SocketAddr::new(IpAddr::V4(a.ip), port);
    let got = tokio::task::spawn_blocking(move || fetch(addr))
        .await
        .expect("fetch task")
        .expect("host -> pod runtime listener");
    assert_eq!(got, "from the pod runtime");
    serve.await.expect("serve task");
    let blocking = rt
        .handle()
        .spawn_blocking(|| TcpListener::bind("0.0.0.0:0"))
        .await
        .expect("task")
        .expect("bind on a blocking thread");
    let port = blocking.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = blocking.accept() {
            let _ = conn.write_all(b"blocking");
        }
    });
    let addr = SocketAddr::new(IpAddr::V4(a.ip), port);
    let got = tokio::task::spawn_blocking(move || fetch(addr))
        .await
        .expect("fetch task")
        .expect("host -> blocking listener");
    assert_eq!(got, "blocking");
    drop(rt);
    t.finish().await;
}

#[tokio::test]
async fn a_pod_runtime_reads_the_pods_resolv_conf() {
    let t = TestNet::new();
    let a = t.net.setup(&pod("a"), &[]).await.expect("setup a");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("resolv.conf");
    std::fs::write(
        &file,
        "nameserver 10.43.0.10\nsearch default.svc.cluster.local\n",
    )
    .expect("write");
    let host_before = std::fs::read_to_string("/etc/resolv.conf").expect("host resolv.conf");
    let rt = a.runtime("a", 2, Some(&file)).expect("pod runtime");
    let read = || std::fs::read_to_string("/etc/resolv.conf").expect("read");
    let on_worker = rt
        .handle()
        .spawn(async move { read() })
        .await
        .expect("task");
    let on_blocking = rt.handle().spawn_blocking(read).await.expect("task");
    assert!(on_worker.contains("nameserver 10.43.0.10"), "{on_worker}");
    assert_eq!(on_worker, on_blocking);
    // The host's file is untouched, for the host's threads.
    assert_eq!(read(), host_before);
    drop(rt);
    t.finish().await;
}

#[tokio::test]
async fn setup_is_idempotent_for_the_same_uid_also_after_a_restart() {
    let t = TestNet::new();
    let first = t.net.setup(&pod("a"), &[]).await.expect("setup");
    let again = t.net.setup(&pod("a"), &[]).await.expect("setup again");
    assert_eq!(first, again);

    // Concurrent setups of one pod serialise and agree.
    let pa = pod("a");
    let (x, y) = tokio::join!(t.net.setup(&pa, &[]), t.net.setup(&pa, &[]));
    assert_eq!(x.expect("concurrent setup"), first);
    assert_eq!(y.expect("concurrent setup"), first);

    // A new Network over the same state dir is an agent restart: it finds
    // the recorded sandbox, CNI CHECK passes, nothing is reallocated.
    let restarted = Network::new(t.cfg.clone()).expect("restart");
    let after = restarted
        .setup(&pod("a"), &[])
        .await
        .expect("setup after restart");
    assert_eq!(after, first);
    assert_eq!(restarted.list().await, vec!["a".to_string()]);
    let reserved = reserved_ips(&t.net);
    assert_eq!(reserved, vec![first.ip], "exactly one IP reserved");
    t.finish().await;
}

/// IPs host-local holds reservations for.
fn reserved_ips(net: &Network) -> Vec<Ipv4Addr> {
    let Ok(dir) = std::fs::read_dir(net.ipam_dir()) else {
        return Vec::new();
    };
    let mut ips: Vec<Ipv4Addr> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    ips.sort();
    ips
}

#[tokio::test]
async fn teardown_removes_the_netns_and_releases_the_ip() {
    let t = TestNet::new();
    let sb = t.net.setup(&pod("a"), &[]).await.expect("setup");
    let lease = t.net.ipam_dir().join(sb.ip.to_string());
    let holder = std::fs::read_to_string(&lease).expect("host-local reservation file");
    assert!(
        holder.starts_with("a"),
        "reservation holds the pod uid: {holder:?}"
    );

    t.net.teardown("a").await.expect("teardown");
    assert!(!sb.netns_path.exists(), "netns still mounted");
    assert!(!lease.exists(), "IP not released");
    assert!(t.net.list().await.is_empty());
    assert!(matches!(sb.enter(|| ()), Err(NetError::Netns { .. })));
    // Idempotent, and fine for pods that never had a sandbox.
    t.net.teardown("a").await.expect("second teardown");
    t.net
        .teardown("never-set-up")
        .await
        .expect("teardown of unknown pod");

    // The netns vanished behind our back (someone ran `ip netns del`, or the
    // host rebooted): DEL still releases the IP.
    let b = t.net.setup(&pod("b"), &[]).await.expect("setup b");
    cmd_output("ip", &["netns", "del", &t.netns_name("b")]);
    t.net.teardown("b").await.expect("teardown without netns");
    assert!(!t.net.ipam_dir().join(b.ip.to_string()).exists());
    assert!(t.net.list().await.is_empty());

    // Same situation at setup: the stale sandbox is replaced by a working one.
    let c = t.net.setup(&pod("c"), &[]).await.expect("setup c");
    cmd_output("ip", &["netns", "del", &t.netns_name("c")]);
    let c2 = t.net.setup(&pod("c"), &[]).await.expect("setup c again");
    assert_pod_netns(&c2);
    assert_eq!(
        reserved_ips(&t.net),
        vec![c2.ip],
        "the old IP of c was released"
    );
    assert_eq!(c2.netns_path, c.netns_path, "the same name, recreated");
    t.finish().await;
}

#[tokio::test]
async fn teardown_all_removes_every_sandbox() {
    let t = TestNet::new();
    let (pa, pb, pc) = (pod("a"), pod("b"), pod("c"));
    let (a, b, c) = tokio::join!(
        t.net.setup(&pa, &[]),
        t.net.setup(&pb, &[]),
        t.net.setup(&pc, &[])
    );
    let all = [a.expect("a"), b.expect("b"), c.expect("c")];
    let ips: HashSet<Ipv4Addr> = all.iter().map(|s| s.ip).collect();
    assert_eq!(ips.len(), 3, "parallel setups got distinct IPs: {all:?}");
    assert_eq!(t.net.list().await.len(), 3);

    t.net.teardown_all().await.expect("teardown_all");
    assert!(t.net.list().await.is_empty());
    assert!(all.iter().all(|s| !s.netns_path.exists()));
    assert!(reserved_ips(&t.net).is_empty());
    t.finish().await;
}

/// The host's own addresses to try a hostPort on: loopback (needs portmap's
/// route_localnet + SNAT), the bridge gateway, and the primary address.
fn host_addrs(sb: &Sandbox) -> Vec<Ipv4Addr> {
    let mut addrs = vec![Ipv4Addr::LOCALHOST, sb.gateway];
    let route = Command::new("ip")
        .args(["-4", "-o", "route", "get", "192.0.2.200"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut words = route.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src" {
            if let Some(ip) = words.next().and_then(|s| s.parse().ok()) {
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
    }
    addrs
}

#[tokio::test]
async fn host_port_is_reachable_from_the_host() {
    let t = TestNet::new();
    // portmap DNATs the host port before any local socket would see the traffic, so the
    // test keeps a socket bound on it to the end: no other process (another test's
    // hostPort or server) can take the port meanwhile.
    let reserved = TcpListener::bind("0.0.0.0:0").expect("free port");
    let host_port = reserved.local_addr().expect("port").port();
    let mapping = PortMapping {
        host_port,
        container_port: 8080,
        protocol: "TCP".into(),
        host_ip: None,
    };
    let sb = t.net.setup(&pod("web"), &[mapping]).await.expect("setup");

    let hosts = host_addrs(&sb);
    serve_in(&sb, 8080, b"via hostPort", hosts.len());
    for host in hosts {
        let addr = SocketAddr::new(IpAddr::V4(host), host_port);
        let got = fetch(addr).unwrap_or_else(|e| panic!("hostPort {addr} -> pod: {e}"));
        assert_eq!(got, "via hostPort", "through {addr}");
    }

    // DEL removes the DNAT rules. A fetch would fail anyway once the pod is gone, so
    // read the rules themselves.
    assert!(
        !dnat_rules(host_port, &sb).is_empty(),
        "no DNAT rule for hostPort {host_port} while it forwards"
    );
    t.net.teardown("web").await.expect("teardown");
    let left = dnat_rules(host_port, &sb);
    assert!(left.is_empty(), "DNAT rules left after teardown: {left:#?}");
    drop(reserved);
    t.finish().await;
}

#[tokio::test]
async fn bad_input_is_rejected() {
    let t = TestNet::new();
    for uid in ["", "../escape", "a/b", "-x"] {
        let err = t
            .net
            .setup(&pod(uid), &[])
            .await
            .expect_err("invalid uid accepted");
        assert!(matches!(err, NetError::InvalidUid(_)), "{err}");
    }
    let bad = PortMapping {
        host_port: 1,
        container_port: 1,
        protocol: "icmp".into(),
        host_ip: None,
    };
    let err = t
        .net
        .setup(&pod("a"), &[bad])
        .await
        .expect_err("bad protocol accepted");
    assert!(matches!(err, NetError::InvalidPortMapping { .. }), "{err}");
    assert!(t.net.list().await.is_empty());
    t.finish().await;
}

#[tokio::test]
async fn plugin_errors_carry_the_plugins_message_and_are_rolled_back() {
    // A /30 holds one pod next to the gateway: the second ADD fails in
    // host-local (called by bridge), with host-local's message.
    let t = TestNet::with_prefix_len(30);
    let a = t.net.setup(&pod("a"), &[]).await.expect("setup a");
    let err = t
        .net
        .setup(&pod("b"), &[])
        .await
        .expect_err("range exhausted, yet setup b succeeded");
    match &err {
        NetError::Plugin {
            plugin,
            command,
            uid,
            msg,
            ..
        } => {
            assert_eq!(
                (plugin.as_str(), *command, uid.as_str()),
                ("bridge", "ADD", "b")
            );
            assert!(msg.contains("no IP addresses available"), "{err}");
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
    // Nothing of b's failed setup remains, and a is untouched.
    assert_eq!(t.net.list().await, vec!["a".to_string()]);
    assert!(!t.net.netns_path("b").exists());
    assert_eq!(reserved_ips(&t.net), vec![a.ip]);

    // Once a is gone, its address serves b.
    t.net.teardown("a").await.expect("teardown a");
    let b = t.net.setup(&pod("b"), &[]).await.expect("setup b");
    assert_eq!(b.ip, a.ip);
    t.finish().await;
}

#[test]
fn missing_plugins_name_the_package() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = NetConfig {
        cni_bin_dir: dir.path().join("no-plugins-here"),
        ..NetConfig::new(dir.path(), "10.244.0.0/24".parse().expect("cidr"))
    };
    let err = Network::new(cfg).expect_err("no plugins, yet new succeeded");
    assert!(matches!(err, NetError::PluginMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("containernetworking-plugins"),
        "{err}"
    );
}
