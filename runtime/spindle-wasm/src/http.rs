//! Serving `wasi:http/incoming-handler` components over HTTP, the way `wasmtime serve`
//! does: a hyper server on the runtime's threads, one fresh instance per request.
//!
//! - The listener is the caller's: the agent binds it inside the pod's network namespace
//!   and hands it over, so the server never creates a listening socket itself.
//! - HTTP/1.1 with keep-alive, and HTTP/2 with prior knowledge (h2c), told apart by the
//!   connection preface.
//! - Every request gets its own store: the spec's argv, env, preopens, stdout/stderr
//!   sinks and memory limit apply per instance; the CPU budget is one account shared by
//!   all of the server's instances, so concurrent requests together stay within it.
//! - A request whose guest traps, runs out of memory or never answers gets a 500; the
//!   failure is also written to the spec's stderr sink. Other requests are unaffected.
//! - Each instance takes one of the runtime's pool slots; when the pool is full a request
//!   waits up to [`SLOT_WAIT`] for one and then gets a 503.
//! - Outgoing `wasi:http` requests use wasmtime-wasi-http's default client. They, like
//!   `wasi:sockets` when [`InstanceSpec::network`] is set, are made by the runtime's
//!   worker threads and so leave from the network namespace those threads are in (the
//!   agent's), not the pod's.
//!
//! No request timeout is applied: a guest that never answers holds its pool slot until
//! the client goes away *and* the guest ends, or the server is stopped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::{mpsc, oneshot, watch};
use wasmtime::{Engine, Trap};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::instance::{new_store, truncate, wasi_builder, GuestState, P2Ctx, Slot};
use crate::limits::{CpuAccount, CpuMeter, KillSwitch};
use crate::{ExitStatus, InstanceSpec, Killer};

/// How long a request waits for a free instance slot before it is answered with 503.
pub const SLOT_WAIT: Duration = Duration::from_secs(1);

/// Counters of an [`HttpServer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Connections accepted.
    pub connections: u64,
    /// Requests received (each one an instance, unless rejected).
    pub requests: u64,
    /// Requests whose guest trapped, ran out of memory, failed to instantiate or ended
    /// without a response. Answered with 500 unless the response had already started.
    pub failed: u64,
    /// Requests answered with 503 because no instance slot became free in time, or
    /// with 400 because the request could not be handed to the guest.
    pub rejected: u64,
    /// Request instances alive right now.
    pub active: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    active: AtomicU64,
}

/// Everything the server's tasks share.
pub(crate) struct Server {
    pub(crate) engine: Engine,
    pub(crate) pre: ProxyPre<GuestState<P2Ctx>>,
    pub(crate) spec: InstanceSpec,
    pub(crate) cpu: Option<Arc<CpuAccount>>,
    pub(crate) kill: Arc<KillSwitch>,
    pub(crate) live: Arc<AtomicU32>,
    pub(crate) max_instances: u32,
    http: auto::Builder<TokioExecutor>,
    counters: Counters,
}

impl Server {
    pub(crate) fn new(
        engine: Engine,
        pre: ProxyPre<GuestState<P2Ctx>>,
        spec: InstanceSpec,
        cpu: Option<Arc<CpuAccount>>,
        live: Arc<AtomicU32>,
        max_instances: u32,
    ) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        // The timer gives HTTP/1 its default header read timeout (30 s), so a client that
        // opens a connection and never completes a request does not hold it forever.
        http.http1().keep_alive(true).timer(TokioTimer::new());
        Server {
            engine,
            pre,
            spec,
            cpu,
            kill: Arc::new(KillSwitch::default()),
            live,
            max_instances,
            http,
            counters: Counters::default(),
        }
    }

    fn log(&self, line: String) {
        self.spec.stderr.write(line.as_bytes());
    }
}

/// A running HTTP server (see [`WasmRuntime::serve_http`](crate::WasmRuntime::serve_http)).
/// Dropping it stops the server; keep a [`Killer`] or the `HttpServer` itself for as long
/// as it should serve.
pub struct HttpServer {
    server: Arc<Server>,
    local_addr: SocketAddr,
    rx: Option<oneshot::Receiver<ExitStatus>>,
    status: Option<ExitStatus>,
}

impl HttpServer {
    /// The address of the listener it was given.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections (the listener is closed), closes every connection and
    /// ends every request instance, the way [`Killer::kill`] ends an instance. Idempotent.
    /// [`wait`](Self::wait) then reports [`ExitReason::Completed`](crate::ExitReason).
    pub fn stop(&self) {
        self.server.kill.kill();
    }

    /// Stops the server from anywhere: [`Killer::kill`] does what [`stop`](Self::stop)
    /// does.
    pub fn killer(&self) -> Killer {
        Killer(self.server.kill.clone())
    }

    /// Waits until the server has stopped and every request instance has ended: code 0,
    /// Completed after [`stop`](Self::stop); Error if the listener failed for good.
    /// Returns the same status again on later calls.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = &self.status {
            return status.clone();
        }
        let status = match self.rx.as_mut() {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| ExitStatus::killed("the wasm runtime shut down")),
            None => ExitStatus::killed("the wasm runtime shut down"),
        };
        self.rx = None;
        self.status = Some(status.clone());
        status
    }

    pub fn stats(&self) -> HttpStats {
        let c = &self.server.counters;
        HttpStats {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.server.kill.kill();
    }
}

/// Starts serving on `listener` (already bound and listening) on the runtime's threads.
pub(crate) fn start(
    rt: &tokio::runtime::Handle,
    server: Server,
    listener: std::net::TcpListener,
) -> Result<HttpServer, std::io::Error> {
    let local_addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let listener = {
        let _in_runtime = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let server = Arc::new(server);
    let (tx, rx) = oneshot::channel();
    rt.spawn(supervise(server.clone(), listener, tx));
    Ok(HttpServer {
        server,
        local_addr,
        rx: Some(rx),
        status: None,
    })
}

/// Every task of the server holds a clone of the tracker; when the last clone is gone,
/// everything has ended.
type Tracker = mpsc::Sender<Infallible>;

async fn supervise(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    tx: oneshot::Sender<ExitStatus>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tracker, mut all_done) = mpsc::channel::<Infallible>(1);
    let end = tokio::select! {
        biased;
        () = server.kill.killed() => Ok(()),
        r = accept_loop(listener, server.clone(), stop_rx, tracker.clone()) => r,
    };
    // The listener is closed now (the accept loop owned it). Interrupt spinning guests at
    // their next epoch check and drop every connection and guest task.
    server.kill.kill();
    stop_tx.send_replace(true);
    drop(tracker);
    while all_done.recv().await.is_some() {}
    let status = match end {
        Ok(()) => ExitStatus::completed(0),
        Err(message) => ExitStatus::error(1, message),
    };
    let _ = tx.send(status);
}

/// Accept errors after which the listener is of no further use.
fn fatal_accept_error(e: &std::io::Error) -> bool {
    // EBADF, EINVAL (not listening), ENOTSOCK, EOPNOTSUPP on Linux.
    matches!(e.raw_os_error(), Some(9 | 22 | 88 | 95))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    stop: watch::Receiver<bool>,
    tracker: Tracker,
) -> Result<(), String> {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                server.counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_connection(
                    server.clone(),
                    stream,
                    stop.clone(),
                    tracker.clone(),
                ));
            }
            Err(e) if fatal_accept_error(&e) => {
                return Err(format!("accepting HTTP connections failed: {e}"));
            }
            Err(e) => {
                // Out of file descriptors or memory, or a connection reset before it was
                // accepted: back off briefly rather than spin.
                tracing::debug!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(
    server: Arc<Server>,
    stream: tokio::net::TcpStream,
    mut stop: watch::Receiver<bool>,
    tracker: Tracker,
) {
    // Small response bodies written in pieces must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let service = {
        let server = server.clone();
        let stop = stop.clone();
        hyper::service::service_fn(move |req| {
            handle(server.clone(), stop.clone(), tracker.clone(), req)
        })
    };
    let conn = server.http.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        biased;
        _ = stop.wait_for(|stopped| *stopped) => {}
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<HyperOutgoingBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Waits up to [`SLOT_WAIT`] for a free instance slot.
async fn acquire_slot(server: &Server) -> Option<Slot> {
    let mut delay = Duration::from_micros(500);
    let mut waited = Duration::ZERO;
    loop {
        if let Ok(slot) = Slot::acquire(&server.live, server.max_instances) {
            return Some(slot);
        }
        if waited >= SLOT_WAIT {
            return None;
        }
        tokio::time::sleep(delay).await;
        waited += delay;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

async fn handle(
    server: Arc<Server>,
    stop: watch::Receiver<bool>,
    tracker: Tracker,
    req: Request<Incoming>,
) -> Result<Response<HyperOutgoingBody>, Infallible> {
    let counters = &server.counters;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let Some(slot) = acquire_slot(&server).await else {
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: no free wasm instance slot\n",
        ));
    };
    let mut builder = match wasi_builder(&server.spec) {
        Ok(b) => b,
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            server.log(format!(
                "spindle-wasm: cannot set up a request instance: {e}\n"
            ));
            return Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error\n",
            ));
        }
    };
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut store = new_store(
        &server.engine,
        // Served components may always make outgoing requests, as under `wasmtime serve`.
        P2Ctx::new(builder.build(), true, server.spec.pod_network.as_ref()),
        server.spec.memory_limit,
        server.cpu.clone().map(CpuMeter::shared),
        server.kill.clone(),
    );
    let (tx, rx) = oneshot::channel();
    let resources = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .and_then(|req| {
            let out = store.data_mut().http().new_response_outparam(tx)?;
            Ok((req, out))
        });
    let (req, out) = match resources {
        Ok(r) => r,
        Err(e) => {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "refusing an HTTP request");
            return Ok(plain(StatusCode::BAD_REQUEST, "400 Bad Request\n"));
        }
    };

    let pre = server.pre.clone();
    let guest = async move {
        let result = async {
            let proxy = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| ("instantiation failed", e))?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
                .map_err(|e| ("", e))
        }
        .await;
        let limiter = &store.data().limiter;
        result.map_err(|(phase, e)| describe(phase, &e, limiter.denied(), limiter.limit()))
    };
    let task_server = server.clone();
    let mut task_stop = stop;
    let (method2, uri2) = (method.clone(), uri.clone());
    let mut task = tokio::spawn(async move {
        let server = task_server;
        let _tracker = tracker;
        server.counters.active.fetch_add(1, Ordering::Relaxed);
        let end = tokio::select! {
            biased;
            _ = task_stop.wait_for(|stopped| *stopped) => None,
            end = guest => Some(end),
        };
        // The store is gone (with `guest`); only now is the slot free again.
        drop(slot);
        server.counters.active.fetch_sub(1, Ordering::Relaxed);
        match end {
            // Interrupted by the kill switch rather than failed by itself.
            None => GuestOutcome::Stopped,
            Some(Err(_)) if server.kill.is_killed() => GuestOutcome::Stopped,
            Some(Ok(())) => GuestOutcome::Returned,
            Some(Err(why)) => {
                server.counters.failed.fetch_add(1, Ordering::Relaxed);
                server.log(format!("spindle-wasm: {method} {uri}: {why}\n"));
                GuestOutcome::Failed
            }
        }
    });

    let mut rx = rx;
    let mut outcome = None;
    let answer = tokio::select! {
        biased;
        r = &mut rx => r,
        // Once the guest task is over its store is gone: a response it set is in the
        // channel, otherwise the channel is closed.
        o = &mut task => {
            outcome = Some(o);
            rx.await
        }
    };
    let error = match answer {
        Ok(Ok(resp)) => return Ok(resp),
        Ok(Err(code)) => {
            tracing::debug!(?code, "guest answered with an error code");
            return Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error\n",
            ));
        }
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error\n",
        ),
    };
    // No response: find out why (the task is about to end, its store is gone).
    let outcome = match outcome {
        Some(o) => o,
        None => task.await,
    };
    Ok(match outcome {
        Ok(GuestOutcome::Failed) => error,
        Ok(GuestOutcome::Returned) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            server.log(format!(
                "spindle-wasm: {} {}: guest returned without setting a response\n",
                method2, uri2
            ));
            error
        }
        Ok(GuestOutcome::Stopped) | Err(_) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: server stopping\n",
        ),
    })
}

enum GuestOutcome {
    Returned,
    Failed,
    Stopped,
}

/// One line for the log: why a request's guest failed.
fn describe(phase: &str, err: &wasmtime::Error, denied: Option<u64>, limit: Option<u64>) -> String {
    let what = if let Some(trap) = err.downcast_ref::<Trap>() {
        format!("guest trapped: {trap}")
    } else if let Some(pool) = err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        format!("instance pool exhausted: {pool}")
    } else {
        format!("{err:#}")
    };
    let what = if phase.is_empty() {
        what
    } else {
        format!("{phase}: {what}")
    };
    match denied {
        Some(denied) => truncate(format!(
            "memory limit of {} bytes exceeded (a grow to {denied} bytes was refused); {what}",
            limit.unwrap_or(0)
        )),
        None => truncate(what),
    }
}
