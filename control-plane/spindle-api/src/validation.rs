//! Kubernetes-style validation and defaulting per kind.

use serde::Serialize;

/// One field error, as it appears in `details.causes` of a 422 `Invalid` Status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: String,
    pub message: String,
    /// Dotted field path, e.g. `spec.template.metadata.labels`.
    pub field: String,
}

impl FieldError {
    pub fn invalid_type(path: &str, msg: String) -> Self {
        FieldError { reason: "FieldValueTypeInvalid".into(), message: format!("{path}: {msg}"), field: path.into() }
    }
}
