//! The kubelet's token manager: ServiceAccount tokens for projected volumes, requested
//! from the API server (TokenRequest bound to the pod by uid), cached per pod, account,
//! audience and lifetime, and requested again once 80% of a token's life has passed
//! (or 24 hours, whichever comes first), as the kubelet does. Expired entries are
//! dropped whenever a token is stored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::PostParams;
use kube::Api;

use crate::env::ConfigError;

/// A token older than this is renewed whatever its lifetime (the kubelet's maxTTL).
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The lifetime asked for when the projection names none (the API's default).
const DEFAULT_SECONDS: i64 = 3600;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    namespace: String,
    account: String,
    pod_uid: String,
    audience: String,
    seconds: i64,
}

#[derive(Clone, Debug)]
struct Entry {
    token: String,
    issued: SystemTime,
    expires: SystemTime,
}

impl Entry {
    /// Whether the token should be requested again at `now`: past 80% of its life, or
    /// older than [`MAX_AGE`].
    fn stale(&self, now: SystemTime) -> bool {
        let life = self.expires.duration_since(self.issued).unwrap_or_default();
        let age = now.duration_since(self.issued).unwrap_or_default();
        age >= life.mul_f64(0.8) || age >= MAX_AGE
    }
}

#[derive(Default)]
pub struct TokenManager {
    tokens: Mutex<HashMap<Key, Entry>>,
}

impl TokenManager {
    /// The pod's token for `audience` (empty: the API server's own) and lifetime, from
    /// the cache while fresh.
    pub async fn token(
        &self,
        client: &kube::Client,
        pod: &Pod,
        audience: &str,
        seconds: Option<i64>,
    ) -> Result<String, ConfigError> {
        let meta = &pod.metadata;
        let key = Key {
            namespace: meta.namespace.clone().unwrap_or_default(),
            account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            pod_uid: meta.uid.clone().unwrap_or_default(),
            audience: audience.to_string(),
            seconds: seconds.unwrap_or(DEFAULT_SECONDS),
        };
        let now = SystemTime::now();
        if let Some(e) = self.lock().get(&key).filter(|e| !e.stale(now)) {
            return Ok(e.token.clone());
        }
        let entry = request(client, pod, &key).await?;
        let token = entry.token.clone();
        let mut tokens = self.lock();
        tokens.retain(|_, e| e.expires > now);
        tokens.insert(key, entry);
        Ok(token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn request(client: &kube::Client, pod: &Pod, key: &Key) -> Result<Entry, ConfigError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &key.namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if key.audience.is_empty() {
                Vec::new()
            } else {
                vec![key.audience.clone()]
            },
            expiration_seconds: Some(key.seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let issued = SystemTime::now();
    let out: TokenRequest = api
        .create_subresource("token", &key.account, &PostParams::default(), &req)
        .await
        .map_err(|e| {
            ConfigError(format!(
                "failed to fetch token: serviceaccounts {:?} token: {e}",
                key.account
            ))
        })?;
    let status = out
        .status
        .ok_or_else(|| ConfigError("failed to fetch token: no status in the answer".into()))?;
    let expires = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            u64::try_from(status.expiration_timestamp.0.as_second()).unwrap_or(0),
        );
    Ok(Entry {
        token: status.token,
        issued,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_renew_at_eighty_percent_of_their_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let e = Entry {
            token: "t".into(),
            issued: t0,
            expires: t0 + Duration::from_secs(3600),
        };
        assert!(!e.stale(t0 + Duration::from_secs(2879)));
        assert!(e.stale(t0 + Duration::from_secs(2880)));
        let long = Entry {
            expires: t0 + Duration::from_secs(7 * 24 * 3600),
            ..e
        };
        assert!(!long.stale(t0 + Duration::from_secs(23 * 3600)));
        assert!(long.stale(t0 + MAX_AGE));
    }
}
