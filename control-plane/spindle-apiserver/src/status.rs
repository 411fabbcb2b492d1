//! `metav1.Status` errors, with the codes, reasons and messages Kubernetes uses, encoded
//! byte for byte as kube-apiserver encodes them: clients' own test suites (the official
//! Python client's among them) compare these bodies as strings.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spindle_api::validation::FieldError;

/// `metav1.StatusDetails`: fields in Go's declaration order, and each left out when empty
/// (Go's `omitempty`), so `group` vanishes for the core group as kube-apiserver's does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (plural) for most errors, the kind for Invalid, as Kubernetes fills it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_after_seconds: u64,
}

/// `metav1.StatusCause` (Go calls the `reason` field `Type`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusCause {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Details written as JSON where that reads best; a shape that does not fit (a bug here,
/// never user input) keeps what could be read rather than failing the answer.
impl From<Value> for StatusDetails {
    fn from(v: Value) -> Self {
        serde_json::from_value(v).unwrap_or_default()
    }
}

/// `metav1.Status` in Go's field order: kind, apiVersion, metadata, status, message,
/// reason, details, code. `metadata` is a struct in Go, which `omitempty` never drops.
#[derive(Serialize)]
pub struct Status<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: EmptyMeta,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a StatusDetails>,
    #[serde(skip_serializing_if = "is_zero_u16")]
    code: u16,
}

#[derive(Serialize)]
struct EmptyMeta {}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

impl<'a> Status<'a> {
    /// A `Success` status, as kube-apiserver answers a binding, an eviction, or the
    /// deletion of a kind that does not return the deleted object.
    pub fn success(code: u16, details: Option<&'a StatusDetails>) -> Self {
        Status {
            kind: "Status",
            api_version: "v1",
            metadata: EmptyMeta {},
            status: "Success",
            message: "",
            reason: "",
            details,
            code,
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// JSON as Go's `json.Encoder` writes it, which is how kube-apiserver encodes every
/// response: `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`-style sequences, and a
/// newline after the value.
pub fn go_json(v: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    if v.serialize(&mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"null");
    }
    out.push(b'\n');
    out
}

struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(esc.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: most errors have none, and every `Result` carrying an error stays small.
    pub details: Option<Box<StatusDetails>>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn with_details(mut self, d: impl Into<StatusDetails>) -> Self {
        self.details = Some(Box::new(d.into()));
        self
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }
    pub fn not_found(qualified_plural: &str, group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{qualified_plural} \"{name}\" not found"),
        )
        .with_details(StatusDetails::of(name, group, plural))
    }
    /// A path outside every served group-version (kube-apiserver's not-found handler,
    /// which sends no details).
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
    /// A path inside a served group-version that names no resource or subresource: the
    /// router's own 404, which kube-apiserver sends with empty details (`"details":{}`).
    pub fn route_not_found() -> Self {
        Self::path_not_found().with_details(StatusDetails::default())
    }
    pub fn already_exists(qualified_plural: &str, group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{qualified_plural} \"{name}\" already exists"),
        )
        .with_details(StatusDetails::of(name, group, plural))
    }
    pub fn conflict(qualified_plural: &str, group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified_plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        )
        .with_details(StatusDetails::of(name, group, plural))
    }
    pub fn invalid(
        qualified_kind: &str,
        group: &str,
        kind: &str,
        name: &str,
        errs: &[FieldError],
    ) -> Self {
        let list: Vec<String> = errs.iter().map(FieldError::display).collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let details = StatusDetails {
            causes: errs
                .iter()
                .map(|e| StatusCause {
                    reason: e.reason.to_string(),
                    message: e.message.clone(),
                    field: e.field.clone(),
                })
                .collect(),
            ..StatusDetails::of(name, group, kind)
        };
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {joined}"),
        )
        .with_details(details)
    }
    /// 413 as kube-apiserver words it (`NewRequestEntityTooLargeError`).
    pub fn too_large(detail: impl std::fmt::Display) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: {detail}"),
        )
    }
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    /// A verb the route does not serve: like the router's 404, sent with empty details.
    pub fn method_not_supported(msg: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", msg).with_details(StatusDetails::default())
    }
    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})"))
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", msg.into()),
        )
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", msg)
    }

    /// The `metav1.Status` of this error.
    pub fn status(&self) -> Status<'_> {
        Status {
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            ..Status::success(self.code, self.details.as_deref())
        }
    }

    /// The Status as a JSON value (a watch's ERROR event carries it), fields in Go's order.
    pub fn status_body(&self) -> Value {
        self.status().to_value()
    }
}

impl StatusDetails {
    /// The name, group and resource (or kind) most errors about one object carry.
    pub fn of(name: &str, group: &str, kind: &str) -> Self {
        StatusDetails {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            ..StatusDetails::default()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (code, go_json(&self.status())).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // As Kubernetes does: a suggested wait is also the Retry-After header, which
        // clients (client-go, kube-rs) honour without reading the body.
        if let Some(secs) = self
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
        {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

impl From<spindle_store::StoreError> for ApiError {
    fn from(e: spindle_store::StoreError) -> Self {
        match e {
            spindle_store::StoreError::Expired { requested, oldest } => {
                ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(e: ApiError) -> String {
        String::from_utf8(go_json(&e.status())).unwrap_or_default()
    }

    /// The bodies below are what kube-apiserver sends for the same errors.
    #[test]
    fn status_bodies_are_kube_apiservers_bytes() {
        assert_eq!(
            body(ApiError::not_found("configmaps", "", "configmaps", "absent")),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"absent\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"absent\",\"kind\":\"configmaps\"},\"code\":404}\n"
        );
        assert_eq!(
            body(ApiError::already_exists("deployments.apps", "apps", "deployments", "web")),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"deployments.apps \\\"web\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"web\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":409}\n"
        );
        let errs = [FieldError {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "spec.containers[0].image".into(),
        }];
        assert_eq!(
            body(ApiError::invalid("Pod", "", "Pod", "p", &errs)),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Pod \\\"p\\\" is invalid: spec.containers[0].image: Required value\",\"reason\":\"Invalid\",\"details\":{\"name\":\"p\",\"kind\":\"Pod\",\"causes\":[{\"reason\":\"FieldValueRequired\",\"message\":\"Required value\",\"field\":\"spec.containers[0].image\"}]},\"code\":422}\n"
        );
        assert_eq!(
            body(ApiError::path_not_found()),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"the server could not find the requested resource\",\"reason\":\"NotFound\",\"code\":404}\n"
        );
        assert_eq!(
            body(ApiError::route_not_found()),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"the server could not find the requested resource\",\"reason\":\"NotFound\",\"details\":{},\"code\":404}\n"
        );
        assert_eq!(
            body(ApiError::unauthorized()),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
        );
    }

    #[test]
    fn status_details_written_as_json_keep_go_order_and_omit_empties() {
        // Callers may write the fields in any order and leave some empty.
        let e = ApiError::new(429, "TooManyRequests", "Cannot evict pod <x> & more").with_details(
            json!({"retryAfterSeconds": 10, "causes": [{"field": "", "message": "m", "reason": "DisruptionBudget"}], "group": ""}),
        );
        assert_eq!(
            body(e),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Cannot evict pod \\u003cx\\u003e \\u0026 more\",\"reason\":\"TooManyRequests\",\"details\":{\"causes\":[{\"reason\":\"DisruptionBudget\",\"message\":\"m\"}],\"retryAfterSeconds\":10},\"code\":429}\n"
        );
        let watch_error = ApiError::expired("too old resource version: 1 (5)").status_body();
        assert_eq!(
            watch_error.to_string(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource version: 1 (5)\",\"reason\":\"Expired\",\"code\":410}"
        );
    }

    /// What a binding or an eviction answers.
    #[test]
    fn success_status_is_bare() {
        assert_eq!(
            String::from_utf8(go_json(&Status::success(201, None))).unwrap_or_default(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Success\",\"code\":201}\n"
        );
    }

    #[test]
    fn retry_after_header_follows_the_details() {
        let r = ApiError::new(429, "TooManyRequests", "wait")
            .with_details(json!({"retryAfterSeconds": 7}))
            .into_response();
        assert_eq!(
            r.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(7u64))
        );
    }
}
