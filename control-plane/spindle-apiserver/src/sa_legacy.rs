//! Legacy ServiceAccount tokens: the non-expiring JWTs kept in Secrets of type
//! `kubernetes.io/service-account-token`, made only when someone creates such a Secret
//! (the token controller fills it in; nothing creates them unasked since Kubernetes
//! 1.24). Signed with the same key as bound tokens ([`Signer`]), with kube-apiserver's
//! legacy claims and issuer, and accepted only while the Secret still holds exactly
//! this token and the ServiceAccount exists with the uid the token names.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::User;
use crate::sa_token::{service_account_user, unverified_issuer, username, Signer, TokenError};
use crate::AppState;

/// The issuer of legacy tokens (kube-apiserver's `LegacyIssuer`).
pub const ISSUER: &str = "kubernetes/serviceaccount";

/// A legacy token's claims, under kube-apiserver's names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyClaims {
    pub iss: String,
    pub sub: String,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace")]
    pub namespace: String,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name")]
    pub secret_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name")]
    pub account: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid")]
    pub account_uid: String,
}

impl LegacyClaims {
    pub fn new(namespace: &str, secret_name: &str, account: &str, account_uid: &str) -> Self {
        LegacyClaims {
            iss: ISSUER.to_string(),
            sub: username(namespace, account),
            namespace: namespace.to_string(),
            secret_name: secret_name.to_string(),
            account: account.to_string(),
            account_uid: account_uid.to_string(),
        }
    }
}

/// Sign a legacy token (the token controller's capability, handed to it by the binary).
pub fn sign(signer: &Signer, claims: &LegacyClaims) -> Result<String, TokenError> {
    signer.sign_claims(claims)
}

/// Whether the token claims to be a legacy one (nothing checked yet).
pub fn is_legacy(token: &str) -> bool {
    unverified_issuer(token).as_deref() == Some(ISSUER)
}

/// The stored object `plural/name` in `ns`, unless it is being deleted.
async fn live(st: &AppState, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let obj = crate::rest::stored_core(st, plural, Some(ns), name)
        .await
        .ok()??;
    obj.pointer("/metadata/deletionTimestamp")
        .is_none_or(Value::is_null)
        .then_some(obj)
}

/// Verify a legacy token: our signature, its Secret still holding this very token, its
/// ServiceAccount still there with the uid it names (kube-apiserver's legacy validator).
pub async fn review(st: &AppState, token: &str) -> Result<LegacyClaims, TokenError> {
    let c: LegacyClaims = st.sa_signer.verify_unexpiring(token, ISSUER)?;
    if c.namespace.is_empty() || c.secret_name.is_empty() || c.account.is_empty() {
        return Err(TokenError::Invalid("incomplete legacy token claims".into()));
    }
    if c.sub != username(&c.namespace, &c.account) {
        return Err(TokenError::Invalid("sub does not match the claims".into()));
    }
    let secret = live(st, "secrets", &c.namespace, &c.secret_name)
        .await
        .ok_or(TokenError::Invalidated)?;
    let held = secret
        .pointer("/data/token")
        .and_then(Value::as_str)
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_default();
    if !crate::auth::constant_time_eq(&held, token.as_bytes()) {
        return Err(TokenError::Invalidated);
    }
    let account = live(st, "serviceaccounts", &c.namespace, &c.account)
        .await
        .ok_or(TokenError::Invalidated)?;
    let uid = account.pointer("/metadata/uid").and_then(Value::as_str);
    if !c.account_uid.is_empty() && uid != Some(c.account_uid.as_str()) {
        return Err(TokenError::Invalidated);
    }
    Ok(c)
}

/// The ServiceAccount a live legacy token authenticates as.
pub async fn authenticate(st: &AppState, token: &str) -> Option<User> {
    match review(st, token).await {
        Ok(c) => Some(service_account_user(&c.namespace, &c.account)),
        Err(e) => {
            tracing::debug!(error = %e, "legacy ServiceAccount token refused");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_token_has_kubernetes_claims_and_no_expiry() {
        let signer = Signer::generate().expect("signer");
        let claims = LegacyClaims::new("ci", "builder-token", "builder", "u-1");
        let token = sign(&signer, &claims).expect("sign");
        assert!(is_legacy(&token));
        let back: LegacyClaims = signer.verify_unexpiring(&token, ISSUER).expect("verify");
        assert_eq!(back, claims);
        assert_eq!(back.sub, "system:serviceaccount:ci:builder");
        let payload = token.split('.').nth(1).expect("payload");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64");
        let v: Value = serde_json::from_slice(&raw).expect("json");
        assert!(v.get("exp").is_none(), "{v}");
        assert_eq!(
            v["kubernetes.io/serviceaccount/secret.name"],
            "builder-token"
        );
        // Another key's signature is refused.
        let other = Signer::generate().expect("signer");
        assert!(other
            .verify_unexpiring::<LegacyClaims>(&token, ISSUER)
            .is_err());
    }
}
