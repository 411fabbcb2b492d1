//! Containers through containerd: the [`Runtime`] for container images, and execs into
//! running containers. A container joins its pod's network namespace (so it shares the
//! pod IP and localhost with the pod's Wasm containers) and gets the same volume
//! directories the Wasm containers see, as bind mounts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use spindle_containerd::daemon::Daemon;
use spindle_containerd::io::{Fifos, Pump};
use spindle_containerd::spec::{self, Bind, ProcessSpec, Seccomp};
use spindle_containerd::{Containerd, ExecSpec, RunSpec};
use spindle_image::{ContainerImage, PulledImage};
use spindle_logs::Stream;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::paths::AgentPaths;
use crate::runtime::{
    Console, ContainerSpec, ExecIo, Exit, ExitReason, Meter, Output, OutputFn, RunMeta, Running,
    Runtime, RuntimeError, Security, SpecFuture, Usage,
};

/// How the agent finds containerd.
#[derive(Clone, Debug, Default)]
pub struct ContainerdOptions {
    /// containerd's socket; `None` starts a private containerd under the data dir.
    pub socket: Option<PathBuf>,
    /// Run Wasm only.
    pub disabled: bool,
    /// The containerd namespace the agent owns.
    pub namespace: String,
    /// Whether `privileged: true` containers may run.
    pub allow_privileged: bool,
}

pub struct ContainerdContainers {
    ctr: Containerd,
    daemon: tokio::sync::Mutex<Option<Daemon>>,
    allow_privileged: bool,
    io_dir: PathBuf,
    /// Images already imported, by manifest digest.
    imported: Mutex<HashMap<String, Arc<Imported>>>,
    /// Each running container's main process and stdio, for exec and attach.
    runs: Mutex<HashMap<String, Arc<RunIo>>>,
    /// Set when the agent stops: its shutdown removes every container, so finished
    /// runs leave that to it.
    closing: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// The parts of an OCI image config a container starts from.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
}

fn image_config(img: &ContainerImage) -> Result<ImageConfig, String> {
    let bytes =
        std::fs::read(&img.config.path).map_err(|e| format!("reading the image config: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("the image config is not JSON: {e}"))?;
    Ok(v.get("config")
        .cloned()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default())
}

/// Kubernetes' rule: `command` replaces the entrypoint (and drops the image's cmd),
/// `args` replaces the cmd.
fn argv(
    cfg: &ImageConfig,
    command: Option<&Vec<String>>,
    args: Option<&Vec<String>>,
) -> Vec<String> {
    let mut argv: Vec<String> = match command {
        Some(c) => c.clone(),
        None => cfg.entrypoint.clone().unwrap_or_default(),
    };
    match (args, command) {
        (Some(a), _) => argv.extend(a.iter().cloned()),
        (None, None) => argv.extend(cfg.cmd.clone().unwrap_or_default()),
        (None, Some(_)) => {}
    }
    argv
}

/// The image's environment with the pod's on top (same name: the pod wins).
fn merge_env(image: &[String], pod: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = image
        .iter()
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or_default();
            !pod.iter().any(|(pk, _)| pk == k)
        })
        .cloned()
        .collect();
    out.extend(pod.iter().map(|(k, v)| format!("{k}={v}")));
    out
}

/// The image config's `User`, as the kubelet reads it: a numeric `uid[:gid]`, or a
/// name (which would need the image's /etc/passwd).
#[derive(Debug, PartialEq, Eq)]
enum ImageUser<'a> {
    Id(u32, Option<u32>),
    Name(&'a str),
}

fn image_user(user: Option<&str>) -> ImageUser<'_> {
    let Some(u) = user.filter(|u| !u.is_empty()) else {
        return ImageUser::Id(0, None);
    };
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    match uid.parse() {
        Ok(uid) => ImageUser::Id(uid, gid.and_then(|g| g.parse().ok())),
        Err(_) => ImageUser::Name(uid),
    }
}

/// The kubelet's `runAsNonRoot` check (verifyRunAsNonRoot), with its messages.
fn verify_run_as_non_root(meta: &RunMeta, user: &ImageUser) -> Result<(), String> {
    let sec = &meta.security;
    if sec.run_as_non_root != Some(true) {
        return Ok(());
    }
    let who = format!("(pod: {:?}, container: {})", meta.pod, meta.container);
    match (sec.run_as_user, user) {
        (Some(0), _) => Err(format!("container's runAsUser breaks non-root policy {who}")),
        (Some(_), _) => Ok(()),
        (None, ImageUser::Id(0, _)) => Err(format!(
            "container has runAsNonRoot and image will run as root {who}"
        )),
        (None, ImageUser::Name(name)) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root {who}"
        )),
        (None, ImageUser::Id(..)) => Ok(()),
    }
}

/// The seccomp filter of a container. As containerd's CRI does, a privileged container
/// runs without one and every other gets the runtime default unless it asks. Asking
/// for `Unconfined` lifts a defence the node's operator relies on, so it needs
/// `--allow-privileged` as privileged containers do (Kubernetes leaves that to
/// PodSecurity admission, which Spindle does not have). Localhost profiles would read
/// a file of the node named by the pod: not supported.
fn seccomp_of(sec: &Security, allow_privileged: bool) -> Result<Seccomp, String> {
    match sec.seccomp_profile.as_deref() {
        _ if sec.privileged => Ok(Seccomp::Unconfined),
        None | Some("RuntimeDefault") => Ok(Seccomp::RuntimeDefault),
        Some("Unconfined") if allow_privileged => Ok(Seccomp::Unconfined),
        Some("Unconfined") => Err(
            "seccomp profile Unconfined is not allowed on this node (the agent's --allow-privileged flag)"
                .into(),
        ),
        Some("Localhost") => {
            Err("seccomp profile type Localhost is not supported on this node".into())
        }
        Some(other) => Err(format!("unknown seccomp profile type {other:?}")),
    }
}

/// Whether this node runs the container as configured; returns its seccomp filter.
/// `privileged`, the capabilities that reach beyond the container
/// ([`spec::privileged_caps`]) and an unconfined seccomp need `--allow-privileged`.
fn admit(meta: &RunMeta, user: &ImageUser, allow_privileged: bool) -> Result<Seccomp, String> {
    let sec = &meta.security;
    if !allow_privileged {
        if sec.privileged {
            return Err(
                "privileged containers are not allowed on this node (the agent's --allow-privileged flag)"
                    .into(),
            );
        }
        let caps = spec::privileged_caps(&sec.cap_add);
        if !caps.is_empty() {
            return Err(format!(
                "adding capabilities {} is not allowed on this node (the agent's --allow-privileged flag)",
                caps.join(", ")
            ));
        }
    }
    let seccomp = seccomp_of(sec, allow_privileged)?;
    verify_run_as_non_root(meta, user)?;
    Ok(seccomp)
}

impl ContainerdContainers {
    /// Connects to (or starts) containerd; `None` when the node runs Wasm only.
    pub async fn start(
        opts: &ContainerdOptions,
        paths: &AgentPaths,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if opts.disabled {
            return Ok(None);
        }
        let daemon = match &opts.socket {
            Some(_) => None,
            None if !on_path("containerd") || !on_path("runc") => {
                tracing::info!("containerd or runc is not installed: this node runs Wasm only");
                return Ok(None);
            }
            None => Some(
                Daemon::start(&paths.containerd())
                    .await
                    .context("starting a private containerd")?,
            ),
        };
        let socket = match (&opts.socket, &daemon) {
            (Some(s), _) => s.clone(),
            (None, Some(d)) => d.socket().to_path_buf(),
            (None, None) => unreachable!("a daemon was started above"),
        };
        let ctr = Containerd::connect(&socket, &opts.namespace).await?;
        let version = ctr
            .version()
            .await
            .with_context(|| format!("asking containerd at {} its version", socket.display()))?;
        tracing::info!(socket = %socket.display(), %version, namespace = %opts.namespace, "containerd runtime ready");
        let me = Arc::new(ContainerdContainers {
            ctr,
            daemon: tokio::sync::Mutex::new(daemon),
            allow_privileged: opts.allow_privileged,
            io_dir: paths.containerd_io(),
            imported: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        // Containers of a previous agent process: their pods are taken back from the
        // API and start again, as Wasm pods do.
        me.remove_all().await;
        Ok(Some(me))
    }

    async fn remove_all(&self) {
        match self.ctr.containers().await {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(count = ids.len(), "removing containers");
                }
                for id in ids {
                    if let Err(e) = self.ctr.remove(&id).await {
                        tracing::warn!(container = %id, error = %e, "removing a leftover container");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing containers"),
        }
        let _ = std::fs::remove_dir_all(&self.io_dir);
    }

    /// Removes every container and refuses new ones: the agent is stopping.
    pub async fn remove_containers(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.remove_all().await;
    }

    /// Stops a private containerd (after [`Self::remove_containers`]).
    pub async fn stop_daemon(&self) {
        if let Some(d) = self.daemon.lock().await.as_mut() {
            d.stop().await;
        }
    }

    /// The image in containerd and its config, read once per image.
    async fn import(
        &self,
        image: &PulledImage,
        ci: &ContainerImage,
    ) -> Result<Arc<Imported>, String> {
        if let Some(done) = lock(&self.imported).get(&ci.manifest.digest) {
            return Ok(done.clone());
        }
        let config = image_config(ci)?;
        let chain = self
            .ctr
            .import(&image.resolved, ci)
            .await
            .map_err(|e| format!("importing image {} into containerd: {e}", image.image))?;
        let done = Arc::new(Imported { chain, config });
        lock(&self.imported).insert(ci.manifest.digest.clone(), done.clone());
        Ok(done)
    }

    /// Runs `argv` in the running container `id` (as its main process's user, with
    /// its environment and working directory); returns the exit code.
    async fn exec(
        &self,
        id: &str,
        argv: Vec<String>,
        io: ExecIo,
        timeout: Option<Duration>,
    ) -> Result<i32, String> {
        let mut process = lock(&self.runs)
            .get(id)
            .map(|r| r.process.clone())
            .ok_or_else(|| format!("container {id} is not running"))?;
        process.args = argv;
        process.terminal = io.tty;
        let exec_id = format!("exec-{:016x}", rand::random::<u64>());
        let fifos = Fifos::create(
            &self.io_dir.join(format!("{id}-{exec_id}")),
            io.stdin.is_some(),
            io.tty,
        )
        .map_err(|e| e.to_string())?;
        let out = io.output.clone();
        let pump = fifos
            .pump(Arc::new(move |is_err, data: Vec<u8>| {
                // The pump awaits this: a slow exec client slows the process down.
                out(stream_of(is_err), data.into())
            }))
            .map_err(|e| e.to_string())?;
        let process = spec::encode_process(&process).map_err(|e| e.to_string())?;
        self.ctr
            .exec(ExecSpec {
                container: id,
                exec_id: &exec_id,
                process,
                fifos: &fifos,
                terminal: io.tty,
            })
            .await
            .map_err(|e| e.to_string())?;
        let feeder = match io.stdin {
            Some(r) => fifos.feed(r.reader()).map_err(|e| e.to_string())?,
            None => None,
        };
        let ctr = self.ctr.clone();
        let (cid, eid) = (id.to_string(), exec_id.clone());
        let stdin_closer = feeder.map(|f| {
            let ctr = ctr.clone();
            let (cid, eid) = (cid.clone(), eid.clone());
            tokio::spawn(async move {
                let _ = f.await;
                let _ = ctr.close_stdin(&cid, &eid).await;
            })
        });
        let resizer = io.resize.map(|mut rx| {
            let ctr = ctr.clone();
            let (cid, eid) = (cid.clone(), eid.clone());
            tokio::spawn(async move {
                while let Some((w, h)) = rx.recv().await {
                    let _ = ctr.resize(&cid, &eid, w.into(), h.into()).await;
                }
            })
        });
        let waited = match timeout {
            None => Ok(self.ctr.wait(id, &exec_id).await),
            Some(t) => tokio::time::timeout(t, self.ctr.wait(id, &exec_id))
                .await
                .map_err(|_| t),
        };
        let result = match waited {
            Ok(Ok(e)) => Ok(e.status as i32),
            Ok(Err(e)) => Err(e.to_string()),
            Err(t) => {
                let _ = self.ctr.kill(id, &exec_id, libc::SIGKILL, false).await;
                let _ = self.ctr.wait(id, &exec_id).await;
                Err(crate::runtime::timed_out(t).message)
            }
        };
        pump.finish().await;
        for t in [stdin_closer, resizer].into_iter().flatten() {
            t.abort();
        }
        let _ = self.ctr.delete_exec(id, &exec_id).await;
        result
    }
}

/// An image as imported: the parent snapshot of its containers and its config.
struct Imported {
    chain: String,
    config: ImageConfig,
}

/// A running container's main process (which its execs inherit: env, user, working
/// directory) and its stdio beyond the log: attached clients and its stdin.
struct RunIo {
    process: ProcessSpec,
    sinks: Mutex<Vec<(u64, OutputFn)>>,
    stdin: tokio::sync::Mutex<Option<tokio::net::unix::pipe::Sender>>,
    stdin_once: bool,
    /// The exit code, once the container has ended.
    exited: watch::Sender<Option<i32>>,
}

impl ContainerdContainers {
    /// `kubectl attach`: the client sees the container's output from now on, its stdin
    /// (with `-i`) goes to the container's (if the container has `stdin: true`), and
    /// the attach ends with the container. Returns its exit code.
    async fn attach(&self, id: &str, io: ExecIo) -> Result<i32, String> {
        let run = lock(&self.runs)
            .get(id)
            .cloned()
            .ok_or_else(|| format!("container {id} is not running"))?;
        let key = rand::random::<u64>();
        lock(&run.sinks).push((key, io.output.clone()));
        let mut exited = run.exited.subscribe();
        let feeder = io.stdin.map(|input| {
            let mut input = input.reader();
            let (run, ctr, id) = (run.clone(), self.ctr.clone(), id.to_string());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    match input.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut w = run.stdin.lock().await;
                            let Some(tx) = w.as_mut() else { break };
                            if tx.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                if run.stdin_once {
                    run.stdin.lock().await.take();
                    let _ = ctr.close_stdin(&id, "").await;
                }
            })
        });
        let resizer = io.resize.map(|mut rx| {
            let (ctr, id) = (self.ctr.clone(), id.to_string());
            tokio::spawn(async move {
                while let Some((w, h)) = rx.recv().await {
                    let _ = ctr.resize(&id, "", w.into(), h.into()).await;
                }
            })
        });
        let code = loop {
            if let Some(code) = *exited.borrow_and_update() {
                break code;
            }
            if exited.changed().await.is_err() {
                break 0;
            }
        };
        lock(&run.sinks).retain(|(k, _)| *k != key);
        for t in [feeder, resizer].into_iter().flatten() {
            t.abort();
        }
        Ok(code)
    }
}

fn stream_of(is_err: bool) -> Stream {
    if is_err {
        Stream::Stderr
    } else {
        Stream::Stdout
    }
}

/// The pod's /etc/hosts: localhost, and the pod's own address under its hostname, first
/// by its full name when it has a domain (`web-0.nginx.default.svc.cluster.local
/// web-0`), as the kubelet writes it.
fn hosts_file(host: &str, domain: Option<&str>, ip: Option<std::net::IpAddr>) -> String {
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match (ip, domain) {
        (Some(ip), Some(domain)) => hosts.push_str(&format!("{ip}\t{host}.{domain}\t{host}\n")),
        (Some(ip), None) => hosts.push_str(&format!("{ip}\t{host}\n")),
        (None, _) => {}
    }
    hosts
}

/// The pod's /etc/hosts, /etc/hostname and /etc/resolv.conf for its containers.
fn etc_binds(spec: &ContainerSpec, ip: Option<std::net::IpAddr>) -> Result<Vec<Bind>, String> {
    let dir = spec.meta.paths.etc();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let host = &spec.meta.hostname;
    let hosts = hosts_file(host, spec.meta.domain.as_deref(), ip);
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text)
            .map(|()| p)
            .map_err(|e| format!("writing the pod's {name}: {e}"))
    };
    let hosts = write("hosts", &hosts)?;
    let hostname = write("hostname", &format!("{host}\n"))?;
    // The lifecycle writes the pod's resolv.conf for the cluster DNS policies. For
    // dnsPolicy Default and hostNetwork pods the container gets a copy of the node's,
    // made once per pod as the kubelet does: the node's own file is never bound into
    // a container, where a root process could rewrite the node's resolver.
    let pod_resolv = spec.meta.paths.resolv_conf();
    let resolv = if pod_resolv.is_file() {
        pod_resolv
    } else {
        host_resolv_copy(&dir, Path::new(HOST_RESOLV_CONF))?
    };
    Ok([
        ("/etc/hosts", hosts),
        ("/etc/hostname", hostname),
        ("/etc/resolv.conf", resolv),
    ]
    .into_iter()
    .map(|(dest, source)| Bind {
        source,
        destination: dest.into(),
        read_only: false,
    })
    .collect())
}

const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The pod's copy of the node's resolv.conf in `dir`, written if the pod has none yet
/// (a container's edits then last for the pod's life, as under the kubelet). A node
/// without the file gives an empty one.
fn host_resolv_copy(dir: &Path, host: &Path) -> Result<PathBuf, String> {
    let copy = dir.join("resolv.conf");
    if copy.is_file() {
        return Ok(copy);
    }
    let text = match std::fs::read(host) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("reading {}: {e}", host.display())),
    };
    std::fs::write(&copy, text)
        .map(|()| copy)
        .map_err(|e| format!("writing the pod's resolv.conf: {e}"))
}

fn id_u32(v: i64, what: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{what} {v} is out of range"))
}

struct ContainerRun {
    io: Arc<RunIo>,
    owner: Arc<ContainerdContainers>,
    id: String,
    cgroups_path: String,
    log: Output,
    pump: Option<Pump>,
    _fifos: Fifos,
    exit: Option<Exit>,
}

/// The runtime handle given to the lifecycle: an `Arc` so runs can reach the table of
/// running processes.
pub struct ContainerdRuntime(pub Arc<ContainerdContainers>);

#[async_trait]
impl Runtime for ContainerdRuntime {
    fn name(&self) -> &'static str {
        "containerd"
    }

    async fn needs_network(&self, _image: &PulledImage) -> Result<bool, RuntimeError> {
        Ok(true)
    }

    fn check(&self, image: &PulledImage, meta: &RunMeta) -> Result<(), RuntimeError> {
        self.admits(image, meta).map_err(RuntimeError::config)
    }

    async fn start(
        &self,
        image: &PulledImage,
        spec: ContainerSpec,
    ) -> Result<Box<dyn Running>, RuntimeError> {
        self.start_run(image, spec)
            .await
            .map_err(RuntimeError::create)
    }
}

impl ContainerdRuntime {
    fn admits(&self, image: &PulledImage, meta: &RunMeta) -> Result<(), String> {
        // Not a container image: `start` says so.
        let Some(ci) = image.container() else {
            return Ok(());
        };
        // An imported image's config is already parsed; only a first start reads it.
        let imported = lock(&self.0.imported).get(&ci.manifest.digest).cloned();
        let user = match imported {
            Some(done) => done.config.user.clone(),
            None => image_config(ci)?.user,
        };
        admit(meta, &image_user(user.as_deref()), self.0.allow_privileged).map(|_| ())
    }

    async fn start_run(
        &self,
        image: &PulledImage,
        spec: ContainerSpec,
    ) -> Result<Box<dyn Running>, String> {
        let me = &self.0;
        let ci = image
            .container()
            .ok_or_else(|| format!("image {:?} is not a container image", image.image))?;
        let sec = &spec.meta.security;
        let imported = me.import(image, ci).await?;
        let cfg = &imported.config;
        let user = image_user(cfg.user.as_deref());
        // The lifecycle has asked `check` already; this is the gate for every caller.
        let seccomp = admit(&spec.meta, &user, me.allow_privileged)?;
        let argv = argv(cfg, spec.meta.command.as_ref(), spec.meta.args.as_ref());
        if argv.is_empty() {
            return Err(format!(
                "no command to run: the container gives none and image {:?} has no entrypoint or cmd",
                image.image
            ));
        }
        let (img_uid, img_gid) = match user {
            ImageUser::Id(uid, gid) => (uid, gid),
            ImageUser::Name(name) => {
                tracing::warn!(user = name, "image user is a name; running as uid 0");
                (0, None)
            }
        };
        let uid = match sec.run_as_user {
            Some(u) => id_u32(u, "runAsUser")?,
            None => img_uid,
        };
        let gid = match sec.run_as_group {
            Some(g) => id_u32(g, "runAsGroup")?,
            None => img_gid.unwrap_or(0),
        };
        // The primary group first, then supplementalGroups, as containerd's CRI gives
        // them (its ensureAdditionalGids), so the process's group list (`id`,
        // getgroups) is the one it would have on Kubernetes.
        let mut additional_gids = vec![gid];
        for g in &sec.supplemental_groups {
            let g = id_u32(*g, "supplementalGroups")?;
            if !additional_gids.contains(&g) {
                additional_gids.push(g);
            }
        }
        let process = ProcessSpec {
            args: argv,
            env: merge_env(cfg.env.as_deref().unwrap_or_default(), &spec.env),
            cwd: spec
                .working_dir
                .clone()
                .or(cfg.working_dir.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            uid,
            gid,
            additional_gids,
            terminal: spec.meta.tty,
            cap_add: sec.cap_add.clone(),
            cap_drop: sec.cap_drop.clone(),
            privileged: sec.privileged,
            // no_new_privs unless escalation is asked for (or the container is
            // privileged and does not refuse it): setuid binaries and file
            // capabilities then give nothing beyond what the container starts with.
            no_new_privileges: !sec.allow_privilege_escalation.unwrap_or(sec.privileged),
        };
        let netns = spec
            .net
            .as_ref()
            .and_then(|n| n.sandbox.as_ref())
            .map(|s| s.netns_path.clone());
        let mut binds: Vec<Bind> = spec
            .mounts
            .iter()
            .map(|m| Bind {
                source: m.host.clone(),
                destination: m.guest.clone(),
                read_only: m.read_only,
            })
            .collect();
        let ip = spec.net.as_ref().map(|n| n.ip);
        binds.extend(etc_binds(&spec, ip)?);
        let cgroups_path = format!("/spindle/{}", spec.meta.id);
        let oci = spindle_containerd::spec::ContainerSpec {
            process: process.clone(),
            hostname: spec.meta.hostname.clone(),
            netns,
            binds,
            memory_limit: spec.memory_limit,
            cpu_millis: spec.cpu_millis,
            cpu_request_millis: spec.meta.cpu_request_millis,
            read_only_root: sec.read_only_root,
            cgroups_path: cgroups_path.clone(),
            seccomp,
        };
        let bytes = spec::build(&oci).map_err(|e| e.to_string())?;
        let id = spec.meta.id.clone();
        // A run with this ID left over from a crash of the agent mid-start.
        let _ = me.ctr.remove(&id).await;
        let fifos = Fifos::create(&me.io_dir.join(&id), spec.meta.stdin, spec.meta.tty)
            .map_err(|e| e.to_string())?;
        let run_io = Arc::new(RunIo {
            process,
            sinks: Mutex::new(Vec::new()),
            stdin: tokio::sync::Mutex::new(None),
            stdin_once: spec.meta.stdin_once,
            exited: watch::channel(None).0,
        });
        let log = spec.log.clone();
        let fan = run_io.clone();
        let pump = fifos
            .pump(Arc::new(move |is_err, data: Vec<u8>| {
                let stream = stream_of(is_err);
                let data = Bytes::from(data);
                let wait = log.write(stream, data.clone());
                // Attached clients never hold up the log: their sinks are over at once
                // (stream.rs cuts an attach client that falls behind).
                for (_, sink) in lock(&fan.sinks).iter() {
                    let _ = sink(stream, data.clone()).now_or_never();
                }
                match wait {
                    Some(w) => w,
                    None => crate::runtime::no_wait(),
                }
            }))
            .map_err(|e| e.to_string())?;
        let started = me
            .ctr
            .run(RunSpec {
                id: &id,
                image: &image.resolved,
                chain_id: &imported.chain,
                spec: bytes,
                fifos: &fifos,
                terminal: spec.meta.tty,
            })
            .await;
        if let Err(e) = started {
            let _ = me.ctr.remove(&id).await;
            return Err(e.to_string());
        }
        *run_io.stdin.lock().await = fifos.stdin_writer().map_err(|e| e.to_string())?;
        lock(&me.runs).insert(id.clone(), run_io.clone());
        Ok(Box::new(ContainerRun {
            io: run_io,
            owner: me.clone(),
            id,
            cgroups_path,
            log: spec.log,
            pump: Some(pump),
            _fifos: fifos,
            exit: None,
        }))
    }
}

#[async_trait]
impl Running for ContainerRun {
    async fn wait(&mut self) -> Exit {
        if let Some(e) = &self.exit {
            return e.clone();
        }
        let waited = self.owner.ctr.wait(&self.id, "").await;
        let ooms = spindle_containerd::oom_kills(&self.cgroups_path);
        if let Some(p) = self.pump.take() {
            p.finish().await;
        }
        self.log.close();
        // While the agent stops, its shutdown removes every container itself.
        if !self.owner.closing.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(e) = self.owner.ctr.remove(&self.id).await {
                tracing::warn!(container = %self.id, error = %e, "removing a finished container");
            }
        }
        let exit = match waited {
            Ok(e) => {
                let code = e.status as i32;
                let reason = if ooms > 0 {
                    ExitReason::OOMKilled
                } else if code == 0 {
                    ExitReason::Completed
                } else {
                    ExitReason::Error
                };
                Exit {
                    code,
                    reason,
                    message: None,
                }
            }
            Err(e) => Exit {
                code: 255,
                reason: ExitReason::Error,
                message: Some(format!("lost the container: {e}")),
            },
        };
        lock(&self.owner.runs).remove(&self.id);
        self.io.stdin.lock().await.take();
        let _ = self.io.exited.send(Some(exit.code));
        self.exit = Some(exit.clone());
        exit
    }

    /// SIGTERM to the container's main process, as the kubelet does.
    fn stop(&self) {
        let (ctr, id) = (self.owner.ctr.clone(), self.id.clone());
        tokio::spawn(async move {
            let _ = ctr.kill(&id, "", libc::SIGTERM, false).await;
        });
    }

    fn kill(&self) {
        let (ctr, id) = (self.owner.ctr.clone(), self.id.clone());
        tokio::spawn(async move {
            let _ = ctr.kill(&id, "", libc::SIGKILL, true).await;
        });
    }

    fn console(&self) -> Arc<dyn Console> {
        Arc::new(ContainerConsole {
            owner: self.owner.clone(),
            id: self.id.clone(),
        })
    }

    fn meter(&self) -> Arc<dyn Meter> {
        Arc::new(CgroupMeter(self.cgroups_path.clone()))
    }
}

/// A container's usage as its cgroup counts it.
struct CgroupMeter(String);

impl Meter for CgroupMeter {
    fn sample(&self) -> Option<Usage> {
        let u = spindle_containerd::cgroup::usage(&self.0)?;
        Some(Usage {
            cpu: u.cpu,
            memory_usage: u.memory_usage,
            working_set: u.working_set,
        })
    }
}

/// Execs and attaches of a container under containerd: processes in the running
/// container (its namespaces and cgroup), and its own stdio.
struct ContainerConsole {
    owner: Arc<ContainerdContainers>,
    id: String,
}

#[async_trait]
impl Console for ContainerConsole {
    async fn exec(
        &self,
        argv: Vec<String>,
        io: ExecIo,
        timeout: Option<Duration>,
        _spec: SpecFuture<'_>,
    ) -> Result<i32, RuntimeError> {
        self.owner
            .exec(&self.id, argv, io, timeout)
            .await
            .map_err(RuntimeError::create)
    }

    async fn attach(&self, io: ExecIo) -> Result<i32, RuntimeError> {
        self.owner
            .attach(&self.id, io)
            .await
            .map_err(RuntimeError::create)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entry: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        let v = |x: Option<&[&str]>| x.map(|a| a.iter().map(|s| s.to_string()).collect());
        ImageConfig {
            entrypoint: v(entry),
            cmd: v(cmd),
            ..Default::default()
        }
    }

    fn s(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let c = cfg(Some(&["/entry"]), Some(&["--default"]));
        assert_eq!(argv(&c, None, None), s(&["/entry", "--default"]));
        assert_eq!(argv(&c, None, Some(&s(&["x"]))), s(&["/entry", "x"]));
        assert_eq!(argv(&c, Some(&s(&["/bin/sh"])), None), s(&["/bin/sh"]));
        assert_eq!(
            argv(&c, Some(&s(&["/bin/sh"])), Some(&s(&["-c", "true"]))),
            s(&["/bin/sh", "-c", "true"])
        );
        assert!(argv(&cfg(None, None), None, None).is_empty());
    }

    #[test]
    fn pod_env_wins() {
        let merged = merge_env(
            &s(&["PATH=/bin", "A=image"]),
            &[("A".into(), "pod".into()), ("B".into(), "x=y".into())],
        );
        assert_eq!(merged, s(&["PATH=/bin", "A=pod", "B=x=y"]));
    }

    #[test]
    fn numeric_image_users() {
        assert_eq!(image_user(Some("1000:50")), ImageUser::Id(1000, Some(50)));
        assert_eq!(image_user(Some("65534")), ImageUser::Id(65534, None));
        assert_eq!(image_user(Some("nobody")), ImageUser::Name("nobody"));
        assert_eq!(image_user(Some("app:app")), ImageUser::Name("app"));
        assert_eq!(image_user(None), ImageUser::Id(0, None));
    }

    #[test]
    fn hosts_name_a_pod_with_a_subdomain_by_its_full_name() {
        let ip = Some("10.42.0.7".parse().expect("ip"));
        let domain = Some("nginx.default.svc.cluster.local");
        let own = |text: String| text.lines().last().unwrap_or_default().to_string();
        assert_eq!(
            own(hosts_file("web-0", domain, ip)),
            "10.42.0.7\tweb-0.nginx.default.svc.cluster.local\tweb-0"
        );
        assert_eq!(own(hosts_file("web-0", None, ip)), "10.42.0.7\tweb-0");
        assert!(!hosts_file("web-0", domain, None).contains("web-0"));
    }

    fn meta(security: Security) -> RunMeta {
        RunMeta {
            pod: "web_ns(u1)".into(),
            container: "main".into(),
            security,
            ..Default::default()
        }
    }

    #[test]
    fn run_as_non_root_follows_the_kubelet() {
        let non_root = |run_as_user| {
            meta(Security {
                run_as_non_root: Some(true),
                run_as_user,
                ..Default::default()
            })
        };
        let root = ImageUser::Id(0, None);
        let err = admit(&non_root(None), &root, false).expect_err("root image");
        assert_eq!(
            err,
            r#"container has runAsNonRoot and image will run as root (pod: "web_ns(u1)", container: main)"#
        );
        let err = admit(&non_root(None), &ImageUser::Name("app"), false).expect_err("name");
        assert_eq!(
            err,
            r#"container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: "web_ns(u1)", container: main)"#
        );
        let err = admit(&non_root(Some(0)), &ImageUser::Id(1000, None), false).expect_err("0");
        assert!(
            err.starts_with("container's runAsUser breaks non-root policy"),
            "{err}"
        );
        assert!(admit(&non_root(Some(1000)), &root, false).is_ok());
        assert!(admit(&non_root(None), &ImageUser::Id(1000, None), false).is_ok());
        assert!(admit(&meta(Security::default()), &root, false).is_ok());
    }

    #[test]
    fn privileges_need_the_flag() {
        let root = ImageUser::Id(0, None);
        let caps = |add: &[&str]| {
            meta(Security {
                cap_add: s(add),
                ..Default::default()
            })
        };
        for add in [
            &["SYS_ADMIN"][..],
            &["ALL"],
            &["CAP_SYS_MODULE"],
            &["dac_read_search"],
        ] {
            let err = admit(&caps(add), &root, false).expect_err("dangerous cap");
            assert!(err.contains("--allow-privileged"), "{err}");
            assert!(admit(&caps(add), &root, true).is_ok());
        }
        assert_eq!(
            admit(&caps(&["NET_BIND_SERVICE", "IPC_LOCK"]), &root, false),
            Ok(Seccomp::RuntimeDefault)
        );
        let privileged = meta(Security {
            privileged: true,
            ..Default::default()
        });
        assert!(admit(&privileged, &root, false).is_err());
        assert_eq!(admit(&privileged, &root, true), Ok(Seccomp::Unconfined));
        let profile = |t: &str| {
            meta(Security {
                seccomp_profile: Some(t.into()),
                ..Default::default()
            })
        };
        assert_eq!(
            admit(&profile("RuntimeDefault"), &root, false),
            Ok(Seccomp::RuntimeDefault)
        );
        assert!(admit(&profile("Unconfined"), &root, false).is_err());
        assert_eq!(
            admit(&profile("Unconfined"), &root, true),
            Ok(Seccomp::Unconfined)
        );
        let err = admit(&profile("Localhost"), &root, true).expect_err("localhost");
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn resolv_conf_is_a_copy_of_the_nodes() {
        let dir = tempfile::tempdir().expect("tmp");
        let host = dir.path().join("host-resolv.conf");
        std::fs::write(&host, "nameserver 192.0.2.1\n").expect("write");
        let pod = dir.path().join("pod");
        std::fs::create_dir(&pod).expect("mkdir");
        let copy = host_resolv_copy(&pod, &host).expect("copy");
        assert_eq!(copy, pod.join("resolv.conf"));
        assert_eq!(
            std::fs::read(&copy).expect("read"),
            b"nameserver 192.0.2.1\n"
        );
        // A container's edit stays in the pod's copy; the node's file is untouched.
        std::fs::write(&copy, "nameserver 203.0.113.53\n").expect("edit");
        assert_eq!(host_resolv_copy(&pod, &host).expect("again"), copy);
        assert_eq!(
            std::fs::read(&host).expect("read"),
            b"nameserver 192.0.2.1\n"
        );
        assert_eq!(
            std::fs::read(&copy).expect("read"),
            b"nameserver 203.0.113.53\n"
        );
    }
}
