//! The streaming subresources the node agent serves, proxied by the API server:
//! `pods/log`, and `pods/exec` and `pods/portforward`, whose connections are upgraded
//! (WebSocket or SPDY) end to end: the API server forwards the upgrade request to the
//! agent and, once both sides switched protocols, copies bytes both ways without looking
//! into the framing. `nodes/proxy` passes reads to the agent (its `/metrics`).
//!
//! The API server calls the agent's endpoint (Node `status.daemonEndpoints.kubeletEndpoint`
//! on its InternalIP) over HTTPS, as kube-apiserver calls kubelets: the agent's serving
//! certificate must chain to the cluster CA and name that address (the signer issues it
//! only for the node's own name and addresses), and the API server presents its own
//! client certificate (`kube-apiserver-kubelet-client`), which the agent authorizes
//! with a SubjectAccessReview like any other caller. Nothing written on the Node is
//! trusted beyond where to dial.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use spindle_api::validation::{validate_pod_log_options, PodLogLimits};

use crate::request::{Query, Target};
use crate::rest::load;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

/// Options of PodLogOptions the agent understands; anything else is not forwarded.
const LOG_OPTIONS: &[&str] = &[
    "follow",
    "previous",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "limitBytes",
];

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// GET pods/{name}/log.
pub async fn pod_logs(st: &AppState, t: &Target, q: &Query) -> ApiResult<Response> {
    let name = t.name.as_deref().unwrap_or_default();
    check_log_options(q, name)?;
    let (pod, _) = load(st, t).await?;
    let ns = t.namespace.as_deref().unwrap_or_default();
    let container = pick_container(&pod, q, name)?;
    let (addr, port) = agent_endpoint(st, &pod, name).await?;
    let query = {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for k in LOG_OPTIONS {
            if let Some(v) = q.get(k) {
                ser.append_pair(k, v);
            }
        }
        ser.finish()
    };
    let path = format!(
        "/containerLogs/{}/{}/{}?{}",
        enc(ns),
        enc(name),
        enc(&container),
        query
    );
    let resp = call_agent(st, &addr, port, &path).await.map_err(|e| {
        ApiError::new(
            502,
            "InternalError",
            format!("Get \"https://{addr}:{port}{path}\": {e}"),
        )
    })?;
    if !resp.status().is_success() {
        return Err(agent_error(resp).await);
    }
    let body = Body::new(resp.into_body().map_err(std::io::Error::other));
    let mut out = Response::new(body);
    *out.status_mut() = StatusCode::OK;
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

/// kube-apiserver refuses bad numbers in the options before it looks for the pod.
fn check_log_options(q: &Query, name: &str) -> ApiResult<()> {
    let int = |k: &str| q.get(k).and_then(|v| v.parse::<i64>().ok());
    let limits = PodLogLimits {
        tail_lines: int("tailLines"),
        limit_bytes: int("limitBytes"),
        since_seconds: int("sinceSeconds").filter(|_| q.get("sinceTime").is_none()),
    };
    let errs = validate_pod_log_options(&limits);
    if errs.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        "PodLogOptions",
        "",
        "PodLogOptions",
        name,
        &errs,
    ))
}

/// The container a request names, or the pod's only one.
fn pick_container(pod: &Value, q: &Query, name: &str) -> ApiResult<String> {
    let containers = names(pod, "containers");
    let inits = names(pod, "initContainers");
    match q.get("container") {
        Some(c) => {
            if !containers.iter().chain(inits.iter()).any(|n| n == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            Ok(c.to_string())
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !inits.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    inits.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// Where the agent of the pod's node listens: its InternalIP and port.
async fn agent_endpoint(st: &AppState, pod: &Value, name: &str) -> ApiResult<(String, u16)> {
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    node_endpoint(st, node_name).await
}

/// Where the agent of a node listens: the Node's InternalIP and agent port.
async fn node_endpoint(st: &AppState, node_name: &str) -> ApiResult<(String, u16)> {
    let node_kind = st
        .reg
        .by_resource("", "v1", "nodes")
        .cloned()
        .ok_or_else(|| ApiError::internal("the Node kind is not registered"))?;
    let node_target = Target {
        kind: node_kind,
        namespace: None,
        name: Some(node_name.to_string()),
        sub: None,
    };
    let (node, _) = load(st, &node_target).await?;
    let addr: String = node["status"]["addresses"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
        })
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::bad_request(format!("node {node_name} has no InternalIP address"))
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("node {node_name} has no agent endpoint")))?;
    Ok((addr, port as u16))
}

/// `/api/v1/nodes/{name}/proxy[/{path}]`: the node's name and the agent's path.
pub fn node_proxy_path(path: &str) -> Option<(String, String)> {
    let (name, tail) = path.strip_prefix("/api/v1/nodes/")?.split_once('/')?;
    let tail = tail.strip_prefix("proxy")?;
    if !(tail.is_empty() || tail.starts_with('/')) {
        return None;
    }
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .into_owned();
    let tail = if tail.is_empty() { "/" } else { tail };
    Some((name, tail.to_string()))
}

/// GET nodes/{name}/proxy/{path}: the agent's answer, status, content type and body
/// passed through (kube-apiserver's node proxy, for reads). The agent authorizes the
/// API server's own certificate, which `system:kubelet-api-admin` allows.
pub async fn node(
    st: &AppState,
    method: &axum::http::Method,
    name: &str,
    path: &str,
    query: Option<&str>,
) -> ApiResult<Response> {
    if method != axum::http::Method::GET {
        return Err(ApiError::method_not_supported(
            "the server does not allow this method on the requested resource",
        ));
    }
    let (addr, port) = node_endpoint(st, name).await?;
    let path = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let resp = call_agent(st, &addr, port, &path).await.map_err(|e| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {e}"),
        )
    })?;
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(Body::new(body.map_err(std::io::Error::other)));
    *out.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    Ok(out)
}

/// The agent's refusal as a Kubernetes error (its body is the message).
async fn agent_error(resp: hyper::Response<hyper::body::Incoming>) -> ApiError {
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let msg = String::from_utf8_lossy(&body).trim().to_string();
    match code {
        400 => ApiError::bad_request(msg),
        404 => ApiError::new(404, "NotFound", msg),
        // The agent's own authorization refused the API server (as a kubelet would).
        403 => ApiError::new(403, "Forbidden", msg),
        code => ApiError::new(code, "InternalError", msg),
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// An HTTP/1.1 connection to an agent (upgrades allowed): its certificate verified
/// against the cluster CA for `addr`, the API server's client certificate presented.
async fn connect_agent(
    st: &AppState,
    addr: &str,
    port: u16,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let tls = st
        .kubelet_client
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no client credential for node agents"))?;
    let tcp = tokio::net::TcpStream::connect((addr, port)).await?;
    let name = ServerName::try_from(addr.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

async fn call_agent(
    st: &AppState,
    addr: &str,
    port: u16,
    path: &str,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let mut sender = connect_agent(st, addr, port).await?;
    let req = hyper::Request::get(path)
        .header(header::HOST, format!("{addr}:{port}"))
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(req).await?)
}

/// Request headers an upgrade needs at the agent.
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// Response headers of the agent's 101 the client needs.
const SWITCH_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// pods/exec and pods/portforward (GET for WebSocket, POST for SPDY).
pub async fn upgrade(
    st: &AppState,
    t: &Target,
    mut req: axum::extract::Request,
) -> ApiResult<Response> {
    let sub = t.sub.clone().unwrap_or_default();
    let (pod, _) = load(st, t).await?;
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or_default();
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot {sub} into a container in a completed pod; current phase is {phase}"
        )));
    }
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let path = match sub.as_str() {
        "exec" | "attach" => {
            let q = Query::parse(req.uri().query());
            let container = pick_container(&pod, &q, name)?;
            format!(
                "/{sub}/{}/{}/{}?{raw_query}",
                enc(ns),
                enc(name),
                enc(&container)
            )
        }
        "portforward" => format!("/portForward/{}/{}?{raw_query}", enc(ns), enc(name)),
        _ => return Err(ApiError::bad_request(format!("{sub} is not supported"))),
    };
    let (addr, port) = agent_endpoint(st, &pod, name).await?;
    let unreachable = |e: String| {
        ApiError::new(
            502,
            "InternalError",
            format!("error dialing backend: https://{addr}:{port}{path}: {e}"),
        )
    };
    let mut sender = connect_agent(st, &addr, port)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut out = hyper::Request::builder()
        .method(req.method().clone())
        .uri(&path)
        .header(header::HOST, format!("{addr}:{port}"));
    for h in UPGRADE_HEADERS {
        for v in req.headers().get_all(*h) {
            out = out.header(*h, v);
        }
    }
    let out = out
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(agent_error(resp).await);
    }
    let mut switch = Response::new(Body::empty());
    *switch.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for h in SWITCH_HEADERS {
        for v in resp.headers().get_all(*h) {
            switch.headers_mut().append(*h, v.clone());
        }
    }
    let client = hyper::upgrade::on(&mut req);
    let agent = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (Ok(client), Ok(agent)) = tokio::join!(client, agent) else {
            return;
        };
        splice(TokioIo::new(client), TokioIo::new(agent)).await;
    });
    Ok(switch)
}

/// How long the client may take to finish (a WebSocket close reply) once the
/// agent has sent everything.
const SPLICE_LINGER: std::time::Duration = std::time::Duration::from_secs(30);

/// Copies both directions of an upgraded stream until the agent is done.
///
/// Not `copy_bidirectional`: it stops both directions at the first error, so a
/// failed write towards an agent that already closed (a client's ping after the
/// command ended) would drop output still on its way to a slow client.
async fn splice<C, A>(client: C, agent: A)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    use tokio::io::AsyncWriteExt;
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut agent_rx, mut agent_tx) = tokio::io::split(agent);
    let down = async {
        let _ = tokio::io::copy(&mut agent_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    let up = async {
        let _ = tokio::io::copy(&mut client_rx, &mut agent_tx).await;
        let _ = agent_tx.shutdown().await;
    };
    tokio::pin!(down, up);
    tokio::select! {
        () = &mut down => {
            let _ = tokio::time::timeout(SPLICE_LINGER, &mut up).await;
        }
        // The client stopped sending (or the agent stopped taking it): the
        // agent's output still goes out until the agent ends.
        () = &mut up => (&mut down).await,
    }
}

#[cfg(test)]
mod tests {
    use super::node_proxy_path;

    #[test]
    fn node_proxy_paths_name_the_node_and_the_agent_path() {
        let p = |s: &str| node_proxy_path(s);
        assert_eq!(
            p("/api/v1/nodes/n1/proxy/metrics"),
            Some(("n1".into(), "/metrics".into()))
        );
        assert_eq!(p("/api/v1/nodes/n1/proxy"), Some(("n1".into(), "/".into())));
        assert_eq!(
            p("/api/v1/nodes/a%2Eb/proxy/x/y"),
            Some(("a.b".into(), "/x/y".into()))
        );
        for other in [
            "/api/v1/nodes/n1",
            "/api/v1/nodes/n1/status",
            "/api/v1/nodes/n1/proxyx",
            "/api/v1/namespaces/d/pods/p/proxy/x",
        ] {
            assert_eq!(p(other), None, "{other}");
        }
    }
}
