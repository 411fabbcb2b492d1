//! Exec into and attach to a running container, through its run's [`Console`]: each
//! runtime decides what an exec is (Wasm: a new instance of the container's program with
//! its environment, volumes, limits and the pod's network; containerd: a process in the
//! running container). `kubectl exec`, `kubectl attach` and exec probes all come here.

use std::sync::Arc;
use std::time::Duration;

use crate::lifecycle::{spec, PodHandle};
pub use crate::runtime::ExecIo;
use crate::runtime::{Console, SpecFuture};
use crate::Agent;

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

impl From<crate::runtime::RuntimeError> for ExecError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        ExecError::Failed(e.message)
    }
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
    Ok(console(h, container)?.attach(io).await?)
}

/// The console of the running container `container`.
fn console(h: &PodHandle, container: &str) -> Result<Arc<dyn Console>, ExecError> {
    let sh = h.shared();
    let running = sh
        .containers
        .iter()
        .any(|s| s.name == container && s.is_running());
    running
        .then(|| sh.consoles.get(container).cloned())
        .flatten()
        .ok_or_else(|| ExecError::NotRunning(container.into()))
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
    let Some(c) = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .cloned()
    else {
        return Err(ExecError::NoContainer(container.into(), h.name.clone()));
    };
    let console = console(h, container)?;
    if argv.is_empty() {
        return Err(ExecError::Failed("no command given".into()));
    }
    let spec: SpecFuture<'_> = Box::pin(spec::for_exec(agent, h, &c));
    Ok(console.exec(argv, io, timeout, spec).await?)
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
