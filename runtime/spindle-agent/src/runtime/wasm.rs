//! The Wasm [`Runtime`]: one wasmtime engine for the node, a container's program loaded
//! once per digest, each run an instance (or an HTTP server of a `wasi:http` component),
//! each exec a new instance of the same program.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use spindle_image::PulledImage;
use spindle_logs::Stream;

use super::{
    timed_out, Console, ContainerSpec, ExecIo, Exit, ExitReason, Meter, Output, OutputWait,
    RunMeta, Running, Runtime, RuntimeError, SpecFuture, Usage, DEFAULT_HTTP_PORT,
};

/// Wasm containers: one wasmtime engine for the node, modules compiled once per digest.
#[derive(Clone)]
pub struct WasmContainers {
    rt: spindle_wasm::WasmRuntime,
}

impl WasmContainers {
    /// Modules are precompiled into `cache_dir`.
    pub fn new(cache_dir: &Path) -> anyhow::Result<Self> {
        raise_map_count();
        let cfg = spindle_wasm::RuntimeConfig {
            cache_dir: cache_dir.to_path_buf(),
            ..Default::default()
        };
        let rt = spindle_wasm::WasmRuntime::new(cfg).context("starting the Wasm runtime")?;
        Ok(WasmContainers { rt })
    }

    pub fn runtime(&self) -> &spindle_wasm::WasmRuntime {
        &self.rt
    }

    async fn load(&self, image: &PulledImage) -> Result<spindle_wasm::Program, RuntimeError> {
        let wasm = image.wasm().ok_or_else(|| {
            RuntimeError::create(format!("image {:?} is not a Wasm artifact", image.image))
        })?;
        self.rt
            .load(&wasm.digest, &wasm.path)
            .await
            .map_err(|e| RuntimeError::create(e.to_string()))
    }
}

/// Each live Wasm instance costs a few memory mappings, and Linux's default
/// vm.max_map_count (65530) caps a node near 12,000 instances. As the kubelet tunes the
/// kernel settings it depends on, the agent raises the cap when it may (as root).
const WANTED_MAP_COUNT: u64 = 262_144;

fn raise_map_count() {
    let path = "/proc/sys/vm/max_map_count";
    let current = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(n) = current.filter(|n| *n < WANTED_MAP_COUNT) {
        match std::fs::write(path, WANTED_MAP_COUNT.to_string()) {
            Ok(()) => tracing::info!(
                from = n,
                to = WANTED_MAP_COUNT,
                "raised vm.max_map_count for Wasm density"
            ),
            Err(e) => {
                tracing::warn!(current = n, error = %e, "could not raise vm.max_map_count; Wasm pods per node are capped lower")
            }
        }
    }
}

struct Sink {
    log: Output,
    stream: Stream,
}

impl spindle_wasm::OutputSink for Sink {
    fn write(&self, data: &[u8]) {
        // The runtime's own lines (an HTTP server's request errors). The data is taken
        // either way; only the back-pressure is skipped, since blocking here would block
        // one of the runtime's threads.
        let _ = self.write_or_wait(Bytes::copy_from_slice(data));
    }

    fn write_or_wait(&self, data: Bytes) -> Option<OutputWait> {
        self.log.write(self.stream, data)
    }
}

/// A run is an instance of a command, or an HTTP server of a `wasi:http` component.
enum Run {
    Command(spindle_wasm::Instance),
    Http(spindle_wasm::HttpServer),
}

struct WasmRun {
    run: Run,
    log: Output,
    console: Arc<WasmConsole>,
}

/// An exec into a Wasm container is a new instance of its program (WASI has no way
/// into a running instance); attach has nothing to reach.
struct WasmConsole {
    containers: WasmContainers,
    image: PulledImage,
    container: String,
}

#[async_trait]
impl Runtime for WasmContainers {
    fn name(&self) -> &'static str {
        "wasm"
    }

    async fn needs_network(&self, image: &PulledImage) -> Result<bool, RuntimeError> {
        let program = self.load(image).await?;
        // WASI p1 has no sockets.
        Ok(program.kind() != spindle_wasm::ProgramKind::Module)
    }

    async fn start(
        &self,
        image: &PulledImage,
        spec: ContainerSpec,
    ) -> Result<Box<dyn Running>, RuntimeError> {
        let program = self.load(image).await?;
        let log = spec.log.clone();
        let console = Arc::new(WasmConsole {
            containers: self.clone(),
            image: image.clone(),
            container: spec.meta.container.clone(),
        });
        let pod_network = spec.net.as_ref().and_then(|n| n.wasm());
        let serve = program.kind() == spindle_wasm::ProgramKind::HttpComponent && !spec.as_command;
        let listener = match (&spec.net, serve) {
            (Some(net), true) => {
                let port = spec.ports.first().copied().unwrap_or(DEFAULT_HTTP_PORT);
                Some(net.listen(port).map_err(|e| {
                    RuntimeError::create(format!("listening on port {port} in the pod: {e}"))
                })?)
            }
            _ => None,
        };
        let network = spec.net.is_some();
        let instance_spec = spindle_wasm::InstanceSpec {
            argv: spec.argv,
            env: spec.env,
            working_dir: spec.working_dir,
            preopens: spec
                .mounts
                .into_iter()
                .map(|m| spindle_wasm::Preopen {
                    host: m.host,
                    guest: m.guest,
                    read_only: m.read_only,
                })
                .collect(),
            stdout: Arc::new(Sink {
                log: spec.log.clone(),
                stream: Stream::Stdout,
            }),
            stderr: Arc::new(Sink {
                log: spec.log,
                stream: Stream::Stderr,
            }),
            memory_limit: spec.memory_limit,
            cpu_millis: spec.cpu_millis,
            network,
            pod_network,
            stdin: spec.stdin,
        };
        let run = match listener {
            Some(l) => Run::Http(
                self.rt
                    .serve_http(&program, instance_spec, l)
                    .map_err(|e| RuntimeError::create(e.to_string()))?,
            ),
            None => Run::Command(
                self.rt
                    .start(&program, instance_spec)
                    .map_err(|e| RuntimeError::create(e.to_string()))?,
            ),
        };
        Ok(Box::new(WasmRun { run, log, console }))
    }
}

#[async_trait]
impl Running for WasmRun {
    async fn wait(&mut self) -> Exit {
        let st = match &mut self.run {
            Run::Command(i) => i.wait().await,
            Run::Http(s) => s.wait().await,
        };
        self.log.close();
        let reason = match st.reason {
            spindle_wasm::ExitReason::Completed => ExitReason::Completed,
            spindle_wasm::ExitReason::OOMKilled => ExitReason::OOMKilled,
            spindle_wasm::ExitReason::Error | spindle_wasm::ExitReason::Killed => ExitReason::Error,
        };
        Exit {
            code: st.code,
            reason,
            message: st.message,
        }
    }

    /// WASI has no signals to ask a guest to shut down, so a stop is a kill: the guest
    /// ends at its next epoch check.
    fn stop(&self) {
        self.kill();
    }

    fn kill(&self) {
        match &self.run {
            Run::Command(i) => i.kill(),
            Run::Http(s) => s.stop(),
        }
    }

    fn console(&self) -> Arc<dyn Console> {
        self.console.clone()
    }

    fn meter(&self) -> Arc<dyn Meter> {
        Arc::new(WasmMeter(match &self.run {
            Run::Command(i) => i.usage(),
            Run::Http(s) => s.usage(),
        }))
    }
}

/// A guest's usage as the runtime accounts it: all of its memory is linear memories and
/// tables, all of it in use.
struct WasmMeter(spindle_wasm::Usage);

impl Meter for WasmMeter {
    fn sample(&self) -> Option<Usage> {
        let bytes = self.0.memory_bytes();
        Some(Usage {
            cpu: self.0.cpu_time(),
            memory_usage: bytes,
            working_set: bytes,
        })
    }
}

#[async_trait]
impl Console for WasmConsole {
    async fn exec(
        &self,
        argv: Vec<String>,
        io: ExecIo,
        timeout: Option<Duration>,
        spec: SpecFuture<'_>,
    ) -> Result<i32, RuntimeError> {
        let spec = ContainerSpec {
            argv,
            log: Output::Stream(io.output),
            stdin: io.stdin,
            as_command: true,
            ports: Vec::new(),
            meta: RunMeta::default(),
            ..spec.await?
        };
        let mut run = self.containers.start(&self.image, spec).await?;
        let exit = match timeout {
            None => run.wait().await,
            Some(t) => match tokio::time::timeout(t, run.wait()).await {
                Ok(exit) => exit,
                Err(_) => {
                    run.kill();
                    run.wait().await;
                    return Err(timed_out(t));
                }
            },
        };
        if exit.code != 0 {
            if let Some(m) = exit.message.filter(|m| !m.is_empty()) {
                tracing::debug!(container = %self.container, code = exit.code, message = %m, "exec ended");
            }
        }
        Ok(exit.code)
    }

    async fn attach(&self, _io: ExecIo) -> Result<i32, RuntimeError> {
        Err(RuntimeError::create(format!(
            "container {} is a Wasm container: WASI has no console to attach to (use kubectl logs -f, or kubectl exec)",
            self.container
        )))
    }
}
