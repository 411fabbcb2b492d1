//! The streaming subresources the node agent serves, proxied by the API server:
//! `pods/log` now (exec, attach and port-forward come with the networking work).
//!
//! The API server calls the agent's endpoint (Node `status.daemonEndpoints.kubeletEndpoint`
//! on its InternalIP) over HTTPS with the cluster token's secret as bearer token. The
//! agent's certificate is self-signed; the agent publishes its SHA-256 fingerprint in a
//! Node annotation and the API server accepts only that certificate, so the secret never
//! goes to anyone else.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::request::{Query, Target};
use crate::rest::load;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

/// Node annotation holding the hex SHA-256 of the agent's serving certificate (DER).
pub const CERT_ANNOTATION: &str = "spindle.dev/agent-cert-sha256";

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
    let (pod, _) = load(st, t).await?;
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or_default();
    let containers = names(&pod, "containers");
    let inits = names(&pod, "initContainers");
    let container = match q.get("container") {
        Some(c) => {
            if !containers.iter().chain(inits.iter()).any(|n| n == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if containers.len() == 1 => containers[0].clone(),
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
            return Err(ApiError::bad_request(msg));
        }
    };
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
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
    let addr = node["status"]["addresses"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!("node {node_name} has no InternalIP address"))
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("node {node_name} has no agent endpoint")))?;
    let fingerprint = node["metadata"]["annotations"][CERT_ANNOTATION]
        .as_str()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "node {node_name} has not published its agent certificate"
            ))
        })?
        .to_string();
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
    let resp = call_agent(addr, port as u16, &fingerprint, &path, &st.node_secret)
        .await
        .map_err(|e| {
            ApiError::new(
                502,
                "InternalError",
                format!("Get \"https://{addr}:{port}{path}\": {e}"),
            )
        })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = String::from_utf8_lossy(&body).trim().to_string();
        return Err(match status.as_u16() {
            400 => ApiError::bad_request(msg),
            404 => ApiError::new(404, "NotFound", msg),
            code => ApiError::new(code, "InternalError", msg),
        });
    }
    let body = Body::new(resp.into_body().map_err(std::io::Error::other));
    let mut out = Response::new(body);
    *out.status_mut() = StatusCode::OK;
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn call_agent(
    addr: &str,
    port: u16,
    fingerprint: &str,
    path: &str,
    secret: &str,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert {
            sha256: fingerprint.to_ascii_lowercase(),
            provider,
        }))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((addr, port)).await?;
    let name = ServerName::try_from(addr.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(path)
        .header(header::HOST, format!("{addr}:{port}"))
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(req).await?)
}

/// Accepts exactly the certificate whose SHA-256 the agent published on its Node.
#[derive(Debug)]
struct PinnedCert {
    sha256: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if hex::encode(Sha256::digest(end_entity.as_ref())) == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the agent's certificate does not match the one its Node published".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
