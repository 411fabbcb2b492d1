//! Talking to registries: clients, credentials, and turning oci-client errors
//! into messages a Kubernetes user can act on.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use sha2::{Digest, Sha256};

use crate::error::chain;
use crate::reference::{is_loopback, ImageRef};
use crate::{ImageError, PullSecrets};

pub(crate) const USER_AGENT: &str = concat!("spindle/", env!("CARGO_PKG_VERSION"));

/// oci-client is built with `rustls-tls-no-provider` so the workspace keeps a
/// single crypto backend (ring); reqwest panics when building a client without
/// a process-wide provider, so install ring unless someone already installed one.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How long connecting to a registry may take, for pulls and pushes alike.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Per read, not per request: large layers still download, a stalled registry does not
/// hang a pod start forever.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for one registry. Loopback registries get plain HTTP, all others
/// HTTPS; the choice is per client, so it holds for any `host:port` spelling.
pub(crate) fn new_client(registry: &str, monolithic_push: bool) -> Result<Client, ImageError> {
    install_crypto_provider();
    let protocol = if is_loopback(registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let config = ClientConfig {
        protocol,
        // Indexes are resolved by this crate (Wasm platforms), never by the
        // client's host-platform resolver.
        platform_resolver: None,
        use_monolithic_push: monolithic_push,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: USER_AGENT,
        ..Default::default()
    };
    Client::try_from(config).map_err(|e| {
        ImageError::Registry(format!(
            "cannot set up a client for registry {registry}: {}",
            chain(&e)
        ))
    })
}

/// The credentials to try for an image, best first; anonymous when no secret
/// matches its registry.
pub(crate) fn auth_candidates(secrets: &PullSecrets, image: &ImageRef) -> Vec<RegistryAuth> {
    let creds = secrets.lookup(image.reference.registry(), image.reference.repository());
    if creds.is_empty() {
        vec![RegistryAuth::Anonymous]
    } else {
        creds
            .into_iter()
            .map(|(user, pass)| RegistryAuth::Basic(user, pass))
            .collect()
    }
}

/// A stable key for a credential that does not keep the password readable.
pub(crate) fn auth_fingerprint(auth: &RegistryAuth) -> String {
    let mut h = Sha256::new();
    match auth {
        RegistryAuth::Anonymous => return "anonymous".to_string(),
        RegistryAuth::Basic(user, pass) => {
            h.update(b"basic\0");
            h.update(user.as_bytes());
            h.update(b"\0");
            h.update(pass.as_bytes());
        }
        RegistryAuth::Bearer(token) => {
            h.update(b"bearer\0");
            h.update(token.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// What was being done, for error messages.
pub(crate) struct ErrCtx<'a> {
    /// e.g. `failed to pull image "hello"`.
    pub action: &'a str,
    pub registry: &'a str,
    /// The reference or object concerned, e.g. `127.0.0.1:5000/demo/hello:v1`.
    pub subject: &'a str,
    /// What the user should check when access is refused.
    pub auth_hint: &'a str,
}

pub(crate) fn map_error(err: OciDistributionError, ctx: &ErrCtx<'_>) -> ImageError {
    use OciDistributionError as E;
    let unauthorized = |detail: &str| {
        ImageError::Unauthorized(format!(
            "{}: registry {} refused access to {} ({detail}); {}",
            ctx.action, ctx.registry, ctx.subject, ctx.auth_hint
        ))
    };
    let not_found = |detail: &str| {
        ImageError::NotFound(format!(
            "{}: {} not found in registry {} ({detail})",
            ctx.action, ctx.subject, ctx.registry
        ))
    };
    match err {
        E::UnauthorizedError { .. } => unauthorized("401 Unauthorized"),
        E::AuthenticationFailure(reason) => {
            unauthorized(&format!("token request failed: {}", clip(reason.trim())))
        }
        E::RegistryError { envelope, .. } => {
            let detail = envelope
                .errors
                .iter()
                .map(|e| {
                    if e.message.is_empty() {
                        format!("{:?}", e.code)
                    } else {
                        e.message.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let has = |f: fn(&OciErrorCode) -> bool| envelope.errors.iter().any(|e| f(&e.code));
            if has(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                unauthorized(&detail)
            } else if has(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestBlobUnknown
                )
            }) {
                not_found(&detail)
            } else {
                ImageError::Registry(format!(
                    "{}: registry {} answered: {}",
                    ctx.action,
                    ctx.registry,
                    clip(&detail)
                ))
            }
        }
        E::ServerError { code: 401, .. } => unauthorized("HTTP 401"),
        E::ServerError { code: 403, .. } => unauthorized("HTTP 403 Forbidden"),
        E::ServerError { code: 404, .. } => not_found("HTTP 404"),
        E::ServerError { code, message, .. } => ImageError::Registry(format!(
            "{}: registry {} answered HTTP {code}: {}",
            ctx.action,
            ctx.registry,
            clip(message.trim())
        )),
        E::DigestError(DigestError::VerificationError { expected, actual }) => {
            ImageError::DigestMismatch(format!(
                "{}: content from registry {} does not match its digest (expected {expected}, got {actual})",
                ctx.action, ctx.registry
            ))
        }
        // Some oci-client calls (e.g. blob_exists) turn an HTTP status into a
        // request error; it is an answer from the registry, not a network fault.
        E::RequestError(e) if e.status().is_some() => {
            match e.status().map(|s| s.as_u16()).unwrap_or_default() {
                401 => unauthorized("HTTP 401"),
                403 => unauthorized("HTTP 403 Forbidden"),
                404 => not_found("HTTP 404"),
                code => ImageError::Registry(format!(
                    "{}: registry {} answered HTTP {code}",
                    ctx.action, ctx.registry
                )),
            }
        }
        E::RequestError(e) => ImageError::Registry(format!(
            "{}: cannot reach registry {}: {}",
            ctx.action,
            ctx.registry,
            chain(&e)
        )),
        other => ImageError::Registry(format!(
            "{}: registry {}: {}",
            ctx.action,
            ctx.registry,
            chain(&other)
        )),
    }
}

/// Registry error bodies can be whole HTML pages from a proxy; a waiting
/// message needs only the start.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `sha256:<hex>` of bytes.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest, checked, so it can name a file.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(sha256_hex(&sha256_digest(b"x")).is_some());
        assert!(sha256_hex("sha256:../../etc").is_none());
        assert!(sha256_hex(&format!("sha512:{}", "0".repeat(64))).is_none());
        assert!(sha256_hex(&format!("sha256:{}", "A".repeat(64))).is_none());
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        let long = "é".repeat(400);
        let c = clip(&long);
        assert!(c.len() <= 304);
    }

    #[test]
    fn fingerprints_hide_passwords() {
        let f = auth_fingerprint(&RegistryAuth::Basic("u".into(), "hunter2".into()));
        assert!(!f.contains("hunter2"));
        assert_ne!(
            f,
            auth_fingerprint(&RegistryAuth::Basic("u".into(), "other".into()))
        );
    }
}
