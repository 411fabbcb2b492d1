//! TLS client configurations for the two ways Spindle trusts a server other than through a
//! CA: not at all (HTTPS probes, which the kubelet makes without verifying the pod's
//! certificate, and the first `/cacerts` fetch, which the join token's hash authenticates
//! instead), and by the SHA-256 of one pinned certificate (the API server calling an
//! agent, which published its certificate's fingerprint on its Node).
//!
//! Either way the handshake signatures are still checked, so the peer at least holds the
//! key of the certificate it shows.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// A client config that accepts any server certificate.
pub fn accept_any_config() -> Result<ClientConfig, rustls::Error> {
    config(None)
}

/// A client config that accepts exactly the certificate whose SHA-256 (hex, either case)
/// is `fingerprint`.
pub fn pinned_config(fingerprint: &str) -> Result<ClientConfig, rustls::Error> {
    config(Some(fingerprint.to_ascii_lowercase()))
}

/// The SHA-256 fingerprint (lower-case hex) of a DER certificate, as [`pinned_config`]
/// expects it.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

fn config(pin: Option<String>) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { pin, provider }))
        .with_no_client_auth())
}

/// Accepts the pinned certificate, or any when nothing is pinned.
#[derive(Debug)]
struct Verifier {
    pin: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pin {
            Some(pin) if fingerprint(end_entity.as_ref()) != *pin => Err(rustls::Error::General(
                "the server certificate does not match the pinned SHA-256 fingerprint".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
