//! The write pipeline shared by create, update, patch and apply: the checks done while
//! decoding, server-set metadata, the kind's strategy (defaults, prepare, validate),
//! the admission chain, allocation, and the store write.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};
use spindle_api::{validation, Kind};
use spindle_store::{KeyValue, StoreError};

use super::handlers::field_manager;
use super::storage::{
    json_response, meta_mut, meta_str, now_rfc3339, served, store_update, written_response,
};
use super::{key, Req};
use crate::admission::{self, Attributes, Operation};
use crate::request::Query;
use crate::status::{ApiError, ApiResult};
use crate::stored::encode_for_store;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

pub(super) fn field_validation(q: &Query) -> ApiResult<FieldValidation> {
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
pub(super) fn decode_checks(
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
    // Checked as the client's version; from here on the object is in the storage version.
    if let Some(c) = kind.conversion {
        (c.to_storage)(obj);
    }
    Ok(warnings)
}

/// Validate a new object, or an update of `old`. An update is held only to the errors
/// it introduces: an object stored before a rule existed (or under a looser one) stays
/// writable, its status above all, as Kubernetes ratchets validation.
fn validate_or_reject(kind: &Kind, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let mut errs = kind.validate(obj);
    if let (false, Some(old)) = (errs.is_empty(), old) {
        let before = kind.validate(old);
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

/// Server-set fields of a new object: name, uid, timestamps, generation, and what the
/// kind's strategy sets (its initial status).
fn prepare_new(
    kind: &Kind,
    obj: &mut Value,
    ns: Option<&str>,
    user: &crate::User,
) -> ApiResult<()> {
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
            meta.insert("name".into(), json!(spindle_meta::names::generate_name(gn)));
        }
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if kind.strategy.tracks_generation() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    kind.strategy.prepare_for_create(o);
    kind.strategy.set_requestor(
        o,
        &spindle_api::strategy::UserInfo {
            name: &user.name,
            uid: "",
            groups: &user.groups,
        },
    );
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

/// Carry over what a client may not change and apply the status-subresource split; then
/// what the kind's strategy keeps on an update of the main resource.
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
        kind.strategy
            .prepare_for_subresource_update("status", old, new);
    } else if let Some(sub) = sub {
        kind.strategy.prepare_for_subresource_update(sub, old, new);
    } else {
        if kind.status_subresource {
            if let Some(m) = new.as_object_mut() {
                match old.get("status") {
                    Some(s) => m.insert("status".into(), s.clone()),
                    None => m.remove("status"),
                };
            }
        }
        kind.strategy.prepare_for_update(old, new);
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

/// Create `obj` (already decoded and checked) and answer 201; `manager` is the field
/// manager to record, None when server-side apply has recorded it.
pub(super) async fn create_object(
    rq: Req<'_>,
    mut obj: Value,
    manager: Option<&str>,
    warnings: Vec<String>,
) -> ApiResult<Response> {
    let (st, kind, q) = (rq.st, &rq.t.kind, rq.q);
    prepare_new(kind, &mut obj, rq.t.namespace.as_deref(), rq.user)?;
    kind.default_object(&mut obj);
    let name = meta_str(&obj, "name").unwrap_or("").to_string();
    let ns = if kind.namespaced {
        meta_str(&obj, "namespace").map(str::to_string)
    } else {
        None
    };
    let attrs = Attributes {
        operation: Operation::Create,
        kind,
        subresource: None,
        namespace: ns.as_deref(),
        name: &name,
        user: rq.user,
        dry_run: q.dry_run(),
        old: None,
    };
    admission::admit(st, &attrs, &mut obj).await?;
    validate_or_reject(kind, &obj, None)?;
    if let Some(m) = manager {
        spindle_patch::ssa::record_update(None, &mut obj, m, &kind.api_version(), &now_rfc3339());
    }
    admission::validate(st, &attrs, &obj).await?;
    if let (Some(a), false) = (kind.strategy.allocation(), q.dry_run()) {
        crate::alloc::on_create(st, a, &mut obj).await?;
    }
    let k = key(kind, ns.as_deref(), Some(&name));
    if q.dry_run() {
        if st.store.get(&k).await?.is_some() {
            return Err(already_exists(kind, &name));
        }
        return Ok(json_response(StatusCode::CREATED, &obj, &warnings));
    }
    let bytes = encode_for_store(&obj)?;
    drop(obj);
    let rev = match st.store.create(&k, bytes.clone()).await {
        Ok(r) => r,
        Err(StoreError::AlreadyExists(_)) => return Err(already_exists(kind, &name)),
        Err(e) => return Err(e.into()),
    };
    written_response(StatusCode::CREATED, kind, &k, bytes, rev, &warnings)
}

fn already_exists(kind: &Kind, name: &str) -> ApiError {
    ApiError::already_exists(&kind.qualified_plural(), kind.group, kind.plural, name)
}

/// Update `old` (stored as `kv`) to `obj` (already decoded and checked) and answer 200;
/// `record` says whether to record the request's field manager.
pub(super) async fn finish_update(
    rq: Req<'_>,
    old: Value,
    kv: KeyValue,
    mut obj: Value,
    warnings: Vec<String>,
    record: bool,
) -> ApiResult<Response> {
    let (st, t, q) = (rq.st, rq.t, rq.q);
    let kind = &t.kind;
    merge_update(kind, &old, &mut obj, t.sub.as_deref())?;
    if let (Some(a), None, false) = (kind.strategy.allocation(), &t.sub, q.dry_run()) {
        crate::alloc::on_update(st, a, &old, &mut obj).await?;
    }
    kind.default_object(&mut obj);
    let name = meta_str(&old, "name").unwrap_or("").to_string();
    let attrs = Attributes {
        operation: Operation::Update,
        kind,
        subresource: t.sub.as_deref(),
        namespace: t.namespace.as_deref(),
        name: &name,
        user: rq.user,
        dry_run: q.dry_run(),
        old: Some(&old),
    };
    admission::admit(st, &attrs, &mut obj).await?;
    validate_or_reject(kind, &obj, Some(&old))?;
    validate_update(kind, t.sub.as_deref(), &old, &obj)?;
    admission::validate(st, &attrs, &obj).await?;
    meta_mut(&mut obj)?.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    if obj == old {
        // A no-op write: Kubernetes neither stores it nor touches managedFields.
        return Ok(json_response(StatusCode::OK, &served(kind, obj), &warnings));
    }
    if record {
        let mgr = field_manager(q, rq.headers);
        spindle_patch::ssa::record_update(
            Some(&old),
            &mut obj,
            &mgr,
            &kind.api_version(),
            &now_rfc3339(),
        );
    }
    meta_mut(&mut obj)?.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    store_update(st, kind, &kv, Some(&old), obj, q, &warnings).await
}

/// What the kind's strategy says an update may not change.
fn validate_update(kind: &Kind, sub: Option<&str>, old: &Value, new: &Value) -> ApiResult<()> {
    let mut errs = Vec::new();
    kind.strategy.validate_update(old, new, &mut errs);
    if let Some(sub) = sub {
        kind.strategy
            .validate_subresource_update(sub, old, new, &mut errs);
    }
    if errs.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        &kind.qualified_kind(),
        kind.group,
        kind.kind,
        meta_str(old, "name").unwrap_or(""),
        &errs,
    ))
}
