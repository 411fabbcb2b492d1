//! `certificates.k8s.io/v1` CertificateSigningRequest, which kubectl 1.32+ sends as
//! protobuf both on create and on `kubectl certificate approve|deny` (a PUT of the whole
//! object to `/approval`, whose point is the status conditions: so unlike other kinds
//! the status is converted too).

use k8s_pb::api::certificates::v1 as certificates;

use crate::json::{base64_std, Obj, Res, ToJson};

impl ToJson for certificates::CertificateSigningRequest {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .msg("spec", &self.spec)?
            .msg("status", &self.status)?;
        Ok(o.finish())
    }
}

impl ToJson for certificates::CertificateSigningRequestSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        // `request` has no omitempty in the Go type.
        o.set(
            "request",
            base64_std(self.request.as_deref().unwrap_or_default()).into(),
        )
        .str_req("signerName", &self.signer_name)
        .num("expirationSeconds", self.expiration_seconds)
        .strs("usages", &self.usages)
        .str("username", &self.username)
        .str("uid", &self.uid)
        .strs("groups", &self.groups);
        if !self.extra.is_empty() {
            let extra = self
                .extra
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v.items)))
                .collect();
            o.set("extra", serde_json::Value::Object(extra));
        }
        Ok(o.finish())
    }
}

impl ToJson for certificates::CertificateSigningRequestStatus {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs("conditions", &self.conditions)?;
        if let Some(c) = self.certificate.as_deref().filter(|c| !c.is_empty()) {
            o.set("certificate", base64_std(c).into());
        }
        Ok(o.finish())
    }
}

impl ToJson for certificates::CertificateSigningRequestCondition {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("type", &self.r#type)
            .str_req("status", &self.status)
            .str("reason", &self.reason)
            .str("message", &self.message)
            .time("lastUpdateTime", &self.last_update_time)?
            .time("lastTransitionTime", &self.last_transition_time)?;
        Ok(o.finish())
    }
}
