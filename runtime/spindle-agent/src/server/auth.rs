//! Authentication and authorization of the endpoint's callers, as a tower layer in front
//! of every route (unknown paths included, so a stranger learns nothing of the routes),
//! as the kubelet's `--authentication-*`/`--authorization-mode=Webhook` filter does it:
//! the caller is the user a client certificate chained to the cluster CA names (CN, and
//! each O as a group), anyone else gets 401; the request is then mapped to attributes
//! on the node (`nodes/proxy` for everything but `/stats`, `/metrics`, `/logs`, `/spec`,
//! the verb from the method) and allowed or refused (403) by a [`Reviewer`], in the
//! agent the API server's SubjectAccessReview ([`super::authz`]). An allowed request
//! carries its [`Caller`] in its extensions.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use spindle_meta::tls::client_certs::{subject, ClientCerts};
use spindle_streaming::serve::PeerCertificates;

use super::text;

/// Who made the request: the user its client certificate names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    pub name: String,
    pub groups: Vec<String>,
}

/// What a request asks of this node, as the kubelet's authorizer attributes (resource
/// `nodes` in the core group, named after the node).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub user: Caller,
    pub verb: &'static str,
    pub subresource: &'static str,
}

impl Attributes {
    /// The kubelet's mapping of a request: the verb from the method, `nodes/proxy`
    /// unless the path is one of the finer subresources.
    pub fn of(user: Caller, method: &Method, path: &str) -> Attributes {
        let verb = match *method {
            Method::POST => "create",
            Method::GET => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        };
        let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
        let subresource = if under("/stats") {
            "stats"
        } else if under("/metrics") {
            "metrics"
        } else if under("/logs") {
            // "log", as the other log subresources (pods/log).
            "log"
        } else if under("/spec") {
            "spec"
        } else {
            "proxy"
        };
        Attributes {
            user,
            verb,
            subresource,
        }
    }

    /// The kubelet's words for the attributes, in its 403 and 500 answers.
    fn describe(&self) -> String {
        format!(
            "user={}, verb={}, resource=nodes, subresource={}",
            self.user.name, self.verb, self.subresource
        )
    }
}

/// Whether a caller may do what it asks: `Ok(true)` allowed, `Ok(false)` refused, `Err`
/// when no decision could be had (the API server unreachable).
pub trait Reviewer: Send + Sync + 'static {
    fn review(
        &self,
        attrs: &Attributes,
    ) -> impl std::future::Future<Output = Result<bool, String>> + Send;
}

struct Gate<R> {
    certs: ClientCerts,
    reviewer: R,
}

/// `routes` behind the check: callers authenticated against `certs` (the cluster CA),
/// requests authorized by `reviewer`.
pub fn authorized<R: Reviewer>(routes: Router, certs: ClientCerts, reviewer: R) -> Router {
    let gate = Arc::new(Gate { certs, reviewer });
    routes.layer(middleware::from_fn_with_state(gate, check::<R>))
}

/// The caller a request's client certificate proves, if it chains to the CA.
fn authenticate(certs: &ClientCerts, req: &Request) -> Option<Caller> {
    let peer = req.extensions().get::<PeerCertificates>()?;
    let end = peer.0.first()?;
    if !certs.verified(&peer.0) {
        return None;
    }
    let (name, groups) = subject(end)?;
    Some(Caller { name, groups })
}

async fn check<R: Reviewer>(
    State(gate): State<Arc<Gate<R>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(caller) = authenticate(&gate.certs, &req) else {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let attrs = Attributes::of(caller, req.method(), req.uri().path());
    match gate.reviewer.review(&attrs).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(attrs = attrs.describe(), "request to the node refused");
            return text(
                StatusCode::FORBIDDEN,
                format!("Forbidden ({})", attrs.describe()),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, attrs = attrs.describe(), "authorizing a request to the node");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Authorization error ({})", attrs.describe()),
            );
        }
    }
    req.extensions_mut().insert(attrs.user);
    next.run(req).await
}

#[cfg(test)]
mod tests;
