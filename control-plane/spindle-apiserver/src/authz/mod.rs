//! Authorization, the layer after authentication: impersonation (`Impersonate-*`
//! headers, [`impersonate`]), then the privileged group `system:masters`, then RBAC over
//! the indexed roles and bindings ([`index`]). A refusal is kube-apiserver's 403.
//!
//! - [`attributes`]: what a request asks (verb, group, resource, namespace, name, path);
//! - [`rules`]: policy rules, matching and covering;
//! - [`index`]: roles and bindings by subject, fed from the store's watch ([`Authorizer::start`]);
//! - [`escalation`]: a user may grant only what they hold (unless `escalate`/`bind`);
//! - [`reviews`]: the access reviews and SelfSubjectReview;
//! - [`bootstrap`]: the roles and bindings every cluster has, reconciled at start;
//! - [`controller_roles`]: the controllers' own roles, part of the bootstrap policy.

pub mod attributes;
pub mod bootstrap;
pub mod controller_roles;
pub mod escalation;
mod impersonate;
pub mod index;
pub mod reviews;
pub mod rules;

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use spindle_store::{EventType, Store};

pub use attributes::Attributes;
use index::{Decision, Index, RbacKind};

use crate::auth::User;
use crate::AppState;

/// Members may do anything, whatever the bindings say (kube's privileged group
/// authorizer, ahead of RBAC).
pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";

/// The authorizer: an RBAC index kept current from the store.
#[derive(Default)]
pub struct Authorizer {
    index: RwLock<Index>,
}

impl Authorizer {
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while the index was being written leaves the last state, still whole
        // for reading (every write is one object's).
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn authorize(&self, user: &User, a: &Attributes) -> Decision {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        self.read().authorize(user, a)
    }

    /// Whether the user may, without the reason.
    pub fn allows(&self, user: &User, a: &Attributes) -> bool {
        self.authorize(user, a).allowed
    }

    /// The rules that apply to the user in `ns` and the errors met resolving them.
    pub fn rules_for(&self, user: &User, ns: &str) -> (Vec<rules::PolicyRule>, Vec<String>) {
        let (mut rules, errors) = self.read().rules_for(user, ns);
        if user.groups.iter().any(|g| g == MASTERS) {
            rules.insert(0, bootstrap::all_rule(true));
            rules.insert(1, bootstrap::all_rule(false));
        }
        (rules, errors)
    }

    pub(crate) fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.read()
    }

    /// Load the four kinds from the store, then follow their changes in the background.
    pub async fn start(self: &Arc<Self>, st: &AppState) -> anyhow::Result<()> {
        for (kind, plural) in [
            (RbacKind::Role, "roles"),
            (RbacKind::ClusterRole, "clusterroles"),
            (RbacKind::RoleBinding, "rolebindings"),
            (RbacKind::ClusterRoleBinding, "clusterrolebindings"),
        ] {
            let Some(k) = st.reg.by_resource(bootstrap::GROUP, "v1", plural) else {
                continue;
            };
            let prefix = crate::rest::key(k, None, None);
            let rev = self.relist(st.store.as_ref(), kind, &prefix).await?;
            let (me, store) = (self.clone(), st.store.clone());
            tokio::spawn(async move { me.follow(store, kind, prefix, rev).await });
        }
        Ok(())
    }

    async fn relist(&self, store: &dyn Store, kind: RbacKind, prefix: &str) -> anyhow::Result<u64> {
        let (items, rev) = store.list(prefix).await?;
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        idx.clear(kind);
        for kv in items {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                idx.apply(kind, &v, true);
            }
        }
        Ok(rev)
    }

    /// An informer's loop: watch from the listed revision; relist when the watch ends.
    async fn follow(&self, store: Arc<dyn Store>, kind: RbacKind, prefix: String, mut rev: u64) {
        loop {
            match store.watch(&prefix, rev).await {
                Ok(mut events) => {
                    while let Some(ev) = events.next().await {
                        rev = rev.max(ev.revision);
                        let present = match ev.kind {
                            EventType::Created | EventType::Modified => true,
                            EventType::Deleted => false,
                            EventType::Progress => continue,
                        };
                        if let Ok(v) = serde_json::from_slice::<Value>(&ev.value) {
                            let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
                            idx.apply(kind, &v, present);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, %prefix, "RBAC watch failed; relisting"),
            }
            loop {
                match self.relist(store.as_ref(), kind, &prefix).await {
                    Ok(r) => {
                        rev = r;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %prefix, "RBAC relist failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}

/// `watch=true` (or `1`) in the query, without parsing all of it.
fn watch_flag(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

/// The authorization layer: the impersonated user replaces the caller when the caller
/// may impersonate; then the request is allowed or answered 403.
pub(crate) async fn authorize(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(caller) = req.extensions().get::<User>().cloned() else {
        return crate::status::ApiError::unauthorized().into_response();
    };
    let user = match impersonate::resolve(&st, &caller, req.headers_mut()) {
        Ok(Some(u)) => {
            req.extensions_mut().insert(u.clone());
            u
        }
        Ok(None) => caller,
        Err(e) => return e.into_response(),
    };
    let a = Attributes::from_request(
        req.method(),
        req.uri().path(),
        watch_flag(req.uri().query()),
    );
    let d = st.authz.authorize(&user, &a);
    if !d.allowed {
        tracing::debug!(user = %user.name, verb = %a.verb, resource = %a.full_resource(), path = %a.path, "forbidden");
        return a.forbidden(&user, &d.reason).into_response();
    }
    next.run(req).await
}
