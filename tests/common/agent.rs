//! A `spindle agent` process joined to a test cluster with the join token.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{spindle_bin, Cluster, NetNames};

/// `spindle agent` with its token in a file, killed at the end (SIGTERM, then SIGKILL).
pub struct Agent(std::process::Child);

/// Removes the agents' host-global network names when the test ends.
pub struct NetGuard(pub NetNames);

impl Drop for NetGuard {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}

impl Agent {
    /// Agent `node` with its data under `<test dir>/<data>` and its log in
    /// `<test dir>/<data>.log`.
    pub fn start(c: &Cluster, node: &str, data: &str, token_file: &Path, net: &NetNames) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.dir.path().join(format!("{data}.log")))
            .expect("agent log");
        let child = Command::new(spindle_bin())
            .args(["agent", "--server", &c.server_url(), "--node-name", node])
            .args([
                "--node-ip",
                "127.0.0.1",
                "--agent-port",
                "0",
                "--disable-containerd",
            ])
            .args(net.agent_args())
            .arg("--data-dir")
            .arg(c.dir.path().join(data))
            .arg("--token-file")
            .arg(token_file)
            .env_remove("SPINDLE_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start spindle agent");
        Agent(child)
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .output();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}
