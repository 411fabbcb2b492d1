//! `spindle-apiserver` owns Spindle's Kubernetes API endpoint: HTTPS with client
//! certificate and bearer token authentication, discovery and OpenAPI, and one generic
//! REST path (get/list/watch/create/update/patch/delete and subresources) over the
//! [`spindle_store::Store`] for every kind in the [`spindle_api::Registry`].

mod admission;
pub mod alloc;
mod discovery;
mod idle;
pub mod pki;
pub mod proxy;
mod request;
/// The request body decoder, for the property tests in `tests/fuzz_decoders.rs`.
#[doc(hidden)]
pub use request::decode_body;
pub mod rest;
mod selectors;
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
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use spindle_api::openapi::OpenApi;
use spindle_api::Registry;
use spindle_store::{SledStore, SledStoreOptions, Store};
use tokio::net::TcpListener;

use crate::request::{parse_path, Query};
use crate::status::ApiError;

/// HTTP/2 keep-alive pings on the API port: every 30 s, and a peer that does not answer
/// within 20 s (hyper's default) is gone.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest request body accepted (kube-apiserver's MaxRequestBodyBytes, 3 MiB).
const MAX_BODY: usize = stored::MAX_OBJECT_BYTES;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// What the TLS layer learned about a connection.
#[derive(Clone, Debug)]
struct ConnInfo {
    cert_user: Option<User>,
    /// Set for the in-process client of the controllers and scheduler.
    internal_user: Option<User>,
    local: SocketAddr,
    /// Time a request body has to arrive in full.
    body_read_timeout: Duration,
}

/// Shared state of the API server; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub reg: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub openapi: Arc<OpenApi>,
    /// Bearer tokens and who they authenticate as.
    pub tokens: Arc<Vec<(String, User)>>,
    pub ca_pem: Arc<str>,
    pub default_toleration_seconds: i64,
    pub event_cache: Arc<watch::EventCache>,
    /// The token secret node agents accept from the API server on their endpoints.
    pub node_secret: Arc<str>,
    /// Service CIDR, cluster (pod) CIDR and NodePort range the server allocates from.
    pub net: alloc::NetRanges,
}

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

fn authenticate(st: &AppState, conn: &ConnInfo, req: &Request) -> Option<User> {
    if let Some(auth) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let tok = auth.strip_prefix("Bearer ")?.trim();
        return st
            .tokens
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), tok.as_bytes()))
            .map(|(_, u)| u.clone());
    }
    conn.cert_user.clone()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn dispatch(st: AppState, conn: ConnInfo, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if matches!(path.as_str(), "/readyz" | "/livez" | "/healthz") && req.method() == Method::GET {
        return (StatusCode::OK, "ok").into_response();
    }
    if path == "/cacerts" && req.method() == Method::GET {
        // Public by design (as in k3s): agents verify it against the hash in their token.
        return (StatusCode::OK, st.ca_pem.to_string()).into_response();
    }
    let user = match conn
        .internal_user
        .clone()
        .or_else(|| authenticate(&st, &conn, &req))
    {
        Some(u) => u,
        None => return ApiError::unauthorized().into_response(),
    };
    // Upgraded streams (exec, port-forward) keep the request itself: the connection
    // is taken over once the agent has switched protocols.
    if let Ok(Some(t)) = parse_path(&st.reg, &path) {
        let streaming = matches!(t.sub.as_deref(), Some("exec" | "attach" | "portforward"))
            && t.kind.kind == "Pod"
            && t.name.is_some()
            && matches!(*req.method(), Method::GET | Method::POST);
        if streaming {
            return proxy::upgrade(&st, &t, req)
                .await
                .unwrap_or_else(IntoResponse::into_response);
        }
    }
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    match path.trim_end_matches('/') {
        "/version" => return discovery::version(),
        "/api" => return discovery::api(&st, &headers, &conn.local.to_string()),
        "/apis" => return discovery::apis(&st, &headers),
        "/openapi/v2" => return discovery::openapi_v2(&st, &headers),
        p if p.starts_with("/openapi/v3") => return discovery::openapi_v3(&st, p),
        _ => {}
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", v] => return discovery::group_version(&st, "", v),
        ["apis", g] => return discovery::group(&st, g),
        ["apis", g, v] => return discovery::group_version(&st, g, v),
        _ => {}
    }
    let target = match parse_path(&st.reg, &path) {
        Ok(Some(t)) => t,
        Ok(None) => return ApiError::path_not_found().into_response(),
        Err(e) => return e.into_response(),
    };
    let body = match read_body(body, conn.body_read_timeout, parts.version).await {
        Ok(b) => b,
        Err(e) => return e,
    };
    let q = Query::parse(parts.uri.query());
    rest::handle(st, user, parts.method, target, q, headers, body).await
}

/// The request body, within `MAX_BODY` and `timeout`: a client trickling a body would
/// otherwise hold its request (and connection) open for as long as it likes.
async fn read_body(
    body: Body,
    timeout: Duration,
    version: axum::http::Version,
) -> Result<bytes::Bytes, Response> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(ApiError::too_large(format_args!("limit is {MAX_BODY}")).into_response()),
        Err(_) => {
            // kube-apiserver's timeout filter answers this way when a request, its body
            // included, takes longer than --request-timeout. The rest of the body is not
            // read, so an HTTP/1.1 connection cannot be reused (HTTP/2 resets the stream).
            let mut resp = ApiError::new(
                504,
                "Timeout",
                "Timeout: request did not complete within requested timeout - context deadline exceeded",
            )
            .into_response();
            if version < axum::http::Version::HTTP_2 {
                resp.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            Err(resp)
        }
    }
}

fn cert_user(conn: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Option<User> {
    let certs = conn.get_ref().1.peer_certificates()?;
    let der = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User { name, groups })
}

fn tls_config(pki: &pki::Pki) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    // Client certificates are optional so bearer-token users still get in; requests with
    // neither are refused with 401 at the HTTP layer.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut pki.serving_cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = rustls_pemfile::private_key(&mut pki.serving_key_pem.as_bytes())?
        .context("no serving key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Namespaces every cluster has.
async fn bootstrap(st: &AppState) -> Result<()> {
    let Some(ns_kind) = st.reg.by_resource("", "v1", "namespaces") else {
        return Ok(());
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let k = rest::key(ns_kind, None, Some(ns));
        if st.store.get(&k).await?.is_none() {
            let mut obj = json!({"apiVersion": ns_kind.api_version(), "kind": ns_kind.kind, "metadata": {
                "name": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": rest::now_rfc3339(),
            }});
            ns_kind.default_object(&mut obj);
            match st.store.create(&k, serde_json::to_vec(&obj)?).await {
                Ok(_) | Err(spindle_store::StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// A running API server.
pub struct Server {
    pub state: AppState,
    pub addr: SocketAddr,
    pub pki: pki::Pki,
    pub limits: ConnLimits,
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
    let node_user = User {
        name: "system:node-bootstrap".into(),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
    };
    let state = AppState {
        reg: Arc::new(reg),
        store: Arc::new(store),
        openapi: Arc::new(openapi),
        tokens: Arc::new(vec![
            (pki.token.to_string(), node_user.clone()),
            (pki.token.secret().to_string(), node_user),
        ]),
        ca_pem: Arc::from(pki.ca_pem.as_str()),
        default_toleration_seconds: cfg.default_toleration_seconds as i64,
        event_cache: Arc::new(watch::EventCache::default()),
        node_secret: Arc::from(pki.token.secret()),
        net: cfg.net,
    };
    bootstrap(&state).await?;
    let acceptor = Arc::new(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&pki)?)));
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
            tokio::spawn(async move {
                let _slot = slot;
                serve_connection(st, acceptor, tcp, peer, limits).await;
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
        cert_user: cert_user(&tls),
        internal_user: None,
        local,
        body_read_timeout: limits.body_read_timeout,
    };
    let activity = idle::Activity::new();
    let watched = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let st = st.clone();
        let conn = conn.clone();
        let busy = watched.busy();
        async move {
            let start = Instant::now();
            let (method, uri) = (req.method().clone(), req.uri().clone());
            let resp = dispatch(st, conn, req.map(Body::new)).await;
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

impl AppState {
    /// A kube-rs client that calls this API server in-process: the same REST path,
    /// validation and admission as external clients, without TLS or sockets. The
    /// controllers and the scheduler use it.
    pub fn in_process_client(&self, user: &str) -> kube::Client {
        let st = self.clone();
        let conn = ConnInfo {
            cert_user: None,
            internal_user: Some(User {
                name: user.to_string(),
                groups: vec!["system:masters".into()],
            }),
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
            body_read_timeout: ConnLimits::default().body_read_timeout,
        };
        let svc = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
            let st = st.clone();
            let conn = conn.clone();
            async move {
                Ok::<_, std::convert::Infallible>(dispatch(st, conn, req.map(Body::new)).await)
            }
        });
        kube::Client::new(svc, "default")
    }
}

/// Start and serve until the process ends.
pub async fn run(cfg: ServerConfig) -> Result<()> {
    let (server, listener, acceptor) = start(&cfg).await?;
    server.serve(listener, acceptor).await
}
