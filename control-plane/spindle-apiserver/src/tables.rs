//! `meta.k8s.io/v1 Table` responses for `kubectl get`, from the registry's printers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use spindle_api::Kind;

pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// Rows embed PartialObjectMetadata by default, since kubectl derives NAMESPACE, LABELS
/// and `-L` columns from it.
pub fn row(kind: &Kind, obj: &Value, include: Option<&str>) -> Value {
    let cells = kind.printer.cells(obj, chrono::Utc::now());
    let object = match include {
        Some("None") => Value::Null,
        Some("Object") => {
            let mut o = obj.clone();
            if let Some(m) = o.as_object_mut() {
                m.insert("apiVersion".into(), json!(kind.api_version()));
                m.insert("kind".into(), json!(kind.kind));
            }
            o
        }
        _ => partial_metadata(obj),
    };
    if object.is_null() {
        json!({"cells": cells})
    } else {
        json!({"cells": cells, "object": object})
    }
}

pub fn table(
    kind: &Kind,
    items: &[Value],
    rv: &str,
    cont: Option<&str>,
    include: Option<&str>,
    headers: bool,
) -> Value {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let rows: Vec<Value> = items.iter().map(|o| row(kind, o, include)).collect();
    let mut t =
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "rows": rows});
    // In watches only the first event carries the column definitions (as the apiserver
    // does), so kubectl prints the header once.
    t["columnDefinitions"] = if headers {
        json!(kind.printer.columns())
    } else {
        Value::Null
    };
    t
}

pub fn response(t: &Value) -> Response {
    let mut r = (StatusCode::OK, t.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TABLE_CONTENT_TYPE),
    );
    r
}
