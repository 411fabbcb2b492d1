//! Prometheus metrics end to end: a real Prometheus server (Debian's `prometheus`), set up
//! as examples/prometheus says (its ServiceAccount, token and the cluster CA), scrapes
//! the API server's `/metrics` and the node agent's through the API server's
//! `nodes/proxy`, and its own query API then finds kube's series: requests, storage
//! latencies, work queues, scheduling attempts and pod starts. kubectl reads the same
//! text as an admin; a user without the right is refused in kube-apiserver's words.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const NODE: &str = "prom-node";
const WAIT: Duration = Duration::from_secs(90);

fn pod(image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  containers:\n  - name: main\n    image: {image}\n    args: [\"sleep\", \"600\"]\n"
    )
}

/// A kubeconfig for the same server that authenticates with `token` alone.
fn token_kubeconfig(c: &Cluster, name: &str, ca: &Path, token: &str) -> std::path::PathBuf {
    c.write_file(
        name,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
             users:\n- name: u\n  user:\n    token: {token}\ncurrent-context: c\n",
            c.server_url(),
            ca.display()
        ),
    )
}

fn kubectl_as(kubectl: &str, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    output_within(
        Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args),
        None,
        kubectl_limit(args),
    )
}

/// `GET` on Prometheus' HTTP API (`params` URL-encoded by curl), its JSON answer.
fn prom_api(port: u16, path: &str, params: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "-G"])
        .arg(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in params {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = output_within(&mut cmd, None, Duration::from_secs(15));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A running Prometheus: its port, and its log for failure messages.
struct Prom {
    port: u16,
    log: std::path::PathBuf,
}

impl Prom {
    /// Poll `check` on Prometheus' answer to `path` until it holds; panics with the last
    /// answer and Prometheus' log otherwise.
    fn wait(&self, path: &str, params: &[(&str, &str)], check: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = prom_api(self.port, path, params);
            if check(&v) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus {path} {params:?} never satisfied the check; last answer: {v}\n\
                 Prometheus log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The largest value of an instant query's series (none: no series).
fn max_value(v: &Value) -> Option<f64> {
    v["data"]["result"]
        .as_array()?
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .reduce(f64::max)
}

#[test]
fn prometheus_scrapes_the_api_server_and_the_agent() {
    let reg = Registry::start();
    let image = reg.push(&testbox("wasm32-wasip1"), "tests/testbox:prom");
    let c = Cluster::with_agent(NODE, &[]);
    c.create(&pod(&image));
    c.wait_pod_field("sleeper", "{.status.phase}", "Running", WAIT);

    // Set up as examples/prometheus/README.md says.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prometheus");
    let rbac = std::fs::read_to_string(examples.join("rbac.yaml")).expect("rbac.yaml");
    c.apply(&rbac);
    let token = c.ok(
        KUBECTL_DEFAULT,
        &[
            "create",
            "token",
            "prometheus",
            "-n",
            "monitoring",
            "--duration=1h",
        ],
    );
    let token_file = c.write_file("prom-token", token.trim());
    let ca = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
    );
    let ca_file = c.write_file("cluster-ca.crt", &ca);
    let nodes = c.ok(
        KUBECTL_DEFAULT,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}- targets: [\"{.metadata.name}\"]{\"\\n\"}{end}",
        ],
    );
    let nodes_file = c.write_file("nodes.yml", &nodes);
    let api = c.server_url();
    let api_address = api.trim_start_matches("https://");
    let config = std::fs::read_to_string(examples.join("prometheus.yml"))
        .expect("prometheus.yml")
        .replace("@API_ADDRESS@", api_address)
        .replace("@CA_FILE@", &ca_file.display().to_string())
        .replace("@TOKEN_FILE@", &token_file.display().to_string())
        .replace("@NODES_FILE@", &nodes_file.display().to_string())
        .replace("@SCRAPE_INTERVAL@", "1s");
    let config_file = c.write_file("prometheus.yml", &config);

    // Prometheus on a port of its own choosing (read back from its socket), with its
    // data in the test's directory.
    let log_path = c.dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let prom = Supervised::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                c.dir.path().join("prom-data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
        Duration::from_secs(600),
    );
    let listening = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        prom.with(|child| listen::wait_listening(child, "prometheus", Duration::from_secs(60)))
    }));
    let port = listening.unwrap_or_else(|e| {
        eprintln!(
            "Prometheus log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::panic::resume_unwind(e)
    });
    let p = Prom {
        port,
        log: log_path,
    };

    // Both targets found and up: the API server, and the node through nodes/proxy.
    p.wait("/api/v1/targets", &[], |v| {
        let targets = v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up = |job: &str, path: &str| {
            targets.iter().any(|t| {
                t["labels"]["job"] == job
                    && t["health"] == "up"
                    && t["scrapeUrl"].as_str().is_some_and(|u| u.ends_with(path))
            })
        };
        targets.len() == 2
            && up("kubernetes-apiservers", "/metrics")
            && up(
                "kubernetes-nodes",
                &format!("/api/v1/nodes/{NODE}/proxy/metrics"),
            )
    });
    let at_least = |query: &str, min: f64| {
        p.wait("/api/v1/query", &[("query", query)], |v| {
            max_value(v).is_some_and(|x| x >= min)
        });
    };
    // The pod's creation, as the API server and its storage counted it.
    at_least(
        r#"apiserver_request_total{verb="POST",resource="pods",code="201",component="apiserver"}"#,
        1.0,
    );
    at_least(
        r#"apiserver_request_duration_seconds_count{verb="LIST",resource="pods"}"#,
        1.0,
    );
    at_least(
        r#"etcd_request_duration_seconds_count{operation="create",type="pods"}"#,
        1.0,
    );
    // The controllers' queues and the scheduler, in the same process.
    at_least(r#"sum(workqueue_adds_total{name="serviceaccount"})"#, 1.0);
    at_least(
        r#"scheduler_schedule_attempts_total{result="scheduled",profile="default-scheduler"}"#,
        1.0,
    );
    at_least(
        r#"scheduler_scheduling_attempt_duration_seconds_count{result="scheduled"}"#,
        1.0,
    );
    // The agent: the pod started, and runs.
    at_least("kubelet_pod_start_duration_seconds_count", 1.0);
    at_least(r#"kubelet_running_pods{job="kubernetes-nodes"}"#, 1.0);
    at_least(
        r#"kubelet_running_containers{container_state="running"}"#,
        1.0,
    );
    // Each node's series carry its name.
    at_least(&format!(r#"kubelet_running_pods{{node="{NODE}"}}"#), 1.0);

    // kubectl as the admin reads the same text; a ServiceAccount without the right is
    // refused, and nobody unauthenticated gets in.
    c.ok(KUBECTL_DEFAULT, &["create", "serviceaccount", "nobody"]);
    let nobody_token = c.ok(KUBECTL_DEFAULT, &["create", "token", "nobody"]);
    let nobody = token_kubeconfig(&c, "nobody.kubeconfig", &ca_file, nobody_token.trim());
    let node_path = format!("/api/v1/nodes/{NODE}/proxy/metrics");
    for kubectl in kubectls() {
        let text = c.ok(kubectl, &["get", "--raw", "/metrics"]);
        assert!(
            text.contains("# TYPE apiserver_request_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(r#"apiserver_request_total{verb="POST",dry_run="",group="",version="v1",resource="pods",subresource="",scope="namespace",component="apiserver",code="201"} "#),
            "{text}"
        );
        let text = c.ok(kubectl, &["get", "--raw", &node_path]);
        assert!(
            text.contains("# TYPE kubelet_pod_start_duration_seconds histogram\n"),
            "{text}"
        );
        for path in ["/metrics", node_path.as_str()] {
            let out = kubectl_as(kubectl, &nobody, &["get", "--raw", path]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{path}: {err}");
            let want = if path == "/metrics" {
                r#"Error from server (Forbidden): forbidden: User "system:serviceaccount:default:nobody" cannot get path "/metrics""#.to_string()
            } else {
                format!(
                    r#"Error from server (Forbidden): nodes "{NODE}" is forbidden: User "system:serviceaccount:default:nobody" cannot get resource "nodes/proxy" in API group "" at the cluster scope"#
                )
            };
            assert!(err.contains(&want), "{path}: {err}");
        }
        // The prometheus account may, as Prometheus showed; through kubectl too.
        let prom_kc = token_kubeconfig(&c, "prom.kubeconfig", &ca_file, token.trim());
        let out = kubectl_as(kubectl, &prom_kc, &["get", "--raw", "/metrics"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = curl_status([
        "--cacert",
        &ca_file.display().to_string(),
        &format!("{api}/metrics"),
    ]);
    assert_eq!(status, "401");
    drop(prom);
}
