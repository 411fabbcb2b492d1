//! What the controller remembers between passes about its own writes, because its
//! caches show them late (kube's expectations): pods it created and has not seen yet,
//! pods it deleted, and pods whose tracking finalizer it removed. None of it is needed
//! after a restart, when the caches are listed afresh.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::tracking::has_finalizer;

/// Expectations not met within this long are dropped: a lost watch event must not
/// wedge a Job for ever.
const TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct State {
    /// Per Job key: pod name → completion index of the pods created, not yet seen.
    creates: HashMap<String, HashMap<String, (Option<i32>, Instant)>>,
    /// Uids of pods deleted by the controller.
    deletes: HashMap<String, Instant>,
    /// Uids of pods whose finalizer the controller removed.
    removed: HashMap<String, Instant>,
}

pub struct Memory(Mutex<State>);

impl Memory {
    pub fn new() -> Memory {
        Memory(Mutex::new(State::default()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget what the cache now shows for this Job's `pods`, and what is too old.
    pub fn observe(&self, key: &str, pods: &[Arc<Pod>]) {
        // Borrowed, not copied: a Job keeps its finished pods, so a pass over a large
        // one sees thousands, every pass.
        fn uid(p: &Arc<Pod>) -> Option<&str> {
            p.metadata.uid.as_deref()
        }
        let names: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let held: HashSet<&str> = pods
            .iter()
            .filter(|p| has_finalizer(p))
            .filter_map(uid)
            .collect();
        let present: HashSet<&str> = pods.iter().filter_map(uid).collect();
        let marked: HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .filter_map(uid)
            .collect();
        let mut st = self.lock();
        if let Some(c) = st.creates.get_mut(key) {
            c.retain(|n, (_, at)| !names.contains(n.as_str()) && at.elapsed() < TTL);
        }
        // Entries of other Jobs' pods are not `present` here and stay until their TTL.
        st.removed.retain(|u, at| {
            (held.contains(u.as_str()) || !present.contains(u.as_str())) && at.elapsed() < TTL
        });
        st.deletes
            .retain(|u, at| !marked.contains(u.as_str()) && at.elapsed() < TTL);
    }

    pub fn forget_job(&self, key: &str) {
        self.lock().creates.remove(key);
    }

    /// Indexes (None for NonIndexed) of the pods created and not yet seen.
    pub fn pending_creates(&self, key: &str) -> Vec<Option<i32>> {
        self.lock()
            .creates
            .get(key)
            .map(|c| c.values().map(|(i, _)| *i).collect())
            .unwrap_or_default()
    }

    pub fn expect_creates(&self, key: &str, pods: &[(String, Option<i32>)]) {
        let mut st = self.lock();
        let c = st.creates.entry(key.to_string()).or_default();
        for (n, i) in pods {
            c.insert(n.clone(), (*i, Instant::now()));
        }
    }

    pub fn create_failed(&self, key: &str, name: &str) {
        if let Some(c) = self.lock().creates.get_mut(key) {
            c.remove(name);
        }
    }

    pub fn deleted(&self, uids: impl IntoIterator<Item = String>) {
        let mut st = self.lock();
        for u in uids {
            st.deletes.insert(u, Instant::now());
        }
    }

    pub fn deleting(&self) -> HashSet<String> {
        self.lock().deletes.keys().cloned().collect()
    }

    pub fn unfinalized(&self, uids: impl IntoIterator<Item = String>) {
        let mut st = self.lock();
        for u in uids {
            st.removed.insert(u, Instant::now());
        }
    }

    pub fn removed(&self) -> HashSet<String> {
        self.lock().removed.keys().cloned().collect()
    }
}
