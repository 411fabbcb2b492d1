//! Serving `wasi:http/incoming-handler` components over HTTP, the way `wasmtime serve`
//! does: a hyper server on the runtime's threads, one fresh instance per request.
//!
//! - The listener is the caller's: the agent binds it inside the pod's network namespace
//!   and hands it over, so the server never creates a listening socket itself.
//! - HTTP/1.1 with keep-alive, and HTTP/2 with prior knowledge (h2c), told apart by the
//!   connection preface.
//! - Every request gets its own store: the spec's argv, env, preopens and stdout/stderr
//!   sinks apply per instance; the memory limit and the CPU budget are each one account
//!   shared by all of the server's instances, so concurrent requests together stay
//!   within them, as the processes of a container stay within its cgroup.
//! - A request whose guest traps, runs out of memory or never answers gets a 500; the
//!   failure is also written to the spec's stderr sink. Other requests are unaffected.
//! - At most `http_max_concurrency` instances of a server are alive at once. Up to
//!   `http_max_queue` further requests wait for one, first come first served; the rest
//!   are answered 503 at once, as an overloaded server (or Knative's queue-proxy) does.
//! - Each instance also takes one of the runtime's pool slots; a request waits up to
//!   [`SLOT_WAIT`] in all for its turn and a slot, and then gets a 503.
//! - Outgoing `wasi:http` requests use wasmtime-wasi-http's default client. They, like
//!   `wasi:sockets` when [`InstanceSpec::network`] is set, are made by the runtime's
//!   worker threads and so leave from the network namespace those threads are in (the
//!   agent's), not the pod's.
//!
//! No request timeout is applied (Kubernetes applies none to a pod's server either): a
//! guest that never answers holds its instance until it ends or the server is stopped.
//! The concurrency cap confines the damage to the pod itself: its own requests queue and
//! then get 503, while other pods' servers keep their slots.

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
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use wasmtime::{Engine, Trap};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::instance::{new_store, truncate, wasi_builder, GuestState, P2Ctx, Slot};
use crate::limits::{CpuAccount, CpuMeter, KillSwitch, LimitSource, MemoryBudget, MemoryPolicy};
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
    /// Requests answered with 503 because the server already had its most instances and
    /// its queue was full, or no instance (or pool slot) became free in time; or with 400
    /// because the request could not be handed to the guest.
    pub rejected: u64,
    /// Request instances alive right now.
    pub active: u64,
    /// The most request instances that were ever alive at once.
    pub peak_active: u64,
    /// Bytes of linear memory and tables the server's instances hold now, against its
    /// memory limit.
    pub memory_bytes: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    active: AtomicU64,
    peak_active: AtomicU64,
}

/// What bounds a server's instances.
pub(crate) struct Limits {
    /// Shared by all of the server's instances (a counting-only one without a limit).
    pub(crate) cpu: Arc<CpuAccount>,
    /// The server's memory budget, shared by all of its instances.
    pub(crate) memory: (Arc<MemoryBudget>, LimitSource),
    pub(crate) node_memory: MemoryPolicy,
    pub(crate) live: Arc<AtomicU32>,
    pub(crate) max_instances: u32,
    pub(crate) max_concurrency: u32,
    pub(crate) max_queue: u32,
}

/// Everything the server's tasks share.
pub(crate) struct Server {
    pub(crate) engine: Engine,
    pub(crate) pre: ProxyPre<GuestState<P2Ctx>>,
    pub(crate) spec: InstanceSpec,
    pub(crate) kill: Arc<KillSwitch>,
    limits: Limits,
    /// One permit per instance the server may have alive; waiters queue in order.
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit.
    queued: AtomicU32,
    http: auto::Builder<TokioExecutor>,
    counters: Counters,
}

impl Server {
    pub(crate) fn new(
        engine: Engine,
        pre: ProxyPre<GuestState<P2Ctx>>,
        spec: InstanceSpec,
        limits: Limits,
    ) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        // The timer gives HTTP/1 its default header read timeout (30 s), so a client that
        // opens a connection and never completes a request does not hold it forever.
        http.http1().keep_alive(true).timer(TokioTimer::new());
        Server {
            engine,
            pre,
            spec,
            kill: Arc::new(KillSwitch::default()),
            permits: Arc::new(Semaphore::new(
                usize::try_from(limits.max_concurrency).unwrap_or(usize::MAX),
            )),
            queued: AtomicU32::new(0),
            limits,
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

    /// What the server's instances use together: memory now, CPU time so far.
    pub fn usage(&self) -> crate::Usage {
        let l = &self.server.limits;
        crate::Usage::new(l.memory.0.clone(), l.cpu.clone())
    }

    pub fn stats(&self) -> HttpStats {
        let c = &self.server.counters;
        HttpStats {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            peak_active: c.peak_active.load(Ordering::Relaxed),
            memory_bytes: self.server.limits.memory.0.used(),
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

/// What a request holds while its instance lives: its turn among the server's
/// instances and a slot of the runtime's pool.
struct Admission {
    _permit: OwnedSemaphorePermit,
    _slot: Slot,
}

/// Counts a request as queued while it waits for its turn.
struct Queued<'a>(&'a AtomicU32);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits, up to [`SLOT_WAIT`] in all, for the server's turn and then for a free slot of
/// the pool. `Err` carries the reason for the 503.
async fn admit(server: &Server) -> Result<Admission, &'static str> {
    let deadline = tokio::time::Instant::now() + SLOT_WAIT;
    let permit = match server.permits.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            let max_queue = server.limits.max_queue;
            server
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max_queue).then_some(n + 1)
                })
                .map_err(|_| "503 Service Unavailable: too many requests in flight\n")?;
            let _queued = Queued(&server.queued);
            tokio::time::timeout_at(deadline, server.permits.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or("503 Service Unavailable: too many requests in flight\n")?
        }
    };
    let slot = acquire_slot(server, deadline)
        .await
        .ok_or("503 Service Unavailable: no free wasm instance slot\n")?;
    Ok(Admission {
        _permit: permit,
        _slot: slot,
    })
}

/// Waits until `deadline` for a free instance slot of the runtime.
async fn acquire_slot(server: &Server, deadline: tokio::time::Instant) -> Option<Slot> {
    let mut delay = Duration::from_micros(500);
    loop {
        if let Ok(slot) = Slot::acquire(&server.limits.live, server.limits.max_instances) {
            return Some(slot);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(delay).await;
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
    let admission = match admit(&server).await {
        Ok(a) => a,
        Err(why) => {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, why));
        }
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
        server
            .limits
            .node_memory
            .limiter(server.limits.memory.clone()),
        Some(CpuMeter::shared(server.limits.cpu.clone())),
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
        let oom = store.data().limiter.oom_message();
        result.map_err(|(phase, e)| describe(phase, &e, oom))
    };
    let task_server = server.clone();
    let mut task_stop = stop;
    let (method2, uri2) = (method.clone(), uri.clone());
    let mut task = tokio::spawn(async move {
        let server = task_server;
        let _tracker = tracker;
        let now = server.counters.active.fetch_add(1, Ordering::Relaxed) + 1;
        server
            .counters
            .peak_active
            .fetch_max(now, Ordering::Relaxed);
        let end = tokio::select! {
            biased;
            _ = task_stop.wait_for(|stopped| *stopped) => None,
            end = guest => Some(end),
        };
        // The store is gone (with `guest`); only now are the turn and the slot free again.
        drop(admission);
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
fn describe(phase: &str, err: &wasmtime::Error, oom: Option<String>) -> String {
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
    match oom {
        Some(oom) => truncate(format!("{oom}; {what}")),
        None => truncate(what),
    }
}
