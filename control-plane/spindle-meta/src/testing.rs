//! Helpers shared by this crate's tests.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS acceptor with a fresh self-signed certificate for `localhost`, and that
/// certificate's DER.
pub fn self_signed_acceptor() -> (tokio_rustls::TlsAcceptor, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("cert");
    let der = cert.der().clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
        .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), der)
}
