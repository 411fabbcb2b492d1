//! Services: ports, types, and what an update may not change.

use serde_json::{json, Value};

use super::pod::{validate_port, validate_protocol};
use super::{is_dns1123_label, str_at, FieldError, LABEL_MSG};

pub(crate) fn validate_service(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        errs.push(FieldError::not_supported(
            "spec.type",
            &json!(ty),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports"));
    }
    if ty == "ExternalName" && str_at(&spec, "externalName").is_none() {
        errs.push(FieldError::required("spec.externalName"));
    }
    let mut names = Vec::new();
    let mut seen_ports: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        // Two entries for one port and protocol would program the same proxy rule twice.
        let key = (
            p.get("port").and_then(Value::as_i64).unwrap_or(0),
            p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
        );
        if seen_ports.contains(&key) {
            errs.push(duplicate_service_port(&f, key));
        }
        seen_ports.push(key);
        validate_port(
            p.get("port").unwrap_or(&Value::Null),
            &format!("{f}.port"),
            errs,
        );
        validate_protocol(p, &format!("{f}.protocol"), errs);
        if let Some(tp) = p.get("targetPort") {
            match tp {
                Value::Number(_) => validate_port(tp, &format!("{f}.targetPort"), errs),
                Value::String(s) if !s.is_empty() && !is_dns1123_label(s) => errs.push(
                    FieldError::invalid(&format!("{f}.targetPort"), tp, LABEL_MSG),
                ),
                _ => {}
            }
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            if np != 0 && !(30000..=32767).contains(&np) {
                errs.push(FieldError::invalid(&format!("{f}.nodePort"), &json!(np), "provided port is not in the valid range. The range of valid ports is 30000-32767"));
            }
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(&format!("{f}.name")));
        }
        if !name.is_empty() {
            if names.contains(&name.to_string()) {
                errs.push(FieldError::duplicate(&format!("{f}.name"), &json!(name)));
            }
            names.push(name.to_string());
        }
    }
}

/// Kubernetes' duplicate-port error, which prints the key it compared (a ServicePort with
/// only protocol and port set) in Go syntax.
fn duplicate_service_port(field: &str, (port, protocol): (i64, &str)) -> FieldError {
    FieldError {
        reason: "FieldValueDuplicate".into(),
        message: format!(
            "Duplicate value: core.ServicePort{{Name:\"\", Protocol:\"{protocol}\", AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}"
        ),
        field: field.into(),
    }
}

/// Whether a Service is an ExternalName one (which has no cluster IPs).
pub fn is_external_name(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName")
}

/// The addresses a Service holds: `spec.clusterIPs`, or `spec.clusterIP` alone as older
/// clients send it.
pub fn cluster_ips(svc: &Value) -> Vec<&str> {
    let ips: Vec<&str> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !ips.is_empty() {
        return ips;
    }
    svc.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

/// What an update of a Service may not change (Kubernetes' `ValidateServiceUpdate`): its
/// cluster IPs, once set. Only a change to or from ExternalName (which has none) may. A
/// changed address would move the proxy's rules to any address at all, host traffic
/// included, without the range check and reservation that creation does.
pub fn validate_service_update(old: &Value, new: &Value) -> Vec<FieldError> {
    if is_external_name(old) || is_external_name(new) {
        return Vec::new();
    }
    let (old_ips, new_ips) = (cluster_ips(old), cluster_ips(new));
    let shown = Value::from(new_ips.clone());
    let mut errs = Vec::new();
    if !old_ips.is_empty() && new_ips.is_empty() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &shown,
            "primary clusterIP can not be unset",
        ));
    }
    for (i, (o, n)) in old_ips.iter().zip(&new_ips).enumerate() {
        if o != n {
            errs.push(FieldError::invalid(
                &format!("spec.clusterIPs[{i}]"),
                &shown,
                "may not change once set",
            ));
        }
    }
    if let (Some(first), Some(single)) = (
        new_ips.first(),
        new.pointer("/spec/clusterIP").and_then(Value::as_str),
    ) {
        if !single.is_empty() && single != *first {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                &shown,
                "first value must match `clusterIP`",
            ));
        }
    }
    errs
}
