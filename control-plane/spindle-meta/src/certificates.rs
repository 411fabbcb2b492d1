//! Certificate signing requests (certificates.k8s.io) as Kubernetes' signers see them:
//! parsing and checking a PKCS#10 request, the rules each `kubernetes.io/*` signer applies
//! to it, how long the issued certificate lives, and the signing itself with the cluster
//! CA. The API server validates with [`parse_request`], the controllers sign with
//! [`SigningCa`], and agents make their requests with [`new_request`].
//!
//! The certificate copies the request's subject and public key verbatim (as Go's
//! `x509.CreateCertificate` does from a CSR), so a subject with several O (groups) keeps
//! them all; that is why it is written here with DER rather than through rcgen's
//! parameters, whose distinguished names hold one value per attribute type.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use yasna::models::ObjectIdentifier;
use yasna::{Tag, TagClass};

/// Client certificates for the API server, for any user.
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// Client certificates of kubelets (`system:node:<name>` in `system:nodes`).
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Serving certificates of kubelets.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The v1beta1 default, refused by the v1 API.
pub const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// The prefix of a node's user name, and the group every node is in.
pub const NODE_USER_PREFIX: &str = "system:node:";
pub const NODES_GROUP: &str = "system:nodes";

/// kube-controller-manager's `--cluster-signing-duration` default: a year.
pub const DEFAULT_SIGNING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest certificate a signer issues (twice the hard-coded clock skew allowance).
pub const MIN_SIGNING_DURATION: Duration = Duration::from_secs(600);
/// How far back a long-lived certificate's notBefore goes, for clocks slightly behind.
const BACKDATE: Duration = Duration::from_secs(300);
/// Certificates up to this long are not backdated (their life is mostly the backdate).
const SHORT: Duration = Duration::from_secs(8 * 3600);

/// Every key usage certificates.k8s.io knows, in Kubernetes' sorted order.
pub const ALL_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("PEM block type must be CERTIFICATE REQUEST")]
    NotPem,
    #[error("x509: malformed certificate request: {0}")]
    Malformed(String),
    #[error("x509: signature of the certificate request is invalid")]
    Signature,
}

/// A parsed, signature-checked certificate request: what the signers look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
    subject_der: Vec<u8>,
    public_key_der: Vec<u8>,
}

/// Parse the first PEM block of `pem` as a `CERTIFICATE REQUEST` and check its signature
/// (Kubernetes' `ParseCSR` followed by `CheckSignature`).
pub fn parse_request(pem: &[u8]) -> Result<Request, CsrError> {
    let block = match x509_parser::pem::parse_x509_pem(pem) {
        Ok((_, p)) if p.label == "CERTIFICATE REQUEST" => p,
        _ => return Err(CsrError::NotPem),
    };
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
    csr.verify_signature().map_err(|_| CsrError::Signature)?;
    let info = &csr.certification_request_info;
    let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        a.as_str()
            .map(str::to_string)
            .map_err(|e| CsrError::Malformed(e.to_string()))
    };
    let common_name = match info.subject.iter_common_name().next() {
        Some(cn) => text(cn)?,
        None => String::new(),
    };
    let organizations = info
        .subject
        .iter_organization()
        .map(text)
        .collect::<Result<Vec<_>, _>>()?;
    let mut req = Request {
        common_name,
        organizations,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        emails: Vec::new(),
        uris: Vec::new(),
        subject_der: info.subject.as_raw().to_vec(),
        public_key_der: info.subject_pki.raw.to_vec(),
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(d) => req.dns_names.push(d.to_string()),
                GeneralName::RFC822Name(e) => req.emails.push(e.to_string()),
                GeneralName::URI(u) => req.uris.push(u.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => req
                        .ip_addresses
                        .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => req
                        .ip_addresses
                        .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => return Err(CsrError::Malformed("invalid IP address SAN".into())),
                },
                _ => {}
            }
        }
    }
    Ok(req)
}

fn has_all(usages: &[String], want: &[&str]) -> bool {
    let mut u: Vec<&str> = usages.iter().map(String::as_str).collect();
    u.sort_unstable();
    u.dedup();
    let mut w = want.to_vec();
    w.sort_unstable();
    u == w
}

fn node_subject(req: &Request) -> Result<(), String> {
    if req.organizations != [NODES_GROUP] {
        return Err("subject organization is not system:nodes".into());
    }
    if !req.common_name.starts_with(NODE_USER_PREFIX) {
        return Err(format!(
            "subject common name does not begin with {NODE_USER_PREFIX}"
        ));
    }
    if !req.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    Ok(())
}

/// kube-controller-manager's `ValidateKubeletClientCSR`.
pub fn validate_kubelet_client(req: &Request, usages: &[String]) -> Result<(), String> {
    node_subject(req)?;
    if !req.dns_names.is_empty() {
        return Err("DNS subjectAltNames are not allowed".into());
    }
    if !req.ip_addresses.is_empty() {
        return Err("IP subjectAltNames are not allowed".into());
    }
    let full = ["client auth", "digital signature", "key encipherment"];
    if !has_all(usages, &full) && !has_all(usages, &["client auth", "digital signature"]) {
        return Err(format!("usages did not match {}", go_list(&full)));
    }
    Ok(())
}

/// kube-controller-manager's `ValidateKubeletServingCSR`.
pub fn validate_kubelet_serving(req: &Request, usages: &[String]) -> Result<(), String> {
    node_subject(req)?;
    if req.dns_names.is_empty() && req.ip_addresses.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    let full = ["digital signature", "key encipherment", "server auth"];
    if !has_all(usages, &full) && !has_all(usages, &["digital signature", "server auth"]) {
        return Err(format!("usages did not match {}", go_list(&full)));
    }
    Ok(())
}

/// `kubernetes.io/kube-apiserver-client`: client auth required; digital signature and
/// key encipherment allowed; nothing else.
fn validate_apiserver_client_usages(usages: &[String]) -> Result<(), String> {
    let mut client_auth = false;
    for u in usages {
        match u.as_str() {
            "digital signature" | "key encipherment" => {}
            "client auth" => client_auth = true,
            other => return Err(format!("invalid usage for client certificate: {other}")),
        }
    }
    if !client_auth {
        return Err("missing required usage for client certificate: client auth".into());
    }
    Ok(())
}

fn go_list(items: &[&str]) -> String {
    format!("[{}]", items.join(" "))
}

/// What a built-in signer makes of a request: `Ok(false)` when the signer is not one
/// this cluster signs for (left alone), `Ok(true)` when it will sign, and `Err` (the
/// Failed condition's message) when the request does not fit the signer.
pub fn recognize(signer: &str, req: &Request, usages: &[String]) -> Result<bool, String> {
    match signer {
        KUBE_APISERVER_CLIENT => validate_apiserver_client_usages(usages).map(|()| true),
        KUBE_APISERVER_CLIENT_KUBELET => validate_kubelet_client(req, usages).map(|()| true),
        KUBELET_SERVING => validate_kubelet_serving(req, usages).map(|()| true),
        _ => Ok(false),
    }
}

/// The life of an issued certificate: the requested `expirationSeconds` within
/// [`MIN_SIGNING_DURATION`] and the signer's `max`; `max` when none was requested.
pub fn duration(max: Duration, expiration_seconds: Option<i64>) -> Duration {
    match expiration_seconds {
        None => max,
        Some(s) => {
            let requested = Duration::from_secs(u64::try_from(s).unwrap_or(0));
            requested.clamp(MIN_SIGNING_DURATION, max.max(MIN_SIGNING_DURATION))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("parsing the signing CA: {0}")]
    Ca(String),
    #[error("signing: {0}")]
    Sign(String),
}

/// The cluster CA as a signer (kube-controller-manager's `--cluster-signing-cert-file`
/// and `--cluster-signing-key-file`).
pub struct SigningCa {
    subject_der: Vec<u8>,
    key_id: Option<Vec<u8>>,
    not_after: i64,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCa")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

const OID_ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];

impl SigningCa {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<SigningCa, SignError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| SignError::Ca(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| SignError::Ca(e.to_string()))?;
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| SignError::Ca(e.to_string()))?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(SignError::Ca("the CA key must be ECDSA P-256".into()));
        }
        let key_id = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        Ok(SigningCa {
            subject_der: cert.subject().as_raw().to_vec(),
            key_id,
            not_after: cert.validity().not_after.timestamp(),
            key,
        })
    }

    /// Issue a certificate for `req` with `usages`, valid for `ttl` from `now` (not past
    /// the CA's own expiry); PEM.
    pub fn sign(
        &self,
        req: &Request,
        usages: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, SignError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|e| SignError::Sign(e.to_string()))?
            .as_secs() as i64;
        let backdate = if ttl <= SHORT {
            0
        } else {
            BACKDATE.as_secs() as i64
        };
        let not_before = now - backdate;
        let not_after = (now + ttl.as_secs() as i64).min(self.not_after);
        let serial: [u8; 16] = rand::random();
        let sig_alg = |w: yasna::DERWriter<'_>| {
            w.write_sequence(|w| {
                w.next()
                    .write_oid(&ObjectIdentifier::from_slice(OID_ECDSA_SHA256))
            })
        };
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_tagged(Tag::context(0), |w| w.write_u8(2));
                w.next().write_bigint_bytes(&serial, true);
                sig_alg(w.next());
                w.next().write_der(&self.subject_der);
                w.next().write_sequence(|w| {
                    write_time(w.next(), not_before);
                    write_time(w.next(), not_after);
                });
                w.next().write_der(&req.subject_der);
                w.next().write_der(&req.public_key_der);
                w.next().write_tagged(Tag::context(3), |w| {
                    w.write_sequence(|w| self.write_extensions(w, req, usages))
                });
            })
        });
        let sig =
            rcgen::SigningKey::sign(&self.key, &tbs).map_err(|e| SignError::Sign(e.to_string()))?;
        let der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                sig_alg(w.next());
                w.next().write_bitvec_bytes(&sig, sig.len() * 8);
            })
        });
        Ok(pem_encode("CERTIFICATE", &der))
    }

    fn write_extensions(&self, w: &mut yasna::DERWriterSeq<'_>, req: &Request, usages: &[String]) {
        let ext = |w: yasna::DERWriter<'_>, oid: &[u64], critical: bool, value: Vec<u8>| {
            w.write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                if critical {
                    w.next().write_bool(true);
                }
                w.next().write_bytes(&value);
            })
        };
        let (ku, eku) = key_usages(usages);
        if ku != 0 {
            // A BIT STRING of the 9 KeyUsage bits, trailing zero bits dropped.
            let bits = 16 - ku.trailing_zeros() as usize;
            let bytes = ku.to_be_bytes();
            let value =
                yasna::construct_der(|w| w.write_bitvec_bytes(&bytes[..bits.div_ceil(8)], bits));
            ext(w.next(), &[2, 5, 29, 15], true, value);
        }
        if !eku.is_empty() {
            let value = yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    for oid in &eku {
                        w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                    }
                })
            });
            ext(w.next(), &[2, 5, 29, 37], false, value);
        }
        // Not a CA.
        ext(
            w.next(),
            &[2, 5, 29, 19],
            true,
            yasna::construct_der(|w| w.write_sequence(|_| {})),
        );
        if let Some(id) = &self.key_id {
            let value = yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next()
                        .write_tagged_implicit(Tag::context(0), |w| w.write_bytes(id))
                })
            });
            ext(w.next(), &[2, 5, 29, 35], false, value);
        }
        if !(req.dns_names.is_empty()
            && req.ip_addresses.is_empty()
            && req.emails.is_empty()
            && req.uris.is_empty())
        {
            let value = yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    let ia5 = |w: yasna::DERWriter<'_>, n: u64, s: &str| {
                        w.write_tagged_implicit(Tag::context(n), |w| w.write_ia5_string(s))
                    };
                    for e in &req.emails {
                        ia5(w.next(), 1, e);
                    }
                    for d in &req.dns_names {
                        ia5(w.next(), 2, d);
                    }
                    for u in &req.uris {
                        ia5(w.next(), 6, u);
                    }
                    for ip in &req.ip_addresses {
                        let bytes = match ip {
                            IpAddr::V4(a) => a.octets().to_vec(),
                            IpAddr::V6(a) => a.octets().to_vec(),
                        };
                        w.next()
                            .write_tagged_implicit(Tag::context(7), |w| w.write_bytes(&bytes));
                    }
                })
            });
            ext(w.next(), &[2, 5, 29, 17], false, value);
        }
    }
}

/// The KeyUsage bits (bit 0 = digitalSignature as the most significant bit of a u16) and
/// the ExtendedKeyUsage OIDs that certificates.k8s.io usages stand for.
fn key_usages(usages: &[String]) -> (u16, Vec<&'static [u64]>) {
    let mut ku = 0u16;
    let mut eku: Vec<&'static [u64]> = Vec::new();
    let bit = |n: u32| 0x8000u16 >> n;
    for u in usages {
        match u.as_str() {
            "signing" | "digital signature" => ku |= bit(0),
            "content commitment" => ku |= bit(1),
            "key encipherment" => ku |= bit(2),
            "data encipherment" => ku |= bit(3),
            "key agreement" => ku |= bit(4),
            "cert sign" => ku |= bit(5),
            "crl sign" => ku |= bit(6),
            "encipher only" => ku |= bit(7),
            "decipher only" => ku |= bit(8),
            other => {
                let oid: &'static [u64] = match other {
                    "any" => &[2, 5, 29, 37, 0],
                    "server auth" => &[1, 3, 6, 1, 5, 5, 7, 3, 1],
                    "client auth" => &[1, 3, 6, 1, 5, 5, 7, 3, 2],
                    "code signing" => &[1, 3, 6, 1, 5, 5, 7, 3, 3],
                    "email protection" | "s/mime" => &[1, 3, 6, 1, 5, 5, 7, 3, 4],
                    "ipsec end system" => &[1, 3, 6, 1, 5, 5, 7, 3, 5],
                    "ipsec tunnel" => &[1, 3, 6, 1, 5, 5, 7, 3, 6],
                    "ipsec user" => &[1, 3, 6, 1, 5, 5, 7, 3, 7],
                    "timestamping" => &[1, 3, 6, 1, 5, 5, 7, 3, 8],
                    "ocsp signing" => &[1, 3, 6, 1, 5, 5, 7, 3, 9],
                    "microsoft sgc" => &[1, 3, 6, 1, 4, 1, 311, 10, 3, 3],
                    "netscape sgc" => &[2, 16, 840, 1, 113730, 4, 1],
                    _ => continue,
                };
                if !eku.contains(&oid) {
                    eku.push(oid);
                }
            }
        }
    }
    (ku, eku)
}

/// UTCTime through 2049, GeneralizedTime after, as RFC 5280 says.
fn write_time(w: yasna::DERWriter<'_>, unix: i64) {
    let t = chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default();
    let (tag, text) = if t.format("%Y").to_string().as_str() < "2050" {
        (23, t.format("%y%m%d%H%M%SZ").to_string())
    } else {
        (24, t.format("%Y%m%d%H%M%SZ").to_string())
    };
    w.write_tagged_implicit(
        Tag {
            tag_class: TagClass::Universal,
            tag_number: tag,
        },
        |w| w.write_bytes(text.as_bytes()),
    );
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A new key and a PEM certificate request for it (as the kubelet makes for its client
/// and serving certificates): `(request PEM, private key PEM)`.
pub fn new_request(
    common_name: &str,
    organizations: &[&str],
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let mut dn = rcgen::DistinguishedName::new();
    // rcgen keeps one value per attribute type: one organization at most (nodes have one).
    if let Some(o) = organizations.first() {
        dn.push(rcgen::DnType::OrganizationName, *o);
    }
    dn.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = dn;
    for d in dns_names {
        params
            .subject_alt_names
            .push(rcgen::SanType::DnsName(d.as_str().try_into()?));
    }
    for ip in ips {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

#[cfg(test)]
mod tests;
