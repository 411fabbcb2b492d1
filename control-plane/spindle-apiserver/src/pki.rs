//! The cluster's certificates and credentials, created on first start and reused after:
//! a self-signed CA, the serving certificate, the admin client identity (system:admin in
//! system:masters, as k3s does), the API server's own client identity towards node agents
//! (`kube-apiserver-kubelet-client`, kube-apiserver's `--kubelet-client-certificate`), the
//! node join token and the kubeconfig.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use spindle_meta::token::JoinToken;

/// The user of the API server's client certificate towards agents (kubeadm's name).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

pub struct Pki {
    pub ca_pem: String,
    /// The CA's key, for the controllers' CSR signer.
    pub ca_key_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// What the API server presents to agents: only the bootstrap binding of
    /// `system:kubelet-api-admin` gives this user anything, and no group does.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
    /// The join token, pinning this cluster's CA (`K10<ca hash>::server:<secret>`).
    pub token: JoinToken,
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn host_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not list the host's addresses for the serving certificate");
            Vec::new()
        }
    }
}

fn new_ca() -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "spindle-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn leaf(
    ca_pem: &str,
    ca_key_pem: &str,
    cn: &str,
    orgs: &[&str],
    sans: Vec<SanType>,
    server: bool,
) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).context("parsing the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).context("parsing the CA certificate")?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The names the serving certificate carries: the `kubernetes` Service's DNS names,
/// loopback, the host's name and addresses, and `extra` (--tls-san, the Service address).
fn serving_sans(extra: &[String]) -> Result<Vec<SanType>> {
    let mut sans = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::DnsName("kubernetes".try_into()?),
        SanType::DnsName("kubernetes.default".try_into()?),
        SanType::DnsName("kubernetes.default.svc".try_into()?),
        SanType::DnsName("kubernetes.default.svc.cluster.local".try_into()?),
        SanType::IpAddress("127.0.0.1".parse()?),
    ];
    if let Ok(h) = hostname() {
        if let Ok(d) = h.as_str().try_into() {
            sans.push(SanType::DnsName(d));
        }
    }
    for ip in host_addresses() {
        if !ip.is_loopback() || ip.is_ipv6() {
            sans.push(SanType::IpAddress(ip));
        }
    }
    for s in extra {
        match s.parse::<IpAddr>() {
            Ok(ip) => sans.push(SanType::IpAddress(ip)),
            Err(_) => sans.push(SanType::DnsName(s.as_str().try_into()?)),
        }
    }
    Ok(sans)
}

/// Whether the PEM certificate names every one of `want` (false when it cannot be read).
fn names_all(cert_pem: &str, want: &[SanType]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let has = |w: &SanType| {
        san.value.general_names.iter().any(|g| match (w, g) {
            (SanType::DnsName(d), GeneralName::DNSName(n)) => d.as_str() == *n,
            (SanType::IpAddress(IpAddr::V4(ip)), GeneralName::IPAddress(b)) => {
                *b == ip.octets().as_slice()
            }
            (SanType::IpAddress(IpAddr::V6(ip)), GeneralName::IPAddress(b)) => {
                *b == ip.octets().as_slice()
            }
            _ => false,
        })
    };
    want.iter().all(has)
}

/// Load the PKI under `<data_dir>/server`, creating what is missing.
pub fn ensure(data_dir: &Path, token_flag: Option<&str>, extra_sans: &[String]) -> Result<Pki> {
    let tls = data_dir.join("server/tls");
    fs::create_dir_all(&tls).with_context(|| format!("creating {}", tls.display()))?;
    let (ca_crt, ca_key) = (tls.join("server-ca.crt"), tls.join("server-ca.key"));
    let (ca_pem, ca_key_pem) = match (read(&ca_crt), read(&ca_key)) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let (c, k) = new_ca()?;
            write_private(&ca_key, &k)?;
            write_private(&ca_crt, &c)?;
            (c, k)
        }
    };
    let (srv_crt, srv_key) = (tls.join("serving.crt"), tls.join("serving.key"));
    let sans = serving_sans(extra_sans)?;
    let (serving_cert_pem, serving_key_pem) = match (read(&srv_crt), read(&srv_key)) {
        // A kept certificate must still name every address: a new --tls-san or Service
        // range, or a new host address, gets a new one, as k3s regenerates its listener's.
        (Some(c), Some(k)) if names_all(&c, &sans) => (c, k),
        _ => {
            let (c, k) = leaf(&ca_pem, &ca_key_pem, "spindle-apiserver", &[], sans, true)?;
            write_private(&srv_key, &k)?;
            write_private(&srv_crt, &c)?;
            (c, k)
        }
    };
    let (adm_crt, adm_key) = (tls.join("client-admin.crt"), tls.join("client-admin.key"));
    let (admin_cert_pem, admin_key_pem) = match (read(&adm_crt), read(&adm_key)) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let (c, k) = leaf(
                &ca_pem,
                &ca_key_pem,
                "system:admin",
                &["system:masters"],
                vec![],
                false,
            )?;
            write_private(&adm_key, &k)?;
            write_private(&adm_crt, &c)?;
            (c, k)
        }
    };
    let (kc_crt, kc_key) = (
        tls.join("client-kubelet.crt"),
        tls.join("client-kubelet.key"),
    );
    let (kubelet_client_cert_pem, kubelet_client_key_pem) = match (read(&kc_crt), read(&kc_key)) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let (c, k) = leaf(
                &ca_pem,
                &ca_key_pem,
                KUBELET_CLIENT_USER,
                &[],
                vec![],
                false,
            )?;
            write_private(&kc_key, &k)?;
            write_private(&kc_crt, &c)?;
            (c, k)
        }
    };
    // Join tokens carry the CA's hash, as k3s's do, so an agent holding only the token can
    // fetch /cacerts and verify it is talking to this cluster: K10<sha256(ca)>::server:<secret>.
    let token_path = data_dir.join("server/token");
    let secret = match (token_flag, read(&token_path)) {
        (Some(t), _) => JoinToken::parse(t).context("--token")?.secret().to_string(),
        (None, Some(t)) if !t.trim().is_empty() => JoinToken::parse(&t)
            .with_context(|| format!("reading {}", token_path.display()))?
            .secret()
            .to_string(),
        _ => hex::encode(rand::random::<[u8; 24]>()),
    };
    let token = JoinToken::new(ca_pem.as_bytes(), &secret);
    let text = token.to_string();
    if read(&token_path).map(|t| t.trim().to_string()) != Some(text.clone()) {
        write_private(&token_path, &format!("{text}\n"))?;
    }
    Ok(Pki {
        ca_pem,
        ca_key_pem,
        serving_cert_pem,
        serving_key_pem,
        admin_cert_pem,
        admin_key_pem,
        kubelet_client_cert_pem,
        kubelet_client_key_pem,
        token,
    })
}

fn hostname() -> Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}

/// Write the admin kubeconfig (mode 0600) pointing at `server_url`.
pub fn write_kubeconfig(path: &Path, server_url: &str, pki: &Pki) -> Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&pki.ca_pem),
        server_url,
        b64(&pki.admin_cert_pem),
        b64(&pki.admin_key_pem),
    );
    write_private(path, &cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_serving_certificate_must_name_every_address() {
        let (ca, ca_key) = new_ca().expect("ca");
        let sans = serving_sans(&["10.43.0.1".into(), "api.example.com".into()]).expect("sans");
        let (cert, _) =
            leaf(&ca, &ca_key, "spindle-apiserver", &[], sans.clone(), true).expect("certificate");
        assert!(names_all(&cert, &sans));
        // A new Service range, or a new --tls-san, is not in the kept certificate.
        let moved = serving_sans(&["10.99.0.1".into()]).expect("sans");
        assert!(!names_all(&cert, &moved));
        let renamed = serving_sans(&["other.example.com".into()]).expect("sans");
        assert!(!names_all(&cert, &renamed));
        assert!(!names_all("not a certificate", &sans));
    }
}
