//! Helpers shared by this crate's tests.

use std::future::Future;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A loopback TLS server with a fresh self-signed certificate that hands every accepted
/// connection to `serve`. Returns its port and its certificate's DER.
pub async fn tls_server<F, Fut>(serve: F) -> (u16, CertificateDer<'static>)
where
    F: Fn(TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (acceptor, der) = self_signed_acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, serve) = (acceptor.clone(), serve.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls).await;
                }
            });
        }
    });
    (port, der)
}

/// A TLS acceptor with a fresh self-signed certificate for `localhost`, and that
/// certificate's DER.
fn self_signed_acceptor() -> (tokio_rustls::TlsAcceptor, CertificateDer<'static>) {
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
