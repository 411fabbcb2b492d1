//! Attacks on the agent's streaming endpoint (port 10250), run against its real accept
//! loop, TLS, HTTP/1.1 server, client certificate check and port-forward upgrade
//! (`server::serve_with`, `server::authorized`, `stream::port_forward_upgrade`) on
//! 127.0.0.1, with short limits so the test need not wait long. Only the route lookup, which needs a running
//! pod, is left out: port-forward goes to a TCP server of the test standing in for the
//! pod.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::any;
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use spindle_agent::server::{self, Limits};
use spindle_agent::stream;
use spindle_streaming::spdy::{self, Deflater, Frame, Inflater};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A cluster CA of the test: its PEM, the endpoint's serving certificate and key
/// (for `localhost`), and a client certificate and key.
struct Pki {
    ca: String,
    serving: (String, String),
    client: (String, String),
}

fn pki() -> &'static Pki {
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().pem();
        let issuer = rcgen::Issuer::new(params, key);
        let leaf = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            (
                p.signed_by(&key, &issuer).unwrap().pem(),
                key.serialize_pem(),
            )
        };
        Pki {
            serving: leaf("localhost"),
            client: leaf("kube-apiserver-kubelet-client"),
            ca,
        }
    })
}

/// Allows everyone the CA vouches for: authorization is not what this test is about.
struct AllowAll;

impl server::Reviewer for AllowAll {
    async fn review(&self, _: &server::Attributes) -> Result<bool, String> {
        Ok(true)
    }
}

/// The endpoint with `limits`, its only route the port-forward upgrade into 127.0.0.1
/// (plus `/healthz`), behind the client certificate check.
async fn endpoint(limits: Limits) -> SocketAddr {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = Arc::new(spindle_agent::serving::ServingCert::default());
    serving.set(&pki().serving.0, &pki().serving.1).unwrap();
    let certs = spindle_meta::tls::client_certs::ClientCerts::for_ca(&pki().ca).unwrap();
    let tls = server::tls_config(serving, &certs).unwrap();
    let routes = Router::new()
        .route("/healthz", any(server::healthz))
        .fallback(|req: Request<Body>| async move { stream::port_forward_upgrade(req, LOCALHOST) });
    let app = server::authorized(routes, certs, AllowAll);
    tokio::spawn(server::serve_with(listener, tls, limits, app));
    addr
}

/// A TLS connection with the client certificate.
async fn tls_connect(
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let p = pki();
    let cfg = spindle_meta::tls::ca_client_config(&p.ca, &p.client.0, &p.client.1).unwrap();
    tls_connect_with(addr, cfg).await
}

async fn tls_connect_with(
    addr: SocketAddr,
    cfg: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// `GET /healthz` with the client certificate; the status, or an error if the endpoint did not serve.
async fn healthz(addr: SocketAddr) -> Result<StatusCode, String> {
    let work = async {
        let tls = tls_connect(addr).await.map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get("/healthz")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        Ok(resp.status())
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}

/// Waits for the server to close `conn`; how long that took.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(conn: &mut S, bound: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(bound, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for {bound:?}"),
        }
    }
}

/// SPN-08: connections that never finish a TLS handshake, or never send a request
/// after it, are closed after the timeouts; at the connection cap new connections are
/// closed at once; and the endpoint serves its client again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_excess_connections_are_closed() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(1500),
        header_read_timeout: Duration::from_millis(1500),
        max_connections: 8,
    };
    let addr = endpoint(limits).await;
    assert_eq!(healthz(addr).await, Ok(StatusCode::OK));

    // Fill every slot with raw TCP connections that never start TLS.
    let start = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Over the cap: closed at once, well before any timeout, and the authenticated
    // client is turned away too while the slots are held.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut extra, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_millis(1000),
        "excess connection lived {took:?}"
    );
    assert!(
        healthz(addr).await.is_err(),
        "served beyond the connection cap"
    );

    // The handshake timeout frees the slots.
    for conn in &mut idle {
        closed_within(conn, Duration::from_secs(5)).await;
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "idle connections closed after {took:?}"
    );
    assert_eq!(healthz(addr).await, Ok(StatusCode::OK), "service resumed");

    // A client that finishes the handshake but sends no request is closed by the
    // header read timeout.
    let mut quiet = tls_connect(addr).await.unwrap();
    let took = closed_within(&mut quiet, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(1400), "closed after {took:?}");

    // Without a client certificate: 401, and the endpoint still answers.
    let anonymous = spindle_meta::tls::accept_any_config().unwrap();
    let tls = tls_connect_with(addr, anonymous).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/healthz")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let _ = resp.into_body().collect().await;
    assert_eq!(healthz(addr).await, Ok(StatusCode::OK));
}

/// A raw TLS connection upgraded to SPDY port-forwarding through the endpoint.
async fn spdy_session(addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tls = tls_connect(addr).await.unwrap();
    let head = "POST /portForward/default/pod HTTP/1.1\r\nHost: localhost\r\n\
         Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    // Read the 101 response up to the blank line, byte by byte so no SPDY is eaten.
    let mut resp = Vec::new();
    while !resp.ends_with(b"\r\n\r\n") {
        let b = tls.read_u8().await.unwrap();
        resp.push(b);
    }
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    tls
}

fn syn_stream(id: u32, headers: &[(&str, &str)], def: &mut Deflater) -> BytesMut {
    let mut out = BytesMut::new();
    let frame = Frame::SynStream {
        id,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        fin: false,
    };
    spdy::encode(&frame, &mut out, def).unwrap();
    out
}

/// Reads frames until `want` matches one, or the connection ends (then `None`).
async fn read_until<S: tokio::io::AsyncRead + Unpin>(
    conn: &mut S,
    buf: &mut BytesMut,
    inf: &mut Inflater,
    want: impl Fn(&Frame) -> bool,
) -> Option<Frame> {
    loop {
        while let Some(f) = spdy::decode(buf, inf).unwrap() {
            if want(&f) {
                return Some(f);
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_buf(buf)).await;
        match read.expect("the server neither answered nor closed") {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A "pod" port that writes without end; counts what it managed to write.
async fn firehose() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let chunk = vec![b'x'; 64 << 10];
        while conn.write_all(&chunk).await.is_ok() {
            count.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    (port, written)
}

/// SPN-16: a SPDY header block that inflates past the cap (a zlib bomb) gets the
/// stream reset with PROTOCOL_ERROR and the connection ended, the endpoint stays up;
/// and a pod writing into a port-forward whose client does not read is held back
/// instead of being buffered by the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_header_bombs_are_refused_and_port_forward_pushes_back() {
    let addr = endpoint(Limits::default()).await;

    // 8 MiB of one header value compresses to a few KiB.
    let mut conn = spdy_session(addr).await;
    let mut def = Deflater::default();
    let bomb = "a".repeat(spdy::MAX_HEADER_BLOCK * 8);
    let frame = syn_stream(1, &[("streamtype", "data"), ("x-bomb", &bomb)], &mut def);
    assert!(frame.len() < 64 << 10, "the bomb is small: {}", frame.len());
    conn.write_all(&frame).await.unwrap();
    let (mut buf, mut inf) = (BytesMut::new(), Inflater::default());
    let rst = read_until(&mut conn, &mut buf, &mut inf, |f| {
        matches!(f, Frame::RstStream { .. })
    })
    .await;
    assert_eq!(rst, Some(Frame::RstStream { id: 1, status: 1 }));
    let away = read_until(&mut conn, &mut buf, &mut inf, |f| {
        matches!(f, Frame::GoAway)
    })
    .await;
    assert_eq!(away, Some(Frame::GoAway));
    closed_within(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(healthz(addr).await, Ok(StatusCode::OK));

    // Port-forward to a port that writes endlessly; the client reads nothing.
    let (port, written) = firehose().await;
    let mut conn = spdy_session(addr).await;
    let mut def = Deflater::default();
    let port = port.to_string();
    let mut out = syn_stream(
        1,
        &[("streamtype", "error"), ("port", &port), ("requestid", "0")],
        &mut def,
    );
    out.extend_from_slice(&syn_stream(
        3,
        &[("streamtype", "data"), ("port", &port), ("requestid", "0")],
        &mut def,
    ));
    conn.write_all(&out).await.unwrap();
    // Wait until the pod's writes stall: no progress for half a second.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = written.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pod never stopped writing ({now} bytes)"
        );
        last = now;
    }
    // The agent's queue (256 frames of at most 32 KiB) plus socket buffers on both
    // sides; without back-pressure this grows by gigabytes within seconds.
    assert!(
        last < 64 << 20,
        "the pod wrote {last} bytes into a stalled forward"
    );

    // The data is all there once the client reads: back-pressure, not loss.
    let (mut buf, mut inf) = (BytesMut::new(), Inflater::default());
    let mut got = 0usize;
    while got < last {
        let f = read_until(&mut conn, &mut buf, &mut inf, |f| {
            matches!(f, Frame::Data { id: 3, .. })
        })
        .await
        .expect("data frames");
        if let Frame::Data { data, .. } = f {
            assert!(data.iter().all(|b| *b == b'x'));
            got += data.len();
        }
    }
    assert_eq!(healthz(addr).await, Ok(StatusCode::OK));
}
