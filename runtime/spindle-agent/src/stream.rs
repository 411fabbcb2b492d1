//! `kubectl exec`, `attach` and `port-forward` on the agent's streaming endpoint: the
//! routes find the pod and container, [`spindle_streaming`] speaks the wire protocols
//! (WebSocket or SPDY, chosen by the client), and this module connects a session to
//! the container through [`crate::exec`].

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use spindle_logs::Stream;
use spindle_streaming::remotecommand::{self, Output, Session, StdStream};
use spindle_streaming::{portforward, upgrade};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

pub use spindle_streaming::remotecommand::ExecRequest;

use crate::exec::{self, ExecIo};
use crate::lifecycle::PodHandle;
use crate::runtime::{no_wait, OutputFn};
use crate::server::{text, QueryPairs};
use crate::Agent;

type Target = (String, String, String);

/// `/exec/{namespace}/{pod}/{container}`.
pub async fn exec(
    State(agent): State<Arc<Agent>>,
    Path(target): Path<Target>,
    QueryPairs(q): QueryPairs,
    req: Request,
) -> Response {
    exec_route(agent, target, &q, req, false)
}

/// `/attach/{namespace}/{pod}/{container}`.
pub async fn attach(
    State(agent): State<Arc<Agent>>,
    Path(target): Path<Target>,
    QueryPairs(q): QueryPairs,
    req: Request,
) -> Response {
    exec_route(agent, target, &q, req, true)
}

fn exec_route(
    agent: Arc<Agent>,
    (ns, pod, container): Target,
    query: &[(String, String)],
    mut req: Request,
    attach: bool,
) -> Response {
    let Some(h) = agent.pods.find(&ns, &pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on this node"),
        );
    };
    let known = h
        .pod()
        .spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == container));
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container} is not valid for pod {pod}"),
        );
    }
    let mut exec_req = ExecRequest::from_query(query);
    exec_req.attach = attach;
    if !attach && exec_req.command.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container",
        );
    }
    let negotiated = match upgrade::negotiate(
        &mut req,
        remotecommand::WEBSOCKET_PROTOCOLS,
        remotecommand::SPDY_PROTOCOLS,
    ) {
        Ok(n) => n,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let resp = negotiated.response();
    tokio::spawn(async move {
        match remotecommand::accept(negotiated, &exec_req).await {
            Some(session) => run(agent, h, container, exec_req, session).await,
            None => tracing::debug!(pod = %h.name, "exec client left or did not open its streams"),
        }
    });
    resp
}

/// Runs the exec or attach of `req` with `session`'s streams and reports its outcome.
async fn run(
    agent: Arc<Agent>,
    h: Arc<PodHandle>,
    container: String,
    req: ExecRequest,
    mut session: Session,
) {
    let io = ExecIo {
        stdin: session.stdin.take().map(stdin_pipe),
        output: output_fn(session.output.clone(), req.attach, h.name.clone()),
        tty: req.tty,
        resize: session.resize.take(),
    };
    let result = exec::exec_or_attach(&agent, &h, &container, &req, io).await;
    session.finish(&result).await;
}

/// A stdin pipe: the client's stdin comes out of the guest's; its end is end of file.
fn stdin_pipe(mut rx: mpsc::Receiver<Bytes>) -> spindle_wasm::Stdin {
    let (mut w, r) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    spindle_wasm::Stdin::new(r)
}

/// The command's output towards the client. An exec's command waits while the client
/// is behind (its output pump, or the Wasm guest's write, awaits room), as the
/// kubelet's pipes block a process that writes faster than its client reads. An attach
/// shares the container's output with its log, which must go on, so an attach client
/// that far behind is cut instead (as the kube-apiserver drops a watcher that cannot
/// keep up).
fn output_fn(out: Output, attach: bool, pod: String) -> OutputFn {
    Arc::new(move |s, data| {
        let s = match s {
            Stream::Stdout => StdStream::Stdout,
            Stream::Stderr => StdStream::Stderr,
        };
        if attach {
            if out.try_write(s, data).is_err() {
                tracing::warn!(
                    %pod,
                    "attach client reads more slowly than the container writes ({} messages pending): closing its connection",
                    remotecommand::OUT_QUEUE
                );
                out.abort();
            }
            return no_wait();
        }
        if !out.carries(s) {
            return no_wait();
        }
        let out = out.clone();
        Box::pin(async move { out.write(s, data).await })
    })
}

/// `/portForward/{namespace}/{pod}`.
pub async fn port_forward(
    State(agent): State<Arc<Agent>>,
    Path((ns, pod)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Some(h) = agent.pods.find(&ns, &pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on this node"),
        );
    };
    let ip = h
        .shared()
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
    let Some(ip) = ip else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("pod {pod} has no network to forward to"),
        );
    };
    port_forward_upgrade(req, ip)
}

/// Upgrades `req` to a port-forward session (WebSocket or SPDY) into `ip`'s ports.
pub fn port_forward_upgrade(mut req: Request, ip: std::net::IpAddr) -> Response {
    let negotiated = match upgrade::negotiate(
        &mut req,
        portforward::WEBSOCKET_PROTOCOLS,
        portforward::SPDY_PROTOCOLS,
    ) {
        Ok(n) => n,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let resp = negotiated.response();
    tokio::spawn(portforward::serve_upgraded(negotiated, ip));
    resp
}
