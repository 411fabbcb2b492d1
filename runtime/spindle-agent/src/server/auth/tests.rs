use super::*;
use axum::body::Body;
use axum::routing::any;
use axum::Extension;
use http_body_util::BodyExt;
use rustls::pki_types::CertificateDer;
use tower::ServiceExt;

/// Allows exactly the attributes listed.
struct Allow(Vec<(&'static str, &'static str, &'static str)>);

impl Reviewer for Allow {
    async fn review(&self, a: &Attributes) -> Result<bool, String> {
        if a.user.name == "broken" {
            return Err("the API server is down".into());
        }
        Ok(self
            .0
            .iter()
            .any(|(u, v, s)| a.user.name == *u && a.verb == *v && a.subresource == *s))
    }
}

fn new_ca() -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("ca");
    (cert.pem(), rcgen::Issuer::new(params, key))
}

fn client_cert(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    cn: &str,
) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "team");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.signed_by(&key, issuer).expect("cert").der().clone()
}

fn app(ca_pem: &str) -> Router {
    let routes = Router::new()
        .route(
            "/{*rest}",
            any(|Extension(c): Extension<Caller>| async move { format!("{c:?}") }),
        )
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found") });
    let allow = Allow(vec![
        ("alice", "get", "proxy"),
        ("alice", "create", "proxy"),
        ("logger", "get", "log"),
    ]);
    authorized(routes, ClientCerts::for_ca(ca_pem).expect("ca"), allow)
}

async fn call(
    app: Router,
    method: Method,
    path: &str,
    cert: Option<CertificateDer<'static>>,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", "Bearer s3cret")
        .body(Body::empty())
        .expect("request");
    if let Some(c) = cert {
        req.extensions_mut()
            .insert(PeerCertificates(Arc::new(vec![c])));
    }
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn callers_without_a_certificate_of_the_ca_are_unauthorized_even_on_unknown_paths() {
    let (ca_pem, ca) = new_ca();
    let (_, other) = new_ca();
    let denied = (StatusCode::UNAUTHORIZED, "Unauthorized".to_string());
    for path in ["/exec/ns/p/c", "/nope"] {
        // A bearer token (the join token's secret) is no credential here.
        assert_eq!(call(app(&ca_pem), Method::GET, path, None).await, denied);
        let foreign = client_cert(&other, "alice");
        assert_eq!(
            call(app(&ca_pem), Method::GET, path, Some(foreign)).await,
            denied
        );
    }
    let ok = call(
        app(&ca_pem),
        Method::GET,
        "/nope",
        Some(client_cert(&ca, "alice")),
    )
    .await;
    assert_eq!(ok.0, StatusCode::OK);
    assert!(
        ok.1.contains("\"alice\"") && ok.1.contains("\"team\""),
        "{}",
        ok.1
    );
}

#[tokio::test]
async fn requests_are_authorized_as_the_kubelet_maps_them() {
    let (ca_pem, ca) = new_ca();
    let alice = || Some(client_cert(&ca, "alice"));
    assert_eq!(
        call(app(&ca_pem), Method::POST, "/exec/ns/p/c", alice())
            .await
            .0,
        StatusCode::OK
    );
    // DELETE is "delete", which alice may not.
    assert_eq!(
        call(app(&ca_pem), Method::DELETE, "/exec/ns/p/c", alice()).await,
        (
            StatusCode::FORBIDDEN,
            "Forbidden (user=alice, verb=delete, resource=nodes, subresource=proxy)".into()
        )
    );
    // Container logs are nodes/proxy; /logs is nodes/log.
    let logger = || Some(client_cert(&ca, "logger"));
    assert_eq!(
        call(app(&ca_pem), Method::GET, "/containerLogs/ns/p/c", logger()).await,
        (
            StatusCode::FORBIDDEN,
            "Forbidden (user=logger, verb=get, resource=nodes, subresource=proxy)".into()
        )
    );
    assert_eq!(
        call(app(&ca_pem), Method::GET, "/logs/syslog", logger())
            .await
            .0,
        StatusCode::OK
    );
    let broken = Some(client_cert(&ca, "broken"));
    assert_eq!(
        call(app(&ca_pem), Method::GET, "/healthz", broken).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Authorization error (user=broken, verb=get, resource=nodes, subresource=proxy)".into()
        )
    );
}

#[test]
fn paths_map_to_the_kubelets_subresources() {
    let who = Caller {
        name: "u".into(),
        groups: vec![],
    };
    let sub = |p: &str| Attributes::of(who.clone(), &Method::GET, p).subresource;
    assert_eq!(sub("/stats/summary"), "stats");
    assert_eq!(sub("/stats"), "stats");
    assert_eq!(sub("/statsx"), "proxy");
    assert_eq!(sub("/metrics/cadvisor"), "metrics");
    assert_eq!(sub("/logs/"), "log");
    assert_eq!(sub("/spec/"), "spec");
    assert_eq!(sub("/portForward/ns/p"), "proxy");
    assert_eq!(Attributes::of(who.clone(), &Method::HEAD, "/").verb, "");
}
