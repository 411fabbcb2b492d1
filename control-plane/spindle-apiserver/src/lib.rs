//! `spindle-apiserver` owns Spindle's Kubernetes API endpoint: HTTPS with client
//! certificate and bearer token authentication, discovery and OpenAPI, and one generic
//! REST path (get/list/watch/create/update/patch/delete and subresources) over the
//! [`spindle_store::Store`] for every kind in the [`spindle_api::Registry`].

mod admission;
pub mod alloc;
mod auth;
pub mod authz;
mod discovery;
mod idle;
pub mod metrics;
mod metrics_api;
mod node_proxy;
pub mod pki;
pub mod proxy;
mod request;
/// The request body decoder, for the property tests in `tests/fuzz_decoders.rs`.
#[doc(hidden)]
pub use request::decode_body;
pub mod rest;
mod router;
mod sa_endpoints;
pub mod sa_legacy;
pub mod sa_token;
mod selectors;
mod state;
mod status;
mod stored;
mod tables;
mod watch;
mod yaml;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{json, Value};
use spindle_api::openapi::OpenApi;
use spindle_api::validation::SYSTEM_PRIORITY_CLASSES;
use spindle_api::Registry;
use spindle_store::{SledStore, SledStoreOptions};
use tokio::net::TcpListener;
use tower::ServiceExt;

pub use crate::auth::User;
use crate::auth::{cert_user, ConnInfo};
pub use crate::state::AppState;
use spindle_meta::tls::client_certs::ClientCerts;

/// HTTP/2 keep-alive pings on the API port: every 30 s, and a peer that does not answer
/// within 20 s (hyper's default) is gone.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub port: u16,
    pub kubeconfig: PathBuf,
    pub token: Option<String>,
    pub tls_sans: Vec<String>,
    /// Events kept for watches; resuming from an older resourceVersion answers 410.
    pub watch_history: usize,
    /// tolerationSeconds of the not-ready/unreachable NoExecute tolerations added to pods
    /// that have none (Kubernetes' DefaultTolerationSeconds admission, 300 s).
    pub default_toleration_seconds: u64,
    pub net: alloc::NetRanges,
    pub limits: ConnLimits,
}

/// Limits on the API port's connections, so that clients that connect and then stall
/// (or just connect, many times) cannot take every file descriptor of the process.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time for a client to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time for a client to send a request's headers (HTTP/1.1, also between requests).
    pub header_read_timeout: Duration,
    /// Time a connection (HTTP/1.1 or HTTP/2) may go without a request in flight.
    pub idle_timeout: Duration,
    /// Time for a client to send a request's body in full.
    pub body_read_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            // Far below the open-files limit the server raises itself to, leaving the
            // rest to the store, the agent and its pods.
            max_connections: 4096,
            // Go's http.Transport default TLS handshake timeout.
            tls_handshake_timeout: Duration::from_secs(10),
            // hyper's default, which it applies only once given a timer.
            header_read_timeout: Duration::from_secs(30),
            // kube-apiserver's IdleTimeout, for HTTP/1.1 and HTTP/2 alike.
            idle_timeout: Duration::from_secs(90),
            // kube-apiserver's --request-timeout, within which it reads the body too.
            body_read_timeout: Duration::from_secs(60),
        }
    }
}

fn tls_config(pki: &pki::Pki) -> Result<(rustls::ServerConfig, Arc<ClientCerts>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Client certificates are optional so bearer-token users still get in; requests with
    // neither are refused with 401 at the HTTP layer.
    let verifier = Arc::new(ClientCerts::for_ca(&pki.ca_pem)?);
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut pki.serving_cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = rustls_pemfile::private_key(&mut pki.serving_key_pem.as_bytes())?
        .context("no serving key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((cfg, verifier))
}

/// Namespaces every cluster has.
async fn bootstrap(st: &AppState) -> Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(st, "", "namespaces", json!({"metadata": {"name": ns}})).await?;
    }
    // The `scheduling/bootstrap-system-priority-classes` post-start hook's classes.
    for (name, value, description) in [
        ("system-node-critical", SYSTEM_PRIORITY_CLASSES[0].1, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", SYSTEM_PRIORITY_CLASSES[1].1, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ] {
        let pc = json!({"metadata": {"name": name}, "value": value, "description": description});
        ensure(st, "scheduling.k8s.io", "priorityclasses", pc).await?;
    }
    Ok(())
}

/// Create a cluster-scoped object the server starts with, unless it exists.
async fn ensure(st: &AppState, group: &str, plural: &str, mut obj: Value) -> Result<()> {
    let Some(kind) = st.reg.by_resource(group, "v1", plural) else {
        return Ok(());
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let k = rest::key(kind, None, Some(&name));
    if st.store.get(&k).await?.is_some() {
        return Ok(());
    }
    obj["apiVersion"] = json!(kind.api_version());
    obj["kind"] = json!(kind.kind);
    obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    obj["metadata"]["creationTimestamp"] = json!(rest::now_rfc3339());
    kind.default_object(&mut obj);
    match st.store.create(&k, serde_json::to_vec(&obj)?).await {
        Ok(_) | Err(spindle_store::StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A running API server.
pub struct Server {
    pub state: AppState,
    pub addr: SocketAddr,
    pub pki: pki::Pki,
    pub limits: ConnLimits,
    client_certs: Arc<ClientCerts>,
}

/// Prepare PKI and store, bind the port and write the kubeconfig; then [`Server::serve`].
pub async fn start(
    cfg: &ServerConfig,
) -> Result<(Server, TcpListener, Arc<tokio_rustls::TlsAcceptor>)> {
    let pki = pki::ensure(&cfg.data_dir, cfg.token.as_deref(), &cfg.tls_sans)?;
    let db_dir = cfg.data_dir.join("server/db");
    let store = SledStore::open(
        &db_dir,
        SledStoreOptions {
            history: cfg.watch_history.max(1),
            ..SledStoreOptions::default()
        },
    )
    .with_context(|| format!("opening the store in {}", db_dir.display()))?;
    let reg = Registry::new();
    let openapi = OpenApi::new(&reg);
    metrics::register();
    let store = metrics::storage::InstrumentedStore::new(store, &reg);
    // The join token only bootstraps: its user is a bootstrap token's, in
    // system:bootstrappers, which may ask for node client certificates (approved
    // automatically) and nothing more; nodes then act under their own certificates.
    let node_user = User {
        name: "system:node-bootstrap".into(),
        groups: vec![
            authz::bootstrap::BOOTSTRAPPERS.into(),
            "system:authenticated".into(),
        ],
    };
    let state = AppState {
        reg: Arc::new(reg),
        store: Arc::new(store),
        openapi: Arc::new(openapi),
        tokens: Arc::new(vec![
            (pki.token.to_string(), node_user.clone()),
            (pki.token.secret().to_string(), node_user),
        ]),
        sa_signer: Arc::new(sa_token::Signer::load_or_create(
            &cfg.data_dir.join("server/tls/service.key"),
        )?),
        ca_pem: Arc::from(pki.ca_pem.as_str()),
        default_toleration_seconds: cfg.default_toleration_seconds as i64,
        event_cache: Arc::new(watch::EventCache::default()),
        kubelet_client: Some(Arc::new(spindle_meta::tls::ca_client_config(
            &pki.ca_pem,
            &pki.kubelet_client_cert_pem,
            &pki.kubelet_client_key_pem,
        )?)),
        net: cfg.net,
        authz: Arc::default(),
    };
    bootstrap(&state).await?;
    authz::bootstrap::reconcile(&state)
        .await
        .context("reconciling the bootstrap RBAC policy")?;
    state.authz.start(&state).await?;
    let (tls, client_certs) = tls_config(&pki)?;
    let acceptor = Arc::new(tokio_rustls::TlsAcceptor::from(Arc::new(tls)));
    let addr = SocketAddr::new(cfg.bind_address, cfg.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let addr = listener.local_addr()?;
    let host = if cfg.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        cfg.bind_address.to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    pki::write_kubeconfig(
        &cfg.kubeconfig,
        &format!("https://{host}:{}", addr.port()),
        &pki,
    )?;
    tracing::info!(%addr, kubeconfig = %cfg.kubeconfig.display(), "API server listening");
    let limits = cfg.limits;
    Ok((
        Server {
            state,
            addr,
            pki,
            limits,
            client_certs,
        },
        listener,
        acceptor,
    ))
}

impl Server {
    pub async fn serve(
        self,
        listener: TcpListener,
        acceptor: Arc<tokio_rustls::TlsAcceptor>,
    ) -> Result<()> {
        let limits = self.limits;
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
        let mut backoff = AcceptBackoff::default();
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    backoff.wait(&e).await;
                    continue;
                }
            };
            backoff.reset();
            // Over the cap a connection is closed at once, not queued: a flood then costs
            // one descriptor for a moment each, and the slots free up as the handshake and
            // header timeouts end the stalled connections that hold them.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, max = limits.max_connections, "too many connections: closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let st = self.state.clone();
            let certs = self.client_certs.clone();
            tokio::spawn(async move {
                let _slot = slot;
                serve_connection(st, acceptor, &certs, tcp, peer, limits).await;
            });
        }
    }
}

/// Go's net/http answer to accept errors (EMFILE above all): wait 5 ms, doubling up to
/// 1 s, instead of retrying at once, which spins a core and floods the log while the
/// process is out of descriptors.
#[derive(Default)]
struct AcceptBackoff(Option<Duration>);

impl AcceptBackoff {
    async fn wait(&mut self, e: &std::io::Error) {
        let delay = self.0.map_or(Duration::from_millis(5), |d| {
            (d * 2).min(Duration::from_secs(1))
        });
        self.0 = Some(delay);
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "accept failed");
        tokio::time::sleep(delay).await;
    }
    fn reset(&mut self) {
        self.0 = None;
    }
}

/// TLS (within the handshake timeout), then HTTP/2 or HTTP/1.1 as ALPN chose. The
/// protocol is not sniffed from the first bytes (hyper-util's auto builder), because that
/// read has no timeout: a client that finished the handshake and sent nothing would hold
/// its connection for ever.
async fn serve_connection(
    st: AppState,
    acceptor: Arc<tokio_rustls::TlsAcceptor>,
    certs: &ClientCerts,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: ConnLimits,
) {
    let local = tcp.local_addr().unwrap_or(peer);
    let tls = match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let conn = ConnInfo {
        cert_user: if certs.verified(tls.get_ref().1.peer_certificates().unwrap_or_default()) {
            cert_user(&tls)
        } else {
            None
        },
        internal_user: None,
        local,
        body_read_timeout: limits.body_read_timeout,
    };
    let activity = idle::Activity::new();
    let watched = activity.clone();
    let app = router::router(st);
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let conn = conn.clone();
        let busy = watched.busy();
        async move {
            let start = Instant::now();
            let (method, uri) = (req.method().clone(), req.uri().clone());
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(conn);
            let Ok(resp) = app.oneshot(req).await;
            tracing::debug!(%method, %uri, status = resp.status().as_u16(), elapsed_ms = start.elapsed().as_secs_f64() * 1000.0, "request");
            Ok::<_, std::convert::Infallible>(busy.until_sent(resp))
        }
    });
    let io = TokioIo::new(tls);
    let idle = limits.idle_timeout;
    let res = if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Pings find peers that went away during a long watch (no FIN, no RST).
            .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
            .serve_connection(io, svc);
        idle::serve_until_idle(conn, |c| c.graceful_shutdown(), &activity, idle).await
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(io, svc)
            .with_upgrades();
        idle::serve_until_idle(conn, |c| c.graceful_shutdown(), &activity, idle).await
    };
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Start and serve until the process ends.
pub async fn run(cfg: ServerConfig) -> Result<()> {
    let (server, listener, acceptor) = start(&cfg).await?;
    server.serve(listener, acceptor).await
}
