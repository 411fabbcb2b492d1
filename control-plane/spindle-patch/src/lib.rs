//! Patch semantics of the Kubernetes API over plain JSON values.
//!
//! This crate owns everything the API server needs to turn "old object + request body" into
//! "new object" for writes that are not plain replacements:
//!
//! * [`json_patch`]: RFC 6902 (`application/json-patch+json`);
//! * [`merge_patch`]: RFC 7396 (`application/merge-patch+json`);
//! * [`strategic_merge_patch`]: Kubernetes strategic merge patch
//!   (`application/strategic-merge-patch+json`, what client-side `kubectl apply` sends),
//!   driven by the list-strategy table in [`strategy`];
//! * [`ssa`]: server-side apply (`application/apply-patch+yaml`) and the `managedFields`
//!   bookkeeping that ordinary writes must also do.
//!
//! It works on `serde_json::Value` only and knows nothing about storage or HTTP, so the API
//! server decides status codes and the store decides concurrency.
//!
//! RFC 6902 and RFC 7396 come from the `json-patch` crate. Strategic merge patch and
//! server-side apply are written here on purpose: they exist only in Go (apimachinery's
//! `strategicpatch` and sigs.k8s.io/structured-merge-diff), and no Rust crate implements
//! either (kube-rs only *sends* them; the merging happens on the server). Both are pure
//! functions of JSON values with their own tests and property tests, so the hand-written
//! part stays bounded.

mod fieldset;
mod smp;
pub mod ssa;
pub mod strategy;

use serde_json::Value;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (wrong shape, unknown directive, missing merge
    /// key). The API server should answer 400 Bad Request.
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// The patch is well formed but does not fit the object (a JSON patch `test` that fails,
    /// a path that does not exist). The API server should answer 422 Unprocessable Entity.
    #[error("patch cannot be applied: {0}")]
    Unapplicable(String),
    /// The patch asks for more work than the server does for one request (too many
    /// operations). The API server should answer 413 Request Entity Too Large.
    #[error("{0}")]
    TooLarge(String),
}

/// Most operations in one JSON patch (kube-apiserver's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Most bytes all `copy` operations of one JSON patch may add together
/// (kube-apiserver's `JSONPatchMaxCopyBytes`). Without it, each `copy` of a value into
/// itself doubles it, and 40 operations make a terabyte (CVE-2019-1002100).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// Applies an RFC 6902 JSON patch (a JSON array of operations) to `original`, within
/// [`MAX_JSON_PATCH_OPERATIONS`] and [`MAX_JSON_PATCH_COPY_BYTES`].
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if let Some(n) = patch.as_array().map(Vec::len) {
        if n > MAX_JSON_PATCH_OPERATIONS {
            return Err(PatchError::TooLarge(format!(
                "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {n}"
            )));
        }
    }
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Invalid(format!("malformed JSON patch: {e}")))?;
    let mut doc = original.clone();
    let mut copied = 0usize;
    // One operation at a time, so the size of each copy is known before it is made (the
    // crate has no limit of its own). On failure the working copy is dropped, so applying
    // without the crate's rollback loses nothing.
    for op in &ops.0 {
        if let json_patch::PatchOperation::Copy(c) = op {
            let size = doc.pointer(c.from.as_str()).map_or(0, encoded_len);
            copied = copied.saturating_add(size);
            if copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(PatchError::Unapplicable(format!(
                    "Unable to complete the copy, the accumulated size increase of copy is {copied}, exceeding the limit {MAX_JSON_PATCH_COPY_BYTES}"
                )));
            }
        }
        json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op))
            .map_err(|e| PatchError::Unapplicable(e.to_string()))?;
    }
    Ok(doc)
}

/// The length of `v` as compact JSON, counted without building the text.
fn encoded_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Applies an RFC 7396 JSON merge patch to `original`.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    // Kubernetes only accepts objects here; a scalar or array body would replace the whole
    // resource, which is never what a client meant.
    if !patch.is_object() {
        return Err(PatchError::Invalid(
            "merge patch must be a JSON object".to_string(),
        ));
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

/// Applies a Kubernetes strategic merge patch to `original`.
///
/// Maps merge recursively and `null` deletes a key. Lists merge according to
/// [`strategy::list_strategy`]. The directives `$patch`, `$retainKeys`,
/// `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` are honoured and never
/// appear in the result.
pub fn strategic_merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    smp::apply(original, patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_ops() {
        let original = json!({"spec": {"replicas": 1, "template": {"a": 1}}, "metadata": {"annotations": {"x": "1"}}});
        let patch = json!([
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/template", "value": {"b": 2}},
            {"op": "add", "path": "/metadata/labels", "value": {"app": "web"}},
            {"op": "remove", "path": "/metadata/annotations/x"},
            {"op": "copy", "from": "/spec/replicas", "path": "/spec/min"},
            {"op": "move", "from": "/spec/min", "path": "/spec/max"}
        ]);
        let out = json_patch(&original, &patch).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"replicas": 1, "template": {"b": 2}, "max": 1},
                   "metadata": {"annotations": {}, "labels": {"app": "web"}}})
        );
    }

    #[test]
    fn json_patch_failed_test_is_unapplicable() {
        let original = json!({"spec": {"replicas": 1}});
        let patch = json!([{"op": "test", "path": "/spec/replicas", "value": 2}]);
        assert!(matches!(
            json_patch(&original, &patch),
            Err(PatchError::Unapplicable(_))
        ));
        let patch = json!([{"op": "remove", "path": "/nope"}]);
        assert!(matches!(
            json_patch(&original, &patch),
            Err(PatchError::Unapplicable(_))
        ));
    }

    #[test]
    fn json_patch_malformed_is_invalid() {
        let original = json!({});
        assert!(matches!(
            json_patch(&original, &json!({"op": "add"})),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            json_patch(&original, &json!([{"op": "frobnicate", "path": "/a"}])),
            Err(PatchError::Invalid(_))
        ));
    }

    #[test]
    fn json_patch_limits() {
        let ops =
            vec![json!({"op": "test", "path": "/a", "value": 1}); MAX_JSON_PATCH_OPERATIONS + 1];
        assert!(matches!(
            json_patch(&json!({"a": 1}), &Value::Array(ops)),
            Err(PatchError::TooLarge(m)) if m.contains("maximum operations in a JSON patch is 10000, got 10001")
        ));
        // Each copy of /x into itself doubles it: refused long before memory runs out.
        let mut doubling =
            vec![json!({"op": "add", "path": "/x", "value": vec!["0123456789"; 100]})];
        doubling.extend(vec![
            json!({"op": "copy", "from": "/x", "path": "/x/-"});
            60
        ]);
        match json_patch(&json!({}), &Value::Array(doubling)) {
            Err(PatchError::Unapplicable(m)) => {
                assert!(m.contains("accumulated size increase of copy"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // A few small copies are fine.
        let few = json!([{"op": "add", "path": "/x", "value": [1]}, {"op": "copy", "from": "/x", "path": "/y"}]);
        assert_eq!(
            json_patch(&json!({}), &few).unwrap(),
            json!({"x": [1], "y": [1]})
        );
    }

    #[test]
    fn merge_patch_rfc7396() {
        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1, "list": [1, 2]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"replicas": 3, "list": [3]}});
        let out = merge_patch(&original, &patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"replicas": 3, "list": [3]}})
        );
    }

    #[test]
    fn merge_patch_rejects_non_object() {
        assert!(matches!(
            merge_patch(&json!({}), &json!([1])),
            Err(PatchError::Invalid(_))
        ));
    }
}
