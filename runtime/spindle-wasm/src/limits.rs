//! Per-instance limits: memory (a `ResourceLimiter`), CPU (a budget per period spent in
//! the epoch callback) and the kill switch.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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

/// Counts how long a guest's wasm code actually ran (not time blocked in host calls, not
/// time parked by the executor) and parks it until the next period once the period's
/// budget is spent.
pub(crate) struct CpuMeter {
    budget: Duration,
    period_start: Instant,
    used: Duration,
    /// Start of the current stretch of wasm execution, if one is known.
    running_since: Option<Instant>,
    /// Written by the yield future when the executor resumes the guest, because the
    /// epoch callback gets no chance to run code at that moment. Nanoseconds since
    /// `base` plus one; zero means "nothing new".
    resumed_at: Arc<AtomicU64>,
    base: Instant,
}

impl CpuMeter {
    pub(crate) fn new(millis: u64) -> Self {
        let millis = millis.clamp(1, 1000);
        let now = Instant::now();
        CpuMeter {
            budget: CPU_PERIOD * millis as u32 / 1000,
            period_start: now,
            used: Duration::ZERO,
            running_since: None,
            resumed_at: Arc::new(AtomicU64::new(0)),
            base: now,
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
            self.used += now.saturating_duration_since(start);
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
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed >= CPU_PERIOD {
            let periods = elapsed.as_nanos() / CPU_PERIOD.as_nanos();
            // Time spent idle is not banked: a long sleep does not buy a long burst.
            let credit = self
                .budget
                .saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
            self.used = self.used.saturating_sub(credit);
            self.period_start +=
                CPU_PERIOD.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
        }
        let stamp = self.resumed_at.clone();
        let base = self.base;
        let mark = move || {
            let nanos = u64::try_from(Instant::now().saturating_duration_since(base).as_nanos())
                .unwrap_or(u64::MAX - 1);
            stamp.store(nanos + 1, Ordering::Release);
        };
        let pause: Pin<Box<dyn Future<Output = ()> + Send>> = if self.used >= self.budget {
            let wake = tokio::time::Instant::from_std(self.period_start + CPU_PERIOD);
            Box::pin(async move {
                tokio::time::sleep_until(wake).await;
                mark();
            })
        } else {
            Box::pin(async move {
                tokio::task::yield_now().await;
                mark();
            })
        };
        UpdateDeadline::YieldCustom(1, pause)
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
        assert_eq!(CpuMeter::new(100).budget, Duration::from_millis(10));
        assert_eq!(CpuMeter::new(5000).budget, CPU_PERIOD);
        assert_eq!(CpuMeter::new(0).budget, CPU_PERIOD / 1000);
    }
}
