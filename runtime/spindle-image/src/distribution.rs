//! The pull side of the OCI distribution API, with every body read under a
//! byte limit.
//!
//! Hand-written rather than oci-client's pull calls: oci-client 0.18 reads
//! manifest, token and error bodies whole (`res.bytes()`, `res.text()`) with
//! no limit, and exposes neither its HTTP client nor a streaming manifest
//! call, so a registry named by any pod could stream gigabytes into the agent
//! before any size check (review SPN-20). What a pull needs is small: GET and
//! HEAD of a manifest, a streamed blob GET, and the token exchange a
//! registry's `WWW-Authenticate` challenge asks for. Pushes still use
//! oci-client (they send, the user chose the registry).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use crate::error::chain;
use crate::reference::is_loopback;
use crate::registry::{
    clip, install_crypto_provider, map_error, sha256_digest, ErrCtx, CONNECT_TIMEOUT, READ_TIMEOUT,
    USER_AGENT,
};
use crate::ImageError;

/// A token answer is a small JSON object; real ones are a few KiB.
const MAX_TOKEN_BYTES: usize = 1 << 20;
/// Error bodies only feed a message clipped to a few hundred characters.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// A token server's refusal is reflected into the pod's message: its start only.
const MAX_TOKEN_ERROR_BYTES: usize = 256;
/// reqwest's default redirect limit, kept with the custom policy.
const MAX_REDIRECTS: usize = 10;
/// Repositories whose authorization is remembered per client; beyond this the
/// map is emptied, which only costs a token exchange.
const MAX_REMEMBERED: usize = 256;

/// Requests to one registry with one credential. Cheap to clone; clones share
/// the connection pool and the authorizations learnt from challenges.
#[derive(Clone)]
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    scheme: &'static str,
    auth: RegistryAuth,
    /// `Authorization` value per repository, learnt from a 401 challenge.
    authorized: Arc<Mutex<HashMap<String, HeaderValue>>>,
}

/// A manifest as sent, with the digest the registry reported for it.
pub(crate) struct Manifest {
    pub body: Bytes,
    pub reported_digest: Option<String>,
}

impl RegistryClient {
    /// Loopback registries get plain HTTP, all others HTTPS, as for pushes.
    pub(crate) fn new(registry: &str, auth: RegistryAuth) -> Result<Self, ImageError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // The overall bound for manifests is the caller's deadline.
            .read_timeout(READ_TIMEOUT)
            .user_agent(USER_AGENT)
            // A registry or token realm must not send the node, by a redirect, where
            // it may not send it directly (see `transport_allowed`).
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if transport_allowed(attempt.url()) {
                    attempt.follow()
                } else {
                    let refused = format!(
                        "redirect to {} refused: only HTTPS, or plain HTTP to this machine",
                        clip(attempt.url().as_str())
                    );
                    attempt.error(refused)
                }
            }))
            .build()
            .map_err(|e| {
                ImageError::Registry(format!(
                    "cannot set up a client for registry {registry}: {}",
                    chain(&e)
                ))
            })?;
        let scheme = if is_loopback(registry) {
            "http"
        } else {
            "https"
        };
        Ok(RegistryClient {
            http,
            scheme,
            auth,
            authorized: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// GET of a manifest or index, refused once it passes `max` bytes.
    pub(crate) async fn manifest(
        &self,
        reference: &Reference,
        accept: &[&str],
        max: u64,
        ctx: &ErrCtx<'_>,
    ) -> Result<Manifest, ImageError> {
        let url = self.manifest_url(reference);
        let mut res = self.send(Method::GET, &url, reference, accept, ctx).await?;
        expect_ok(&mut res, &url, ctx).await?;
        let reported_digest = digest_header(&res);
        let body = read_manifest(res, max, ctx).await?;
        Ok(Manifest {
            body,
            reported_digest,
        })
    }

    /// The digest a tag currently names, from a HEAD; registries that do not
    /// report it get a (bounded) GET and the body's digest.
    pub(crate) async fn manifest_digest(
        &self,
        reference: &Reference,
        accept: &[&str],
        max: u64,
        ctx: &ErrCtx<'_>,
    ) -> Result<String, ImageError> {
        let url = self.manifest_url(reference);
        let mut res = self
            .send(Method::HEAD, &url, reference, accept, ctx)
            .await?;
        expect_ok(&mut res, &url, ctx).await?;
        if let Some(digest) = digest_header(&res) {
            return Ok(digest);
        }
        let manifest = self.manifest(reference, accept, max, ctx).await?;
        Ok(sha256_digest(&manifest.body))
    }

    /// A blob GET answered 200; its body is for the caller to stream (it
    /// checks the declared size and digest). A `Content-Length` over `size`
    /// is refused before reading.
    pub(crate) async fn blob(
        &self,
        reference: &Reference,
        digest: &str,
        size: u64,
        ctx: &ErrCtx<'_>,
    ) -> Result<Response, ImageError> {
        let url = format!(
            "{}://{}/v2/{}/blobs/{digest}",
            self.scheme,
            reference.resolve_registry(),
            reference.repository()
        );
        let mut res = self.send(Method::GET, &url, reference, &[], ctx).await?;
        expect_ok(&mut res, &url, ctx).await?;
        match res.content_length() {
            Some(len) if len > size => Err(ImageError::DigestMismatch(format!(
                "{}: registry {} sends {len} bytes for blob {digest}, its manifest declares {size}",
                ctx.action, ctx.registry
            ))),
            _ => Ok(res),
        }
    }

    fn manifest_url(&self, reference: &Reference) -> String {
        let tag = reference
            .digest()
            .or_else(|| reference.tag())
            .unwrap_or("latest");
        format!(
            "{}://{}/v2/{}/manifests/{tag}",
            self.scheme,
            reference.resolve_registry(),
            reference.repository()
        )
    }

    /// Sends with the authorization known for the repository; on a 401, does
    /// what the challenge asks once and sends again.
    async fn send(
        &self,
        method: Method,
        url: &str,
        reference: &Reference,
        accept: &[&str],
        ctx: &ErrCtx<'_>,
    ) -> Result<Response, ImageError> {
        let repo = reference.repository();
        let send = |authorization: Option<HeaderValue>| {
            let mut req = self.http.request(method.clone(), url);
            if !accept.is_empty() {
                req = req.header(ACCEPT, accept.join(", "));
            }
            if let Some(value) = authorization {
                req = req.header(AUTHORIZATION, value);
            }
            req.send()
        };
        let res = send(self.remembered(repo))
            .await
            .map_err(|e| request_error(e, ctx))?;
        if res.status() != StatusCode::UNAUTHORIZED {
            return Ok(res);
        }
        let Some(value) = self.answer_challenge(&res, repo, ctx).await? else {
            return Ok(res);
        };
        self.remember(repo, value.clone());
        send(Some(value)).await.map_err(|e| request_error(e, ctx))
    }

    fn remembered(&self, repo: &str) -> Option<HeaderValue> {
        let map = self
            .authorized
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(repo).cloned()
    }

    fn remember(&self, repo: &str, value: HeaderValue) {
        let mut map = self
            .authorized
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
        map.insert(repo.to_string(), value);
    }

    /// The `Authorization` a 401's challenge asks for: a bearer token from the
    /// realm it names (distribution token auth), or the basic credentials.
    /// `None` when there is nothing to answer with.
    async fn answer_challenge(
        &self,
        res: &Response,
        repo: &str,
        ctx: &ErrCtx<'_>,
    ) -> Result<Option<HeaderValue>, ImageError> {
        let Some(challenge) = res
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .find_map(|h| Challenge::parse(h.to_str().ok()?))
        else {
            return Ok(None);
        };
        match (challenge, &self.auth) {
            // A token given as the credential was refused: nothing else to try.
            (_, RegistryAuth::Bearer(_)) => Ok(None),
            (Challenge::Bearer { realm, service }, auth) => {
                let token = self
                    .token(&realm, service.as_deref(), repo, auth, ctx)
                    .await?;
                bearer(&token).map(Some)
            }
            (Challenge::Basic, RegistryAuth::Basic(user, pass)) => {
                let basic = STANDARD.encode(format!("{user}:{pass}"));
                Ok(HeaderValue::from_str(&format!("Basic {basic}")).ok())
            }
            (Challenge::Basic, RegistryAuth::Anonymous) => Ok(None),
        }
    }

    /// The distribution token exchange: GET `realm?scope=…&service=…`, with
    /// the basic credentials if there are any.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        repo: &str,
        auth: &RegistryAuth,
        ctx: &ErrCtx<'_>,
    ) -> Result<String, ImageError> {
        let realm = realm_url(realm, ctx)?;
        let scope = format!("repository:{repo}:pull");
        let mut query = vec![("scope", scope.as_str())];
        query.extend(service.map(|s| ("service", s)));
        let mut req = self.http.get(realm).query(&query);
        // The realm passed `transport_allowed`: credentials never cross a network in
        // cleartext.
        if let RegistryAuth::Basic(user, pass) = auth {
            req = req.basic_auth(user, Some(pass));
        }
        let mut res = req.send().await.map_err(|e| request_error(e, ctx))?;
        let status = res.status();
        if !status.is_success() {
            // A truncated or unreadable body still leaves the status.
            let (body, _) = read_limited(&mut res, MAX_TOKEN_ERROR_BYTES)
                .await
                .unwrap_or_default();
            let reason = format!("HTTP {status}: {}", String::from_utf8_lossy(&body));
            return Err(map_error(
                OciDistributionError::AuthenticationFailure(reason),
                ctx,
            ));
        }
        let (body, complete) = read_limited(&mut res, MAX_TOKEN_BYTES)
            .await
            .map_err(|e| request_error(e, ctx))?;
        if !complete {
            return Err(ImageError::Registry(format!(
                "{}: the token server of registry {} sent a token answer larger than {}",
                ctx.action,
                ctx.registry,
                human(MAX_TOKEN_BYTES as u64)
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        serde_json::from_slice::<TokenAnswer>(&body)
            .ok()
            .and_then(|t| t.token.or(t.access_token))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                map_error(
                    OciDistributionError::AuthenticationFailure(
                        "the token server's answer holds no token".to_string(),
                    ),
                    ctx,
                )
            })
    }
}

/// Whether the node may send a request (and credentials) to `url`: over HTTPS, or
/// over plain HTTP to this machine, as registries themselves are spoken to. Anything
/// else a registry names (a token realm, a redirect) could point the node at a
/// cloud metadata endpoint or internal service, or carry credentials in cleartext.
fn transport_allowed(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => url.host_str().is_some_and(is_loopback),
        _ => false,
    }
}

/// The token realm a challenge names, if the node may request it.
fn realm_url(realm: &str, ctx: &ErrCtx<'_>) -> Result<reqwest::Url, ImageError> {
    let refused = |why: &str| {
        ImageError::Registry(format!(
            "{}: registry {} names the token realm {:?}, which {why}",
            ctx.action,
            ctx.registry,
            clip(realm)
        ))
    };
    let url = reqwest::Url::parse(realm).map_err(|_| refused("is not a URL"))?;
    if transport_allowed(&url) {
        Ok(url)
    } else {
        Err(refused(
            "is not HTTPS (plain HTTP is used only to this machine)",
        ))
    }
}

/// The parts of a `WWW-Authenticate` challenge a pull can answer.
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
    },
    Basic,
}

impl Challenge {
    fn parse(header: &str) -> Option<Challenge> {
        http_auth::parse_challenges(header)
            .ok()?
            .into_iter()
            .find_map(|c| {
                if c.scheme.eq_ignore_ascii_case("basic") {
                    return Some(Challenge::Basic);
                }
                if !c.scheme.eq_ignore_ascii_case("bearer") {
                    return None;
                }
                let param = |name: &str| {
                    c.params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                Some(Challenge::Bearer {
                    realm: param("realm")?,
                    service: param("service"),
                })
            })
    }
}

fn bearer(token: &str) -> Result<HeaderValue, ImageError> {
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ImageError::Registry("a registry token holds characters not allowed in a header".into())
    })
}

fn digest_header(res: &Response) -> Option<String> {
    res.headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Ok for a 200; otherwise the registry's answer as an error, from at most
/// [`MAX_ERROR_BYTES`] of its body, worded as for oci-client's errors.
async fn expect_ok(res: &mut Response, url: &str, ctx: &ErrCtx<'_>) -> Result<(), ImageError> {
    let status = res.status();
    if status == StatusCode::OK {
        return Ok(());
    }
    let url = url.to_string();
    let err = match status {
        StatusCode::UNAUTHORIZED => OciDistributionError::UnauthorizedError { url },
        s if s.is_success() => {
            OciDistributionError::SpecViolationError(format!("expected HTTP status 200, got {s}"))
        }
        s => {
            // A truncated or unreadable body still leaves the status.
            let body = read_limited(res, MAX_ERROR_BYTES)
                .await
                .map(|(b, _)| b)
                .unwrap_or_default();
            match serde_json::from_slice::<OciEnvelope>(&body) {
                Ok(envelope) if s.is_client_error() => {
                    OciDistributionError::RegistryError { envelope, url }
                }
                _ => OciDistributionError::ServerError {
                    code: s.as_u16(),
                    url,
                    message: String::from_utf8_lossy(&body).into_owned(),
                },
            }
        }
    };
    Err(map_error(err, ctx))
}

/// The manifest body, refused when its `Content-Length` or the bytes sent
/// pass `max`: never more than `max` plus one read is held.
async fn read_manifest(mut res: Response, max: u64, ctx: &ErrCtx<'_>) -> Result<Bytes, ImageError> {
    let too_big = |detail: String| {
        ImageError::Registry(format!(
            "{}: registry {} sent a manifest larger than {} ({detail})",
            ctx.action,
            ctx.registry,
            human(max)
        ))
    };
    if let Some(len) = res.content_length().filter(|&len| len > max) {
        return Err(too_big(format!("Content-Length {len}")));
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let (body, complete) = read_limited(&mut res, limit)
        .await
        .map_err(|e| request_error(e, ctx))?;
    if !complete {
        return Err(too_big(format!("stopped reading after {limit} bytes")));
    }
    Ok(body.into())
}

/// Up to `max` bytes of the body, and whether that was all of it. Reading
/// stops at the limit; the connection is then dropped, not drained.
async fn read_limited(res: &mut Response, max: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let hint = res.content_length().unwrap_or(0).min(max as u64) as usize;
    let mut body = Vec::with_capacity(hint);
    while let Some(chunk) = res.chunk().await? {
        let room = max - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

fn request_error(e: reqwest::Error, ctx: &ErrCtx<'_>) -> ImageError {
    map_error(OciDistributionError::RequestError(e), ctx)
}

/// `4 MiB` for whole MiB, bytes otherwise.
fn human(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        let allowed = |u: &str| transport_allowed(&reqwest::Url::parse(u).unwrap());
        for ok in [
            "https://auth.example/token",
            "https://10.0.0.1/token",
            "http://127.0.0.1:5000/token",
            "http://localhost/token",
            "http://[::1]:5000/token",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://auth.example/token",
            "http://10.0.0.1/token",
            "ftp://127.0.0.1/token",
            "file:///etc/passwd",
        ] {
            assert!(!allowed(refused), "{refused}");
        }
    }

    #[test]
    fn challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#,
        );
        match c {
            Some(Challenge::Bearer { realm, service }) => {
                assert_eq!(realm, "https://auth.example/token");
                assert_eq!(service.as_deref(), Some("registry.example"));
            }
            _ => panic!("bearer challenge not parsed"),
        }
        assert!(matches!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        ));
        assert!(Challenge::parse(r#"Bearer service="no realm""#).is_none());
        assert!(Challenge::parse("Negotiate").is_none());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(4 << 20), "4 MiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}
