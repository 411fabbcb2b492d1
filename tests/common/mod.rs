//! Shared harness of the end-to-end tests: starts the real `spindle` binary on a fresh
//! data dir and runs real kubectl binaries against it.

#![allow(dead_code)]

pub mod agent;
mod bounded;
pub mod listen;
pub mod net;
mod registry_server;
pub use bounded::*;
pub use net::NetNames;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const KUBECTL_DEFAULT: &str = "/usr/bin/kubectl";
pub const KUBECTL_OLDEST: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// The kubectl binaries every kubectl test runs with: the default and the oldest supported.
pub fn kubectls() -> Vec<&'static str> {
    vec![KUBECTL_DEFAULT, KUBECTL_OLDEST]
}

/// The spindle binary under test: cargo's, unless SPINDLE_TEST_BIN names another. Several
/// checkouts sharing one CARGO_TARGET_DIR overwrite each other's `debug/spindle`; a
/// private copy keeps a test run on the build it means to test.
pub fn spindle_bin() -> PathBuf {
    std::env::var_os("SPINDLE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_spindle")))
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    /// Run the embedded node agent (otherwise `--disable-agent`).
    pub agent: bool,
    /// Host-global names of this cluster's pod network, unique per test cluster.
    pub net: NetNames,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Cluster {
        Self::start_inner(extra, false)
    }

    /// A server with its embedded node agent, which registers node `node` and runs pods.
    pub fn with_agent(node: &str, extra: &[&str]) -> Cluster {
        let mut args = vec!["--node-name", node, "--agent-port", "0"];
        args.extend_from_slice(extra);
        let c = Self::start_inner(&args, true);
        c.wait_for_output(
            &[
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            "True",
            Duration::from_secs(60),
        );
        c
    }

    fn start_inner(extra: &[&str], agent: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = Cluster {
            dir,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            agent,
            net: NetNames::fresh(),
        };
        c.launch();
        c
    }

    /// A cluster value with no server: its kubeconfig points at `server` (plain HTTP, no
    /// credentials). For tests of this harness against a server that misbehaves.
    pub fn offline(server: &str) -> Cluster {
        let c = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra_args: Vec::new(),
            agent: false,
            net: NetNames::unreserved(),
        };
        std::fs::create_dir_all(c.data_dir()).expect("data dir");
        std::fs::write(
            c.kubeconfig(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
                 contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
                 users:\n- name: u\n  user: {{}}\ncurrent-context: c\n"
            ),
        )
        .expect("kubeconfig");
        c
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("kubeconfig.yaml")
    }

    /// Start the server (again) on the same data dir and wait until it answers.
    pub fn launch(&mut self) {
        let _ = std::fs::remove_file(self.kubeconfig());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let mut cmd = Command::new(spindle_bin());
        cmd.arg("server");
        if !self.agent {
            cmd.arg("--disable-agent");
        } else {
            cmd.args(self.net.args());
        }
        // Loopback unless the test asks for another address (pods reaching the API
        // server through the `kubernetes` Service need one they can route to).
        if !self.extra_args.iter().any(|a| a == "--bind-address") {
            cmd.args(["--bind-address", "127.0.0.1"]);
        }
        let child = cmd
            .args(["--https-listen-port", "0", "--data-dir"])
            .arg(self.data_dir())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start spindle server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.kubeconfig().exists() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("spindle server exited early: {status}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not write its kubeconfig in time\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// SIGTERM, as a service manager stops it; kill -9 if it has not exited in 30 s.
    pub fn stop(&mut self) {
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

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn server_url(&self) -> String {
        let cfg = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        cfg.lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("server line")
            .to_string()
    }

    /// kubectl on this cluster. Plain requests get kubectl's `--request-timeout`; streams
    /// and waits only the process bound of whoever runs the command.
    pub fn kubectl_cmd(&self, kubectl: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl);
        // Each kubectl version gets its own discovery cache, as real users' would be.
        let cache = self.dir.path().join(format!(
            "cache-{}",
            Path::new(kubectl)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("k")
        ));
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(cache);
        if plain_request(args) {
            cmd.arg(format!("--request-timeout={KUBECTL_REQUEST_TIMEOUT}"));
        }
        cmd.args(args);
        cmd
    }

    /// Run kubectl to its end, within `kubectl_limit(args)`.
    pub fn kubectl(&self, kubectl: &str, args: &[&str]) -> Output {
        output_within(
            &mut self.kubectl_cmd(kubectl, args),
            None,
            kubectl_limit(args),
        )
    }

    /// Run kubectl and return stdout, failing the test with everything printed otherwise.
    pub fn ok(&self, kubectl: &str, args: &[&str]) -> String {
        let out = self.kubectl(kubectl, args);
        assert!(
            out.status.success(),
            "{kubectl} {args:?} failed: {}\nstdout: {}\nserver log tail:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            tail(&self.log())
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run kubectl expecting failure; returns stderr.
    pub fn fails(&self, kubectl: &str, args: &[&str]) -> String {
        let out = self.kubectl(kubectl, args);
        assert!(
            !out.status.success(),
            "{kubectl} {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A kube-rs client for this cluster, as a second real client beside kubectl. Without
    /// kube-rs' own retries: they would retry a refused eviction (429) for minutes, and a
    /// test wants to see what the server answered.
    pub async fn kube_client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        cfg.default_retry = false;
        kube::Client::try_from(cfg).expect("client")
    }

    /// `kubectl apply -f -` of `manifest` with the default kubectl; panics on failure.
    pub fn apply(&self, manifest: &str) {
        let out = self.apply_stdin(KUBECTL_DEFAULT, &["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "apply failed: {}\n{manifest}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl create -f -` of `manifest` with the default kubectl; panics on failure.
    pub fn create(&self, manifest: &str) {
        let out = self.apply_stdin(KUBECTL_DEFAULT, &["create", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The messages of the events matching the field `selector` in the default
    /// namespace (e.g. `involvedObject.name=p,reason=Killing`), space-separated.
    pub fn event_messages(&self, selector: &str) -> String {
        self.ok(
            KUBECTL_DEFAULT,
            &[
                "get",
                "events",
                "--field-selector",
                selector,
                "-o",
                "jsonpath={.items[*].message}",
            ],
        )
    }

    /// kubectl with `input` on its stdin (apply -f -, exec -i, attach -i), within
    /// `kubectl_limit(args)`.
    pub fn apply_stdin(&self, kubectl: &str, args: &[&str], input: &str) -> Output {
        output_within(
            &mut self.kubectl_cmd(kubectl, args),
            Some(input.as_bytes()),
            kubectl_limit(args),
        )
    }

    /// Start `spindle hollow-nodes` against this server; stopped when the returned guard drops.
    pub fn hollow_nodes(&self, count: usize, prefix: &str, extra: &[&str]) -> Hollow {
        let token = std::fs::read_to_string(self.data_dir().join("server/token")).expect("token");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("hollow-{prefix}.log")))
            .expect("log");
        let child = Command::new(spindle_bin())
            .args([
                "hollow-nodes",
                "--server",
                &self.server_url(),
                "--token",
                token.trim(),
                "--count",
                &count.to_string(),
                "--prefix",
                prefix,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hollow-nodes");
        Hollow { child: Some(child) }
    }

    /// The agent's private containerd as its `ctr` client sees it (namespace
    /// `spindle`): stdout, failing the test if ctr fails or hangs.
    pub fn ctr(&self, args: &[&str]) -> String {
        let sock = self.data_dir().join("agent/containerd/containerd.sock");
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&sock)
            .args(["-n", "spindle"])
            .args(args);
        let out = output_within(&mut cmd, None, KUBECTL_LIMIT);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get pod POD -o jsonpath=PATH`, trimmed.
    pub fn pod_field(&self, pod: &str, path: &str) -> String {
        self.ok(
            KUBECTL_DEFAULT,
            &["get", "pod", pod, "-o", &format!("jsonpath={path}")],
        )
        .trim()
        .to_string()
    }

    /// Poll until the pod's field at `path` is `want`.
    pub fn wait_pod_field(&self, pod: &str, path: &str, want: &str, timeout: Duration) {
        let path = format!("jsonpath={path}");
        self.wait_for_output(&["get", "pod", pod, "-o", &path], want, timeout);
    }

    /// Poll `kubectl get -o jsonpath=…` until it returns `want`.
    pub fn wait_for_output(&self, args: &[&str], want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self.kubectl(KUBECTL_DEFAULT, args);
            last = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "kubectl {args:?} never returned {want:?}; last {last:?}\nserver log tail:\n{}",
            tail(&self.log())
        );
    }

    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if self.agent {
            self.net.cleanup();
        }
        release_dir(self.dir.path());
    }
}

/// What a killed agent leaves under `dir` (a stopped one removes it itself): its private
/// containerd and container shims, and mounts (tmpfs volumes, container rootfs).
pub fn release_dir(dir: &Path) {
    let needle = dir.display().to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("containerd") && cmd.contains(&needle) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&needle))
        .collect();
    // Deepest first.
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = Command::new("umount").args(["-l", m]).output();
    }
}

/// A running `spindle hollow-nodes` process.
pub struct Hollow {
    child: Option<Child>,
}

impl Hollow {
    /// Stop it abruptly, as a crashed node would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The HTTP status code curl gets with `args` (options and URL); bounded in time.
pub fn curl_status<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Lines of a long-running child's stdout (a watch, `logs -f`), read on a thread. The child
/// is killed when this drops, or when it outlives `STREAM_LIMIT`.
pub struct LineReader {
    rx: mpsc::Receiver<String>,
    pub child: Supervised,
}

impl LineReader {
    pub fn spawn(mut cmd: Command) -> LineReader {
        let child = Supervised::spawn(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
            STREAM_LIMIT,
        );
        let stdout = child.with(|c| c.stdout.take()).expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineReader { rx, child }
    }

    /// Wait for a line containing `needle`; returns all lines seen.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    seen.push(l);
                    if hit {
                        return seen;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "no line containing {needle:?}: the stream ended ({}); saw {seen:?}",
                    self.child.state()
                ),
            }
        }
        panic!("no line containing {needle:?} within {timeout:?}; saw {seen:?}");
    }
}

/// Where the Wasm guests of the tests and examples are built (outside the workspace).
fn guest_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("wasm-guests")
}

/// Build a guest crate for a wasm32 target and return the .wasm path. Cargo's own lock
/// serialises concurrent builds from parallel tests.
pub fn build_guest(manifest: &str, package: &str, target: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest);
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            target,
            "-p",
            package,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", guest_target_dir())
        // Flags meant for the host build must not leak into the guest's (and would
        // rebuild the guests shared with spindle-wasm's tests, which remove them too).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building {package} for {target} failed (rustup target add {target}?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = guest_target_dir().join(target).join("release");
    // A binary keeps the package name; a cdylib (wasi:http guests) has `_` for `-`.
    let mut path = dir.join(format!("{package}.wasm"));
    if !path.exists() {
        path = dir.join(format!("{}.wasm", package.replace('-', "_")));
    }
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// The many-tools test guest, as a WASI p1 module (`wasm32-wasip1`) or a p2 component
/// (`wasm32-wasip2`).
pub fn testbox(target: &str) -> PathBuf {
    build_guest("tests/guests/testbox/Cargo.toml", "testbox", target)
}

/// A real OCI registry (Debian's docker-registry) on a free loopback port.
pub struct Registry {
    pub addr: String,
    _dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The account of [`Registry::with_htpasswd`]: user and password.
pub const REGISTRY_LOGIN: (&str, &str) = registry_server::LOGIN;

impl Registry {
    pub fn start() -> Registry {
        Self::serve(false)
    }

    /// A registry that serves only [`REGISTRY_LOGIN`] (htpasswd basic auth), for
    /// imagePullSecrets. Push to it with `skopeo --dest-creds`.
    pub fn with_htpasswd() -> Registry {
        Self::serve(true)
    }

    fn serve(htpasswd: bool) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = if htpasswd {
            registry_server::htpasswd_auth(dir.path())
        } else {
            String::new()
        };
        let (child, addr) = registry_server::spawn_registry(dir.path(), &auth);
        Registry {
            addr,
            _dir: dir,
            child: Some(child),
        }
    }

    /// `spindle push FILE <registry>/<name>`; returns the full reference.
    pub fn push(&self, file: &Path, name: &str) -> String {
        let reference = format!("{}/{name}", self.addr);
        let out = output_within(
            Command::new(spindle_bin())
                .arg("push")
                .arg(file)
                .arg(&reference),
            None,
            KUBECTL_LIMIT,
        );
        assert!(
            out.status.success(),
            "spindle push {reference} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }
}

impl Registry {
    /// Builds the busybox-static container image (scripts/busybox-image: umoci, skopeo)
    /// and pushes it here as `name`; returns the full reference.
    pub fn push_busybox(&self, name: &str) -> String {
        self.busybox(name, false)
    }

    /// The busybox image without PATH in its config (as many images built from
    /// scratch are).
    pub fn push_busybox_without_path(&self, name: &str) -> String {
        self.busybox(name, true)
    }

    fn busybox(&self, name: &str, no_path: bool) -> String {
        let reference = format!("{}/{name}", self.addr);
        let work = tempfile::tempdir().expect("temp dir");
        // umoci and skopeo: a few seconds each; the bound only stops a hang.
        let out = output_within(
            Command::new("bash")
                .env("NO_PATH", if no_path { "1" } else { "" })
                .arg("scripts/busybox-image")
                .arg(&reference)
                .arg(work.path()),
            None,
            Duration::from_secs(300),
        );
        assert!(
            out.status.success(),
            "scripts/busybox-image {reference} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
