//! The CSR approver (kube-controller-manager's csrapproving, its node client
//! recognizers): a `kubernetes.io/kube-apiserver-client-kubelet` request for
//! `system:node:<name>` in `system:nodes` is approved when it comes from a bootstrapping
//! node (the join token, group `system:bootstrappers`: "nodeclient") or from the node
//! itself renewing its certificate (the requestor is the subject: "selfnodeclient").
//! Kubernetes asks a SubjectAccessReview for each; the bootstrap roles grant exactly
//! these two cases, which are checked here directly.
//!
//! Unlike kube-controller-manager, node serving certificates
//! (`kubernetes.io/kubelet-serving`) are approved too: Kubernetes leaves them to an
//! administrator (or a third-party approver), but a k3s-style cluster whose every node
//! waited for a human before `kubectl logs` worked would be broken out of the box. The
//! rule is narrow so that a node gets a certificate for itself only ([`serving_approval`]):
//! the requestor is the node the subject names, and every name in the request is on
//! that node's own Node object.

use std::sync::Arc;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::{Api, Client};
use spindle_meta::certificates::{
    parse_request, validate_kubelet_client, validate_kubelet_serving, KUBELET_SERVING,
    KUBE_APISERVER_CLIENT_KUBELET, NODES_GROUP, NODE_USER_PREFIX,
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

const SELF_NODE_SERVING: &str =
    "Auto approving self kubelet serving certificate: the node's own name and addresses.";

/// The node a `kubernetes.io/kubelet-serving` request not yet decided is for, by its
/// subject, when the signer's own rules hold (else nothing to approve).
pub fn serving_request_node(csr: &CertificateSigningRequest) -> Option<String> {
    if has_condition(csr, "Approved") || has_condition(csr, "Denied") || has_certificate(csr) {
        return None;
    }
    if csr.spec.signer_name != KUBELET_SERVING {
        return None;
    }
    let req = parse_request(&csr.spec.request.0).ok()?;
    let usages = csr.spec.usages.clone().unwrap_or_default();
    validate_kubelet_serving(&req, &usages).ok()?;
    req.common_name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// The approval message when a serving request is for `node` and comes from it: the
/// requestor is `system:node:<name>` in `system:nodes` and the subject's CN, O is exactly
/// `system:nodes`, the usages are the signer's, and every DNS name is the node's name
/// (or a host name on its Node) and every IP one of its Node's addresses.
pub fn serving_approval(csr: &CertificateSigningRequest, node: &Node) -> Option<&'static str> {
    let name = serving_request_node(csr)?;
    if node.metadata.name.as_deref() != Some(name.as_str()) {
        return None;
    }
    let req = parse_request(&csr.spec.request.0).ok()?;
    let groups = csr.spec.groups.as_deref().unwrap_or_default();
    if csr.spec.username.as_deref() != Some(req.common_name.as_str())
        || !groups.iter().any(|g| g == NODES_GROUP)
    {
        return None;
    }
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    let dns_ok = req.dns_names.iter().all(|d| {
        *d == name
            || addresses.iter().any(|a| {
                matches!(a.type_.as_str(), "Hostname" | "InternalDNS" | "ExternalDNS")
                    && a.address == *d
            })
    });
    let ip_ok = req.ip_addresses.iter().all(|ip| {
        addresses.iter().any(|a| {
            matches!(a.type_.as_str(), "InternalIP" | "ExternalIP")
                && a.address.parse::<std::net::IpAddr>().ok() == Some(*ip)
        })
    });
    (dns_ok && ip_ok).then_some(SELF_NODE_SERVING)
}

struct Ctx {
    nodes: Api<Node>,
    api: Api<CertificateSigningRequest>,
    cache: Arc<Cache<CertificateSigningRequest>>,
}

async fn reconcile(ctx: Arc<Ctx>, name: String) -> Result<Action, kube::Error> {
    let Some(cached) = ctx.cache.get(&name) else {
        return Ok(Action::Done);
    };
    let message = match serving_request_node(&cached) {
        // The Node as it is now: a request naming an address the node no longer has is
        // not approved.
        Some(node) => match ctx.nodes.get_opt(&node).await? {
            Some(node) => serving_approval(&cached, &node),
            None => None,
        },
        None => auto_approval(&cached),
    };
    let Some(message) = message else {
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
    tracing::info!(csr = %name, user = ?csr.spec.username, signer = %csr.spec.signer_name, "node certificate request approved");
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
        nodes: Api::all(client.clone()),
        api: Api::all(client),
        cache,
    });
    queue
        .run(WORKERS, "csrapproving", move |name| {
            reconcile(ctx.clone(), name)
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_meta::certificates::new_request;
    use std::net::IpAddr;

    fn node(name: &str, ip: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ]},
        }))
        .expect("node")
    }

    /// A serving request with subject `cn` in `orgs` for `dns` and `ips`, made by
    /// `requestor` (in system:nodes).
    fn csr(
        requestor: &str,
        cn: &str,
        orgs: &[&str],
        dns: &[&str],
        ips: &[&str],
        usages: &[&str],
    ) -> CertificateSigningRequest {
        let dns: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
        let ips: Vec<IpAddr> = ips.iter().map(|i| i.parse().expect("ip")).collect();
        let (pem, _) = new_request(cn, orgs, &dns, &ips).expect("request");
        let mut csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {
                "request": "",
                "signerName": KUBELET_SERVING,
                "usages": usages,
                "username": requestor,
                "groups": ["system:nodes", "system:authenticated"],
            },
        }))
        .expect("csr");
        csr.spec.request = k8s_openapi::ByteString(pem.into_bytes());
        csr
    }

    const USAGES: &[&str] = &["digital signature", "server auth"];

    #[test]
    fn a_node_gets_a_serving_certificate_for_its_own_name_and_addresses_only() {
        let n1 = node("n1", "10.0.0.1");
        let own = csr(
            "system:node:n1",
            "system:node:n1",
            &["system:nodes"],
            &["n1"],
            &["10.0.0.1"],
            USAGES,
        );
        assert_eq!(serving_request_node(&own).as_deref(), Some("n1"));
        assert_eq!(serving_approval(&own, &n1), Some(SELF_NODE_SERVING));
        // With key encipherment too (RSA keys).
        let rsa_usages = ["digital signature", "key encipherment", "server auth"];
        let with_ke = csr(
            "system:node:n1",
            "system:node:n1",
            &["system:nodes"],
            &["n1"],
            &["10.0.0.1"],
            &rsa_usages,
        );
        assert_eq!(serving_approval(&with_ke, &n1), Some(SELF_NODE_SERVING));

        let refused = [
            // Another node's name or address.
            csr(
                "system:node:n1",
                "system:node:n1",
                &["system:nodes"],
                &["n2"],
                &["10.0.0.1"],
                USAGES,
            ),
            csr(
                "system:node:n1",
                "system:node:n1",
                &["system:nodes"],
                &["n1"],
                &["10.0.0.2"],
                USAGES,
            ),
            // Asked by another node, or by someone who is not a node.
            csr(
                "system:node:n2",
                "system:node:n1",
                &["system:nodes"],
                &["n1"],
                &["10.0.0.1"],
                USAGES,
            ),
            csr(
                "jane",
                "system:node:n1",
                &["system:nodes"],
                &["n1"],
                &["10.0.0.1"],
                USAGES,
            ),
            // Not exactly system:nodes, or usages the signer does not allow.
            csr(
                "system:node:n1",
                "system:node:n1",
                &["system:masters"],
                &["n1"],
                &["10.0.0.1"],
                USAGES,
            ),
            csr(
                "system:node:n1",
                "system:node:n1",
                &["system:nodes"],
                &["n1"],
                &["10.0.0.1"],
                &["digital signature", "server auth", "client auth"],
            ),
        ];
        for (i, c) in refused.iter().enumerate() {
            assert_eq!(serving_approval(c, &n1), None, "request {i}");
        }
        // Checked against the Node the subject names, not any Node.
        let n2 = node("n2", "10.0.0.2");
        let for_n2 = csr(
            "system:node:n1",
            "system:node:n1",
            &["system:nodes"],
            &["n2"],
            &["10.0.0.2"],
            USAGES,
        );
        assert_eq!(serving_approval(&for_n2, &n2), None);
        // The client-certificate rules do not approve serving requests.
        assert_eq!(auto_approval(&own), None);
    }
}
