//! What a container's cgroup says it uses (v1 or v2), for the agent's resource metrics:
//! cumulative CPU time, memory in use, and the working set (what is in use less the
//! inactive page cache the kernel can take back), as cAdvisor reads them for the kubelet.

use std::path::Path;
use std::time::Duration;

/// One reading of a cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu: Duration,
    pub memory_usage: u64,
    pub working_set: u64,
}

/// The cgroup at `cgroups_path` (as given to runc), or `None` when it is gone or unreadable.
pub fn usage(cgroups_path: &str) -> Option<CgroupUsage> {
    usage_under(Path::new("/sys/fs/cgroup"), cgroups_path)
}

/// [`usage`] under another root (tests).
pub fn usage_under(root: &Path, cgroups_path: &str) -> Option<CgroupUsage> {
    let rel = cgroups_path.trim_start_matches('/');
    v2(&root.join(rel)).or_else(|| v1(root, rel))
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// The value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn number(p: &Path) -> Option<u64> {
    read(p)?.trim().parse().ok()
}

fn v2(dir: &Path) -> Option<CgroupUsage> {
    let usec = keyed(&read(&dir.join("cpu.stat"))?, "usage_usec")?;
    let memory_usage = number(&dir.join("memory.current"))?;
    let inactive = read(&dir.join("memory.stat"))
        .and_then(|s| keyed(&s, "inactive_file"))
        .unwrap_or(0);
    Some(CgroupUsage {
        cpu: Duration::from_micros(usec),
        memory_usage,
        working_set: memory_usage.saturating_sub(inactive),
    })
}

fn v1(root: &Path, rel: &str) -> Option<CgroupUsage> {
    let nanos = number(&root.join("cpuacct").join(rel).join("cpuacct.usage"))?;
    let mem = root.join("memory").join(rel);
    let memory_usage = number(&mem.join("memory.usage_in_bytes"))?;
    let inactive = read(&mem.join("memory.stat"))
        .and_then(|s| keyed(&s, "total_inactive_file"))
        .unwrap_or(0);
    Some(CgroupUsage {
        cpu: Duration::from_nanos(nanos),
        memory_usage,
        working_set: memory_usage.saturating_sub(inactive),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_v2_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spindle/abc");
        write(&dir.join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\n");
        write(&dir.join("memory.current"), "1048576\n");
        write(&dir.join("memory.stat"), "anon 100\ninactive_file 4096\n");
        let u = usage_under(root.path(), "/spindle/abc").unwrap();
        assert_eq!(u.cpu, Duration::from_micros(2500));
        assert_eq!(u.memory_usage, 1 << 20);
        assert_eq!(u.working_set, (1 << 20) - 4096);
    }

    #[test]
    fn reads_v1_files_and_misses_a_gone_cgroup() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root.path().join("cpuacct/spindle/x/cpuacct.usage"),
            "7000\n",
        );
        let mem = root.path().join("memory/spindle/x");
        write(&mem.join("memory.usage_in_bytes"), "8192\n");
        write(
            &mem.join("memory.stat"),
            "cache 1\ntotal_inactive_file 10000\n",
        );
        let u = usage_under(root.path(), "/spindle/x").unwrap();
        assert_eq!(u.cpu, Duration::from_nanos(7000));
        // Never below zero, whatever the kernel's counters say.
        assert_eq!(u.working_set, 0);
        assert_eq!(usage_under(root.path(), "/spindle/gone"), None);
    }
}
