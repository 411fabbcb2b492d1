//! `nodes/proxy`: `GET /api/v1/nodes/{name}/proxy/{path}` forwarded to that node's agent
//! endpoint, as kube-apiserver forwards it to the kubelet (`kubectl get --raw
//! /api/v1/nodes/n/proxy/stats/summary`). The caller needs `get` on `nodes/proxy`
//! (checked by the authorization layer before this runs); the agent then authorizes the
//! API server's own client certificate. Only GET is forwarded: the agent's writable
//! paths (exec, attach, port-forward) are reached through the pod subresources.

use axum::body::Body;
use axum::http::{header, Method};
use axum::response::Response;
use http_body_util::BodyExt;

use crate::proxy::{agent_error, call_agent, load_node, node_endpoint};
use crate::status::{ApiError, ApiResult};
use crate::AppState;

/// The node and the agent path (with its leading `/`) of a `nodes/proxy` request path.
pub fn route(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/nodes/")?;
    let (name, tail) = rest.split_once('/')?;
    let sub = match tail.strip_prefix("proxy") {
        Some("") => "/",
        Some(s) if s.starts_with('/') => s,
        _ => return None,
    };
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!name.is_empty()).then(|| (name, sub.to_string()))
}

/// Forwards the request to the agent of node `name` and streams its answer back.
pub async fn forward(
    st: &AppState,
    method: &Method,
    name: &str,
    path: &str,
    query: Option<&str>,
) -> ApiResult<Response> {
    if method != Method::GET {
        return Err(ApiError::method_not_supported(format!(
            "the server does not allow this method on the requested resource (nodes/proxy: {method})"
        )));
    }
    let node = load_node(st, name).await?;
    let (addr, port) = node_endpoint(&node)?;
    let target = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    };
    let resp = call_agent(st, &addr, port, &target).await.map_err(|e| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {e}"),
        )
    })?;
    if !resp.status().is_success() {
        return Err(agent_error(resp).await);
    }
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let mut out = Response::new(Body::new(resp.into_body().map_err(std::io::Error::other)));
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn proxy_paths() {
        assert_eq!(
            route("/api/v1/nodes/n1/proxy/stats/summary"),
            Some(("n1".into(), "/stats/summary".into()))
        );
        assert_eq!(
            route("/api/v1/nodes/n1/proxy"),
            Some(("n1".into(), "/".into()))
        );
        assert_eq!(route("/api/v1/nodes/n1/proxyx"), None);
        assert_eq!(route("/api/v1/nodes/n1/status"), None);
        assert_eq!(route("/api/v1/nodes/n1"), None);
        assert_eq!(route("/api/v1/nodes//proxy/x"), None);
    }
}
