//! The back-off between replacements of a failed daemon pod, as kube-controller-manager's
//! `failedPodsBackoff` (client-go's flowcontrol.Backoff, without jitter): a failed pod is
//! deleted at once the first time, then no sooner than 1 s after the previous deletion on
//! that node, doubling up to 15 min. The key is the DaemonSet's uid, generation and the
//! node, so a new template starts afresh; an entry left alone for twice the maximum is
//! forgotten. Without it a pod that a node rejects at once would be recreated in a hot
//! loop against that node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;

const INITIAL: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(15 * 60);

struct Entry {
    backoff: Duration,
    last: Instant,
}

#[derive(Default)]
pub struct FailedPodBackoff {
    entries: Mutex<HashMap<String, Entry>>,
}

/// kube's `failedPodsBackoffKey`.
pub fn key(ds: &DaemonSet, node: &str) -> String {
    format!(
        "{}/{}/{node}",
        ds.uid().unwrap_or_default(),
        ds.metadata.generation.unwrap_or(0)
    )
}

impl FailedPodBackoff {
    /// Whether a failed pod under `key` may be deleted at `now`: `None` if so (and the
    /// back-off steps up from now), else how long is left to wait.
    pub fn try_step(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut all = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, e| now.saturating_duration_since(e.last) <= 2 * MAX);
        match all.get_mut(key) {
            Some(e) => {
                let since = now.saturating_duration_since(e.last);
                if since < e.backoff {
                    return Some(e.backoff - since);
                }
                e.backoff = (e.backoff * 2).min(MAX);
                e.last = now;
            }
            None => {
                all.insert(
                    key.to_string(),
                    Entry {
                        backoff: INITIAL,
                        last: now,
                    },
                );
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_goes_at_once_then_the_wait_doubles_from_each_deletion() {
        let b = FailedPodBackoff::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(b.try_step("k", t0), None);
        assert_eq!(
            b.try_step("k", t0 + Duration::from_millis(300)),
            Some(Duration::from_millis(700))
        );
        assert_eq!(b.try_step("k", t0 + s(1)), None);
        assert_eq!(b.try_step("k", t0 + s(2)), Some(s(1)));
        assert_eq!(b.try_step("k", t0 + s(3)), None);
        assert_eq!(b.try_step("k", t0 + s(6)), Some(s(1)));
        assert_eq!(b.try_step("k", t0 + s(7)), None);
        // Another node, or the next generation, has its own back-off.
        assert_eq!(b.try_step("other", t0 + s(7)), None);
    }

    #[test]
    fn the_wait_stops_at_the_maximum_and_is_forgotten_after_twice_it() {
        let b = FailedPodBackoff::default();
        let mut t = Instant::now();
        for _ in 0..20 {
            assert_eq!(b.try_step("k", t), None);
            t += MAX;
        }
        assert_eq!(
            b.try_step("k", t - Duration::from_secs(1)),
            Some(Duration::from_secs(1))
        );
        let later = t + 3 * MAX;
        assert_eq!(b.try_step("k", later), None);
        assert_eq!(
            b.try_step("k", later + Duration::from_millis(500)),
            Some(Duration::from_millis(500))
        );
    }
}
