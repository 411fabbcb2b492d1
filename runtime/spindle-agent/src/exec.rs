//! Exec into a container. For a Wasm container: a new instance of the container's
//! program with argv = the exec command, the container's environment, volumes, limits
//! and the pod's network, its stdin and stdout/stderr connected to the caller. For a
//! container under containerd: a process in the running container (its namespaces and
//! cgroup), with a TTY when asked. `kubectl exec` and exec probes both come here.

use std::sync::Arc;
use std::time::Duration;

use crate::env::{self, Sources};
use crate::lifecycle::{self, PodHandle};
use crate::runtime::{ContainerSpec, Output, OutputFn, Runtime};
use crate::{volumes, Agent};

/// Why an exec could not run; the message is for the user.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No such container in the pod (404).
    #[error("container {0} is not valid for pod {1}")]
    NoContainer(String, String),
    /// The container is not running (400).
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("{0}")]
    Failed(String),
}

/// The exec's I/O: stdin (if any) and where stdout and stderr go.
pub struct ExecIo {
    pub stdin: Option<spindle_wasm::Stdin>,
    pub output: OutputFn,
    /// A terminal (containers only; WASI has none).
    pub tty: bool,
    /// Terminal sizes (columns, rows) from the client.
    pub resize: Option<tokio::sync::mpsc::UnboundedReceiver<(u16, u16)>>,
}

/// `kubectl exec` or `kubectl attach`, as the request says.
pub async fn exec_or_attach(
    agent: &Arc<Agent>,
    h: &Arc<PodHandle>,
    container: &str,
    req: &crate::stream::ExecRequest,
    io: ExecIo,
) -> Result<i32, ExecError> {
    if !req.attach {
        return exec(agent, h, container, req.command.clone(), io, None).await;
    }
    let running_id = running_container_id(h, container)?;
    let (Some(id), Some(ctrs)) = (
        running_id.strip_prefix("containerd://"),
        agent.containers.as_ref(),
    ) else {
        return Err(ExecError::Failed(format!(
            "container {container} is a Wasm container: WASI has no console to attach to (use kubectl logs -f, or kubectl exec)"
        )));
    };
    ctrs.attach(id, io.into_streams())
        .await
        .map_err(ExecError::Failed)
}

/// The status ID (`<runtime>://<id>`) of the running container `container`.
fn running_container_id(h: &PodHandle, container: &str) -> Result<String, ExecError> {
    h.shared()
        .containers
        .iter()
        .find(|s| s.name == container && s.is_running())
        .map(|s| s.container_id.clone().unwrap_or_default())
        .ok_or_else(|| ExecError::NotRunning(container.into()))
}

impl ExecIo {
    /// The streams of a process in a container under containerd.
    fn into_streams(self) -> crate::containers::ExecStreams {
        crate::containers::ExecStreams {
            stdin: self
                .stdin
                .map(|s| s.reader() as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            output: self.output,
            tty: self.tty,
            resize: self.resize,
        }
    }
}

/// Runs `argv` in container `container` of the pod and returns its exit code. With a
/// `timeout`, a run still going after it is killed and reported as an error.
pub async fn exec(
    agent: &Arc<Agent>,
    h: &Arc<PodHandle>,
    container: &str,
    argv: Vec<String>,
    io: ExecIo,
    timeout: Option<Duration>,
) -> Result<i32, ExecError> {
    let pod = h.pod();
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(c) = spec
        .containers
        .iter()
        .find(|c| c.name == container)
        .cloned()
    else {
        return Err(ExecError::NoContainer(container.into(), h.name.clone()));
    };
    let running_id = running_container_id(h, container)?;
    if argv.is_empty() {
        return Err(ExecError::Failed("no command given".into()));
    }
    if let Some(id) = running_id.strip_prefix("containerd://") {
        let Some(ctrs) = &agent.containers else {
            return Err(ExecError::Failed("this node has no containerd".into()));
        };
        return ctrs
            .exec(id, argv, io.into_streams(), timeout)
            .await
            .map_err(ExecError::Failed);
    }
    let image_name = c.image.clone().unwrap_or_default();
    let img = agent.images.cached(&image_name).ok_or_else(|| {
        ExecError::Failed(format!("image {image_name} is no longer on this node"))
    })?;
    let vols = h
        .vols
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| ExecError::Failed("the pod's volumes are not ready".into()))?;
    let net = h.net.lock().await.clone();
    let pod_ip = h.shared().pod_ip.clone().unwrap_or_default();
    let host_ip = agent.node_ip.to_string();
    let mut src = Sources::new(agent.client.clone(), &h.namespace);
    let env_vars = env::build(&pod, &c, &mut src, &pod_ip, &host_ip)
        .await
        .map_err(|e| ExecError::Failed(e.0))?;
    let mounts = volumes::container_mounts(&pod, &c, &vols).map_err(|e| ExecError::Failed(e.0))?;
    let (memory_limit, cpu_millis) = lifecycle::limits(&c);
    let runtime: &dyn Runtime = agent.wasm.as_ref();
    let spec = ContainerSpec {
        meta: Default::default(),
        argv,
        env: env_vars,
        working_dir: c.working_dir.clone(),
        mounts,
        log: Output::Stream(io.output),
        memory_limit,
        cpu_millis,
        ports: Vec::new(),
        net,
        stdin: io.stdin,
        as_command: true,
    };
    let mut run = runtime.start(&img, spec).await.map_err(ExecError::Failed)?;
    let exit = match timeout {
        None => run.wait().await,
        Some(t) => match tokio::time::timeout(t, run.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                run.kill();
                run.wait().await;
                return Err(ExecError::Failed(format!(
                    "command timed out after {}s",
                    t.as_secs()
                )));
            }
        },
    };
    if exit.code != 0 {
        if let Some(m) = exit.message.filter(|m| !m.is_empty()) {
            tracing::debug!(pod = %h.name, container, code = exit.code, message = %m, "exec ended");
        }
    }
    Ok(exit.code)
}

/// An exec probe's runner for container `container`: its output (both streams) and exit
/// code.
pub fn for_probes(
    agent: &Arc<Agent>,
    h: &Arc<PodHandle>,
    container: &str,
) -> crate::probes::ExecFn {
    let (agent, h, container) = (agent.clone(), h.clone(), container.to_string());
    Arc::new(move |argv, timeout| {
        let (agent, h, container) = (agent.clone(), h.clone(), container.clone());
        Box::pin(async move {
            let out = Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = out.clone();
            let io = ExecIo {
                tty: false,
                resize: None,
                stdin: None,
                output: Arc::new(move |_, data: bytes::Bytes| {
                    let mut buf = sink.lock().unwrap_or_else(|p| p.into_inner());
                    // The kubelet keeps the first 10 KiB of a probe's output.
                    let room = (10usize << 10).saturating_sub(buf.len());
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                    crate::runtime::no_wait()
                }),
            };
            let code = exec(&agent, &h, &container, argv, io, Some(timeout))
                .await
                .map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.lock().unwrap_or_else(|p| p.into_inner()))
                .into_owned();
            Ok((code, text))
        })
    })
}
