//! What one pass of the StatefulSet controller does, free of I/O, following kube's
//! `stateful_set_control.go` (updateStatefulSet): the pods in the ordinal range
//! `[start, start + replicas)` are the replicas, the others are condemned. Missing and
//! failed replicas are (re)created first, then condemned pods go from the highest ordinal
//! down, then a RollingUpdate deletes the highest pods at or above the partition that
//! are not of the update revision, at most maxUnavailable at a time.
//!
//! Under OrderedReady ("monotonic") the pass stops at the first step it takes or the
//! first pod that is not yet Running, Ready and available: each pod waits for all of
//! its predecessors, and scale-down waits for all of them too. Parallel does every step
//! of a phase at once.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::identity::*;

/// The settings of one pass.
#[derive(Clone, Debug)]
pub struct Params<'a> {
    pub start: i32,
    pub replicas: i32,
    /// OrderedReady (as opposed to Parallel).
    pub monotonic: bool,
    /// RollingUpdate (as opposed to OnDelete).
    pub rolling: bool,
    /// Replicas below this index keep the current revision.
    pub partition: i32,
    pub max_unavailable: i32,
    pub min_ready: i64,
    pub now: Timestamp,
    pub current_revision: &'a str,
    pub update_revision: &'a str,
    /// The StatefulSet is being deleted: nothing is created or deleted.
    pub deleting: bool,
}

/// Why a pod is deleted (each has its event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    Failed,
    Succeeded,
    ScaleDown,
    Update,
}

#[derive(Clone, Debug)]
pub enum Step {
    /// Create the pod of `ordinal` from the update revision (or else the current one).
    Create {
        ordinal: i32,
        update: bool,
    },
    Delete {
        pod: Arc<Pod>,
        why: Why,
    },
    /// Put back the identity labels of a replica.
    FixIdentity {
        pod: Arc<Pod>,
        ordinal: i32,
    },
    /// A replica is still Pending: make sure its claims exist.
    CreateMissingClaims {
        pod: Arc<Pod>,
        ordinal: i32,
    },
}

impl Step {
    /// Whether the step writes a pod (create or delete), which OrderedReady takes one at
    /// a time.
    pub fn is_pod_write(&self) -> bool {
        matches!(self, Step::Create { .. } | Step::Delete { .. })
    }
}

/// The replicas in ordinal order (None: no pod yet) and the condemned pods, highest
/// ordinal first. Pods without an ordinal are ignored.
pub fn partition_pods(p: &Params<'_>, pods: &[Arc<Pod>]) -> (Vec<Option<Arc<Pod>>>, Vec<Arc<Pod>>) {
    let mut replicas: Vec<Option<Arc<Pod>>> = vec![None; p.replicas.max(0) as usize];
    let mut condemned = Vec::new();
    for pod in pods {
        let Some(ord) = ordinal_of(pod) else { continue };
        let i = i64::from(ord) - i64::from(p.start);
        match usize::try_from(i).ok().and_then(|i| replicas.get_mut(i)) {
            Some(slot) => *slot = Some(pod.clone()),
            None => condemned.push(pod.clone()),
        }
    }
    condemned.sort_by_key(|pod| std::cmp::Reverse(ordinal_of(pod)));
    (replicas, condemned)
}

/// Whether the new pod of `ordinal` is made from the update revision: those below the
/// partition keep the current one (kube's newVersionedStatefulSetPod).
fn uses_update(p: &Params<'_>, ordinal: i32) -> bool {
    !(p.rolling && ordinal < p.start.saturating_add(p.partition))
}

/// The steps of one pass over the set's pods.
pub fn plan(p: &Params<'_>, pods: &[Arc<Pod>]) -> Vec<Step> {
    let (replicas, condemned) = partition_pods(p, pods);
    let mut steps = Vec::new();
    if p.deleting {
        return steps;
    }
    let healthy = |pod: &Pod| is_healthy(pod, p.min_ready, p.now);
    // The first unhealthy pod, replicas by ordinal then condemned ones by ordinal: in
    // OrderedReady, the only unhealthy condemned pod that may go without waiting.
    let first_unhealthy: Option<String> = replicas
        .iter()
        .map(|r| r.as_ref().map(|pod| (pod, healthy(pod))))
        .chain(condemned.iter().rev().map(|pod| Some((pod, healthy(pod)))))
        .find(|r| r.is_none_or(|(_, h)| !h))
        .flatten()
        .map(|(pod, _)| pod.name_any());

    for (i, slot) in replicas.iter().enumerate() {
        let ordinal = p.start + i as i32;
        let pod = match slot {
            None => {
                let update = uses_update(p, ordinal);
                steps.push(Step::Create { ordinal, update });
                if p.monotonic {
                    return steps;
                }
                continue;
            }
            Some(pod) => pod,
        };
        if (is_failed(pod) || is_succeeded(pod)) && !is_terminating(pod) {
            // Deleted now, created anew once it is gone (a pass later).
            let why = if is_failed(pod) {
                Why::Failed
            } else {
                Why::Succeeded
            };
            steps.push(Step::Delete {
                pod: pod.clone(),
                why,
            });
            if p.monotonic {
                return steps;
            }
            continue;
        }
        if is_pending(pod) {
            steps.push(Step::CreateMissingClaims {
                pod: pod.clone(),
                ordinal,
            });
        }
        if p.monotonic
            && (is_terminating(pod)
                || !is_running_and_ready(pod)
                || !is_running_and_available(pod, p.min_ready, p.now))
        {
            return steps;
        }
        if !is_terminating(pod) && !identity_matches(pod) {
            steps.push(Step::FixIdentity {
                pod: pod.clone(),
                ordinal,
            });
        }
    }

    for pod in &condemned {
        if is_terminating(pod) {
            if p.monotonic {
                return steps;
            }
            continue;
        }
        let first = first_unhealthy.as_deref() == Some(pod.name_any().as_str());
        if p.monotonic && !healthy(pod) && !first {
            return steps;
        }
        steps.push(Step::Delete {
            pod: pod.clone(),
            why: Why::ScaleDown,
        });
        if p.monotonic {
            return steps;
        }
    }

    if !p.rolling {
        return steps;
    }
    // Created this pass (Parallel) or missing: unavailable too.
    let unavailable = replicas
        .iter()
        .filter(|r| r.as_ref().is_none_or(|pod| !healthy(pod)))
        .count() as i32;
    let mut budget = p.max_unavailable.max(1) - unavailable;
    let from = p.partition.max(0) as usize;
    for slot in replicas.iter().skip(from).rev() {
        if budget <= 0 {
            break;
        }
        let Some(pod) = slot else { continue };
        if revision_of(pod) != p.update_revision && !is_terminating(pod) {
            steps.push(Step::Delete {
                pod: pod.clone(),
                why: Why::Update,
            });
            budget -= 1;
        }
    }
    steps
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
