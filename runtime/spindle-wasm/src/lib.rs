//! The node agent's Wasm runtime.
//!
//! This crate owns everything between "here is a `.wasm` file with this digest" and "the
//! guest exited with this status":
//!
//! - one wasmtime [`Engine`] per [`WasmRuntime`], with the pooling allocator (sized by
//!   [`RuntimeConfig::max_instances`]), copy-on-write memory images and epoch interruption
//!   driven by a ticker thread;
//! - compiling programs once per content digest and keeping the precompiled code in
//!   [`RuntimeConfig::cache_dir`], so later loads (also after a restart) only map it;
//! - running WASI p1 commands (core modules exporting `_start`) and WASI p2 commands
//!   (components exporting `wasi:cli/run`) on the runtime's own tokio threads, so a
//!   spinning guest never occupies the agent's threads;
//! - serving `wasi:http/incoming-handler` components on a listener the caller hands over,
//!   one instance per request, like `wasmtime serve` ([`WasmRuntime::serve_http`]);
//! - the container view of a guest: argv, env, preopened directories as the only file
//!   system, streamed stdout/stderr, memory and CPU limits, kill, and an [`ExitStatus`]
//!   in Kubernetes terms (Completed / Error / OOMKilled).
//!
//! Guests get no inherited environment and an empty stdin, and no network unless
//! [`InstanceSpec::network`] grants `wasi:sockets` and outgoing `wasi:http`; served HTTP
//! components may always make outgoing `wasi:http` requests. Both kinds of socket are
//! opened by the runtime's worker threads, so they belong to the network namespace of
//! those threads (the agent's), not the pod's; the agent must not rely on pod network
//! isolation for them.
//!
//! Capacity limits of the pool, both per process:
//! - address space: every slot reserves `max_memory_bytes` plus a 2 MiB guard of virtual
//!   memory (not committed until used), so 20,000 slots × 4 GiB reserve about 80 TiB of
//!   the 128 TiB a Linux x86-64 process has. Only one runtime of that size fits in a
//!   process; tests and multi-node simulations must use smaller `max_instances` /
//!   `max_memory_bytes`.
//! - memory mappings: about five per live instance against `vm.max_map_count` (65530 by
//!   default), which is why the default `max_instances` follows that sysctl.
//!
//! Isolation between guests, which all live in the agent's process with no cgroup:
//! - memory: every guest is capped by its `limits.memory`, or without one by
//!   [`RuntimeConfig::default_memory_limit`] (1 GiB), the way a LimitRange default would
//!   cap it. Unlike a container without limits, which may use the node's memory, one
//!   guest must not be able to make the kernel's OOM killer pick the agent. All guests
//!   together are held to [`RuntimeConfig::guest_memory_budget`] (¾ of the node's RAM),
//!   charged at every grow: a grow past either fails in the guest (`memory.grow` returns
//!   -1) and a guest that dies of it ends OOMKilled, like a container whose cgroup, or
//!   the node, ran out of memory.
//! - HTTP components: a server's memory limit is shared by its concurrent request
//!   instances, and at most [`RuntimeConfig::http_max_concurrency`] of them run at once;
//!   up to [`RuntimeConfig::http_max_queue`] more wait (at most [`SLOT_WAIT`]) and the
//!   rest get 503 at once, as Knative's queue-proxy does with `containerConcurrency`. So
//!   one pod's traffic cannot take every pool slot.
//! - CPU: see [`InstanceSpec::cpu_millis`]. A server without a CPU limit gets
//!   `worker_threads - 1` cores' worth (with more than one worker), so however many of
//!   its requests spin, one worker's worth is always left to other guests; every guest,
//!   limited or not, yields at every [`EPOCH_TICK`], and the workers serve runnable guests
//!   in turn.

mod error;
mod http;
mod instance;
mod limits;
mod net;
mod output;
mod program;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use wasmtime::component::Linker as ComponentLinker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

pub use error::WasmError;
pub use http::{HttpServer, HttpStats, SLOT_WAIT};
pub use instance::{
    ExitReason, ExitStatus, Instance, InstanceSpec, Killer, Preopen, Stdin, KILLED_EXIT_CODE,
    TRAP_EXIT_CODE,
};
pub use limits::Usage;
pub use net::{NameResolver, PodNetwork};
pub use output::{OutputSink, Wait as OutputWait};
pub use program::{CacheStats, LoadOrigin, Program, ProgramKind};

use instance::{GuestState, Slot};
use limits::{MemoryBudget, MemoryPolicy};
use program::{Loader, StatCounters};

/// How often the engine's epoch advances. Every running guest yields (and has its CPU
/// use and kill switch checked) once per tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Guard region after each linear memory. With a 4 GiB reservation, 32-bit guests need
/// no bounds checks for accesses whose static offset is below this.
const MEMORY_GUARD: u64 = 2 << 20;

const WASM_PAGE: u64 = 64 << 10;

/// Memory mappings (VMAs) one pool slot costs when its instance is alive: the fiber stack
/// slot is two (stack and guard page, made up front for every slot), and a live linear
/// memory splits the pool's reservation into about three (copy-on-write image, rest of
/// the heap, reserved tail). Linux caps mappings per process at `vm.max_map_count`.
const MAPS_PER_SLOT: u64 = 5;
/// Mappings left for everything else in the agent process.
const MAPS_RESERVED: u64 = 4096;
const DEFAULT_MAX_INSTANCES: u32 = 20_000;
/// The memory cap of a guest without `limits.memory`.
const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;
/// Used as the node's RAM when /proc/meminfo cannot be read.
const FALLBACK_NODE_MEMORY: u64 = 4 << 30;
/// Concurrent request instances of one HTTP server, at most; and never more than
/// `1 / MIN_SERVERS_TO_FILL_POOL` of the pool.
const DEFAULT_HTTP_MAX_CONCURRENCY: u32 = 256;
const MIN_SERVERS_TO_FILL_POOL: u32 = 4;
/// Requests that may wait for a free instance, per allowed concurrent instance.
const QUEUE_PER_INSTANCE: u32 = 4;

fn node_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kib.checked_mul(1024)
}

fn system_max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many instances can be alive at once within a `vm.max_map_count` of
/// `max_map_count` (65530 by default: 12,286).
pub fn max_instances_for_map_count(max_map_count: u64) -> u32 {
    u32::try_from(max_map_count.saturating_sub(MAPS_RESERVED) / MAPS_PER_SLOT).unwrap_or(u32::MAX)
}

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Precompiled artifacts live here and survive restarts. Must be writable by the
    /// agent only: artifacts are loaded as trusted native code.
    pub cache_dir: PathBuf,
    /// Pooling-allocator slots: how many instances can be alive at once. The default is
    /// 20,000, or fewer where `vm.max_map_count` would not let that many be alive (see
    /// [`max_instances_for_map_count`]); raise the sysctl to get the full 20,000.
    pub max_instances: u32,
    /// The largest linear memory one instance may have.
    pub max_memory_bytes: u64,
    /// Threads of the runtime's own tokio runtime, on which all guests run.
    pub worker_threads: usize,
    /// The memory cap of a guest whose spec has no `memory_limit`: 1 GiB by default.
    pub default_memory_limit: u64,
    /// Bytes of linear memory and tables all guests may hold together: ¾ of the node's
    /// RAM by default, the rest left to the agent, the server and containers. Guests run
    /// in the agent's process, so without it their sum could make the kernel's OOM
    /// killer end the agent (and the server with it when it is embedded).
    pub guest_memory_budget: u64,
    /// Request instances one HTTP server may have alive at once: 256 by default, and at
    /// most a quarter of `max_instances`, so one pod's traffic cannot take every slot.
    pub http_max_concurrency: u32,
    /// Requests of one HTTP server that may wait for an instance (each at most
    /// [`SLOT_WAIT`]); beyond them requests get 503 at once. Four per allowed instance by
    /// default.
    pub http_max_queue: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let max_instances = system_max_map_count()
            .map(max_instances_for_map_count)
            .unwrap_or(DEFAULT_MAX_INSTANCES)
            .clamp(1, DEFAULT_MAX_INSTANCES);
        let guest_memory_budget = node_memory().unwrap_or(FALLBACK_NODE_MEMORY) / 4 * 3;
        let http_max_concurrency = DEFAULT_HTTP_MAX_CONCURRENCY
            .min(max_instances / MIN_SERVERS_TO_FILL_POOL)
            .max(1);
        RuntimeConfig {
            cache_dir: std::env::temp_dir().join("spindle-wasm-cache"),
            max_instances,
            max_memory_bytes: 4 << 30,
            worker_threads: std::thread::available_parallelism()
                .map(NonZeroUsize::get)
                .unwrap_or(2),
            default_memory_limit: DEFAULT_MEMORY_LIMIT.min(guest_memory_budget),
            guest_memory_budget,
            http_max_concurrency,
            http_max_queue: http_max_concurrency.saturating_mul(QUEUE_PER_INSTANCE),
        }
    }
}

/// The CPU budget of an HTTP server without a CPU limit: all workers but one, so its
/// requests, however many spin, always leave a worker's worth to other guests. `None`
/// (unmetered) with a single worker, where only the yield at every epoch tick shares it.
fn unlimited_server_cpu(worker_threads: usize) -> Option<u64> {
    let spare = u64::try_from(worker_threads.saturating_sub(1)).unwrap_or(u64::MAX);
    (spare > 0).then(|| spare.saturating_mul(1000))
}

/// The Wasm runtime of a node. Cheap to clone; clones share the engine, the caches and
/// the threads.
#[derive(Clone)]
pub struct WasmRuntime {
    inner: Arc<Inner>,
}

type ProgramCell = Arc<OnceCell<Program>>;

struct Inner {
    engine: Engine,
    loader: Arc<Loader>,
    programs: Mutex<HashMap<String, ProgramCell>>,
    stats: Arc<StatCounters>,
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    ticker_stop: Arc<AtomicBool>,
    live: Arc<AtomicU32>,
    max_instances: u32,
    worker_threads: usize,
    memory: MemoryPolicy,
    http_max_concurrency: u32,
    http_max_queue: u32,
    id: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Release);
        // The last handle may well be dropped on some async thread, where a blocking
        // runtime shutdown would panic; guests still running are dropped (killed).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(1);

fn engine_config(cfg: &RuntimeConfig) -> Result<Config, WasmError> {
    if cfg.max_instances == 0 {
        return Err(WasmError::Config("max_instances must be at least 1".into()));
    }
    if cfg.worker_threads == 0 {
        return Err(WasmError::Config(
            "worker_threads must be at least 1".into(),
        ));
    }
    if cfg.http_max_concurrency == 0 {
        return Err(WasmError::Config(
            "http_max_concurrency must be at least 1".into(),
        ));
    }
    let max_memory = cfg
        .max_memory_bytes
        .max(WASM_PAGE)
        .checked_next_multiple_of(WASM_PAGE)
        .filter(|&m| m <= 1 << 40)
        .ok_or_else(|| WasmError::Config("max_memory_bytes must be at most 1 TiB".into()))?;
    let max_memory_usize = usize::try_from(max_memory)
        .map_err(|_| WasmError::Config("max_memory_bytes does not fit this host".into()))?;

    let n = cfg.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        // Core instances and tables cost no reservation, only a count; a component
        // (main module, adapter, shims) uses several.
        .total_core_instances(n.saturating_mul(4))
        .total_tables(n.saturating_mul(2))
        .total_memories(n)
        .total_stacks(n)
        .max_memory_size(max_memory_usize);

    let mut c = Config::new();
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .memory_init_cow(true)
        // The slot is exactly the largest memory, so memories never move and the code
        // may keep the base pointer in a register.
        .memory_reservation(max_memory)
        .memory_guard_size(MEMORY_GUARD)
        .memory_may_move(false)
        .wasm_backtrace_max_frames(NonZeroUsize::new(20));
    Ok(c)
}

impl WasmRuntime {
    pub fn new(cfg: RuntimeConfig) -> Result<Self, WasmError> {
        let config = engine_config(&cfg)?;
        if let Some(maps) = system_max_map_count() {
            let fit = max_instances_for_map_count(maps);
            if cfg.max_instances > fit {
                tracing::warn!(
                    max_instances = cfg.max_instances,
                    vm_max_map_count = maps,
                    fit,
                    "vm.max_map_count is too low for the instance pool: instantiation will \
                     fail with ENOMEM beyond about {fit} live instances"
                );
            }
        }
        let engine = Engine::new(&config).map_err(|e| {
            WasmError::Engine(format!(
                "{e:#} (max_instances {} × max_memory_bytes {} must fit the address space)",
                cfg.max_instances, cfg.max_memory_bytes
            ))
        })?;
        std::fs::create_dir_all(&cfg.cache_dir).map_err(|e| {
            WasmError::io(format!("creating cache dir {}", cfg.cache_dir.display()), e)
        })?;

        let mut p1_linker: Linker<GuestState<wasmtime_wasi::p1::WasiP1Ctx>> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1_linker, |s| s.p1())
            .map_err(|e| WasmError::Engine(format!("linking WASI p1: {e:#}")))?;
        let mut p2_linker = ComponentLinker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut p2_linker)
            .map_err(|e| WasmError::Engine(format!("linking WASI p2: {e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut p2_linker)
            .map_err(|e| WasmError::Engine(format!("linking wasi:http: {e:#}")))?;

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads)
            .thread_name("spindle-wasm")
            .enable_all()
            .build()
            .map_err(|e| WasmError::io("starting the wasm runtime threads", e))?;
        let handle = rt.handle().clone();

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("spindle-wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| WasmError::io("starting the epoch ticker", e))?;
        }

        let id = NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(StatCounters::default());
        let loader = Arc::new(Loader {
            compat: program::compat_key(&engine),
            engine: engine.clone(),
            p1_linker,
            p2_linker,
            cache_dir: cfg.cache_dir.clone(),
            runtime_id: id,
            stats: stats.clone(),
        });
        Ok(WasmRuntime {
            inner: Arc::new(Inner {
                engine,
                loader,
                programs: Mutex::new(HashMap::new()),
                stats,
                rt: Some(rt),
                handle,
                ticker_stop,
                live: Arc::new(AtomicU32::new(0)),
                max_instances: cfg.max_instances,
                worker_threads: cfg.worker_threads,
                memory: MemoryPolicy {
                    node: MemoryBudget::new(cfg.guest_memory_budget),
                    default_limit: cfg.default_memory_limit,
                },
                http_max_concurrency: cfg.http_max_concurrency,
                http_max_queue: cfg.http_max_queue,
                id,
            }),
        })
    }

    /// Loads the program with content digest `digest` (`sha256:<hex>`) from `wasm_path`.
    ///
    /// Compiles once per digest and keeps the precompiled code in the cache directory,
    /// so later loads, also after a restart, only map it; keeps it in memory as well, so
    /// a second load of the same digest is free. Concurrent loads of one digest compile
    /// once. Compilation runs on the runtime's blocking threads. The file's content is
    /// checked against the digest whenever it is compiled.
    pub async fn load(&self, digest: &str, wasm_path: &Path) -> Result<Program, WasmError> {
        program::digest_hex(digest)?;
        let cell = {
            let mut map = self
                .inner
                .programs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            map.entry(digest.to_owned()).or_default().clone()
        };
        if let Some(p) = cell.get() {
            self.inner.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(p.clone());
        }
        let program = cell
            .get_or_try_init(|| {
                let loader = self.inner.loader.clone();
                let digest = digest.to_owned();
                let path = wasm_path.to_owned();
                let job = self
                    .inner
                    .handle
                    .spawn_blocking(move || loader.load(&digest, &path));
                async move {
                    job.await
                        .map_err(|e| WasmError::Task(format!("loading a program: {e}")))?
                }
            })
            .await?;
        Ok(program.clone())
    }

    /// Drops the in-memory copy of a program (running instances keep theirs). The
    /// precompiled artifact on disk stays.
    pub fn evict(&self, digest: &str) {
        let mut map = self
            .inner
            .programs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.remove(digest);
    }

    /// Creates an instance of `program` and runs it on the runtime's threads. Returns at
    /// once; instantiation failures (such as a full pool) show up in the exit status.
    pub fn start(&self, program: &Program, spec: InstanceSpec) -> Result<Instance, WasmError> {
        if program.inner.runtime_id != self.inner.id {
            return Err(WasmError::ForeignProgram);
        }
        let slot = Slot::acquire(&self.inner.live, self.inner.max_instances)?;
        instance::start(
            &self.inner.engine,
            &self.inner.handle,
            program,
            spec,
            &self.inner.memory,
            slot,
        )
    }

    /// Serves the HTTP component `program` on `listener` until the returned server is
    /// stopped (or dropped), on the runtime's threads: HTTP/1.1 and h2c, one fresh
    /// instance per request, like `wasmtime serve`.
    ///
    /// `listener` must be bound and listening already; the runtime never creates a
    /// listening socket itself, so the caller decides its network namespace. `spec`
    /// applies to every request instance: argv, env, preopens and stdout/stderr sinks per
    /// instance; `memory_limit` and `cpu_millis` are each one budget shared by all of the
    /// server's concurrent instances (so `cpu_millis` may usefully exceed 1000). Without
    /// `cpu_millis` the server may use `worker_threads - 1` cores (with more than one
    /// worker). A trap or memory exhaustion ends that request's instance only, with a 500
    /// answer. Each live request instance holds one of the runtime's pool slots (and
    /// counts in [`live_instances`](Self::live_instances)); at most
    /// [`RuntimeConfig::http_max_concurrency`] are alive at once.
    ///
    /// Outgoing `wasi:http` requests (and `wasi:sockets`, if `spec.network`) leave from
    /// the network namespace of the runtime's worker threads, not the listener's.
    ///
    /// Fails at once if the program does not export `wasi:http/incoming-handler`, if the
    /// spec is invalid (for example a preopen that cannot be opened) or if the listener
    /// cannot be used.
    pub fn serve_http(
        &self,
        program: &Program,
        spec: InstanceSpec,
        listener: std::net::TcpListener,
    ) -> Result<HttpServer, WasmError> {
        if program.inner.runtime_id != self.inner.id {
            return Err(WasmError::ForeignProgram);
        }
        let program::Entry::Component {
            proxy: Some(pre), ..
        } = &program.inner.entry
        else {
            return Err(WasmError::NotRunnable(
                "program does not export wasi:http/incoming-handler: it cannot be served \
                 over HTTP"
                    .to_owned(),
            ));
        };
        // Every request builds its own context; build one now so a bad spec fails here
        // rather than on every request.
        instance::wasi_builder(&spec)?;
        let cpu = spec
            .cpu_millis
            .or_else(|| unlimited_server_cpu(self.inner.worker_threads));
        let cpu = limits::CpuAccount::for_limit(cpu);
        let memory = self.inner.memory.container(spec.memory_limit);
        let server = http::Server::new(
            self.inner.engine.clone(),
            pre.clone(),
            spec,
            http::Limits {
                cpu,
                memory,
                node_memory: self.inner.memory.clone(),
                live: self.inner.live.clone(),
                max_instances: self.inner.max_instances,
                max_concurrency: self.inner.http_max_concurrency,
                max_queue: self.inner.http_max_queue,
            },
        );
        let rt = match &server.spec.pod_network {
            Some(net) => net.executor.clone(),
            None => self.inner.handle.clone(),
        };
        http::start(&rt, server, listener)
            .map_err(|e| WasmError::io("serving HTTP on the given listener", e))
    }

    /// Instances started and not yet ended.
    pub fn live_instances(&self) -> u32 {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Bytes of linear memory and tables all guests hold now, against
    /// [`RuntimeConfig::guest_memory_budget`].
    pub fn guest_memory_bytes(&self) -> u64 {
        self.inner.memory.node.used()
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.inner.stats.snapshot()
    }

    /// The engine, for callers that need to share it (e.g. benchmarks).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}
