//! Filters and scores: pure functions of one pod, one node and what the node already
//! holds. Wording of failure reasons follows kube-scheduler so `kubectl describe` output
//! reads the same as on Kubernetes.

use std::collections::{HashMap, HashSet};

use crate::model::{NodeInfo, Resources, SchedPod, TaintInfo};

/// What a node already holds: bound pods plus pods assumed onto it by in-flight binds.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub requested: Resources,
    pub pods: i64,
    /// Requested CPU/memory with best-effort defaults, for scoring.
    pub nz_cpu: i64,
    pub nz_memory: i64,
    /// Pods per spread key (owner or label set). The keys are already hashes, and this is
    /// looked up for every candidate node of every decision: Fx instead of SipHash.
    pub spread: rustc_hash::FxHashMap<u64, u32>,
}

/// Why one node cannot take the pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    NotReady,
    Unschedulable,
    Taint { key: String, value: String },
    NodeAffinity,
    Insufficient(String),
    TooManyPods,
    NoContainerRuntime,
    TopologySpread,
    TopologySpreadMissingLabel,
    ExistingAntiAffinity,
    PodAntiAffinity,
    PodAffinity,
    VolumeNodeAffinity,
}

impl Reason {
    pub fn text(&self) -> String {
        match self {
            Reason::NotReady => "node(s) were not ready".into(),
            Reason::Unschedulable => "node(s) were unschedulable".into(),
            Reason::Taint { key, value } => {
                format!("node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Reason::VolumeNodeAffinity => "node(s) had volume node affinity conflict".into(),
            Reason::Insufficient(r) => format!("Insufficient {r}"),
            Reason::TooManyPods => "Too many pods".into(),
            Reason::NoContainerRuntime => "node(s) had no container runtime (containerd)".into(),
            Reason::TopologySpread => "node(s) didn't match pod topology spread constraints".into(),
            Reason::TopologySpreadMissingLabel => {
                "node(s) didn't match pod topology spread constraints (missing required label)"
                    .into()
            }
            Reason::ExistingAntiAffinity => {
                "node(s) didn't satisfy existing pods anti-affinity rules".into()
            }
            Reason::PodAntiAffinity => "node(s) didn't match pod anti-affinity rules".into(),
            Reason::PodAffinity => "node(s) didn't match pod affinity rules".into(),
        }
    }
}

/// Per-reason node counts for a pod that fits nowhere.
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    pub nodes: usize,
    pub reasons: HashMap<Reason, usize>,
}

impl Diagnosis {
    /// kube-scheduler's FitError text: "0/3 nodes are available: 1 node(s) had
    /// untolerated taint {k: v}, 2 Insufficient cpu." with "<count> <reason>" entries
    /// sorted as strings.
    pub fn message(&self) -> String {
        if self.nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {}", r.text()))
            .collect();
        parts.sort();
        format!(
            "0/{} nodes are available: {}.",
            self.nodes,
            parts.join(", ")
        )
    }
}

/// Set by agents whose node runs containers through containerd.
pub const CONTAINERD_LABEL: &str = "runtime.spindle.dev/containerd";

const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";
const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";

/// The taints the node lifecycle controller would put on such a node; a pod that
/// tolerates them (DaemonSet pods, for example) may still land there.
fn tolerates_synthetic(pod: &SchedPod, key: &str) -> bool {
    let t = TaintInfo {
        key: key.to_string(),
        value: String::new(),
        effect: NO_SCHEDULE.to_string(),
    };
    pod.tolerations.iter().any(|tol| tol.tolerates(&t))
}

/// Whether the pod tolerates the node's NoSchedule and NoExecute taints.
pub fn tolerates_taints(pod: &SchedPod, node: &NodeInfo) -> bool {
    node.taints
        .iter()
        .filter(|t| t.effect == NO_SCHEDULE || t.effect == NO_EXECUTE)
        .all(|t| pod.tolerations.iter().any(|tol| tol.tolerates(t)))
}

/// nodeSelector and required node affinity.
pub fn matches_node_affinity(pod: &SchedPod, node: &NodeInfo) -> bool {
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    selector_ok
        && pod
            .required
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|t| t.matches(node)))
}

/// Run every filter; on failure push the node's reasons and return false. As in
/// kube-scheduler, the first failing filter decides, except that the resource filter
/// reports every insufficient resource.
pub fn filter(pod: &SchedPod, node: &NodeInfo, usage: &Usage, reasons: &mut Vec<Reason>) -> bool {
    if !node.ready && !tolerates_synthetic(pod, "node.kubernetes.io/not-ready") {
        reasons.push(Reason::NotReady);
        return false;
    }
    if node.unschedulable && !tolerates_synthetic(pod, "node.kubernetes.io/unschedulable") {
        reasons.push(Reason::Unschedulable);
        return false;
    }
    for t in &node.taints {
        if (t.effect == NO_SCHEDULE || t.effect == NO_EXECUTE)
            && !pod.tolerations.iter().any(|tol| tol.tolerates(t))
        {
            reasons.push(Reason::Taint {
                key: t.key.clone(),
                value: t.value.clone(),
            });
            return false;
        }
    }
    if !matches_node_affinity(pod, node) {
        reasons.push(Reason::NodeAffinity);
        return false;
    }
    // VolumeBinding's filter: a bound local volume pins the pod to its node.
    if !pod
        .volume_required
        .iter()
        .all(|terms| terms.iter().any(|t| t.matches(node)))
    {
        reasons.push(Reason::VolumeNodeAffinity);
        return false;
    }
    if pod.needs_containers && node.labels.get(CONTAINERD_LABEL).map(String::as_str) != Some("true")
    {
        reasons.push(Reason::NoContainerRuntime);
        return false;
    }
    let before = reasons.len();
    if usage.pods + 1 > node.allocatable_pods {
        reasons.push(Reason::TooManyPods);
    }
    let req = &pod.requests;
    let alloc = &node.allocatable;
    let used = &usage.requested;
    // A resource the pod does not request is not checked, as in kube-scheduler.
    if req.cpu > 0 && req.cpu > alloc.cpu.saturating_sub(used.cpu) {
        reasons.push(Reason::Insufficient("cpu".into()));
    }
    if req.memory > 0 && req.memory > alloc.memory.saturating_sub(used.memory) {
        reasons.push(Reason::Insufficient("memory".into()));
    }
    for (name, want) in &req.other {
        if *want <= 0 {
            continue;
        }
        let have = lookup(&alloc.other, name).saturating_sub(lookup(&used.other, name));
        if *want > have {
            reasons.push(Reason::Insufficient(name.clone()));
        }
    }
    reasons.len() == before
}

/// What inter-pod constraints need to know about the cluster for one decision, counted
/// once over every placed pod before the nodes are walked (kube-scheduler's PreFilter
/// state for InterPodAffinity and PodTopologySpread).
#[derive(Debug, Default)]
pub struct InterState {
    /// Per required affinity term: the topology values that host a pod it selects.
    pub affinity: Vec<HashSet<String>>,
    /// No placed pod matches any required affinity term and the pod matches all of its
    /// own: the first of a group may go wherever the topology keys exist.
    pub affinity_first: bool,
    /// Per required anti-affinity term: the topology values that host a pod it selects.
    pub anti: Vec<HashSet<String>>,
    /// Topology key -> values where placed pods' required anti-affinity forbids this pod.
    pub existing_anti: HashMap<String, HashSet<String>>,
    /// Preferred terms: signed weight, topology key, selected pods per value.
    pub preferred: Vec<(i64, String, HashMap<String, i64>)>,
    pub spread: Vec<SpreadState>,
}

#[derive(Debug, Default)]
pub struct SpreadState {
    pub key: String,
    pub hard: bool,
    pub max_skew: i64,
    /// 1 when the pod itself matches the constraint's selector.
    pub self_match: i64,
    /// Selected pods per domain, every eligible domain present (zero included).
    pub counts: HashMap<String, i64>,
    pub min: i64,
}

/// The inter-pod filters, in kube-scheduler's order: PodTopologySpread, then
/// InterPodAffinity (the pod's affinity, its anti-affinity, existing pods' anti-affinity).
pub fn filter_inter(
    pod: &SchedPod,
    node: &NodeInfo,
    st: &InterState,
    reasons: &mut Vec<Reason>,
) -> bool {
    let value = |k: &str| node.labels.get(k);
    for c in st.spread.iter().filter(|c| c.hard) {
        let Some(v) = value(&c.key) else {
            reasons.push(Reason::TopologySpreadMissingLabel);
            return false;
        };
        let here = c.counts.get(v).copied().unwrap_or(0);
        if here + c.self_match - c.min > c.max_skew {
            reasons.push(Reason::TopologySpread);
            return false;
        }
    }
    if let Some(inter) = pod.inter.as_deref() {
        let mut all_keys = true;
        let mut all_hosted = true;
        for (t, hosts) in inter.required.iter().zip(&st.affinity) {
            match value(&t.topology_key) {
                Some(v) => all_hosted &= hosts.contains(v),
                None => all_keys = false,
            }
        }
        if !all_keys || !(all_hosted || st.affinity_first) {
            reasons.push(Reason::PodAffinity);
            return false;
        }
    }
    for (t, hosts) in pod.meta.anti_required.iter().zip(&st.anti) {
        if value(&t.topology_key).is_some_and(|v| hosts.contains(v)) {
            reasons.push(Reason::PodAntiAffinity);
            return false;
        }
    }
    if st
        .existing_anti
        .iter()
        .any(|(k, vals)| value(k).is_some_and(|have| vals.contains(have)))
    {
        reasons.push(Reason::ExistingAntiAffinity);
        return false;
    }
    true
}

/// Preferred pod (anti-)affinity: the weighted count of selected pods sharing the node's
/// topology domains (anti-affinity weights count negative).
pub fn inter_affinity_score(node: &NodeInfo, st: &InterState) -> i64 {
    st.preferred
        .iter()
        .filter_map(|(w, key, counts)| {
            node.labels
                .get(key)
                .and_then(|v| counts.get(v))
                .map(|n| w * n)
        })
        .sum()
}

/// ScheduleAnyway spread constraints: selected pods already in the node's domains
/// (fewer is better); a node without the key counts as the most crowded.
pub fn soft_spread_count(node: &NodeInfo, st: &InterState) -> i64 {
    st.spread
        .iter()
        .filter(|c| !c.hard)
        .map(|c| match node.labels.get(&c.key) {
            Some(v) => c.counts.get(v).copied().unwrap_or(0),
            None => c.counts.values().copied().max().unwrap_or(0) + 1,
        })
        .sum()
}

fn lookup(list: &[(String, i64)], name: &str) -> i64 {
    list.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
}

/// The highest score a single scoring plugin gives.
pub const MAX_SCORE: i64 = 100;

/// Least-allocated: the mean of the free CPU and memory fractions after placing the pod,
/// on the best-effort-adjusted requests.
pub fn least_allocated(pod: &SchedPod, node: &NodeInfo, usage: &Usage) -> i64 {
    let part = |alloc: i64, used: i64| {
        if alloc <= 0 {
            return 0;
        }
        let free = alloc.saturating_sub(used).max(0);
        // i128: memory in bytes times 100 can exceed i64 on exabyte nodes.
        (i128::from(free) * i128::from(MAX_SCORE) / i128::from(alloc)) as i64
    };
    // Requests are the user's numbers: sums saturate.
    let cpu = part(
        node.allocatable.cpu,
        usage.nz_cpu.saturating_add(pod.nz_cpu),
    );
    let mem = part(
        node.allocatable.memory,
        usage.nz_memory.saturating_add(pod.nz_memory),
    );
    (cpu + mem) / 2
}

/// Sum of the weights of the preferred node-affinity terms the node matches.
pub fn preferred_affinity(pod: &SchedPod, node: &NodeInfo) -> i64 {
    pod.preferred
        .iter()
        .filter(|(_, t)| t.matches(node))
        .map(|(w, _)| i64::from(*w))
        .sum()
}

/// Number of PreferNoSchedule taints the pod does not tolerate.
pub fn intolerable_prefer_taints(pod: &SchedPod, node: &NodeInfo) -> i64 {
    node.taints
        .iter()
        .filter(|t| t.effect == PREFER_NO_SCHEDULE)
        .filter(|t| {
            !pod.tolerations
                .iter()
                .filter(|tol| tol.effect.is_empty() || tol.effect == PREFER_NO_SCHEDULE)
                .any(|tol| tol.tolerates(t))
        })
        .count() as i64
}

/// Pods of the same owner (or label set) already on the node.
pub fn spread_count(pod: &SchedPod, usage: &Usage) -> i64 {
    pod.spread_key
        .and_then(|k| usage.spread.get(&k))
        .map_or(0, |n| i64::from(*n))
}

/// Raw per-node scores, normalised across all feasible nodes by [`total_scores`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Candidate {
    pub slot: usize,
    pub least_allocated: i64,
    pub affinity: i64,
    pub prefer_taints: i64,
    pub spread: i64,
    pub pod_affinity: i64,
    pub soft_spread: i64,
}

impl Candidate {
    pub fn new(
        slot: usize,
        pod: &SchedPod,
        node: &NodeInfo,
        usage: &Usage,
        inter: Option<&InterState>,
    ) -> Candidate {
        Candidate {
            slot,
            least_allocated: least_allocated(pod, node, usage),
            affinity: if pod.preferred.is_empty() {
                0
            } else {
                preferred_affinity(pod, node)
            },
            prefer_taints: intolerable_prefer_taints(pod, node),
            spread: spread_count(pod, usage),
            pod_affinity: inter.map_or(0, |st| inter_affinity_score(node, st)),
            soft_spread: inter.map_or(0, |st| soft_spread_count(node, st)),
        }
    }
}

/// Plugin weights, as in kube-scheduler's default profile: TaintToleration 3,
/// NodeAffinity 2, spreading 2, NodeResourcesFit 1.
const W_LEAST_ALLOCATED: i64 = 1;
const W_AFFINITY: i64 = 2;
const W_TAINTS: i64 = 3;
const W_SPREAD: i64 = 2;
const W_INTER_POD: i64 = 2;

/// Normalise every plugin to 0..=100 across the candidates and return the weighted
/// totals in candidate order.
pub fn total_scores(cands: &[Candidate], out: &mut Vec<i64>) {
    out.clear();
    let max_aff = cands.iter().map(|c| c.affinity).max().unwrap_or(0);
    let max_taint = cands.iter().map(|c| c.prefer_taints).max().unwrap_or(0);
    let max_spread = cands.iter().map(|c| c.spread).max().unwrap_or(0);
    let (min_pa, max_pa) = min_max(cands.iter().map(|c| c.pod_affinity));
    let (min_ss, max_ss) = min_max(cands.iter().map(|c| c.soft_spread));
    for c in cands {
        // Inter-pod affinity and soft spread, normalised between the candidates' extremes
        // as kube-scheduler does; all equal gives all the same score.
        let pod_aff = if max_pa > min_pa {
            (c.pod_affinity - min_pa) * MAX_SCORE / (max_pa - min_pa)
        } else {
            0
        };
        let soft = if max_ss > min_ss {
            (max_ss - c.soft_spread) * MAX_SCORE / (max_ss - min_ss)
        } else {
            MAX_SCORE
        };
        let aff = if max_aff > 0 {
            c.affinity * MAX_SCORE / max_aff
        } else {
            0
        };
        // Fewer intolerable soft taints and fewer siblings score higher.
        let taint = if max_taint > 0 {
            MAX_SCORE - c.prefer_taints * MAX_SCORE / max_taint
        } else {
            MAX_SCORE
        };
        let spread = if max_spread > 0 {
            (max_spread - c.spread) * MAX_SCORE / max_spread
        } else {
            MAX_SCORE
        };
        out.push(
            W_LEAST_ALLOCATED * c.least_allocated
                + W_AFFINITY * aff
                + W_TAINTS * taint
                + W_SPREAD * spread
                + W_INTER_POD * (pod_aff + soft),
        );
    }
}

fn min_max(it: impl Iterator<Item = i64>) -> (i64, i64) {
    it.fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// How many feasible nodes to find before scoring, as kube-scheduler's adaptive
/// percentageOfNodesToScore: all nodes up to 100, then 50% shrinking by 1% per 125
/// nodes, never below 5% or 100 nodes. Scoring a sample keeps per-pod cost flat on big
/// clusters; the rotating start makes successive pods look at different nodes.
pub fn feasible_nodes_to_find(all: usize) -> usize {
    const MIN: usize = 100;
    if all < MIN {
        return all;
    }
    let pct = 50usize.saturating_sub(all / 125).max(5);
    (all * pct / 100).max(MIN)
}
