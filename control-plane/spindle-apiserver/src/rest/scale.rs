//! The `scale` subresource (autoscaling/v1 Scale) of kinds whose registry entry names
//! their replica and selector paths.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use spindle_api::registry::ScalePaths;
use spindle_api::validation;

use super::handlers::apply_patch;
use super::storage::{conflict, json_response, load};
use super::write::finish_update;
use super::Req;
use crate::request::{content_type, decode_body, Target};
use crate::status::{ApiError, ApiResult};

/// A LabelSelector as a selector string (`app=web,tier in (a,b)`).
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

/// A plain label map as a selector string, sorted by key as Kubernetes'
/// `labels.SelectorFromSet` prints it.
fn map_selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    parts.sort();
    parts.join(",")
}

fn scale_of(sp: &ScalePaths, obj: &Value) -> Value {
    let selector = obj.pointer(sp.selector).map(|s| {
        if sp.map_selector {
            map_selector_string(s)
        } else {
            selector_string(s)
        }
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
                   "selector": selector.unwrap_or_default()},
    })
}

/// The scale paths of a kind that has them (the router checks before calling).
fn paths(t: &Target) -> ApiResult<ScalePaths> {
    t.kind.scale.ok_or_else(ApiError::path_not_found)
}

pub(super) async fn get(rq: Req<'_>) -> ApiResult<Response> {
    let sp = paths(rq.t)?;
    let (obj, _) = load(rq.st, rq.t).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&sp, &obj), &[]))
}

pub(super) async fn write(rq: Req<'_>, raw: &Bytes, is_patch: bool) -> ApiResult<Response> {
    let (st, t) = (rq.st, rq.t);
    let sp = paths(t)?;
    let ct = content_type(rq.headers);
    let body = decode_body(&ct, raw)?.value;
    let name = t.name.clone().unwrap_or_default();
    for _ in 0..8 {
        let (old, kv) = load(st, t).await?;
        let cur = scale_of(&sp, &old);
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
        match finish_update(rq.on(&scale_target), old, kv, obj, vec![], true).await {
            Ok(resp) => {
                let (updated, _) = load(st, t).await?;
                let _ = resp;
                return Ok(json_response(StatusCode::OK, &scale_of(&sp, &updated), &[]));
            }
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(conflict(&t.kind, &name))
}
