//! The scheduler's own compact views of Pods and Nodes.
//!
//! Watch events carry full API objects; the decision loop only needs a handful of fields,
//! pre-parsed (quantities to integers, affinity to match terms). Converting once per watch
//! event, in the watcher task, keeps the sequential decision loop free of parsing and of
//! string-keyed map lookups into JSON-shaped structs.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use spindle_meta::selector::{Expression, Matcher};

/// CPU (millicores) and memory (bytes) counted for a pod that requests none, for scoring
/// only, as kube-scheduler does, so best-effort pods still spread instead of piling onto
/// the first node that looks empty.
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Requested or allocatable amounts: CPU in millicores, memory in bytes, anything else
/// (ephemeral-storage, hugepages, extended resources) in whole units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i64,
    pub memory: i64,
    /// Sorted by name; usually empty, so a Vec beats a map.
    pub other: Vec<(String, i64)>,
}

impl Resources {
    fn get_other(&self, name: &str) -> i64 {
        self.other
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    fn set_other(&mut self, name: &str, v: i64) {
        match self.other.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.other[i].1 = v,
            Err(i) => self.other.insert(i, (name.to_string(), v)),
        }
    }

    /// Add (`sign` = 1) or subtract (`sign` = -1) another list.
    pub fn add(&mut self, o: &Resources, sign: i64) {
        self.cpu = self.cpu.saturating_add(sign.saturating_mul(o.cpu));
        self.memory = self.memory.saturating_add(sign.saturating_mul(o.memory));
        for (n, v) in &o.other {
            let cur = self.get_other(n);
            self.set_other(n, cur.saturating_add(sign.saturating_mul(*v)));
        }
    }

    /// Per-resource maximum.
    fn max_with(&mut self, o: &Resources) {
        self.cpu = self.cpu.max(o.cpu);
        self.memory = self.memory.max(o.memory);
        for (n, v) in &o.other {
            let cur = self.get_other(n);
            if *v > cur {
                self.set_other(n, *v);
            }
        }
    }

    /// Parse a ResourceList; unparseable values are skipped (validation rejects them
    /// upstream, and one bad entry must not make a whole node or pod vanish).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            match name.as_str() {
                "cpu" => r.cpu = exact(q).map_or(0, |q| q.as_millis()),
                "memory" => r.memory = exact(q).map_or(0, |q| q.value()),
                // The pod count is a node property, handled separately.
                "pods" => {}
                n => {
                    if let Some(q) = exact(q) {
                        r.set_other(n, q.value());
                    }
                }
            }
        }
        r
    }
}

/// The exact quantity of an API value, `None` if it does not parse.
fn exact(q: &Quantity) -> Option<spindle_meta::Quantity> {
    spindle_meta::Quantity::try_from(q).ok()
}

/// A container's effective requests: a resource with only a limit is requested at the
/// limit, which is what API defaulting would have filled in.
fn container_requests(c: &Container) -> Resources {
    let Some(res) = &c.resources else {
        return Resources::default();
    };
    let mut merged: BTreeMap<String, Quantity> = res.limits.clone().unwrap_or_default();
    if let Some(req) = &res.requests {
        for (k, v) in req {
            merged.insert(k.clone(), v.clone());
        }
    }
    Resources::from_list(&merged)
}

/// Requests used for scoring: zero CPU/memory replaced by the defaults above.
fn non_zero(r: &Resources) -> (i64, i64) {
    (
        if r.cpu == 0 { DEFAULT_MILLI_CPU } else { r.cpu },
        if r.memory == 0 {
            DEFAULT_MEMORY
        } else {
            r.memory
        },
    )
}

/// A pod's requests the way kube-scheduler computes them: the sum over app containers
/// and restartable (sidecar) init containers, at least the peak of any regular init
/// container (plus the sidecars already running beside it), plus pod overhead.
/// Returns (requests, non-zero cpu, non-zero memory). The numbers are the user's: every
/// sum saturates rather than overflow.
pub fn pod_requests(pod: &Pod) -> (Resources, i64, i64) {
    let Some(spec) = &pod.spec else {
        return (Resources::default(), 0, 0);
    };
    let mut sum = Resources::default();
    let (mut nz_cpu, mut nz_mem) = (0i64, 0i64);
    for c in &spec.containers {
        let r = container_requests(c);
        let (c_cpu, c_mem) = non_zero(&r);
        nz_cpu = nz_cpu.saturating_add(c_cpu);
        nz_mem = nz_mem.saturating_add(c_mem);
        sum.add(&r, 1);
    }
    let mut init_peak = Resources::default();
    let (mut init_nz_cpu, mut init_nz_mem) = (0i64, 0i64);
    let mut sidecars = Resources::default();
    let (mut side_nz_cpu, mut side_nz_mem) = (0i64, 0i64);
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        let (c_cpu, c_mem) = non_zero(&r);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r, 1);
            side_nz_cpu = side_nz_cpu.saturating_add(c_cpu);
            side_nz_mem = side_nz_mem.saturating_add(c_mem);
        } else {
            let mut peak = sidecars.clone();
            peak.add(&r, 1);
            init_peak.max_with(&peak);
            init_nz_cpu = init_nz_cpu.max(side_nz_cpu.saturating_add(c_cpu));
            init_nz_mem = init_nz_mem.max(side_nz_mem.saturating_add(c_mem));
        }
    }
    sum.add(&sidecars, 1);
    nz_cpu = nz_cpu.saturating_add(side_nz_cpu);
    nz_mem = nz_mem.saturating_add(side_nz_mem);
    sum.max_with(&init_peak);
    nz_cpu = nz_cpu.max(init_nz_cpu);
    nz_mem = nz_mem.max(init_nz_mem);
    if let Some(overhead) = &spec.overhead {
        let o = Resources::from_list(overhead);
        nz_cpu = nz_cpu.saturating_add(o.cpu);
        nz_mem = nz_mem.saturating_add(o.memory);
        sum.add(&o, 1);
    }
    (sum, nz_cpu, nz_mem)
}

/// A node-selector requirement operator. Unknown operators never match (as in
/// apimachinery, where they are a parse error that makes the term fail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

impl Requirement {
    /// A node-selector requirement from its API parts (Gt/Lt take one integer value).
    /// Label selectors over pods are spindle-meta's, which have no Gt/Lt.
    fn parse(key: &str, operator: &str, values: Vec<String>) -> Requirement {
        let int = || match values.as_slice() {
            [v] => v.parse::<i64>().ok(),
            _ => None,
        };
        let op = match operator {
            "Gt" => int().map_or(Op::Invalid, Op::Gt),
            "Lt" => int().map_or(Op::Invalid, Op::Lt),
            "In" => Op::In(values),
            "NotIn" => Op::NotIn(values),
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            _ => Op::Invalid,
        };
        Requirement {
            key: key.to_string(),
            op,
        }
    }

    fn from_api(r: &NodeSelectorRequirement) -> Requirement {
        let values = r.values.clone().unwrap_or_default();
        Requirement::parse(&r.key, &r.operator, values)
    }

    /// Does a value (None when the label is absent) satisfy this requirement?
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::In(vs), Some(v)) => vs.iter().any(|x| x == v),
            (Op::In(_), None) => false,
            (Op::NotIn(vs), Some(v)) => !vs.iter().any(|x| x == v),
            (Op::NotIn(_), None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::Gt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
            (Op::Lt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
            (Op::Gt(_) | Op::Lt(_), None) => false,
            (Op::Invalid, _) => false,
        }
    }
}

/// One nodeSelectorTerm: all label expressions and all field expressions must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub labels: Vec<Requirement>,
    pub fields: Vec<Requirement>,
}

impl Term {
    pub(crate) fn from_api(t: &NodeSelectorTerm) -> Term {
        let conv = |v: &Option<Vec<NodeSelectorRequirement>>| {
            v.iter()
                .flatten()
                .map(Requirement::from_api)
                .collect::<Vec<_>>()
        };
        Term {
            labels: conv(&t.match_expressions),
            fields: conv(&t.match_fields),
        }
    }

    /// An empty term matches nothing, as in Kubernetes.
    pub fn matches(&self, node: &NodeInfo) -> bool {
        if self.labels.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.labels
            .iter()
            .all(|r| r.matches(node.labels.get(&r.key).map(String::as_str)))
            && self.fields.iter().all(|r| match r.key.as_str() {
                // metadata.name is the only supported node field.
                "metadata.name" => r.matches(Some(&node.name)),
                _ => false,
            })
    }
}

/// A parsed label selector over pods (spindle-meta's matcher, with the
/// matchLabelKeys/mismatchLabelKeys requirements added). `None` in the places that hold
/// one stands for a missing selector, which selects nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSelector(Matcher);

impl PodSelector {
    /// `extra` are the expressions matchLabelKeys and mismatchLabelKeys add. A malformed
    /// selector (refused by validation upstream) selects nothing.
    fn from_api(sel: &LabelSelector, extra: Vec<Expression>) -> PodSelector {
        PodSelector(Matcher::from_label_selector(Some(sel)).with(extra))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }
}

/// matchLabelKeys (the pod's own value must match) and mismatchLabelKeys (must differ),
/// as extra requirements; keys the pod does not carry add nothing, as in Kubernetes.
fn label_key_reqs(
    labels: &BTreeMap<String, String>,
    same: Option<&Vec<String>>,
    differ: Option<&Vec<String>>,
) -> Vec<Expression> {
    let mut out = Vec::new();
    for (keys, same) in [(same, true), (differ, false)] {
        for k in keys.into_iter().flatten() {
            if let Some(v) = labels.get(k) {
                let values = [v.clone()].into();
                out.push(if same {
                    Expression::In(k.clone(), values)
                } else {
                    Expression::NotIn(k.clone(), values)
                });
            }
        }
    }
    out
}

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Which namespaces a pod affinity term looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    All,
    /// Names listed in the term (the pod's own when the term names none), plus those a
    /// namespaceSelector on `kubernetes.io/metadata.name` selects. The scheduler keeps no
    /// Namespace objects, so a selector on other namespace labels selects none of them.
    Some {
        names: Vec<String>,
        by_name: Option<Matcher>,
    },
}

impl Namespaces {
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Some { names, by_name } => {
                names.iter().any(|n| n == ns)
                    || by_name.as_ref().is_some_and(|m| {
                        // The only label the scheduler knows a namespace to carry.
                        m.matches(&BTreeMap::from([(
                            NAMESPACE_NAME_LABEL.to_string(),
                            ns.to_string(),
                        )]))
                    })
            }
        }
    }
}

/// One pod (anti-)affinity term: pods matching `selector` in `namespaces`, counted per
/// value of the node label `topology_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTerm {
    pub selector: Option<PodSelector>,
    pub namespaces: Namespaces,
    pub topology_key: String,
}

impl PodTerm {
    fn from_api(t: &PodAffinityTerm, ns: &str, labels: &BTreeMap<String, String>) -> PodTerm {
        let names = t.namespaces.clone().unwrap_or_default();
        let namespaces = match &t.namespace_selector {
            Some(sel) if spindle_meta::selector::is_empty(sel) => Namespaces::All,
            Some(sel) => {
                let keys = sel.match_labels.iter().flatten().map(|(k, _)| k);
                let on_name = keys
                    .chain(sel.match_expressions.iter().flatten().map(|e| &e.key))
                    .all(|k| k == NAMESPACE_NAME_LABEL);
                Namespaces::Some {
                    names,
                    by_name: on_name.then(|| Matcher::from_label_selector(Some(sel))),
                }
            }
            None if names.is_empty() => Namespaces::Some {
                names: vec![ns.to_string()],
                by_name: None,
            },
            None => Namespaces::Some {
                names,
                by_name: None,
            },
        };
        let extra = label_key_reqs(
            labels,
            t.match_label_keys.as_ref(),
            t.mismatch_label_keys.as_ref(),
        );
        PodTerm {
            selector: t
                .label_selector
                .as_ref()
                .map(|s| PodSelector::from_api(s, extra)),
            namespaces,
            topology_key: t.topology_key.clone(),
        }
    }

    /// Does this term select a pod?
    pub fn selects(&self, pod: &PodMeta) -> bool {
        self.namespaces.contains(&pod.namespace)
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(&pod.labels))
    }
}

/// One topologySpreadConstraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spread {
    pub max_skew: i64,
    pub topology_key: String,
    /// whenUnsatisfiable: DoNotSchedule (a filter) or ScheduleAnyway (a score).
    pub hard: bool,
    pub selector: Option<PodSelector>,
    pub min_domains: Option<i64>,
    /// nodeAffinityPolicy Honor (the default): only nodes the pod's node selector and
    /// affinity allow are domains.
    pub honor_node_affinity: bool,
    /// nodeTaintsPolicy Honor (default Ignore): only nodes whose taints the pod tolerates
    /// are domains.
    pub honor_taints: bool,
}

/// What other pods' scheduling needs to know about a placed pod.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PodMeta {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Required anti-affinity: it keeps pods it selects out of its topology domain too.
    pub anti_required: Vec<PodTerm>,
    /// Being deleted: no longer counted towards topology spread (as kube-scheduler).
    pub terminating: bool,
}

/// A pod's own inter-pod constraints (absent for most pods, which then pay nothing).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct InterPod {
    pub required: Vec<PodTerm>,
    pub preferred: Vec<(i64, PodTerm)>,
    /// Preferred anti-affinity, weights as given (subtracted when scoring).
    pub anti_preferred: Vec<(i64, PodTerm)>,
    pub spread: Vec<Spread>,
}

fn inter_pod(pod: &Pod, meta: &PodMeta) -> (Vec<PodTerm>, Option<Box<InterPod>>) {
    let spec = pod.spec.as_ref();
    let (ns, labels) = (&meta.namespace, &meta.labels);
    let aff = spec.and_then(|s| s.affinity.as_ref());
    let pa = aff.and_then(|a| a.pod_affinity.as_ref());
    let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
    let terms = |ts: Option<&Vec<PodAffinityTerm>>| -> Vec<PodTerm> {
        ts.into_iter()
            .flatten()
            .map(|t| PodTerm::from_api(t, ns, labels))
            .collect()
    };
    let weighted = |ts: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
        ts.into_iter()
            .flatten()
            .filter(|w| w.weight != 0)
            .map(|w| {
                (
                    i64::from(w.weight),
                    PodTerm::from_api(&w.pod_affinity_term, ns, labels),
                )
            })
            .collect::<Vec<_>>()
    };
    let anti_required = terms(paa.and_then(|a| {
        a.required_during_scheduling_ignored_during_execution
            .as_ref()
    }));
    let spread = spec
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .map(|c: &TopologySpreadConstraint| Spread {
            max_skew: i64::from(c.max_skew.max(1)),
            topology_key: c.topology_key.clone(),
            hard: c.when_unsatisfiable != "ScheduleAnyway",
            selector: c.label_selector.as_ref().map(|s| {
                PodSelector::from_api(s, label_key_reqs(labels, c.match_label_keys.as_ref(), None))
            }),
            min_domains: c.min_domains.map(i64::from),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        })
        .collect::<Vec<_>>();
    let inter = InterPod {
        required: terms(pa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        preferred: weighted(pa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        anti_preferred: weighted(paa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        spread,
    };
    let any = !inter.required.is_empty()
        || !inter.preferred.is_empty()
        || !inter.anti_preferred.is_empty()
        || !inter.spread.is_empty()
        || !anti_required.is_empty();
    (anti_required, any.then(|| Box::new(inter)))
}

/// The parts of a toleration the filters use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tol {
    pub key: String,
    pub exists: bool,
    pub value: String,
    pub effect: String,
}

impl Tol {
    fn from_api(t: &Toleration) -> Tol {
        Tol {
            key: t.key.clone().unwrap_or_default(),
            exists: t.operator.as_deref() == Some("Exists"),
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.clone().unwrap_or_default(),
        }
    }

    /// Kubernetes' ToleratesTaint: effect empty matches every effect; an empty key with
    /// Exists matches every key; Equal (the default operator) also compares the value.
    pub fn tolerates(&self, t: &TaintInfo) -> bool {
        if !self.effect.is_empty() && self.effect != t.effect {
            return false;
        }
        if self.key.is_empty() {
            return self.exists;
        }
        self.key == t.key && (self.exists || self.value == t.value)
    }
}

/// Everything the scheduler needs to know about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    /// `preemptionPolicy: Never`: the pod waits rather than evict lower-priority pods.
    pub preempt_never: bool,
    pub requests: Resources,
    /// Requests for scoring, with defaults for best-effort containers.
    pub nz_cpu: i64,
    pub nz_memory: i64,
    pub node_selector: Vec<(String, String)>,
    /// The pod's runtimeClassName asks for containers (runc), which only nodes with
    /// containerd run.
    pub needs_containers: bool,
    /// Required node affinity terms (ORed); None when the pod has none.
    pub required: Option<Vec<Term>>,
    pub preferred: Vec<(i32, Term)>,
    pub tolerations: Vec<Tol>,
    /// Pods with the same key are spread apart: the controller's uid, or the labels.
    pub spread_key: Option<u64>,
    /// Namespace, labels and required anti-affinity, kept with the pod's placement for
    /// other pods' affinity terms.
    pub meta: Arc<PodMeta>,
    /// The pod's own pod (anti-)affinity and topology spread constraints, if any.
    pub inter: Option<Box<InterPod>>,
    /// The PersistentVolumeClaims the pod's volumes name.
    pub claims: Vec<String>,
    /// The node affinity of the volumes bound to those claims, each volume's terms
    /// ORed, all volumes ANDed; filled in for one decision (`volumes.rs`).
    pub volume_required: Vec<Vec<Term>>,
}

/// Where a pod is in its life, as far as scheduling cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    pub key: String,
    /// spec.nodeName, when bound.
    pub node_name: Option<String>,
    /// Succeeded/Failed pods hold no resources.
    pub terminal: bool,
    /// Unbound, for this scheduler, not being deleted, without scheduling gates.
    pub wants_scheduling: bool,
    pub pod: Arc<SchedPod>,
}

fn hash_of<T: Hash>(t: T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

impl PodRecord {
    pub fn from_pod(pod: &Pod, scheduler_name: &str) -> PodRecord {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        // The uid identifies a pod across delete-and-recreate under the same name.
        let key = meta
            .uid
            .clone()
            .unwrap_or_else(|| format!("{namespace}/{name}"));
        let spec = pod.spec.as_ref();
        let node_name = spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let terminal = matches!(phase, Some("Succeeded") | Some("Failed"));
        let ours = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default-scheduler")
            == scheduler_name;
        let gated = spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        let wants_scheduling = node_name.is_none()
            && !terminal
            && ours
            && !gated
            && meta.deletion_timestamp.is_none()
            && spec.is_some();

        let (requests, nz_cpu, nz_memory) = pod_requests(pod);
        let node_selector = spec
            .and_then(|s| s.node_selector.as_ref())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let node_affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref());
        let required = node_affinity
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|ns| ns.node_selector_terms.iter().map(Term::from_api).collect());
        let preferred = node_affinity
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|ps| {
                ps.iter()
                    .filter(|p| p.weight != 0)
                    .map(|p| (p.weight, Term::from_api(&p.preference)))
                    .collect()
            })
            .unwrap_or_default();
        let tolerations = spec
            .and_then(|s| s.tolerations.as_ref())
            .map(|ts| ts.iter().map(Tol::from_api).collect())
            .unwrap_or_default();
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let spread_key = match (controller, &meta.labels) {
            (Some(o), _) => Some(hash_of(("owner", &o.uid))),
            (None, Some(labels)) if !labels.is_empty() => {
                Some(hash_of(("labels", &namespace, labels)))
            }
            _ => None,
        };
        let mut pod_meta = PodMeta {
            namespace: namespace.clone(),
            labels: meta.labels.clone().unwrap_or_default(),
            anti_required: Vec::new(),
            terminating: meta.deletion_timestamp.is_some(),
        };
        let (anti_required, inter) = inter_pod(pod, &pod_meta);
        pod_meta.anti_required = anti_required;
        PodRecord {
            key: key.clone(),
            node_name,
            terminal,
            wants_scheduling,
            pod: Arc::new(SchedPod {
                uid: meta.uid.clone().unwrap_or_default(),
                namespace,
                name,
                priority: spec.and_then(|s| s.priority).unwrap_or(0),
                preempt_never: spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never"),
                requests,
                nz_cpu,
                nz_memory,
                node_selector,
                needs_containers: matches!(
                    spec.and_then(|s| s.runtime_class_name.as_deref()),
                    Some("runc" | "containerd")
                ),
                required,
                preferred,
                tolerations,
                spread_key,
                meta: Arc::new(pod_meta),
                inter,
                claims: pod_claims(pod),
                volume_required: Vec::new(),
            }),
        }
    }
}

/// The claims a pod's volumes name: `persistentVolumeClaim` volumes, and the claims of
/// generic ephemeral volumes (`<pod>-<volume>`).
fn pod_claims(pod: &Pod) -> Vec<String> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let vols = pod.spec.as_ref().and_then(|s| s.volumes.as_deref());
    vols.into_iter()
        .flatten()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => Some(c.claim_name.clone()),
            (None, Some(_)) => Some(format!("{name}-{}", v.name)),
            _ => None,
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaintInfo {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// Everything the scheduler needs to know about a node. Equality is used to tell a
/// scheduling-relevant change from a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub unschedulable: bool,
    pub taints: Vec<TaintInfo>,
    pub allocatable: Resources,
    pub allocatable_pods: i64,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> NodeInfo {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        // Allocatable is what may be scheduled; capacity stands in only when a node
        // reports no allocatable at all.
        let list = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .cloned()
            .unwrap_or_default();
        let allocatable_pods = list
            .get("pods")
            .and_then(exact)
            .map(|q| q.value())
            .unwrap_or(0);
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ready,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .map(|ts| {
                    ts.iter()
                        .map(|t| TaintInfo {
                            key: t.key.clone(),
                            value: t.value.clone().unwrap_or_default(),
                            effect: t.effect.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            allocatable: Resources::from_list(&list),
            allocatable_pods,
        }
    }
}

/// A Pod as the scheduler's watch reads it: the spec in full, and of metadata and status
/// only what scheduling uses. managedFields and the container statuses are most of a
/// pod's JSON and were most of the scheduler's own CPU time; skipping them (serde ignores
/// unknown fields without building them) leaves more of the machine to the API server.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct PodView {
    #[serde(deserialize_with = "meta_view")]
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    pub spec: Option<k8s_openapi::api::core::v1::PodSpec>,
    #[serde(default, deserialize_with = "status_view")]
    pub status: Option<k8s_openapi::api::core::v1::PodStatus>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaView {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
    deletion_timestamp: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

fn meta_view<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, D::Error> {
    let m: MetaView = serde::Deserialize::deserialize(d)?;
    Ok(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        owner_references: m.owner_references,
        deletion_timestamp: m.deletion_timestamp,
        ..Default::default()
    })
}

#[derive(serde::Deserialize)]
struct StatusView {
    phase: Option<String>,
}

fn status_view<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<k8s_openapi::api::core::v1::PodStatus>, D::Error> {
    let s: Option<StatusView> = serde::Deserialize::deserialize(d)?;
    Ok(s.map(|s| k8s_openapi::api::core::v1::PodStatus {
        phase: s.phase,
        ..Default::default()
    }))
}

impl kube::Resource for PodView {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

impl PodView {
    /// As a Pod (the parts read).
    pub fn into_pod(self) -> Pod {
        Pod {
            metadata: self.metadata,
            spec: self.spec,
            status: self.status,
        }
    }
}
