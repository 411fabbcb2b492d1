//! Counting finished pods exactly once, as kube-controller-manager does with the
//! `batch.kubernetes.io/job-tracking` finalizer. Every pod is created with the finalizer,
//! so it cannot vanish before it is counted. A finished pod's uid first goes into
//! `status.uncountedTerminatedPods` (an Indexed Job records a success in
//! `completedIndexes` instead); only once that status is stored does its finalizer go;
//! only once the finalizer is gone does the uid move into `succeeded`/`failed`. A
//! restart between any two of these steps resumes from what the Job and its pods say:
//! nothing counted twice, nothing lost.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use k8s_openapi::api::batch::v1::{JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;

use super::indexes;

pub const FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

pub fn has_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

pub fn is_succeeded(p: &Pod) -> bool {
    phase(p) == Some("Succeeded")
}

/// Failed, or deleted before it could succeed: a pod removed by someone else counts as
/// a failure, as in Kubernetes, since it never gets to say Failed.
pub fn is_failed(p: &Pod) -> bool {
    phase(p) == Some("Failed")
        || (p.metadata.deletion_timestamp.is_some() && phase(p) != Some("Succeeded"))
}

/// Running or waiting to: not finished and not being deleted.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), Some("Succeeded" | "Failed"))
}

/// Being deleted but not yet finished (`status.terminating`).
pub fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), Some("Succeeded" | "Failed"))
}

/// The pod's completion index (annotation first, then label), if well formed.
pub fn completion_index(p: &Pod) -> Option<i32> {
    let from = |m: Option<&std::collections::BTreeMap<String, String>>| {
        m.and_then(|m| m.get(INDEX_KEY))
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|i| *i >= 0)
    };
    from(p.metadata.annotations.as_ref()).or_else(|| from(p.metadata.labels.as_ref()))
}

/// What one pass adds to the status before any finalizer is removed, and which pods'
/// finalizers may go once that status is stored.
#[derive(Debug, Default)]
pub struct Tally {
    pub uncounted: UncountedTerminatedPods,
    /// Indexed Jobs: every succeeded index (earlier ones included).
    pub completed: BTreeSet<i32>,
    pub unfinalize: Vec<Arc<Pod>>,
}

/// Record the finished pods that still carry the finalizer. `skip` are uids whose
/// finalizer this controller already removed (its pod cache may not show it yet) or
/// keeps for now; `ignored` are failed pods whose failure the podFailurePolicy ignores:
/// their finalizer goes, but they are not counted. `indexed` is `Some(completions)` for
/// an Indexed Job.
pub fn tally(
    status: &JobStatus,
    indexed: Option<i32>,
    pods: &[Arc<Pod>],
    skip: &HashSet<String>,
    ignored: &HashSet<String>,
) -> Tally {
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut completed = indexed
        .map(|n| indexes::parse(status.completed_indexes.as_deref(), n))
        .unwrap_or_default();
    let mut unfinalize = Vec::new();
    for p in pods {
        // Most pods of a long Job are counted already (no finalizer): skip them first.
        if !has_finalizer(p) {
            continue;
        }
        let uid = p.metadata.uid.clone().unwrap_or_default();
        if skip.contains(&uid) {
            continue;
        }
        if is_succeeded(p) {
            match indexed {
                // The index is the record: a second success of it is not counted.
                Some(n) => {
                    if let Some(ix) = completion_index(p).filter(|i| *i < n) {
                        completed.insert(ix);
                    }
                }
                None => push_once(&mut uncounted.succeeded, uid),
            }
        } else if is_failed(p) {
            if !ignored.contains(&uid) {
                push_once(&mut uncounted.failed, uid);
            }
        } else {
            continue;
        }
        unfinalize.push(p.clone());
    }
    Tally {
        uncounted,
        completed,
        unfinalize,
    }
}

fn push_once(list: &mut Option<Vec<String>>, uid: String) {
    let list = list.get_or_insert_with(Vec::new);
    if !list.contains(&uid) {
        list.push(uid);
    }
}

/// Move into `succeeded`/`failed` the uncounted pods whose finalizer is gone (removed
/// now, or already gone in the cache, or the pod itself gone). Returns whether anything
/// moved.
pub fn settle(status: &mut JobStatus, pods: &[Arc<Pod>], removed: &HashSet<String>) -> bool {
    let still_held: HashSet<String> = pods
        .iter()
        .filter(|p| has_finalizer(p))
        .filter_map(|p| p.metadata.uid.clone())
        .filter(|u| !removed.contains(u))
        .collect();
    let mut uncounted = status.uncounted_terminated_pods.take().unwrap_or_default();
    let mut moved = false;
    for (list, counter) in [
        (&mut uncounted.succeeded, &mut status.succeeded),
        (&mut uncounted.failed, &mut status.failed),
    ] {
        let Some(uids) = list.as_mut() else { continue };
        let before = uids.len();
        uids.retain(|u| still_held.contains(u));
        let gone = (before - uids.len()) as i32;
        if gone > 0 {
            *counter = Some(counter.unwrap_or(0) + gone);
            moved = true;
        }
    }
    status.uncounted_terminated_pods = Some(uncounted);
    moved
}

/// Pods not yet in the counters: those in `uncountedTerminatedPods`.
pub fn uncounted_len(status: &JobStatus) -> usize {
    status.uncounted_terminated_pods.as_ref().map_or(0, |u| {
        u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn pod(uid: &str, phase: &str, finalizer: bool, index: Option<i32>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                finalizers: finalizer.then(|| vec![FINALIZER.to_string()]),
                annotations: index.map(|i| [(INDEX_KEY.to_string(), i.to_string())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        })
    }

    fn counts(s: &JobStatus) -> (i32, i32, usize) {
        (
            s.succeeded.unwrap_or(0),
            s.failed.unwrap_or(0),
            uncounted_len(s),
        )
    }

    /// The three steps, with a "restart" (fresh state from what is stored) between each:
    /// every finished pod is counted once, whichever step was the last to complete.
    #[test]
    fn each_finished_pod_is_counted_once_across_restarts() {
        let pods = vec![
            pod("a", "Succeeded", true, None),
            pod("b", "Failed", true, None),
            pod("c", "Running", true, None),
        ];
        let none = HashSet::new();
        // Step 1: recorded as uncounted, finalizers still on.
        let t = tally(&JobStatus::default(), None, &pods, &none, &none);
        assert_eq!(t.unfinalize.len(), 2);
        let mut stored = JobStatus {
            uncounted_terminated_pods: Some(t.uncounted),
            ..Default::default()
        };
        // Restart before any finalizer went: the same pods, nothing added twice.
        let again = tally(&stored, None, &pods, &none, &none);
        assert_eq!(
            again.uncounted,
            stored.uncounted_terminated_pods.clone().unwrap()
        );
        // Nothing moves while the finalizers are on.
        let mut s = stored.clone();
        assert!(!settle(&mut s, &pods, &none));
        assert_eq!(counts(&s), (0, 0, 2));
        // Step 2: finalizers removed (the cache may still show them: `removed` says so).
        let removed: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(settle(&mut stored, &pods, &removed));
        assert_eq!(counts(&stored), (1, 1, 0));
        // A later pass over a stale cache that still shows the finalizers adds nothing.
        let stale = tally(&stored, None, &pods, &removed, &none);
        assert_eq!(
            uncounted_len(&JobStatus {
                uncounted_terminated_pods: Some(stale.uncounted),
                ..Default::default()
            }),
            0
        );
        // After a restart the cache shows the pods without finalizers: counted already.
        let fresh = vec![
            pod("a", "Succeeded", false, None),
            pod("b", "Failed", false, None),
        ];
        let t = tally(&stored, None, &fresh, &none, &none);
        assert!(t.unfinalize.is_empty());
        assert!(!settle(&mut stored, &fresh, &none));
        assert_eq!(counts(&stored), (1, 1, 0));
    }

    #[test]
    fn uncounted_pods_whose_finalizer_is_gone_are_counted_after_a_restart() {
        let stored = JobStatus {
            succeeded: Some(4),
            uncounted_terminated_pods: Some(UncountedTerminatedPods {
                succeeded: Some(vec!["a".into(), "gone".into()]),
                failed: Some(vec!["b".into()]),
            }),
            ..Default::default()
        };
        // a's finalizer was removed before the crash; b's was not; "gone" was deleted.
        let pods = vec![
            pod("a", "Succeeded", false, None),
            pod("b", "Failed", true, None),
        ];
        let mut s = stored.clone();
        assert!(settle(&mut s, &pods, &HashSet::new()));
        assert_eq!(counts(&s), (6, 0, 1));
    }

    #[test]
    fn an_index_succeeds_once_whatever_the_number_of_pods() {
        let pods = vec![
            pod("a", "Succeeded", true, Some(0)),
            pod("b", "Succeeded", true, Some(0)),
            pod("c", "Succeeded", true, Some(2)),
            pod("d", "Succeeded", true, Some(9)),
            pod("e", "Failed", true, Some(1)),
        ];
        let none = HashSet::new();
        let t = tally(&JobStatus::default(), Some(3), &pods, &none, &none);
        assert_eq!(indexes::format(&t.completed), "0,2");
        assert!(t.uncounted.succeeded.is_none());
        assert_eq!(t.uncounted.failed, Some(vec!["e".to_string()]));
        assert_eq!(t.unfinalize.len(), 5);
    }

    #[test]
    fn a_pod_deleted_before_it_succeeded_is_a_failure() {
        let mut p = (*pod("a", "Running", true, None)).clone();
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(is_failed(&p) && is_terminating(&p) && !is_active(&p));
    }

    #[test]
    fn an_ignored_failure_loses_its_finalizer_but_is_not_counted() {
        let pods = vec![
            pod("a", "Failed", true, None),
            pod("b", "Failed", true, None),
        ];
        let ignored: HashSet<String> = ["a".to_string()].into();
        let t = tally(
            &JobStatus::default(),
            None,
            &pods,
            &HashSet::new(),
            &ignored,
        );
        assert_eq!(t.uncounted.failed, Some(vec!["b".to_string()]));
        assert_eq!(t.unfinalize.len(), 2);
    }
}
