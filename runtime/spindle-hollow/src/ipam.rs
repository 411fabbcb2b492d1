//! Fake but unique addresses for hollow nodes and their pods.
//!
//! Nodes get 10.255.x.y (index + 1, so up to 65,534 nodes). Each node owns a pod block
//! carved out of 10.128.0.0/10 by node index (a /24, or larger when `--pods` needs it),
//! which is also published as the node's `spec.podCIDR`, so a pod IP tells which node it
//! is on, as with a real CNI's host-local ranges. These ranges stay clear of the usual
//! cluster CIDRs (10.42/16, 10.43/16, 10.96/12) so they are easy to tell apart.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};

const NODE_NET: u32 = u32::from_be_bytes([10, 255, 0, 0]);
const POD_NET: u32 = u32::from_be_bytes([10, 128, 0, 0]);
/// Host bits of the 10.128.0.0/10 pod network.
const POD_NET_HOST_BITS: u32 = 22;

/// The InternalIP of node `index`.
pub fn node_ip(index: usize) -> Result<Ipv4Addr> {
    let n = u32::try_from(index + 1).unwrap_or(u32::MAX);
    if n >= 0xffff {
        bail!("at most 65,534 hollow nodes per process (node addresses are 10.255.x.y)");
    }
    Ok(Ipv4Addr::from(NODE_NET + n))
}

/// One node's pod address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodBlock {
    base: u32,
    host_bits: u32,
}

impl PodBlock {
    /// The block of node `index` when a node may hold `max_pods` pods.
    pub fn for_node(index: usize, max_pods: u32) -> Result<Self> {
        // Network, gateway and broadcast addresses are never handed out.
        let need = u64::from(max_pods) + 3;
        let host_bits = (64 - (need - 1).leading_zeros()).max(8);
        if host_bits >= POD_NET_HOST_BITS {
            bail!("--pods {max_pods} is too large for the hollow pod network");
        }
        let blocks = 1u64 << (POD_NET_HOST_BITS - host_bits);
        let Ok(i) = u32::try_from(index) else {
            bail!("node index {index} out of range");
        };
        if u64::from(i) >= blocks {
            bail!("at most {blocks} hollow nodes fit the pod network 10.128.0.0/10 with --pods {max_pods}");
        }
        Ok(PodBlock {
            base: POD_NET + (i << host_bits),
            host_bits,
        })
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), 32 - self.host_bits)
    }

    pub fn size(&self) -> u32 {
        1 << self.host_bits
    }

    pub fn addr(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + offset)
    }

    /// The offset of `ip` in this block, if it is in it.
    pub fn offset_of(&self, ip: &str) -> Option<u32> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        let off = u32::from(ip).checked_sub(self.base)?;
        (off < self.size()).then_some(off)
    }
}

/// Which addresses of one block are in use.
#[derive(Debug)]
pub struct Ipam {
    used: Vec<bool>,
    /// Next offset to try: allocation goes round the block so a freed address is not
    /// handed out again at once (stale endpoints would point at the new pod).
    cursor: u32,
}

impl Ipam {
    pub fn new(block: &PodBlock) -> Self {
        Ipam {
            used: vec![false; block.size() as usize],
            cursor: 2,
        }
    }

    /// A free offset (2 ..= size-2), or `None` when the block is full.
    pub fn alloc(&mut self) -> Option<u32> {
        let size = u32::try_from(self.used.len()).ok()?;
        let usable = size.checked_sub(3)?;
        for _ in 0..usable {
            let off = self.cursor;
            self.cursor = if off + 1 >= size - 1 { 2 } else { off + 1 };
            if !self.used[off as usize] {
                self.used[off as usize] = true;
                return Some(off);
            }
        }
        None
    }

    /// Record an address found on an existing pod (e.g. after a restart).
    pub fn mark(&mut self, offset: u32) {
        if let Some(u) = self.used.get_mut(offset as usize) {
            *u = true;
        }
    }

    pub fn release(&mut self, offset: u32) {
        if let Some(u) = self.used.get_mut(offset as usize) {
            *u = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ips_are_unique() {
        assert_eq!(node_ip(0).unwrap(), Ipv4Addr::new(10, 255, 0, 1));
        assert_eq!(node_ip(999).unwrap(), Ipv4Addr::new(10, 255, 3, 232));
        assert!(node_ip(70_000).is_err());
    }

    #[test]
    fn pod_blocks() {
        let b = PodBlock::for_node(0, 110).unwrap();
        assert_eq!(b.cidr(), "10.128.0.0/24");
        let b = PodBlock::for_node(300, 110).unwrap();
        assert_eq!(b.cidr(), "10.129.44.0/24");
        assert_eq!(b.offset_of("10.129.44.7"), Some(7));
        assert_eq!(b.offset_of("10.129.45.7"), None);
        assert_eq!(b.offset_of("garbage"), None);
        // 254 pods need 257 addresses: a /23.
        let b = PodBlock::for_node(1, 254).unwrap();
        assert_eq!(b.cidr(), "10.128.2.0/23");
        assert!(PodBlock::for_node(20_000, 110).is_err());
    }

    #[test]
    fn ipam_allocates_round_robin_and_fills_up() {
        let b = PodBlock::for_node(0, 110).unwrap();
        let mut ipam = Ipam::new(&b);
        let a = ipam.alloc().unwrap();
        assert_eq!(a, 2);
        ipam.release(a);
        assert_eq!(
            ipam.alloc(),
            Some(3),
            "a freed address is not reused at once"
        );
        ipam.mark(4);
        assert_eq!(ipam.alloc(), Some(5));
        let mut n = 3;
        while ipam.alloc().is_some() {
            n += 1;
        }
        // Offsets 2..=254 are usable: 253 addresses.
        assert_eq!(n, 253);
    }
}
