//! The embedded sled backend.
//!
//! All writes go through one committer task that takes every request waiting in its
//! queue, applies them in one sled transaction, flushes once (fsync) and only then
//! answers the callers and publishes their events. That gives group commit (many writes
//! per fsync under load), a single total order of revisions, and watchers that never see
//! a change that is not yet durable.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::sync::{broadcast, mpsc, oneshot, RwLock};

use crate::{Event, EventType, KeyValue, Result, Revision, Store, StoreError, WatchStream};

const REV_KEY: &[u8] = b"revision";
const COMPACT_KEY: &[u8] = b"compacted";

#[derive(Clone, Debug)]
pub struct SledStoreOptions {
    /// Number of events kept (on disk) for watches; older revisions answer Expired.
    pub history: usize,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Most writes committed in one transaction and fsync.
    pub max_batch: usize,
    /// Most bytes of events one watch replays from the history before it follows live
    /// events; a resume from further back answers Expired (the client relists), as a
    /// resume from before kube-apiserver's watch cache window does. The replay is
    /// gathered in memory, and the history holds up to `history` objects of 3 MiB each.
    pub max_replay_bytes: usize,
}

impl Default for SledStoreOptions {
    fn default() -> Self {
        SledStoreOptions {
            history: 100_000,
            max_batch: 512,
            cache_bytes: 128 << 20,
            max_replay_bytes: 16 << 20,
        }
    }
}

enum Op {
    Create,
    Update(Option<Revision>),
    Delete(Option<Revision>),
}

struct WriteReq {
    op: Op,
    key: String,
    value: Vec<u8>,
    reply: oneshot::Sender<Result<(Revision, Option<KeyValue>)>>,
}

struct Shared {
    db: sled::Db,
    objects: sled::Tree,
    revision: AtomicU64,
    /// Events with a revision at or below this are gone from the history.
    compacted: AtomicU64,
    events: sled::Tree,
    /// Held for writing while a batch is applied and flushed, so a list sees only whole,
    /// durable batches and the revision it reports matches its contents.
    apply_lock: Arc<RwLock<()>>,
    events_tx: broadcast::Sender<Arc<Event>>,
}

/// The sled-backed [`Store`].
pub struct SledStore {
    shared: Arc<Shared>,
    writes: mpsc::Sender<WriteReq>,
    max_replay_bytes: usize,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode_value(rev: Revision, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&rev.to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn decode_value(key: &str, raw: &[u8]) -> Result<KeyValue> {
    if raw.len() < 8 {
        return Err(StoreError::Backend(format!("corrupt value for key {key}")));
    }
    let mut rev = [0u8; 8];
    rev.copy_from_slice(&raw[..8]);
    Ok(KeyValue {
        key: key.to_string(),
        value: Arc::from(&raw[8..]),
        mod_revision: u64::from_be_bytes(rev),
    })
}

fn encode_event(ev: &Event) -> Vec<u8> {
    let kind = match ev.kind {
        EventType::Created => 0u8,
        EventType::Modified => 1,
        EventType::Deleted | EventType::Progress => 2,
    };
    let key = ev.key.as_bytes();
    let mut v = Vec::with_capacity(5 + key.len() + ev.value.len());
    v.push(kind);
    v.extend_from_slice(&(key.len() as u32).to_be_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(&ev.value);
    v
}

fn decode_event(rev: Revision, raw: &[u8]) -> Option<Event> {
    let kind = match raw.first()? {
        0 => EventType::Created,
        1 => EventType::Modified,
        2 => EventType::Deleted,
        _ => return None,
    };
    let len = u32::from_be_bytes(raw.get(1..5)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(raw.get(5..5 + len)?).ok()?.to_string();
    let value = Arc::from(raw.get(5 + len..)?);
    Some(Event {
        kind,
        key,
        value,
        revision: rev,
    })
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64> {
    Ok(match tree.get(key).map_err(backend)? {
        Some(b) if b.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b);
            u64::from_be_bytes(a)
        }
        _ => 0,
    })
}

impl SledStore {
    /// Open (or create) the store under `dir`. Must be called inside a tokio runtime.
    pub fn open(dir: &Path, opts: SledStoreOptions) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(backend)?;
        let objects = db.open_tree("objects").map_err(backend)?;
        let events = db.open_tree("events").map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        let revision = read_u64(&meta, REV_KEY)?;
        let mut compacted = read_u64(&meta, COMPACT_KEY)?;
        // History before the first kept event is gone, whatever the meta says.
        let first = events
            .iter()
            .keys()
            .flatten()
            .find_map(|k| <[u8; 8]>::try_from(k.as_ref()).ok().map(u64::from_be_bytes));
        compacted = match first {
            Some(f) => compacted.max(f.saturating_sub(1)),
            None => compacted.max(revision),
        };
        let (events_tx, _) = broadcast::channel(16384);
        let shared = Arc::new(Shared {
            db,
            objects,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            events: events.clone(),
            apply_lock: Arc::new(RwLock::new(())),
            events_tx,
        });
        let (tx, rx) = mpsc::channel(4096);
        let max_replay_bytes = opts.max_replay_bytes;
        let committer = Committer {
            shared: shared.clone(),
            events,
            meta,
            opts,
        };
        tokio::spawn(committer.run(rx));
        Ok(SledStore {
            shared,
            writes: tx,
            max_replay_bytes,
        })
    }

    async fn write(
        &self,
        op: Op,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(Revision, Option<KeyValue>)> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(WriteReq {
                op,
                key: key.to_string(),
                value,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

struct Committer {
    shared: Arc<Shared>,
    events: sled::Tree,
    meta: sled::Tree,
    opts: SledStoreOptions,
}

type Outcome = Result<(Revision, Option<KeyValue>)>;

impl Committer {
    async fn run(self, mut rx: mpsc::Receiver<WriteReq>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < self.opts.max_batch {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(std::mem::take(&mut batch)).await;
        }
    }

    async fn commit(&self, batch: Vec<WriteReq>) {
        let base = self.shared.revision.load(Ordering::SeqCst);
        let _guard = self.shared.apply_lock.write().await;
        let applied = self.apply(&batch, base);
        let (outcomes, new_events, last_rev) = match applied {
            Ok(x) => x,
            Err(e) => {
                for req in batch {
                    let _ = req.reply.send(Err(StoreError::Backend(e.to_string())));
                }
                return;
            }
        };
        if !new_events.is_empty() {
            // Durable before anyone hears about it.
            if let Err(e) = self.shared.db.flush_async().await {
                tracing::error!(error = %e, "store flush failed");
                for req in batch {
                    let _ = req
                        .reply
                        .send(Err(StoreError::Backend(format!("flush failed: {e}"))));
                }
                return;
            }
            self.shared.revision.store(last_rev, Ordering::SeqCst);
            for ev in &new_events {
                let _ = self.shared.events_tx.send(ev.clone());
            }
            // Trim in chunks so the history stays near its bound without a delete per write.
            let keep = self.opts.history as u64;
            let compacted = self.shared.compacted.load(Ordering::SeqCst);
            if last_rev.saturating_sub(compacted) > keep + keep / 10 + 1 {
                self.trim_events(last_rev - keep);
            }
        }
        for (req, outcome) in batch.into_iter().zip(outcomes) {
            let _ = req.reply.send(outcome);
        }
    }

    fn trim_events(&self, upto: Revision) {
        let mut b = sled::Batch::default();
        for k in self.events.range(..=(upto.to_be_bytes())).keys().flatten() {
            b.remove(k);
        }
        // Mark the history gone before removing it, so a concurrent replay notices.
        self.shared.compacted.store(upto, Ordering::SeqCst);
        let res = self.events.apply_batch(b).and_then(|_| {
            self.meta
                .insert(COMPACT_KEY, &upto.to_be_bytes())
                .map(|_| ())
        });
        if let Err(e) = res {
            // Losing a trim only keeps more history than needed.
            tracing::warn!(error = %e, "trimming watch history failed");
        }
    }

    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        batch: &[WriteReq],
        base: Revision,
    ) -> Result<(Vec<Outcome>, Vec<Arc<Event>>, Revision), String> {
        let objects = &self.shared.objects;
        let res: Result<(Vec<Outcome>, Vec<Arc<Event>>, Revision), TransactionError<String>> =
            (objects, &self.events, &self.meta).transaction(|(o, e, m)| {
                let mut rev = base;
                let mut outcomes = Vec::with_capacity(batch.len());
                let mut evs = Vec::new();
                for req in batch {
                    let cur = o.get(req.key.as_bytes())?;
                    let cur = match cur.map(|raw| decode_value(&req.key, &raw)).transpose() {
                        Ok(c) => c,
                        Err(err) => {
                            return Err(ConflictableTransactionError::Abort(err.to_string()))
                        }
                    };
                    let outcome: Outcome = match (&req.op, cur) {
                        (Op::Create, Some(_)) => Err(StoreError::AlreadyExists(req.key.clone())),
                        (Op::Update(_), None) | (Op::Delete(_), None) => {
                            Err(StoreError::NotFound(req.key.clone()))
                        }
                        (Op::Update(Some(exp)), Some(c)) | (Op::Delete(Some(exp)), Some(c))
                            if c.mod_revision != *exp =>
                        {
                            Err(StoreError::Conflict {
                                key: req.key.clone(),
                                expected: *exp,
                                actual: c.mod_revision,
                            })
                        }
                        (Op::Delete(_), Some(c)) => {
                            rev += 1;
                            o.remove(req.key.as_bytes())?;
                            let ev = Event {
                                kind: EventType::Deleted,
                                key: req.key.clone(),
                                value: c.value.clone(),
                                revision: rev,
                            };
                            e.insert(&rev.to_be_bytes(), encode_event(&ev))?;
                            evs.push(Arc::new(ev));
                            Ok((rev, Some(c)))
                        }
                        (op, prev) => {
                            rev += 1;
                            o.insert(req.key.as_bytes(), encode_value(rev, &req.value))?;
                            let kind = if matches!(op, Op::Create) {
                                EventType::Created
                            } else {
                                EventType::Modified
                            };
                            let ev = Event {
                                kind,
                                key: req.key.clone(),
                                value: Arc::from(req.value.as_slice()),
                                revision: rev,
                            };
                            e.insert(&rev.to_be_bytes(), encode_event(&ev))?;
                            evs.push(Arc::new(ev));
                            Ok((rev, prev))
                        }
                    };
                    outcomes.push(outcome);
                }
                if rev != base {
                    m.insert(REV_KEY, &rev.to_be_bytes())?;
                }
                Ok((outcomes, evs, rev))
            });
        res.map_err(|e| match e {
            TransactionError::Abort(s) => s,
            TransactionError::Storage(s) => s.to_string(),
        })
    }
}

fn matches_prefix(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        match self.shared.objects.get(key.as_bytes()).map_err(backend)? {
            Some(raw) => Ok(Some(decode_value(key, &raw)?)),
            None => Ok(None),
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, Revision)> {
        let shared = self.shared.clone();
        let prefix = prefix.to_string();
        let start = start_after.map(str::to_string);
        let guard = self.shared.apply_lock.clone().read_owned().await;
        // sled iteration is blocking work; keep it off the async workers for big lists.
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let rev = shared.revision.load(Ordering::SeqCst);
            let mut out = Vec::new();
            let iter = match &start {
                // Keys strictly after the continue key, still inside the prefix.
                Some(s) if s.as_str() >= prefix.as_str() => {
                    let mut from = s.as_bytes().to_vec();
                    from.push(0);
                    shared.objects.range(from..)
                }
                _ => shared.objects.range(prefix.as_bytes().to_vec()..),
            };
            for item in iter {
                let (k, v) = item.map_err(backend)?;
                if !k.starts_with(prefix.as_bytes()) {
                    break;
                }
                if limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
                let key = String::from_utf8_lossy(&k).into_owned();
                out.push(decode_value(&key, &v)?);
            }
            Ok((out, rev))
        })
        .await
        .map_err(backend)?
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        Ok(self.write(Op::Create, key, value).await?.0)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision> {
        Ok(self.write(Op::Update(expected), key, value).await?.0)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let (rev, prev) = self.write(Op::Delete(expected), key, Vec::new()).await?;
        let prev = prev.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        Ok((rev, prev))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let mut rx = self.shared.events_tx.subscribe();
        let shared = self.shared.clone();
        let p = prefix.to_string();
        let max_bytes = self.max_replay_bytes;
        // Replay from the on-disk history up to what is acknowledged (durable) now; live
        // events after that come from the broadcast, deduplicated by revision.
        let replay: Vec<Event> = tokio::task::spawn_blocking(move || {
            let compacted = shared.compacted.load(Ordering::SeqCst);
            if from < compacted {
                return Err(StoreError::Expired {
                    requested: from,
                    oldest: compacted + 1,
                });
            }
            let upto = shared.revision.load(Ordering::SeqCst);
            let mut out = Vec::new();
            let mut bytes = 0usize;
            if from < upto {
                for item in shared
                    .events
                    .range((from + 1).to_be_bytes()..=upto.to_be_bytes())
                {
                    let (k, v) = item.map_err(backend)?;
                    let Ok(kb) = <[u8; 8]>::try_from(k.as_ref()) else {
                        continue;
                    };
                    if let Some(ev) = decode_event(u64::from_be_bytes(kb), &v) {
                        if matches_prefix(&ev.key, &p) {
                            bytes = bytes.saturating_add(ev.key.len() + ev.value.len());
                            if bytes > max_bytes {
                                return Err(StoreError::Expired {
                                    requested: from,
                                    oldest: ev.revision,
                                });
                            }
                            out.push(ev);
                        }
                    }
                }
            }
            // Trimmed while we read: the replay may have holes.
            let now_compacted = shared.compacted.load(Ordering::SeqCst);
            if from < now_compacted {
                return Err(StoreError::Expired {
                    requested: from,
                    oldest: now_compacted + 1,
                });
            }
            Ok((out, upto))
        })
        .await
        .map_err(backend)?
        .map(|(mut evs, upto)| {
            evs.retain(|e| e.revision <= upto);
            evs
        })?;
        let prefix = prefix.to_string();
        let mut last = replay.last().map(|e| e.revision).unwrap_or(from);
        let stream = async_stream_like(move |tx: mpsc::Sender<Event>| async move {
            for ev in replay {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            let mut progress_at = std::time::Instant::now();
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if ev.revision <= last {
                            continue;
                        }
                        if !matches_prefix(&ev.key, &prefix) {
                            // Let idle watchers learn how far the store has moved, so their
                            // bookmarks (and resumes) do not fall out of the history.
                            last = ev.revision;
                            if progress_at.elapsed() >= std::time::Duration::from_secs(1) {
                                progress_at = std::time::Instant::now();
                                let _ = tx.try_send(Event {
                                    kind: EventType::Progress,
                                    key: String::new(),
                                    value: Arc::from(&[][..]),
                                    revision: ev.revision,
                                });
                            }
                            continue;
                        }
                        last = ev.revision;
                        if tx.send((*ev).clone()).await.is_err() {
                            return;
                        }
                    }
                    // Too slow a watcher: end the stream; the client re-watches.
                    Err(broadcast::error::RecvError::Lagged(_))
                    | Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(stream)
    }

    fn current_revision(&self) -> Revision {
        self.shared.revision.load(Ordering::SeqCst)
    }
}

/// Runs a producer task feeding a channel and exposes it as a stream; the task stops when
/// the stream is dropped.
fn async_stream_like<F, Fut>(f: F) -> WatchStream
where
    F: FnOnce(mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream_wrapper(rx))
}

fn tokio_stream_wrapper(
    mut rx: mpsc::Receiver<Event>,
) -> impl futures::Stream<Item = Event> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn crud_cas_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), SledStoreOptions::default()).unwrap();
        let r1 = s.create("/a/1", b"one".to_vec()).await.unwrap();
        assert!(matches!(
            s.create("/a/1", b"x".to_vec()).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let r2 = s.update("/a/1", b"two".to_vec(), Some(r1)).await.unwrap();
        assert!(r2 > r1);
        assert!(matches!(
            s.update("/a/1", b"three".to_vec(), Some(r1)).await,
            Err(StoreError::Conflict { .. })
        ));
        let got = s.get("/a/1").await.unwrap().unwrap();
        assert_eq!(&*got.value, b"two");
        assert_eq!(got.mod_revision, r2);
        s.create("/b/1", b"b".to_vec()).await.unwrap();
        let (items, rev) = s.list("/a/").await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(rev, s.current_revision());
        let (_, prev) = s.delete("/a/1", None).await.unwrap();
        assert_eq!(&*prev.value, b"two");
        assert!(s.get("/a/1").await.unwrap().is_none());
    }

    /// Open `dir` once the previous store has let go of it: sled holds a file lock until
    /// its last handle drops, and the committer task drops its handle only after it
    /// has seen the channel close.
    async fn reopen(dir: &Path) -> SledStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match SledStore::open(dir, SledStoreOptions::default()) {
                Ok(s) => return s,
                Err(StoreError::Backend(e))
                    if e.contains("lock") && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let rev;
        {
            let s = SledStore::open(dir.path(), SledStoreOptions::default()).unwrap();
            s.create("/k/1", b"v".to_vec()).await.unwrap();
            rev = s.create("/k/2", b"w".to_vec()).await.unwrap();
        }
        let s = reopen(dir.path()).await;
        assert_eq!(s.current_revision(), rev);
        let mut w = s.watch("/k/", 0).await.unwrap();
        assert_eq!(w.next().await.unwrap().key, "/k/1");
        assert_eq!(w.next().await.unwrap().key, "/k/2");
    }

    #[tokio::test]
    async fn watch_replays_then_follows_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(
            dir.path(),
            SledStoreOptions {
                history: 3,
                max_batch: 16,
                ..SledStoreOptions::default()
            },
        )
        .unwrap();
        let mut revs = Vec::new();
        for i in 0..5 {
            revs.push(s.create(&format!("/w/{i}"), vec![i as u8]).await.unwrap());
        }
        assert!(matches!(
            s.watch("/w/", revs[0]).await,
            Err(StoreError::Expired { .. })
        ));
        let mut w = s.watch("/w/", revs[2]).await.unwrap();
        assert_eq!(w.next().await.unwrap().revision, revs[3]);
        assert_eq!(w.next().await.unwrap().revision, revs[4]);
        s.create("/other/x", vec![]).await.unwrap();
        let r = s.update("/w/1", vec![9], None).await.unwrap();
        let ev = w.next().await.unwrap();
        assert_eq!((ev.revision, ev.kind), (r, EventType::Modified));
    }

    #[tokio::test]
    async fn a_replay_larger_than_its_byte_bound_expires() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(
            dir.path(),
            SledStoreOptions {
                max_replay_bytes: 20,
                ..SledStoreOptions::default()
            },
        )
        .unwrap();
        let mut revs = Vec::new();
        for i in 0..4 {
            // 8 bytes of key and value each.
            revs.push(s.create(&format!("/r/{i}"), vec![0; 4]).await.unwrap());
        }
        // Other prefixes do not count.
        s.create("/other/big", vec![0; 100]).await.unwrap();
        assert!(matches!(
            s.watch("/r/", 0).await,
            Err(StoreError::Expired { .. })
        ));
        let mut w = s.watch("/r/", revs[1]).await.unwrap();
        assert_eq!(w.next().await.unwrap().revision, revs[2]);
        assert_eq!(w.next().await.unwrap().revision, revs[3]);
    }

    #[tokio::test]
    async fn concurrent_writers_get_distinct_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SledStore::open(dir.path(), SledStoreOptions::default()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.create(&format!("/c/{i}"), vec![]).await.unwrap()
            }));
        }
        let mut revs = Vec::new();
        for t in tasks {
            revs.push(t.await.unwrap());
        }
        revs.sort();
        revs.dedup();
        assert_eq!(revs.len(), 200);
        assert_eq!(s.list("/c/").await.unwrap().0.len(), 200);
    }
}
