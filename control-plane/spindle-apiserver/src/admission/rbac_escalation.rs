//! Privilege-escalation prevention for RBAC writes: kube-apiserver does it in the RBAC
//! kinds' REST storage; here it is a validating step of the same write pipeline, with
//! the rules in [`crate::authz::escalation`].

use async_trait::async_trait;
use serde_json::Value;

use super::{Admission, Attributes, Operation};
use crate::authz::{bootstrap, escalation};
use crate::status::ApiResult;
use crate::AppState;

pub struct RbacEscalation;

#[async_trait]
impl Admission for RbacEscalation {
    fn name(&self) -> &'static str {
        "RBACEscalation"
    }

    fn handles(&self, op: Operation) -> bool {
        matches!(op, Operation::Create | Operation::Update)
    }

    async fn validate(&self, st: &AppState, a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        if a.kind.group != bootstrap::GROUP || a.subresource.is_some() {
            return Ok(());
        }
        escalation::check(
            st,
            a.user,
            a.kind.plural,
            a.namespace.unwrap_or(""),
            a.name,
            obj,
            a.old,
        )
    }
}
