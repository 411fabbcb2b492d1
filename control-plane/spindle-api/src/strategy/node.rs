//! Nodes: cluster-scoped, registered by their agent with a status it owns, and given a
//! pod CIDR when they join.

use super::{Allocation, Strategy};

pub struct Nodes;

impl Strategy for Nodes {
    // The agent registers its node with the status it observed (capacity, addresses,
    // conditions), which creation therefore keeps.
    fn allocation(&self) -> Option<Allocation> {
        Some(Allocation::NodePodCidr)
    }
}
