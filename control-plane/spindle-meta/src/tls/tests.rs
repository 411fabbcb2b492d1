use super::*;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback TLS server that answers one byte per connection. Returns its port and its
/// certificate's DER.
async fn server() -> (u16, Vec<u8>) {
    let (port, der) = crate::testing::tls_server(|mut s| async move {
        let _ = s.write_all(b"!").await;
        let _ = s.shutdown().await;
    })
    .await;
    (port, der.to_vec())
}

/// Whether a client with `cfg` completes a handshake and reads the server's byte.
async fn talks(cfg: ClientConfig, port: u16) -> bool {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let Ok(mut s) = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.is_ok() && b == *b"!"
}

#[tokio::test]
async fn accept_any_trusts_an_unknown_certificate() {
    let (port, _) = server().await;
    assert!(talks(accept_any_config().expect("config"), port).await);
}

/// A CA: `(its PEM, its issuer)`.
fn new_ca() -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("ca");
    (cert.pem(), rcgen::Issuer::new(params, key))
}

/// A certificate `issuer` signs for `cn` in group "team" (SAN `localhost`): `(cert, key)`.
fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "team");
    let cert = params.signed_by(&key, issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

/// A loopback server with `cert`/`key` that answers one byte when the client's
/// certificate chains to `client_ca` and names "alice" in "team", else closes.
async fn ca_server(cert: &str, key: &str, client_ca: &str) -> u16 {
    let certs = Arc::new(client_certs::ClientCerts::for_ca(client_ca).expect("verifier"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(certs.clone())
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("cert"),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
        )
        .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, certs) = (acceptor.clone(), certs.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .unwrap_or_default()
                    .to_vec();
                let who = peer
                    .first()
                    .filter(|_| certs.verified(&peer))
                    .and_then(|c| client_certs::subject(c));
                if who == Some(("alice".into(), vec!["team".into()])) {
                    let _ = s.write_all(b"!").await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn ca_client_and_server_verify_each_other_against_the_ca() {
    let (ca_pem, ca) = new_ca();
    let (_, other) = new_ca();
    let (srv_cert, srv_key) = leaf(&ca, "server");
    let port = ca_server(&srv_cert, &srv_key, &ca_pem).await;
    let (alice_cert, alice_key) = leaf(&ca, "alice");
    let alice = || ca_client_config(&ca_pem, &alice_cert, &alice_key).expect("config");
    assert!(talks(alice(), port).await, "same CA both ways");
    // A client certificate of another CA: the handshake completes, the server refuses.
    let (foreign_cert, foreign_key) = leaf(&other, "alice");
    let foreign = ca_client_config(&ca_pem, &foreign_cert, &foreign_key).expect("config");
    assert!(!talks(foreign, port).await, "foreign client certificate");
    // A server of another CA: the client refuses it.
    let (srv2_cert, srv2_key) = leaf(&other, "server");
    let port2 = ca_server(&srv2_cert, &srv2_key, &ca_pem).await;
    assert!(!talks(alice(), port2).await, "server of another CA");
}
