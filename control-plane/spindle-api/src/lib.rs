//! `spindle-api` owns the *description* of every Kubernetes kind Spindle serves: one
//! registry table ([`registry::Registry`]) with group, version, kind, plural, short names,
//! categories, scope, subresources, schema and table printer, and beside it each kind's
//! behaviour ([`strategy`]: defaults, validation, create/update/delete rules).
//! The API server, discovery, OpenAPI and `kubectl get` tables are all derived from it, so
//! adding a kind is one entry in [`registry`] plus its strategy, never a new handler.

pub mod conversion;
mod defaults;
pub mod fields;
pub mod openapi;
pub mod printers;
pub mod registry;
pub mod strategy;
pub mod validation;

pub use registry::{Kind, Registry};
