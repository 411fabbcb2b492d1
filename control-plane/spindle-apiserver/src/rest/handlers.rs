//! The verbs on a resource: get, list, create, update, patch and server-side apply.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use spindle_api::Kind;

use super::storage::{
    conflict, decode_continue, json_response, list_item_json, list_objects, load, meta_mut,
    meta_str, scan, served,
};
use super::write::{
    create_object, decode_checks, field_validation, finish_update, FieldValidation,
};
use super::{now_rfc3339, selectors, type_meta, Req};
use crate::request::{content_type, decode_body, wants_table, Query};
use crate::status::{ApiError, ApiResult};
use crate::tables;

/// The field manager of a write: the query's, or the client program's name.
pub(super) fn field_manager(q: &Query, headers: &HeaderMap) -> String {
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

pub(super) async fn get(rq: Req<'_>) -> ApiResult<Response> {
    let (st, t, q, headers) = (rq.st, rq.t, rq.q, rq.headers);
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
    Ok(json_response(StatusCode::OK, &served(&t.kind, obj), &[]))
}

pub(super) async fn list(rq: Req<'_>) -> ApiResult<Response> {
    let (st, t, q, headers) = (rq.st, rq.t, rq.q, rq.headers);
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
            list_item_json(&t.kind, kv, &sel, &type_meta)
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

pub(super) async fn create(rq: Req<'_>, raw: &Bytes) -> ApiResult<Response> {
    let (t, q, headers) = (rq.t, rq.q, rq.headers);
    let body = decode_body(&content_type(headers), raw)?;
    let mut obj = body.value;
    let warnings = decode_checks(&t.kind, &mut obj, &body.duplicates, field_validation(q)?)?;
    if t.kind.namespaced && t.namespace.is_none() {
        return Err(ApiError::bad_request("the server could not find the requested resource: a namespaced object must be created in a namespace"));
    }
    let mgr = field_manager(q, headers);
    create_object(rq, obj, Some(&mgr), warnings).await
}

pub(super) async fn update(rq: Req<'_>, raw: &Bytes) -> ApiResult<Response> {
    let (st, t, q, headers) = (rq.st, rq.t, rq.q, rq.headers);
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
    finish_update(rq, old, kv, obj, warnings, true).await
}

pub(super) fn apply_patch(ct: &str, old: &Value, patch: &Value) -> ApiResult<Value> {
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

pub(super) async fn patch(rq: Req<'_>, raw: &Bytes) -> ApiResult<Response> {
    let (st, t, q, headers) = (rq.st, rq.t, rq.q, rq.headers);
    let ct = content_type(headers);
    if ct.starts_with("application/apply-patch") {
        return server_side_apply(rq, raw).await;
    }
    let body = decode_body(&ct, raw)?;
    let fv = field_validation(q)?;
    // An unconditional patch is retried on conflicts, as Kubernetes does.
    for _ in 0..8 {
        let (old, kv) = load(st, t).await?;
        // A patch is written against the client's version of the object.
        let mut obj = apply_patch(&ct, &served(&t.kind, old.clone()), &body.value)?;
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
        match finish_update(rq, old, kv, obj, warnings, true).await {
            Err(e) if e.reason == "Conflict" && precondition_rv.is_none() => continue,
            other => return other,
        }
    }
    Err(conflict(&t.kind, t.name.as_deref().unwrap_or("")))
}

async fn server_side_apply(rq: Req<'_>, raw: &Bytes) -> ApiResult<Response> {
    let (st, t, q) = (rq.st, rq.t, rq.q);
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
        let current_served = current.as_ref().map(|(v, _)| served(&t.kind, v.clone()));
        let merged = spindle_patch::ssa::apply(
            current_served.as_ref(),
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
                create_object(rq, obj, None, warnings).await
            }
            Some((old, kv)) => {
                let mut obj = merged;
                let warnings = decode_checks(&t.kind, &mut obj, &[], FieldValidation::Ignore)?;
                finish_update(rq, old, kv, obj, warnings, false).await
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
