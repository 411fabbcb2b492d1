//! CertificateSigningRequests (kube-apiserver's `registry/certificates/certificates`): the
//! requesting user is written into the spec and nobody else can set it; the spec never
//! changes after creation; `/approval` changes only the conditions (kubectl certificate
//! approve|deny), `/status` only the rest of the status (the signer's certificate and
//! Failed condition), never the Approved or Denied ones.

use serde_json::{json, Map, Value};

use super::{empty_status, Strategy, Subresource, UserInfo};
use crate::validation::{
    validate_certificate_signing_request, validate_certificate_signing_request_update, FieldError,
    NameRule,
};

pub struct CertificateSigningRequests;

const APPROVAL: Subresource = Subresource {
    name: "approval",
    group: "certificates.k8s.io",
    version: "v1",
    kind: "CertificateSigningRequest",
    verbs: &["get", "patch", "update"],
    connect: false,
};

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The stored spec, whatever the update says.
fn keep_spec(old: &Value, new: &mut Value) {
    if let Some(m) = new.as_object_mut() {
        match old.get("spec") {
            Some(s) => m.insert("spec".into(), s.clone()),
            None => m.remove("spec"),
        };
    }
}

/// Conditions without times get them: lastUpdateTime now, lastTransitionTime from the
/// old condition of the same type and status, else now (`populateConditionTimestamps`).
fn populate_condition_timestamps(old: &Value, new: &mut Value) {
    let old_conds = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(conds) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let now = now();
    for c in conds.iter_mut() {
        let Some(m) = c.as_object_mut() else { continue };
        if m.get("lastUpdateTime").is_none_or(Value::is_null) {
            m.insert("lastUpdateTime".into(), json!(now));
        }
        if m.get("lastTransitionTime").is_none_or(Value::is_null) {
            let before = old_conds
                .iter()
                .find(|o| o["type"] == m["type"] && o["status"] == m["status"])
                .and_then(|o| o.get("lastTransitionTime"))
                .filter(|t| !t.is_null())
                .cloned();
            m.insert(
                "lastTransitionTime".into(),
                before.unwrap_or_else(|| json!(now)),
            );
        }
    }
}

impl Strategy for CertificateSigningRequests {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        validate_certificate_signing_request(obj, errs);
    }

    // Users cannot create pre-approved (or pre-issued) requests.
    fn prepare_for_create(&self, obj: &mut Map<String, Value>) {
        empty_status(obj);
    }

    fn set_requestor(&self, obj: &mut Map<String, Value>, user: &UserInfo<'_>) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        spec.insert("username".into(), json!(user.name));
        if user.uid.is_empty() {
            spec.remove("uid");
        } else {
            spec.insert("uid".into(), json!(user.uid));
        }
        if user.groups.is_empty() {
            spec.remove("groups");
        } else {
            spec.insert("groups".into(), json!(user.groups));
        }
        // Extra holds what the authenticator said besides user, uid and groups: nothing.
        spec.remove("extra");
    }

    fn prepare_for_update(&self, old: &Value, new: &mut Value) {
        keep_spec(old, new);
    }

    fn prepare_for_subresource_update(&self, sub: &str, old: &Value, new: &mut Value) {
        keep_spec(old, new);
        if sub == "approval" {
            // Only the conditions: the rest of the status is the stored one.
            let conds = new.pointer("/status/conditions").cloned();
            let mut status = old.get("status").cloned().unwrap_or_else(|| json!({}));
            if let Some(s) = status.as_object_mut() {
                match conds {
                    Some(c) => s.insert("conditions".into(), c),
                    None => s.remove("conditions"),
                };
            }
            if let Some(m) = new.as_object_mut() {
                m.insert("status".into(), status);
            }
        }
        populate_condition_timestamps(old, new);
    }

    fn validate_subresource_update(
        &self,
        sub: &str,
        old: &Value,
        new: &Value,
        errs: &mut Vec<FieldError>,
    ) {
        validate_certificate_signing_request_update(Some(sub), old, new, errs);
    }

    fn subresources(&self) -> &'static [Subresource] {
        &[APPROVAL]
    }
}
