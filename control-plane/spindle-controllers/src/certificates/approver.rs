//! The CSR approver (kube-controller-manager's csrapproving, its node client
//! recognizers): a `kubernetes.io/kube-apiserver-client-kubelet` request for
//! `system:node:<name>` in `system:nodes` is approved when it comes from a bootstrapping
//! node (the join token, group `system:bootstrappers`: "nodeclient") or from the node
//! itself renewing its certificate (the requestor is the subject: "selfnodeclient").
//! Kubernetes asks a SubjectAccessReview for each; the bootstrap roles grant exactly
//! these two cases, which are checked here directly.

use std::sync::Arc;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::{Api, Client};
use spindle_meta::certificates::{
    parse_request, validate_kubelet_client, KUBE_APISERVER_CLIENT_KUBELET, NODES_GROUP,
};

use super::{has_certificate, has_condition, WORKERS};
use crate::runtime::{Action, Cache, Queue};

/// The group of the join token's user (Kubernetes' bootstrap tokens' group).
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";

const NODE_CLIENT: &str = "Auto approving kubelet client certificate after SubjectAccessReview.";
const SELF_NODE_CLIENT: &str =
    "Auto approving self kubelet client certificate after SubjectAccessReview.";

/// The approval message when `csr` is to be approved automatically.
pub fn auto_approval(csr: &CertificateSigningRequest) -> Option<&'static str> {
    if has_condition(csr, "Approved") || has_condition(csr, "Denied") || has_certificate(csr) {
        return None;
    }
    if csr.spec.signer_name != KUBE_APISERVER_CLIENT_KUBELET {
        return None;
    }
    let req = parse_request(&csr.spec.request.0).ok()?;
    let usages = csr.spec.usages.clone().unwrap_or_default();
    validate_kubelet_client(&req, &usages).ok()?;
    let groups = csr.spec.groups.as_deref().unwrap_or_default();
    let in_group = |g: &str| groups.iter().any(|x| x == g);
    if csr.spec.username.as_deref() == Some(req.common_name.as_str()) && in_group(NODES_GROUP) {
        return Some(SELF_NODE_CLIENT);
    }
    if in_group(BOOTSTRAPPERS_GROUP) {
        return Some(NODE_CLIENT);
    }
    None
}

struct Ctx {
    api: Api<CertificateSigningRequest>,
    cache: Arc<Cache<CertificateSigningRequest>>,
}

async fn reconcile(ctx: Arc<Ctx>, name: String) -> Result<Action, kube::Error> {
    let Some(cached) = ctx.cache.get(&name) else {
        return Ok(Action::Done);
    };
    let Some(message) = auto_approval(&cached) else {
        return Ok(Action::Done);
    };
    let mut csr = (*cached).clone();
    csr.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("AutoApproved".into()),
            message: Some(message.into()),
            last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            last_transition_time: None,
        });
    tracing::info!(csr = %name, user = ?csr.spec.username, "node client certificate request approved");
    match ctx
        .api
        .replace_subresource("approval", &name, &PostParams::default(), &csr)
        .await
    {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::Done),
        Err(e) => Err(e),
    }
}

pub async fn run(
    client: Client,
    queue: Arc<Queue<String>>,
    cache: Arc<Cache<CertificateSigningRequest>>,
) {
    for csr in cache.list() {
        if let Some(n) = &csr.metadata.name {
            queue.add(n.clone());
        }
    }
    let ctx = Arc::new(Ctx {
        api: Api::all(client),
        cache,
    });
    queue
        .run(WORKERS, "csrapproving", move |name| {
            reconcile(ctx.clone(), name)
        })
        .await;
}
