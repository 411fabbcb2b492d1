//! Pod networking end to end: a wasi:http component (the `http-hello` test guest) as a
//! Deployment behind a Service, on `spindle server` with its embedded agent, real CNI
//! plugins and a real registry, driven by kubectl and plain HTTP from the host.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(120);

fn http_hello() -> std::path::PathBuf {
    common::build_guest(
        "runtime/spindle-wasm/tests/guests/http-hello/Cargo.toml",
        "http-hello",
        "wasm32-wasip2",
    )
}

/// GET `path` from `addr` with curl; the body of a 2xx answer.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10"])
        .arg(format!("http://{addr}{path}"))
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Retries `get` until it answers (a listener may take a moment after Running).
fn get_eventually(addr: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get(addr, path) {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!("GET http://{addr}{path}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn web(image: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
        ports:
        - containerPort: 8080
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        - name: POD_IP
          valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
"#
    )
}

/// name → podIP of the pods labelled app=web, once `n` of them run with an IP.
fn running_pods(c: &Cluster, n: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                r#"jsonpath={range .items[?(@.status.phase=="Running")]}{.metadata.name} {.status.podIP}{"\n"}{end}"#,
            ],
        );
        let pods: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, ip)| !ip.is_empty())
            .map(|(n, ip)| (n.to_string(), ip.to_string()))
            .collect();
        if pods.len() == n {
            return pods;
        }
        assert!(
            Instant::now() < deadline,
            "{n} web pods never ran with IPs: {out}\n{}",
            c.ok(KUBECTL_DEFAULT, &["describe", "pods"])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').expect("cidr");
    let ip: std::net::Ipv4Addr = ip.parse().expect("pod IP is IPv4");
    let net: std::net::Ipv4Addr = net.parse().expect("cidr net");
    let len: u32 = len.parse().expect("cidr len");
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

#[test]
fn deployment_pods_get_their_own_ips_and_serve_http_on_them() {
    let reg = Registry::start();
    let image = reg.push(&http_hello(), "tests/http-hello:v1");
    let mut c = Cluster::with_agent("net-node", &[]);
    c.apply(&web(&image, 3));
    let pods = running_pods(&c, 3);
    let mut ips: Vec<&str> = pods.iter().map(|(_, ip)| ip.as_str()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "pod IPs are not distinct: {pods:?}");
    for (name, ip) in &pods {
        assert!(
            in_cidr(ip, &c.net.cluster_cidr),
            "{name}: {ip} not in {}",
            c.net.cluster_cidr
        );
        let addr: SocketAddr = format!("{ip}:8080").parse().expect("addr");
        // Each pod answers on its own IP, as itself, and knows its IP (fieldRef).
        assert_eq!(get_eventually(addr, "/env/POD_NAME"), *name);
        assert_eq!(get_eventually(addr, "/env/POD_IP"), *ip);
        let podips = c.ok(
            KUBECTL_DEFAULT,
            &["get", "pod", name, "-o", "jsonpath={.status.podIPs[0].ip}"],
        );
        assert_eq!(podips, *ip);
    }
    // Each pod has its own network namespace on the host.
    assert_eq!(c.net.live_netns().len(), 3, "{:?}", c.net.live_netns());

    // A Service in front: its ClusterIP spreads over the pods, from the host.
    c.apply(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#,
    );
    let cluster_ip = c.ok(
        KUBECTL_DEFAULT,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    );
    let vip: SocketAddr = format!("{cluster_ip}:80").parse().expect("vip");
    let names: std::collections::HashSet<String> = pods.iter().map(|(n, _)| n.clone()).collect();
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen != names {
        assert!(
            Instant::now() < deadline,
            "ClusterIP {vip} reached only {seen:?} of {names:?}"
        );
        seen.insert(get_eventually(vip, "/env/POD_NAME"));
    }
    // The NodePort on the node's address.
    let node_ip = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "node",
            "net-node",
            "-o",
            r#"jsonpath={.status.addresses[?(@.type=="InternalIP")].address}"#,
        ],
    );
    let node_port = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
    );
    let np: SocketAddr = format!("{node_ip}:{node_port}").parse().expect("nodeport");
    assert!(names.contains(&get_eventually(np, "/env/POD_NAME")));
    // A pod reaches the Service by its full name and by its short name (outgoing
    // wasi:http from the pod's namespace, names from the cluster DNS).
    let first: SocketAddr = format!("{}:8080", pods[0].1).parse().expect("addr");
    for name in ["web.default.svc.cluster.local", "web"] {
        let got = get_eventually(first, &format!("/fetch/{name}/env/POD_NAME"));
        let (status, who) = got.split_once(' ').unwrap_or_default();
        assert_eq!(status, "200", "{name}: {got}");
        assert!(names.contains(who), "{name}: {got}");
    }
    // The cluster DNS answers at the kube-dns address, from inside a pod's namespace,
    // for a resolver set up the way the kubelet writes resolv.conf.
    let dns_ip = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "svc",
            "-n",
            "kube-system",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let netns = c.net.live_netns().into_iter().next().expect("a pod netns");
    let etc = std::path::PathBuf::from("/etc/netns").join(&netns);
    std::fs::create_dir_all(&etc).expect("/etc/netns dir");
    // Removed however the checks below end: a failed assertion must not leave it on the host.
    let etc_guard = RemoveOnDrop(etc.clone());
    std::fs::write(
        etc.join("resolv.conf"),
        format!(
            "nameserver {dns_ip}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        ),
    )
    .expect("resolv.conf");
    let lookup = |name: &str| {
        let out = common::output_within(
            std::process::Command::new("ip")
                .args(["netns", "exec", &netns, "getent", "hosts", name]),
            None,
            Duration::from_secs(60),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let full = lookup("web.default.svc.cluster.local");
    let short = lookup("web");
    drop(etc_guard);
    assert!(full.starts_with(&format!("{cluster_ip} ")), "{full:?}");
    assert!(short.starts_with(&format!("{cluster_ip} ")), "{short:?}");

    // wasi:sockets from inside a pod (an exec instance): the name resolves through the
    // pod's resolv.conf and the cluster DNS, the connection goes through the ClusterIP.
    for name in ["web:80", "web.default.svc.cluster.local:80"] {
        let out = c.ok(
            KUBECTL_DEFAULT,
            &["exec", &pods[1].0, "--", "http-hello", "connect", name],
        );
        assert_eq!(out, "connected\n", "{name}");
    }
    let err = c.fails(
        KUBECTL_DEFAULT,
        &[
            "exec",
            &pods[1].0,
            "--",
            "http-hello",
            "connect",
            "nothing-here:80",
        ],
    );
    assert!(err.contains("exit code 1"), "{err}");

    // Deleting the Service removes its rules: the ClusterIP no longer answers.
    c.ok(KUBECTL_DEFAULT, &["delete", "svc", "web"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(vip, "/").is_ok() {
        assert!(
            Instant::now() < deadline,
            "{vip} still answers after delete"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rules = std::process::Command::new("nft")
        .args(["list", "table", "ip", &c.net.bridge])
        .output()
        .expect("nft");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains(&cluster_ip),
        "rules of a deleted Service:\n{rules}"
    );

    // Scaling down removes the pods' namespaces; their IPs stop answering.
    c.ok(
        KUBECTL_DEFAULT,
        &["scale", "deployment", "web", "--replicas=1"],
    );
    let left = running_pods(&c, 1);
    let deadline = Instant::now() + WAIT;
    while c.net.live_netns().len() != 1 {
        assert!(
            Instant::now() < deadline,
            "namespaces of deleted pods remain: {:?}",
            c.net.live_netns()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (name, ip) in &pods {
        if left.iter().any(|(n, _)| n == name) {
            continue;
        }
        let addr: SocketAddr = format!("{ip}:8080").parse().expect("addr");
        assert!(get(addr, "/").is_err(), "{name} at {ip} still answers");
    }

    // Stopping the server (and its agent) removes every pod namespace and the bridge.
    c.stop();
    assert!(
        c.net.live_netns().is_empty(),
        "left behind: {:?}",
        c.net.live_netns()
    );
    let table = std::process::Command::new("nft")
        .args(["list", "table", "ip", &c.net.bridge])
        .output()
        .expect("nft");
    assert!(
        !table.status.success(),
        "the Service table outlived the agent"
    );
}

/// A pod of the http-hello component with extra container fields (probes).
fn probed(name: &str, image: &str, app: &str, probes: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  containers:
  - name: web
    image: {image}
    ports:
    - containerPort: 8080
      name: http
{probes}
"#
    )
}

#[test]
fn probes_drive_readiness_endpoints_and_restarts() {
    let reg = Registry::start();
    let image = reg.push(&http_hello(), "tests/http-hello:v1");
    let c = Cluster::with_agent("probe-node", &[]);
    c.apply(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: probed
spec:
  selector: {app: probed}
  ports:
  - port: 80
    targetPort: 8080
"#,
    );
    // Ready: its readiness probe (named port) answers.
    c.apply(&probed(
        "good",
        &image,
        "probed",
        "    readinessProbe:\n      httpGet: {path: /ready, port: http}\n      periodSeconds: 1",
    ));
    // Never ready: nothing listens on 9999.
    c.apply(&probed(
        "unready",
        &image,
        "probed",
        "    readinessProbe:\n      tcpSocket: {port: 9999}\n      periodSeconds: 1",
    ));
    // Restarted: its liveness probe fails.
    c.apply(&probed(
        "dying",
        &image,
        "other",
        "    livenessProbe:\n      httpGet: {path: /, port: 9999}\n      periodSeconds: 1\n      failureThreshold: 2",
    ));
    let ready = |pod: &str| {
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "pod",
                pod,
                "-o",
                r#"jsonpath={.status.phase} {.status.containerStatuses[0].ready} {.status.conditions[?(@.type=="Ready")].status}"#,
            ],
        )
    };
    c.wait_for_output(
        &[
            "get",
            "pod",
            "good",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ],
        "True",
        WAIT,
    );
    assert_eq!(ready("good"), "Running true True");
    // The unready pod runs but stays 0/1, and the endpoints hold only the ready pod.
    // "Stays" is judged over three failed readiness probes, counted from its Unhealthy
    // events: never ready at any sample on the way.
    let failed_probes = || -> u32 {
        c.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "events",
                "--field-selector=involvedObject.name=unready,reason=Unhealthy",
                "-o",
                r#"jsonpath={range .items[*]}{.count} {.message}{"\n"}{end}"#,
            ],
        )
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, message)| message.starts_with("Readiness probe failed"))
        .filter_map(|(count, _)| count.parse::<u32>().ok())
        .sum()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let now = ready("unready");
        assert!(!now.contains("true") && !now.contains("True"), "{now}");
        if now == "Running false False" && failed_probes() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unready pod never ran through three failed probes: {now}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let good_ip = c.ok(
        KUBECTL_DEFAULT,
        &["get", "pod", "good", "-o", "jsonpath={.status.podIP}"],
    );
    let unready_ip = c.ok(
        KUBECTL_DEFAULT,
        &["get", "pod", "unready", "-o", "jsonpath={.status.podIP}"],
    );
    c.wait_for_output(
        &[
            "get",
            "endpoints",
            "probed",
            "-o",
            "jsonpath={.subsets[0].addresses[*].ip}",
        ],
        &good_ip,
        WAIT,
    );
    c.wait_for_output(
        &[
            "get",
            "endpoints",
            "probed",
            "-o",
            "jsonpath={.subsets[0].notReadyAddresses[*].ip}",
        ],
        &unready_ip,
        WAIT,
    );
    let events = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=unready",
        ],
    );
    assert!(events.contains("Readiness probe failed"), "{events}");

    // The liveness failure restarts the container (first restart is immediate).
    c.wait_for_output(
        &[
            "get",
            "pod",
            "dying",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        "1",
        WAIT,
    );
    let events = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=dying",
        ],
    );
    assert!(events.contains("Liveness probe failed"), "{events}");
    assert!(
        events.contains("failed liveness probe, will be restarted"),
        "{events}"
    );
}

/// A directory on the host removed when dropped, also when the test fails.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
