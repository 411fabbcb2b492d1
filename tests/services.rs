//! Services in the control plane: ClusterIPs and NodePorts allocated by the API server,
//! pod CIDRs per node, and Endpoints/EndpointSlices kept in step with the selected pods
//! (on hollow nodes, which report pod IPs and readiness).

mod common;

use std::time::Duration;

use common::{Cluster, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(60);

fn get(c: &Cluster, args: &[&str]) -> String {
    c.ok(KUBECTL_DEFAULT, args).trim().to_string()
}

fn in_service_cidr(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.octets()[0] == 10 && ip.octets()[1] == 43)
}

#[test]
fn services_get_addresses_and_endpoints_follow_pods() {
    let c = Cluster::start();
    let _nodes = c.hollow_nodes(2, "svc", &[]);
    c.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example/web:v1
        ports:
        - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Service
metadata:
  name: web-np
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web-headless
spec:
  clusterIP: None
  selector: {app: web}
  ports:
  - {port: 80}
"#,
    );
    c.ok(
        KUBECTL_DEFAULT,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    let ip = get(
        &c,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    );
    let np_ip = get(
        &c,
        &["get", "svc", "web-np", "-o", "jsonpath={.spec.clusterIP}"],
    );
    assert!(in_service_cidr(&ip), "{ip}");
    assert!(in_service_cidr(&np_ip), "{np_ip}");
    assert_ne!(ip, np_ip);
    assert_eq!(
        get(
            &c,
            &[
                "get",
                "svc",
                "web-headless",
                "-o",
                "jsonpath={.spec.clusterIP}"
            ]
        ),
        "None"
    );
    let node_port: u16 = get(
        &c,
        &[
            "get",
            "svc",
            "web-np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
    )
    .parse()
    .expect("a nodePort");
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    let table = get(&c, &["get", "svc", "web"]);
    assert!(table.contains(&ip), "{table}");

    // Endpoints: the three pod IPs, with the named targetPort resolved.
    let pod_ips = get(
        &c,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ],
    );
    let mut want: Vec<&str> = pod_ips.split_whitespace().collect();
    want.sort();
    assert_eq!(want.len(), 3, "{pod_ips}");
    let mut ok = false;
    for _ in 0..300 {
        let got = get(
            &c,
            &[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ],
        );
        let mut got: Vec<&str> = got.split_whitespace().collect();
        got.sort();
        if got == want {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ok, "endpoints never listed {want:?}");
    assert_eq!(
        get(
            &c,
            &[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[0].ports[0].port}"
            ]
        ),
        "8080"
    );
    let slice = get(
        &c,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={range .items[*].endpoints[*]}{.conditions.ready} {end}",
        ],
    );
    assert_eq!(slice, "true true true");

    // Scaling down shrinks the endpoints.
    c.ok(
        KUBECTL_DEFAULT,
        &["scale", "deployment/web", "--replicas=1"],
    );
    // The survivor is the one pod not being deleted: a pod being deleted is still
    // listed, phase Running, until its node has stopped it.
    let deadline = std::time::Instant::now() + WAIT;
    let survivor_node = loop {
        let pods = get(
            &c,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                r#"jsonpath={range .items[*]}{.spec.nodeName}={.metadata.deletionTimestamp}{"\n"}{end}"#,
            ],
        );
        let staying: Vec<&str> = pods
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(_, deleting)| deleting.is_empty())
            .map(|(node, _)| node)
            .collect();
        if let [node] = staying[..] {
            break node.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never down to one pod: {pods}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    c.wait_for_output(
        &[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].nodeName}",
        ],
        &survivor_node,
        WAIT,
    );

    // A taken ClusterIP or NodePort is refused with the field path.
    let dup = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: dup}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n"
    );
    let out = c.apply_stdin(KUBECTL_DEFAULT, &["create", "-f", "-"], &dup);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.clusterIPs") && err.contains("already allocated"),
        "{err}"
    );
    let dup_port = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: dup-port}}\nspec:\n  type: NodePort\n  ports: [{{port: 80, nodePort: {node_port}}}]\n"
    );
    let out = c.apply_stdin(KUBECTL_DEFAULT, &["create", "-f", "-"], &dup_port);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.ports[0].nodePort") && err.contains("already allocated"),
        "{err}"
    );

    // Deleting a Service frees its address and removes its endpoints.
    c.ok(KUBECTL_DEFAULT, &["delete", "svc", "web"]);
    c.wait_for_output(
        &[
            "get",
            "endpoints",
            "--ignore-not-found",
            "-o",
            "name",
            "--field-selector=metadata.name=web",
        ],
        "",
        WAIT,
    );
    c.apply(&dup);
    assert_eq!(
        get(
            &c,
            &["get", "svc", "dup", "-o", "jsonpath={.spec.clusterIP}"]
        ),
        ip
    );

    // A node registered without a pod CIDR gets one from the cluster CIDR.
    c.apply("apiVersion: v1\nkind: Node\nmetadata: {name: bare}\n");
    let cidr = get(
        &c,
        &["get", "node", "bare", "-o", "jsonpath={.spec.podCIDR}"],
    );
    assert!(
        cidr.starts_with("10.42.") && cidr.ends_with("/24"),
        "{cidr}"
    );
}
