//! Deletion: preconditions, graceful deletion (the kind's grace period), finalizers,
//! propagation to dependents ([`gc`]), namespaces that empty themselves, and
//! deletecollection.

mod gc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use spindle_api::strategy::OnDelete;
use spindle_api::Kind;
use spindle_store::{KeyValue, StoreError};

use super::storage::{
    conflict, json_response, list_objects, load, meta_mut, meta_str, not_found, served,
    store_update,
};
use super::{key, now_rfc3339, selectors, Req};
use crate::request::{content_type, decode_body, Query, Target};
use crate::status::{ApiError, ApiResult, Status, StatusDetails};
use crate::stored::encode_for_store;
use crate::AppState;

#[derive(Default)]
pub(crate) struct DeleteOpts {
    pub(crate) grace: Option<i64>,
    pub(crate) policy: Option<String>,
    pub(crate) uid: Option<String>,
    pub(crate) rv: Option<String>,
    pub(crate) dry_run: bool,
    /// The deprecated `orphanDependents` as sent: `false` changes the answer's code.
    pub(crate) orphan_dependents: Option<bool>,
}

/// What a deletion did.
pub(crate) enum Deletion {
    /// The object is gone (or would be, for a dry run); this is what it was.
    Removed(Value),
    /// The object stays until its grace period ends or its finalizers are removed; this
    /// is it now, with its deletionTimestamp.
    Pending(Value),
}

impl DeleteOpts {
    /// The fields of a DeleteOptions body (as sent to DELETE, or inside an Eviction).
    pub(super) fn from_value(b: &Value) -> DeleteOpts {
        let text = |p: &str| b.pointer(p).and_then(Value::as_str).map(str::to_string);
        let orphan_dependents = b.get("orphanDependents").and_then(Value::as_bool);
        let orphan = orphan_dependents == Some(true);
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
            orphan_dependents,
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
    if let Some(orphan) = q.get("orphanDependents").and_then(|b| b.parse().ok()) {
        o.orphan_dependents = Some(orphan);
        if orphan {
            o.policy = Some("Orphan".into());
        }
    }
    if let Some(p) = &o.policy {
        if !["Background", "Foreground", "Orphan"].contains(&p.as_str()) {
            return Err(ApiError::new(422, "Invalid", format!("DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\"")));
        }
    }
    Ok(o)
}

pub(super) async fn delete(rq: Req<'_>, raw: &Bytes) -> ApiResult<Response> {
    let (st, t, q, headers) = (rq.st, rq.t, rq.q, rq.headers);
    let opts = delete_opts(q, headers, raw)?;
    crate::admission::refuse_immortal(&t.kind, t.name.as_deref().unwrap_or(""))?;
    crate::admission::check_delete(
        st,
        rq.user,
        &t.kind,
        t.namespace.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
    )
    .await?;
    let deletion = delete_one(st, t, &opts).await?;
    Ok(deletion_response(&t.kind, &opts, deletion))
}

/// kube-apiserver's answer to a DELETE (its registry's `finalizeDelete` and the delete
/// handler): an object removed at once is answered with a `Success` Status naming it,
/// unless its kind returns the deleted object; an object still being deleted is answered
/// as it now stands, with 202 instead of 200 only when the client sent
/// `orphanDependents: false` (a rule the handler keeps for old clients).
fn deletion_response(kind: &Kind, opts: &DeleteOpts, deletion: Deletion) -> Response {
    match deletion {
        Deletion::Removed(obj) if !kind.strategy.returns_deleted_object() => {
            let details = StatusDetails {
                uid: meta_str(&obj, "uid").unwrap_or("").to_string(),
                ..StatusDetails::of(
                    meta_str(&obj, "name").unwrap_or(""),
                    kind.group,
                    kind.plural,
                )
            };
            Status::success(0, Some(&details)).response(StatusCode::OK)
        }
        Deletion::Removed(obj) => json_response(StatusCode::OK, &served(kind, obj), &[]),
        Deletion::Pending(obj) => {
            let code = if opts.orphan_dependents == Some(false) {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            json_response(code, &served(kind, obj), &[])
        }
    }
}

/// DeleteOptions.preconditions against the stored object, with kube-apiserver's words:
/// its generic delete path (`rest.BeforeDelete`) names the Kind, and the namespace
/// registry, which checks them itself, names the resource and says "Precondition failed".
fn check_preconditions(
    kind: &Kind,
    name: &str,
    obj: &Value,
    rv: u64,
    opts: &DeleteOpts,
) -> ApiResult<()> {
    let uid = meta_str(obj, "uid").unwrap_or("");
    let rv = rv.to_string();
    let namespace = kind.strategy.on_delete() == OnDelete::EmptyNamespace;
    let mismatch = match (&opts.uid, &opts.rv) {
        (Some(want), _) if want != uid && namespace => {
            format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}")
        }
        (Some(want), _) if want != uid => format!("the UID in the precondition ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"),
        (_, Some(want)) if *want != rv && namespace => format!("Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"),
        (_, Some(want)) if *want != rv => format!("the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({rv}). The object might have been modified"),
        _ => return Ok(()),
    };
    // BeforeDelete's conflict is about GroupResource{group, Kind}; the namespace
    // registry's about the resource.
    let (what, details_kind) = if namespace {
        (kind.qualified_plural(), kind.plural)
    } else if kind.group.is_empty() {
        (kind.kind.to_string(), kind.kind)
    } else {
        (format!("{}.{}", kind.kind, kind.group), kind.kind)
    };
    Err(ApiError::new(
        409,
        "Conflict",
        format!("Operation cannot be fulfilled on {what} \"{name}\": {mismatch}"),
    )
    .with_details(StatusDetails::of(name, kind.group, details_kind)))
}

pub(crate) async fn delete_one(
    st: &AppState,
    t: &Target,
    opts: &DeleteOpts,
) -> ApiResult<Deletion> {
    let name = t.name.clone().unwrap_or_default();
    for _ in 0..8 {
        let (mut obj, kv) = load(st, t).await?;
        check_preconditions(&t.kind, &name, &obj, kv.mod_revision, opts)?;
        if t.kind.strategy.on_delete() == OnDelete::EmptyNamespace {
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
        let grace = t.kind.strategy.grace_period(&obj, opts.grace);
        if !has_finalizers && grace == 0 {
            if opts.dry_run {
                return Ok(Deletion::Removed(obj));
            }
            return match st.store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) => {
                    gc::spawn_release(st, t, ns, uid, "Background");
                    Ok(Deletion::Removed(obj))
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
            return Ok(Deletion::Pending(obj));
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
            return Ok(Deletion::Pending(obj));
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
                return Ok(Deletion::Pending(obj));
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
) -> ApiResult<Deletion> {
    if opts.dry_run {
        return Ok(Deletion::Pending(obj));
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
    Ok(Deletion::Pending(obj))
}

pub(super) async fn delete_collection(rq: Req<'_>, raw: &Bytes) -> ApiResult<Response> {
    let (st, t, q, headers) = (rq.st, rq.t, rq.q, rq.headers);
    let opts = delete_opts(q, headers, raw)?;
    let sel = selectors(&t.kind, q)?;
    let (items, rev, _) = list_objects(st, t, &sel, None, None).await?;
    // kube-apiserver answers with the list it deleted from, as listed before the
    // deletions (its registry's DeleteCollection), whatever each deletion did.
    for it in &items {
        let name = meta_str(it, "name").unwrap_or("").to_string();
        let ns = meta_str(it, "namespace").map(str::to_string);
        let one = Target {
            kind: t.kind.clone(),
            namespace: ns,
            name: Some(name),
            sub: None,
        };
        match delete_one(st, &one, &opts).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({"kind": t.kind.list_kind, "apiVersion": t.kind.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": items});
    Ok(json_response(StatusCode::OK, &body, &[]))
}
