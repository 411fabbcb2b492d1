//! CertificateSigningRequests (`pkg/apis/certificates/validation`): the request must be a
//! signed PEM `CERTIFICATE REQUEST`, the signer name a domain and a path, the usages
//! known and unique, `expirationSeconds` at least ten minutes; the conditions and the
//! issued certificate follow the rules of whichever subresource writes them.

use base64::Engine;
use serde_json::{json, Value};
use spindle_meta::certificates::{parse_request, ALL_USAGES, LEGACY_UNKNOWN};

use super::{idx, is_dns1123_label, FieldError, LABEL_MSG};

/// The bytes of a `[]byte` field (base64 in JSON); None when absent or not base64 (the
/// decoder refuses the latter before validation).
pub(crate) fn bytes_at(obj: &Value, pointer: &str) -> Option<Vec<u8>> {
    let s = obj.pointer(pointer)?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Go's `%#v` of a byte slice, as field errors about `[]byte` fields print their value.
fn go_bytes(b: &[u8]) -> String {
    let parts: Vec<String> = b.iter().map(|x| format!("{x:#x}")).collect();
    format!("[]byte{{{}}}", parts.join(", "))
}

pub(crate) fn validate_certificate_signing_request(obj: &Value, errs: &mut Vec<FieldError>) {
    let request = bytes_at(obj, "/spec/request").unwrap_or_default();
    if let Err(e) = parse_request(&request) {
        errs.push(FieldError {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {}: {e}", go_bytes(&request)),
            field: "spec.request".into(),
        });
    }
    let usages: Vec<&Value> = obj
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if usages.is_empty() {
        errs.push(FieldError::required("spec.usages"));
    }
    for (i, u) in usages.iter().enumerate() {
        if !u.as_str().is_some_and(|s| ALL_USAGES.contains(&s)) {
            errs.push(FieldError::not_supported(
                &idx("spec.usages", i),
                u,
                ALL_USAGES,
            ));
        }
    }
    for (i, u) in usages.iter().enumerate() {
        if usages[..i].contains(u) {
            errs.push(FieldError::duplicate(&idx("spec.usages", i), u));
        }
    }
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if signer == LEGACY_UNKNOWN {
        errs.push(FieldError::invalid(
            "spec.signerName",
            &json!(signer),
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        validate_signer_name("spec.signerName", signer, errs);
    }
    if let Some(s) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
    {
        if s < 600 {
            errs.push(FieldError::invalid(
                "spec.expirationSeconds",
                &json!(s),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    validate_conditions(obj, errs);
    validate_certificate(obj, errs);
}

/// `ValidateSignerName`: `<domain with a dot>/<path>`.
fn validate_signer_name(field: &str, signer: &str, errs: &mut Vec<FieldError>) {
    if signer.is_empty() {
        errs.push(FieldError::required(field));
        return;
    }
    let Some((domain, path)) = signer.split_once('/').filter(|(_, p)| !p.contains('/')) else {
        errs.push(FieldError::invalid(
            field,
            &json!(signer),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return;
    };
    if domain.len() > 253 {
        errs.push(FieldError {
            reason: "FieldValueTooLong".into(),
            message: "Too long: may not be more than 253 bytes".into(),
            field: field.into(),
        });
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if let Some(bad) = labels.iter().find(|l| !is_dns1123_label(l)) {
        errs.push(FieldError::invalid(
            field,
            &json!(domain),
            &format!("validating label \"{bad}\": {LABEL_MSG}"),
        ));
    }
    if labels.len() < 2 {
        errs.push(FieldError::invalid(
            field,
            &json!(domain),
            "should be a domain with at least two segments separated by dots",
        ));
    }
    if !path.split('.').all(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) || path.len() > 253
    {
        errs.push(FieldError::invalid(
            field,
            &json!(path),
            "validating path: must consist of valid path segments (alphanumeric characters, '-' and '_', separated by '.')",
        ));
    }
}

fn conditions(obj: &Value) -> &[Value] {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Condition types, the True status of Approved and Denied, and that the two exclude
/// each other.
fn validate_conditions(obj: &Value, errs: &mut Vec<FieldError>) {
    let conds = conditions(obj);
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conds.iter().enumerate() {
        let path = idx("status.conditions", i);
        let t = c["type"].as_str().unwrap_or("");
        if t.is_empty() {
            errs.push(FieldError::required(&format!("{path}.type")));
        }
        let status = c["status"].as_str().unwrap_or("");
        match t {
            "Approved" | "Denied" if status != "True" => errs.push(FieldError::not_supported(
                &format!("{path}.status"),
                &json!(status),
                &["True"],
            )),
            _ if !matches!(status, "True" | "False" | "Unknown") => {
                errs.push(FieldError::not_supported(
                    &format!("{path}.status"),
                    &json!(status),
                    &["False", "True", "Unknown"],
                ))
            }
            _ => {}
        }
        if matches!(t, "Approved" | "Denied" | "Failed") && seen.contains(&t) {
            errs.push(FieldError::duplicate(&format!("{path}.type"), &json!(t)));
        }
        seen.push(t);
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        errs.push(FieldError::invalid(
            "status.conditions",
            &json!("Denied"),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
}

fn has_condition(obj: &Value, t: &str) -> bool {
    conditions(obj)
        .iter()
        .any(|c| c["type"] == t && c["status"] == "True")
}

/// An issued certificate: PEM CERTIFICATE blocks only, and only once approved and not
/// failed.
fn validate_certificate(obj: &Value, errs: &mut Vec<FieldError>) {
    let cert = bytes_at(obj, "/status/certificate").unwrap_or_default();
    if cert.is_empty() {
        return;
    }
    let invalid = |detail: &str| {
        FieldError::invalid("status.certificate", &json!("<certificate data>"), detail)
    };
    let mut rest: &[u8] = &cert;
    let mut blocks = 0;
    while !rest.iter().all(u8::is_ascii_whitespace) {
        match x509_block(rest) {
            Ok(r) => {
                rest = r;
                blocks += 1;
            }
            Err(e) => {
                errs.push(invalid(&e));
                return;
            }
        }
    }
    if blocks == 0 {
        errs.push(invalid("must contain at least one CERTIFICATE PEM block"));
    }
    if !has_condition(obj, "Approved") {
        errs.push(FieldError::forbidden(
            "status.certificate",
            "updates may not set certificate content unless the Approved condition is present",
        ));
    }
    if has_condition(obj, "Failed") {
        errs.push(FieldError::forbidden(
            "status.certificate",
            "updates may not set certificate content if a Failed condition is present",
        ));
    }
}

fn x509_block(pem: &[u8]) -> Result<&[u8], String> {
    let text = std::str::from_utf8(pem).map_err(|_| "must be PEM-encoded".to_string())?;
    let start = text.find("-----BEGIN ").ok_or("must be PEM-encoded")?;
    let label_end = text[start..]
        .find("-----\n")
        .or_else(|| text[start..].find("-----\r\n"))
        .ok_or("must be PEM-encoded")?;
    let label = &text[start + 11..start + label_end];
    if label != "CERTIFICATE" {
        return Err(format!(
            "only CERTIFICATE PEM blocks are allowed, found \"{label}\""
        ));
    }
    let end_marker = "-----END CERTIFICATE-----";
    let end = text[start..]
        .find(end_marker)
        .ok_or("must be PEM-encoded")?
        + start
        + end_marker.len();
    Ok(&pem[end..])
}

/// What the main resource, `/status` and `/approval` may change of the conditions and the
/// certificate (the spec never changes: the strategies keep the stored one).
pub(crate) fn validate_certificate_signing_request_update(
    sub: Option<&str>,
    old: &Value,
    new: &Value,
    errs: &mut Vec<FieldError>,
) {
    for t in ["Approved", "Denied"] {
        let (before, after) = (has_condition(old, t), has_condition(new, t));
        match sub {
            Some("status") if before != after => errs.push(FieldError::forbidden(
                "status.conditions",
                &format!(
                    "updates may not {} a condition of type \"{t}\"",
                    if after { "add" } else { "remove" }
                ),
            )),
            Some("approval") if before && !after => errs.push(FieldError::forbidden(
                "status.conditions",
                &format!("updates may not remove a condition of type \"{t}\""),
            )),
            _ => {}
        }
    }
    let (before, after) = (
        bytes_at(old, "/status/certificate").unwrap_or_default(),
        bytes_at(new, "/status/certificate").unwrap_or_default(),
    );
    if !before.is_empty() && before != after {
        errs.push(FieldError::forbidden(
            "status.certificate",
            "updates may not modify existing certificate content",
        ));
    }
}
