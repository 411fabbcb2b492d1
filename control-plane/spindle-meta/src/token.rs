//! The join token, and joining a cluster with nothing but its URL and that token, as a k3s
//! agent does (k3s' `clientaccess`).
//!
//! A full token is `K10<sha256 hex of the CA PEM>::<user>:<secret>` (the server writes
//! `server` as the user). It pins the cluster CA: an agent fetches `/cacerts` without
//! trusting the (not yet known) CA, accepts the body only if its hash matches the token,
//! and from then on talks to the API server with that CA as the only root and the token
//! as bearer credential. A bare secret is accepted too, as by k3s, but pins nothing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};

/// What every full token starts with (k3s' token format version).
pub const PREFIX: &str = "K10";
/// The user a server writes into its tokens.
const SERVER_USER: &str = "server";
const CACERTS_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the join token is empty")]
    Empty,
    #[error("invalid join token format: expected K10<sha256 of the CA>::server:<secret> or a bare secret")]
    Format,
    #[error(
        "the CA served at /cacerts (sha256 {got}) does not match the hash in the join token \
         ({want}): wrong --server for this token, or someone in between"
    )]
    CaMismatch { got: String, want: String },
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lower-case hex sha256 of the CA PEM as `/cacerts` serves it; `None` for a bare
    /// secret.
    ca_hash: Option<String>,
    user: String,
    secret: String,
}

impl JoinToken {
    /// The full token of a cluster whose CA is `ca_pem`.
    pub fn new(ca_pem: &[u8], secret: &str) -> JoinToken {
        JoinToken {
            ca_hash: Some(ca_hash(ca_pem)),
            user: SERVER_USER.to_string(),
            secret: secret.to_string(),
        }
    }

    /// Read a token as a user or a file gives it (surrounding whitespace ignored): the
    /// full form, or a bare secret.
    pub fn parse(token: &str) -> Result<JoinToken, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let Some(rest) = token.strip_prefix(PREFIX) else {
            return Ok(JoinToken {
                ca_hash: None,
                user: SERVER_USER.to_string(),
                secret: token.to_string(),
            });
        };
        let (hash, creds) = rest.split_once("::").ok_or(TokenError::Format)?;
        // The user part does not matter to us (k3s writes `server`, or `node` for agent
        // tokens), only that the secret is non-empty.
        let (user, secret) = creds.split_once(':').ok_or(TokenError::Format)?;
        if secret.is_empty() {
            return Err(TokenError::Format);
        }
        let ca_hash = match hash {
            "" => None,
            h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(h.to_ascii_lowercase())
            }
            _ => return Err(TokenError::Format),
        };
        Ok(JoinToken {
            ca_hash,
            user: user.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The CA hash the token pins, if any.
    pub fn ca_hash(&self) -> Option<&str> {
        self.ca_hash.as_deref()
    }

    /// The secret: what the API server and the agents compare.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Check a CA bundle fetched from `/cacerts` against the pinned hash. A token without
    /// a hash pins nothing and accepts any bundle (callers warn about it).
    pub fn verify_ca(&self, ca_pem: &[u8]) -> Result<(), TokenError> {
        let Some(want) = &self.ca_hash else {
            return Ok(());
        };
        let got = ca_hash(ca_pem);
        if got != *want {
            return Err(TokenError::CaMismatch {
                got,
                want: want.clone(),
            });
        }
        Ok(())
    }
}

/// The full form when a CA is pinned, else the bare secret.
impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ca_hash {
            Some(h) => write!(f, "{PREFIX}{h}::{}:{}", self.user, self.secret),
            None => f.write_str(&self.secret),
        }
    }
}

/// The hash a token pins for a CA PEM: lower-case hex SHA-256 of its bytes.
pub fn ca_hash(ca_pem: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_pem))
}

/// Why joining a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("--server {0:?} is not a URL")]
    NotAUrl(String),
    #[error("--server {0:?} must be an https:// URL")]
    NotHttps(String),
    #[error("fetching {0}/cacerts timed out")]
    Timeout(String),
    #[error("fetching {server}/cacerts: {reason}")]
    Fetch { server: String, reason: String },
    #[error("parsing the CA PEM from /cacerts: {0}")]
    Pem(String),
    #[error("/cacerts returned no PEM certificates")]
    NoCerts,
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
}

/// The DER certificates of a PEM bundle.
pub fn pem_to_der(ca_pem: &[u8]) -> Result<Vec<Vec<u8>>, JoinError> {
    let certs = CertificateDer::pem_slice_iter(ca_pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| JoinError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(JoinError::NoCerts);
    }
    Ok(certs)
}

/// Connect to the API server at `server` with a join token: fetch and pin the CA, then
/// build a client that authenticates with the token as bearer token.
pub async fn connect(server: &str, token: &str) -> Result<kube::Client, JoinError> {
    let cfg = bootstrap_config(server, token).await?;
    kube::Client::try_from(cfg).map_err(JoinError::Client)
}

/// The client configuration of [`connect`]: the server's URL, its CA (fetched from
/// `/cacerts` and checked against the token's hash) as the only root, and the token as
/// bearer token. Agents start from it and swap the token for their own certificate.
pub async fn bootstrap_config(server: &str, token: &str) -> Result<kube::Config, JoinError> {
    let parsed = JoinToken::parse(token)?;
    let uri: Uri = server
        .trim_end_matches('/')
        .parse()
        .map_err(|_| JoinError::NotAUrl(server.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(JoinError::NotHttps(server.to_string()));
    }
    let ca_pem = tokio::time::timeout(CACERTS_TIMEOUT, fetch_cacerts(&uri))
        .await
        .map_err(|_| JoinError::Timeout(server.to_string()))?
        .map_err(|reason| JoinError::Fetch {
            server: server.to_string(),
            reason,
        })?;
    if parsed.ca_hash().is_none() {
        tracing::warn!(
            "the token is not of the form K10<ca-hash>::server:<secret>; trusting the CA from \
             {server}/cacerts without verifying it"
        );
    }
    parsed.verify_ca(&ca_pem)?;
    let mut cfg = kube::Config::new(uri);
    cfg.root_cert = Some(pem_to_der(&ca_pem)?);
    // The token as given: the API server accepts the full token and its bare secret.
    cfg.auth_info.token = Some(secrecy::SecretString::from(token.trim().to_string()));
    Ok(cfg)
}

/// `GET <server>/cacerts` over TLS without verifying the server: at this point we do not
/// know the CA yet, and the body is checked against the token's hash instead.
async fn fetch_cacerts(uri: &Uri) -> Result<Vec<u8>, String> {
    let host = uri.host().ok_or("the server URL has no host")?;
    // http::Uri keeps the brackets of an IPv6 literal; sockets and SNI want it bare.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let tls = crate::tls::accept_any_config().map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("connecting to {bare_host}:{port}: {e}"))?;
    let name = ServerName::try_from(bare_host.to_string())
        .map_err(|_| format!("{bare_host:?} is not a valid TLS server name"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "/cacerts connection ended");
        }
    });
    let path = format!("{}/cacerts", uri.path().trim_end_matches('/'));
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        let head = String::from_utf8_lossy(&body[..body.len().min(200)]);
        return Err(format!("HTTP {status}: {head}"));
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests;
