//! The `token` subresource of a ServiceAccount (authentication.k8s.io/v1 TokenRequest,
//! what `kubectl create token` and the agent's projected volumes call): a JWT for the
//! account, for the requested audiences (the API server's by default) and lifetime (an
//! hour by default), optionally bound to a Pod or Secret so it dies with that object.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use spindle_api::validation::FieldError;

use super::storage::{json_response, load};
use super::Req;
use crate::request::{content_type, decode_body, Target};
use crate::sa_token::{Claims, ObjectRef, ISSUER};
use crate::status::{ApiError, ApiResult};

/// kube-apiserver's bounds on `spec.expirationSeconds`: at least ten minutes, at most
/// 2^32 seconds; an hour when not given.
const MIN_SECONDS: i64 = 600;
const MAX_SECONDS: i64 = 1 << 32;
const DEFAULT_SECONDS: i64 = 3600;

fn invalid(name: &str, errs: &[FieldError]) -> ApiError {
    ApiError::invalid(
        "TokenRequest.authentication.k8s.io",
        "authentication.k8s.io",
        "TokenRequest",
        name,
        errs,
    )
}

fn str_at<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The object a token is bound to, checked as kube-apiserver's token REST does: it must
/// exist, match the uid given (if any), and a pod must run as this ServiceAccount.
async fn bound_object(rq: Req<'_>, sa: &str, r: &Value) -> ApiResult<(&'static str, ObjectRef)> {
    let kind = str_at(r, "/kind").unwrap_or("");
    let api_version = str_at(r, "/apiVersion").unwrap_or("");
    let name = str_at(r, "/name").unwrap_or("");
    let (plural, claim) = match (api_version, kind) {
        ("v1", "Pod") => ("pods", "pod"),
        ("v1", "Secret") => ("secrets", "secret"),
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {}",
                gvk(api_version, kind)
            )))
        }
    };
    let kind = rq
        .st
        .reg
        .by_resource("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let t = Target {
        kind: kind.clone(),
        namespace: rq.t.namespace.clone(),
        name: Some(name.to_string()),
        sub: None,
    };
    let (obj, _) = load(rq.st, &t).await?;
    let uid = str_at(&obj, "/metadata/uid").unwrap_or("").to_string();
    if let Some(want) = str_at(r, "/uid") {
        if want != uid {
            return Err(ApiError::new(409, "Conflict", format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated",
                kind = kind.kind,
            )));
        }
    }
    if claim == "pod" && str_at(&obj, "/spec/serviceAccountName").unwrap_or("default") != sa {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount {sa:?} to pod running with different serviceaccount name."
        )));
    }
    Ok((
        claim,
        ObjectRef {
            name: name.to_string(),
            uid,
        },
    ))
}

/// Go's `schema.GroupVersionKind.String()`.
fn gvk(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    format!("{group}/{version}, Kind={kind}")
}

pub(super) async fn create(rq: Req<'_>, raw: &Bytes) -> ApiResult<Response> {
    let body = decode_body(&content_type(rq.headers), raw)?.value;
    let name = rq.t.name.clone().unwrap_or_default();
    let ns = rq.t.namespace.clone().unwrap_or_default();
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(
                &name,
                &[FieldError::invalid_type(
                    "spec.expirationSeconds",
                    "expected an integer".into(),
                )],
            )
        })?,
    };
    if seconds < MIN_SECONDS {
        return Err(invalid(
            &name,
            &[FieldError::invalid(
                "spec.expirationSeconds",
                &json!(seconds),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    if seconds > MAX_SECONDS {
        return Err(invalid(
            &name,
            &[FieldError::invalid(
                "spec.expirationSeconds",
                &json!(seconds),
                "may not specify a duration larger than 2^32 seconds",
            )],
        ));
    }
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = vec![ISSUER.to_string()];
    }
    crate::admission::check_token(rq.st, rq.user, &ns, &name, &spec).await?;
    let (sa, _) = load(rq.st, rq.t).await?;
    let sa_ref = ObjectRef {
        name: name.clone(),
        uid: str_at(&sa, "/metadata/uid").unwrap_or("").to_string(),
    };
    let now = chrono::Utc::now();
    let mut claims = Claims::new(&ns, sa_ref, audiences.clone(), now.timestamp(), seconds);
    let mut bound = Value::Null;
    if let Some(r) = spec.get("boundObjectRef").filter(|r| !r.is_null()) {
        let (claim, obj) = bound_object(rq, &name, r).await?;
        bound = json!({
            "kind": r.get("kind"), "apiVersion": r.get("apiVersion"),
            "name": obj.name, "uid": obj.uid,
        });
        match claim {
            "pod" => claims.kubernetes.pod = Some(obj),
            _ => claims.kubernetes.secret = Some(obj),
        }
    }
    let token = rq
        .st
        .sa_signer
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0)
        .unwrap_or(now)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut spec_out = json!({"audiences": audiences, "expirationSeconds": seconds});
    if !bound.is_null() {
        spec_out["boundObjectRef"] = bound;
    }
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns,
                     "creationTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok(json_response(StatusCode::CREATED, &out, &[]))
}
