use super::*;

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
