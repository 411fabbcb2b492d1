//! Per-instance limits: memory (a `ResourceLimiter`), CPU (a budget per period spent in
//! the epoch callback) and the kill switch.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wasmtime::{CallHook, ResourceLimiter, UpdateDeadline};

/// Bytes of linear memory and tables that a set of stores may hold together: one
/// container's limit (shared by all request instances of an HTTP server, as a cgroup is by
/// a container's processes), or the node's budget for all guests. Guests live inside the
/// agent process with no cgroup of their own, so these are what stands between a guest and
/// the kernel's OOM killer choosing the agent.
pub(crate) struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes charged right now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Charges `bytes`, or returns the total that would have been in use.
    fn try_charge(&self, bytes: u64) -> Result<(), u64> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&want| want <= self.limit)
            })
            .map(drop)
            .map_err(|used| used.saturating_add(bytes))
    }

    fn release(&self, bytes: u64) {
        // Never below zero, even if a caller got its arithmetic wrong.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Where a container's memory cap came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LimitSource {
    /// The container's `limits.memory`.
    Spec,
    /// The node's default for containers without `limits.memory`.
    Default,
}

/// A refused grow: which budget said no, and to what total.
#[derive(Clone, Copy, Debug)]
struct Denial {
    want: u64,
    limit: u64,
    by_node: bool,
}

/// Charges all linear memories and tables of one store to the container's budget and the
/// node's, gives the bytes back when the store is dropped, and remembers whether it ever
/// had to say no, so a guest that dies after a denied grow is reported as OOMKilled rather
/// than as a generic crash.
pub(crate) struct MemoryLimiter {
    container: Arc<MemoryBudget>,
    source: LimitSource,
    node: Arc<MemoryBudget>,
    /// This store's bytes, charged to both budgets.
    in_use: u64,
    /// Bytes granted by the last `*_growing` call; taken back if the grow then fails.
    pending: u64,
    denied: Option<Denial>,
}

/// wasmtime stores one pointer per table element.
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;

impl MemoryLimiter {
    pub(crate) fn new(
        container: Arc<MemoryBudget>,
        source: LimitSource,
        node: Arc<MemoryBudget>,
    ) -> Self {
        MemoryLimiter {
            container,
            source,
            node,
            in_use: 0,
            pending: 0,
            denied: None,
        }
    }

    /// What to tell the user about a refused grow, if there was one.
    pub(crate) fn oom_message(&self) -> Option<String> {
        let d = self.denied?;
        Some(if d.by_node {
            format!(
                "the node's memory for Wasm guests ({} bytes) is used up (a grow to {} bytes \
                 in all was refused)",
                d.limit, d.want
            )
        } else {
            let why = match self.source {
                LimitSource::Spec => "",
                LimitSource::Default => {
                    ", the node's default for a container without limits.memory"
                }
            };
            format!(
                "memory limit of {} bytes exceeded{why} (a grow to {} bytes was refused)",
                d.limit, d.want
            )
        })
    }

    fn deny(&mut self, want: u64, limit: u64, by_node: bool) -> bool {
        let larger = self.denied.is_none_or(|d| want >= d.want);
        if larger {
            self.denied = Some(Denial {
                want,
                limit,
                by_node,
            });
        }
        self.pending = 0;
        false
    }

    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let delta = desired.saturating_sub(current);
        if let Err(want) = self.container.try_charge(delta) {
            return self.deny(want, self.container.limit, false);
        }
        if let Err(want) = self.node.try_charge(delta) {
            self.container.release(delta);
            return self.deny(want, self.node.limit, true);
        }
        self.in_use = self.in_use.saturating_add(delta);
        self.pending = delta;
        true
    }

    fn grow_failed(&mut self) {
        self.container.release(self.pending);
        self.node.release(self.pending);
        self.in_use = self.in_use.saturating_sub(self.pending);
        self.pending = 0;
    }
}

impl Drop for MemoryLimiter {
    /// The store's memories and tables go with it.
    fn drop(&mut self) {
        self.container.release(self.in_use);
        self.node.release(self.in_use);
    }
}

/// The node's memory rules for guests: the shared budget, and the cap of a container
/// without `limits.memory`.
#[derive(Clone)]
pub(crate) struct MemoryPolicy {
    pub(crate) node: Arc<MemoryBudget>,
    pub(crate) default_limit: u64,
}

impl MemoryPolicy {
    /// The budget of one container: its `limits.memory`, or the node's default.
    pub(crate) fn container(&self, limit: Option<u64>) -> (Arc<MemoryBudget>, LimitSource) {
        match limit {
            Some(l) => (MemoryBudget::new(l), LimitSource::Spec),
            None => (MemoryBudget::new(self.default_limit), LimitSource::Default),
        }
    }

    /// A limiter for one store charging `container` (see [`container`](Self::container)).
    pub(crate) fn limiter(
        &self,
        (container, source): (Arc<MemoryBudget>, LimitSource),
    ) -> MemoryLimiter {
        MemoryLimiter::new(container, source, self.node.clone())
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current as u64, desired as u64))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let current = (current as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        let desired = (desired as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.grow(current, desired))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }
}

/// The CFS-like accounting period: a guest limited to `m` millicores may run for
/// `PERIOD * m / 1000` in every period.
pub(crate) const CPU_PERIOD: Duration = Duration::from_millis(100);

/// A CPU budget per [`CPU_PERIOD`], spent by one store or shared by several (the
/// instances of one HTTP server, so a pod's concurrent requests together stay within the
/// pod's limit).
pub(crate) struct CpuAccount {
    budget: Duration,
    state: Mutex<AccountState>,
    /// Nanoseconds of run time charged since the account was made: the container's
    /// cumulative CPU time, as a cgroup's `cpuacct.usage` is (see [`Usage`]).
    total: AtomicU64,
}

struct AccountState {
    period_start: Instant,
    used: Duration,
}

impl CpuAccount {
    /// `millis` of one core: a budget of `CPU_PERIOD * millis / 1000` per period. Values
    /// over 1000 are only useful for an account shared by concurrent guests.
    pub(crate) fn new(millis: u64) -> Arc<Self> {
        let millis = u32::try_from(millis.max(1)).unwrap_or(u32::MAX);
        Arc::new(CpuAccount {
            budget: CPU_PERIOD.saturating_mul(millis) / 1000,
            state: Mutex::new(AccountState {
                period_start: Instant::now(),
                used: Duration::ZERO,
            }),
            total: AtomicU64::new(0),
        })
    }

    /// An account that never parks its guests: it only counts their CPU time.
    pub(crate) fn unlimited() -> Arc<Self> {
        Arc::new(CpuAccount {
            budget: Duration::MAX,
            state: Mutex::new(AccountState {
                period_start: Instant::now(),
                used: Duration::ZERO,
            }),
            total: AtomicU64::new(0),
        })
    }

    /// The account for a limit of `millis`, or a counting-only one without a limit.
    pub(crate) fn for_limit(millis: Option<u64>) -> Arc<Self> {
        millis.map_or_else(Self::unlimited, Self::new)
    }

    /// CPU time charged so far.
    pub(crate) fn total(&self) -> Duration {
        Duration::from_nanos(self.total.load(Ordering::Acquire))
    }

    /// Adds `spent` and returns when the caller may run again if the budget is spent.
    fn settle(&self, spent: Duration, now: Instant) -> Option<Instant> {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.total.fetch_add(nanos, Ordering::AcqRel);
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        st.used += spent;
        let elapsed = now.saturating_duration_since(st.period_start);
        if elapsed >= CPU_PERIOD {
            let periods =
                u32::try_from(elapsed.as_nanos() / CPU_PERIOD.as_nanos()).unwrap_or(u32::MAX);
            // Time spent idle is not banked: a long sleep does not buy a long burst.
            st.used = st.used.saturating_sub(self.budget.saturating_mul(periods));
            st.period_start += CPU_PERIOD.saturating_mul(periods);
        }
        (st.used >= self.budget).then_some(st.period_start + CPU_PERIOD)
    }
}

/// Counts how long a guest's wasm code actually ran (not time blocked in host calls, not
/// time parked by the executor), charges it to a [`CpuAccount`] and parks the guest
/// until the next period once the account's budget for the period is spent.
pub(crate) struct CpuMeter {
    account: Arc<CpuAccount>,
    /// Run time measured but not yet charged to the account; charged at every epoch
    /// and when the store is dropped, so call hooks never take the account's lock.
    pending: Duration,
    /// Start of the current stretch of wasm execution, if one is known.
    running_since: Option<Instant>,
    /// Written by the yield future when the executor resumes the guest, because the
    /// epoch callback gets no chance to run code at that moment. Nanoseconds since
    /// `base` plus one; zero means "nothing new".
    resumed_at: Arc<AtomicU64>,
    base: Instant,
}

impl CpuMeter {
    /// A meter charging `account`, which other meters may share.
    pub(crate) fn shared(account: Arc<CpuAccount>) -> Self {
        CpuMeter {
            account,
            pending: Duration::ZERO,
            running_since: None,
            resumed_at: Arc::new(AtomicU64::new(0)),
            base: Instant::now(),
        }
    }

    fn stretch_start(&mut self) -> Option<Instant> {
        let resumed = self.resumed_at.swap(0, Ordering::AcqRel);
        let resumed = (resumed > 0).then(|| self.base + Duration::from_nanos(resumed - 1));
        match (self.running_since.take(), resumed) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn charge(&mut self, now: Instant) {
        if let Some(start) = self.stretch_start() {
            self.pending += now.saturating_duration_since(start);
        }
    }

    pub(crate) fn on_call_hook(&mut self, hook: CallHook) {
        let now = Instant::now();
        match hook {
            CallHook::CallingWasm | CallHook::ReturningFromHost => {
                // A resume stamp left over from before the host call is stale.
                self.resumed_at.store(0, Ordering::Release);
                self.running_since = Some(now);
            }
            CallHook::CallingHost | CallHook::ReturningFromWasm => self.charge(now),
        }
    }

    /// Called at every epoch deadline while the guest runs.
    pub(crate) fn on_epoch(&mut self) -> UpdateDeadline {
        let now = Instant::now();
        self.charge(now);
        let wake = self.account.settle(std::mem::take(&mut self.pending), now);
        let stamp = self.resumed_at.clone();
        let base = self.base;
        let mark = move || {
            let nanos = u64::try_from(Instant::now().saturating_duration_since(base).as_nanos())
                .unwrap_or(u64::MAX - 1);
            stamp.store(nanos + 1, Ordering::Release);
        };
        let pause: Pin<Box<dyn Future<Output = ()> + Send>> = match wake {
            Some(wake) => {
                let wake = tokio::time::Instant::from_std(wake);
                Box::pin(async move {
                    tokio::time::sleep_until(wake).await;
                    mark();
                })
            }
            None => Box::pin(async move {
                tokio::task::yield_now().await;
                mark();
            }),
        };
        UpdateDeadline::YieldCustom(1, pause)
    }
}

impl Drop for CpuMeter {
    /// A guest that ends between epochs (a short HTTP request) still pays for its run.
    fn drop(&mut self) {
        self.charge(Instant::now());
        if !self.pending.is_zero() {
            self.account.settle(self.pending, Instant::now());
        }
    }
}

/// What a container's guests use now: the bytes of linear memory and tables its budget
/// is charged (its working set: guests have no other memory of their own) and the CPU time
/// its account was charged. Cheap to clone; read by the agent's resource metrics.
#[derive(Clone)]
pub struct Usage {
    memory: Arc<MemoryBudget>,
    cpu: Arc<CpuAccount>,
}

impl Usage {
    pub(crate) fn new(memory: Arc<MemoryBudget>, cpu: Arc<CpuAccount>) -> Self {
        Usage { memory, cpu }
    }

    /// Bytes of linear memory and tables held now.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.used()
    }

    /// CPU time the guests' wasm code ran, in all (charged at every epoch tick and when
    /// an instance ends).
    pub fn cpu_time(&self) -> Duration {
        self.cpu.total()
    }
}

/// Shared between an [`Instance`](crate::Instance), its [`Killer`](crate::Killer)s and the
/// guest's store.
#[derive(Default)]
pub(crate) struct KillSwitch {
    killed: AtomicBool,
    notify: Notify,
}

impl KillSwitch {
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        // notify_one keeps a permit if the task is not waiting yet, so a kill right after
        // start is not lost.
        self.notify.notify_one();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    pub(crate) async fn killed(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(container: u64, node: &Arc<MemoryBudget>) -> MemoryLimiter {
        MemoryLimiter::new(
            MemoryBudget::new(container),
            LimitSource::Spec,
            node.clone(),
        )
    }

    #[test]
    fn limiter_counts_memories_and_tables_together() {
        let node = MemoryBudget::new(u64::MAX);
        let mut l = limiter(200 << 10, &node);
        assert!(l.grow(0, 128 << 10));
        assert!(l.grow(0, 64 << 10));
        assert!(!l.grow(64 << 10, 128 << 10));
        assert!(l.oom_message().unwrap().contains(&format!("{}", 256 << 10)));
        l.grow_failed();
        assert!(l.grow(0, 8 << 10));
    }

    #[test]
    fn failed_grow_gives_bytes_back() {
        let node = MemoryBudget::new(u64::MAX);
        let mut l = limiter(128 << 10, &node);
        assert!(l.grow(0, 128 << 10));
        l.grow_failed();
        assert!(l.grow(0, 128 << 10));
        assert!(l.oom_message().is_none());
        assert_eq!(node.used(), 128 << 10);
        drop(l);
        assert_eq!(node.used(), 0);
    }

    #[test]
    fn node_budget_is_shared_and_refused_grows_charge_nothing() {
        let node = MemoryBudget::new(100);
        let mut a = limiter(80, &node);
        let mut b = limiter(80, &node);
        assert!(a.grow(0, 60));
        assert!(!b.grow(0, 60));
        assert!(b.oom_message().unwrap().contains("node's memory"));
        // The container's budget was not left charged by the refusal.
        assert_eq!(b.container.used(), 0);
        drop(a);
        assert!(b.grow(0, 60));
    }

    #[test]
    fn budget_scales_with_millicores() {
        assert_eq!(CpuAccount::new(100).budget, Duration::from_millis(10));
        assert_eq!(CpuAccount::new(1000).budget, CPU_PERIOD);
        assert_eq!(CpuAccount::new(0).budget, CPU_PERIOD / 1000);
        assert_eq!(CpuAccount::new(2500).budget, CPU_PERIOD * 5 / 2);
    }

    #[test]
    fn accounts_count_all_they_are_charged_and_unlimited_ones_never_park() {
        let now = Instant::now();
        let limited = CpuAccount::for_limit(Some(100));
        assert!(limited.settle(Duration::from_millis(30), now).is_some());
        assert_eq!(limited.total(), Duration::from_millis(30));
        let unlimited = CpuAccount::for_limit(None);
        for i in 0..50 {
            let at = now + Duration::from_millis(i);
            assert_eq!(unlimited.settle(Duration::from_millis(20), at), None);
        }
        assert_eq!(unlimited.total(), Duration::from_secs(1));
    }

    #[test]
    fn shared_account_adds_up_its_meters() {
        let account = CpuAccount::new(100);
        let now = Instant::now();
        assert_eq!(account.settle(Duration::from_millis(6), now), None);
        // A second guest's run exhausts the 10 ms budget: both must wait for the period.
        let wake = account.settle(Duration::from_millis(6), now);
        assert!(wake.is_some_and(|w| w > now));
        // After the period the debt is paid off and they may run again.
        assert_eq!(account.settle(Duration::ZERO, now + CPU_PERIOD * 2), None);
    }
}
