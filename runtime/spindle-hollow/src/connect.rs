//! Joining a cluster with nothing but its URL and a join token, as a k3s agent does.
//!
//! The token `K10<sha256 hex of the CA PEM>::server:<secret>` pins the cluster CA: we fetch
//! `/cacerts` without trusting the (not yet known) CA, accept the body only if its hash
//! matches the token, and from then on talk to the API server with that CA as the only
//! root and the token as bearer credential.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

const CACERTS_TIMEOUT: Duration = Duration::from_secs(15);

/// The parts of a full join token.
#[derive(Debug, PartialEq, Eq)]
pub struct JoinToken<'a> {
    /// Lower- or upper-case hex sha256 of the CA PEM as `/cacerts` serves it.
    pub ca_hash: &'a str,
    pub secret: &'a str,
}

/// Parse `K10<64 hex>::<user>:<secret>`; `None` when the token is a bare secret or malformed.
pub fn parse_token(token: &str) -> Option<JoinToken<'_>> {
    let rest = token.trim().strip_prefix("K10")?;
    let (ca_hash, creds) = rest.split_once("::")?;
    // k3s writes `server:<secret>` (and `node:<password>` for agent tokens); the user part
    // does not matter to us, only that the secret is non-empty.
    let (_user, secret) = creds.split_once(':')?;
    if ca_hash.len() != 64 || !ca_hash.bytes().all(|b| b.is_ascii_hexdigit()) || secret.is_empty() {
        return None;
    }
    Some(JoinToken { ca_hash, secret })
}

/// Check a fetched CA bundle against the hash a token pins.
pub fn verify_ca(ca_pem: &[u8], expected_hash: &str) -> Result<()> {
    let got = hex::encode(Sha256::digest(ca_pem));
    if !got.eq_ignore_ascii_case(expected_hash) {
        bail!(
            "the CA served at /cacerts (sha256 {got}) does not match the hash in the join token \
             ({expected_hash}): wrong --server for this token, or someone in between"
        );
    }
    Ok(())
}

/// The DER certificates of a PEM bundle.
pub fn pem_to_der(ca_pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let certs = CertificateDer::pem_slice_iter(ca_pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("parsing the CA PEM from /cacerts: {e}"))?;
    if certs.is_empty() {
        bail!("/cacerts returned no PEM certificates");
    }
    Ok(certs)
}

/// Connect to the API server at `server` with a join token: fetch and pin the CA, then
/// build a client that authenticates with the token as bearer token.
pub async fn connect(server: &str, token: &str) -> Result<kube::Client> {
    let token = token.trim();
    let uri: Uri = server
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--server {server:?} must be an https:// URL");
    }
    let ca_pem = tokio::time::timeout(CACERTS_TIMEOUT, fetch_cacerts(&uri))
        .await
        .map_err(|_| anyhow::anyhow!("fetching {server}/cacerts timed out"))?
        .with_context(|| format!("fetching {server}/cacerts"))?;
    match parse_token(token) {
        Some(t) => verify_ca(&ca_pem, t.ca_hash)?,
        None => tracing::warn!(
            "the token is not of the form K10<ca-hash>::server:<secret>; trusting the CA from \
             {server}/cacerts without verifying it"
        ),
    }
    let roots = pem_to_der(&ca_pem)?;
    let mut cfg = kube::Config::new(uri);
    cfg.root_cert = Some(roots);
    cfg.auth_info.token = Some(secrecy::SecretString::from(token.to_string()));
    kube::Client::try_from(cfg).context("building the API client")
}

/// A TLS client config that accepts any server certificate: for fetching the CA before
/// it is known (checked against the token's hash instead), and for HTTPS probes, which
/// the kubelet also makes without verifying the pod's certificate.
pub fn unverified_tls_config() -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
            .with_no_client_auth(),
    )
}

/// `GET <server>/cacerts` over TLS without verifying the server: at this point we do not
/// know the CA yet, and the body is checked against the token's hash instead.
async fn fetch_cacerts(uri: &Uri) -> Result<Vec<u8>> {
    let host = uri.host().context("the server URL has no host")?;
    // http::Uri keeps the brackets of an IPv6 literal; sockets and SNI want it bare.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let tls = unverified_tls_config()?;
    let tcp = tokio::net::TcpStream::connect((bare_host, port))
        .await
        .with_context(|| format!("connecting to {bare_host}:{port}"))?;
    let name = ServerName::try_from(bare_host.to_string())
        .with_context(|| format!("{bare_host:?} is not a valid TLS server name"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "/cacerts connection ended");
        }
    });
    let path = format!("{}/cacerts", uri.path().trim_end_matches('/'));
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    Ok(body.to_vec())
}

/// Accepts any server certificate. Used only for the `/cacerts` fetch, whose answer is
/// authenticated by the hash in the join token rather than by TLS. Handshake signatures are
/// still checked so the peer at least holds the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_full_token() {
        let t = format!("K10{HASH}::server:s3cret");
        assert_eq!(
            parse_token(&t),
            Some(JoinToken {
                ca_hash: HASH,
                secret: "s3cret"
            })
        );
        // Trailing newline as in the token file.
        assert!(parse_token(&format!("{t}\n")).is_some());
    }

    #[test]
    fn rejects_other_forms() {
        assert_eq!(parse_token("s3cret"), None);
        assert_eq!(parse_token("K10abc::server:s3cret"), None);
        assert_eq!(parse_token(&format!("K10{HASH}::server:")), None);
        assert_eq!(parse_token(&format!("K10{HASH}server:x")), None);
        let bad = HASH.replace('0', "g");
        assert_eq!(parse_token(&format!("K10{bad}::server:x")), None);
    }

    #[test]
    fn verifies_ca_hash() {
        let pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";
        let h = hex::encode(Sha256::digest(pem));
        assert!(verify_ca(pem, &h).is_ok());
        assert!(verify_ca(pem, &h.to_uppercase()).is_ok());
        let err = verify_ca(pem, HASH).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn pem_without_certs_is_an_error() {
        assert!(pem_to_der(b"not a pem").is_err());
    }
}
