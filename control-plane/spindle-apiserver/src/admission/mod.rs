//! Admission: an ordered chain of named plugins that see every write after the kind's
//! defaults and before (mutating) or after (validating) its validation, as
//! kube-apiserver's `--enable-admission-plugins`. The chain is [`PLUGINS`], in
//! kube-apiserver's default order; a plugin says which operations it handles and looks
//! at the resource itself (plugins are about particular resources, the REST path is not).

mod default_toleration_seconds;
mod limit_ranger;
mod namespace_lifecycle;
mod node_restriction;
mod priority;
mod rbac_escalation;
mod resource_quota;
mod service_account;
mod storage;

use async_trait::async_trait;
use serde_json::Value;
use spindle_api::Kind;

use crate::status::{ApiError, ApiResult};
use crate::{AppState, User};

pub use default_toleration_seconds::DefaultTolerationSeconds;
pub use limit_ranger::LimitRanger;
pub use namespace_lifecycle::{refuse_immortal, NamespaceLifecycle};
pub use node_restriction::{check_delete, check_eviction, check_token, NodeRestriction};
pub use priority::Priority;
pub use rbac_escalation::RbacEscalation;
pub use resource_quota::ResourceQuota;
pub use service_account::ServiceAccount;
pub use storage::{DefaultStorageClass, PersistentVolumeClaimResize, StorageObjectInUseProtection};

/// What a request does, as admission plugins are told (deletions and connections join
/// when a plugin needs them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// Everything a plugin may look at besides the object.
pub struct Attributes<'a> {
    pub operation: Operation,
    pub kind: &'a Kind,
    /// `status`, `scale`... or None for the main resource.
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub user: &'a User,
    pub dry_run: bool,
    /// The stored object, on updates and deletions.
    pub old: Option<&'a Value>,
}

impl Attributes<'_> {
    /// Whether the request is about `plural` in `group` (its main resource).
    pub fn is_resource(&self, group: &str, plural: &str) -> bool {
        self.kind.group == group && self.kind.plural == plural
    }
}

/// One admission plugin. A mutating plugin implements [`Admission::admit`], a validating
/// one [`Admission::validate`]; some do both.
#[async_trait]
pub trait Admission: Send + Sync {
    /// The name `--enable-admission-plugins` knows it by.
    fn name(&self) -> &'static str;

    fn handles(&self, op: Operation) -> bool;

    /// The mutating phase: may change the object (defaults that depend on the cluster).
    async fn admit(&self, _st: &AppState, _a: &Attributes<'_>, _obj: &mut Value) -> ApiResult<()> {
        Ok(())
    }

    /// The validating phase: may only refuse.
    async fn validate(&self, _st: &AppState, _a: &Attributes<'_>, _obj: &Value) -> ApiResult<()> {
        Ok(())
    }
}

/// The enabled plugins in kube-apiserver's default order (NamespaceLifecycle,
/// LimitRanger, ServiceAccount, NodeRestriction, ..., Priority, DefaultTolerationSeconds, ..., DefaultStorageClass,
/// StorageObjectInUseProtection, ..., PersistentVolumeClaimResize, ..., ResourceQuota);
/// the ones Spindle implements.
pub const PLUGINS: &[&dyn Admission] = &[
    &NamespaceLifecycle,
    &LimitRanger,
    &ServiceAccount,
    &NodeRestriction,
    &Priority,
    &DefaultTolerationSeconds,
    &DefaultStorageClass,
    &StorageObjectInUseProtection,
    &PersistentVolumeClaimResize,
    &RbacEscalation,
    &ResourceQuota,
];

/// Run the mutating phase of every plugin that handles the operation, in order.
pub async fn admit(st: &AppState, a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    for p in PLUGINS.iter().filter(|p| p.handles(a.operation)) {
        p.admit(st, a, obj)
            .await
            .inspect_err(|e| refused(*p, a, e))?;
    }
    Ok(())
}

/// Run the validating phase of every plugin that handles the operation, in order; the
/// first refusal answers the request.
pub async fn validate(st: &AppState, a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    for p in PLUGINS.iter().filter(|p| p.handles(a.operation)) {
        p.validate(st, a, obj)
            .await
            .inspect_err(|e| refused(*p, a, e))?;
    }
    Ok(())
}

/// Which plugin refused what, for whoever wonders why a write was refused.
fn refused(p: &dyn Admission, a: &Attributes<'_>, e: &ApiError) {
    tracing::debug!(
        plugin = p.name(),
        operation = ?a.operation,
        resource = a.kind.plural,
        namespace = a.namespace,
        name = a.name,
        user = %a.user.name,
        dry_run = a.dry_run,
        update = a.old.is_some(),
        reason = %e.reason,
        "admission refused",
    );
}
