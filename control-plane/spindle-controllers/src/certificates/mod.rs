//! kube-controller-manager's certificate controllers for CertificateSigningRequests:
//! [`signer`] (csrsigning: the cluster CA signs approved requests of the `kubernetes.io`
//! signers it serves, or marks them Failed) and [`approver`] (csrapproving: node client
//! requests from a bootstrapping node, or from a node renewing its own certificate, are
//! approved automatically). Both share one informer and look at every request they see.

pub mod approver;
pub mod signer;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::{Api, Client, ResourceExt};
use spindle_meta::certificates::SigningCa;

use crate::runtime::{informer, watch_config, Change, Queue};

/// Reconciles at once per controller.
const WORKERS: usize = 5;

/// What the signer signs with: the cluster CA and the longest certificate it issues
/// (kube-controller-manager's --cluster-signing-duration).
#[derive(Clone)]
pub struct Signing {
    pub ca: Arc<SigningCa>,
    pub max_duration: Duration,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("max_duration", &self.max_duration)
            .finish_non_exhaustive()
    }
}

pub(crate) fn has_condition(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
}

pub(crate) fn has_certificate(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// Run the approver and (with a CA) the signer, each on its own queue fed by one informer.
pub async fn run(client: Client, signing: Option<Signing>) -> anyhow::Result<()> {
    let approve_q: Arc<Queue<String>> = Queue::new();
    let sign_q: Arc<Queue<String>> = Queue::new();
    let (aq, sq) = (approve_q.clone(), sign_q.clone());
    let cache = informer(
        Api::<CertificateSigningRequest>::all(client.clone()),
        watch_config(),
        None,
        move |ch| {
            if let Change::Upsert { new, .. } = ch {
                aq.add(new.name_any());
                sq.add(new.name_any());
            }
        },
    );
    cache.wait_synced().await;
    let approver = approver::run(client.clone(), approve_q, cache.clone());
    match signing {
        Some(s) => {
            tokio::join!(approver, signer::run(client, sign_q, cache, s));
        }
        None => approver.await,
    }
    Ok(())
}
