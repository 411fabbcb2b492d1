//! `spindle-meta` is the one home of the Kubernetes concepts that more than one Spindle
//! crate needs: resource quantities, label selectors, the Event recorder, generated names
//! and Go durations, the join token, TLS verifiers, node Leases and the names of persistent storage. It depends on no other Spindle crate, so the API server, the
//! controllers, the scheduler and the node agents can all use it without depending on
//! each other.

pub mod certificates;
pub mod cron;
pub mod events;
pub mod lease;
pub mod names;
pub mod node_certificate;
pub mod quantity;
pub mod quota;
pub mod resource_metrics;
pub mod selector;
pub mod storage;
pub mod tls;
pub mod token;

pub use quantity::Quantity;

#[cfg(test)]
mod testing;
