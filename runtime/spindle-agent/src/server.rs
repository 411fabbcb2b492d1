//! The agent's streaming endpoint (the kubelet's port 10250): HTTPS with a self-signed
//! certificate, served as an axum [`Router`] within [`Limits`]. Only the API server may
//! call it: the [`auth`] layer admits a request that carries the cluster's token secret
//! as its bearer token. `kubectl logs`, `exec`, `attach` and `port-forward` reach it
//! through the API server's proxy.
//!
//! Routes: `GET /containerLogs/{namespace}/{pod}/{container}?follow&previous&tailLines&
//! sinceSeconds&sinceTime&timestamps&limitBytes` ([`logs`]); `GET|POST /exec/{namespace}/
//! {pod}/{container}?command=…&stdin&stdout&stderr&tty`, `GET|POST /attach/{namespace}/
//! {pod}/{container}?stdin&stdout&stderr&tty` and `GET|POST /portForward/{namespace}/
//! {pod}`, upgraded to WebSocket or SPDY (see [`crate::stream`]); `/healthz`.

mod auth;
mod logs;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;

pub use auth::{authenticated, Caller};
pub use spindle_streaming::serve::Limits;

use crate::Agent;

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

/// The endpoint's routes, behind authentication.
pub fn router(agent: Arc<Agent>) -> Router {
    let secret = agent.opts.stream_secret.clone();
    let routes = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs).fallback(not_found),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            any(crate::stream::exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            any(crate::stream::attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            any(crate::stream::port_forward),
        )
        .route("/healthz", any(healthz))
        .fallback(not_found)
        .with_state(agent);
    authenticated(routes, &secret)
}

pub async fn serve(agent: Arc<Agent>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    serve_with(listener, tls, Limits::default(), router(agent)).await
}

/// The accept loop, TLS and HTTP/1.1 of the endpoint, with `limits`, serving `app`.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    app: Router,
) {
    spindle_streaming::serve::serve(listener, tls, limits, app).await
}

/// A plain-text response.
pub fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

pub async fn healthz() -> Response {
    text(StatusCode::OK, "ok")
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found")
}

/// The query's pairs in order, repeated keys kept (exec's `command`), decoded leniently:
/// a malformed query is read as far as it goes, never refused.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let pairs = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Ok(QueryPairs(pairs))
    }
}
