//! The node's own usage, from the host's kernel counters: CPU time busy on all cores
//! (`/proc/stat`), memory in use and its working set (`/proc/meminfo`), and when the
//! machine booted.

use std::time::Duration;

use crate::runtime::Usage;

/// What the node uses now, and the memory still available to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostUsage {
    pub usage: Usage,
    pub available: u64,
}

pub fn read() -> Option<HostUsage> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(HostUsage {
        usage: Usage {
            cpu: busy_time(&stat, clock_ticks())?,
            ..memory(&meminfo)?
        },
        available: kib(&meminfo, "MemAvailable")?,
    })
}

/// When the machine booted, in seconds since the epoch.
pub fn boot_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Time all cores were busy: the aggregate `cpu` line less idle and iowait (guest time is
/// already in user time).
fn busy_time(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let nanos = u128::from(busy) * 1_000_000_000 / u128::from(ticks_per_second.max(1));
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

fn kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let n: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(n * 1024)
    })
}

/// In use: all but free memory; the working set: in use less inactive page cache, as the
/// kubelet reports the node's root cgroup.
fn memory(meminfo: &str) -> Option<Usage> {
    let used = kib(meminfo, "MemTotal")?.saturating_sub(kib(meminfo, "MemFree")?);
    let inactive = kib(meminfo, "Inactive(file)").unwrap_or(0);
    Some(Usage {
        cpu: Duration::ZERO,
        memory_usage: used,
        working_set: used.saturating_sub(inactive),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 20 30 5000 400 6 4 40 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nbtime 17\n";
        assert_eq!(busy_time(stat, 100), Some(Duration::from_secs(2)));
    }

    #[test]
    fn memory_from_meminfo() {
        let info = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    500 kB\nInactive(file):  300 kB\n";
        let m = memory(info).unwrap();
        assert_eq!(m.memory_usage, 800 * 1024);
        assert_eq!(m.working_set, 500 * 1024);
        assert_eq!(kib(info, "MemAvailable"), Some(500 * 1024));
    }

    #[test]
    fn reads_this_host() {
        let h = read().expect("the host's counters");
        assert!(h.usage.cpu > Duration::ZERO);
        assert!(h.usage.working_set > 0 && h.usage.working_set <= h.usage.memory_usage);
        assert!(boot_time().is_some_and(|t| t > 0));
    }
}
