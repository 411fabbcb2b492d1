//! Per-instance limits: memory (a `ResourceLimiter`), CPU (a budget per period spent in
//! the epoch callback) and the kill switch.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wasmtime::{CallHook, ResourceLimiter, UpdateDeadline};

/// Caps the bytes of all linear memories and tables of one store together, and remembers
/// whether it ever had to say no, so a guest that dies after a denied grow is reported
/// as OOMKilled rather than as a generic crash.
pub(crate) struct MemoryLimiter {
    limit: Option<u64>,
    in_use: u64,
    /// Bytes granted by the last `*_growing` call; taken back if the grow then fails.
    pending: u64,
    denied: Option<u64>,
}

/// wasmtime stores one pointer per table element.
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;

impl MemoryLimiter {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        MemoryLimiter {
            limit,
            in_use: 0,
            pending: 0,
            denied: None,
        }
    }

    /// The size of the largest request that was refused, if any.
    pub(crate) fn denied(&self) -> Option<u64> {
        self.denied
    }

    pub(crate) fn limit(&self) -> Option<u64> {
        self.limit
    }

    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let delta = desired.saturating_sub(current);
        let want = self.in_use.saturating_add(delta);
        if let Some(limit) = self.limit {
            if want > limit {
                self.denied = Some(self.denied.unwrap_or(0).max(want));
                self.pending = 0;
                return false;
            }
        }
        self.in_use = want;
        self.pending = delta;
        true
    }

    fn grow_failed(&mut self) {
        self.in_use = self.in_use.saturating_sub(self.pending);
        self.pending = 0;
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
        })
    }

    /// Adds `spent` and returns when the caller may run again if the budget is spent.
    fn settle(&self, spent: Duration, now: Instant) -> Option<Instant> {
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
    /// A meter with an account of its own; `millis` is clamped to one core, the most a
    /// single guest can use.
    pub(crate) fn new(millis: u64) -> Self {
        Self::shared(CpuAccount::new(millis.clamp(1, 1000)))
    }

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

    #[test]
    fn limiter_counts_memories_and_tables_together() {
        let mut l = MemoryLimiter::new(Some(200 << 10));
        assert!(l.grow(0, 128 << 10));
        assert!(l.grow(0, 64 << 10));
        assert!(!l.grow(64 << 10, 128 << 10));
        assert_eq!(l.denied(), Some(256 << 10));
        l.grow_failed();
        assert!(l.grow(0, 8 << 10));
    }

    #[test]
    fn failed_grow_gives_bytes_back() {
        let mut l = MemoryLimiter::new(Some(128 << 10));
        assert!(l.grow(0, 128 << 10));
        l.grow_failed();
        assert!(l.grow(0, 128 << 10));
        assert_eq!(l.denied(), None);
    }

    #[test]
    fn budget_scales_with_millicores() {
        assert_eq!(CpuMeter::new(100).account.budget, Duration::from_millis(10));
        assert_eq!(CpuMeter::new(5000).account.budget, CPU_PERIOD);
        assert_eq!(CpuMeter::new(0).account.budget, CPU_PERIOD / 1000);
        assert_eq!(CpuAccount::new(2500).budget, CPU_PERIOD * 5 / 2);
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
