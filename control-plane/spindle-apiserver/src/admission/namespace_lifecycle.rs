//! NamespaceLifecycle: nothing is created in a namespace that does not exist or is
//! being terminated.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Admission, Attributes, Operation};
use crate::rest::{decode_stored, key};
use crate::status::{ApiError, ApiResult};
use crate::AppState;

pub struct NamespaceLifecycle;

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
