//! A node's client certificate through a CertificateSigningRequest (the kubelet's TLS
//! bootstrap): a new key and a request for `system:node:<name>` in `system:nodes` to
//! `kubernetes.io/kube-apiserver-client-kubelet`, which the controllers approve for
//! join-token holders (and for nodes renewing their own) and sign; then a client that
//! authenticates with the issued certificate. [`request_for`] serves the node's serving
//! certificate (`kubernetes.io/kubelet-serving`) too. Shared by the node agent, which keeps and
//! renews the certificate, and hollow nodes, which get one per simulated node.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

use crate::certificates::{
    new_request, KUBE_APISERVER_CLIENT_KUBELET, NODES_GROUP, NODE_USER_PREFIX,
};

/// The first wait between looks at the request; doubled up to [`MAX_POLL`]. Approval
/// and signing take a few milliseconds on an idle control plane, and many nodes may be
/// waiting at once on a busy one.
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum NodeCertError {
    #[error("making the key and request: {0}")]
    Request(#[from] rcgen::Error),
    #[error("creating the node's certificate signing request: {0}")]
    Create(#[source] kube::Error),
    #[error("reading certificate signing request {name}: {source}")]
    Get {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("certificate signing request {name} {how}: {message}")]
    Refused {
        name: String,
        how: String,
        message: String,
    },
    #[error("certificate signing request {name} was not signed within {timeout:?}")]
    Timeout { name: String, timeout: Duration },
    #[error("the certificate issued for {0} is not PEM")]
    NotPem(String),
    #[error("building the node's API client: {0}")]
    Client(#[source] kube::Error),
}

/// An issued certificate and its key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Ask, through `client` (the join token's, or the node's current certificate's), for a
/// client certificate for node `node_name`, and wait up to `timeout` for it.
pub async fn request(
    client: kube::Client,
    node_name: &str,
    timeout: Duration,
) -> Result<Issued, NodeCertError> {
    let want = Wanted {
        signer: KUBE_APISERVER_CLIENT_KUBELET,
        node_name,
        // An ECDSA key: no key encipherment (the kubelet's usages for such keys).
        usages: &["digital signature", "client auth"],
        dns_names: &[],
        ips: &[],
    };
    request_for(client, &want, timeout).await
}

/// A certificate a node asks for: `system:node:<name>` in `system:nodes`, from `signer`
/// (its client certificate, or its serving certificate for `dns_names` and `ips`).
pub struct Wanted<'a> {
    pub signer: &'a str,
    pub node_name: &'a str,
    pub usages: &'a [&'a str],
    pub dns_names: &'a [String],
    pub ips: &'a [std::net::IpAddr],
}

/// Make a key and a request for `want` through `client`, and wait up to `timeout`
/// for the certificate.
pub async fn request_for(
    client: kube::Client,
    want: &Wanted<'_>,
    timeout: Duration,
) -> Result<Issued, NodeCertError> {
    let cn = format!("{NODE_USER_PREFIX}{}", want.node_name);
    let (csr_pem, key_pem) = new_request(&cn, &[NODES_GROUP], want.dns_names, want.ips)?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"generateName": "node-csr-"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(&csr_pem),
            "signerName": want.signer,
            "usages": want.usages,
        }
    }))
    .map_err(|e| NodeCertError::Create(kube::Error::SerdeError(e)))?;
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(NodeCertError::Create)?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::debug!(csr = %name, user = %cn, "waiting for the node's client certificate");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut poll = FIRST_POLL;
    loop {
        let got = api.get(&name).await.map_err(|source| NodeCertError::Get {
            name: name.clone(),
            source,
        })?;
        let status = got.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                return Err(NodeCertError::Refused {
                    name,
                    how: c.type_.to_lowercase(),
                    message: c.message.clone().unwrap_or_default(),
                });
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert_pem = String::from_utf8(cert.0).map_err(|_| NodeCertError::NotPem(name))?;
            return Ok(Issued { cert_pem, key_pem });
        }
        if tokio::time::Instant::now() > deadline {
            return Err(NodeCertError::Timeout { name, timeout });
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(MAX_POLL);
    }
}

/// A client for `base`'s server and CA that authenticates with `issued` (and not with
/// whatever token `base` carried).
pub fn client(base: &kube::Config, issued: &Issued) -> Result<kube::Client, NodeCertError> {
    let mut cfg = base.clone();
    cfg.auth_info.token = None;
    cfg.auth_info.token_file = None;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    cfg.auth_info.client_certificate_data = Some(b64(&issued.cert_pem));
    cfg.auth_info.client_key_data = Some(b64(&issued.key_pem).into());
    kube::Client::try_from(cfg).map_err(NodeCertError::Client)
}
