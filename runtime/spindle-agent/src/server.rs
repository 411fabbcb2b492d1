//! The agent's streaming endpoint (the kubelet's port 10250): HTTPS with a self-signed
//! certificate, and only the API server may call it: every request must carry the
//! cluster's token secret as a bearer token. `kubectl logs` reaches it through the API
//! server's pods/log proxy.
//!
//! Routes: `GET /containerLogs/{namespace}/{pod}/{container}?follow&previous&tailLines&
//! sinceSeconds&sinceTime&timestamps&limitBytes`; `GET|POST /exec/{namespace}/{pod}/
//! {container}?command=…&stdin&stdout&stderr&tty`, `GET|POST /attach/{namespace}/{pod}/
//! {container}?stdin&stdout&stderr&tty` and `GET|POST /portForward/{namespace}/{pod}`,
//! upgraded to WebSocket or SPDY (see [`crate::stream`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::status::RunState;
use crate::Agent;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// What an unauthenticated client may hold of the endpoint, which listens on every
/// address (every pod can reach it): SPN-08.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From accept to the end of the TLS handshake (Go's `TLSHandshakeTimeout` default).
    pub handshake_timeout: Duration,
    /// For a request's headers to arrive, idle keep-alive time included (hyper's default;
    /// the only client, the API server, sends its request right after connecting).
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted. Well
    /// under the process's open-files limit, which the API server, the store and every
    /// Wasm pod of the node share.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// How long the accept loop rests after an accept error such as EMFILE, doubling up to
/// [`MAX_ACCEPT_BACKOFF`] (what Go's net/http does): retrying at once would spin a core
/// and flood the log while no descriptor is free.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, u16)> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the agent's streaming endpoint on {addr}"))?;
    let port = l.local_addr()?.port();
    Ok((l, port))
}

/// A fresh self-signed serving certificate, and its SHA-256 (hex, of the DER) that the
/// Node publishes so the API server can pin it.
pub fn tls_config(
    node_name: &str,
    node_ip: std::net::IpAddr,
) -> Result<(Arc<rustls::ServerConfig>, String)> {
    let names = vec![
        node_name.to_string(),
        "localhost".to_string(),
        node_ip.to_string(),
    ];
    let cert = rcgen::generate_simple_self_signed(names).context("self-signed certificate")?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    // HTTP/1.1 only: the API server is the only client and speaks it (upgrades need it),
    // and an idle HTTP/2 connection would escape the header read timeout.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let fingerprint = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(cert.cert.der().as_ref()))
    };
    Ok((Arc::new(cfg), fingerprint))
}

pub async fn serve(agent: Arc<Agent>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    serve_with(listener, tls, Limits::default(), move |req| {
        handle(agent.clone(), req)
    })
    .await
}

/// The accept loop, TLS and HTTP/1.1 of the endpoint, with `limits`, calling `handler`
/// for every request.
pub async fn serve_with<H, F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    handler: H,
) where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let tls = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = MIN_ACCEPT_BACKOFF;
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => {
                backoff = MIN_ACCEPT_BACKOFF;
                tcp
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "accepting a connection on the agent's endpoint");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        // At the cap the connection is closed at once (dropped), which keeps the backlog
        // moving and costs no descriptor for long.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("agent endpoint at its connection limit: closing a new connection");
            continue;
        };
        tokio::spawn(serve_connection(
            tls.clone(),
            tcp,
            limits.clone(),
            handler.clone(),
            slot,
        ));
    }
}

async fn serve_connection<H, F>(
    tls: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    limits: Limits,
    handler: H,
    _slot: tokio::sync::OwnedSemaphorePermit,
) where
    H: Fn(Request<hyper::body::Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Ok(Ok(stream)) = tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp)).await
    else {
        return;
    };
    let svc = hyper::service::service_fn(move |req| {
        let res = handler(req);
        async move { Ok::<_, Infallible>(res.await) }
    });
    // Without a timer hyper silently ignores header_read_timeout.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

/// The answer to a request without the right token.
pub fn unauthorized() -> Response<Body> {
    text(StatusCode::UNAUTHORIZED, "Unauthorized")
}

/// A plain-text response.
pub fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let body = Full::new(Bytes::from(msg.into()))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = code;
    r
}

/// Whether `req` carries the cluster's token `secret` as its bearer token.
pub fn authorized(secret: &str, req: &Request<hyper::body::Incoming>) -> bool {
    let Some(v) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = v.strip_prefix("Bearer ") else {
        return false;
    };
    let secret = secret.as_bytes();
    // The full join token carries the secret after the last ':'.
    let given = token.rsplit(':').next().unwrap_or(token).as_bytes();
    !secret.is_empty()
        && given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn handle(agent: Arc<Agent>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    if !authorized(&agent.opts.stream_secret, &req) {
        return unauthorized();
    }
    let path: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    match path
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["containerLogs", ns, pod, container] if req.method() == hyper::Method::GET => {
            logs(&agent, ns, pod, container, &query)
        }
        [verb @ ("exec" | "attach"), ns, pod, container] => {
            let attach = *verb == "attach";
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec_route(agent, req, &ns, &pod, &container, attach)
        }
        ["portForward", ns, pod] => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            port_forward_route(agent, req, &ns, &pod)
        }
        ["healthz"] => text(StatusCode::OK, "ok"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

fn logs(
    agent: &Agent,
    ns: &str,
    pod: &str,
    container: &str,
    q: &HashMap<String, String>,
) -> Response<Body> {
    let Some(h) = agent.pods.find(ns, pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "pod {ns}/{pod} is not running on node {}",
                agent.opts.node_name
            ),
        );
    };
    let previous = flag(q, "previous");
    // Which run's file to read, following the kubelet: the current run, or while the
    // container waits to restart, the run that just ended; --previous is the last ended run.
    let (run, live) = {
        let sh = h.shared();
        let Some(c) = sh
            .containers
            .iter()
            .chain(sh.inits.iter())
            .find(|c| c.name == container)
        else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container {container} is not valid for pod {pod}"),
            );
        };
        let run = if previous {
            match &c.last {
                Some(t) => t.run,
                None => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ),
                    )
                }
            }
        } else {
            match &c.state {
                RunState::Running { .. } => c.restart_count as u32,
                RunState::Terminated(t) => t.run,
                RunState::Waiting { reason, .. } => match &c.last {
                    Some(t) => t.run,
                    None => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}"),
                        )
                    }
                },
            }
        };
        let live = if !previous && c.is_running() {
            sh.logs.get(container).map(|w| w.live())
        } else {
            None
        };
        (run, live)
    };
    let since = if let Some(t) = q.get("sinceTime") {
        match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => Some(t.with_timezone(&chrono::Utc)),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("sinceTime {t:?}: {e}")),
        }
    } else if let Some(s) = q.get("sinceSeconds") {
        match s.parse::<i64>() {
            Ok(s) => Some(chrono::Utc::now() - chrono::Duration::seconds(s)),
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("sinceSeconds {s:?} is not a number"),
                )
            }
        }
    } else {
        None
    };
    let tail = match q.get("tailLines").map(|s| s.parse::<i64>()) {
        Some(Ok(n)) if n >= 0 => Some(n as usize),
        Some(Ok(_)) => None,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "tailLines must be a number"),
        None => None,
    };
    let limit_bytes = q.get("limitBytes").and_then(|s| s.parse::<u64>().ok());
    let opts = spindle_logs::LogOptions {
        follow: flag(q, "follow"),
        tail,
        since,
        timestamps: flag(q, "timestamps"),
        limit_bytes,
    };
    let stream =
        spindle_logs::read(&h.log_dir(container), run, opts, live).map(|r| r.map(Frame::data));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Values of a header that may be repeated and comma-separated.
fn header_values(req: &Request<hyper::body::Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

enum Upgrade {
    WebSocket { accept: String, protocol: String },
    Spdy { protocol: String },
}

/// Picks the upgrade the client offers with one of `ws` (WebSocket subprotocols, in our
/// order of preference) or `spdy` (X-Stream-Protocol-Version values).
fn negotiate(
    req: &Request<hyper::body::Incoming>,
    ws: &[&str],
    spdy: &[&str],
) -> Result<Upgrade, String> {
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade == "websocket" {
        let offered = header_values(req, "sec-websocket-protocol");
        let protocol = ws
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .ok_or_else(|| format!("none of the WebSocket protocols {offered:?} is supported"))?;
        let key = req
            .headers()
            .get("sec-websocket-key")
            .ok_or("missing Sec-WebSocket-Key")?;
        Ok(Upgrade::WebSocket {
            accept: tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
            protocol: protocol.to_string(),
        })
    } else if upgrade.starts_with("spdy/3.1") {
        let offered = header_values(req, "x-stream-protocol-version");
        let protocol = spdy
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .ok_or_else(|| format!("none of the stream protocols {offered:?} is supported"))?;
        Ok(Upgrade::Spdy {
            protocol: protocol.to_string(),
        })
    } else {
        Err("the request must upgrade to websocket or SPDY/3.1".into())
    }
}

fn switching(up: &Upgrade) -> Response<Body> {
    let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    let pairs: Vec<(&str, String)> = match up {
        Upgrade::WebSocket { accept, protocol } => vec![
            ("upgrade", "websocket".into()),
            ("sec-websocket-accept", accept.clone()),
            ("sec-websocket-protocol", protocol.clone()),
        ],
        Upgrade::Spdy { protocol } => vec![
            ("upgrade", "SPDY/3.1".into()),
            ("x-stream-protocol-version", protocol.clone()),
        ],
    };
    for (k, v) in pairs {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    r
}

fn exec_route(
    agent: Arc<Agent>,
    mut req: Request<hyper::body::Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
    attach: bool,
) -> Response<Body> {
    let Some(h) = agent.pods.find(ns, pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on this node"),
        );
    };
    let known = h
        .pod()
        .spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == container));
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container} is not valid for pod {pod}"),
        );
    }
    let pairs: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mut exec_req = crate::stream::ExecRequest::from_query(&pairs);
    exec_req.attach = attach;
    if !attach && exec_req.command.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container",
        );
    }
    let up = match negotiate(
        &req,
        &["v5.channel.k8s.io", "v4.channel.k8s.io"],
        &["v4.channel.k8s.io"],
    ) {
        Ok(u) => u,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let resp = switching(&up);
    let on = hyper::upgrade::on(&mut req);
    let container = container.to_string();
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else {
            return;
        };
        match up {
            Upgrade::WebSocket { protocol, .. } => {
                let v5 = protocol.starts_with("v5");
                crate::stream::exec_websocket(agent, h, container, exec_req, upgraded, v5).await
            }
            Upgrade::Spdy { .. } => {
                crate::stream::exec_spdy(agent, h, container, exec_req, upgraded).await
            }
        }
    });
    resp
}

fn port_forward_route(
    agent: Arc<Agent>,
    req: Request<hyper::body::Incoming>,
    ns: &str,
    pod: &str,
) -> Response<Body> {
    let Some(h) = agent.pods.find(ns, pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on this node"),
        );
    };
    let ip = h
        .shared()
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
    let Some(ip) = ip else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("pod {pod} has no network to forward to"),
        );
    };
    port_forward_upgrade(req, ip)
}

/// Upgrades `req` to a port-forward session (WebSocket or SPDY) into `ip`'s ports.
pub fn port_forward_upgrade(
    mut req: Request<hyper::body::Incoming>,
    ip: std::net::IpAddr,
) -> Response<Body> {
    let up = match negotiate(
        &req,
        &["SPDY/3.1+portforward.k8s.io"],
        &["portforward.k8s.io"],
    ) {
        Ok(u) => u,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let resp = switching(&up);
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else {
            return;
        };
        match up {
            Upgrade::WebSocket { .. } => {
                crate::stream::port_forward(ip, crate::stream::websocket_bytes(upgraded)).await
            }
            Upgrade::Spdy { .. } => crate::stream::port_forward(ip, TokioIo::new(upgraded)).await,
        }
    });
    resp
}
