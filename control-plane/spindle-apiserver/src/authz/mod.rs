//! Authorization, the layer after authentication: impersonation (`Impersonate-*`
//! headers, [`impersonate`]), then the privileged group `system:masters`, then the Node
//! authorizer for nodes ([`node`]), then RBAC over the indexed roles and bindings
//! ([`index`]). A refusal is kube-apiserver's 403.
//!
//! - [`attributes`]: what a request asks (verb, group, resource, namespace, name, path);
//! - [`rules`]: policy rules, matching and covering;
//! - [`index`]: roles and bindings by subject, fed from the store's watch ([`Authorizer::start`]);
//! - [`graph`]: what the pods bound to each node reference, fed the same way;
//! - [`node`]: the Node authorizer over that graph and the `system:node` rules;
//! - [`escalation`]: a user may grant only what they hold (unless `escalate`/`bind`);
//! - [`reviews`]: the access reviews and SelfSubjectReview;
//! - [`bootstrap`]: the roles and bindings every cluster has, reconciled at start;
//! - [`controller_roles`]: the controllers' own roles, part of the bootstrap policy.

pub mod attributes;
pub mod bootstrap;
pub mod controller_roles;
pub mod escalation;
pub mod graph;
mod impersonate;
pub mod index;
pub mod node;
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

/// The authorizer: an RBAC index and the Node authorizer's graph, kept current from the
/// store.
#[derive(Default)]
pub struct Authorizer {
    index: RwLock<Index>,
    graph: RwLock<graph::Graph>,
}

/// What one watch feeds: one of the RBAC kinds, or the graph's pods or claims.
#[derive(Clone, Copy, Debug)]
enum Feed {
    Rbac(RbacKind),
    Pods,
    Claims,
}

impl Authorizer {
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while the index was being written leaves the last state, still whole
        // for reading (every write is one object's).
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn authorize(&self, user: &User, a: &Attributes) -> Decision {
        self.authorize_request(user, a, None)
    }

    /// [`Authorizer::authorize`] for a request whose list or watch is narrowed to one
    /// object by a `metadata.name` field selector (which the Node authorizer honours).
    pub fn authorize_request(
        &self,
        user: &User,
        a: &Attributes,
        name_selector: Option<&str>,
    ) -> Decision {
        let allowed = Decision {
            allowed: true,
            reason: String::new(),
        };
        if user.groups.iter().any(|g| g == MASTERS) {
            return allowed;
        }
        let mut node_reason = String::new();
        if let Some(node) = node::node_name(user) {
            let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
            match node::authorize(&graph, node, a, name_selector) {
                Ok(()) => return allowed,
                Err(reason) => node_reason = reason,
            }
        }
        let mut d = self.read().authorize(user, a);
        // kube's union authorizer: every authorizer's reason, one a line.
        if !d.allowed && !node_reason.is_empty() {
            d.reason = if d.reason.is_empty() {
                node_reason
            } else {
                format!("{node_reason}\n{}", d.reason)
            };
        }
        d
    }

    /// Whether the user may, without the reason.
    pub fn allows(&self, user: &User, a: &Attributes) -> bool {
        self.authorize(user, a).allowed
    }

    /// The rules that apply to the user in `ns` and the errors met resolving them.
    pub fn rules_for(&self, user: &User, ns: &str) -> (Vec<rules::PolicyRule>, Vec<String>) {
        let (mut rules, errors) = self.read().rules_for(user, ns);
        if node::node_name(user).is_some() {
            rules.splice(0..0, node::node_rules().iter().cloned());
        }
        if user.groups.iter().any(|g| g == MASTERS) {
            rules.insert(0, bootstrap::all_rule(true));
            rules.insert(1, bootstrap::all_rule(false));
        }
        (rules, errors)
    }

    pub(crate) fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.read()
    }

    /// Load the four RBAC kinds, pods and claims from the store, then follow their
    /// changes in the background.
    pub async fn start(self: &Arc<Self>, st: &AppState) -> anyhow::Result<()> {
        for (feed, group, plural) in [
            (Feed::Rbac(RbacKind::Role), bootstrap::GROUP, "roles"),
            (
                Feed::Rbac(RbacKind::ClusterRole),
                bootstrap::GROUP,
                "clusterroles",
            ),
            (
                Feed::Rbac(RbacKind::RoleBinding),
                bootstrap::GROUP,
                "rolebindings",
            ),
            (
                Feed::Rbac(RbacKind::ClusterRoleBinding),
                bootstrap::GROUP,
                "clusterrolebindings",
            ),
            (Feed::Pods, "", "pods"),
            (Feed::Claims, "", "persistentvolumeclaims"),
        ] {
            let Some(k) = st.reg.by_resource(group, "v1", plural) else {
                continue;
            };
            let prefix = crate::rest::key(k, None, None);
            let rev = self.relist(st.store.as_ref(), feed, &prefix).await?;
            let (me, store) = (self.clone(), st.store.clone());
            tokio::spawn(async move { me.follow(store, feed, prefix, rev).await });
        }
        Ok(())
    }

    fn apply(&self, feed: Feed, objs: &[Value], present: bool, clear: bool) {
        match feed {
            Feed::Rbac(kind) => {
                let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
                if clear {
                    idx.clear(kind);
                }
                for v in objs {
                    idx.apply(kind, v, present);
                }
            }
            Feed::Pods | Feed::Claims => {
                let mut g = self.graph.write().unwrap_or_else(|e| e.into_inner());
                let pods = matches!(feed, Feed::Pods);
                match (clear, pods) {
                    (true, true) => g.clear_pods(),
                    (true, false) => g.clear_claims(),
                    _ => {}
                }
                for v in objs {
                    if pods {
                        g.apply_pod(v, present);
                    } else {
                        g.apply_claim(v, present);
                    }
                }
            }
        }
    }

    async fn relist(&self, store: &dyn Store, feed: Feed, prefix: &str) -> anyhow::Result<u64> {
        let (items, rev) = store.list(prefix).await?;
        let objs: Vec<Value> = items
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        self.apply(feed, &objs, true, true);
        Ok(rev)
    }

    /// An informer's loop: watch from the listed revision; relist when the watch ends.
    async fn follow(&self, store: Arc<dyn Store>, feed: Feed, prefix: String, mut rev: u64) {
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
                            self.apply(feed, std::slice::from_ref(&v), present, false);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, %prefix, "authorizer watch failed; relisting"),
            }
            loop {
                match self.relist(store.as_ref(), feed, &prefix).await {
                    Ok(r) => {
                        rev = r;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %prefix, "authorizer relist failed");
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
    let selector = node::node_name(&user).and_then(|_| node::name_selector(req.uri().query()));
    let d = st.authz.authorize_request(&user, &a, selector.as_deref());
    if !d.allowed {
        tracing::debug!(user = %user.name, verb = %a.verb, resource = %a.full_resource(), path = %a.path, "forbidden");
        return a.forbidden(&user, &d.reason).into_response();
    }
    // For the metrics layer: what the request is about, parsed once.
    req.extensions_mut().insert(a);
    next.run(req).await
}
