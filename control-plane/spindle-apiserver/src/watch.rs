//! Watch streams: newline-delimited JSON events over a chunked response, resuming from a
//! resourceVersion, with bookmarks, timeouts and 410 for expired history.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};
use spindle_store::EventType;
use tokio::sync::mpsc;

use crate::request::{Query, Target};
use crate::rest::{decode_stored, list_objects, selectors, Selectors};
use crate::status::ApiError;
use crate::stored::StoredObject;
use crate::{tables, AppState};

const DEFAULT_TIMEOUT: u64 = 1800;
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

struct Emitter {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    table: bool,
    headers_sent: bool,
    target: Target,
    include: Option<String>,
}

impl Emitter {
    async fn send_line(&mut self, line: &str) -> bool {
        self.tx
            .send(Ok(Bytes::copy_from_slice(line.as_bytes())))
            .await
            .is_ok()
    }

    async fn send(&mut self, ty: &str, mut obj: Value) -> bool {
        if self.table && ty != "ERROR" && ty != "BOOKMARK" {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            obj = tables::table(
                &self.target.kind,
                &[obj],
                &rv,
                None,
                self.include.as_deref(),
                !self.headers_sent,
            );
            self.headers_sent = true;
        } else if let Some(m) = obj.as_object_mut() {
            if ty != "ERROR" {
                m.insert("apiVersion".into(), json!(self.target.kind.api_version()));
                m.insert("kind".into(), json!(self.target.kind.kind));
            }
        }
        let mut line = json!({"type": ty, "object": obj}).to_string();
        line.push('\n');
        self.tx.send(Ok(Bytes::from(line))).await.is_ok()
    }
}

/// A watch event's wire line, shared by every watcher of the same change: with many
/// watchers on pods, building it once per change instead of once per watcher is most of
/// the API server's watch cost. The line is spliced from the stored bytes (see
/// [`StoredObject`]); selectors look at a sparse view (labels, and the fields a field
/// selector names), and the whole object is parsed only for a watcher that wants a table.
pub struct Decoded {
    pub line: String,
    kv: spindle_store::KeyValue,
    /// The labels, for the common label-selector-only watch (computed once).
    labels_view: std::sync::OnceLock<Value>,
    full: std::sync::OnceLock<Value>,
}

impl Decoded {
    /// The whole object (parsed on first use).
    pub fn full(&self) -> &Value {
        self.full.get_or_init(|| {
            decode_stored(&self.kv).unwrap_or_else(|_| Value::Object(Default::default()))
        })
    }

    /// Whether the object passes `sel`.
    pub fn matches(&self, sel: &Selectors) -> bool {
        if sel.is_empty() {
            return true;
        }
        let view = |sel: &Selectors| {
            StoredObject::parse(&self.kv)
                .map(|o| o.selector_view(sel))
                .unwrap_or_default()
        };
        if sel.fields.is_empty() {
            return sel.matches(self.labels_view.get_or_init(|| view(sel)));
        }
        sel.matches(&view(sel))
    }
}

/// Recently decoded events by revision.
type DecodedByRevision = (
    std::collections::HashMap<u64, Arc<Decoded>>,
    std::collections::VecDeque<u64>,
);

pub struct EventCache {
    inner: std::sync::Mutex<DecodedByRevision>,
}

const EVENT_CACHE_SIZE: usize = 2048;

impl Default for EventCache {
    fn default() -> Self {
        EventCache {
            inner: std::sync::Mutex::new((Default::default(), Default::default())),
        }
    }
}

impl EventCache {
    pub fn decode(
        &self,
        ev: &spindle_store::Event,
        ty: &str,
        type_meta: &str,
    ) -> Option<Arc<Decoded>> {
        if let Some(d) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(&ev.revision)
        {
            return Some(d.clone());
        }
        let kv = spindle_store::KeyValue {
            key: ev.key.clone(),
            value: ev.value.clone(),
            mod_revision: ev.revision,
        };
        let json = StoredObject::parse(&kv).ok()?.splice(type_meta).ok()?;
        let line = format!("{{\"type\":{},\"object\":{json}}}\n", json!(ty));
        let d = Arc::new(Decoded {
            line,
            kv,
            labels_view: std::sync::OnceLock::new(),
            full: std::sync::OnceLock::new(),
        });
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if map.insert(ev.revision, d.clone()).is_none() {
            order.push_back(ev.revision);
            while order.len() > EVENT_CACHE_SIZE {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        Some(d)
    }
}

/// Events already queued go out as one chunk: under load a busy watcher then costs one
/// TLS record and one write per batch of events instead of one per event.
fn coalesce(
    rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    const MOST: usize = 64;
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .ready_chunks(MOST)
        .map(|chunks| {
            if chunks.len() == 1 {
                return chunks.into_iter().next().unwrap_or(Ok(Bytes::new()));
            }
            let mut out = Vec::with_capacity(
                chunks
                    .iter()
                    .map(|c| c.as_ref().map_or(0, Bytes::len))
                    .sum(),
            );
            for Ok(c) in chunks {
                out.extend_from_slice(&c);
            }
            Ok(Bytes::from(out))
        })
}

pub async fn serve(st: AppState, t: Target, q: Query, table: bool) -> Response {
    let sel = match selectors(&t.kind, &q) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = q.flag("allowWatchBookmarks");
    let from = match q.get("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(r) => Some(r),
            Err(_) => {
                return ApiError::bad_request(format!("invalid resource version: {rv}"))
                    .into_response()
            }
        },
    };
    let (tx, rx) = mpsc::channel(64);
    let emitter = Emitter {
        tx,
        table,
        headers_sent: false,
        target: t.clone(),
        include: q.get("includeObject").map(str::to_string),
    };
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        tokio::select! {
            _ = run(st, t, sel, from, bookmarks, emitter) => {}
            _ = &mut deadline => {}
        }
    });
    let mut r = (StatusCode::OK, Body::from_stream(coalesce(rx))).into_response();
    let ct = if table {
        tables::TABLE_CONTENT_TYPE
    } else {
        "application/json"
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

async fn run(
    st: AppState,
    t: Target,
    sel: Selectors,
    from: Option<u64>,
    bookmarks: bool,
    mut em: Emitter,
) {
    let start = match from {
        Some(r) => r,
        None => {
            // No resourceVersion: the current state as ADDED events first.
            let (items, rev, _) = match list_objects(&st, &t, &sel, None, None).await {
                Ok(x) => x,
                Err(e) => {
                    em.send("ERROR", e.status_body()).await;
                    return;
                }
            };
            for it in items {
                if !em.send("ADDED", it).await {
                    return;
                }
            }
            rev
        }
    };
    let prefix = crate::rest::key(&t.kind, t.namespace.as_deref(), None);
    let mut stream = match st.store.watch(&prefix, start).await {
        Ok(s) => s,
        Err(e) => {
            em.send("ERROR", ApiError::from(e).status_body()).await;
            return;
        }
    };
    let type_meta = crate::rest::type_meta(&t.kind);
    let mut last_seen = start;
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { return };
                last_seen = ev.revision;
                let ty = match ev.kind {
                    EventType::Created => "ADDED",
                    EventType::Modified => "MODIFIED",
                    EventType::Deleted => "DELETED",
                    EventType::Progress => continue,
                };
                let sent = if t.kind.conversion.is_some() {
                    // Not from the shared cache: its lines carry the first watcher's version.
                    let kv = spindle_store::KeyValue { key: ev.key.clone(), value: ev.value.clone(), mod_revision: ev.revision };
                    let Ok(obj) = crate::rest::decode_stored(&kv) else { continue };
                    if !sel.matches(&obj) {
                        continue;
                    }
                    let obj = if em.table { obj } else { crate::rest::served(&t.kind, obj) };
                    em.send(ty, obj).await
                } else {
                    let Some(d) = st.event_cache.decode(&ev, ty, &type_meta) else { continue };
                    if !d.matches(&sel) {
                        continue;
                    }
                    if em.table { em.send(ty, d.full().clone()).await } else { em.send_line(&d.line).await }
                };
                if !sent {
                    return;
                }
            }
            _ = ticker.tick(), if bookmarks => {
                let bm = json!({"kind": t.kind.kind, "apiVersion": t.kind.api_version(), "metadata": {"resourceVersion": last_seen.to_string()}});
                if !em.send("BOOKMARK", bm).await {
                    return;
                }
            }
        }
    }
}
