//! Container probes as the kubelet runs them: startup, readiness and liveness, each an
//! httpGet, tcpSocket, grpc or exec check with initialDelaySeconds, periodSeconds,
//! timeoutSeconds, successThreshold and failureThreshold.
//!
//! Network checks go from the agent (the node's network namespace, as the kubelet's do)
//! to the pod's IP. exec checks run the command as an exec into the container (a new
//! instance of its program in the pod's sandbox) through the function the caller gives.
//!
//! [`watch`] is one future per container run: it reports started/ready changes and
//! Unhealthy events through a callback and completes only when the container must be
//! killed (liveness or startup failure). Dropping it (the run ended) stops the probes.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Container, GRPCAction, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Runs `argv` in the container and returns its exit code and output, within the timeout.
pub type ExecFn = Arc<
    dyn Fn(
            Vec<String>,
            Duration,
        ) -> Pin<Box<dyn Future<Output = Result<(i32, String), String>> + Send>>
        + Send
        + Sync,
>;

/// What a container's probes are pointed at.
#[derive(Clone)]
pub struct Target {
    pub ip: IpAddr,
    /// The container's named ports, for probes that name their port.
    pub ports: Vec<(String, u16)>,
    pub exec: Option<ExecFn>,
}

impl Target {
    pub fn of(c: &Container, ip: IpAddr, exec: Option<ExecFn>) -> Self {
        Target {
            ip,
            ports: c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
                .collect(),
            exec,
        }
    }

    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        match port {
            IntOrString::Int(n) => {
                u16::try_from(*n).map_err(|_| format!("invalid port number {n}"))
            }
            IntOrString::String(name) => match name.parse::<u16>() {
                Ok(n) => Ok(n),
                Err(_) => self
                    .ports
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| *p)
                    .ok_or_else(|| format!("no container port named {name:?}")),
            },
        }
    }
}

/// The probes a container declares.
#[derive(Clone, Debug, Default)]
pub struct Probes {
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

impl Probes {
    pub fn of(c: &Container) -> Self {
        Probes {
            startup: c.startup_probe.clone(),
            readiness: c.readiness_probe.clone(),
            liveness: c.liveness_probe.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.readiness.is_none() && self.liveness.is_none()
    }
}

/// What [`watch`] tells its caller as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The startup probe succeeded.
    Started,
    /// The readiness verdict changed.
    Ready(bool),
    /// A probe failed (the kubelet's Unhealthy event): `probe` is Startup, Readiness or
    /// Liveness.
    Unhealthy {
        probe: &'static str,
        message: String,
    },
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

fn secs(v: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(min) as u64)
}

fn period(p: &Probe) -> Duration {
    secs(p.period_seconds, 10, 1)
}

fn initial_delay(p: &Probe) -> Duration {
    secs(p.initial_delay_seconds, 0, 0)
}

fn failure_threshold(p: &Probe) -> u32 {
    p.failure_threshold.unwrap_or(3).max(1) as u32
}

/// Probes one container run until it must be killed; returns the reason. Never returns
/// if the container is healthy (drop the future when the run ends).
pub async fn watch(probes: Probes, target: Target, on: impl Fn(Signal) + Send + Sync) -> String {
    if let Some(sp) = &probes.startup {
        tokio::time::sleep(initial_delay(sp)).await;
        let mut failures = 0;
        loop {
            match check(sp, &target).await {
                Outcome::Success => {
                    on(Signal::Started);
                    break;
                }
                Outcome::Failure(m) => {
                    failures += 1;
                    on(Signal::Unhealthy {
                        probe: "Startup",
                        message: m,
                    });
                    if failures >= failure_threshold(sp) {
                        return "failed startup probe, will be restarted".into();
                    }
                }
            }
            tokio::time::sleep(period(sp)).await;
        }
    }
    let readiness = async {
        let Some(rp) = &probes.readiness else {
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep(initial_delay(rp)).await;
        let need_ok = rp.success_threshold.unwrap_or(1).max(1) as u32;
        let (mut ok, mut bad, mut ready) = (0u32, 0u32, false);
        loop {
            match check(rp, &target).await {
                Outcome::Success => {
                    ok += 1;
                    bad = 0;
                    if !ready && ok >= need_ok {
                        ready = true;
                        on(Signal::Ready(true));
                    }
                }
                Outcome::Failure(m) => {
                    ok = 0;
                    bad += 1;
                    on(Signal::Unhealthy {
                        probe: "Readiness",
                        message: m,
                    });
                    if ready && bad >= failure_threshold(rp) {
                        ready = false;
                        on(Signal::Ready(false));
                    }
                }
            }
            tokio::time::sleep(period(rp)).await;
        }
    };
    let liveness = async {
        let Some(lp) = &probes.liveness else {
            return std::future::pending::<String>().await;
        };
        tokio::time::sleep(initial_delay(lp)).await;
        let mut bad = 0;
        loop {
            match check(lp, &target).await {
                Outcome::Success => bad = 0,
                Outcome::Failure(m) => {
                    bad += 1;
                    on(Signal::Unhealthy {
                        probe: "Liveness",
                        message: m,
                    });
                    if bad >= failure_threshold(lp) {
                        return "failed liveness probe, will be restarted".into();
                    }
                }
            }
            tokio::time::sleep(period(lp)).await;
        }
    };
    tokio::select! {
        () = readiness => unreachable!("the readiness loop never ends"),
        reason = liveness => reason,
    }
}

/// One check of `probe` against `target`, bounded by its timeoutSeconds.
pub async fn check(probe: &Probe, target: &Target) -> Outcome {
    let timeout = secs(probe.timeout_seconds, 1, 1);
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        let Some(run) = &target.exec else {
            return Outcome::Failure("exec probes are not available for this container".into());
        };
        return match run(argv.clone(), timeout).await {
            Ok((0, _)) => Outcome::Success,
            Ok((code, output)) => Outcome::Failure(format!(
                "command {argv:?} exited with {code}: {}",
                output.trim_end()
            )),
            Err(e) => Outcome::Failure(format!("command {argv:?} failed: {e}")),
        };
    }
    let attempt = async {
        if let Some(g) = &probe.http_get {
            http_get(g, target).await
        } else if let Some(t) = &probe.tcp_socket {
            let host = t
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| target.ip.to_string());
            let port = target.port(&t.port)?;
            TcpStream::connect((host.as_str(), port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        } else if let Some(g) = &probe.grpc {
            grpc(g, target).await
        } else {
            Err("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Outcome::Success,
        Ok(Err(m)) => Outcome::Failure(m),
        Err(_) => Outcome::Failure(format!("timeout: no answer within {}s", timeout.as_secs())),
    }
}

async fn http_get(g: &HTTPGetAction, target: &Target) -> Result<(), String> {
    let host = g
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| target.ip.to_string());
    let port = target.port(&g.port)?;
    let https = g
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let mut path = g.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let authority = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    let url = format!(
        "{}://{authority}{path}",
        if https { "https" } else { "http" }
    );
    let mut req = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::USER_AGENT, "kube-probe/1.33")
        .header(hyper::header::ACCEPT, "*/*");
    for h in g.http_headers.iter().flatten() {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("Get {url:?}: dial tcp {authority}: {e}"))?;
    let status = if https {
        let tls = spindle_meta::tls::accept_any_config().map_err(|e| format!("{e:#}"))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("Get {url:?}: TLS handshake: {e}"))?;
        send_http1(stream, req).await
    } else {
        send_http1(tcp, req).await
    }
    .map_err(|e| format!("Get {url:?}: {e}"))?;
    if (200..400).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!(
            "HTTP probe failed with statuscode: {}",
            status.as_u16()
        ))
    }
}

async fn send_http1<S>(
    io: S,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::StatusCode, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status())
}

/// The gRPC health checking protocol (grpc.health.v1.Health/Check) over h2c, as the
/// kubelet's grpc probe speaks it.
async fn grpc(g: &GRPCAction, target: &Target) -> Result<(), String> {
    let port = u16::try_from(g.port).map_err(|_| format!("invalid port number {}", g.port))?;
    let service = g.service.clone().unwrap_or_default();
    let authority = match target.ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    };
    let tcp = TcpStream::connect((target.ip, port))
        .await
        .map_err(|e| format!("failed to connect service {authority:?} within the timeout: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| format!("h2 handshake with {authority}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(format!("http://{authority}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(hyper::header::USER_AGENT, "kube-probe/1.33")
        .body(Full::new(Bytes::from(health_request(&service))))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("health rpc to {authority}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("health rpc answered HTTP {}", resp.status()));
    }
    // A trailers-only answer puts grpc-status in the headers.
    let head_status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the health answer: {e}"))?;
    let trailer_status = body
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let code = trailer_status.or(head_status).unwrap_or_else(|| "0".into());
    if code != "0" {
        return Err(format!("rpc error: code = {code}"));
    }
    let answer = unframe(&body.to_bytes())
        .and_then(|msg| HealthCheckResponse::decode(msg).ok())
        .ok_or("malformed health answer")?;
    match ServingStatus::try_from(answer.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        status => Err(format!(
            "service unhealthy (responded with {:?})",
            match status {
                Ok(ServingStatus::NotServing) => "NOT_SERVING",
                Ok(ServingStatus::ServiceUnknown) => "SERVICE_UNKNOWN",
                _ => "UNKNOWN",
            }
        )),
    }
}

/// grpc.health.v1.HealthCheckRequest (health.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// grpc.health.v1.HealthCheckResponse.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    status: i32,
}

/// grpc.health.v1.HealthCheckResponse.ServingStatus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

/// A length-prefixed gRPC message holding `HealthCheckRequest { service }`.
fn health_request(service: &str) -> Vec<u8> {
    let msg = HealthCheckRequest {
        service: service.to_string(),
    }
    .encode_to_vec();
    // Uncompressed, then the message's length.
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    framed
}

/// The message of a length-prefixed gRPC answer.
fn unframe(framed: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(framed.get(1..5)?.try_into().ok()?) as usize;
    framed.get(5..5usize.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, TCPSocketAction};
    use std::sync::Mutex;
    use tokio::io::AsyncWriteExt;

    fn target() -> Target {
        Target {
            ip: "127.0.0.1".parse().expect("ip"),
            ports: vec![("web".into(), 1)],
            exec: None,
        }
    }

    /// A one-route HTTP/1.1 server answering every request with `status`.
    async fn http_server(status: u16) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        port
    }

    fn http_probe(port: IntOrString) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                port,
                path: Some("/healthz".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn http_get_succeeds_on_2xx_3xx_and_fails_otherwise() {
        let ok = http_server(200).await;
        let redirect = http_server(302).await;
        let bad = http_server(500).await;
        let t = target();
        assert_eq!(
            check(&http_probe(IntOrString::Int(ok.into())), &t).await,
            Outcome::Success
        );
        assert_eq!(
            check(&http_probe(IntOrString::Int(redirect.into())), &t).await,
            Outcome::Success
        );
        let Outcome::Failure(m) = check(&http_probe(IntOrString::Int(bad.into())), &t).await else {
            panic!("500 passed");
        };
        assert!(m.contains("statuscode: 500"), "{m}");
        // A named port resolves through the container's ports.
        let named = Target {
            ports: vec![("web".into(), ok)],
            ..target()
        };
        assert_eq!(
            check(&http_probe(IntOrString::String("web".into())), &named).await,
            Outcome::Success
        );
        let Outcome::Failure(m) = check(&http_probe(IntOrString::String("nope".into())), &t).await
        else {
            panic!("unknown port name passed");
        };
        assert!(m.contains("nope"), "{m}");
    }

    #[tokio::test]
    async fn tcp_socket_and_timeouts() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = l.local_addr().expect("addr").port();
        let tcp = |port: u16| Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port.into()),
                host: None,
            }),
            ..Default::default()
        };
        assert_eq!(check(&tcp(open), &target()).await, Outcome::Success);
        drop(l);
        assert!(matches!(
            check(&tcp(open), &target()).await,
            Outcome::Failure(_)
        ));
        // A server that accepts and never answers fails after timeoutSeconds.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let started = std::time::Instant::now();
        let Outcome::Failure(m) =
            check(&http_probe(IntOrString::Int(port.into())), &target()).await
        else {
            panic!("silent server passed");
        };
        assert!(m.contains("timeout"), "{m}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(silent);
    }

    #[tokio::test]
    async fn grpc_health_check() {
        use hyper::service::service_fn;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        // The service name decides the answer: SERVING unless "down".
                        let down = body.windows(4).any(|w| w == b"down");
                        let msg: &[u8] = if down { &[0x08, 0x02] } else { &[0x08, 0x01] };
                        let mut framed = vec![0u8, 0, 0, 0, msg.len() as u8];
                        framed.extend_from_slice(msg);
                        let mut trailers = hyper::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().expect("header"));
                        let body = Full::new(Bytes::from(framed)).with_trailers(async move {
                            Some(Ok::<_, std::convert::Infallible>(trailers))
                        });
                        Ok::<_, hyper::Error>(
                            hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .expect("response"),
                        )
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let probe = |service: &str| Probe {
            grpc: Some(GRPCAction {
                port: port.into(),
                service: Some(service.into()),
            }),
            timeout_seconds: Some(2),
            ..Default::default()
        };
        assert_eq!(check(&probe("web"), &target()).await, Outcome::Success);
        let Outcome::Failure(m) = check(&probe("down"), &target()).await else {
            panic!("NOT_SERVING passed");
        };
        assert!(m.contains("NOT_SERVING"), "{m}");
    }

    #[tokio::test]
    async fn exec_uses_the_exit_code() {
        let exec: ExecFn = Arc::new(|argv: Vec<String>, _| {
            Box::pin(async move {
                let code = argv.last().and_then(|a| a.parse().ok()).unwrap_or(0);
                Ok((code, format!("ran {argv:?}")))
            })
        });
        let t = Target {
            exec: Some(exec),
            ..target()
        };
        let probe = |code: &str| Probe {
            exec: Some(ExecAction {
                command: Some(vec!["exit".into(), code.into()]),
            }),
            ..Default::default()
        };
        assert_eq!(check(&probe("0"), &t).await, Outcome::Success);
        let Outcome::Failure(m) = check(&probe("3"), &t).await else {
            panic!("exit 3 passed");
        };
        assert!(m.contains("exited with 3"), "{m}");
    }

    #[tokio::test]
    async fn watch_applies_thresholds() {
        // Readiness flips after failureThreshold failures; liveness kills after its own.
        let port = http_server(500).await;
        let signals = Arc::new(Mutex::new(Vec::new()));
        let seen = signals.clone();
        let probes = Probes {
            readiness: Some(http_probe(IntOrString::Int(port.into()))),
            liveness: Some(Probe {
                failure_threshold: Some(2),
                period_seconds: Some(1),
                ..http_probe(IntOrString::Int(port.into()))
            }),
            startup: None,
        };
        let reason = watch(probes, target(), move |s| {
            seen.lock().expect("lock").push(s)
        })
        .await;
        assert!(reason.contains("liveness"), "{reason}");
        let got = signals.lock().expect("lock").clone();
        let live_failures = got
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Signal::Unhealthy {
                        probe: "Liveness",
                        ..
                    }
                )
            })
            .count();
        assert_eq!(live_failures, 2, "{got:?}");
        // Never ready: readiness failed from the start.
        assert!(!got.contains(&Signal::Ready(true)), "{got:?}");
    }
}
