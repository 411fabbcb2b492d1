//! The OCI runtime spec of a container. It starts from oci-spec's defaults (the standard
//! /proc, /dev, /sys mounts) and sets what Kubernetes and containerd's CRI decide:
//! process, user, capabilities, seccomp, masked and read-only /proc paths, the pod's
//! network namespace, volume binds, cgroup limits, hostname. The result goes through
//! oci-spec's `Spec` type so a malformed value (an unknown capability, say) fails here
//! with a message, not in runc.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::{Error, Result};

/// A host directory or file bound into the container.
#[derive(Clone, Debug)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What a container's process is.
#[derive(Clone, Debug, Default)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub terminal: bool,
    /// Capability names without the `CAP_` prefix, as Kubernetes spells them.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub no_new_privileges: bool,
}

/// Everything about a container beyond its process.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub process: ProcessSpec,
    pub hostname: String,
    /// The pod's network namespace; None shares the host's (hostNetwork).
    pub netns: Option<PathBuf>,
    pub binds: Vec<Bind>,
    pub memory_limit: Option<u64>,
    /// CPU limit in millicores, as a CFS quota over a 100 ms period.
    pub cpu_millis: Option<u64>,
    /// CPU request in millicores, as cgroup shares (1024 per core).
    pub cpu_request_millis: Option<u64>,
    pub read_only_root: bool,
    pub cgroups_path: String,
    pub seccomp: Seccomp,
}

/// The container's seccomp filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// [`runtime_default_seccomp`]: what Kubernetes' `RuntimeDefault` asks for, and
    /// what every container gets unless it is privileged or asks otherwise.
    #[default]
    RuntimeDefault,
    /// No filter (privileged containers, `Unconfined` where the node allows it).
    Unconfined,
}

/// The capabilities a container gets by default (containerd's and Docker's set).
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux 6.x knows, in bit order (CHOWN is bit 0).
pub const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities of [`ALL_CAPS`] this process holds (its CapEff, as containerd's
/// `cap.Current` reads it): what a privileged container or `add: [ALL]` gets, as under
/// containerd's CRI. One the agent lacks (an agent inside a container, or under a
/// narrowed bounding set) cannot be granted: runc would refuse the start with "unable
/// to apply caps".
pub fn current_caps() -> &'static [&'static str] {
    static CURRENT: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    CURRENT.get_or_init(|| {
        let effective = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            });
        match effective {
            Some(bits) => ALL_CAPS
                .iter()
                .enumerate()
                .filter(|(bit, _)| bits & (1u64 << bit) != 0)
                .map(|(_, c)| *c)
                .collect(),
            None => ALL_CAPS.to_vec(),
        }
    })
}

/// Capabilities a container may add beyond [`DEFAULT_CAPS`] on a node that does not
/// allow privileged containers. Each one only widens what the container can do to its
/// own processes, files and namespaces:
/// - IPC_LOCK: mlock, and locked memory still counts against the memory cgroup;
/// - IPC_OWNER: System V IPC permission checks, in the pod's own IPC namespace;
/// - LEASE: file leases on files the container can already open;
/// - NET_BROADCAST: unused by the kernel.
///
/// Everything else needs `--allow-privileged`, because it reaches the host or other
/// tenants: SYS_ADMIN (mount, namespaces, most of the kernel), SYS_MODULE (kernel
/// modules), SYS_RAWIO (I/O ports, /dev/mem), SYS_PTRACE (other processes, kcmp,
/// process_vm_*), DAC_READ_SEARCH (open_by_handle_at reaches any host file through a
/// bind mount: the Shocker escape), NET_ADMIN (the host's network with hostNetwork,
/// firewall of the node's bridge), SYS_BOOT, SYS_TIME (host clock), BPF and PERFMON
/// (kernel programs and host-wide tracing), MAC_ADMIN/MAC_OVERRIDE (LSM policy),
/// AUDIT_CONTROL/AUDIT_READ (the host's audit), SYSLOG (kernel log, addresses),
/// SYS_NICE (real-time scheduling escapes the CFS quota and can starve the node),
/// SYS_RESOURCE (host-wide limits: pipe sizes, reserved disk space, quotas),
/// SYS_PACCT (host-wide accounting), SYS_TTY_CONFIG, LINUX_IMMUTABLE (immutable
/// files in volumes the kubelet must delete), WAKE_ALARM/BLOCK_SUSPEND (host power),
/// CHECKPOINT_RESTORE, and `ALL`. An allowlist, so a capability Linux adds later
/// needs the flag too.
const UNPRIVILEGED_EXTRA_CAPS: &[&str] = &["IPC_LOCK", "IPC_OWNER", "LEASE", "NET_BROADCAST"];

/// A capability name as Kubernetes and the OCI spec may spell it, without `CAP_`.
fn cap_name(c: &str) -> String {
    let upper = c.to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_string()
}

/// The capabilities of `add` that only a node with `--allow-privileged` may grant.
pub fn privileged_caps(add: &[String]) -> Vec<String> {
    add.iter()
        .map(|c| cap_name(c))
        .filter(|c| {
            !DEFAULT_CAPS.contains(&c.as_str()) && !UNPRIVILEGED_EXTRA_CAPS.contains(&c.as_str())
        })
        .collect()
}

fn capabilities(p: &ProcessSpec) -> Vec<String> {
    let norm = |c: &String| cap_name(c);
    let all = || current_caps().iter().map(|s| s.to_string()).collect();
    let mut caps: Vec<String> = if p.privileged {
        all()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    let drop: Vec<String> = p.cap_drop.iter().map(norm).collect();
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    } else {
        caps.retain(|c| !drop.contains(c));
    }
    for add in p.cap_add.iter().map(norm) {
        if add == "ALL" {
            caps = all();
        } else if !caps.contains(&add) {
            caps.push(add);
        }
    }
    caps.into_iter().map(|c| format!("CAP_{c}")).collect()
}

/// The PATH a process gets when neither its image nor its pod sets one: containerd's
/// default for Linux containers (its CRI starts every container's env with it), so an
/// image built from scratch can still run `sh` or `cat` by name.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `env` with [`DEFAULT_PATH`] first unless it sets PATH itself.
fn with_default_path(env: &[String]) -> Vec<String> {
    let has_path = env.iter().any(|kv| kv.starts_with("PATH="));
    let default = (!has_path).then(|| DEFAULT_PATH.to_string());
    default.into_iter().chain(env.iter().cloned()).collect()
}

/// The `process` object of a spec (also an exec's spec).
pub fn process(p: &ProcessSpec) -> Value {
    let caps = capabilities(p);
    let mut v = json!({
        "terminal": p.terminal,
        "user": { "uid": p.uid, "gid": p.gid },
        "args": p.args,
        "env": with_default_path(&p.env),
        "cwd": if p.cwd.is_empty() { "/" } else { p.cwd.as_str() },
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
        },
        // No rlimits: the process inherits the shim's, as under containerd's CRI.
        "noNewPrivileges": p.no_new_privileges,
    });
    if !p.additional_gids.is_empty() {
        v["user"]["additionalGids"] = json!(p.additional_gids);
    }
    v
}

/// Paths of /proc and /sys a container sees as empty (containerd's CRI list): host
/// devices, kernel memory and keyrings, timing and scheduler data that leak other
/// tenants' activity, and the RAPL power meters (CVE-2020-8694). Set here, not taken
/// from oci-spec's defaults, so a crate update cannot shorten it.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths of /proc a container sees read-only (containerd's CRI list): kernel
/// tunables and triggers that are not namespaced.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// System calls the default filter refuses with EPERM. The profile is a denylist
/// (default allow), written for Spindle rather than copied: an allowlist such as
/// containerd's must list every syscall of every libc and kernel version (a new one
/// missing from it breaks ordinary programs), while the escape routes are a short,
/// reviewable list of kernel surfaces no ordinary container needs:
const DENIED_SYSCALLS: &[&str] = &[
    // The filesystem tree: with a user namespace (below) these work without
    // privileges and are the usual first step of an escape.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // Namespaces: a new user namespace gives every capability inside it, and with
    // them most of the kernel's privileged code (the source of many escapes).
    "unshare",
    "setns",
    // File handles reach any file of a filesystem through a bind mount (Shocker).
    "open_by_handle_at",
    "name_to_handle_at",
    // The kernel itself: modules, kexec, reboot, swap, clock, accounting, quotas.
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "stime",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "iopl",
    "ioperm",
    "uselib",
    "nfsservctl",
    "lookup_dcookie",
    "vhangup",
    // Keyrings are not namespaced: keys of other tenants and the host.
    "keyctl",
    "add_key",
    "request_key",
    // Large kernel attack surfaces: eBPF, perf (host-wide tracing, side channels),
    // userfaultfd (stretches kernel race windows for exploits), io_uring (its
    // operations bypass this very filter).
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// Namespace flags of clone(2): creating namespaces is refused as `unshare` is.
/// (CLONE_NEWTIME is not here: clone(2) cannot take it, and its bit is part of the
/// exit signal there.)
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// The seccomp architectures a filter must cover: every ABI the host's processes can
/// call the kernel through (a 32-bit `int 0x80` call must not slip past the rules).
fn seccomp_arches() -> Vec<&'static str> {
    if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    }
}

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The `linux.seccomp` object of the default profile (see [`DENIED_SYSCALLS`]).
pub fn runtime_default_seccomp() -> Value {
    let mut rules = vec![json!({
        "names": DENIED_SYSCALLS,
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": EPERM,
    })];
    // clone(2) with a namespace flag; each flag is its own rule (rules of one syscall
    // are alternatives, the arguments of one rule all must match).
    for flag in CLONE_NAMESPACE_FLAGS {
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
            "args": [{ "index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ" }],
        }));
    }
    // clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall
    // back to clone(2), whose flags the rules above see.
    rules.push(json!({
        "names": ["clone3"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": ENOSYS,
    }));
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": seccomp_arches(),
        "syscalls": rules,
    })
}

/// Checks a value against oci-spec's types and encodes it.
fn encode<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: Value,
    what: &str,
) -> Result<Vec<u8>> {
    let typed: T = serde_json::from_value(v)
        .map_err(|e| Error::Invalid(format!("invalid OCI {what}: {e}")))?;
    serde_json::to_vec(&typed).map_err(|e| Error::Invalid(format!("encoding OCI {what}: {e}")))
}

/// An exec's process spec, encoded.
pub fn encode_process(p: &ProcessSpec) -> Result<Vec<u8>> {
    encode::<oci_spec::runtime::Process>(process(p), "process")
}

/// A container's full runtime spec, encoded.
pub fn build(c: &ContainerSpec) -> Result<Vec<u8>> {
    let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default())
        .map_err(|e| Error::Invalid(format!("default OCI spec: {e}")))?;
    spec["process"] = process(&c.process);
    spec["root"] = json!({ "path": "rootfs", "readonly": c.read_only_root });
    spec["hostname"] = json!(c.hostname);
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        // A container sees the cgroup tree read-only, as with containerd's defaults.
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys/fs/cgroup" {
                m["options"] = json!(["nosuid", "noexec", "nodev", "relatime", "ro"]);
            }
        }
        for b in &c.binds {
            let mut options = vec!["rbind", "rprivate"];
            options.push(if b.read_only { "ro" } else { "rw" });
            mounts.push(json!({
                "destination": b.destination,
                "type": "bind",
                "source": b.source,
                "options": options,
            }));
        }
    }
    let linux = &mut spec["linux"];
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if let Some(ns) = &c.netns {
        namespaces.push(json!({"type": "network", "path": ns}));
    }
    linux["namespaces"] = json!(namespaces);
    let mut resources = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if c.process.privileged {
        resources["devices"] = json!([{ "allow": true, "access": "rwm" }]);
        linux["maskedPaths"] = json!([]);
        linux["readonlyPaths"] = json!([]);
    } else {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    if c.seccomp == Seccomp::RuntimeDefault {
        linux["seccomp"] = runtime_default_seccomp();
    }
    if let Some(limit) = c.memory_limit {
        resources["memory"] = json!({ "limit": limit });
    }
    let mut cpu = serde_json::Map::new();
    if let Some(m) = c.cpu_millis {
        cpu.insert("period".into(), json!(100_000u64));
        cpu.insert("quota".into(), json!((m * 100).max(1000)));
    }
    if let Some(m) = c.cpu_request_millis {
        cpu.insert("shares".into(), json!((m * 1024 / 1000).max(2)));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    linux["resources"] = resources;
    linux["cgroupsPath"] = json!(c.cgroups_path);
    encode::<oci_spec::runtime::Spec>(spec, "runtime spec")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("json")
    }

    #[test]
    fn pod_network_volumes_and_limits() {
        let c = ContainerSpec {
            process: ProcessSpec {
                args: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["A=1".into()],
                uid: 1000,
                gid: 1000,
                cap_drop: vec!["NET_RAW".into()],
                cap_add: vec!["NET_ADMIN".into()],
                ..Default::default()
            },
            hostname: "web-0".into(),
            netns: Some("/run/netns/spindle-x".into()),
            binds: vec![Bind {
                source: "/var/lib/x/vol".into(),
                destination: "/data".into(),
                read_only: true,
            }],
            memory_limit: Some(32 << 20),
            cpu_millis: Some(250),
            cpu_request_millis: Some(100),
            read_only_root: true,
            cgroups_path: "/spindle/abc".into(),
            seccomp: Seccomp::RuntimeDefault,
        };
        let v = decode(&build(&c).expect("spec"));
        assert_eq!(v["hostname"], "web-0");
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(v["process"]["user"]["uid"], 1000);
        let caps = v["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("caps");
        assert!(caps.contains(&json!("CAP_NET_ADMIN")));
        assert!(!caps.contains(&json!("CAP_NET_RAW")));
        assert!(caps.contains(&json!("CAP_CHOWN")));
        assert_eq!(v["root"]["readonly"], true);
        let ns = v["linux"]["namespaces"].as_array().expect("ns");
        assert!(ns.contains(&json!({"type": "network", "path": "/run/netns/spindle-x"})));
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 25_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 102);
        let mounts = v["mounts"].as_array().expect("mounts");
        let bind = mounts
            .iter()
            .find(|m| m["destination"] == "/data")
            .expect("bind");
        assert_eq!(bind["options"], json!(["rbind", "rprivate", "ro"]));
        assert!(mounts.iter().any(|m| m["destination"] == "/proc"));
    }

    #[test]
    fn a_process_without_path_gets_containerds_default() {
        let p = |env: &[&str]| ProcessSpec {
            args: vec!["cat".into()],
            env: env.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let exec = decode(&encode_process(&p(&["A=1"])).expect("process"));
        assert_eq!(
            exec["env"],
            json!([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "A=1"
            ])
        );
        let run = ContainerSpec {
            process: p(&[]),
            ..Default::default()
        };
        let v = decode(&build(&run).expect("spec"));
        assert_eq!(v["process"]["env"], json!([DEFAULT_PATH]));
        // The image's or the pod's own PATH is kept as it is.
        let own = decode(&encode_process(&p(&["PATH=/opt/bin", "A=1"])).expect("process"));
        assert_eq!(own["env"], json!(["PATH=/opt/bin", "A=1"]));
    }

    #[test]
    fn host_network_has_no_network_namespace() {
        let v = decode(&build(&ContainerSpec::default()).expect("spec"));
        let ns = v["linux"]["namespaces"].as_array().expect("ns");
        assert!(ns.iter().all(|n| n["type"] != "network"), "{ns:?}");
    }

    #[test]
    fn defaults_confine_the_container() {
        let v = decode(&build(&ContainerSpec::default()).expect("spec"));
        let caps: std::collections::BTreeSet<&str> = v["process"]["capabilities"]["effective"]
            .as_array()
            .expect("caps")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let want: Vec<String> = DEFAULT_CAPS.iter().map(|c| format!("CAP_{c}")).collect();
        assert_eq!(caps, want.iter().map(String::as_str).collect());
        let seccomp = &v["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ALLOW");
        let denied = seccomp["syscalls"][0]["names"].as_array().expect("names");
        for name in [
            "mount",
            "unshare",
            "setns",
            "open_by_handle_at",
            "init_module",
            "bpf",
        ] {
            assert!(denied.contains(&json!(name)), "{name} allowed");
        }
        assert_eq!(seccomp["syscalls"][0]["errnoRet"], 1);
        assert!(seccomp["architectures"]
            .as_array()
            .is_some_and(|a| a.len() >= 2));
        let masked = v["linux"]["maskedPaths"].as_array().expect("masked");
        for p in [
            "/proc/kcore",
            "/proc/keys",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
        ] {
            assert!(masked.contains(&json!(p)), "{p} not masked");
        }
        let ro = v["linux"]["readonlyPaths"].as_array().expect("ro");
        assert!(ro.contains(&json!("/proc/sys")) && ro.contains(&json!("/proc/sysrq-trigger")));
    }

    #[test]
    fn privileged_and_unconfined() {
        let c = ContainerSpec {
            process: ProcessSpec {
                privileged: true,
                ..Default::default()
            },
            seccomp: Seccomp::Unconfined,
            ..Default::default()
        };
        let v = decode(&build(&c).expect("spec"));
        assert!(
            v["linux"].get("seccomp").is_none_or(Value::is_null),
            "{}",
            v["linux"]
        );
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .map(Vec::len),
            Some(current_caps().len())
        );
    }

    #[test]
    fn capabilities_beyond_the_container_need_privilege() {
        let s = |a: &[&str]| a.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert!(privileged_caps(&s(&["CHOWN", "cap_net_raw", "IPC_LOCK"])).is_empty());
        assert_eq!(
            privileged_caps(&s(&[
                "ALL",
                "CAP_SYS_ADMIN",
                "net_admin",
                "NEW_CAP_OF_2030"
            ])),
            s(&["ALL", "SYS_ADMIN", "NET_ADMIN", "NEW_CAP_OF_2030"])
        );
    }

    #[test]
    fn drop_all_and_unknown_capabilities() {
        let p = ProcessSpec {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        };
        assert_eq!(capabilities(&p), vec!["CAP_NET_BIND_SERVICE"]);
        let bad = ProcessSpec {
            cap_add: vec!["NOT_A_CAP".into()],
            ..Default::default()
        };
        let err = encode_process(&bad).expect_err("unknown cap");
        assert!(err.to_string().contains("invalid OCI process"), "{err}");
    }
}
