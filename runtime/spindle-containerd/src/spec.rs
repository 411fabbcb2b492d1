//! The OCI runtime spec of a container. It starts from oci-spec's defaults (the standard
//! /proc, /dev, /sys mounts, masked and read-only paths) and sets what Kubernetes
//! decides: process, user, capabilities, the pod's network namespace, volume binds,
//! cgroup limits, hostname. The result goes through oci-spec's `Spec` type so a
//! malformed value (an unknown capability, say) fails here with a message, not in runc.

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
}

/// The capabilities a container gets by default (containerd's and Docker's set).
const DEFAULT_CAPS: &[&str] = &[
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

/// Every capability Linux 6.x knows, for privileged containers and `add: [ALL]`.
const ALL_CAPS: &[&str] = &[
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

fn capabilities(p: &ProcessSpec) -> Vec<String> {
    let norm = |c: &String| c.trim_start_matches("CAP_").to_ascii_uppercase();
    let mut caps: Vec<String> = if p.privileged {
        ALL_CAPS.iter().map(|s| s.to_string()).collect()
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
            caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
        } else if !caps.contains(&add) {
            caps.push(add);
        }
    }
    caps.into_iter().map(|c| format!("CAP_{c}")).collect()
}

/// The `process` object of a spec (also an exec's spec).
pub fn process(p: &ProcessSpec) -> Value {
    let caps = capabilities(p);
    let mut v = json!({
        "terminal": p.terminal,
        "user": { "uid": p.uid, "gid": p.gid },
        "args": p.args,
        "env": p.env,
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
    fn host_network_has_no_network_namespace() {
        let v = decode(&build(&ContainerSpec::default()).expect("spec"));
        let ns = v["linux"]["namespaces"].as_array().expect("ns");
        assert!(ns.iter().all(|n| n["type"] != "network"), "{ns:?}");
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
