//! The agent's streaming endpoint (the kubelet's port 10250): HTTPS with a self-signed
//! certificate, and only the API server may call it: every request must carry the
//! cluster's token secret as a bearer token. `kubectl logs` reaches it through the API
//! server's pods/log proxy.
//!
//! Routes: `GET /containerLogs/{namespace}/{pod}/{container}?follow&previous&tailLines&
//! sinceSeconds&sinceTime&timestamps&limitBytes`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::status::RunState;
use crate::Agent;

type Body = BoxBody<Bytes, std::io::Error>;

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
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let fingerprint = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(cert.cert.der().as_ref()))
    };
    Ok((Arc::new(cfg), fingerprint))
}

pub async fn serve(agent: Arc<Agent>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let tls = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        let agent = agent.clone();
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let agent = agent.clone();
                async move { Ok::<_, Infallible>(handle(agent, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let body = Full::new(Bytes::from(msg.into()))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = code;
    r
}

fn authorized(agent: &Agent, req: &Request<hyper::body::Incoming>) -> bool {
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
    let secret = agent.opts.stream_secret.as_bytes();
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
    if !authorized(&agent, &req) {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
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
