//! The one generic REST path for every kind in the registry: get, list, watch, create,
//! update, patch (JSON, merge, strategic, apply), delete, deletecollection, and the
//! status, scale, binding and eviction subresources.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use spindle_api::{validation, Kind};
use spindle_store::{KeyValue, StoreError};

use crate::request::{content_type, decode_body, wants_table, Query, Target};
use crate::selectors::{single_name, FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::stored::StoredObject;
pub(crate) use crate::stored::{encode_for_store, type_meta};
use crate::{gc, tables, watch, AppState, User};

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
fn json_text_response(code: StatusCode, body: String, warnings: &[String]) -> Response {
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

fn meta_str<'a>(v: &'a Value, f: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(f))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn meta_mut(v: &mut Value) -> ApiResult<&mut Map<String, Value>> {
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

fn field_manager(q: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager") {
        return m.to_string();
    }
    // Kubernetes defaults the manager to the user agent's program name.
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .unwrap_or("unknown")
        .chars()
        .take(128)
        .collect()
}

/// The entry point for every resource path.
pub async fn handle(
    st: AppState,
    user: User,
    method: Method,
    t: Target,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let res = match (method.as_str(), t.name.is_some(), t.sub.as_deref()) {
        ("GET", false, None) if q.flag("watch") => {
            return watch::serve(st, t, q, wants_table(&headers)).await
        }
        ("GET", false, None) => list(&st, &t, &q, &headers).await,
        ("GET", true, None) | ("GET", true, Some("status")) => get(&st, &t, &headers, &q).await,
        ("GET", true, Some("scale")) if t.kind.scale.is_some() => get_scale(&st, &t).await,
        ("POST", false, None) => create(&st, &user, &t, &q, &headers, &body).await,
        ("GET", true, Some("log")) if t.kind.kind == "Pod" => {
            crate::proxy::pod_logs(&st, &t, &q).await
        }
        ("POST", true, Some("binding")) if t.kind.kind == "Pod" => {
            bind(&st, &t, &body, &headers).await
        }
        ("POST", true, Some("eviction")) if t.kind.kind == "Pod" => {
            evict(&st, &t, &body, &headers).await
        }
        ("PUT", true, None) | ("PUT", true, Some("status")) => {
            update(&st, &t, &q, &headers, &body).await
        }
        ("PATCH", true, None) | ("PATCH", true, Some("status")) => {
            patch(&st, &t, &q, &headers, &body).await
        }
        ("PUT", true, Some("scale")) | ("PATCH", true, Some("scale")) if t.kind.scale.is_some() => {
            write_scale(&st, &t, &q, &headers, &body, method == Method::PATCH).await
        }
        ("DELETE", true, None) => delete(&st, &t, &q, &headers, &body).await,
        ("DELETE", false, None) => delete_collection(&st, &t, &q, &headers, &body).await,
        (_, _, Some(sub))
            if [
                "status",
                "scale",
                "binding",
                "eviction",
                "log",
                "exec",
                "attach",
                "portforward",
                "proxy",
            ]
            .contains(&sub) =>
        {
            Err(ApiError::method_not_supported(format!(
                "the server does not allow this method on the requested resource ({}/{sub})",
                t.kind.plural
            )))
        }
        (_, _, Some(_)) => Err(ApiError::path_not_found()),
        _ => Err(ApiError::method_not_supported(
            "the server does not allow this method on the requested resource",
        )),
    };
    res.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------------------
// reads

pub(crate) async fn load(st: &AppState, t: &Target) -> ApiResult<(Value, KeyValue)> {
    let name = t.name.as_deref().unwrap_or("");
    let k = key(&t.kind, t.namespace.as_deref(), Some(name));
    match st.store.get(&k).await? {
        Some(kv) => Ok((decode_stored(&kv)?, kv)),
        None => Err(not_found(&t.kind, name)),
    }
}

fn conflict(kind: &Kind, name: &str) -> ApiError {
    ApiError::conflict(&kind.qualified_plural(), kind.group, kind.plural, name)
}

fn not_found(kind: &Kind, name: &str) -> ApiError {
    ApiError::not_found(&kind.qualified_plural(), kind.group, kind.plural, name)
}

async fn get(st: &AppState, t: &Target, headers: &HeaderMap, q: &Query) -> ApiResult<Response> {
    let (obj, kv) = load(st, t).await?;
    if wants_table(headers) {
        let table = tables::table(
            &t.kind,
            &[obj],
            &kv.mod_revision.to_string(),
            None,
            q.get("includeObject"),
            true,
        );
        return Ok(tables::response(&table));
    }
    Ok(json_response(StatusCode::OK, &obj, &[]))
}

/// Continue tokens carry the list's revision and the last key returned.
fn encode_continue(rev: u64, last_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rev, "start": last_key}).to_string())
}

fn decode_continue(tok: &str) -> ApiResult<(u64, String)> {
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

pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

pub fn selectors(kind: &Kind, q: &Query) -> ApiResult<Selectors> {
    Ok(Selectors {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), kind.field_labels)?,
    })
}

impl Selectors {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels
            .matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
            && self.fields.matches(obj)
    }
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
async fn scan<T>(
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
fn list_item_json(kv: &KeyValue, sel: &Selectors, type_meta: &str) -> ApiResult<Option<String>> {
    let obj = StoredObject::parse(kv)?;
    if !sel.is_empty() && !sel.matches(&obj.selector_view(sel)) {
        return Ok(None);
    }
    obj.splice(type_meta).map(Some)
}

async fn list(st: &AppState, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult<Response> {
    let sel = selectors(&t.kind, q)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (start, list_rev) = match q.get("continue") {
        Some(tok) => {
            if q.get("resourceVersion").is_some_and(|rv| rv != "0") {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rv, start) = decode_continue(tok)?;
            (Some(start), Some(rv))
        }
        None => (None, None),
    };
    if !wants_table(headers) {
        let type_meta = type_meta(&t.kind);
        let (items, rev, cont) = scan(st, t, &sel, start.as_deref(), limit, |kv| {
            list_item_json(kv, &sel, &type_meta)
        })
        .await?;
        let rv = list_rev.unwrap_or(rev).to_string();
        let mut meta = json!({"resourceVersion": rv});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        let mut body =
            String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 256);
        body.push_str(&format!(
            "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{meta},\"items\":[",
            json!(t.kind.list_kind),
            json!(t.kind.api_version())
        ));
        body.push_str(&items.join(","));
        body.push_str("]}");
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(r);
    }
    let (items, rev, cont) = list_objects(st, t, &sel, start.as_deref(), limit).await?;
    let rv = list_rev.unwrap_or(rev).to_string();
    let table = tables::table(
        &t.kind,
        &items,
        &rv,
        cont.as_deref(),
        q.get("includeObject"),
        true,
    );
    Ok(tables::response(&table))
}

// ---------------------------------------------------------------------------
// the write pipeline shared by create, update, patch and apply

#[derive(Clone, Copy, PartialEq)]
enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

fn field_validation(q: &Query) -> ApiResult<FieldValidation> {
    match q.get("fieldValidation") {
        None | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other}"
        ))),
    }
}

/// Type meta, unknown/duplicate fields and Go-type checks: everything Kubernetes does
/// while decoding, before defaulting and validation.
fn decode_checks(
    kind: &Kind,
    obj: &mut Value,
    duplicates: &[String],
    fv: FieldValidation,
) -> ApiResult<Vec<String>> {
    let m = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    match m.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != kind.api_version() => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                kind.api_version()
            )))
        }
        _ => {
            m.insert("apiVersion".into(), json!(kind.api_version()));
        }
    }
    match m.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )))
        }
        _ => {
            m.insert("kind".into(), json!(kind.kind));
        }
    }
    let mut warnings = Vec::new();
    if fv != FieldValidation::Ignore {
        let mut problems: Vec<String> = duplicates
            .iter()
            .map(|d| format!("duplicate field \"{d}\""))
            .collect();
        problems.extend(
            spindle_api::fields::unknown_fields(kind, obj)
                .into_iter()
                .map(|f| format!("unknown field \"{f}\"")),
        );
        if !problems.is_empty() {
            if fv == FieldValidation::Strict {
                let msg = if problems.len() == 1 {
                    problems[0].clone()
                } else {
                    problems.join(", ")
                };
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {msg}"
                )));
            }
            warnings = problems;
        }
    }
    spindle_api::fields::prune_unknown(kind, obj);
    if let Err(e) = (kind.typed_check)(obj) {
        let name = meta_str(obj, "name").unwrap_or("");
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {}{}",
            kind.kind,
            kind.version,
            kind.kind,
            if e.field.is_empty() { String::new() } else { format!("{}: ", e.field) },
            e.message
        ))
        .with_details(json!({"name": name, "kind": kind.kind, "causes": [{"reason": e.reason, "message": e.message, "field": e.field}]})));
    }
    Ok(warnings)
}

/// Validate a new object, or an update of `old`. An update is held only to the errors
/// it introduces: an object stored before a rule existed (or under a looser one) stays
/// writable, its status above all, as Kubernetes ratchets validation.
fn validate_or_reject(kind: &Kind, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let mut errs = validation::validate(kind.kind, kind.namespaced, obj);
    if let (false, Some(old)) = (errs.is_empty(), old) {
        let before = validation::validate(kind.kind, kind.namespaced, old);
        errs.retain(|e| !before.contains(e));
    }
    if errs.is_empty() {
        return Ok(());
    }
    let name = meta_str(obj, "name").unwrap_or("");
    Err(ApiError::invalid(
        &kind.qualified_kind(),
        kind.group,
        kind.kind,
        name,
        &errs,
    ))
}

fn tracks_generation(kind: &Kind) -> bool {
    matches!(kind.group, "apps" | "batch" | "policy") || kind.kind == "Pod"
}

fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        _ => "Burstable",
    }
}

/// Server-set fields of a new object: name, uid, timestamps, generation, initial status.
fn prepare_new(kind: &Kind, obj: &mut Value, ns: Option<&str>) -> ApiResult<()> {
    let meta = meta_mut(obj)?;
    if kind.namespaced {
        match (meta.get("namespace").and_then(Value::as_str).filter(|s| !s.is_empty()), ns) {
            (Some(body_ns), Some(url_ns)) if body_ns != url_ns => {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"))
            }
            (_, Some(url_ns)) => {
                meta.insert("namespace".into(), json!(url_ns));
            }
            _ => {}
        }
    } else {
        meta.remove("namespace");
    }
    if meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        if let Some(gn) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let suffix: String = (0..5)
                .map(|_| ALPHANUMS[rand::random_range(0..ALPHANUMS.len())] as char)
                .collect();
            let base: String = gn.chars().take(58).collect();
            meta.insert("name".into(), json!(format!("{base}{suffix}")));
        }
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if tracks_generation(kind) {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    match kind.kind {
        "Pod" => {
            let qos = qos_class(&Value::Object(o.clone()));
            o.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        "Service" => {
            o.insert("status".into(), json!({"loadBalancer": {}}));
        }
        "Node" | "Namespace" => {}
        _ if kind.status_subresource => {
            o.insert("status".into(), json!({}));
        }
        _ => {}
    }
    Ok(())
}

/// Whether anything but metadata and status differs (compared in place: this runs on
/// every update, and copying both objects to compare them was a visible share of it).
fn spec_changed(old: &Value, new: &Value) -> bool {
    fn rest(v: &Value) -> impl Iterator<Item = (&String, &Value)> {
        v.as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "metadata" && *k != "status")
    }
    rest(old).count() != rest(new).count() || rest(old).any(|(k, v)| new.get(k) != Some(v))
}

/// A uid in an update is a precondition: controllers patch one in so that a write meant
/// for an object cannot land on a deleted-and-recreated namesake. A different uid is
/// refused as kube-apiserver's immutable-field check refuses it; none means "the same".
fn uid_unchanged(kind: &Kind, old: &Value, new: &Value) -> ApiResult<()> {
    let Some(uid) = meta_str(new, "uid").filter(|u| !u.is_empty()) else {
        return Ok(());
    };
    if Some(uid) == meta_str(old, "uid") {
        return Ok(());
    }
    Err(ApiError::invalid(
        &kind.qualified_kind(),
        kind.group,
        kind.plural,
        meta_str(old, "name").unwrap_or(""),
        &[validation::FieldError::invalid(
            "metadata.uid",
            &json!(uid),
            "field is immutable",
        )],
    ))
}

/// ObjectMeta's lists are `omitempty` in Kubernetes: a patch that deletes the last
/// ownerReference or finalizer leaves no empty list behind (clients read "absent").
fn omit_empty_meta_lists(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in ["ownerReferences", "finalizers"] {
            if meta
                .get(f)
                .and_then(Value::as_array)
                .is_some_and(|a| a.is_empty())
            {
                meta.remove(f);
            }
        }
    }
}

/// Carry over what a client may not change and apply the status-subresource split.
fn merge_update(kind: &Kind, old: &Value, new: &mut Value, sub: Option<&str>) -> ApiResult<()> {
    if sub == Some("status") {
        // Writes to /status change only the status: the old object with the new status
        // (old's members copied but its status not, as it is replaced).
        let mut status = new.as_object_mut().and_then(|m| m.remove("status"));
        let mut merged = Map::new();
        if let Some(o) = old.as_object() {
            for (k, v) in o {
                if k != "status" {
                    merged.insert(k.clone(), v.clone());
                } else if let Some(s) = status.take() {
                    merged.insert(k.clone(), s);
                }
            }
        }
        if let Some(s) = status {
            merged.insert("status".into(), s);
        }
        *new = Value::Object(merged);
    } else if kind.status_subresource && kind.kind != "Namespace" {
        if let Some(m) = new.as_object_mut() {
            match old.get("status") {
                Some(s) => m.insert("status".into(), s.clone()),
                None => m.remove("status"),
            };
        }
    }
    uid_unchanged(kind, old, new)?;
    omit_empty_meta_lists(new);
    let no_meta = json!({});
    let old_meta = old.get("metadata").unwrap_or(&no_meta);
    let meta = meta_mut(new)?;
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
        "generateName",
    ] {
        match old_meta.get(f) {
            Some(v) => meta.insert(f.into(), v.clone()),
            None => meta.remove(f),
        };
    }
    let old_gen = old_meta.get("generation").and_then(Value::as_i64);
    match old_gen {
        Some(g) => meta.insert("generation".into(), json!(g)),
        None => meta.remove("generation"),
    };
    if let Some(g) = old_gen {
        if spec_changed(old, new) {
            meta_mut(new)?.insert("generation".into(), json!(g + 1));
        }
    }
    if old_meta.get("deletionTimestamp").is_some() {
        let old_f: Vec<Value> = old_meta
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let new_f: Vec<Value> = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if new_f.iter().any(|f| !old_f.contains(f)) {
            return Err(ApiError::invalid(
                &kind.qualified_kind(),
                kind.group,
                kind.plural,
                meta_str(old, "name").unwrap_or(""),
                &[validation::FieldError::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    Ok(())
}

async fn namespace_must_accept(st: &AppState, kind: &Kind, ns: Option<&str>) -> ApiResult<()> {
    let (true, Some(ns)) = (kind.namespaced, ns) else {
        return Ok(());
    };
    let Some(nskind) = st.reg.by_resource("", "v1", "namespaces") else {
        return Ok(());
    };
    match st.store.get(&key(nskind, None, Some(ns))).await? {
        None => Err(ApiError::not_found("namespaces", "", "namespaces", ns)),
        Some(kv) => {
            let v = decode_stored(&kv)?;
            if v.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::forbidden(format!("{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", kind.plural, meta_str(&v, "name").unwrap_or(""))).with_details(json!({"causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]})));
            }
            Ok(())
        }
    }
}

/// Kubernetes' DefaultTolerationSeconds admission: pods tolerate a not-ready or
/// unreachable node for a while before taint-based eviction moves them.
fn admit_default_tolerations(pod: &mut Value, seconds: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
    if tols.is_null() {
        *tols = json!([]);
    }
    let Some(list) = tols.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let tkey = t.get("key").and_then(Value::as_str).unwrap_or("");
            let exists_all =
                tkey.is_empty() && t.get("operator").and_then(Value::as_str) == Some("Exists");
            (tkey == key || exists_all) && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

/// Create `obj` (already decoded and checked) and answer 201.
async fn create_object(
    st: &AppState,
    kind: &Kind,
    ns: Option<&str>,
    mut obj: Value,
    q: &Query,
    manager: Option<&str>,
    warnings: Vec<String>,
) -> ApiResult<Response> {
    prepare_new(kind, &mut obj, ns)?;
    validation::default_object(kind.kind, &mut obj);
    if kind.kind == "Pod" {
        admit_default_tolerations(&mut obj, st.default_toleration_seconds);
    }
    validate_or_reject(kind, &obj, None)?;
    if let Some(m) = manager {
        spindle_patch::ssa::record_update(None, &mut obj, m, &kind.api_version(), &now_rfc3339());
    }
    let ns = if kind.namespaced {
        meta_str(&obj, "namespace").map(str::to_string)
    } else {
        None
    };
    namespace_must_accept(st, kind, ns.as_deref()).await?;
    if !q.dry_run() && kind.group.is_empty() {
        match kind.kind {
            "Service" => crate::alloc::admit_service(st, &mut obj).await?,
            "Node" => crate::alloc::admit_node(st, &mut obj).await?,
            _ => {}
        }
    }
    let name = meta_str(&obj, "name").unwrap_or("").to_string();
    let k = key(kind, ns.as_deref(), Some(&name));
    if q.dry_run() {
        if st.store.get(&k).await?.is_some() {
            return Err(ApiError::already_exists(
                &kind.qualified_plural(),
                kind.group,
                kind.plural,
                &name,
            ));
        }
        return Ok(json_response(StatusCode::CREATED, &obj, &warnings));
    }
    let bytes = encode_for_store(&obj)?;
    drop(obj);
    let rev = match st.store.create(&k, bytes.clone()).await {
        Ok(r) => r,
        Err(StoreError::AlreadyExists(_)) => {
            return Err(ApiError::already_exists(
                &kind.qualified_plural(),
                kind.group,
                kind.plural,
                &name,
            ))
        }
        Err(e) => return Err(e.into()),
    };
    written_response(StatusCode::CREATED, kind, &k, bytes, rev, &warnings)
}

/// The response for an object just stored: its stored bytes with the type meta and new
/// resourceVersion spliced in, rather than serialising the object a second time.
fn written_response(
    code: StatusCode,
    kind: &Kind,
    key: &str,
    bytes: Vec<u8>,
    rev: u64,
    warnings: &[String],
) -> ApiResult<Response> {
    let body = StoredObject::parse_bytes(key, &bytes, rev)?.splice(&type_meta(kind))?;
    Ok(json_text_response(code, body, warnings))
}

async fn create(
    st: &AppState,
    _user: &User,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    raw: &Bytes,
) -> ApiResult<Response> {
    let body = decode_body(&content_type(headers), raw)?;
    let mut obj = body.value;
    let warnings = decode_checks(&t.kind, &mut obj, &body.duplicates, field_validation(q)?)?;
    if t.kind.namespaced && t.namespace.is_none() {
        return Err(ApiError::bad_request("the server could not find the requested resource: a namespaced object must be created in a namespace"));
    }
    let mgr = field_manager(q, headers);
    create_object(
        st,
        &t.kind,
        t.namespace.as_deref(),
        obj,
        q,
        Some(&mgr),
        warnings,
    )
    .await
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
            return Ok(json_response(StatusCode::OK, &obj, warnings));
        }
        return match st
            .store
            .delete(&old_kv.key, Some(old_kv.mod_revision))
            .await
        {
            Ok(_) => Ok(json_response(StatusCode::OK, &obj, warnings)),
            Err(StoreError::Conflict { .. }) => Err(conflict(kind, &name)),
            Err(StoreError::NotFound(_)) => Err(not_found(kind, &name)),
            Err(e) => Err(e.into()),
        };
    }
    if q.dry_run() {
        return Ok(json_response(StatusCode::OK, &obj, warnings));
    }
    if old.is_some_and(|o| *o == obj) {
        // Nothing changed: Kubernetes does not write (and keeps the resourceVersion).
        return Ok(json_response(StatusCode::OK, &obj, warnings));
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

async fn update(
    st: &AppState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    raw: &Bytes,
) -> ApiResult<Response> {
    let body = decode_body(&content_type(headers), raw)?;
    let mut obj = body.value;
    let warnings = decode_checks(&t.kind, &mut obj, &body.duplicates, field_validation(q)?)?;
    let name = t.name.clone().unwrap_or_default();
    if meta_str(&obj, "name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&obj, "name").unwrap_or("")
        )));
    }
    let (old, kv) = load(st, t).await?;
    if let Some(rv) = meta_str(&obj, "resourceVersion") {
        if rv != kv.mod_revision.to_string() {
            return Err(conflict(&t.kind, &name));
        }
    }
    finish_update(st, t, q, headers, old, kv, obj, warnings, true).await
}

#[allow(clippy::too_many_arguments)]
async fn finish_update(
    st: &AppState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    old: Value,
    kv: KeyValue,
    mut obj: Value,
    warnings: Vec<String>,
    record: bool,
) -> ApiResult<Response> {
    merge_update(&t.kind, &old, &mut obj, t.sub.as_deref())?;
    if t.kind.kind == "Service" && t.kind.group.is_empty() && t.sub.is_none() {
        keep_cluster_ips(&old, &mut obj);
        // A Service that had no address (ExternalName) gets one as on creation: in range
        // and reserved, never simply the one the update names.
        if validation::cluster_ips(&old).is_empty()
            && !validation::cluster_ips(&obj).contains(&"None")
            && !q.dry_run()
        {
            crate::alloc::admit_service(st, &mut obj).await?;
        }
    }
    validation::default_object(t.kind.kind, &mut obj);
    validate_or_reject(&t.kind, &obj, Some(&old))?;
    validate_immutable(&t.kind, &old, &obj)?;
    meta_mut(&mut obj)?.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    if obj == old {
        // A no-op write: Kubernetes neither stores it nor touches managedFields.
        return Ok(json_response(StatusCode::OK, &obj, &warnings));
    }
    if record {
        let mgr = field_manager(q, headers);
        spindle_patch::ssa::record_update(
            Some(&old),
            &mut obj,
            &mgr,
            &t.kind.api_version(),
            &now_rfc3339(),
        );
    }
    meta_mut(&mut obj)?.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    store_update(st, &t.kind, &kv, Some(&old), obj, q, &warnings).await
}

/// An update that leaves the cluster IPs out keeps the allocated ones, as Kubernetes'
/// `patchAllocatedValues` does (so `kubectl replace` of the original manifest works).
fn keep_cluster_ips(old: &Value, new: &mut Value) {
    if validation::is_external_name(old) || validation::is_external_name(new) {
        return;
    }
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let unset = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if unset(spec.get("clusterIP")) && unset(spec.get("clusterIPs")) {
        for f in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old.pointer(&format!("/spec/{f}")) {
                spec.insert(f.into(), v.clone());
            }
        }
    }
}

fn validate_immutable(kind: &Kind, old: &Value, new: &Value) -> ApiResult<()> {
    let name = meta_str(old, "name").unwrap_or("");
    let mut errs = Vec::new();
    if matches!(
        kind.kind,
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job"
    ) {
        let (o, n) = (old.pointer("/spec/selector"), new.pointer("/spec/selector"));
        if o != n {
            errs.push(validation::FieldError::invalid(
                "spec.selector",
                n.unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
    if kind.kind == "Pod" {
        let (o, n) = (old.pointer("/spec/nodeName"), new.pointer("/spec/nodeName"));
        if o.is_some() && o != n {
            errs.push(validation::FieldError::forbidden("spec.nodeName", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
        }
    }
    if kind.kind == "Service" && kind.group.is_empty() {
        errs.extend(validation::validate_service_update(old, new));
    }
    if (kind.kind == "ConfigMap" || kind.kind == "Secret")
        && old.get("immutable") == Some(&json!(true))
    {
        for f in ["data", "binaryData"] {
            if old.get(f) != new.get(f) {
                errs.push(validation::FieldError::forbidden(
                    f,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &kind.qualified_kind(),
            kind.group,
            kind.kind,
            name,
            &errs,
        ))
    }
}

fn apply_patch(ct: &str, old: &Value, patch: &Value) -> ApiResult<Value> {
    let mime = ct.split(';').next().unwrap_or("").trim();
    let res = match mime {
        "application/json-patch+json" => spindle_patch::json_patch(old, patch),
        "application/merge-patch+json" => spindle_patch::merge_patch(old, patch),
        "application/strategic-merge-patch+json" => {
            spindle_patch::strategic_merge_patch(old, patch)
        }
        other => return Err(ApiError::unsupported_media(other)),
    };
    res.map_err(|e| match e {
        spindle_patch::PatchError::TooLarge(m) => ApiError::too_large(m),
        e => ApiError::new(422, "Invalid", e.to_string()),
    })
}

async fn patch(
    st: &AppState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    raw: &Bytes,
) -> ApiResult<Response> {
    let ct = content_type(headers);
    if ct.starts_with("application/apply-patch") {
        return server_side_apply(st, t, q, headers, raw).await;
    }
    let body = decode_body(&ct, raw)?;
    let fv = field_validation(q)?;
    // An unconditional patch is retried on conflicts, as Kubernetes does.
    for _ in 0..8 {
        let (old, kv) = load(st, t).await?;
        let mut obj = apply_patch(&ct, &old, &body.value)?;
        let precondition_rv = body
            .value
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(rv) = &precondition_rv {
            if *rv != kv.mod_revision.to_string() {
                return Err(conflict(&t.kind, t.name.as_deref().unwrap_or("")));
            }
        }
        let warnings = decode_checks(&t.kind, &mut obj, &body.duplicates, fv)?;
        match finish_update(st, t, q, headers, old, kv, obj, warnings, true).await {
            Err(e) if e.reason == "Conflict" && precondition_rv.is_none() => continue,
            other => return other,
        }
    }
    Err(conflict(&t.kind, t.name.as_deref().unwrap_or("")))
}

async fn server_side_apply(
    st: &AppState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    raw: &Bytes,
) -> ApiResult<Response> {
    let body = decode_body("application/apply-patch+yaml", raw)?;
    let manager = q
        .get("fieldManager")
        .ok_or_else(|| {
            ApiError::bad_request(
                "PATCH requests with apply-patch content type require fieldManager",
            )
        })?
        .to_string();
    let force = q.flag("force");
    let fv = field_validation(q)?;
    let mut applied = body.value;
    let _ = decode_checks(&t.kind, &mut applied.clone(), &[], fv)?;
    if let Some(m) = applied.as_object_mut() {
        m.entry("apiVersion")
            .or_insert_with(|| json!(t.kind.api_version()));
        m.entry("kind").or_insert_with(|| json!(t.kind.kind));
    }
    let name = t.name.clone().unwrap_or_default();
    if meta_str(&applied, "name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let now = now_rfc3339();
    for _ in 0..8 {
        let current = match load(st, t).await {
            Ok(x) => Some(x),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        let merged = spindle_patch::ssa::apply(
            current.as_ref().map(|(v, _)| v),
            &applied,
            &manager,
            &t.kind.api_version(),
            force,
            &now,
        )
        .map_err(|e| ssa_error(e, &t.kind, &name))?;
        let res = match current {
            None => {
                let mut obj = merged;
                meta_mut(&mut obj)?.insert("name".into(), json!(name));
                let warnings = decode_checks(&t.kind, &mut obj, &[], FieldValidation::Ignore)?;
                create_object(st, &t.kind, t.namespace.as_deref(), obj, q, None, warnings).await
            }
            Some((old, kv)) => {
                let mut obj = merged;
                let warnings = decode_checks(&t.kind, &mut obj, &[], FieldValidation::Ignore)?;
                finish_update(st, t, q, headers, old, kv, obj, warnings, false).await
            }
        };
        match res {
            Err(e) if e.reason == "Conflict" || e.reason == "AlreadyExists" => continue,
            other => return other,
        }
    }
    Err(conflict(&t.kind, &name))
}

fn ssa_error(e: spindle_patch::ssa::ApplyError, kind: &Kind, name: &str) -> ApiError {
    match e {
        spindle_patch::ssa::ApplyError::Conflicts(cs) => {
            let parts: Vec<String> = cs
                .iter()
                .map(|c| format!("conflict with \"{}\": {}", c.manager, c.field))
                .collect();
            let msg = if parts.len() == 1 {
                format!("Apply failed with 1 conflict: {}", parts[0])
            } else {
                format!(
                    "Apply failed with {} conflicts: {}",
                    parts.len(),
                    parts.join("\n")
                )
            };
            ApiError::new(409, "Conflict", msg).with_details(json!({
                "name": name, "group": kind.group, "kind": kind.plural,
                "causes": cs.iter().map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": c.field})).collect::<Vec<_>>(),
            }))
        }
        spindle_patch::ssa::ApplyError::Invalid(m) => ApiError::new(422, "Invalid", m),
    }
}

// ---------------------------------------------------------------------------
// delete

#[derive(Default)]
pub(crate) struct DeleteOpts {
    pub(crate) grace: Option<i64>,
    pub(crate) policy: Option<String>,
    pub(crate) uid: Option<String>,
    pub(crate) rv: Option<String>,
    pub(crate) dry_run: bool,
}

impl DeleteOpts {
    /// The fields of a DeleteOptions body (as sent to DELETE, or inside an Eviction).
    fn from_value(b: &Value) -> DeleteOpts {
        let text = |p: &str| b.pointer(p).and_then(Value::as_str).map(str::to_string);
        let orphan = b.get("orphanDependents") == Some(&json!(true));
        DeleteOpts {
            grace: b.get("gracePeriodSeconds").and_then(Value::as_i64),
            policy: if orphan {
                Some("Orphan".into())
            } else {
                text("/propagationPolicy")
            },
            uid: text("/preconditions/uid"),
            rv: text("/preconditions/resourceVersion"),
            dry_run: b
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.contains(&json!("All"))),
        }
    }
}

fn delete_opts(q: &Query, headers: &HeaderMap, raw: &Bytes) -> ApiResult<DeleteOpts> {
    let mut o = if raw.is_empty() {
        DeleteOpts::default()
    } else {
        DeleteOpts::from_value(&decode_body(&content_type(headers), raw)?.value)
    };
    o.dry_run |= q.dry_run();
    if let Some(g) = q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
        o.grace = Some(g);
    }
    if let Some(p) = q.get("propagationPolicy") {
        o.policy = Some(p.to_string());
    }
    if let Some(p) = &o.policy {
        if !["Background", "Foreground", "Orphan"].contains(&p.as_str()) {
            return Err(ApiError::new(422, "Invalid", format!("DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\"")));
        }
    }
    Ok(o)
}

async fn delete(
    st: &AppState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    raw: &Bytes,
) -> ApiResult<Response> {
    let opts = delete_opts(q, headers, raw)?;
    delete_one(st, t, &opts)
        .await
        .map(|(code, v)| json_response(code, &v, &[]))
}

pub(crate) async fn delete_one(
    st: &AppState,
    t: &Target,
    opts: &DeleteOpts,
) -> ApiResult<(StatusCode, Value)> {
    let name = t.name.clone().unwrap_or_default();
    for _ in 0..8 {
        let (mut obj, kv) = load(st, t).await?;
        if let Some(uid) = &opts.uid {
            if meta_str(&obj, "uid") != Some(uid.as_str()) {
                return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}", t.kind.qualified_plural(), meta_str(&obj, "uid").unwrap_or(""))));
            }
        }
        if let Some(rv) = &opts.rv {
            if *rv != kv.mod_revision.to_string() {
                return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", t.kind.qualified_plural(), kv.mod_revision)));
            }
        }
        if t.kind.kind == "Namespace" {
            return delete_namespace(st, t, obj, kv, opts).await;
        }
        let uid = meta_str(&obj, "uid").unwrap_or("").to_string();
        let ns = meta_str(&obj, "namespace").map(str::to_string);
        // Foreground and Orphan keep the owner (with a finalizer) until its dependents
        // are deleted or released; Background deletes it now and its dependents after.
        let policy = opts.policy.as_deref().unwrap_or("Background");
        let gc_finalizer = match policy {
            "Foreground" => Some(gc::FOREGROUND),
            "Orphan" => Some(gc::ORPHAN),
            _ => None,
        };
        let mut finalizers: Vec<Value> = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let already = obj.pointer("/metadata/deletionTimestamp").is_some();
        if let Some(f) = gc_finalizer {
            if !already && !finalizers.contains(&json!(f)) {
                finalizers.push(json!(f));
            }
        }
        let has_finalizers = !finalizers.is_empty();
        // Pods on a node end gracefully: the node agent stops them and then deletes with
        // grace 0. Unbound or finished pods go at once (Kubernetes' CheckGracefulDelete).
        let mut grace = 0;
        if t.kind.kind == "Pod" {
            let bound = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let finished = matches!(
                obj.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            let default = obj
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            grace = if bound && !finished {
                opts.grace.unwrap_or(default).max(0)
            } else {
                0
            };
        }
        if !has_finalizers && grace == 0 {
            if opts.dry_run {
                return Ok((StatusCode::OK, obj));
            }
            return match st.store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) => {
                    gc::spawn_release(st, t, ns, uid, "Background");
                    Ok((StatusCode::OK, obj))
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => Err(not_found(&t.kind, &name)),
                Err(e) => Err(e.into()),
            };
        }
        let cur_grace = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if already && cur_grace.is_some_and(|g| g <= grace) {
            return Ok((StatusCode::OK, obj));
        }
        let when = deletion_deadline(Utc::now(), grace);
        {
            let meta = meta_mut(&mut obj)?;
            if !already || grace < cur_grace.unwrap_or(i64::MAX) {
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(when.to_rfc3339_opts(SecondsFormat::Secs, true)),
                );
            }
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            meta.insert("finalizers".into(), Value::Array(finalizers));
        }
        if opts.dry_run {
            return Ok((StatusCode::OK, obj));
        }
        match st
            .store
            .update(&kv.key, encode_for_store(&obj)?, Some(kv.mod_revision))
            .await
        {
            Ok(rev) => {
                meta_mut(&mut obj)?.insert("resourceVersion".into(), json!(rev.to_string()));
                if !already {
                    if let Some(f) = gc_finalizer {
                        gc::spawn_release(st, t, ns, uid, f);
                    }
                }
                return Ok((StatusCode::OK, obj));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(conflict(&t.kind, &name))
}

/// The latest deletion deadline written, 9999-12-30T00:00:00Z: Go clients parse years up
/// to 9999 only, and Rust ones (jiff, under kube-rs) instants up to 9999-12-30T22:00Z. A
/// later timestamp would break every watch of the object's kind for those clients.
const LATEST_DEADLINE: i64 = 253_402_128_000;

/// `now + grace` seconds without panicking on a user's huge grace period: it saturates at
/// [`LATEST_DEADLINE`] (Go's time arithmetic does not panic either).
fn deletion_deadline(now: DateTime<Utc>, grace: i64) -> DateTime<Utc> {
    let latest = DateTime::<Utc>::from_timestamp(LATEST_DEADLINE, 0).unwrap_or(now);
    chrono::TimeDelta::try_seconds(grace)
        .and_then(|d| now.checked_add_signed(d))
        .map_or(latest, |t| t.min(latest))
}

/// Drop `finalizer` from an object; the object goes away if it was the last one and the
/// object is being deleted.
pub(crate) async fn remove_finalizer(st: &AppState, t: &Target, finalizer: &str) -> ApiResult<()> {
    for _ in 0..8 {
        let (old, kv) = load(st, t).await?;
        let mut obj = old.clone();
        let Some(list) = obj
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        else {
            return Ok(());
        };
        let before = list.len();
        list.retain(|f| f.as_str() != Some(finalizer));
        if list.len() == before {
            return Ok(());
        }
        match store_update(st, &t.kind, &kv, Some(&old), obj, &Query::default(), &[]).await {
            Err(e) if e.reason == "Conflict" => continue,
            other => return other.map(|_| ()),
        }
    }
    Err(conflict(&t.kind, t.name.as_deref().unwrap_or("")))
}

/// Namespaces: mark Terminating, remove everything in them, then remove the namespace.
/// (The namespace controller of the next milestone takes this over; until then the API
/// server does it itself so `kubectl delete namespace` finishes.)
async fn delete_namespace(
    st: &AppState,
    t: &Target,
    mut obj: Value,
    kv: KeyValue,
    opts: &DeleteOpts,
) -> ApiResult<(StatusCode, Value)> {
    if opts.dry_run {
        return Ok((StatusCode::OK, obj));
    }
    let ns = t.name.clone().unwrap_or_default();
    if obj.pointer("/metadata/deletionTimestamp").is_none() {
        meta_mut(&mut obj)?.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), json!({"phase": "Terminating"}));
        }
        match st
            .store
            .update(&kv.key, encode_for_store(&obj)?, Some(kv.mod_revision))
            .await
        {
            Ok(rev) => {
                meta_mut(&mut obj)?.insert("resourceVersion".into(), json!(rev.to_string()));
            }
            Err(StoreError::Conflict { .. }) => return Err(conflict(&t.kind, &ns)),
            Err(e) => return Err(e.into()),
        }
    }
    let st2 = st.clone();
    let nskey = kv.key.clone();
    tokio::spawn(async move {
        for kind in st2.reg.kinds().iter().filter(|k| k.namespaced) {
            let prefix = key(kind, Some(&ns), None);
            let Ok((items, _)) = st2.store.list(&prefix).await else {
                continue;
            };
            for it in items {
                if let Err(e) = st2.store.delete(&it.key, None).await {
                    tracing::warn!(key = %it.key, error = %e, "namespace cleanup");
                }
            }
        }
        if let Err(e) = st2.store.delete(&nskey, None).await {
            tracing::warn!(namespace = %ns, error = %e, "removing namespace");
        }
    });
    Ok((StatusCode::OK, obj))
}

async fn delete_collection(
    st: &AppState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    raw: &Bytes,
) -> ApiResult<Response> {
    let opts = delete_opts(q, headers, raw)?;
    let sel = selectors(&t.kind, q)?;
    let (items, rev, _) = list_objects(st, t, &sel, None, None).await?;
    let mut deleted = Vec::new();
    for it in items {
        let name = meta_str(&it, "name").unwrap_or("").to_string();
        let ns = meta_str(&it, "namespace").map(str::to_string);
        let one = Target {
            kind: t.kind.clone(),
            namespace: ns,
            name: Some(name),
            sub: None,
        };
        match delete_one(st, &one, &opts).await {
            Ok((_, v)) => deleted.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({"kind": t.kind.list_kind, "apiVersion": t.kind.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": deleted});
    Ok(json_response(StatusCode::OK, &body, &[]))
}

// ---------------------------------------------------------------------------
// subresources: scale, binding, eviction

fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let k = e.get("key").and_then(Value::as_str).unwrap_or("");
            let vals: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            parts.push(
                match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => format!("{k} in ({})", vals.join(",")),
                    "NotIn" => format!("{k} notin ({})", vals.join(",")),
                    "Exists" => k.to_string(),
                    _ => format!("!{k}"),
                },
            );
        }
    }
    parts.join(",")
}

fn scale_of(kind: &Kind, obj: &Value) -> Value {
    let sp = kind.scale.unwrap_or(spindle_api::registry::ScalePaths {
        spec_replicas: "/spec/replicas",
        status_replicas: "/status/replicas",
        selector: "/spec/selector",
    });
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut m = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(f) {
            m[f] = v.clone();
        }
    }
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": m,
        "spec": {"replicas": obj.pointer(sp.spec_replicas).cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer(sp.status_replicas).cloned().unwrap_or(json!(0)),
                   "selector": obj.pointer(sp.selector).map(selector_string).unwrap_or_default()},
    })
}

async fn get_scale(st: &AppState, t: &Target) -> ApiResult<Response> {
    let (obj, _) = load(st, t).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&t.kind, &obj), &[]))
}

async fn write_scale(
    st: &AppState,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    raw: &Bytes,
    is_patch: bool,
) -> ApiResult<Response> {
    let ct = content_type(headers);
    let body = decode_body(&ct, raw)?.value;
    let name = t.name.clone().unwrap_or_default();
    for _ in 0..8 {
        let (old, kv) = load(st, t).await?;
        let cur = scale_of(&t.kind, &old);
        let new_scale = if is_patch {
            apply_patch(&ct, &cur, &body)?
        } else {
            body.clone()
        };
        if let Some(rv) = new_scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            if !is_patch && rv != kv.mod_revision.to_string() {
                return Err(conflict(&t.kind, &name));
            }
        }
        let replicas = new_scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "Scale.autoscaling",
                "autoscaling",
                "Scale",
                &name,
                &[validation::FieldError::invalid(
                    "spec.replicas",
                    &json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let mut obj = old.clone();
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), json!(replicas));
        }
        let scale_target = Target {
            sub: None,
            ..t.clone()
        };
        match finish_update(st, &scale_target, q, headers, old, kv, obj, vec![], true).await {
            Ok(resp) => {
                let (updated, _) = load(st, t).await?;
                let _ = resp;
                return Ok(json_response(
                    StatusCode::OK,
                    &scale_of(&t.kind, &updated),
                    &[],
                ));
            }
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(conflict(&t.kind, &name))
}

fn success_status(kind: &str, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201, "details": {"name": name, "kind": kind}})
}

async fn bind(st: &AppState, t: &Target, raw: &Bytes, headers: &HeaderMap) -> ApiResult<Response> {
    let b = decode_body(&content_type(headers), raw)?.value;
    let node = b
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "Binding",
                "",
                "bindings",
                t.name.as_deref().unwrap_or(""),
                &[validation::FieldError::required("target.name")],
            )
        })?;
    let name = t.name.clone().unwrap_or_default();
    for _ in 0..8 {
        let (mut pod, kv) = load(st, t).await?;
        if let Some(cur) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{cur}\"")));
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host")));
        }
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), json!(node));
        }
        if let Some(m) = pod.as_object_mut() {
            m.entry("status").or_insert_with(|| json!({}));
        }
        let mut conds: Vec<Value> = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c.get("type") != Some(&json!("PodScheduled")));
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
        if let Some(s) = pod.get_mut("status").and_then(Value::as_object_mut) {
            s.insert("conditions".into(), json!(conds));
        }
        match st
            .store
            .update(&kv.key, encode_for_store(&pod)?, Some(kv.mod_revision))
            .await
        {
            Ok(_) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &success_status("pods", &name),
                    &[],
                ))
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(conflict(&t.kind, &name))
}

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True"))
            })
        })
}

/// Kubernetes keeps at most this many evicted-but-not-yet-deleted pods in a budget's
/// status before refusing more evictions.
const MAX_DISRUPTED_PODS: usize = 2000;

/// A 429 refusing an eviction for a budget, with the cause kubectl drain prints.
fn budget_refusal(cause: String, retry_after: Option<u64>) -> ApiError {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if let Some(s) = retry_after {
        details["retryAfterSeconds"] = json!(s);
    }
    ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    )
    .with_details(details)
}

/// The budgets covering a pod: a budget without a selector covers nothing, one with an
/// empty selector (policy/v1) every pod of its namespace.
async fn budgets_of(st: &AppState, pod: &Value, ns: Option<&str>) -> ApiResult<Vec<KeyValue>> {
    let Some(pdb_kind) = st.reg.by_resource("policy", "v1", "poddisruptionbudgets") else {
        return Ok(Vec::new());
    };
    let empty = Map::new();
    let labels = pod
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let (pdbs, _) = st.store.list(&key(pdb_kind, ns, None)).await?;
    let mut out = Vec::new();
    for kv in pdbs {
        let pdb = decode_stored(&kv)?;
        if pdb
            .pointer("/spec/selector")
            .filter(|s| !s.is_null())
            .is_some_and(|sel| validation::selector_matches(sel, labels))
        {
            out.push(kv);
        }
    }
    Ok(out)
}

/// Admit an eviction against the pod's PodDisruptionBudget, as the eviction subresource
/// does: spend one of the budget's `status.disruptionsAllowed` with a compare-and-swap on
/// the budget, and note the pod in `status.disruptedPods` so the disruption controller
/// counts it as gone until it is deleted. Concurrent evictions (kubectl drain sends one
/// per pod at once) therefore cannot all pass on the same count. Refusals are 429s, which
/// kubectl drain retries.
///
/// Returns the pod revision the deletion must still find when the pod passed without
/// spending the budget for being pending or unready: if it started or turned Ready
/// meanwhile, the deletion fails and the eviction is decided again, rather than taking a
/// healthy pod for free.
async fn admit_eviction(st: &AppState, t: &Target, dry_run: bool) -> ApiResult<Option<u64>> {
    let (pod, pod_kv) = load(st, t).await?;
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed"))
        || pod.pointer("/metadata/deletionTimestamp").is_some()
    {
        // Finished or already going: evicting it disrupts nothing.
        return Ok(None);
    }
    if phase == Some("Pending") {
        // Not started: nothing to disrupt, as long as it has not started by the time it
        // is deleted.
        return Ok(Some(pod_kv.mod_revision));
    }
    let ns = t.namespace.as_deref();
    let pod_name = t.name.as_deref().unwrap_or("");
    let mut budgets = budgets_of(st, &pod, ns).await?;
    if budgets.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some(mut kv) = budgets.pop() else {
        return Ok(None);
    };
    for _ in 0..20 {
        let mut pdb = decode_stored(&kv)?;
        let name = meta_str(&pdb, "name").unwrap_or("").to_string();
        let status = |f: &str| {
            pdb.pointer(&format!("/status/{f}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let (allowed, healthy, desired) = (
            status("disruptionsAllowed"),
            status("currentHealthy"),
            status("desiredHealthy"),
        );
        if !pod_ready(&pod) {
            // An unhealthy pod costs the budget nothing when the policy says so, or (the
            // default, IfHealthyBudget) while the budget is met anyway.
            let policy = pdb
                .pointer("/spec/unhealthyPodEvictionPolicy")
                .and_then(Value::as_str);
            if policy == Some("AlwaysAllow") || (healthy >= desired && desired > 0) {
                return Ok(Some(pod_kv.mod_revision));
            }
        }
        let generation = pdb
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if status("observedGeneration") < generation {
            return Err(budget_refusal(
                format!("The disruption budget {name} is still being processed by the server."),
                Some(10),
            ));
        }
        if allowed < 0 {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudgets.policy \"{name}\" is forbidden: pdb disruptions allowed is negative"
            )));
        }
        let disrupted = pdb
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
            .map_or(0, Map::len);
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudgets.policy \"{name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
            )));
        }
        if allowed == 0 {
            return Err(budget_refusal(
                format!("The disruption budget {name} needs {desired} healthy pods and has {healthy} currently"),
                None,
            ));
        }
        if dry_run {
            return Ok(None);
        }
        let now = now_rfc3339();
        let st_obj = pdb
            .as_object_mut()
            .ok_or_else(|| ApiError::internal("stored PodDisruptionBudget is not an object"))?
            .entry("status")
            .or_insert_with(|| json!({}));
        st_obj["disruptionsAllowed"] = json!(allowed - 1);
        if allowed == 1 {
            // Spent: the condition says so at once, as Kubernetes' eviction handler does.
            if let Some(conds) = st_obj.get_mut("conditions").and_then(Value::as_array_mut) {
                for c in conds.iter_mut() {
                    if c.get("type") == Some(&json!("DisruptionAllowed")) {
                        c["status"] = json!("False");
                        c["reason"] = json!("InsufficientPods");
                        c["lastTransitionTime"] = json!(now);
                    }
                }
            }
        }
        if !st_obj.get("disruptedPods").is_some_and(Value::is_object) {
            st_obj["disruptedPods"] = json!({});
        }
        st_obj["disruptedPods"][pod_name] = json!(now);
        match st
            .store
            .update(&kv.key, encode_for_store(&pdb)?, Some(kv.mod_revision))
            .await
        {
            Ok(_) => return Ok(None),
            Err(StoreError::Conflict { .. }) => {
                // Another eviction or the controller wrote the budget first: decide again
                // on what it wrote.
                match st.store.get(&kv.key).await? {
                    Some(fresh) => kv = fresh,
                    None => return Ok(None),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(budget_refusal(
        "The disruption budget is being updated too often; try again.".into(),
        Some(1),
    ))
}

async fn evict(st: &AppState, t: &Target, raw: &Bytes, headers: &HeaderMap) -> ApiResult<Response> {
    let b = if raw.is_empty() {
        json!({})
    } else {
        decode_body(&content_type(headers), raw)?.value
    };
    let mut opts = DeleteOpts::from_value(b.get("deleteOptions").unwrap_or(&json!({})));
    let caller_rv = opts.rv.is_some();
    let mut tries = 0;
    loop {
        let must_find = admit_eviction(st, t, opts.dry_run).await?;
        if !caller_rv {
            opts.rv = must_find.map(|r| r.to_string());
        }
        match delete_one(st, t, &opts).await {
            // The pod changed before it could be deleted: decide again; if it keeps
            // changing, a 429 (which kubectl drain retries) rather than a 409 (which ends it).
            Err(e) if e.code == 409 && must_find.is_some() && !caller_rv => {
                tries += 1;
                if tries >= 5 {
                    return Err(budget_refusal(
                        "The pod kept changing while it was being evicted; try again.".into(),
                        Some(1),
                    ));
                }
            }
            r => {
                r?;
                break;
            }
        }
    }
    Ok(json_response(
        StatusCode::CREATED,
        &success_status("pods", t.name.as_deref().unwrap_or("")),
        &[],
    ))
}
