//! The kubelet's webhook authorizer: each request's [`Attributes`] go to the API server
//! as a SubjectAccessReview (asked with the node's own credential), and the answers are
//! cached as the kubelet caches them (`--authorization-webhook-cache-authorized-ttl` 5
//! minutes, `-unauthorized-ttl` 30 seconds), in a cache of bounded size, so a stream of
//! `kubectl logs` costs one review, not one each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;

use super::auth::{Attributes, Reviewer};

pub const ALLOWED_TTL: Duration = Duration::from_secs(5 * 60);
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Decisions kept at most (the API server's webhook authorizer keeps as many).
pub const CACHE_SIZE: usize = 8192;

/// Decisions until they expire, at most `capacity` of them.
#[derive(Debug)]
pub struct DecisionCache {
    capacity: usize,
    entries: Mutex<HashMap<Attributes, (bool, Instant)>>,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            capacity: capacity.max(1),
            entries: Mutex::default(),
        }
    }

    /// The decision on `attrs` still valid at `now`.
    pub fn get(&self, attrs: &Attributes, now: Instant) -> Option<bool> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(attrs) {
            Some((allowed, until)) if *until > now => Some(*allowed),
            _ => None,
        }
    }

    /// Remember `allowed` for `attrs` from `now`, for its TTL. When full, expired
    /// entries go first, then those closest to expiry.
    pub fn put(&self, attrs: Attributes, allowed: bool, now: Instant) {
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&attrs) {
            entries.retain(|_, (_, until)| *until > now);
            while entries.len() >= self.capacity {
                let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&soonest);
            }
        }
        entries.insert(attrs, (allowed, now + ttl));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Asks `inner` only what `cache` does not know.
pub struct Cached<R> {
    pub inner: R,
    pub cache: DecisionCache,
}

impl<R: Reviewer> Reviewer for Cached<R> {
    async fn review(&self, attrs: &Attributes) -> Result<bool, String> {
        if let Some(allowed) = self.cache.get(attrs, Instant::now()) {
            return Ok(allowed);
        }
        // Errors are not cached: the next request asks again.
        let allowed = self.inner.review(attrs).await?;
        self.cache.put(attrs.clone(), allowed, Instant::now());
        Ok(allowed)
    }
}

/// SubjectAccessReviews through the node's client, about node `node_name`.
pub struct AccessReviews {
    pub client: kube::Client,
    pub node_name: String,
}

impl Reviewer for AccessReviews {
    async fn review(&self, attrs: &Attributes) -> Result<bool, String> {
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(attrs.user.name.clone()),
                groups: Some(attrs.user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.into()),
                    verb: Some(attrs.verb.into()),
                    name: Some(self.node_name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let got = api
            .create(&PostParams::default(), &sar)
            .await
            .map_err(|e| format!("SubjectAccessReview: {e}"))?;
        Ok(got
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }
}

/// The agent's reviewer: cached SubjectAccessReviews.
pub fn reviewer(client: kube::Client, node_name: &str) -> Cached<AccessReviews> {
    Cached {
        inner: AccessReviews {
            client,
            node_name: node_name.to_string(),
        },
        cache: DecisionCache::new(CACHE_SIZE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Caller;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn attrs(user: &str, verb: &'static str) -> Attributes {
        Attributes {
            user: Caller {
                name: user.into(),
                groups: vec!["g".into()],
            },
            verb,
            subresource: "proxy",
        }
    }

    #[test]
    fn allowed_answers_last_five_minutes_and_denied_thirty_seconds() {
        let cache = DecisionCache::new(10);
        let t0 = Instant::now();
        cache.put(attrs("yes", "get"), true, t0);
        cache.put(attrs("no", "get"), false, t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(cache.get(&attrs("yes", "get"), at(299)), Some(true));
        assert_eq!(cache.get(&attrs("yes", "get"), at(300)), None);
        assert_eq!(cache.get(&attrs("no", "get"), at(29)), Some(false));
        assert_eq!(cache.get(&attrs("no", "get"), at(30)), None);
        // Another verb (or user, or group) is another question.
        assert_eq!(cache.get(&attrs("yes", "create"), at(1)), None);
    }

    #[test]
    fn a_full_cache_drops_expired_then_soonest_expiring_entries() {
        let cache = DecisionCache::new(3);
        let t0 = Instant::now();
        cache.put(attrs("denied-early", "get"), false, t0);
        cache.put(attrs("a", "get"), true, t0);
        cache.put(attrs("b", "get"), true, t0 + Duration::from_secs(1));
        // At 40 s the denial has expired: it makes room.
        let t1 = t0 + Duration::from_secs(40);
        cache.put(attrs("c", "get"), true, t1);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&attrs("a", "get"), t1), Some(true));
        // Nothing expired: the entry closest to expiry ("a") goes.
        cache.put(attrs("d", "get"), true, t1);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&attrs("a", "get"), t1), None);
        for u in ["b", "c", "d"] {
            assert_eq!(cache.get(&attrs(u, "get"), t1), Some(true), "{u}");
        }
    }

    struct Counting {
        calls: AtomicUsize,
        answer: Result<bool, String>,
    }

    impl Reviewer for Counting {
        async fn review(&self, _: &Attributes) -> Result<bool, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answer.clone()
        }
    }

    fn cached(answer: Result<bool, String>) -> Cached<Counting> {
        Cached {
            inner: Counting {
                calls: AtomicUsize::new(0),
                answer,
            },
            cache: DecisionCache::new(10),
        }
    }

    #[tokio::test]
    async fn decisions_are_asked_once_and_errors_every_time() {
        for answer in [true, false] {
            let r = cached(Ok(answer));
            for _ in 0..3 {
                assert_eq!(r.review(&attrs("u", "get")).await, Ok(answer));
            }
            assert_eq!(r.inner.calls.load(Ordering::SeqCst), 1, "{answer}");
        }
        let r = cached(Err("down".into()));
        for _ in 0..3 {
            assert!(r.review(&attrs("u", "get")).await.is_err());
        }
        assert_eq!(r.inner.calls.load(Ordering::SeqCst), 3);
    }
}
