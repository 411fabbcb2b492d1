//! One run of a program: the WASI context built from an [`InstanceSpec`], the store with
//! its limits, the task that drives the guest on the runtime's threads, and the mapping
//! of how it ended onto an [`ExitStatus`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::limits::{CpuAccount, CpuMeter, KillSwitch, MemoryLimiter, MemoryPolicy, Usage};
use crate::net::{PodNetwork, ResolvingHooks, SendRequestFuture};
use crate::output::{OutputSink, SinkStream};
use crate::program::{Entry, Program};
use crate::WasmError;

/// A host directory the guest can see. Nothing else of the host file system is visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// How to run one instance of a program.
pub struct InstanceSpec {
    /// Including `argv[0]`.
    pub argv: Vec<String>,
    /// The complete environment; nothing is inherited from the agent.
    pub env: Vec<(String, String)>,
    /// WASI p1/p2 hosts have no current directory, so this is passed to the guest as the
    /// `PWD` environment variable (replacing any `PWD` in `env`). Relative paths in the
    /// guest still resolve against the preopens as the guest's libc decides.
    pub working_dir: Option<String>,
    pub preopens: Vec<Preopen>,
    pub stdout: Arc<dyn OutputSink>,
    pub stderr: Arc<dyn OutputSink>,
    /// Cap on all linear memories and tables of the instance together, in bytes; `None`
    /// is the node's [`RuntimeConfig::default_memory_limit`](crate::RuntimeConfig). For
    /// [`WasmRuntime::serve_http`](crate::WasmRuntime::serve_http) the cap is shared by
    /// all of the server's concurrent request instances, as a container's cgroup is by
    /// its processes. Whatever it says, all guests of the runtime together stay within
    /// [`RuntimeConfig::guest_memory_budget`](crate::RuntimeConfig).
    pub memory_limit: Option<u64>,
    /// CPU limit in millicores; `None` is unlimited. A command guest is one thread (no
    /// wasi-threads), polled by one worker at a time, so it can never use more than one
    /// core: from 1000 up a limit cannot bind. Every guest is metered all the same (two
    /// clock reads per host call), since its CPU time is what the node reports in its
    /// resource metrics ([`Instance::usage`]). Unlimited guests still yield at every
    /// epoch tick, so other guests get their turn on the workers within a tick.
    /// For [`WasmRuntime::serve_http`](crate::WasmRuntime::serve_http) the budget is
    /// shared by all of the server's concurrent request instances instead, and always
    /// metered.
    pub cpu_millis: Option<u64>,
    /// Grants `wasi:sockets` (TCP, UDP and `ip-name-lookup`, any address) to WASI p2
    /// components. `false` (no network at all) is what existing callers get. WASI p1
    /// modules cannot create sockets whatever this says.
    ///
    /// It also allows outgoing `wasi:http` requests from components started with
    /// [`WasmRuntime::start`](crate::WasmRuntime::start) (without it they fail with
    /// `HTTP-request-denied`). Components served with
    /// [`WasmRuntime::serve_http`](crate::WasmRuntime::serve_http) may always make them.
    ///
    /// Sockets and outgoing HTTP connections are opened by the runtime's worker threads,
    /// so they live in the network namespace those threads are in (the agent's), not the
    /// pod's, unless [`pod_network`](Self::pod_network) gives the pod's own runtime.
    pub network: bool,
    /// The pod's network: run on the pod's runtime (threads in its network namespace)
    /// and resolve outgoing request names with its resolver. `None`: the shared
    /// runtime, in the agent's namespace (host-network pods, and tools).
    pub pod_network: Option<PodNetwork>,
    /// The guest's stdin; `None` is empty (end of file at once).
    pub stdin: Option<Stdin>,
}

/// A byte stream a guest reads as stdin (`kubectl exec -i`).
#[derive(Clone)]
pub struct Stdin(Arc<wasmtime_wasi::cli::AsyncStdinStream>);

impl Stdin {
    pub fn new(reader: impl tokio::io::AsyncRead + Send + Sync + 'static) -> Self {
        Stdin(Arc::new(wasmtime_wasi::cli::AsyncStdinStream::new(reader)))
    }

    /// The same input as a plain reader (for a process outside Wasm).
    pub fn reader(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin> {
        use wasmtime_wasi::cli::StdinStream;
        Box::new(Box::into_pin(self.0.async_stream()))
    }
}

impl std::fmt::Debug for Stdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stdin")
    }
}

impl wasmtime_wasi::cli::IsTerminal for Stdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdinStream for Stdin {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::InputStream> {
        self.0.p2_stream()
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        self.0.async_stream()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// Exited with code 0.
    Completed,
    /// Non-zero exit, trap, or the instance could not be created.
    Error,
    /// Ended after a memory grow was refused because of `memory_limit`.
    OOMKilled,
    /// Ended by [`Instance::kill`] / [`Killer::kill`].
    Killed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i32,
    pub reason: ExitReason,
    pub message: Option<String>,
}

/// Like the wasmtime CLI (and a SIGABRT'd process): a trap exits with 134.
pub const TRAP_EXIT_CODE: i32 = 134;
/// Like a SIGKILL'd process: used for kills and OOM kills.
pub const KILLED_EXIT_CODE: i32 = 137;

/// Kubernetes keeps at most 4 KiB of a termination message.
const MAX_MESSAGE: usize = 4096;

impl ExitStatus {
    pub(crate) fn completed(code: i32) -> Self {
        ExitStatus {
            code,
            reason: if code == 0 {
                ExitReason::Completed
            } else {
                ExitReason::Error
            },
            message: None,
        }
    }

    pub(crate) fn error(code: i32, message: String) -> Self {
        ExitStatus {
            code,
            reason: ExitReason::Error,
            message: Some(truncate(message)),
        }
    }

    pub(crate) fn killed(message: &str) -> Self {
        ExitStatus {
            code: KILLED_EXIT_CODE,
            reason: ExitReason::Killed,
            message: Some(message.to_owned()),
        }
    }
}

pub(crate) fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Store data of every guest. `W` is the WASI context of the program's kind.
pub(crate) struct GuestState<W> {
    wasi: W,
    pub(crate) limiter: MemoryLimiter,
    cpu: Option<CpuMeter>,
    kill: Arc<KillSwitch>,
}

/// The context of every component: WASI p2, and `wasi:http` (for HTTP components, and for
/// commands that make outgoing HTTP requests).
pub(crate) struct P2Ctx {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outgoing_http: bool,
    deny: DenyOutgoingHttp,
    resolving: Option<ResolvingHooks>,
}

impl P2Ctx {
    /// `outgoing_http`: whether `wasi:http/outgoing-handler` may send requests.
    pub(crate) fn new(ctx: WasiCtx, outgoing_http: bool, net: Option<&PodNetwork>) -> Self {
        P2Ctx {
            ctx,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outgoing_http,
            deny: DenyOutgoingHttp,
            resolving: net
                .and_then(|n| n.resolver.clone())
                .map(|resolver| ResolvingHooks { resolver }),
        }
    }
}

/// `wasi:http` hooks that refuse every outgoing request (`HTTP-request-denied`).
struct DenyOutgoingHttp;

impl WasiHttpHooks for DenyOutgoingHttp {
    fn send_request(
        &mut self,
        _request: hyper::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendRequestFuture {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiView for GuestState<P2Ctx> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl WasiHttpView for GuestState<P2Ctx> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let hooks: &mut dyn WasiHttpHooks =
            match (self.wasi.outgoing_http, &mut self.wasi.resolving) {
                (false, _) => &mut self.wasi.deny,
                (true, Some(resolving)) => resolving,
                // wasmtime-wasi-http's default client.
                (true, None) => Default::default(),
            };
        WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks,
        }
    }
}

impl GuestState<WasiP1Ctx> {
    pub(crate) fn p1(&mut self) -> &mut WasiP1Ctx {
        &mut self.wasi
    }
}

/// A running (or finished) guest. Dropping it kills the guest; keep a [`Killer`] or the
/// `Instance` itself for as long as the guest should live.
pub struct Instance {
    rx: Option<oneshot::Receiver<ExitStatus>>,
    status: Option<ExitStatus>,
    kill: Arc<KillSwitch>,
    usage: Usage,
}

/// Kills an instance (or stops an [`HttpServer`](crate::HttpServer)) from anywhere;
/// cheap to clone.
#[derive(Clone)]
pub struct Killer(pub(crate) Arc<KillSwitch>);

impl Killer {
    /// Ends the guest at its next epoch check, or at once if it is blocked in a host call.
    /// For an HTTP server: stops accepting and ends every request instance the same way.
    /// Idempotent; does nothing once the guest has ended.
    pub fn kill(&self) {
        self.0.kill();
    }
}

impl Instance {
    /// Waits for the guest to end. Returns the same status again on later calls.
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

    /// Ends the guest at its next epoch check; [`wait`](Self::wait) then reports
    /// [`ExitReason::Killed`] with code 137.
    pub fn kill(&self) {
        self.kill.kill();
    }

    pub fn killer(&self) -> Killer {
        Killer(self.kill.clone())
    }

    /// What the guest uses: its memories and tables, and its CPU time so far.
    pub fn usage(&self) -> Usage {
        self.usage.clone()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill.kill();
    }
}

/// Holds one of the runtime's `max_instances` slots until the guest's task ends.
pub(crate) struct Slot(Arc<AtomicU32>);

impl Slot {
    pub(crate) fn acquire(live: &Arc<AtomicU32>, max: u32) -> Result<Slot, WasmError> {
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .map_err(|_| WasmError::PoolExhausted(max))?;
        Ok(Slot(live.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn check_string(what: &str, s: &str) -> Result<(), WasmError> {
    if s.contains('\0') {
        return Err(WasmError::Config(format!(
            "{what} contains a NUL byte: {s:?}"
        )));
    }
    Ok(())
}

pub(crate) fn wasi_builder(spec: &InstanceSpec) -> Result<WasiCtxBuilder, WasmError> {
    let mut b = WasiCtxBuilder::new();
    for a in &spec.argv {
        check_string("argument", a)?;
    }
    b.args(&spec.argv);
    for (k, v) in &spec.env {
        check_string("environment variable name", k)?;
        check_string("environment variable value", v)?;
        if k.is_empty() || k.contains('=') {
            return Err(WasmError::Config(format!(
                "invalid environment variable name {k:?}"
            )));
        }
        if spec.working_dir.is_some() && k == "PWD" {
            continue;
        }
        b.env(k, v);
    }
    if let Some(wd) = &spec.working_dir {
        check_string("working directory", wd)?;
        b.env("PWD", wd);
    }
    for p in &spec.preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&p.host, &p.guest, perms)
            .map_err(|e| WasmError::Preopen {
                host: p.host.clone(),
                guest: p.guest.clone(),
                message: format!("{e:#}"),
            })?;
    }
    if let Some(stdin) = &spec.stdin {
        b.stdin(stdin.clone());
    }
    b.stdout(SinkStream::new(spec.stdout.clone()));
    b.stderr(SinkStream::new(spec.stderr.clone()));
    if spec.network {
        b.inherit_network()
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true);
    } else {
        // These are off by default in wasmtime-wasi 48 too, but the defaults have
        // changed between versions before.
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
    }
    Ok(b)
}

pub(crate) fn new_store<W: Send + 'static>(
    engine: &Engine,
    wasi: W,
    limiter: MemoryLimiter,
    cpu: Option<CpuMeter>,
    kill: Arc<KillSwitch>,
) -> Store<GuestState<W>> {
    let metered = cpu.is_some();
    let mut store = Store::new(
        engine,
        GuestState {
            wasi,
            limiter,
            cpu,
            kill,
        },
    );
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut cx| {
        let state = cx.data_mut();
        if state.kill.is_killed() {
            return Ok(UpdateDeadline::Interrupt);
        }
        // Yielding at every tick is what keeps a spinning guest from holding a worker
        // thread: other guests on the runtime get their turn within a tick.
        Ok(match &mut state.cpu {
            Some(meter) => meter.on_epoch(),
            None => UpdateDeadline::Yield(1),
        })
    });
    if metered {
        store.call_hook(|mut cx, hook| {
            if let Some(meter) = &mut cx.data_mut().cpu {
                meter.on_call_hook(hook);
            }
            Ok(())
        });
    }
    store
}

pub(crate) fn start(
    engine: &Engine,
    rt: &tokio::runtime::Handle,
    program: &Program,
    spec: InstanceSpec,
    memory: &MemoryPolicy,
    slot: Slot,
) -> Result<Instance, WasmError> {
    let mut builder = wasi_builder(&spec)?;
    // At 1000 and more the limit cannot bind a single-threaded guest (see
    // `InstanceSpec::cpu_millis`): the account then only counts, for the metrics.
    let account = CpuAccount::for_limit(spec.cpu_millis.filter(|&m| m < 1000));
    let budget = memory.container(spec.memory_limit);
    let usage = Usage::new(budget.0.clone(), account.clone());
    let cpu = || Some(CpuMeter::shared(account.clone()));
    let limiter = || memory.limiter(budget.clone());
    let kill = Arc::new(KillSwitch::default());
    let (tx, rx) = oneshot::channel();
    let guest_kill = kill.clone();
    let rt = match &spec.pod_network {
        Some(net) => &net.executor,
        None => rt,
    };
    match &program.inner.entry {
        Entry::Module(pre) => {
            let pre = pre.clone();
            let mut store = new_store(engine, builder.build_p1(), limiter(), cpu(), kill.clone());
            let guest = async move {
                let run = async {
                    let instance = pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(|e| (Phase::Instantiate, e))?;
                    let entry = instance
                        .get_typed_func::<(), ()>(&mut store, "_start")
                        .map_err(|e| (Phase::Instantiate, e))?;
                    entry
                        .call_async(&mut store, ())
                        .await
                        .map(|()| 0)
                        .map_err(|e| (Phase::Run, e))
                };
                let result = run.await;
                GuestEnd::new(result, store.data())
            };
            rt.spawn(supervise(guest, guest_kill, tx, slot));
        }
        Entry::Component { command: None, .. } => {
            return Err(WasmError::NotRunnable(
                "component exports wasi:http/incoming-handler but not wasi:cli/run: \
                 it can only be served (WasmRuntime::serve_http), not run"
                    .to_owned(),
            ))
        }
        Entry::Component {
            command: Some(pre), ..
        } => {
            let pre = pre.clone();
            // A command's outgoing wasi:http requests are network use like its sockets.
            let wasi = P2Ctx::new(builder.build(), spec.network, spec.pod_network.as_ref());
            let mut store = new_store(engine, wasi, limiter(), cpu(), kill.clone());
            let guest = async move {
                let run = async {
                    let command = pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(|e| (Phase::Instantiate, e))?;
                    match command.wasi_cli_run().call_run(&mut store).await {
                        Ok(Ok(())) => Ok(0),
                        Ok(Err(())) => Ok(1),
                        Err(e) => Err((Phase::Run, e)),
                    }
                };
                let result = run.await;
                GuestEnd::new(result, store.data())
            };
            rt.spawn(supervise(guest, guest_kill, tx, slot));
        }
    }
    Ok(Instance {
        rx: Some(rx),
        status: None,
        kill,
        usage,
    })
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Instantiate,
    Run,
}

struct GuestEnd {
    result: Result<i32, (Phase, wasmtime::Error)>,
    /// Why a memory grow was refused, if one was.
    oom: Option<String>,
}

impl GuestEnd {
    fn new<W>(result: Result<i32, (Phase, wasmtime::Error)>, state: &GuestState<W>) -> Self {
        GuestEnd {
            result,
            oom: state.limiter.oom_message(),
        }
    }
}

/// Races the guest against its kill switch. Dropping the guest future is what makes a
/// guest that is parked in a host call (sleep, poll) killable: wasmtime unwinds the
/// suspended fiber when its future is dropped.
async fn supervise(
    guest: impl Future<Output = GuestEnd>,
    kill: Arc<KillSwitch>,
    tx: oneshot::Sender<ExitStatus>,
    slot: Slot,
) {
    let end = tokio::select! {
        biased;
        () = kill.killed() => None,
        end = guest => Some(end),
    };
    let status = match end {
        None => ExitStatus::killed("killed"),
        Some(end) => classify(end, kill.is_killed()),
    };
    // The slot is only given back once the store (inside `guest`) is gone.
    drop(slot);
    let _ = tx.send(status);
}

fn classify(end: GuestEnd, killed: bool) -> ExitStatus {
    let denied = end.oom.is_some();
    let oom = |what: String| ExitStatus {
        code: KILLED_EXIT_CODE,
        reason: ExitReason::OOMKilled,
        message: Some(truncate(format!(
            "{}; {what}",
            end.oom.as_deref().unwrap_or_default()
        ))),
    };
    let (phase, err) = match end.result {
        Ok(0) => return ExitStatus::completed(0),
        Ok(code) if denied => return oom(format!("guest then exited with {code}")),
        Ok(code) => return ExitStatus::completed(code),
        Err(e) => e,
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return match exit.0 {
            0 => ExitStatus::completed(0),
            code if denied => oom(format!("guest then exited with {code}")),
            code => ExitStatus::completed(code),
        };
    }
    if killed {
        return ExitStatus::killed("killed");
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        if denied {
            return oom(format!("guest then trapped: {trap}"));
        }
        let mut msg = trap.to_string();
        if let Some(bt) = err.downcast_ref::<WasmBacktrace>() {
            msg = format!("{msg}\n{bt}");
        }
        return ExitStatus::error(TRAP_EXIT_CODE, msg);
    }
    if denied {
        return oom(format!("{err:#}"));
    }
    if let Some(pool) = err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return ExitStatus::error(1, format!("instance pool exhausted: {pool}"));
    }
    let out_of_maps = err
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::OutOfMemory);
    match phase {
        // What usually runs out first is not RAM but the per-process mapping limit.
        Phase::Instantiate if out_of_maps => ExitStatus::error(
            1,
            format!(
                "instantiation failed: {err:#}: the node is out of memory or of memory \
                 mappings (vm.max_map_count)"
            ),
        ),
        Phase::Instantiate => ExitStatus::error(1, format!("instantiation failed: {err:#}")),
        Phase::Run => ExitStatus::error(1, format!("{err:#}")),
    }
}
