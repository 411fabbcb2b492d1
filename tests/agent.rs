//! `spindle agent` on its own: joins a server with URL and token, serves logs (follow,
//! tail) through the API server, refuses unauthenticated callers, and after a crash and
//! restart carries on with its pods without duplicates.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{kubectls, Cluster, LineReader, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(90);

struct AgentProc {
    child: Option<Child>,
    net: common::NetNames,
}

impl AgentProc {
    fn start(c: &Cluster, node: &str) -> AgentProc {
        Self::start_with(c, node, common::NetNames::fresh())
    }

    /// An agent with these host-global names (the same again for a restart).
    fn start_with(c: &Cluster, node: &str, net: common::NetNames) -> AgentProc {
        let token =
            std::fs::read_to_string(c.data_dir().join("server").join("token")).expect("join token");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.dir.path().join("agent.log"))
            .expect("agent log");
        let child = Command::new(common::spindle_bin())
            .args(["agent", "--server", &c.server_url(), "--node-name", node])
            .args(["--node-ip", "127.0.0.1", "--agent-port", "0"])
            .args(net.agent_args())
            .arg("--data-dir")
            .arg(c.dir.path().join("agent-data"))
            .env("SPINDLE_TOKEN", token.trim())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start spindle agent");
        AgentProc {
            child: Some(child),
            net,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        // SIGTERM first: a stopped agent removes its pods' networks and containers.
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .output();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill9();
        self.net.cleanup();
    }
}

fn jsonpath(c: &Cluster, args: &[&str]) -> String {
    c.ok(KUBECTL_DEFAULT, args).trim().to_string()
}

#[test]
fn standalone_agent_serves_logs_and_survives_a_restart() {
    let reg = Registry::start();
    let p1 = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:p1");
    let c = Cluster::start();
    let mut agent = AgentProc::start(&c, "joined");
    c.wait_for_output(
        &[
            "get",
            "node",
            "joined",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
        WAIT,
    );
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  containers:
  - name: main
    image: {p1}
    args: ["seq", "100000", "100"]
---
apiVersion: v1
kind: Pod
metadata:
  name: sleeper
spec:
  containers:
  - name: main
    image: {p1}
    args: ["sleep", "0"]
"#
    );
    let out = c.apply_stdin(KUBECTL_DEFAULT, &["apply", "-f", "-"], &manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pod in ["ticker", "sleeper"] {
        c.wait_for_output(
            &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
            "Running",
            WAIT,
        );
    }

    // logs -f streams new lines as the guest prints them, for both kubectl versions.
    for k in kubectls() {
        let follow = LineReader::spawn(c.kubectl_cmd(k, &["logs", "-f", "ticker"]));
        let first = follow.wait_for("line 2", WAIT);
        assert_eq!(first, ["line 1", "line 2"]);
        follow.wait_for("line 12", WAIT);
    }
    let tail = c.ok(KUBECTL_DEFAULT, &["logs", "ticker", "--tail=2"]);
    assert_eq!(tail.lines().count(), 2, "{tail:?}");
    let since = c.ok(KUBECTL_DEFAULT, &["logs", "ticker", "--since=1h"]);
    assert!(since.starts_with("line 1\n"), "{since:?}");

    // The agent's endpoint answers nobody but the API server.
    let port = jsonpath(
        &c,
        &[
            "get",
            "node",
            "joined",
            "-o",
            "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
        ],
    );
    let url = format!("https://127.0.0.1:{port}/containerLogs/default/ticker/main");
    let status =
        |extra: &[&str]| common::curl_status(["-k"].iter().chain(extra).chain([&url.as_str()]));
    assert_eq!(status(&[]), "401", "anonymous");
    assert_eq!(
        status(&["-H", "Authorization: Bearer nope"]),
        "401",
        "forged"
    );

    // Crash and restart: the pods go on (restarted once, since their instances died with
    // the process), and there is still exactly one of each.
    agent.kill9();
    let _agent = AgentProc::start_with(&c, "joined", agent.net.clone());
    for pod in ["ticker", "sleeper"] {
        c.wait_for_output(
            &[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}",
            ],
            "Running 1 true",
            WAIT,
        );
    }
    let pods = jsonpath(
        &c,
        &["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"],
    );
    assert_eq!(pods, "sleeper ticker");
    let follow = LineReader::spawn(c.kubectl_cmd(KUBECTL_DEFAULT, &["logs", "-f", "ticker"]));
    follow.wait_for("line 3", WAIT);
    // Deleting a pod on the restarted agent still finishes.
    c.ok(
        KUBECTL_DEFAULT,
        &["delete", "pod", "sleeper", "--wait=true", "--timeout=60s"],
    );
}
