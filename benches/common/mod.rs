//! Pieces the benchmarks share.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// The `spindle` binary under test: this build's, or `$SPINDLE_BENCH_BIN` (an earlier build,
/// to measure a change before and after on the same machine in one sitting).
pub fn bin() -> std::ffi::OsString {
    std::env::var_os("SPINDLE_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_spindle").into())
}

pub mod size;
#[allow(unused_imports)] // each bench uses some
pub use size::{announce, quick, size};

/// A bench's scratch directory. Dropped last (declare it first), it detaches every mount
/// an agent left below it before the directory goes: an agent bind-mounts its pods
/// directory onto itself (nodev, nosuid) and pods' volumes are mounts too, and a stopped
/// agent leaves them for the agent started next, as the kubelet does.
pub struct Work(tempfile::TempDir);

impl Work {
    pub fn new() -> anyhow::Result<Work> {
        Ok(Work(tempfile::tempdir()?))
    }
}

impl std::ops::Deref for Work {
    type Target = tempfile::TempDir;
    fn deref(&self) -> &tempfile::TempDir {
        &self.0
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let root = self.0.path().display().to_string();
        let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut below: Vec<&str> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in below {
            let _ = Command::new("umount").args(["-l", m]).output();
        }
    }
}

/// Runs a bench's `body` on a multi-threaded runtime in a fresh [`Work`] dir, and prints
/// the tail of every log in it when the bench fails. The runtime (and so every child
/// process guard made in it) goes before the dir, so nothing writes into it while it is
/// removed.
pub fn run_in_work<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let work = Work::new()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(body(work.path().to_path_buf()));
    if result.is_err() {
        tail_logs(work.path());
    }
    drop(rt);
    result
}

/// The last lines of every non-empty log in `work` and the directories just below it.
pub fn tail_logs(work: &Path) {
    let mut dirs = vec![work.to_path_buf()];
    let below = std::fs::read_dir(work).into_iter().flatten().flatten();
    dirs.extend(below.map(|e| e.path()).filter(|p| p.is_dir()));
    for dir in dirs {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().extension().is_none_or(|x| x != "log") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            eprintln!("--- tail of {} ---", e.path().display());
            for line in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// The test guest `tests/guests/testbox` built for `target` and pushed to `reg` as
/// `bench/testbox:<tag>`: the image reference.
pub fn testbox(reg: &Registry, target: &str, tag: &str) -> anyhow::Result<String> {
    let wasm = build_guest("tests/guests/testbox/Cargo.toml", "testbox", target)?;
    push(reg, &wasm, &format!("bench/testbox:{tag}"))
}

/// A child process, stopped (and reaped) when dropped, on success and error paths alike.
pub struct Proc(pub Child);

impl Drop for Proc {
    /// SIGTERM first, so a server or agent removes its pod networks; SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path, what: &str) -> anyhow::Result<Proc> {
        let log = std::fs::File::create(log)?;
        let child = cmd
            // Quiet unless BENCH_SPINDLE_LOG asks for more (a SPINDLE_LOG filter).
            .env(
                "SPINDLE_LOG",
                std::env::var("BENCH_SPINDLE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {what}: {e}"))?;
        Ok(Proc(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn ensure_alive(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(status) = self.0.try_wait()? {
            anyhow::bail!("{what} exited: {status}");
        }
        Ok(())
    }
}

/// Proportional set size (KiB): each page shared by k processes counts 1/k, so summing it
/// over processes counts shared pages (a shim's Go runtime, busybox's text) once.
pub fn pss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

pub fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// CPU time (user + system, seconds) a process has used so far, all its threads included:
/// on a machine shared with other work, CPU per unit of work compares builds where wall
/// time is skewed by the neighbours' load.
pub fn cpu_secs(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0)
    });
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name (field 2) may hold spaces: count from after its ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------
// Host-global names.

/// The names on the host a cluster with pod networking owns: bridge, netns prefix, nftables
/// table, pod and Service CIDRs, and a free DNS port. The defaults (spindle0, 10.42/16,
/// 10.43/16, port 53) are those of `scripts/up`: a bench must not take over, or on exit
/// remove, a cluster the user runs beside it. The ranges differ from the tests' (10.100-199
/// and 10.200-249, tests/common) so a bench and a test run can share the host. Removes what
/// a killed agent left behind when dropped: declare it before the processes it names.
pub struct Net {
    pub bridge: String,
    pub netns_prefix: String,
    pub cluster_cidr: String,
    pub service_cidr: String,
    service_dns: String,
}

impl Net {
    pub fn fresh() -> Net {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() & 0xffff;
        let k = pid + n;
        Net {
            bridge: format!("spb{pid:x}x{n}"),
            netns_prefix: format!("spb{pid:x}x{n}"),
            cluster_cidr: format!("10.{}.0.0/16", 50 + k % 50),
            service_cidr: format!("10.{}.0.0/16", 250 + k % 6),
            service_dns: format!("10.{}.0.10", 250 + k % 6),
        }
    }

    /// The flags of a server: its address ranges, and the agent's names if it embeds one.
    pub fn server_args(&self) -> Vec<String> {
        let mut args = vec![
            "--cluster-cidr".into(),
            self.cluster_cidr.clone(),
            "--service-cidr".into(),
            self.service_cidr.clone(),
        ];
        args.extend(self.agent_args());
        args
    }

    /// The flags of an agent (standalone or embedded).
    pub fn agent_args(&self) -> Vec<String> {
        [
            "--cni-bridge",
            &self.bridge,
            "--netns-prefix",
            &self.netns_prefix,
            "--nft-table",
            &self.bridge,
            "--cluster-dns",
            &self.service_dns,
            "--cluster-dns-port",
            "0",
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let prefix = format!("{}-", self.netns_prefix);
        for e in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&prefix) {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
        let quiet = |cmd: &mut Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(Command::new("ip").args(["link", "del", &self.bridge]));
        quiet(Command::new("nft").args(["delete", "table", "ip", &self.bridge]));
    }
}

// ---------------------------------------------------------------------------------------
// Guest build, registry, push (as tests/common does it).

pub fn guest_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("wasm-guests")
}

/// Builds a guest crate (`manifest` relative to the project) for a wasm32 target and
/// returns the .wasm path.
pub fn build_guest(manifest: &str, package: &str, target: &str) -> anyhow::Result<PathBuf> {
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
        .output()?;
    anyhow::ensure!(
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
    anyhow::ensure!(path.exists(), "{} missing after build", path.display());
    Ok(path)
}

pub struct Registry {
    pub addr: String,
    _proc: Proc,
}

pub fn start_registry(work: &Path) -> anyhow::Result<Registry> {
    let dir = work.join("registry");
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        ),
    )?;
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve").arg(&cfg);
    let proc = Proc::spawn(
        cmd,
        &work.join("registry.log"),
        "docker-registry (apt install docker-registry)",
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Registry { addr, _proc: proc })
}

pub fn push(reg: &Registry, file: &Path, name: &str) -> anyhow::Result<String> {
    let reference = format!("{}/{name}", reg.addr);
    let out = Command::new(bin())
        .arg("push")
        .arg(file)
        .arg(&reference)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "spindle push {reference} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(reference)
}

// ---------------------------------------------------------------------------------------
// Server, agent, hollow nodes.

pub struct Server {
    pub proc: Proc,
    pub url: String,
    pub token: String,
    pub client: Client,
}

pub async fn start_server(work: &Path, name: &str, extra: &[String]) -> anyhow::Result<Server> {
    let data = work.join(name);
    let mut cmd = Command::new(bin());
    cmd.args([
        "server",
        "--https-listen-port",
        "0",
        "--bind-address",
        "127.0.0.1",
        "--data-dir",
    ])
    .arg(&data)
    .args(extra);
    let mut proc = Proc::spawn(cmd, &work.join(format!("{name}.log")), "spindle server")?;
    let kubeconfig = data.join("kubeconfig.yaml");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        proc.ensure_alive("spindle server")?;
        anyhow::ensure!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The kubeconfig may be caught half-written; retry reading it briefly.
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&kubeconfig)?;
        if text.contains("server: ") && data.join("server/token").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .ok_or_else(|| anyhow::anyhow!("no server: line in the kubeconfig"))?
        .to_string();
    let token = std::fs::read_to_string(data.join("server/token"))?
        .trim()
        .to_string();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    Ok(Server {
        proc,
        url,
        token,
        client,
    })
}

pub async fn wait_node_ready(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = api.get_opt(name).await.ok().flatten().is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {name} did not become Ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}
