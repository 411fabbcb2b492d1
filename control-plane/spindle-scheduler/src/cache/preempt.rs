//! Preemption (kube-scheduler's DefaultPreemption PostFilter) over the cache: for a pod
//! that fits nowhere, the node where evicting the fewest, least important lower-priority
//! pods lets it fit.
//!
//! As in kube-scheduler: on each node every lower-priority pod is first taken away; if
//! the pod then fits, the candidates are given back most important first, each one kept
//! (reprieved) while the pod still fits; the nodes are ranked by the highest victim
//! priority, then the sum of victim priorities, then the number of victims. Inter-pod
//! rules are not re-run for the dry run (the resource, taint and affinity filters are).

use std::collections::HashMap;

use super::{apply, Cache, Placement};
use crate::algorithm::{self, Reason};
use crate::model::SchedPod;

/// A node's victims ranked as kube-scheduler ranks them (highest victim priority, sum
/// of priorities, count: lower is better), with the node's slot.
type Ranked<'a> = ((i32, i64, usize), usize, Vec<(&'a String, &'a Placement)>);

/// A pod to evict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    pub key: String,
    pub namespace: String,
    pub name: String,
}

/// Where the pod will go once its victims are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Victim>,
}

const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// Reasons that evicting pods can cure; the others (taints, affinity, readiness) stay.
fn resolvable(r: &Reason) -> bool {
    matches!(r, Reason::Insufficient(_) | Reason::TooManyPods)
}

impl Cache {
    /// Whether lower-priority pods on `node` are already terminating: an earlier
    /// preemption's victims, which the pod waits for rather than preempt again.
    pub fn lower_terminating_on(&self, node: &str, priority: i32) -> bool {
        let Some(&slot) = self.by_name.get(node) else {
            return false;
        };
        self.placements
            .values()
            .any(|p| p.slot == slot && p.priority < priority && p.meta.terminating)
    }

    /// Choose a node and victims for `pod`, or say (kube's FitError text) why none.
    pub fn preempt(&self, pod: &SchedPod) -> Result<Preemption, String> {
        let mut lower: HashMap<usize, Vec<(&String, &Placement)>> = HashMap::new();
        for (k, p) in &self.placements {
            if p.priority < pod.priority && !p.meta.terminating {
                lower.entry(p.slot).or_default().push((k, p));
            }
        }
        let (mut no_victims, mut not_helpful) = (0usize, 0usize);
        let mut best: Option<Ranked<'_>> = None;
        let mut reasons = Vec::new();
        for &slot in &self.live {
            let s = &self.slots[slot];
            let Some(node) = &s.node else { continue };
            let mut usage = s.usage.clone();
            let mut candidates = lower.remove(&slot).unwrap_or_default();
            for (_, p) in &candidates {
                apply(&mut usage, p, -1);
            }
            reasons.clear();
            if !algorithm::filter(pod, node, &usage, &mut reasons) {
                if reasons.iter().all(resolvable) {
                    no_victims += 1;
                } else {
                    not_helpful += 1;
                }
                continue;
            }
            candidates.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then(a.0.cmp(b.0)));
            let mut victims = Vec::new();
            for (k, p) in candidates {
                apply(&mut usage, p, 1);
                reasons.clear();
                if !algorithm::filter(pod, node, &usage, &mut reasons) {
                    apply(&mut usage, p, -1);
                    victims.push((k, p));
                }
            }
            if victims.is_empty() {
                // It fits without evicting anyone: an inter-pod rule keeps it off, which
                // kube-scheduler counts as resolvable but finds no victims for here.
                no_victims += 1;
                continue;
            }
            let rank = (
                victims
                    .iter()
                    .map(|v| v.1.priority)
                    .max()
                    .unwrap_or(i32::MIN),
                victims.iter().map(|v| i64::from(v.1.priority)).sum(),
                victims.len(),
            );
            if best.as_ref().is_none_or(|b| rank < b.0) {
                best = Some((rank, slot, victims));
            }
        }
        if let Some((_, slot, victims)) = best {
            return Ok(Preemption {
                node: self.node_name(slot).unwrap_or_default().to_string(),
                victims: victims
                    .into_iter()
                    .map(|(k, p)| Victim {
                        key: k.clone(),
                        namespace: p.meta.namespace.clone(),
                        name: p.name.clone(),
                    })
                    .collect(),
            });
        }
        let mut parts: Vec<String> = [(no_victims, NO_VICTIMS), (not_helpful, NOT_HELPFUL)]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, r)| format!("{n} {r}"))
            .collect();
        parts.sort();
        Err(format!(
            "0/{} nodes are available: {}.",
            self.live.len(),
            parts.join(", ")
        ))
    }
}
