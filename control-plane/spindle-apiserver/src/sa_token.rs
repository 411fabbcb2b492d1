//! ServiceAccount tokens: JWTs the API server signs (ES256) with a key kept in its data
//! directory, as kube-apiserver signs with `--service-account-signing-key-file`. The
//! claims are Kubernetes' (`iss`, `sub` = `system:serviceaccount:<ns>:<name>`, `aud`,
//! `exp`, `iat`, `nbf`, `jti` and the private `kubernetes.io` claim naming the
//! namespace, the ServiceAccount and the object the token is bound to). This module
//! signs and verifies; [`authenticate`] adds what only the store knows: a token is dead
//! once its ServiceAccount or bound object is gone (or was replaced by another of the
//! same name). The public key is published for OIDC discovery ([`Signer::jwks`]).

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::PublicKeyData;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::User;
use crate::AppState;

/// The issuer, and the audience tokens get when they ask for none: kubeadm's and k3s's
/// `--service-account-issuer`, the name pods reach the API server by.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Group every ServiceAccount is in; `system:serviceaccounts:<ns>` names its namespace.
pub const ALL_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

/// Tokens are checked with this much tolerance for clock skew on `exp` and `nbf`, as
/// go-jose's default leeway in kube-apiserver.
const LEEWAY_SECONDS: u64 = 60;

/// A name and uid, as the `kubernetes.io` claim names objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    pub serviceaccount: ObjectRef,
}

/// Every claim of a ServiceAccount token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(default)]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
    pub nbf: i64,
    pub sub: String,
}

/// The username of a ServiceAccount, as Kubernetes spells it.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The user a ServiceAccount authenticates as: its name and Kubernetes' three groups.
pub fn service_account_user(namespace: &str, name: &str) -> User {
    User {
        name: username(namespace, name),
        groups: vec![
            ALL_SERVICE_ACCOUNTS.to_string(),
            format!("{ALL_SERVICE_ACCOUNTS}:{namespace}"),
            "system:authenticated".to_string(),
        ],
    }
}

impl Claims {
    /// Claims for a token of `sa` in `namespace`, valid for `seconds` from `now`.
    pub fn new(
        namespace: &str,
        sa: ObjectRef,
        audiences: Vec<String>,
        now: i64,
        seconds: i64,
    ) -> Self {
        Claims {
            aud: audiences,
            exp: now.saturating_add(seconds),
            iat: now,
            iss: ISSUER.to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
            sub: username(namespace, &sa.name),
            kubernetes: KubernetesClaim {
                namespace: namespace.to_string(),
                pod: None,
                secret: None,
                serviceaccount: sa,
            },
            nbf: now,
        }
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not a ServiceAccount token of this cluster")]
    NotOurs,
    #[error("service account token has expired")]
    Expired,
    #[error("token audiences {0:?} is invalid for the target audiences")]
    Audience(Vec<String>),
    #[error("invalid bearer token: {0}")]
    Invalid(String),
    #[error("token has been invalidated")]
    Invalidated,
}

/// The service account key: signs new tokens and verifies presented ones.
pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    x: String,
    y: String,
}

impl Signer {
    /// The key in `path` (PKCS#8 PEM, ECDSA P-256), created on first start.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        let pem = match std::fs::read_to_string(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let pem = key.serialize_pem();
                crate::pki::write_private(path, &pem)?;
                pem
            }
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        };
        Self::from_pem(&pem)
    }

    /// A fresh key that lives in memory only (tests).
    pub fn generate() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Self::from_pem(&key.serialize_pem())
    }

    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::from_pem(pem)?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            anyhow::bail!("the service account key must be an ECDSA P-256 key");
        }
        // The uncompressed point: 0x04, then x and y (32 bytes each).
        let raw = key.public_key_raw();
        if raw.len() != 65 {
            anyhow::bail!("unexpected P-256 public key length {}", raw.len());
        }
        Ok(Signer {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding: DecodingKey::from_ec_der(raw),
            // kube-apiserver's key id: the SHA-256 of the public key's DER, base64url.
            kid: URL_SAFE_NO_PAD.encode(Sha256::digest(key.subject_public_key_info())),
            x: URL_SAFE_NO_PAD.encode(&raw[1..33]),
            y: URL_SAFE_NO_PAD.encode(&raw[33..]),
        })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        self.sign_claims(claims)
    }

    /// Any claims signed with this key (bound tokens, and the legacy ones of `sa_legacy`).
    pub(crate) fn sign_claims<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The claims of a token this key signed with issuer `iss`, without time limits:
    /// legacy tokens never expire and carry no audience.
    pub(crate) fn verify_unexpiring<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        iss: &str,
    ) -> Result<T, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.set_issuer(&[iss]);
        v.set_required_spec_claims(&["iss", "sub"]);
        jsonwebtoken::decode::<T>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The claims of a token this key signed for one of `audiences`, not expired (with
    /// [`LEEWAY_SECONDS`]), and the audiences it was accepted for.
    pub fn verify(&self, token: &str, audiences: &[String]) -> Result<Claims, TokenError> {
        // Only a JWT whose issuer is ours is this authenticator's business.
        let unverified = unverified_issuer(token).ok_or(TokenError::NotOurs)?;
        if unverified != ISSUER {
            return Err(TokenError::NotOurs);
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.leeway = LEEWAY_SECONDS;
        v.validate_nbf = true;
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud", "nbf"]);
        // Audiences are compared below, to say which ones were wrong.
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid(e.to_string()),
                }
            })?;
        let claims = data.claims;
        if !claims.aud.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::Audience(claims.aud));
        }
        if claims.sub
            != username(
                &claims.kubernetes.namespace,
                &claims.kubernetes.serviceaccount.name,
            )
        {
            return Err(TokenError::Invalid(
                "sub does not match kubernetes.io".into(),
            ));
        }
        Ok(claims)
    }

    /// The JSON Web Key Set kube-apiserver serves at `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": self.x, "y": self.y,
        }]})
    }

    /// The OIDC discovery document of `/.well-known/openid-configuration`; the key set is
    /// at `https://<external address>/openid/v1/jwks`, as kube-apiserver points to it
    /// when no `--service-account-jwks-uri` is given.
    pub fn openid_configuration(external: &str) -> Value {
        json!({
            "issuer": ISSUER,
            "jwks_uri": format!("https://{external}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

/// The `iss` claim of a JWT, read without checking anything.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// Whether the stored object `resource/name` in `ns` exists with `uid` and is not being
/// deleted, the check kube-apiserver's service account authenticator makes against its
/// caches. A pod being deleted still has a grace period: its token works for 60 s
/// after the deletion started, as kube-apiserver allows.
pub(crate) async fn object_alive(st: &AppState, plural: &str, ns: &str, r: &ObjectRef) -> bool {
    let Ok(Some(obj)) = crate::rest::stored_core(st, plural, Some(ns), &r.name).await else {
        return false;
    };
    if obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(r.uid.as_str()) {
        return false;
    }
    match obj
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        Some(t) => chrono::Utc::now().signed_duration_since(t) < chrono::Duration::seconds(60),
        None => true,
    }
}

/// Verify a token and that what it names still exists: the claims, or why not.
pub async fn review(
    st: &AppState,
    token: &str,
    audiences: &[String],
) -> Result<Claims, TokenError> {
    let claims = st.sa_signer.verify(token, audiences)?;
    let k = &claims.kubernetes;
    if !object_alive(st, "serviceaccounts", &k.namespace, &k.serviceaccount).await {
        return Err(TokenError::Invalidated);
    }
    if let Some(p) = &k.pod {
        if !object_alive(st, "pods", &k.namespace, p).await {
            return Err(TokenError::Invalidated);
        }
    }
    if let Some(s) = &k.secret {
        if !object_alive(st, "secrets", &k.namespace, s).await {
            return Err(TokenError::Invalidated);
        }
    }
    Ok(claims)
}

/// The user a bearer token names, if it is a live ServiceAccount token for the API
/// server (audience: the issuer, kube-apiserver's default `--api-audiences`).
pub async fn authenticate(st: &AppState, token: &str) -> Option<User> {
    if crate::sa_legacy::is_legacy(token) {
        return crate::sa_legacy::authenticate(st, token).await;
    }
    match review(st, token, &[ISSUER.to_string()]).await {
        Ok(c) => Some(service_account_user(
            &c.kubernetes.namespace,
            &c.kubernetes.serviceaccount.name,
        )),
        Err(TokenError::NotOurs) => None,
        Err(e) => {
            tracing::debug!(error = %e, "ServiceAccount token refused");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::generate().expect("signer")
    }

    fn sa() -> ObjectRef {
        ObjectRef {
            name: "builder".into(),
            uid: "u-1".into(),
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn api() -> Vec<String> {
        vec![ISSUER.to_string()]
    }

    #[test]
    fn a_signed_token_verifies_with_its_claims() {
        let s = signer();
        let mut c = Claims::new("ci", sa(), api(), now(), 3600);
        c.kubernetes.pod = Some(ObjectRef {
            name: "p".into(),
            uid: "pu".into(),
        });
        let tok = s.sign(&c).expect("sign");
        assert_eq!(s.verify(&tok, &api()), Ok(c.clone()));
        assert_eq!(c.sub, "system:serviceaccount:ci:builder");
        // The payload carries Kubernetes' claim names.
        let payload = tok.split('.').nth(1).expect("payload");
        let v: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        assert_eq!(v["kubernetes.io"]["serviceaccount"]["name"], "builder");
        assert_eq!(v["kubernetes.io"]["pod"]["uid"], "pu");
        assert_eq!(v["iss"], ISSUER);
        assert_eq!(v["exp"].as_i64(), Some(c.iat + 3600));
        // The header names the key the JWKS publishes.
        let h = jsonwebtoken::decode_header(&tok).expect("header");
        assert_eq!(h.alg, Algorithm::ES256);
        assert_eq!(h.kid.as_deref(), s.jwks()["keys"][0]["kid"].as_str());
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let s = signer();
        let old = Claims::new("ci", sa(), api(), now() - 7200, 3600);
        assert_eq!(
            s.verify(&s.sign(&old).expect("sign"), &api()),
            Err(TokenError::Expired)
        );
        // Within the leeway an expiry just past is still accepted.
        let just = Claims::new("ci", sa(), api(), now() - 3630, 3600);
        assert!(s.verify(&s.sign(&just).expect("sign"), &api()).is_ok());
        // Signed by another key: the signature does not verify.
        let other = signer();
        let forged = other
            .sign(&Claims::new("ci", sa(), api(), now(), 3600))
            .expect("sign");
        assert!(matches!(
            s.verify(&forged, &api()),
            Err(TokenError::Invalid(_))
        ));
        // A payload edited after signing (another ServiceAccount) fails the signature.
        let good = s
            .sign(&Claims::new("ci", sa(), api(), now(), 3600))
            .expect("sign");
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = Claims::new("ci", sa(), api(), now(), 3600);
        c.kubernetes.serviceaccount.name = "admin".into();
        c.sub = username("ci", "admin");
        let edited = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).expect("json")),
            parts[2]
        );
        assert!(matches!(
            s.verify(&edited, &api()),
            Err(TokenError::Invalid(_))
        ));
        // Not a JWT of ours at all: another authenticator's business.
        assert_eq!(
            s.verify("K10abc::server:xyz", &api()),
            Err(TokenError::NotOurs)
        );
        let mut foreign = Claims::new("ci", sa(), api(), now(), 3600);
        foreign.iss = "https://elsewhere".into();
        assert_eq!(
            s.verify(&s.sign(&foreign).expect("sign"), &api()),
            Err(TokenError::NotOurs)
        );
    }

    #[test]
    fn audiences_must_meet() {
        let s = signer();
        let c = Claims::new("ci", sa(), vec!["vault".into()], now(), 3600);
        let tok = s.sign(&c).expect("sign");
        assert_eq!(
            s.verify(&tok, &api()),
            Err(TokenError::Audience(vec!["vault".into()]))
        );
        assert!(s.verify(&tok, &["x".into(), "vault".into()]).is_ok());
    }

    #[test]
    fn the_key_persists_and_the_jwks_has_its_point() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("tls/service.key");
        let a = Signer::load_or_create(&path).expect("create");
        let b = Signer::load_or_create(&path).expect("load");
        assert_eq!(a.jwks(), b.jwks());
        let tok = a
            .sign(&Claims::new("ci", sa(), api(), now(), 3600))
            .expect("sign");
        assert!(b.verify(&tok, &api()).is_ok());
        // The published point verifies tokens on its own (what an OIDC client does).
        let k = &a.jwks()["keys"][0];
        let dec = DecodingKey::from_ec_components(
            k["x"].as_str().expect("x"),
            k["y"].as_str().expect("y"),
        )
        .expect("key");
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[ISSUER]);
        assert!(jsonwebtoken::decode::<Value>(&tok, &dec, &v).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
