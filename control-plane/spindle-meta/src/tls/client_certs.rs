//! Client certificates are checked against the cluster CA per connection, after the
//! handshake rather than during it, so that a certificate the CA did not sign (or one
//! that expired) makes the caller anonymous (401 Unauthorized, as kube-apiserver's x509
//! authenticator and the kubelet answer) instead of failing the TLS handshake. The
//! handshake still proves the client holds the certificate's key. The API server and
//! the agent's streaming endpoint both serve with it.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Asks for a client certificate, takes any in the handshake, and verifies the chain
/// when asked ([`ClientCerts::verified`]).
#[derive(Clone, Debug)]
pub struct ClientCerts {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCerts {
    /// Client certificates chained to the CA(s) in `ca_pem` (optional in the handshake).
    pub fn for_ca(ca_pem: &str) -> Result<ClientCerts, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let c = c.map_err(|e| rustls::Error::General(format!("the CA: {e}")))?;
            roots.add(c)?;
        }
        let inner =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ClientCerts { inner })
    }

    /// Whether the connection's client certificate chain (`peer`, end entity first)
    /// chains to the CA and is valid now (false without one).
    pub fn verified(&self, peer: &[CertificateDer<'_>]) -> bool {
        let Some((end, rest)) = peer.split_first() else {
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

/// The user a client certificate names: its CN, and each O as a group (as Kubernetes'
/// x509 authenticator reads it). Check the chain first ([`ClientCerts::verified`]).
pub fn subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
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
    Some((name, groups))
}
