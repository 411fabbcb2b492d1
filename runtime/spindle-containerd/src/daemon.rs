//! A private containerd for a node that was given no `--containerd-socket`: its config,
//! socket, root and state live under one directory, so it never touches a system
//! containerd's images or containers (runc's own state and shim sockets still go to
//! containerd's fixed paths under /run/containerd; container IDs are unique per pod run,
//! so they do not collide).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// A containerd process started by this agent; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    child: Option<tokio::process::Child>,
    /// The pid of a containerd adopted from a previous agent process.
    adopted: Option<i32>,
    socket: PathBuf,
}

/// The pid in `containerd.pid` if that process is still the containerd of `config`.
fn adopted_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("containerd.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let config = dir.join("config.toml").display().to_string();
    String::from_utf8_lossy(&cmdline)
        .contains(&config)
        .then_some(pid)
}

impl Daemon {
    /// The gRPC socket to connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts containerd under `dir`, or adopts the one a previous agent process left
    /// running there (an agent restart must not lose its running containers' daemon).
    pub async fn start(dir: &Path) -> Result<Daemon> {
        let socket = dir.join("containerd.sock");
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            tracing::info!(socket = %socket.display(), "using the containerd already running for this node");
            return Ok(Daemon {
                child: None,
                adopted: adopted_pid(dir),
                socket,
            });
        }
        let io = |what: &str, e| Error::Io(format!("{what} under {}", dir.display()), e);
        std::fs::create_dir_all(dir).map_err(|e| io("creating the containerd directory", e))?;
        let _ = std::fs::remove_file(&socket);
        let config = dir.join("config.toml");
        // The CRI plugin is Kubernetes' own kubelet interface; Spindle's agent is the
        // kubelet here and talks to containerd's services directly.
        let text = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = {sock:?}\n\n[ttrpc]\n  address = {ttrpc:?}\n",
            root = dir.join("root").display().to_string(),
            state = dir.join("state").display().to_string(),
            sock = socket.display().to_string(),
            ttrpc = dir.join("containerd.sock.ttrpc").display().to_string(),
        );
        std::fs::write(&config, text).map_err(|e| io("writing config.toml", e))?;
        let log = std::fs::File::create(dir.join("containerd.log"))
            .map_err(|e| io("creating containerd.log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| io("creating containerd.log", e))?;
        let child = tokio::process::Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C meant for the agent must not stop
            // containerd before the agent has removed its containers.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::Io(
                    "starting containerd (is the containerd package installed?)".into(),
                    e,
                )
            })?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(dir.join("containerd.pid"), pid.to_string());
        }
        let mut daemon = Daemon {
            child: Some(child),
            adopted: None,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::UnixStream::connect(&daemon.socket)
                .await
                .is_ok()
            {
                tracing::info!(socket = %daemon.socket.display(), "started a private containerd");
                return Ok(daemon);
            }
            if let Some(child) = daemon.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Invalid(format!(
                        "containerd exited with {status} at start; see {}",
                        dir.join("containerd.log").display()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "containerd did not open {} within 20 s; see {}",
                    daemon.socket.display(),
                    dir.join("containerd.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the daemon if this agent started or adopted it (shims and their
    /// containers live on without it; the agent removes those first).
    pub async fn stop(&mut self) {
        if let Some(pid) = self.adopted.take() {
            // SAFETY: kill(2); the pid was checked to be this node's containerd.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            for _ in 0..200 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return;
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
