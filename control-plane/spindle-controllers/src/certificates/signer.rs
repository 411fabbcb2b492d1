//! The CSR signer (kube-controller-manager's csrsigning): an approved request of a
//! signer this cluster serves gets a certificate from the cluster CA in
//! `status.certificate`, valid for its `expirationSeconds` (at least ten minutes, at
//! most the signing duration and never past the CA); a request whose subject or usages
//! do not fit its signer gets a Failed condition instead. Requests of other signers are
//! left to whoever signs for them.

use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, Client};
use spindle_meta::certificates::{duration, parse_request, recognize};

use super::{has_certificate, has_condition, Signing, WORKERS};
use crate::runtime::{Action, Cache, Queue};

/// What the signer does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not approved, already failed or issued, or not ours.
    Skip,
    /// The request does not fit its signer: the Failed condition's message.
    Fail(String),
    /// Issue this certificate (PEM).
    Issue(String),
}

/// Decide on `csr` at `now`.
pub fn decide(csr: &CertificateSigningRequest, signing: &Signing, now: SystemTime) -> Decision {
    if !has_condition(csr, "Approved")
        || has_condition(csr, "Denied")
        || has_condition(csr, "Failed")
        || has_certificate(csr)
    {
        return Decision::Skip;
    }
    let req = match parse_request(&csr.spec.request.0) {
        Ok(r) => r,
        // Validation refuses such requests; one stored before cannot be signed.
        Err(e) => return Decision::Fail(format!("unable to parse csr: {e}")),
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    match recognize(&csr.spec.signer_name, &req, &usages) {
        Ok(false) => Decision::Skip,
        Err(msg) => Decision::Fail(msg),
        Ok(true) => {
            let ttl = duration(
                signing.max_duration,
                csr.spec.expiration_seconds.map(i64::from),
            );
            match signing.ca.sign(&req, &usages, ttl, now) {
                Ok(pem) => Decision::Issue(pem),
                Err(e) => Decision::Fail(e.to_string()),
            }
        }
    }
}

struct Ctx {
    api: Api<CertificateSigningRequest>,
    cache: Arc<Cache<CertificateSigningRequest>>,
    signing: Signing,
}

async fn reconcile(ctx: Arc<Ctx>, name: String) -> Result<Action, kube::Error> {
    let Some(cached) = ctx.cache.get(&name) else {
        return Ok(Action::Done);
    };
    let decision = decide(&cached, &ctx.signing, SystemTime::now());
    let mut csr = (*cached).clone();
    let status = csr.status.get_or_insert_with(Default::default);
    match decision {
        Decision::Skip => return Ok(Action::Done),
        Decision::Fail(message) => {
            tracing::info!(csr = %name, %message, "certificate signing request refused by its signer");
            status.conditions.get_or_insert_with(Vec::new).push(
                CertificateSigningRequestCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("SignerValidationFailure".into()),
                    message: Some(message),
                    last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                    last_transition_time: None,
                },
            );
        }
        Decision::Issue(pem) => {
            tracing::info!(csr = %name, signer = %cached.spec.signer_name, "certificate issued");
            status.certificate = Some(ByteString(pem.into_bytes()));
        }
    }
    // The cached resourceVersion makes this a compare-and-swap: a request changed
    // meanwhile is looked at again when its change arrives.
    match ctx
        .api
        .replace_status(&name, &PostParams::default(), &csr)
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
    signing: Signing,
) {
    for csr in cache.list() {
        if let Some(n) = &csr.metadata.name {
            queue.add(n.clone());
        }
    }
    let ctx = Arc::new(Ctx {
        api: Api::all(client),
        cache,
        signing,
    });
    queue
        .run(WORKERS, "csrsigning", move |name| {
            reconcile(ctx.clone(), name)
        })
        .await;
}
