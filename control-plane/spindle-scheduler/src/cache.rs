//! The scheduler's view of the cluster: nodes and what each holds, fed by watches and by
//! the scheduler's own assumptions, and the placement decision over it.
//!
//! Nodes live in slots addressed by index so the decision loop walks a Vec instead of
//! hashing node names. A slot outlives its Node object while pods are still counted on it
//! (a node deleted and re-registered under the same name keeps correct usage).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::Rng;

use crate::algorithm::{self, Candidate, Diagnosis, InterState, Reason, SpreadState, Usage};
use crate::model::{NodeInfo, PodMeta, Resources, SchedPod};

mod preempt;
pub use preempt::Preemption;

struct Slot {
    node: Option<NodeInfo>,
    usage: Usage,
}

/// A pod counted on a node.
#[derive(Clone, Debug)]
struct Placement {
    slot: usize,
    requests: Resources,
    nz_cpu: i64,
    nz_memory: i64,
    spread_key: Option<u64>,
    meta: Arc<PodMeta>,
    /// Decided by us, not yet seen bound by the watch.
    assumed: bool,
    /// For preemption: who the pod is and how much it matters.
    name: String,
    priority: i32,
}

/// Count a placement on (sign 1) or off (sign -1) a node's usage.
fn apply(u: &mut Usage, p: &Placement, sign: i64) {
    u.requested.add(&p.requests, sign);
    u.pods += sign;
    u.nz_cpu = u.nz_cpu.saturating_add(sign.saturating_mul(p.nz_cpu));
    u.nz_memory = u.nz_memory.saturating_add(sign.saturating_mul(p.nz_memory));
    if let Some(k) = p.spread_key {
        let n = u.spread.entry(k).or_insert(0);
        if sign > 0 {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                u.spread.remove(&k);
            }
        }
    }
}

#[derive(Default)]
pub struct Cache {
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    /// Slots that currently have a Node.
    live: Vec<usize>,
    /// Pod key -> where it is counted.
    placements: HashMap<String, Placement>,
    /// Where the next decision starts looking (kube-scheduler's nextStartNodeIndex).
    next_start: usize,
    /// Keys of placed pods with required anti-affinity: pods without inter-pod rules of
    /// their own only look at these (none, usually, and then skip the pass entirely).
    with_anti: HashSet<String>,
    // Scratch buffers reused by every decision.
    candidates: Vec<Candidate>,
    scores: Vec<i64>,
    reasons: Vec<Reason>,
}

impl Cache {
    pub fn node_count(&self) -> usize {
        self.live.len()
    }

    pub fn node_name(&self, slot: usize) -> Option<&str> {
        self.slots
            .get(slot)
            .and_then(|s| s.node.as_ref())
            .map(|n| n.name.as_str())
    }

    fn slot_for(&mut self, name: &str) -> usize {
        if let Some(i) = self.by_name.get(name) {
            return *i;
        }
        let i = self.slots.len();
        self.slots.push(Slot {
            node: None,
            usage: Usage::default(),
        });
        self.by_name.insert(name.to_string(), i);
        i
    }

    /// Add or update a node; true when anything scheduling looks at changed (status
    /// heartbeats do not count, so they do not wake unschedulable pods).
    pub fn upsert_node(&mut self, info: NodeInfo) -> bool {
        let i = self.slot_for(&info.name);
        let slot = &mut self.slots[i];
        match &slot.node {
            Some(old) if *old == info => false,
            Some(_) => {
                slot.node = Some(info);
                true
            }
            None => {
                slot.node = Some(info);
                self.live.push(i);
                true
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(&i) = self.by_name.get(name) {
            if self.slots[i].node.take().is_some() {
                self.live.retain(|&s| s != i);
            }
        }
    }

    /// Replace the node set after a (re)list.
    pub fn set_nodes(&mut self, nodes: Vec<NodeInfo>) {
        let keep: std::collections::HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let gone: Vec<String> = self
            .live
            .iter()
            .filter_map(|&i| self.slots[i].node.as_ref())
            .filter(|n| !keep.contains(n.name.as_str()))
            .map(|n| n.name.clone())
            .collect();
        for name in gone {
            self.remove_node(&name);
        }
        for n in nodes {
            self.upsert_node(n);
        }
    }

    fn apply(&mut self, p: &Placement, sign: i64) {
        apply(&mut self.slots[p.slot].usage, p, sign);
    }

    fn place(&mut self, key: &str, slot: usize, pod: &SchedPod, assumed: bool) {
        self.unplace(key);
        let p = Placement {
            slot,
            requests: pod.requests.clone(),
            nz_cpu: pod.nz_cpu,
            nz_memory: pod.nz_memory,
            spread_key: pod.spread_key,
            meta: pod.meta.clone(),
            assumed,
            name: pod.name.clone(),
            priority: pod.priority,
        };
        self.apply(&p, 1);
        if !p.meta.anti_required.is_empty() {
            self.with_anti.insert(key.to_string());
        }
        self.placements.insert(key.to_string(), p);
    }

    /// Stop counting a pod anywhere; true if it was counted.
    pub fn unplace(&mut self, key: &str) -> bool {
        match self.placements.remove(key) {
            Some(p) => {
                self.with_anti.remove(key);
                self.apply(&p, -1);
                true
            }
            None => false,
        }
    }

    /// Count a pod on the node we chose, before the binding is confirmed, so the next
    /// decisions see the node's capacity already taken.
    pub fn assume(&mut self, key: &str, slot: usize, pod: &SchedPod) {
        self.place(key, slot, pod, true);
    }

    /// Undo an assumption after a failed bind (a pod the watch saw bound meanwhile stays).
    pub fn forget(&mut self, key: &str) {
        if self.placements.get(key).is_some_and(|p| p.assumed) {
            self.unplace(key);
        }
    }

    #[cfg(test)]
    pub fn is_assumed(&self, key: &str) -> bool {
        self.placements.get(key).is_some_and(|p| p.assumed)
    }

    /// The watch saw the pod bound to `node`: confirm the assumption or count it. True
    /// when it was counted anew (a new placement, or new labels: what pods with
    /// inter-pod rules may be waiting for).
    pub fn observe_bound(&mut self, key: &str, node: &str, pod: &SchedPod) -> bool {
        let slot = self.slot_for(node);
        match self.placements.get_mut(key) {
            // Same node: the assumption became fact; resources were counted already, but
            // requests (in-place resize) or labels may have changed: recount if they did.
            Some(p)
                if p.slot == slot
                    && p.requests == pod.requests
                    && (Arc::ptr_eq(&p.meta, &pod.meta) || *p.meta == *pod.meta) =>
            {
                p.assumed = false;
                false
            }
            _ => {
                self.place(key, slot, pod, false);
                true
            }
        }
    }

    /// Keep only the placements `keep` accepts (used after a pod relist).
    pub fn retain_placements(&mut self, mut keep: impl FnMut(&str, bool) -> bool) {
        let drop: Vec<String> = self
            .placements
            .iter()
            .filter(|(k, p)| !keep(k, p.assumed))
            .map(|(k, _)| k.clone())
            .collect();
        for k in drop {
            self.unplace(&k);
        }
    }

    /// Count what the pod's inter-pod constraints, and placed pods' anti-affinity, need:
    /// one pass over every placed pod (assumed ones included, so a burst of replicas sees
    /// its own earlier members).
    fn inter_state(&self, pod: &SchedPod) -> InterState {
        let mut st = InterState::default();
        let empty = crate::model::InterPod::default();
        let inter = pod.inter.as_deref().unwrap_or(&empty);
        st.affinity = vec![HashSet::new(); inter.required.len()];
        st.anti = vec![HashSet::new(); pod.meta.anti_required.len()];
        let weighted = inter
            .preferred
            .iter()
            .map(|(w, t)| (*w, t))
            .chain(inter.anti_preferred.iter().map(|(w, t)| (-*w, t)));
        st.preferred = weighted
            .clone()
            .map(|(w, t)| (w, t.topology_key.clone(), HashMap::new()))
            .collect();
        // Spread domains, per constraint: the nodes with the key that its policies admit
        // (nodeAffinityPolicy: the pod's node selector and affinity; nodeTaintsPolicy: the
        // pod tolerates the node's taints).
        let eligible: Vec<Vec<bool>> = inter
            .spread
            .iter()
            .map(|c| {
                let mut ok = vec![false; self.slots.len()];
                for &i in &self.live {
                    if let Some(node) = &self.slots[i].node {
                        ok[i] = (!c.honor_node_affinity
                            || algorithm::matches_node_affinity(pod, node))
                            && (!c.honor_taints || algorithm::tolerates_taints(pod, node));
                    }
                }
                ok
            })
            .collect();
        st.spread = inter
            .spread
            .iter()
            .zip(&eligible)
            .map(|(c, ok)| {
                let mut counts = HashMap::new();
                for &i in &self.live {
                    if let Some(v) = self.slots[i]
                        .node
                        .as_ref()
                        .filter(|_| ok[i])
                        .and_then(|n| n.labels.get(&c.topology_key))
                    {
                        counts.entry(v.clone()).or_insert(0);
                    }
                }
                SpreadState {
                    key: c.topology_key.clone(),
                    hard: c.hard,
                    max_skew: c.max_skew,
                    self_match: i64::from(
                        c.selector
                            .as_ref()
                            .is_some_and(|s| s.matches(&pod.meta.labels)),
                    ),
                    counts,
                    min: 0,
                }
            })
            .collect();
        for p in self.with_anti.iter().filter_map(|k| self.placements.get(k)) {
            let Some(node) = self.slots[p.slot].node.as_ref() else {
                continue;
            };
            for t in &p.meta.anti_required {
                if t.selects(&pod.meta) {
                    if let Some(v) = node.labels.get(&t.topology_key) {
                        st.existing_anti
                            .entry(t.topology_key.clone())
                            .or_default()
                            .insert(v.clone());
                    }
                }
            }
        }
        if pod.inter.is_none() {
            return st;
        }
        for p in self.placements.values() {
            let Some(node) = self.slots[p.slot].node.as_ref() else {
                continue;
            };
            let other = &p.meta;
            // As kube-scheduler: a placed pod counts for required affinity only if it
            // matches every term, and then in each term's topology domain.
            if !inter.required.is_empty() && inter.required.iter().all(|t| t.selects(other)) {
                for (t, hosts) in inter.required.iter().zip(st.affinity.iter_mut()) {
                    if let Some(v) = node.labels.get(&t.topology_key) {
                        hosts.insert(v.clone());
                    }
                }
            }
            for (t, hosts) in pod.meta.anti_required.iter().zip(st.anti.iter_mut()) {
                if t.selects(other) {
                    if let Some(v) = node.labels.get(&t.topology_key) {
                        hosts.insert(v.clone());
                    }
                }
            }
            for ((_, t), (_, _, counts)) in weighted.clone().zip(st.preferred.iter_mut()) {
                if t.selects(other) {
                    if let Some(v) = node.labels.get(&t.topology_key) {
                        *counts.entry(v.clone()).or_insert(0) += 1;
                    }
                }
            }
            for ((c, state), ok) in inter.spread.iter().zip(st.spread.iter_mut()).zip(&eligible) {
                // Only pods of the pod's own namespace count towards its spread, and not
                // those being deleted.
                if !ok[p.slot]
                    || other.terminating
                    || other.namespace != pod.meta.namespace
                    || !c
                        .selector
                        .as_ref()
                        .is_some_and(|s| s.matches(&other.labels))
                {
                    continue;
                }
                if let Some(n) = node
                    .labels
                    .get(&c.topology_key)
                    .and_then(|v| state.counts.get_mut(v))
                {
                    *n += 1;
                }
            }
        }
        for (c, state) in inter.spread.iter().zip(st.spread.iter_mut()) {
            let domains = state.counts.len() as i64;
            state.min = if c.min_domains.is_some_and(|m| domains < m) {
                0
            } else {
                state.counts.values().copied().min().unwrap_or(0)
            };
        }
        st.affinity_first = st.affinity.iter().all(HashSet::is_empty)
            && inter.required.iter().all(|t| t.selects(&pod.meta));
        st
    }

    /// Pick a node for the pod, or say why none fits. Sequential by design: each call
    /// sees every earlier assumption.
    pub fn decide(&mut self, pod: &SchedPod, rng: &mut impl Rng) -> Result<usize, Diagnosis> {
        let n = self.live.len();
        if n == 0 {
            return Err(Diagnosis::default());
        }
        let inter =
            (pod.inter.is_some() || !self.with_anti.is_empty()).then(|| self.inter_state(pod));
        let want = algorithm::feasible_nodes_to_find(n);
        let start = self.next_start % n;
        let Cache {
            slots,
            live,
            candidates,
            scores,
            reasons,
            ..
        } = self;
        candidates.clear();
        reasons.clear();
        let mut diagnosis = Diagnosis {
            nodes: n,
            ..Diagnosis::default()
        };
        let mut processed = 0;
        for i in 0..n {
            let slot_idx = live[(start + i) % n];
            processed += 1;
            let slot = &slots[slot_idx];
            let Some(node) = &slot.node else { continue };
            if algorithm::filter(pod, node, &slot.usage, reasons)
                && inter
                    .as_ref()
                    .is_none_or(|st| algorithm::filter_inter(pod, node, st, reasons))
            {
                candidates.push(Candidate::new(
                    slot_idx,
                    pod,
                    node,
                    &slot.usage,
                    inter.as_ref(),
                ));
                if candidates.len() >= want {
                    break;
                }
            } else {
                for r in reasons.drain(..) {
                    *diagnosis.reasons.entry(r).or_insert(0) += 1;
                }
            }
        }
        self.next_start = (start + processed) % n;
        if candidates.is_empty() {
            return Err(diagnosis);
        }
        algorithm::total_scores(candidates, scores);
        // Highest score wins; ties are broken uniformly at random (reservoir sampling),
        // so equal nodes share the load instead of the first one taking it all.
        let mut best = 0;
        let mut best_score = i64::MIN;
        let mut ties = 0u32;
        for (i, &s) in scores.iter().enumerate() {
            if s > best_score {
                best = i;
                best_score = s;
                ties = 1;
            } else if s == best_score {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        Ok(candidates[best].slot)
    }

    #[cfg(test)]
    pub fn usage_of(&self, node: &str) -> Option<&Usage> {
        self.by_name.get(node).map(|&i| &self.slots[i].usage)
    }
}
