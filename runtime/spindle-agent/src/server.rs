//! The agent's streaming endpoint (the kubelet's port 10250): HTTPS with the node's
//! serving certificate from the cluster CA ([`crate::serving`]), served as an axum
//! [`Router`] within [`Limits`]. The [`auth`] layer admits callers with a client
//! certificate of the cluster CA and asks the API server whether they may
//! ([`authz`]: SubjectAccessReviews on `nodes/proxy` and the like, cached), as the
//! kubelet does. `kubectl logs`, `exec`, `attach` and `port-forward` reach it through
//! the API server's proxy, which calls with its own certificate
//! (`kube-apiserver-kubelet-client`, bound to `system:kubelet-api-admin`).
//!
//! Routes: `GET /containerLogs/{namespace}/{pod}/{container}?follow&previous&tailLines&
//! sinceSeconds&sinceTime&timestamps&limitBytes` ([`logs`]); `GET|POST /exec/{namespace}/
//! {pod}/{container}?command=…&stdin&stdout&stderr&tty`, `GET|POST /attach/{namespace}/
//! {pod}/{container}?stdin&stdout&stderr&tty` and `GET|POST /portForward/{namespace}/
//! {pod}`, upgraded to WebSocket or SPDY (see [`crate::stream`]); `GET /stats/summary`,
//! the Summary API of the node's resource usage ([`stats`]); `GET /metrics` (the
//! kubelet's metrics, [`crate::metrics`]); `/healthz`.

mod auth;
pub mod authz;
mod logs;
mod stats;

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

pub use auth::{authorized, Attributes, Caller, Reviewer};
use spindle_meta::tls::client_certs::ClientCerts;
pub use spindle_streaming::serve::Limits;

use crate::Agent;

pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, u16)> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the agent's streaming endpoint on {addr}"))?;
    let port = l.local_addr()?.port();
    Ok((l, port))
}

/// The endpoint's TLS: the node's current serving certificate, and client certificates
/// asked for (optional in the handshake; [`auth`] answers 401 without a good one).
pub fn tls_config(
    serving: Arc<crate::serving::ServingCert>,
    certs: &ClientCerts,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(certs.clone()))
        .with_cert_resolver(serving);
    // HTTP/1.1 only: the API server is the only client and speaks it (upgrades need it),
    // and an idle HTTP/2 connection would escape the header read timeout.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The endpoint's routes, behind authentication (callers of `certs`) and authorization
/// (SubjectAccessReviews through the node's client).
pub fn router(agent: Arc<Agent>, certs: ClientCerts) -> Router {
    let reviewer = authz::reviewer(agent.client.clone(), &agent.opts.node_name);
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
        .route("/stats/summary", get(stats::summary).fallback(not_found))
        .route("/healthz", any(healthz))
        .route("/metrics", get(crate::metrics::serve))
        .fallback(not_found)
        .with_state(agent);
    authorized(routes, certs, reviewer)
}

pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    certs: ClientCerts,
) {
    serve_with(listener, tls, Limits::default(), router(agent, certs)).await
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
