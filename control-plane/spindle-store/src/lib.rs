//! `spindle-store` owns persistence of API objects: the [`Store`] trait (a revisioned
//! key-value store with compare-and-swap writes and watches from a revision, shaped like
//! etcd's API so an etcd backend can slot in) and [`SledStore`], the embedded default.
//!
//! Values are opaque bytes; the API server encodes objects and stamps `resourceVersion`
//! from the revision on read, as the Kubernetes apiserver does over etcd.

mod sled_store;

pub use sled_store::{SledStore, SledStoreOptions};

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

/// A store-wide, monotonically increasing revision (etcd's `mod_revision`).
pub type Revision = u64;

/// A stored value and the revision of its last change.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: Arc<[u8]>,
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Created,
    Modified,
    Deleted,
    /// No change under the watched prefix up to `revision` (key and value empty): lets a
    /// watcher advance its resume point while nothing it watches changes.
    Progress,
}

/// One change. For a delete, `value` is the last state before deletion.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: EventType,
    pub key: String,
    pub value: Arc<[u8]>,
    pub revision: Revision,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        requested: Revision,
        oldest: Revision,
    },
    #[error("storage backend error: {0}")]
    Backend(String),
    #[error("the store is shutting down")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of events in revision order. It ends when the watcher falls too far behind
/// (the client then re-watches from its last revision, as Kubernetes clients do).
pub type WatchStream = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// Persistence for API objects. Every acknowledged write is durable.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// All keys under `prefix`, in key order, with the revision the snapshot was taken at.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        self.list_page(prefix, None, None).await
    }
    /// Keys under `prefix` after `start_after` (exclusive), in key order, at most `limit`.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, Revision)>;
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision>;
    /// Replace the value; with `expected` the write only happens if the key's
    /// mod_revision still equals it.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision>;
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)>;
    /// Events on keys under `prefix` with revision greater than `from`.
    /// `from` older than the kept history gives [`StoreError::Expired`].
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;
    fn current_revision(&self) -> Revision;
}
