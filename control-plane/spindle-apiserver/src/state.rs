//! The API server's shared state, and the in-process client over the same pipeline.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use spindle_api::openapi::OpenApi;
use spindle_api::Registry;
use spindle_store::Store;

use crate::auth::{ConnInfo, User};
use crate::{alloc, authz, router, watch, ConnLimits};

/// Shared state of the API server; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub reg: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub openapi: Arc<OpenApi>,
    /// Bearer tokens and who they authenticate as.
    pub tokens: Arc<Vec<(String, User)>>,
    /// Signs and verifies ServiceAccount tokens.
    pub sa_signer: Arc<crate::sa_token::Signer>,
    pub ca_pem: Arc<str>,
    pub default_toleration_seconds: i64,
    pub event_cache: Arc<watch::EventCache>,
    /// How the API server reaches agents' endpoints: their serving certificates verified
    /// against the cluster CA, its own client certificate presented (`None`: agents
    /// cannot be reached, as in unit tests).
    pub kubelet_client: Option<Arc<rustls::ClientConfig>>,
    /// Service CIDR, cluster (pod) CIDR and NodePort range the server allocates from.
    pub net: alloc::NetRanges,
    /// Who may do what: RBAC over the indexed roles and bindings.
    pub authz: Arc<authz::Authorizer>,
}

impl AppState {
    /// A kube-rs client that calls this API server in-process: the same router, layers,
    /// validation and admission as external clients, without TLS or sockets. The
    /// controllers and the scheduler use it, each as its own user in its own groups,
    /// authorized like any other client.
    pub fn in_process_client(&self, user: &str, groups: &[&str]) -> kube::Client {
        let conn = ConnInfo {
            cert_user: None,
            internal_user: Some(User {
                name: user.to_string(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            }),
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
            body_read_timeout: ConnLimits::default().body_read_timeout,
        };
        let svc = tower::ServiceBuilder::new()
            .map_request(move |req: hyper::Request<kube::client::Body>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(conn.clone());
                req
            })
            .service(router::router(self.clone()));
        kube::Client::new(svc, "default")
    }

    /// A client working as ServiceAccount `namespace/name`, with a ServiceAccount's
    /// groups (how kube-controller-manager's controllers each hold their own identity).
    pub fn service_account_client(&self, namespace: &str, name: &str) -> kube::Client {
        let user = crate::sa_token::service_account_user(namespace, name);
        let groups: Vec<&str> = user.groups.iter().map(String::as_str).collect();
        self.in_process_client(&user.name, &groups)
    }
}
