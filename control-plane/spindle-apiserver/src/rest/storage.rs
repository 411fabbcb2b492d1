//! Objects in the store: keys, decoding, reads, paged lists, and compare-and-swap
//! writes, with the 404/409 answers Kubernetes gives for them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use spindle_api::Kind;
use spindle_store::{KeyValue, StoreError};

use crate::request::{Query, Target};
use crate::selectors::{single_name, Selectors};
use crate::status::{ApiError, ApiResult};
use crate::stored::{encode_for_store, type_meta, StoredObject};
use crate::AppState;

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Storage key of an object; a prefix when `name` is None.
pub fn key(kind: &Kind, ns: Option<&str>, name: Option<&str>) -> String {
    let g = if kind.group.is_empty() {
        "core"
    } else {
        kind.group
    };
    let mut k = format!("/registry/{g}/{}/", kind.plural);
    if kind.namespaced {
        if let Some(ns) = ns {
            k.push_str(ns);
            k.push('/');
        }
    }
    if let Some(n) = name {
        k.push_str(n);
    }
    k
}

/// The stored object of a core/v1 resource (`plural`, e.g. "pods"), if any: for the
/// admission plugins and authenticators that look up one object by name.
pub(crate) async fn stored_core(
    st: &crate::AppState,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> ApiResult<Option<Value>> {
    let Some(kind) = st.reg.by_resource("", "v1", plural) else {
        return Ok(None);
    };
    match st.store.get(&key(kind, ns, Some(name))).await? {
        Some(kv) => Ok(Some(decode_stored(&kv)?)),
        None => Ok(None),
    }
}

/// Decode a stored object and stamp its resourceVersion from the store revision.
pub fn decode_stored(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("corrupt object {}: {e}", kv.key)))?;
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    Ok(v)
}

pub fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    json_text_response(code, v.to_string(), warnings)
}

/// A JSON body already encoded.
pub(super) fn json_text_response(code: StatusCode, body: String, warnings: &[String]) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(h) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

pub(super) fn meta_str<'a>(v: &'a Value, f: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(f))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(super) fn meta_mut(v: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let m = obj.entry("metadata").or_insert_with(|| json!({}));
    if m.is_null() {
        *m = json!({});
    }
    m.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

pub(crate) async fn load(st: &AppState, t: &Target) -> ApiResult<(Value, KeyValue)> {
    let name = t.name.as_deref().unwrap_or("");
    let k = key(&t.kind, t.namespace.as_deref(), Some(name));
    match st.store.get(&k).await? {
        Some(kv) => Ok((decode_stored(&kv)?, kv)),
        None => Err(not_found(&t.kind, name)),
    }
}

pub(super) fn conflict(kind: &Kind, name: &str) -> ApiError {
    ApiError::conflict(&kind.qualified_plural(), kind.group, kind.plural, name)
}

pub(super) fn not_found(kind: &Kind, name: &str) -> ApiError {
    ApiError::not_found(&kind.qualified_plural(), kind.group, kind.plural, name)
}

/// Continue tokens carry the list's revision and the last key returned.
pub(super) fn encode_continue(rev: u64, last_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rev, "start": last_key}).to_string())
}

pub(super) fn decode_continue(tok: &str) -> ApiResult<(u64, String)> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?,
        v.get("start")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string(),
    ))
}

/// Matching objects in key order, with the store revision of the read.
pub async fn list_objects(
    st: &AppState,
    t: &Target,
    sel: &Selectors,
    start_after: Option<&str>,
    limit: Option<usize>,
) -> ApiResult<(Vec<Value>, u64, Option<String>)> {
    scan(st, t, sel, start_after, limit, |kv| {
        let v = decode_stored(kv)?;
        Ok(sel.matches(&v).then_some(v))
    })
    .await
}

/// Runs `f` over the stored objects of a list request (each returns its output, or None
/// when the selectors reject the object) and pages the outputs.
pub(super) async fn scan<T>(
    st: &AppState,
    t: &Target,
    sel: &Selectors,
    start_after: Option<&str>,
    limit: Option<usize>,
    mut f: impl FnMut(&KeyValue) -> ApiResult<Option<T>>,
) -> ApiResult<(Vec<T>, u64, Option<String>)> {
    if let Some(name) = single_name(&sel.fields) {
        // One name: a point read per namespace instead of a scan.
        let k = key(&t.kind, t.namespace.as_deref(), Some(name));
        if t.namespace.is_some() || !t.kind.namespaced {
            let rev = st.store.current_revision();
            let items = match st.store.get(&k).await? {
                Some(kv) => f(&kv)?.into_iter().collect(),
                None => vec![],
            };
            return Ok((items, rev, None));
        }
    }
    let prefix = key(&t.kind, t.namespace.as_deref(), None);
    // Read in chunks from the continue key, so a page costs what it returns (plus what
    // the selectors skip), not the whole collection.
    const CHUNK: usize = 512;
    let mut out: Vec<(String, T)> = Vec::new();
    let mut next = false;
    let mut cursor = start_after.map(str::to_string);
    let mut rev = None;
    'scan: loop {
        let (kvs, r) = st
            .store
            .list_page(&prefix, cursor.as_deref(), Some(CHUNK))
            .await?;
        rev.get_or_insert(r);
        let exhausted = kvs.len() < CHUNK;
        for kv in &kvs {
            let Some(item) = f(kv)? else {
                continue;
            };
            if limit.is_some_and(|l| out.len() >= l) {
                // At least one more match: hand out a continue token.
                next = true;
                break 'scan;
            }
            out.push((kv.key.clone(), item));
        }
        match kvs.last() {
            Some(last) if !exhausted => cursor = Some(last.key.clone()),
            _ => break,
        }
    }
    let rev = rev.unwrap_or_else(|| st.store.current_revision());
    let cont = if next {
        out.last().map(|(k, _)| encode_continue(rev, k))
    } else {
        None
    };
    Ok((out.into_iter().map(|(_, v)| v).collect(), rev, cont))
}

/// One stored object as it goes into a list response, or None when the selectors reject
/// it; see [`StoredObject`].
pub(super) fn list_item_json(
    kind: &Kind,
    kv: &KeyValue,
    sel: &Selectors,
    type_meta: &str,
) -> ApiResult<Option<String>> {
    if kind.conversion.is_some() {
        let v = decode_stored(kv)?;
        return Ok(sel.matches(&v).then(|| served(kind, v).to_string()));
    }
    let obj = StoredObject::parse(kv)?;
    if !sel.is_empty() && !sel.matches(&obj.selector_view(sel)) {
        return Ok(None);
    }
    obj.splice(type_meta).map(Some)
}

/// The response for an object just stored: its stored bytes with the type meta and new
/// resourceVersion spliced in, rather than serialising the object a second time.
pub(super) fn written_response(
    code: StatusCode,
    kind: &Kind,
    key: &str,
    bytes: Vec<u8>,
    rev: u64,
    warnings: &[String],
) -> ApiResult<Response> {
    let body = StoredObject::parse_bytes(key, &bytes, rev)?.splice(&type_meta(kind))?;
    if kind.conversion.is_some() {
        let v: Value =
            serde_json::from_str(&body).map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(json_response(code, &served(kind, v), warnings));
    }
    Ok(json_text_response(code, body, warnings))
}

/// An object (in the storage version) as the version of `kind` has it: converted for a
/// version served but not stored (see `spindle_api::conversion`).
pub(crate) fn served(kind: &Kind, mut obj: Value) -> Value {
    if let Some(c) = kind.conversion {
        (c.to_served)(&mut obj);
    }
    obj
}

/// Store an updated object with a compare-and-swap on `old_rev`; removes the object
/// instead when it is being deleted and its last finalizer is gone.
pub(crate) async fn store_update(
    st: &AppState,
    kind: &Kind,
    old_kv: &KeyValue,
    old: Option<&Value>,
    obj: Value,
    q: &Query,
    warnings: &[String],
) -> ApiResult<Response> {
    let name = meta_str(&obj, "name").unwrap_or("").to_string();
    let finalizers_empty = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
    let grace_done = obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        == 0;
    if deleting && finalizers_empty && grace_done {
        if q.dry_run() {
            return Ok(json_response(StatusCode::OK, &served(kind, obj), warnings));
        }
        return match st
            .store
            .delete(&old_kv.key, Some(old_kv.mod_revision))
            .await
        {
            Ok(_) => Ok(json_response(StatusCode::OK, &served(kind, obj), warnings)),
            Err(StoreError::Conflict { .. }) => Err(conflict(kind, &name)),
            Err(StoreError::NotFound(_)) => Err(not_found(kind, &name)),
            Err(e) => Err(e.into()),
        };
    }
    if q.dry_run() {
        return Ok(json_response(StatusCode::OK, &served(kind, obj), warnings));
    }
    if old.is_some_and(|o| *o == obj) {
        // Nothing changed: Kubernetes does not write (and keeps the resourceVersion).
        return Ok(json_response(StatusCode::OK, &served(kind, obj), warnings));
    }
    let bytes = encode_for_store(&obj)?;
    drop(obj);
    match st
        .store
        .update(&old_kv.key, bytes.clone(), Some(old_kv.mod_revision))
        .await
    {
        Ok(rev) => written_response(StatusCode::OK, kind, &old_kv.key, bytes, rev, warnings),
        Err(StoreError::Conflict { .. }) => Err(conflict(kind, &name)),
        Err(StoreError::NotFound(_)) => Err(not_found(kind, &name)),
        Err(e) => Err(e.into()),
    }
}
