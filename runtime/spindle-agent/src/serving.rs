//! The streaming endpoint's serving certificate, as the kubelet's `serverTLSBootstrap`:
//! a CertificateSigningRequest to `kubernetes.io/kubelet-serving` for
//! `system:node:<name>` in `system:nodes`, naming only the node's name and its InternalIP,
//! signed by the cluster CA (so the API server verifies the agent against the CA, for
//! the address it dials, instead of trusting a fingerprint written on the Node). The
//! certificate and its key are kept under `<data dir>/pki/` (0600) and renewed at a
//! random point between 70 % and 90 % of the certificate's life; each new TLS handshake
//! uses the current one. Until the first is issued the endpoint refuses handshakes, as
//! the kubelet's does.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use spindle_meta::certificates::{KUBELET_SERVING, NODE_USER_PREFIX};
use x509_parser::extensions::GeneralName;

use spindle_meta::node_certificate::{request_for, Wanted};

use crate::credentials::{self, renewal_time, unix_now, validity};

/// How long one request may wait for approval before it is made again.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const CERT_FILE: &str = "server.crt";
const KEY_FILE: &str = "server.key";

/// The current serving certificate, for every new handshake.
#[derive(Debug, Default)]
pub struct ServingCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ServingCert {
    /// Serve with `cert_pem` (and its chain) and `key_pem` from now on.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("the serving certificate is not PEM")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .context("the serving key is not PEM")?;
        let provider = rustls::crypto::ring::default_provider();
        let key = provider
            .key_provider
            .load_private_key(key)
            .context("loading the serving key")?;
        let certified = CertifiedKey::new(chain, key);
        // A key kept from another certificate (a crash between the two writes) would
        // fail every handshake; refused here, a new certificate is requested instead.
        certified
            .keys_match()
            .context("the serving key does not match its certificate")?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(certified));
        Ok(())
    }
}

/// What the node's serving certificate names: its name and its InternalIP.
#[derive(Clone, Debug)]
pub struct Identity {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// `<data dir>/pki`.
    pub dir: PathBuf,
}

impl Identity {
    fn dns_names(&self) -> Vec<String> {
        vec![self.node_name.clone()]
    }

    /// Whether `cert_pem` is this node's and still good for more than a minute.
    fn fits(&self, cert_pem: &str) -> bool {
        let cn = format!("{NODE_USER_PREFIX}{}", self.node_name);
        let Some((_, to, got_cn)) = validity(cert_pem.as_bytes()) else {
            return false;
        };
        got_cn == cn && to > unix_now() + 60 && sans(cert_pem) == Some(self.wanted_sans())
    }

    fn wanted_sans(&self) -> (Vec<String>, Vec<IpAddr>) {
        (self.dns_names(), vec![self.node_ip])
    }
}

/// A certificate's DNS and IP subject alternative names.
fn sans(cert_pem: &str) -> Option<(Vec<String>, Vec<IpAddr>)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                    _ => return None,
                },
                _ => {}
            }
        }
    }
    Some((dns, ips))
}

/// Keep `serving` holding a valid certificate for `id` for ever: the kept one while it
/// fits, else a new one through `client` (the node's own credential), renewed before
/// it expires. Run after the Node is registered: the approver checks the request's
/// names against the Node's addresses.
pub async fn run(serving: Arc<ServingCert>, client: kube::Client, id: Identity) {
    let kept = match (
        std::fs::read_to_string(id.dir.join(CERT_FILE)),
        std::fs::read_to_string(id.dir.join(KEY_FILE)),
    ) {
        (Ok(c), Ok(k)) if id.fits(&c) => match serving.set(&c, &k) {
            Ok(()) => Some(c),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "the kept serving certificate");
                None
            }
        },
        _ => None,
    };
    let mut cert_pem = match kept {
        Some(c) => c,
        None => obtain(&serving, &client, &id).await,
    };
    loop {
        let Some((from, to, _)) = validity(cert_pem.as_bytes()) else {
            return;
        };
        let at = renewal_time(from, to, rand::random::<f64>());
        let wait = u64::try_from(at - unix_now()).unwrap_or(0);
        tracing::info!(
            renew_in_s = wait,
            "node serving certificate rotation scheduled"
        );
        tokio::time::sleep(Duration::from_secs(wait)).await;
        cert_pem = obtain(&serving, &client, &id).await;
    }
}

/// A new serving certificate, tried until one is issued; installed and kept.
async fn obtain(serving: &ServingCert, client: &kube::Client, id: &Identity) -> String {
    loop {
        match request(serving, client, id).await {
            Ok(cert) => return cert,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "obtaining the node serving certificate"
                );
                tokio::time::sleep(credentials::RENEW_RETRY).await;
            }
        }
    }
}

async fn request(serving: &ServingCert, client: &kube::Client, id: &Identity) -> Result<String> {
    let want = Wanted {
        signer: KUBELET_SERVING,
        node_name: &id.node_name,
        // An ECDSA key: no key encipherment (the kubelet's usages for such keys).
        usages: &["digital signature", "server auth"],
        dns_names: &id.dns_names(),
        ips: &[id.node_ip],
    };
    let issued = request_for(client.clone(), &want, ISSUE_TIMEOUT).await?;
    tracing::info!(node = %id.node_name, "node serving certificate issued");
    let (cert, key) = (issued.cert_pem, issued.key_pem);
    serving.set(&cert, &key)?;
    credentials::write_private(&id.dir.join(KEY_FILE), &key)?;
    credentials::write_private(&id.dir.join(CERT_FILE), &cert)?;
    Ok(cert)
}
