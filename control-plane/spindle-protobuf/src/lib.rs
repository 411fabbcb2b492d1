//! Decodes Kubernetes protobuf request bodies into Kubernetes JSON.
//!
//! kubectl 1.32+ (client-go v0.32) sends
//! `Content-Type: application/vnd.kubernetes.protobuf` for its typed-client
//! writes (`kubectl create configmap|secret|deployment|…`, and the
//! DeleteOptions of `drain --disable-eviction`) and does not retry with JSON
//! after a 415. This crate owns turning such a body into the
//! `serde_json::Value` the rest of Spindle already handles, so no other crate
//! needs to know about protobuf.
//!
//! The body is the 4-byte magic `k8s\0` followed by a `runtime.Unknown`
//! message: `typeMeta` (field 1: `apiVersion` = 1, `kind` = 2), `raw`
//! (field 2: the object's own `generated.proto` message), `contentEncoding`
//! (3) and `contentType` (4). kubectl 1.32.4's body for `create configmap c2
//! --from-literal=k=v` is
//! `6b387300 0a0f(0a02"v1" 1209"ConfigMap") 121c(raw) 1a00 2200`
//! (see `tests/fixtures/kubectl-1.32/`).
//!
//! `raw` is decoded with the prost types of `k8s-pb` and converted field by
//! field into the JSON form of the API. Covered kinds: v1 ConfigMap, Secret,
//! Namespace, ServiceAccount, Service, Pod, ResourceQuota; apps/v1
//! Deployment; batch/v1 Job, CronJob; policy/v1 Eviction,
//! PodDisruptionBudget; rbac.authorization.k8s.io/v1 Role, ClusterRole,
//! RoleBinding, ClusterRoleBinding; the authorization.k8s.io/v1 access reviews
//! and authentication.k8s.io SelfSubjectReview; certificates.k8s.io/v1
//! CertificateSigningRequest (with its status, which approval writes);
//! authentication.k8s.io/v1 TokenRequest; and DeleteOptions under any group version. Anything else yields
//! [`DecodeError::Unsupported`]. Status sub-objects are dropped, since clients cannot
//! set them on create.

mod authentication;
mod authorization;
mod autoscaling;
mod certificates;
mod core;
mod json;
mod meta;
mod rbac;
mod scheduling;
mod workloads;

use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value};

use crate::json::ToJson;

/// The prefix that marks a Kubernetes protobuf envelope.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// The media type kubectl uses for protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("protobuf body does not start with the Kubernetes magic prefix \"k8s\\0\"")]
    MissingMagic,
    #[error("malformed protobuf envelope (runtime.Unknown): {0}")]
    Envelope(#[source] prost::DecodeError),
    #[error("protobuf envelope does not name the object's kind")]
    MissingKind,
    #[error("protobuf envelope content encoding {0:?} is not supported; send JSON")]
    ContentEncoding(String),
    #[error("protobuf envelope content type {0:?} is not supported; send JSON")]
    ContentType(String),
    #[error("protobuf bodies of kind {kind} ({api_version}) are not supported; send JSON")]
    Unsupported { api_version: String, kind: String },
    #[error("protobuf body field {field} is not supported; send JSON")]
    UnsupportedField { field: String },
    #[error("malformed protobuf {kind} object: {source}")]
    Object {
        kind: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("invalid value in protobuf field {field}: {reason}")]
    InvalidField { field: String, reason: String },
}

impl DecodeError {
    /// True when the body is well-formed but uses something this crate does
    /// not convert, so a server may answer 415 rather than 400.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            Self::Unsupported { .. }
                | Self::UnsupportedField { .. }
                | Self::ContentEncoding(_)
                | Self::ContentType(_)
        )
    }
}

/// Whether a `Content-Type` header value names the Kubernetes protobuf
/// encoding, ignoring parameters and case.
pub fn is_protobuf(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case(CONTENT_TYPE)
}

/// Decodes a `k8s\0`-prefixed protobuf body into the object's Kubernetes
/// JSON form, with `apiVersion` and `kind` taken from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let envelope = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(DecodeError::MissingMagic)?;
    let unknown = Unknown::decode(envelope).map_err(DecodeError::Envelope)?;

    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if kind.is_empty() {
        return Err(DecodeError::MissingKind);
    }
    if let Some(enc) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(DecodeError::ContentEncoding(enc));
    }
    // An empty content type means "same as the envelope", i.e. protobuf.
    if let Some(ct) = unknown.content_type.filter(|c| !c.is_empty()) {
        if !is_protobuf(&ct) {
            return Err(DecodeError::ContentType(ct));
        }
    }
    let raw = unknown.raw.unwrap_or_default();

    use k8s_pb::api::{
        apps::v1 as apps, authentication::v1 as authn, batch::v1 as batch,
        certificates::v1 as certificates, core::v1 as core, policy::v1 as policy, rbac::v1 as rbac,
        scheduling::v1 as scheduling,
    };
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as metav1;
    let fields = match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => convert::<core::ConfigMap>(&kind, &raw)?,
        ("v1", "Secret") => convert::<core::Secret>(&kind, &raw)?,
        ("v1", "Namespace") => convert::<core::Namespace>(&kind, &raw)?,
        ("v1", "ServiceAccount") => convert::<core::ServiceAccount>(&kind, &raw)?,
        ("v1", "Service") => convert::<core::Service>(&kind, &raw)?,
        ("v1", "Pod") => convert::<core::Pod>(&kind, &raw)?,
        ("v1", "ResourceQuota") => convert::<core::ResourceQuota>(&kind, &raw)?,
        ("apps/v1", "Deployment") => convert::<apps::Deployment>(&kind, &raw)?,
        ("autoscaling/v1", "HorizontalPodAutoscaler") => {
            convert::<k8s_pb::api::autoscaling::v1::HorizontalPodAutoscaler>(&kind, &raw)?
        }
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            convert::<k8s_pb::api::autoscaling::v2::HorizontalPodAutoscaler>(&kind, &raw)?
        }
        ("batch/v1", "Job") => convert::<batch::Job>(&kind, &raw)?,
        ("batch/v1", "CronJob") => convert::<batch::CronJob>(&kind, &raw)?,
        // policy/v1beta1 Eviction has the same wire layout as policy/v1.
        ("policy/v1" | "policy/v1beta1", "Eviction") => convert::<policy::Eviction>(&kind, &raw)?,
        ("policy/v1", "PodDisruptionBudget") => {
            convert::<policy::PodDisruptionBudget>(&kind, &raw)?
        }
        ("rbac.authorization.k8s.io/v1", "Role") => convert::<rbac::Role>(&kind, &raw)?,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            convert::<rbac::ClusterRole>(&kind, &raw)?
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            convert::<rbac::RoleBinding>(&kind, &raw)?
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            convert::<rbac::ClusterRoleBinding>(&kind, &raw)?
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            convert::<authn::TokenRequest>(&kind, &raw)?
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            convert::<k8s_pb::api::authorization::v1::SelfSubjectAccessReview>(&kind, &raw)?
        }
        ("authorization.k8s.io/v1", "SubjectAccessReview") => {
            convert::<k8s_pb::api::authorization::v1::SubjectAccessReview>(&kind, &raw)?
        }
        ("authorization.k8s.io/v1", "LocalSubjectAccessReview") => {
            convert::<k8s_pb::api::authorization::v1::LocalSubjectAccessReview>(&kind, &raw)?
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            convert::<k8s_pb::api::authorization::v1::SelfSubjectRulesReview>(&kind, &raw)?
        }
        ("authentication.k8s.io/v1", "SelfSubjectReview") => {
            convert::<k8s_pb::api::authentication::v1::SelfSubjectReview>(&kind, &raw)?
        }
        ("authentication.k8s.io/v1beta1", "SelfSubjectReview") => {
            convert::<k8s_pb::api::authentication::v1beta1::SelfSubjectReview>(&kind, &raw)?
        }
        // DeleteOptions is registered in every group version, so client-go
        // stamps it with whichever version the calling client uses.
        ("certificates.k8s.io/v1", "CertificateSigningRequest") => {
            convert::<certificates::CertificateSigningRequest>(&kind, &raw)?
        }
        ("scheduling.k8s.io/v1", "PriorityClass") => {
            convert::<scheduling::PriorityClass>(&kind, &raw)?
        }
        (_, "DeleteOptions") => convert::<metav1::DeleteOptions>(&kind, &raw)?,
        _ => return Err(DecodeError::Unsupported { api_version, kind }),
    };

    let mut object = Map::new();
    object.insert("apiVersion".to_owned(), Value::String(api_version));
    object.insert("kind".to_owned(), Value::String(kind));
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Ok(Value::Object(object))
}

fn convert<M: Message + Default + ToJson>(kind: &str, raw: &[u8]) -> Result<Value, DecodeError> {
    let message = M::decode(raw).map_err(|source| DecodeError::Object {
        kind: kind.to_owned(),
        source,
    })?;
    message.to_json()
}
