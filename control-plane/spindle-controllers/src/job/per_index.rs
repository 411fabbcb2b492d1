//! backoffLimitPerIndex, as kube-controller-manager runs it: each index of an Indexed Job
//! has its own failure budget. A pod carries how many failures its index had before it
//! (`batch.kubernetes.io/job-index-failure-count`, and the ignored ones apart); a failed
//! pod whose count already reached the limit, or that matched a FailIndex rule, fails
//! its index for good (`status.failedIndexes`). The failed pod keeps its finalizer until
//! its replacement exists, so the count can be handed on; the replacement waits the
//! index's own back-off. Too many failed indexes (`maxFailedIndexes`) fail the Job.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{JobStatus, PodFailurePolicy};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::policy::{self, Action};
use super::tracking::{completion_index, has_finalizer, is_active, is_failed};
use super::{backoff, indexes};

pub const FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
pub const IGNORED_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";

pub const MAX_FAILED_INDEXES: (&str, &str) = (
    "MaxFailedIndexesExceeded",
    "Job has exceeded the specified maximal number of failed indexes",
);
pub const FAILED_INDEXES: (&str, &str) = ("FailedIndexes", "Job has failed indexes");

/// A count annotation; 0 when absent or not a non-negative int32 (as kube reads it:
/// a user may have written anything there).
fn count(p: &Pod, key: &str) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|n| *n >= 0)
        .unwrap_or(0)
}

/// What this pass knows of the Job's indexes under backoffLimitPerIndex.
#[derive(Debug, Default)]
pub struct PerIndex {
    /// Every failed index, earlier ones included.
    pub failed: BTreeSet<i32>,
    /// Per index waiting for a replacement: the failed pod whose finalizer stays on.
    pub held: HashMap<i32, Arc<Pod>>,
}

/// What of the Job's spec bears on its indexes.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    pub completions: i32,
    /// backoffLimitPerIndex.
    pub limit: i32,
    pub policy: Option<&'a PodFailurePolicy>,
}

/// Work out the failed indexes and the held pods. `skip` are uids already done with
/// (finalizer removed); `succeeded` the succeeded indexes; `ending`: the Job is ending,
/// so nothing is held back any more.
pub fn assess(
    rules: &Rules<'_>,
    status: &JobStatus,
    pods: &[Arc<Pod>],
    skip: &HashSet<String>,
    succeeded: &BTreeSet<i32>,
    ending: bool,
) -> PerIndex {
    let Rules {
        completions,
        limit,
        policy,
    } = *rules;
    let mut failed = indexes::parse(status.failed_indexes.as_deref(), completions);
    let fresh_failures = pods.iter().filter_map(|p| {
        let ix = completion_index(p).filter(|i| *i < completions)?;
        let uid = p.metadata.uid.as_deref().unwrap_or_default();
        (is_failed(p) && has_finalizer(p) && !skip.contains(uid)).then_some((ix, p))
    });
    let fresh: Vec<(i32, &Arc<Pod>)> = fresh_failures.collect();
    for (ix, p) in &fresh {
        let exhausted = match policy::matching(policy, p) {
            Some(Action::FailIndex) => true,
            Some(Action::Ignore) => false,
            _ => count(p, FAILURE_COUNT) >= limit,
        };
        if exhausted {
            failed.insert(*ix);
        }
    }
    let mut held: HashMap<i32, Arc<Pod>> = HashMap::new();
    if !ending {
        let running: HashSet<i32> = pods
            .iter()
            .filter(|p| is_active(p))
            .filter_map(|p| completion_index(p))
            .collect();
        for (ix, p) in fresh {
            if failed.contains(&ix) || succeeded.contains(&ix) || running.contains(&ix) {
                continue;
            }
            let newer = |q: &Pod| {
                (absolute(q), backoff::finished_at(q)) >= (absolute(p), backoff::finished_at(p))
            };
            if !held.get(&ix).is_some_and(|q| newer(q)) {
                held.insert(ix, p.clone());
            }
        }
    }
    PerIndex { failed, held }
}

/// Failures of the index before `p`'s, and `p`'s own.
fn absolute(p: &Pod) -> i32 {
    count(p, FAILURE_COUNT).saturating_add(count(p, IGNORED_COUNT))
}

impl PerIndex {
    /// Uids of the held pods: not counted, and their finalizer kept, this pass.
    pub fn held_uids(&self) -> HashSet<String> {
        self.held
            .values()
            .filter_map(|p| p.metadata.uid.clone())
            .collect()
    }

    /// Whether the Job fails for its indexes, and why.
    pub fn verdict(
        &self,
        max_failed: Option<i32>,
        completions: i32,
        succeeded: usize,
    ) -> Option<(&'static str, &'static str)> {
        let n = self.failed.len();
        if max_failed.is_some_and(|m| n > m.max(0) as usize) {
            Some(MAX_FAILED_INDEXES)
        } else if n > 0 && n + succeeded >= completions.max(0) as usize {
            Some(FAILED_INDEXES)
        } else {
            None
        }
    }

    /// The annotations of a new pod for index `ix`: the failures its index had so far
    /// (and the ignored ones, when there were any).
    pub fn annotations(&self, ix: i32, policy: Option<&PodFailurePolicy>) -> Vec<(String, String)> {
        let (mut failures, mut ignored) = (0, 0);
        if let Some(p) = self.held.get(&ix) {
            failures = count(p, FAILURE_COUNT);
            ignored = count(p, IGNORED_COUNT);
            if policy::counts(policy, p) {
                failures += 1;
            } else {
                ignored += 1;
            }
        }
        let mut out = vec![(FAILURE_COUNT.to_string(), failures.to_string())];
        if ignored > 0 {
            out.push((IGNORED_COUNT.to_string(), ignored.to_string()));
        }
        out
    }

    /// How long index `ix` must still wait before its next pod: the back-off grows with
    /// the index's own failures, from when the last one ended.
    pub fn wait(&self, ix: i32, now: Timestamp) -> Duration {
        let Some(p) = self.held.get(&ix) else {
            return Duration::ZERO;
        };
        let delay = backoff::delay((absolute(p) + 1) as u32);
        let ended = backoff::finished_at(p).unwrap_or(now);
        let elapsed = Duration::try_from(now.duration_since(ended)).unwrap_or(Duration::ZERO);
        delay.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use kube::api::ObjectMeta;

    use crate::job::tracking::{FINALIZER, INDEX_KEY};

    fn pod(uid: &str, ix: i32, phase: &str, exit: i32, failures: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                finalizers: Some(vec![FINALIZER.into()]),
                annotations: Some(
                    [
                        (INDEX_KEY.to_string(), ix.to_string()),
                        (FAILURE_COUNT.to_string(), failures.to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(ContainerState {
                        terminated: (phase != "Running").then(|| ContainerStateTerminated {
                            exit_code: exit,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn fail_index_on(code: i32) -> PodFailurePolicy {
        PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "FailIndex".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: None,
                    operator: "In".into(),
                    values: vec![code],
                }),
                on_pod_conditions: None,
            }],
        }
    }

    #[test]
    fn an_index_fails_once_its_budget_is_spent_or_a_fail_index_rule_matches() {
        let policy = fail_index_on(3);
        let pods = vec![
            pod("a", 1, "Failed", 1, 0), // first failure of 1: retried
            pod("b", 2, "Failed", 1, 1), // second failure of 2: limit 1 reached
            pod("c", 3, "Failed", 3, 0), // FailIndex at once
            pod("d", 4, "Failed", 1, 0), // first failure, but 4 runs again already
            pod("e", 4, "Running", 0, 1),
        ];
        let status = JobStatus {
            failed_indexes: Some("0".into()),
            ..Default::default()
        };
        let none = HashSet::new();
        let rules = Rules {
            completions: 6,
            limit: 1,
            policy: Some(&policy),
        };
        let pi = assess(&rules, &status, &pods, &none, &BTreeSet::new(), false);
        assert_eq!(indexes::format(&pi.failed), "0,2,3");
        assert_eq!(pi.held.keys().copied().collect::<Vec<_>>(), [1]);
        // The replacement of index 1 carries one failure; a fresh index none.
        assert_eq!(
            pi.annotations(1, Some(&policy)),
            [(FAILURE_COUNT.to_string(), "1".to_string())]
        );
        assert_eq!(pi.annotations(5, Some(&policy))[0].1, "0");
        assert_eq!(pi.wait(5, Timestamp::now()), Duration::ZERO);
        // Three failed indexes: over maxFailedIndexes 2; else failed with 3 of 6 done.
        assert_eq!(pi.verdict(Some(2), 6, 0), Some(MAX_FAILED_INDEXES));
        assert_eq!(pi.verdict(Some(3), 6, 3), Some(FAILED_INDEXES));
        assert_eq!(pi.verdict(None, 6, 2), None);
        // An ending Job holds nothing back.
        let done = assess(&rules, &status, &pods, &none, &BTreeSet::new(), true);
        assert!(done.held.is_empty());
    }
}
