//! Host-global names of a test cluster's pod network (bridge, nft table, netns prefix, pod
//! and Service CIDRs), unique among all test clusters running at once on the machine.
//! Each cluster reserves a numbered slot by holding an exclusive lock on a file under
//! /run/spindle-test-slots, and every name derives from the slot. A per-process counter
//! is not enough: cargo-nextest runs each test in its own process, and several checkouts
//! test side by side. The lock goes when its holder exits, even killed, so a slot never
//! leaks; what a killed holder left on the host is removed when the slot is taken again.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Slots 0..SLOTS: pod CIDRs 10.100-149.0.0/16, Service CIDRs 10.200-249.0.0/16, clear
/// of the defaults (10.42/16, 10.43/16) and of tests/multinode.rs (10.160/16, 10.161/16,
/// inside its own network namespaces).
pub const SLOTS: u32 = 50;

/// Names on the host that two test clusters running at once must not share.
#[derive(Clone, Debug)]
pub struct NetNames {
    pub slot: u32,
    pub bridge: String,
    pub netns_prefix: String,
    pub cluster_cidr: String,
    pub service_cidr: String,
    /// The slot's lock, held while any clone lives.
    _lock: Option<Arc<File>>,
}

/// Where the slot locks live: /run (root, cleared at boot), else /var/tmp.
pub fn slot_dir() -> PathBuf {
    for dir in ["/run/spindle-test-slots", "/var/tmp/spindle-test-slots"] {
        if std::fs::create_dir_all(dir).is_ok() {
            return PathBuf::from(dir);
        }
    }
    panic!("cannot create /run/spindle-test-slots or /var/tmp/spindle-test-slots");
}

impl NetNames {
    /// The names of the first free slot, reserved until the last clone drops.
    pub fn fresh() -> NetNames {
        (0..SLOTS).find_map(NetNames::try_slot).unwrap_or_else(|| {
            panic!(
                "all {SLOTS} test network slots in {} are taken: too many test clusters at once",
                slot_dir().display()
            )
        })
    }

    /// The names of slot `n` if no one holds it, reserved; leftovers of an earlier holder
    /// that was killed are removed first.
    pub fn try_slot(n: u32) -> Option<NetNames> {
        assert!(n < SLOTS, "slot {n} out of range");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(slot_dir().join(n.to_string()))
            .expect("slot lock file");
        file.try_lock().ok()?;
        let names = NetNames {
            slot: n,
            bridge: format!("spts{n}"),
            netns_prefix: format!("spts{n}"),
            cluster_cidr: format!("10.{}.0.0/16", 100 + n),
            service_cidr: format!("10.{}.0.0/16", 200 + n),
            _lock: Some(Arc::new(file)),
        };
        names.cleanup();
        Some(names)
    }

    /// Names reserving nothing, for a cluster value that never runs an agent.
    pub fn unreserved() -> NetNames {
        NetNames {
            slot: u32::MAX,
            bridge: String::new(),
            netns_prefix: String::new(),
            cluster_cidr: String::new(),
            service_cidr: String::new(),
            _lock: None,
        }
    }

    /// The flags of a server with its embedded agent.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--cluster-cidr".into(),
            self.cluster_cidr.clone(),
            "--service-cidr".into(),
            self.service_cidr.clone(),
        ];
        args.extend(self.agent_args());
        args
    }

    /// The flags that keep an agent's host-global names its own.
    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--cni-bridge".into(),
            self.bridge.clone(),
            "--netns-prefix".into(),
            self.netns_prefix.clone(),
            "--nft-table".into(),
            self.bridge.clone(),
            // Test clusters share the host's address: each DNS server takes a free port.
            "--cluster-dns-port".into(),
            "0".into(),
        ]
    }

    /// What a stopped agent should have removed itself; removed here in case it was
    /// killed instead.
    pub fn cleanup(&self) {
        if self._lock.is_none() {
            return;
        }
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&format!("{}-", self.netns_prefix)) {
                    let _ = Command::new("ip").args(["netns", "del", &name]).output();
                }
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .output();
        // The Service proxy's table is named after the bridge (see agent_args).
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.bridge])
            .stderr(Stdio::null())
            .output();
    }

    /// The pod network namespaces of this cluster that exist now.
    pub fn live_netns(&self) -> Vec<String> {
        std::fs::read_dir("/run/netns")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.starts_with(&format!("{}-", self.netns_prefix)))
                    .collect()
            })
            .unwrap_or_default()
    }
}
