//! NamespaceLifecycle: nothing is created in a namespace that does not exist or is
//! being terminated, and the namespaces the system needs are never deleted.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Admission, Attributes, Operation};
use crate::rest::{decode_stored, key};
use crate::status::{ApiError, ApiResult};
use crate::AppState;

pub struct NamespaceLifecycle;

/// kube-apiserver's immortal namespaces.
const IMMORTAL: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The plugin's deletion check (kube runs it before the namespace is even looked up):
/// `namespaces "default" is forbidden: this namespace may not be deleted`.
pub fn refuse_immortal(kind: &spindle_api::Kind, name: &str) -> ApiResult<()> {
    if kind.group.is_empty() && kind.plural == "namespaces" && IMMORTAL.contains(&name) {
        return Err(crate::authz::attributes::forbidden_error(
            "",
            "namespaces",
            name,
            "this namespace may not be deleted",
        ));
    }
    Ok(())
}

#[async_trait]
impl Admission for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    fn handles(&self, op: Operation) -> bool {
        op == Operation::Create
    }

    async fn validate(&self, st: &AppState, a: &Attributes<'_>, _obj: &Value) -> ApiResult<()> {
        let (true, Some(ns)) = (a.kind.namespaced, a.namespace) else {
            return Ok(());
        };
        let Some(nskind) = st.reg.by_resource("", "v1", "namespaces") else {
            return Ok(());
        };
        let Some(kv) = st.store.get(&key(nskind, None, Some(ns))).await? else {
            return Err(ApiError::not_found("namespaces", "", "namespaces", ns));
        };
        if decode_stored(&kv)?
            .pointer("/metadata/deletionTimestamp")
            .is_none()
        {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            a.kind.qualified_plural(),
            a.name
        ))
        .with_details(json!({"causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]})))
    }
}
