//! The CertificateSigningRequest table (`printCertificateSigningRequest`).

use k8s_openapi::api::certificates;

use super::obj::{human_duration, Obj};
use super::{col, Printer, AGE, NAME, NONE};

/// Approved or Denied (Denied wins) or Pending, then Failed and Issued when they apply
/// (`extractCSRStatus`).
fn condition(o: Obj<'_>) -> String {
    let has = |t: &str| {
        o.list(&["status", "conditions"])
            .iter()
            .any(|c| c["type"] == t)
    };
    let mut s = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        s.push_str(",Failed");
    }
    if !o.str_(&["status", "certificate"]).is_empty() {
        s.push_str(",Issued");
    }
    s
}

pub(super) static CERTIFICATE_SIGNING_REQUEST: Printer = Printer::new(&[
    NAME,
    AGE,
    col(
        "SignerName",
        "string",
        "signerName indicates the requested signer, and is a qualified name.",
        |o, _| {
            let s = o.str_(&["spec", "signerName"]);
            if s.is_empty() { NONE } else { s }.into()
        },
    ),
    col(
        "Requestor",
        "string",
        "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block.",
        |o, _| o.str_(&["spec", "username"]).into(),
    ),
    col(
        "RequestedDuration",
        "string",
        "expirationSeconds is the requested duration of validity of the issued certificate.",
        |o, _| {
            if o.has(&["spec", "expirationSeconds"]) {
                human_duration(chrono::Duration::seconds(o.int(&["spec", "expirationSeconds"]))).into()
            } else {
                NONE.into()
            }
        },
    ),
    col(
        "Condition",
        "string",
        "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".",
        |o, _| condition(o).into(),
    ),
]);

printed! {
    certificates::v1::CertificateSigningRequest => CERTIFICATE_SIGNING_REQUEST,
}
