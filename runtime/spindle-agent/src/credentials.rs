//! The agent's own API credential, as the kubelet's TLS bootstrap and client certificate
//! rotation: the join token only bootstraps. With it the agent asks for a client
//! certificate for `system:node:<name>` in `system:nodes` (a CertificateSigningRequest
//! to `kubernetes.io/kube-apiserver-client-kubelet`, which the controllers approve for
//! token holders and sign), keeps the certificate and its key under
//! `<data dir>/pki/` (0600), and talks to the API server with it from then on. At a
//! random point between 70 % and 90 % of the certificate's life it asks for the next one
//! with the current certificate (the node renewing its own), and new connections use
//! the new certificate.
//!
//! A kept certificate that is still valid is used without the token at all, as the
//! kubelet does with its `kubelet-client-current.pem`. The node's serving certificate
//! ([`crate::serving`]) is kept and renewed the same way.

use std::path::{Path, PathBuf};

use crate::paths::AgentPaths;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine;
use spindle_meta::certificates::NODE_USER_PREFIX;
use spindle_meta::node_certificate::{self, Issued};

/// How long the agent waits for its request to be approved and signed before it
/// gives up (and, as a process, is restarted by whoever runs it).
const ISSUE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A failed renewal is tried again after this long.
pub(crate) const RENEW_RETRY: Duration = Duration::from_secs(30);

/// The validity of a PEM certificate, as Unix seconds, and its subject's CN.
pub(crate) fn validity(cert_pem: &[u8]) -> Option<(i64, i64, String)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
        cn,
    ))
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// When to renew a certificate valid from `not_before` to `not_after`: at `jitter`
/// (0..1) of the way between 70 % and 90 % of its life, as the kubelet's
/// `nextRotationDeadline`.
pub fn renewal_time(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    // Rounded, not truncated: 0.7 + 0.2 is 0.8999… in binary floating point.
    not_before + (life * (0.7 + 0.2 * jitter.clamp(0.0, 1.0))).round() as i64
}

/// The node's credential: the client the agent uses, whose certificate renewal swaps.
pub struct NodeCredential {
    base: kube::Config,
    node_name: String,
    dir: PathBuf,
    current: RwLock<kube::Client>,
}

impl NodeCredential {
    fn client_for(&self, cert_pem: &str, key_pem: &str) -> Result<kube::Client> {
        let issued = Issued {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        };
        Ok(node_certificate::client(&self.base, &issued)?)
    }

    fn client(&self) -> kube::Client {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ask for a certificate through `client` and wait until it is issued; keep it.
    async fn request(&self, client: kube::Client) -> Result<(String, String)> {
        let issued = node_certificate::request(client, &self.node_name, ISSUE_TIMEOUT).await?;
        self.keep(&issued.cert_pem, &issued.key_pem)?;
        tracing::info!(node = %self.node_name, "node client certificate issued");
        Ok((issued.cert_pem, issued.key_pem))
    }

    fn keep(&self, cert: &str, key: &str) -> Result<()> {
        write_private(&self.dir.join("client.key"), key)?;
        write_private(&self.dir.join("client.crt"), cert)
    }

    /// Renew at 70-90 % of each certificate's life, for ever.
    async fn rotate(self: Arc<Self>, mut cert_pem: String) {
        loop {
            let Some((from, to, _)) = validity(cert_pem.as_bytes()) else {
                return;
            };
            let at = renewal_time(from, to, rand::random::<f64>());
            let wait = u64::try_from(at - unix_now()).unwrap_or(0);
            tracing::info!(
                renew_in_s = wait,
                "node client certificate rotation scheduled"
            );
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match self.request(self.client()).await {
                Ok((cert, key)) => match self.client_for(&cert, &key) {
                    Ok(c) => {
                        *self.current.write().unwrap_or_else(|p| p.into_inner()) = c;
                        cert_pem = cert;
                    }
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "using the renewed certificate")
                    }
                },
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "renewing the node client certificate"
                    );
                    tokio::time::sleep(RENEW_RETRY).await;
                }
            }
        }
    }
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The node's API client: its kept certificate while valid (no token needed then), else
/// a new one obtained with the join token; renewed in the background before it expires.
/// The credential is also written as `<pki>/kubeconfig` (as the kubelet's
/// `kubelet.conf`), for whoever acts as the node on this host.
pub async fn node_client(
    server: &str,
    token: Option<&str>,
    node_name: &str,
    data_dir: &Path,
) -> Result<kube::Client> {
    let dir = AgentPaths::new(data_dir).pki();
    let want_cn = format!("{NODE_USER_PREFIX}{node_name}");
    let usable = |cert: &str| {
        validity(cert.as_bytes()).is_some_and(|(_, to, cn)| cn == want_cn && to > unix_now() + 60)
    };
    let kept = match (
        std::fs::read_to_string(dir.join("client.crt")),
        std::fs::read_to_string(dir.join("client.key")),
        std::fs::read_to_string(dir.join("ca.crt")),
    ) {
        (Ok(c), Ok(k), Ok(ca)) if usable(&c) => Some((c, k, ca)),
        _ => None,
    };
    let base = match (&kept, token) {
        (Some((_, _, ca)), _) => {
            let mut cfg = kube::Config::new(
                server
                    .trim_end_matches('/')
                    .parse()
                    .context("--server is not a URL")?,
            );
            cfg.root_cert = Some(spindle_meta::token::pem_to_der(ca.as_bytes())?);
            cfg
        }
        (None, Some(t)) => spindle_meta::token::bootstrap_config(server, t).await?,
        (None, None) => bail!(
            "no valid node certificate in {} and no join token to get one",
            dir.display()
        ),
    };
    let cred = Arc::new(NodeCredential {
        base: base.clone(),
        node_name: node_name.to_string(),
        dir: dir.clone(),
        current: RwLock::new(kube::Client::try_from(base.clone())?),
    });
    let (cert, key) = match kept {
        Some((c, k, _)) => (c, k),
        None => {
            let bootstrap =
                kube::Client::try_from(base.clone()).context("building the bootstrap client")?;
            let issued = cred.request(bootstrap).await?;
            let ca: Vec<String> = base
                .root_cert
                .iter()
                .flatten()
                .map(|der| pem_encode("CERTIFICATE", der))
                .collect();
            write_private(&dir.join("ca.crt"), &ca.concat())?;
            issued
        }
    };
    write_kubeconfig(&dir, server)?;
    *cred.current.write().unwrap_or_else(|p| p.into_inner()) = cred.client_for(&cert, &key)?;
    tokio::spawn(cred.clone().rotate(cert));
    // Every request goes through whichever client holds the current certificate.
    let svc = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
        let client = cred.client();
        async move { client.send(req).await }
    });
    Ok(kube::Client::new(svc, "default"))
}

/// The cluster CA (PEM) as [`node_client`] keeps it: what the agent's streaming
/// endpoint trusts its callers' certificates to.
pub fn cluster_ca(data_dir: &Path) -> Result<String> {
    let path = AgentPaths::new(data_dir).pki().join("ca.crt");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A kubeconfig naming the kept certificate files, which rotation replaces in place.
fn write_kubeconfig(dir: &Path, server: &str) -> Result<()> {
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    certificate-authority: {ca}\n    server: {server}\n\
         contexts:\n- name: default\n  context:\n    cluster: default\n    user: default\ncurrent-context: default\n\
         users:\n- name: default\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n",
        ca = dir.join("ca.crt").display(),
        crt = dir.join("client.crt").display(),
        key = dir.join("client.key").display(),
    );
    write_private(&dir.join("kubeconfig"), &cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_70_and_90_percent_of_the_life() {
        assert_eq!(renewal_time(1000, 2000, 0.0), 1700);
        assert_eq!(renewal_time(1000, 2000, 1.0), 1900);
        assert_eq!(renewal_time(1000, 2000, 0.5), 1800);
        assert_eq!(renewal_time(1000, 2000, 7.0), 1900);
    }
}
