//! The seam between the pod lifecycle and the things that run containers: one [`Runtime`]
//! per container kind. The lifecycle pulls the image, builds a [`ContainerSpec`] (argv, env,
//! mounts, log, limits) and hands both to the runtime the image calls for; the runtime
//! gives back a [`Running`] container to wait on and stop. Wasm runs in-process through
//! `spindle-wasm` (`wasm.rs`); containers run through containerd (`crate::containers`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use spindle_image::PulledImage;
use spindle_logs::{LogWriter, Stream};

use crate::paths::PodPaths;
use crate::podnet::PodNet;
pub use crate::reason::{ExitReason, RuntimeError};

mod wasm;
pub use wasm::WasmContainers;

/// A directory of the pod mounted into a container.
#[derive(Clone, Debug)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// Everything a runtime needs to start one run of one container.
pub struct ContainerSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    pub log: Output,
    pub memory_limit: Option<u64>,
    pub cpu_millis: Option<u64>,
    /// The container's declared TCP ports (an HTTP component is served on the first).
    pub ports: Vec<u16>,
    /// The pod's network; `None` when the container cannot use one.
    pub net: Option<Arc<PodNet>>,
    /// stdin of the run (exec with `-i`); `None` is empty.
    pub stdin: Option<spindle_wasm::Stdin>,
    /// Run the program as a command even if it could be served (an exec).
    pub as_command: bool,
    /// What containers need beyond the Wasm view above.
    pub meta: RunMeta,
}

/// Who a run belongs to, and the parts of the pod spec only containers use.
#[derive(Clone, Debug, Default)]
pub struct RunMeta {
    /// Unique per pod, container and run (64 hex digits).
    pub id: String,
    pub hostname: String,
    /// The pod's domain when it has a `subdomain` (`<subdomain>.<namespace>.svc.<cluster
    /// domain>`): /etc/hosts then names the pod by its full name too, as the kubelet's.
    pub domain: Option<String>,
    /// The pod's directory (its /etc files and resolv.conf).
    pub paths: PodPaths,
    /// The pod as the kubelet names it in messages (`name_namespace(uid)`) and the
    /// container's name.
    pub pod: String,
    pub container: String,
    /// `command` and `args` as the pod gives them (expanded); a container image's
    /// entrypoint and cmd fill in what is missing.
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub security: Security,
    pub cpu_request_millis: Option<u64>,
    pub host_network: bool,
    /// `tty: true` on the container.
    pub tty: bool,
    /// `stdin: true` (a stdin kept open for `kubectl attach -i`) and `stdinOnce`.
    pub stdin: bool,
    pub stdin_once: bool,
}

/// The container's and pod's securityContext, merged (the container's wins).
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    pub read_only_root: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub allow_privilege_escalation: Option<bool>,
    pub run_as_non_root: Option<bool>,
    /// `seccompProfile.type` (RuntimeDefault, Unconfined, Localhost) if given.
    pub seccomp_profile: Option<String>,
}

impl Security {
    pub fn of(
        pod: &k8s_openapi::api::core::v1::Pod,
        c: &k8s_openapi::api::core::v1::Container,
    ) -> Security {
        let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let sc = c.security_context.as_ref();
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        Security {
            run_as_user: sc
                .and_then(|s| s.run_as_user)
                .or_else(|| psc.and_then(|p| p.run_as_user)),
            run_as_group: sc
                .and_then(|s| s.run_as_group)
                .or_else(|| psc.and_then(|p| p.run_as_group)),
            supplemental_groups: psc
                .and_then(|p| p.supplemental_groups.clone())
                .unwrap_or_default(),
            read_only_root: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
            cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
            cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
            privileged: sc.and_then(|s| s.privileged) == Some(true),
            allow_privilege_escalation: sc.and_then(|s| s.allow_privilege_escalation),
            run_as_non_root: sc
                .and_then(|s| s.run_as_non_root)
                .or_else(|| psc.and_then(|p| p.run_as_non_root)),
            seccomp_profile: sc
                .and_then(|s| s.seccomp_profile.as_ref())
                .or_else(|| psc.and_then(|p| p.seccomp_profile.as_ref()))
                .map(|p| p.type_.clone()),
        }
    }
}

/// Receives a run's output as it is written. The writer waits for the returned future
/// before it writes more: an exec's client that reads slowly slows the command down, as
/// a full pipe blocks a process's write, instead of its output piling up in memory.
pub type OutputFn = Arc<dyn Fn(Stream, Bytes) -> OutputWait + Send + Sync>;

/// See [`OutputFn`].
pub type OutputWait = spindle_wasm::OutputWait;

/// An [`OutputWait`] that is over.
pub fn no_wait() -> OutputWait {
    Box::pin(std::future::ready(()))
}

/// Where a run's stdout and stderr go.
#[derive(Clone)]
pub enum Output {
    /// The container's log file.
    Log(LogWriter),
    /// An exec's streams.
    Stream(OutputFn),
}

impl Output {
    /// Writes `data`; what comes back must be awaited before writing more.
    pub fn write(&self, stream: Stream, data: Bytes) -> Option<OutputWait> {
        match self {
            Output::Log(l) => {
                l.write(stream, &data);
                None
            }
            Output::Stream(f) => Some(f(stream, data)),
        }
    }

    pub fn close(&self) {
        if let Output::Log(l) = self {
            l.close();
        }
    }

    /// Output nobody reads.
    pub fn discard() -> Output {
        Output::Stream(Arc::new(|_, _| no_wait()))
    }
}

/// Where an HTTP component listens when its container declares no port: `wasmtime
/// serve`'s default.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// How a run ended, in the terms of a container status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub reason: ExitReason,
    pub message: Option<String>,
}

#[async_trait]
pub trait Runtime: Send + Sync {
    /// The name the node advertises in `spindle.dev/runtimes`.
    fn name(&self) -> &'static str;
    /// Whether a run of this image can use a network (and so needs the pod's sandbox).
    async fn needs_network(&self, image: &PulledImage) -> Result<bool, RuntimeError>;
    /// Whether this node may run the container as configured (privileges, user),
    /// checked before a run starts; a refusal is a CreateContainerConfigError, as the
    /// kubelet reports a `runAsNonRoot` violation. `start` checks again.
    fn check(&self, _image: &PulledImage, _meta: &RunMeta) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Start a run.
    async fn start(
        &self,
        image: &PulledImage,
        spec: ContainerSpec,
    ) -> Result<Box<dyn Running>, RuntimeError>;
}

#[async_trait]
pub trait Running: Send + Sync {
    /// Wait for the run to end; may be called again after it returned.
    async fn wait(&mut self) -> Exit;
    /// Ask the run to end now (SIGTERM's place); `kill` follows after the grace period.
    fn stop(&self);
    fn kill(&self);
    /// What execs and attaches reach while this run lives.
    fn console(&self) -> Arc<dyn Console>;
    /// What reads the run's CPU time and memory, for the node's resource metrics.
    fn meter(&self) -> Arc<dyn Meter>;
}

/// One reading of what a run uses: CPU time since it started, memory in use, and its
/// working set (memory in use that the kernel could not take back; a Wasm guest's linear
/// memories and tables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu: Duration,
    pub memory_usage: u64,
    pub working_set: u64,
}

/// Reads a run's [`Usage`]: from the Wasm runtime's own accounting, or the container's
/// cgroup.
pub trait Meter: Send + Sync {
    /// `None` once there is nothing left to read (the cgroup is gone).
    fn sample(&self) -> Option<Usage>;
}

/// The I/O of an exec or attach: stdin (if any) and where stdout and stderr go.
pub struct ExecIo {
    pub stdin: Option<spindle_wasm::Stdin>,
    pub output: OutputFn,
    /// A terminal (containers only; WASI has none).
    pub tty: bool,
    /// Terminal sizes (columns, rows) from the client.
    pub resize: Option<tokio::sync::mpsc::UnboundedReceiver<(u16, u16)>>,
}

/// The container's spec as it runs now (environment, mounts, network, limits), built
/// only for a runtime that runs an exec as a new instance of the program.
pub type SpecFuture<'a> = BoxFuture<'a, Result<ContainerSpec, RuntimeError>>;

/// A running container as `kubectl exec` and `kubectl attach` (and exec probes) reach
/// it.
#[async_trait]
pub trait Console: Send + Sync {
    /// Runs `argv` in the container and returns its exit code. `spec` is awaited only by
    /// runtimes that need it (Wasm). With a `timeout`, a command still going after it is
    /// killed and reported as an error.
    async fn exec(
        &self,
        argv: Vec<String>,
        io: ExecIo,
        timeout: Option<Duration>,
        spec: SpecFuture<'_>,
    ) -> Result<i32, RuntimeError>;
    /// Connects to the container's own stdio until it ends; returns its exit code.
    async fn attach(&self, io: ExecIo) -> Result<i32, RuntimeError>;
}

/// The error of a command that outlived its exec's timeout.
pub fn timed_out(t: Duration) -> RuntimeError {
    RuntimeError::create(format!("command timed out after {}s", t.as_secs()))
}
