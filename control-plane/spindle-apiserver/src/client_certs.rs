//! Client certificates are checked against the cluster CA per connection, after the
//! handshake rather than during it, so that a certificate the CA did not sign (or one
//! that expired) makes the caller anonymous (401 Unauthorized, as kube-apiserver's x509
//! authenticator answers) instead of failing the TLS handshake. The handshake still
//! proves the client holds the certificate's key.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Asks for a client certificate, takes any in the handshake, and verifies the chain
/// when asked ([`ClientCerts::verified`]).
#[derive(Debug)]
pub(crate) struct ClientCerts {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCerts {
    /// `inner` is the CA's verifier (client certificates optional).
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>) -> ClientCerts {
        ClientCerts { inner }
    }

    /// Whether the connection's client certificate chains to the CA and is valid now
    /// (false without one).
    pub(crate) fn verified(
        &self,
        conn: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    ) -> bool {
        let Some((end, rest)) = conn
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.split_first())
        else {
            return false;
        };
        match self.inner.verify_client_cert(end, rest, UnixTime::now()) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "client certificate refused");
                false
            }
        }
    }
}

impl ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
