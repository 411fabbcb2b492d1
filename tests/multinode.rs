//! Several nodes on one machine: each "host" is a network namespace wired to a shared
//! bridge with a veth pair and an address the test picks, running its own `spindle
//! agent` (entered with nsenter). The agents route each other's pod CIDRs (host-gw), so
//! pods on different nodes talk directly.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(120);

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The hosts' shared L2 segment: a bridge on the machine and one netns per host.
struct Lab {
    bridge: String,
    subnet: u8,
    hosts: Vec<String>,
}

impl Lab {
    fn new(hosts: usize) -> Lab {
        let tag = std::process::id() & 0xffff;
        // A /24 no route on this machine uses yet.
        let routes = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-4", "route"])
                .output()
                .expect("ip route")
                .stdout,
        )
        .to_string();
        let subnet = (70..250u8)
            .find(|n| !routes.contains(&format!("10.{n}.77.")))
            .expect("a free 10.x.77.0/24");
        let lab = Lab {
            bridge: format!("spl{tag:x}"),
            subnet,
            hosts: (0..hosts).map(|i| format!("spl{tag:x}h{i}")).collect(),
        };
        run("ip", &["link", "add", &lab.bridge, "type", "bridge"]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", lab.gateway()),
                "dev",
                &lab.bridge,
            ],
        );
        run("ip", &["link", "set", &lab.bridge, "up"]);
        for (i, ns) in lab.hosts.iter().enumerate() {
            let outside = format!("{ns}o");
            run("ip", &["netns", "add", ns]);
            run(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            );
            run(
                "ip",
                &["link", "set", &outside, "master", &lab.bridge, "up"],
            );
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{}/24", lab.host_ip(i)),
                    "dev",
                    "eth0",
                ],
            );
            run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &lab.gateway().to_string(),
                ],
            );
        }
        lab
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 77, 1)
    }

    fn host_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 77, 2 + i as u8)
    }

    fn netns_path(&self, i: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.hosts[i])
    }

    /// Makes `127.0.0.1:port` inside host `i` lead to `127.0.0.1:port` of the machine
    /// (the API server and the registry listen on the machine's loopback only).
    fn forward_loopback(&self, i: usize, port: u16) {
        let sandbox = spindle_net::Sandbox {
            uid: self.hosts[i].clone(),
            netns_path: self.netns_path(i),
            ip: self.host_ip(i),
            gateway: self.gateway(),
        };
        let listener = sandbox
            .enter(|| TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
            .expect("enter host netns")
            .expect("bind the forwarder in the host netns");
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let Ok(up) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
                        return;
                    };
                    let (mut a, mut b) = (conn, up);
                    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
                        return;
                    };
                    let t = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a2, &mut b2);
                        let _ = b2.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut b, &mut a);
                    let _ = a.shutdown(std::net::Shutdown::Write);
                    let _ = t.join();
                });
            }
        });
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// `spindle agent` inside a lab host.
struct Agent {
    child: Option<Child>,
    prefix: String,
}

impl Agent {
    fn start(c: &Cluster, lab: &Lab, i: usize) -> Agent {
        let token =
            std::fs::read_to_string(c.data_dir().join("server").join("token")).expect("token");
        let log = std::fs::File::create(c.dir.path().join(format!("agent-{i}.log"))).expect("log");
        let prefix = format!("{}p", lab.hosts[i]);
        let ns = format!("--net={}", lab.netns_path(i).display());
        let child = Command::new("nsenter")
            .arg(ns)
            .arg("--")
            .arg(common::spindle_bin())
            .args(["agent", "--server", &c.server_url()])
            .args(["--node-name", &format!("node-{i}")])
            .args(["--node-ip", &lab.host_ip(i).to_string()])
            .args(["--agent-port", "0", "--netns-prefix", &prefix, "--data-dir"])
            .arg(c.dir.path().join(format!("agent-{i}")))
            .env("SPINDLE_TOKEN", token.trim())
            .env("SPINDLE_LOG", "info,spindle_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nsenter (util-linux) and spindle agent");
        Agent {
            child: Some(child),
            prefix,
        }
    }

    /// SIGTERM: the agent removes its pods' namespaces and its routes.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .output();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&format!("{}-", self.prefix)) {
                    let _ = Command::new("ip").args(["netns", "del", &name]).output();
                }
            }
        }
    }
}

fn http_hello() -> PathBuf {
    common::build_guest(
        "runtime/spindle-wasm/tests/guests/http-hello/Cargo.toml",
        "http-hello",
        "wasm32-wasip2",
    )
}

fn pod(name: &str, image: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  nodeName: {node}
  containers:
  - name: web
    image: {image}
    ports: [{{containerPort: 8080}}]
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
"#
    )
}

fn pod_ip(c: &Cluster, name: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
            ],
        );
        if let Some(ip) = out.strip_prefix("Running ").filter(|ip| !ip.is_empty()) {
            return ip.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never ran with an IP: {out}\n{}",
            c.ok(KUBECTL_DEFAULT, &["describe", "pod", name])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn pods_on_different_nodes_reach_each_other() {
    let reg = Registry::start();
    let image = reg.push(&http_hello(), "tests/http-hello:v1");
    let c = Cluster::start_with(&[
        "--cluster-cidr",
        "10.160.0.0/16",
        "--service-cidr",
        "10.161.0.0/16",
    ]);
    let lab = Lab::new(2);
    let server_port: u16 = c
        .server_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("server port");
    let registry_port: u16 = image
        .split('/')
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("registry port");
    let mut agents = Vec::new();
    for i in 0..2 {
        lab.forward_loopback(i, server_port);
        lab.forward_loopback(i, registry_port);
        agents.push(Agent::start(&c, &lab, i));
    }
    for i in 0..2 {
        c.wait_for_output(
            &[
                "get",
                "node",
                &format!("node-{i}"),
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            "True",
            WAIT,
        );
    }
    c.apply(&pod("a", &image, "node-0"));
    c.apply(&pod("b", &image, "node-1"));
    let (ip_a, ip_b) = (pod_ip(&c, "a"), pod_ip(&c, "b"));
    let cidr = |i: usize| {
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "node",
                &format!("node-{i}"),
                "-o",
                "jsonpath={.spec.podCIDR}",
            ],
        )
    };
    assert_ne!(cidr(0), cidr(1));
    // Each pod fetches from the other, across the nodes.
    let a: SocketAddr = format!("{ip_a}:8080").parse().expect("addr");
    // From host 1 to the pod on host 0 (a route of host 1's agent).
    assert_eq!(curl_via(&lab, 1, &format!("http://{a}/env/POD_NAME")), "a");
    // Pod a fetches from pod b (outgoing wasi:http from a's namespace on node 0).
    let got = curl_via(
        &lab,
        0,
        &format!("http://{a}/fetch/{ip_b}:8080/env/POD_NAME"),
    );
    assert_eq!(got, "200 b");

    // Pods see each other's own addresses across nodes (no NAT between pods), while
    // traffic leaving the pod network is masqueraded to the node's address.
    let uid_b = c.ok(
        KUBECTL_DEFAULT,
        &["get", "pod", "b", "-o", "jsonpath={.metadata.uid}"],
    );
    let in_b = spindle_net::Sandbox {
        uid: uid_b.clone(),
        netns_path: PathBuf::from("/run/netns").join(format!("{}-{uid_b}", agents[1].prefix)),
        ip: ip_b.parse().expect("pod b ip"),
        gateway: lab.gateway(),
    };
    let (peer_in_b, port_b) = record_peer(&in_b);
    let outside = TcpListener::bind((lab.gateway(), 0)).expect("listener on the lab bridge");
    let port_out = outside.local_addr().expect("addr").port();
    let (tx, peer_outside) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((_, peer)) = outside.accept() {
            let _ = tx.send(peer.ip().to_string());
        }
    });
    for (target, peer, want) in [
        (format!("{ip_b}:{port_b}"), &peer_in_b, ip_a.clone()),
        (
            format!("{}:{port_out}", lab.gateway()),
            &peer_outside,
            lab.host_ip(0).to_string(),
        ),
    ] {
        let out = c.ok(
            KUBECTL_DEFAULT,
            &["exec", "a", "--", "http-hello", "connect", &target],
        );
        assert_eq!(out, "connected\n");
        let seen = peer
            .recv_timeout(Duration::from_secs(10))
            .expect("the connection arrived");
        assert_eq!(seen, want, "source address seen at {target}");
    }

    // A Service over both pods: from either node its ClusterIP reaches both.
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    );
    let vip = c.ok(
        KUBECTL_DEFAULT,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    );
    for i in 0..2 {
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < 2 {
            assert!(
                Instant::now() < deadline,
                "from host {i}, {vip} reached only {seen:?}"
            );
            seen.insert(curl_via(&lab, i, &format!("http://{vip}/env/POD_NAME")));
        }
    }
    // Deleting it removes its rules on every node.
    c.ok(KUBECTL_DEFAULT, &["delete", "svc", "web"]);
    for i in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.hosts[i],
                    "nft",
                    "list",
                    "table",
                    "ip",
                    "spindle",
                ])
                .output()
                .expect("nft");
            let rules = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() && !rules.contains(&vip) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "host {i} keeps rules for {vip}:\n{rules}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Stopped agents take their routes and pod namespaces with them.
    for mut agent in agents {
        agent.stop();
    }
    for i in 0..2 {
        let routes = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-n", &lab.hosts[i], "route", "show", "proto", "152"])
                .output()
                .expect("ip route")
                .stdout,
        )
        .to_string();
        assert!(routes.trim().is_empty(), "host {i} kept routes: {routes}");
    }
}

/// A listener inside `sandbox` that reports the source address of its first
/// connection.
fn record_peer(sandbox: &spindle_net::Sandbox) -> (std::sync::mpsc::Receiver<String>, u16) {
    let listener = sandbox
        .enter(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("enter pod netns")
        .expect("bind in pod");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((_, peer)) = listener.accept() {
            let _ = tx.send(peer.ip().to_string());
        }
    });
    (rx, port)
}

/// GET `url` with curl from inside lab host `i`, retrying for a while.
fn curl_via(lab: &Lab, i: usize, url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.hosts[i],
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "10",
                url,
            ])
            .output()
            .expect("curl in host netns");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "GET {url} from host {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
