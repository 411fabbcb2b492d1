//! The `binding` subresource: the scheduler assigns a pod to a node.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use spindle_api::validation;
use spindle_store::StoreError;

use super::storage::{conflict, json_response, load};
use super::{encode_for_store, now_rfc3339, Req};
use crate::request::{content_type, decode_body};
use crate::status::{ApiError, ApiResult};

/// The Status a binding or an eviction answers with: kube-apiserver's is a bare
/// `Success` whose code the create handler fills in, without details.
pub(super) fn success_status() -> Value {
    crate::status::Status::success(201, None).to_value()
}

pub(super) async fn bind(rq: Req<'_>, raw: &Bytes) -> ApiResult<Response> {
    let (st, t) = (rq.st, rq.t);
    let b = decode_body(&content_type(rq.headers), raw)?.value;
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
            Ok(_) => return Ok(json_response(StatusCode::CREATED, &success_status(), &[])),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(conflict(&t.kind, &name))
}
