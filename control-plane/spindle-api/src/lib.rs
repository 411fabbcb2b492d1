//! `spindle-api` owns the *description* of every Kubernetes kind Spindle serves: one
//! registry table ([`registry::Registry`]) with group, version, kind, plural, short names,
//! categories, scope, subresources, schema, defaulting, validation and table columns.
//! The API server, discovery, OpenAPI and `kubectl get` tables are all derived from it, so
//! adding a kind is one entry in [`registry`], never a new handler.

pub mod fields;
pub mod openapi;
pub mod printers;
pub mod registry;
pub mod validation;

pub use registry::{Kind, Registry};
