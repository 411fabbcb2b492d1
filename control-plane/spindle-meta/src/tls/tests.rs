use super::*;

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback TLS server with a fresh self-signed certificate; answers one byte per
/// connection. Returns its port and its certificate's DER.
async fn server() -> (u16, Vec<u8>) {
    let (acceptor, der) = crate::testing::self_signed_acceptor();
    let der = der.to_vec();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let _ = s.write_all(b"!").await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    (port, der)
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

#[tokio::test]
async fn pinned_accepts_only_its_certificate() {
    let (port, der) = server().await;
    let pin = fingerprint(&der);
    assert!(talks(pinned_config(&pin).expect("config"), port).await);
    assert!(
        talks(pinned_config(&pin.to_uppercase()).expect("config"), port).await,
        "the fingerprint's case does not matter"
    );
    let (_, other) = server().await;
    assert!(!talks(pinned_config(&fingerprint(&other)).expect("config"), port).await);
}
