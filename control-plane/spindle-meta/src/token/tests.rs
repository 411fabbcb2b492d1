use super::*;

const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn parses_full_token() {
    let t = JoinToken::parse(&format!("K10{HASH}::server:s3cret")).expect("valid");
    assert_eq!(t.ca_hash(), Some(HASH));
    assert_eq!(t.secret(), "s3cret");
    // Trailing newline as in the token file; upper-case hex is the same hash.
    let t = JoinToken::parse(&format!("K10{}::node:pw\n", HASH.to_uppercase())).expect("valid");
    assert_eq!((t.ca_hash(), t.secret()), (Some(HASH), "pw"));
    // A secret may itself contain colons: only the first one ends the user.
    let t = JoinToken::parse(&format!("K10{HASH}::server:a:b")).expect("valid");
    assert_eq!(t.secret(), "a:b");
}

#[test]
fn bare_secrets_pin_nothing() {
    let t = JoinToken::parse("s3cret").expect("bare");
    assert_eq!((t.ca_hash(), t.secret()), (None, "s3cret"));
    assert_eq!(t.to_string(), "s3cret");
    assert!(t.verify_ca(b"anything").is_ok());
    let t = JoinToken::parse("K10::server:s3cret").expect("no hash");
    assert_eq!((t.ca_hash(), t.secret()), (None, "s3cret"));
}

#[test]
fn rejects_malformed_tokens() {
    assert_eq!(JoinToken::parse(""), Err(TokenError::Empty));
    assert_eq!(JoinToken::parse(" \n"), Err(TokenError::Empty));
    for bad in [
        "K10abc::server:s3cret".to_string(),
        format!("K10{HASH}::server:"),
        format!("K10{HASH}server:x"),
        format!("K10{HASH}::nouser"),
        format!("K10{}::server:x", HASH.replace('0', "g")),
    ] {
        assert_eq!(JoinToken::parse(&bad), Err(TokenError::Format), "{bad:?}");
    }
}

#[test]
fn the_full_form_round_trips() {
    let pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";
    let t = JoinToken::new(pem, "s3cret");
    let text = t.to_string();
    assert_eq!(text, format!("K10{}::server:s3cret", ca_hash(pem)));
    assert_eq!(JoinToken::parse(&text), Ok(t));
}

#[test]
fn verifies_ca_hash() {
    let pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";
    let h = hex::encode(Sha256::digest(pem));
    let ok = JoinToken::parse(&format!("K10{h}::server:x")).expect("valid");
    assert!(ok.verify_ca(pem).is_ok());
    let upper = JoinToken::parse(&format!("K10{}::server:x", h.to_uppercase())).expect("valid");
    assert!(upper.verify_ca(pem).is_ok());
    let wrong = JoinToken::parse(&format!("K10{HASH}::server:x")).expect("valid");
    let err = wrong.verify_ca(pem).expect_err("mismatch").to_string();
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn pem_without_certs_is_an_error() {
    assert!(matches!(pem_to_der(b"not a pem"), Err(JoinError::NoCerts)));
}

/// A loopback HTTPS server that serves `ca_pem` at /cacerts with a certificate signed by
/// nobody the client knows; returns its URL.
async fn cacerts_server(ca_pem: String) -> String {
    use hyper::service::service_fn;
    let (port, _) = crate::testing::tls_server(move |tls| {
        let pem = ca_pem.clone();
        async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (status, body) = match req.uri().path() {
                    "/cacerts" => (200, pem.clone()),
                    _ => (404, "not found".to_string()),
                };
                async move {
                    hyper::Response::builder()
                        .status(status)
                        .body(http_body_util::Full::new(Bytes::from(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        }
    })
    .await;
    format!("https://127.0.0.1:{port}")
}

fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).expect("ca").pem()
}

#[tokio::test]
async fn connect_pins_the_ca_of_the_token() {
    let pem = ca_pem();
    let url = cacerts_server(pem.clone()).await;
    let good = JoinToken::new(pem.as_bytes(), "s3cret").to_string();
    assert!(connect(&url, &good).await.is_ok());
    let other = JoinToken::new(ca_pem().as_bytes(), "s3cret").to_string();
    let Err(err) = connect(&url, &other).await else {
        panic!("another cluster's token was accepted");
    };
    assert!(
        matches!(err, JoinError::Token(TokenError::CaMismatch { .. })),
        "{err}"
    );
    assert!(
        connect(&url, "bare-secret").await.is_ok(),
        "a bare secret trusts the CA"
    );
}

#[tokio::test]
async fn connect_refuses_bad_servers() {
    let token = format!("K10{HASH}::server:x");
    assert!(matches!(
        connect("http://127.0.0.1:1", &token).await,
        Err(JoinError::NotHttps(_))
    ));
    assert!(matches!(
        connect("not a url", &token).await,
        Err(JoinError::NotAUrl(_))
    ));
    let url = cacerts_server("no certificates here".into()).await;
    assert!(matches!(connect(&url, "x").await, Err(JoinError::NoCerts)));
    assert!(matches!(
        connect(&url, "K10abc::server:x").await,
        Err(JoinError::Token(TokenError::Format))
    ));
}
