//! Nodes: cluster-scoped, registered by their agent with a status it owns, and given a
//! pod CIDR when they join.

use super::{Allocation, Strategy, Subresource};

pub struct Nodes;

/// `nodes/{name}/proxy/{path}`: a request passed to the node's agent (its `/metrics`,
/// `/healthz`); reads only.
const SUBRESOURCES: &[Subresource] = &[Subresource {
    name: "proxy",
    group: "",
    version: "v1",
    kind: "NodeProxyOptions",
    verbs: &["get"],
    connect: true,
}];

impl Strategy for Nodes {
    fn subresources(&self) -> &'static [Subresource] {
        SUBRESOURCES
    }

    // The agent registers its node with the status it observed (capacity, addresses,
    // conditions), which creation therefore keeps.
    fn allocation(&self) -> Option<Allocation> {
        Some(Allocation::NodePodCidr)
    }
}
