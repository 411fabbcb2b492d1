use super::*;

fn ca() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test-ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).expect("ca");
    (cert.pem(), key.serialize_pem())
}

fn usages(u: &[&str]) -> Vec<String> {
    u.iter().map(|s| s.to_string()).collect()
}

/// A request with several organizations, which rcgen cannot make: written by hand.
fn multi_org_request() -> Request {
    let (pem, _) = new_request("jane", &["dev"], &[], &[]).expect("csr");
    let mut req = parse_request(pem.as_bytes()).expect("parse");
    req.organizations = vec!["dev".into(), "ops".into()];
    req.subject_der = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            for (oid, v) in [
                (&[2u64, 5, 4, 10][..], "dev"),
                (&[2, 5, 4, 10], "ops"),
                (&[2, 5, 4, 3], "jane"),
            ] {
                w.next().write_set(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                        w.next().write_utf8_string(v);
                    })
                });
            }
        })
    });
    req
}

#[test]
fn requests_parse_with_subject_and_sans_and_bad_input_is_refused() {
    let ips = ["10.0.0.7".parse().expect("ip")];
    let (pem, _) =
        new_request("system:node:n1", &["system:nodes"], &["n1".into()], &ips).expect("csr");
    let req = parse_request(pem.as_bytes()).expect("parse");
    assert_eq!(req.common_name, "system:node:n1");
    assert_eq!(req.organizations, ["system:nodes"]);
    assert_eq!(req.dns_names, ["n1"]);
    assert_eq!(req.ip_addresses, ips);
    assert_eq!(parse_request(b"hello"), Err(CsrError::NotPem));
    let cert = ca().0;
    assert_eq!(parse_request(cert.as_bytes()), Err(CsrError::NotPem));
    // One bit of the signed part flipped: the signature no longer matches.
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    let mut der = block.contents.clone();
    let i = der.len() / 3;
    der[i] ^= 1;
    let tampered = pem_encode("CERTIFICATE REQUEST", &der);
    assert!(parse_request(tampered.as_bytes()).is_err());
}

#[test]
fn signers_accept_only_the_usages_and_subjects_kubernetes_allows() {
    let (pem, _) = new_request("jane", &["dev"], &[], &[]).expect("csr");
    let jane = parse_request(pem.as_bytes()).expect("parse");
    let client = usages(&["client auth", "digital signature", "key encipherment"]);
    assert_eq!(recognize(KUBE_APISERVER_CLIENT, &jane, &client), Ok(true));
    assert_eq!(
        recognize(
            KUBE_APISERVER_CLIENT,
            &jane,
            &usages(&["client auth", "server auth"])
        ),
        Err("invalid usage for client certificate: server auth".into())
    );
    assert_eq!(
        recognize(
            KUBE_APISERVER_CLIENT,
            &jane,
            &usages(&["digital signature"])
        ),
        Err("missing required usage for client certificate: client auth".into())
    );
    assert_eq!(recognize("example.com/other", &jane, &client), Ok(false));
    assert_eq!(
        recognize(KUBE_APISERVER_CLIENT_KUBELET, &jane, &client),
        Err("subject organization is not system:nodes".into())
    );
    let (pem, _) = new_request("system:node:n1", &["system:nodes"], &[], &[]).expect("csr");
    let node = parse_request(pem.as_bytes()).expect("parse");
    assert_eq!(
        recognize(KUBE_APISERVER_CLIENT_KUBELET, &node, &client),
        Ok(true)
    );
    assert_eq!(
        recognize(
            KUBE_APISERVER_CLIENT_KUBELET,
            &node,
            &usages(&["client auth"])
        ),
        Err("usages did not match [client auth digital signature key encipherment]".into())
    );
    let serving = usages(&["digital signature", "key encipherment", "server auth"]);
    assert_eq!(
        recognize(KUBELET_SERVING, &node, &serving),
        Err("DNS or IP subjectAltName is required".into())
    );
}

#[test]
fn durations_honour_the_request_within_ten_minutes_and_the_maximum() {
    let max = Duration::from_secs(3600);
    assert_eq!(duration(max, None), max);
    assert_eq!(duration(max, Some(60)), MIN_SIGNING_DURATION);
    assert_eq!(duration(max, Some(1800)), Duration::from_secs(1800));
    assert_eq!(duration(max, Some(86400)), max);
    assert_eq!(duration(max, Some(-5)), MIN_SIGNING_DURATION);
}

#[test]
fn issued_certificates_carry_the_request_verbatim_and_chain_to_the_ca() {
    let (ca_pem, ca_key) = ca();
    let signer = SigningCa::from_pem(&ca_pem, &ca_key).expect("signer");
    let req = multi_org_request();
    let now = SystemTime::now();
    let cert_pem = signer
        .sign(
            &req,
            &usages(&["client auth", "digital signature", "key encipherment"]),
            Duration::from_secs(1800),
            now,
        )
        .expect("sign");
    let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).expect("pem");
    let cert = block.parse_x509().expect("x509");
    let orgs: Vec<&str> = cert
        .subject()
        .iter_organization()
        .map(|o| o.as_str().expect("utf8"))
        .collect();
    assert_eq!(orgs, ["dev", "ops"]);
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok()),
        Some("jane")
    );
    let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(life, 1800, "a 30-minute certificate is not backdated");
    let eku = cert.extended_key_usage().expect("eku").expect("present");
    assert!(eku.value.client_auth && !eku.value.server_auth);
    let ku = cert.key_usage().expect("ku").expect("present");
    assert!(
        ku.value.digital_signature() && ku.value.key_encipherment() && !ku.value.key_cert_sign()
    );
    assert!(!cert.is_ca());
    // Signed by the CA's key: verified with the CA's public key.
    let (_, ca_block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).expect("pem");
    let ca_cert = ca_block.parse_x509().expect("ca");
    cert.verify_signature(Some(ca_cert.public_key()))
        .expect("signed by the CA");
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    // rustls (what the API server's client verifier uses) accepts it as a client cert.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ca_block.contents.clone(),
        ))
        .expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let leaf = rustls::pki_types::CertificateDer::from(block.contents.clone());
    verifier
        .verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now())
        .expect("a valid client certificate");
}

#[test]
fn long_certificates_are_backdated_and_none_outlives_the_ca() {
    let (ca_pem, ca_key) = ca();
    let signer = SigningCa::from_pem(&ca_pem, &ca_key).expect("signer");
    let req = multi_org_request();
    let now = SystemTime::now();
    let u = usages(&["client auth"]);
    let pem = signer
        .sign(&req, &u, DEFAULT_SIGNING_DURATION, now)
        .expect("sign");
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    let cert = block.parse_x509().expect("x509");
    let unix = now.duration_since(UNIX_EPOCH).expect("time").as_secs() as i64;
    assert_eq!(cert.validity().not_before.timestamp(), unix - 300);
    assert_eq!(
        cert.validity().not_after.timestamp(),
        unix + DEFAULT_SIGNING_DURATION.as_secs() as i64
    );
    // A CA that ends in an hour caps a year-long certificate at its own end.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let end = unix + 3600;
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(end as u64);
    let short_ca = params.self_signed(&key).expect("ca");
    let signer = SigningCa::from_pem(&short_ca.pem(), &key.serialize_pem()).expect("signer");
    let pem = signer
        .sign(&req, &u, DEFAULT_SIGNING_DURATION, now)
        .expect("sign");
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    assert_eq!(
        block
            .parse_x509()
            .expect("x509")
            .validity()
            .not_after
            .timestamp(),
        end
    );
}
