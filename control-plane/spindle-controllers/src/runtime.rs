//! The controller runtime: informers (list+watch into an indexed cache, then event
//! handlers) and a work queue (dedup, delayed requeue, per-key exponential back-off,
//! a key never processed by two workers at once).
//!
//! kube-runtime's `Controller` is close, but its cache and its triggers come from
//! separate watches, so a reconcile can run before the cache has seen the change that
//! triggered it. Here handlers run after the cache is updated (client-go's informer
//! order), which is what lets controllers trust their caches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};

use crate::workqueue_metrics::QueueMetrics;

/// `namespace/name`, or `name` for cluster-scoped objects.
pub fn key_of<K: Resource>(o: &K) -> String {
    match o.meta().namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", o.name_any()),
        _ => o.name_any(),
    }
}

pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, key),
    }
}

type IndexFn<K> = Box<dyn Fn(&K) -> Vec<String> + Send + Sync>;

struct CacheState<K> {
    objects: HashMap<String, Arc<K>>,
    /// Secondary index: index value -> object keys.
    index: HashMap<String, HashSet<String>>,
}

/// A read-mostly cache of one kind, fed by an informer.
pub struct Cache<K> {
    state: RwLock<CacheState<K>>,
    index_fn: Option<IndexFn<K>>,
    synced: watch::Sender<bool>,
    /// Dropped with the cache: tells its informer task to stop, so a controller that is
    /// restarted does not leave its old watches running beside the new ones.
    alive: watch::Sender<()>,
}

impl<K: Resource> Cache<K> {
    fn new(index_fn: Option<IndexFn<K>>) -> Self {
        let (synced, _) = watch::channel(false);
        let (alive, _) = watch::channel(());
        Cache {
            state: RwLock::new(CacheState {
                objects: HashMap::new(),
                index: HashMap::new(),
            }),
            index_fn,
            synced,
            alive,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CacheState<K>> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CacheState<K>> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A cache holding `objects`, fed by nothing: for tests of what reads caches.
    #[cfg(test)]
    pub(crate) fn with_objects(index_fn: Option<IndexFn<K>>, objects: Vec<K>) -> Self {
        let cache = Cache::new(index_fn);
        for o in objects {
            cache.upsert(o);
        }
        cache
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Objects whose index function produced `value`.
    pub fn by_index(&self, value: &str) -> Vec<Arc<K>> {
        let st = self.read();
        st.index
            .get(value)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| st.objects.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait until the first full list has been loaded.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn unindex(&self, st: &mut CacheState<K>, key: &str, old: &K) {
        if let Some(f) = &self.index_fn {
            for v in f(old) {
                if let Some(set) = st.index.get_mut(&v) {
                    set.remove(key);
                    if set.is_empty() {
                        st.index.remove(&v);
                    }
                }
            }
        }
    }

    fn upsert(&self, obj: K) -> (Arc<K>, Option<Arc<K>>) {
        let key = key_of(&obj);
        let obj = Arc::new(obj);
        let mut st = self.write();
        let old = st.objects.insert(key.clone(), obj.clone());
        if let Some(o) = &old {
            self.unindex(&mut st, &key, o);
        }
        if let Some(f) = &self.index_fn {
            for v in f(&obj) {
                st.index.entry(v).or_default().insert(key.clone());
            }
        }
        (obj, old)
    }

    fn remove(&self, key: &str) -> Option<Arc<K>> {
        let mut st = self.write();
        let old = st.objects.remove(key);
        if let Some(o) = &old {
            self.unindex(&mut st, key, o);
        }
        old
    }
}

/// What happened to an object, delivered after the cache reflects it.
pub enum Change<'a, K> {
    Upsert {
        new: &'a Arc<K>,
        old: Option<&'a Arc<K>>,
    },
    Delete(&'a Arc<K>),
}

impl<'a, K> Change<'a, K> {
    /// The object's states the change touches: new and old for an update, the last one
    /// for a deletion. A handler matching by labels must look at both, as either may
    /// have been selected.
    pub fn states(&self) -> Vec<&'a Arc<K>> {
        match self {
            Change::Upsert { new, old } => [Some(*new), *old].into_iter().flatten().collect(),
            Change::Delete(o) => vec![*o],
        }
    }
}

/// Start an informer: list+watch `api` into a cache, calling `handler` for every change
/// after the cache is updated. A re-list (after a 410 or a dropped watch) reconciles the
/// cache and reports what changed, including deletions missed meanwhile. The informer
/// stops once the returned cache (every clone of the `Arc`) is dropped.
pub fn informer<K, H>(
    api: Api<K>,
    cfg: watcher::Config,
    index_fn: Option<IndexFn<K>>,
    handler: H,
) -> Arc<Cache<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    H: Fn(Change<'_, K>) + Send + Sync + 'static,
{
    let cache = Arc::new(Cache::new(index_fn));
    let weak = Arc::downgrade(&cache);
    let mut alive = cache.alive.subscribe();
    tokio::spawn(async move {
        let mut stream = watcher(api, cfg).boxed();
        let mut relist: Option<HashSet<String>> = None;
        loop {
            let ev = tokio::select! {
                // Only ever an error: the cache, and with it the sender, is gone.
                _ = alive.changed() => return,
                ev = stream.next() => ev,
            };
            let (Some(ev), Some(c)) = (ev, weak.upgrade()) else {
                return;
            };
            let handle = |ch: Change<'_, K>| deliver(&handler, ch);
            match ev {
                Ok(watcher::Event::Apply(o)) => {
                    let (new, old) = c.upsert(o);
                    handle(Change::Upsert {
                        new: &new,
                        old: old.as_ref(),
                    });
                }
                Ok(watcher::Event::Delete(o)) => {
                    let key = key_of(&o);
                    let gone = c.remove(&key).unwrap_or_else(|| Arc::new(o));
                    handle(Change::Delete(&gone));
                }
                Ok(watcher::Event::Init) => relist = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some(seen) = relist.as_mut() {
                        seen.insert(key_of(&o));
                    }
                    let (new, old) = c.upsert(o);
                    handle(Change::Upsert {
                        new: &new,
                        old: old.as_ref(),
                    });
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(seen) = relist.take() {
                        let stale: Vec<String> = c
                            .read()
                            .objects
                            .keys()
                            .filter(|k| !seen.contains(*k))
                            .cloned()
                            .collect();
                        for k in stale {
                            if let Some(gone) = c.remove(&k) {
                                handle(Change::Delete(&gone));
                            }
                        }
                    }
                    c.synced.send_replace(true);
                }
                Err(e) => {
                    tracing::debug!(kind = %K::kind(&()), error = %e, "watch interrupted; retrying");
                    drop(c);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    cache
}

/// Call an informer's handler, containing a panic: the cache already holds the change,
/// and one controller's faulty handler must not end the informer every controller
/// sharing it depends on.
fn deliver<K: Resource<DynamicType = ()>>(handler: &impl Fn(Change<'_, K>), ch: Change<'_, K>) {
    contain(&K::kind(&()), || handler(ch));
}

/// Run one controller's part of an event handler, containing a panic (logged, the event
/// skipped for it): a handler shared by several controllers calls each part through
/// this, so one part's bug does not cost the others the event.
pub fn contain(what: &str, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        tracing::error!(
            handler = what,
            panic = panic_message(p.as_ref()),
            "informer event handler panicked; event skipped"
        );
    }
}

/// Default watcher config with the page size Kubernetes clients use.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(500)
}

// ---------------------------------------------------------------------------
// work queue

struct QueueState<T> {
    ready: std::collections::VecDeque<T>,
    queued: HashSet<T>,
    processing: HashSet<T>,
    /// Added again while being processed: requeue when the worker finishes.
    dirty: HashSet<T>,
    delayed: BTreeMap<(Instant, u64), T>,
    seq: u64,
    failures: HashMap<T, u32>,
    /// When each queued (or dirty) item was added, and when each item being processed
    /// was picked up: the queue and work durations of its metrics.
    added_at: HashMap<T, Instant>,
    started_at: HashMap<T, Instant>,
    /// Adds before the queue had its name (its metrics start when it runs).
    unnamed_adds: u64,
}

impl<T: Clone + Eq + Hash> QueueState<T> {
    /// Queue `item` unless it is queued already; an item being processed is marked
    /// dirty instead. Returns whether it was added (`Some(true)`: to the ready queue).
    fn enqueue(&mut self, item: T) -> Option<bool> {
        let to_ready = if self.processing.contains(&item) {
            if !self.dirty.insert(item.clone()) {
                return None;
            }
            false
        } else if self.queued.insert(item.clone()) {
            self.ready.push_back(item.clone());
            true
        } else {
            return None;
        };
        self.added_at.entry(item).or_insert_with(Instant::now);
        Some(to_ready)
    }
}

/// A deduplicating work queue with delayed adds and per-key back-off.
pub struct Queue<T> {
    state: Mutex<QueueState<T>>,
    notify: Notify,
    /// client-go's work queue metrics, from when the queue runs under its name.
    metrics: OnceLock<QueueMetrics>,
}

/// Where a requeue too far for an `Instant` lands instead (about 30 years).
const FAR_FUTURE_SECS: u64 = 86_400 * 365 * 30;

/// What a reconcile asks for next.
pub enum Action {
    Done,
    RequeueAfter(Duration),
}

impl<T: Clone + Eq + Hash + Send + Sync + 'static> Queue<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::new(QueueState {
                ready: Default::default(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                delayed: BTreeMap::new(),
                seq: 0,
                failures: HashMap::new(),
                added_at: HashMap::new(),
                started_at: HashMap::new(),
                unnamed_adds: 0,
            }),
            notify: Notify::new(),
            metrics: OnceLock::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, item: T) {
        let mut st = self.lock();
        let Some(to_ready) = st.enqueue(item) else {
            return;
        };
        self.count_add(&mut st);
        if to_ready {
            drop(st);
            self.notify.notify_one();
        }
    }

    fn count_add(&self, st: &mut QueueState<T>) {
        match self.metrics.get() {
            Some(m) => m.added(1, st.ready.len()),
            None => st.unnamed_adds += 1,
        }
    }

    pub fn add_after(&self, item: T, after: Duration) {
        // client-go counts every delayed add as a retry.
        if let Some(m) = self.metrics.get() {
            m.retry();
        }
        if after.is_zero() {
            return self.add(item);
        }
        let mut st = self.lock();
        st.seq += 1;
        let seq = st.seq;
        // A delay too far to represent is as good as never; it must not panic.
        let now = Instant::now();
        let at = now
            .checked_add(after)
            .unwrap_or_else(|| now + Duration::from_secs(FAR_FUTURE_SECS));
        st.delayed.insert((at, seq), item);
        drop(st);
        self.notify.notify_one();
    }

    /// Exponential back-off per key: 5 ms doubling up to 5 minutes.
    pub fn add_rate_limited(&self, item: T) {
        let n = {
            let mut st = self.lock();
            let n = st.failures.entry(item.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = Duration::from_millis(5u64.saturating_mul(1u64 << n.min(20)))
            .min(Duration::from_secs(300));
        self.add_after(item, delay);
    }

    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    pub(crate) async fn next(&self) -> T {
        loop {
            let wait = {
                let mut st = self.lock();
                let now = Instant::now();
                while let Some((&(at, seq), _)) = st.delayed.iter().next() {
                    if at > now {
                        break;
                    }
                    if let Some(item) = st.delayed.remove(&(at, seq)) {
                        if st.enqueue(item).is_some() {
                            self.count_add(&mut st);
                        }
                    }
                }
                if let Some(item) = st.ready.pop_front() {
                    st.queued.remove(&item);
                    st.processing.insert(item.clone());
                    let added = st.added_at.remove(&item);
                    st.started_at.insert(item.clone(), now);
                    if let Some(m) = self.metrics.get() {
                        m.picked(added, st.ready.len());
                    }
                    return item;
                }
                st.delayed
                    .keys()
                    .next()
                    .map(|(at, _)| at.saturating_duration_since(now))
            };
            match wait {
                Some(d) => {
                    let _ = tokio::time::timeout(d, self.notify.notified()).await;
                }
                None => self.notify.notified().await,
            }
        }
    }

    fn done(&self, item: &T) {
        let mut st = self.lock();
        st.processing.remove(item);
        let started = st.started_at.remove(item);
        let requeued = st.dirty.remove(item) && st.queued.insert(item.clone());
        if requeued {
            st.ready.push_back(item.clone());
        }
        if let Some(m) = self.metrics.get() {
            m.done(started);
            m.depth(st.ready.len());
        }
        if requeued {
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Name the queue's metrics, counting the adds made before.
    fn name_metrics(&self, name: &'static str) {
        let m = self.metrics.get_or_init(|| QueueMetrics::new(name));
        let mut st = self.lock();
        m.added(std::mem::take(&mut st.unnamed_adds), st.ready.len());
    }

    /// Run `workers` concurrent workers calling `reconcile` for each key, forever.
    pub async fn run<F, Fut, E>(self: Arc<Self>, workers: usize, name: &'static str, reconcile: F)
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send,
        E: std::fmt::Display,
        T: Debug,
    {
        self.name_metrics(name);
        let reconcile = Arc::new(reconcile);
        // A JoinSet aborts its tasks when dropped: workers end with the controller that
        // runs them instead of outliving a restart.
        let mut workers_set = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let q = self.clone();
            let reconcile = reconcile.clone();
            workers_set.spawn(async move {
                loop {
                    let item = q.next().await;
                    // A panicking reconcile is retried with back-off like a failed one:
                    // otherwise it would end this worker for good, with the key left
                    // marked as being processed and never looked at again.
                    let run = std::panic::AssertUnwindSafe(reconcile(item.clone()));
                    let outcome = match futures::FutureExt::catch_unwind(run).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(p) => {
                            let msg = panic_message(p.as_ref());
                            tracing::error!(controller = name, key = ?item, panic = msg, "reconcile panicked; backing off");
                            Err(format!("panic: {msg}"))
                        }
                    };
                    match outcome {
                        Ok(Action::Done) => q.forget(&item),
                        Ok(Action::RequeueAfter(d)) => {
                            q.forget(&item);
                            q.add_after(item.clone(), d);
                        }
                        Err(e) => {
                            tracing::debug!(controller = name, key = ?item, error = %e, "reconcile failed; backing off");
                            q.add_rate_limited(item.clone());
                        }
                    }
                    q.done(&item);
                }
            });
        }
        while workers_set.join_next().await.is_some() {}
    }
}

/// The text a panic was raised with, for the log.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_panicking_event_handler_is_contained() {
        let calls = AtomicUsize::new(0);
        let handler = |_: Change<'_, k8s_openapi::api::core::v1::Pod>| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("handler bug");
            }
        };
        let pod = Arc::new(k8s_openapi::api::core::v1::Pod::default());
        deliver(&handler, Change::Delete(&pod));
        deliver(&handler, Change::Delete(&pod));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "delivery goes on");
    }

    #[tokio::test]
    async fn a_requeue_too_far_to_represent_is_kept_not_panicked_on() {
        let q: Arc<Queue<u32>> = Queue::new();
        q.add_after(1, Duration::MAX);
        q.add(2);
        assert_eq!(q.next().await, 2);
    }

    #[tokio::test]
    async fn queue_dedups_and_requeues_dirty_keys() {
        let q: Arc<Queue<String>> = Queue::new();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        let first = q.next().await;
        assert_eq!(first, "a");
        // Re-added while processing: comes back once, after done().
        q.add("a".into());
        assert_eq!(q.next().await, "b");
        q.done(&"b".to_string());
        q.done(&first);
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test]
    async fn delayed_and_backoff() {
        let q: Arc<Queue<u32>> = Queue::new();
        let t = Instant::now();
        q.add_after(7, Duration::from_millis(50));
        assert_eq!(q.next().await, 7);
        assert!(t.elapsed() >= Duration::from_millis(45));
        q.done(&7);
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let c = calls.clone();
        let q2 = q.clone();
        tokio::spawn(q2.run(1, "test", move |_k: u32| {
            let (c, tx) = (c.clone(), tx.clone());
            async move {
                let _ = tx.send(Instant::now());
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err("boom")
                } else {
                    Ok(Action::Done)
                }
            }
        }));
        q.add(1);
        let mut at = Vec::new();
        for _ in 0..3 {
            let t = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("two failures are retried")
                .expect("the worker lives");
            at.push(t);
        }
        // Each retry waits out a doubling back-off (10 ms, then 20 ms).
        assert!(at[1] - at[0] >= Duration::from_millis(10), "{at:?}");
        assert!(at[2] - at[1] >= Duration::from_millis(20), "{at:?}");
        // Once the success is handled, nothing is queued, delayed or remembered for the
        // key, so no further call can come: the success ended the retries.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let st = q.lock();
                if st.processing.is_empty() {
                    assert!(st.ready.is_empty() && st.delayed.is_empty() && st.dirty.is_empty());
                    assert!(st.failures.is_empty(), "the success forgot the failures");
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the success was never handled");
            tokio::task::yield_now().await;
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "two failures retried with back-off, then success"
        );
        assert!(rx.try_recv().is_err(), "called again after success");
    }

    #[tokio::test]
    async fn a_running_queue_reports_client_gos_metrics_under_its_name() {
        let q: Arc<Queue<u32>> = Queue::new();
        // Added before the queue runs: counted once it has its name.
        q.add(1);
        q.add(1);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(q.clone().run(1, "runtime-test", move |k: u32| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(k);
                if k == 2 {
                    return Ok(Action::RequeueAfter(Duration::from_secs(3600)));
                }
                Ok::<_, String>(Action::Done)
            }
        }));
        async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<u32>) -> u32 {
            let f = tokio::time::timeout(Duration::from_secs(10), rx.recv());
            f.await.expect("reconciled").expect("worker alive")
        }
        assert_eq!(next(&mut rx).await, 1);
        q.add(2);
        assert_eq!(next(&mut rx).await, 2);
        let want = [
            r#"workqueue_adds_total{name="runtime-test"} 2"#,
            r#"workqueue_depth{name="runtime-test"} 0"#,
            r#"workqueue_retries_total{name="runtime-test"} 1"#,
            r#"workqueue_queue_duration_seconds_count{name="runtime-test"} 2"#,
            r#"workqueue_work_duration_seconds_count{name="runtime-test"} 2"#,
        ];
        // The second item is done (and requeued for later) just after its reconcile.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = spindle_metrics::CONTROL_PLANE.expose(None);
            if want.iter().all(|w| body.contains(&format!("{w}\n"))) {
                break;
            }
            assert!(Instant::now() < deadline, "{body}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_reconcile_is_retried_and_the_worker_lives_on() {
        let q: Arc<Queue<u32>> = Queue::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let c = calls.clone();
        // One worker: if the panic ended it, nothing would be reconciled again.
        tokio::spawn(q.clone().run(1, "test", move |k: u32| {
            let (c, tx) = (c.clone(), tx.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("reconcile bug");
                }
                let _ = tx.send(k);
                Ok::<_, String>(Action::Done)
            }
        }));
        q.add(1);
        q.add(2);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let k = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("keys reconciled after the panic")
                .expect("worker alive");
            seen.push(k);
        }
        seen.sort();
        assert_eq!(seen, [1, 2]);
    }
}
