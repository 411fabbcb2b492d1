//! ResourceQuota accounting shared by the API server's ResourceQuota admission and the
//! resourcequota controller, so both count an object the same way (Kubernetes'
//! `pkg/quota/v1/evaluator/core`): what one object uses of each quota resource, which
//! quotas' scopes select a pod, and how quota messages print resource lists.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Quantity;

/// Resource name to amount, sorted by name as Kubernetes prints them.
pub type ResourceList = BTreeMap<String, Quantity>;

/// The core objects quota counts by their bare plural besides `count/<plural>`.
pub const CORE_COUNTS: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
];

/// The counts of kinds of Service.
pub const SERVICE_COUNTS: &[&str] = &["services.nodeports", "services.loadbalancers"];

/// The compute and storage resources quota knows without a domain.
pub const COMPUTE: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

/// The resources a container must name when a quota limits them, which are also what a
/// quota with scopes may limit besides `pods` (the pod evaluator's
/// `validationSet` and the Terminating and BestEffort families' resources).
pub const MUST_NAME: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// A quantity as JSON writes it: a string, or a bare number.
pub fn quantity(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// A `ResourceList` object; entries that are not quantities are left out (validation
/// refuses them before they are stored).
pub fn resource_list(v: Option<&Value>) -> ResourceList {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), quantity(q)?)))
        .collect()
}

/// `quota.Add`: the sum by resource. A zero takes the format of what is added to it,
/// as Go's `Quantity.Add` does, so `0 + 1Gi` prints `1Gi`.
pub fn add(into: &mut ResourceList, other: &ResourceList) {
    for (k, q) in other {
        let sum = into
            .get(k)
            .filter(|s| !s.is_zero())
            .map_or(*q, |s| s.saturating_add(*q));
        into.insert(k.clone(), sum);
    }
}

/// `requests.cpu=1,pods=2`: Kubernetes' `prettyPrint` of a resource list.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, q)| format!("{k}={q}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn one() -> Quantity {
    Quantity::from_value(1, crate::quantity::Format::DecimalSI)
}

/// A pod's `requests` or `limits` (`part`): the containers' sum or the largest init
/// container, whichever is more (`resourcehelper.PodRequests`/`PodLimits` without the
/// overhead, as the LimitRanger sums them).
pub fn pod_resources(spec: &Value, part: &str) -> ResourceList {
    let of = |c: &Value| resource_list(c.pointer(&format!("/resources/{part}")));
    let mut sum = ResourceList::new();
    for c in spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(&mut sum, &of(c));
    }
    for c in spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (k, q) in of(c) {
            if sum.get(&k).is_none_or(|s| *s < q) {
                sum.insert(k, q);
            }
        }
    }
    sum
}

/// `resourcehelper.PodRequests`/`PodLimits`: with the pod's overhead on its requests.
fn pod_amounts(spec: &Value, part: &str) -> ResourceList {
    let mut sum = pod_resources(spec, part);
    if part == "requests" {
        add(&mut sum, &resource_list(spec.get("overhead")));
    }
    sum
}

/// `podComputeUsageHelper`: what requests and limits charge, under each name a quota
/// may use for them.
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), one());
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.into(), *q);
            out.insert(format!("requests.{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), *q);
        }
    }
    for (r, q) in requests {
        if r.starts_with("hugepages-") {
            out.insert(r.clone(), *q);
        }
        if r.starts_with("hugepages-") || (r.contains('/') && !r.starts_with("requests.")) {
            out.insert(format!("requests.{r}"), *q);
        }
    }
    out
}

/// `QuotaV1Pod`: whether a pod still holds compute quota (terminal pods, and pods past
/// their deletion time, no longer do).
pub fn pod_holds_quota(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    let deleted_at = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    deleted_at.is_none_or(|t| t > chrono::Utc::now())
}

/// `PodUsageFunc`: `count/pods` for every stored pod, compute for the live ones.
pub fn pod_usage(pod: &Value) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("count/pods".into(), one());
    if pod_holds_quota(pod) {
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let usage = compute_usage(&pod_amounts(spec, "requests"), &pod_amounts(spec, "limits"));
        add(&mut out, &usage);
    }
    out
}

/// What creating one object of `plural` in `group` charges (the generic object-count
/// evaluator, plus the claim and Service evaluators' own names).
pub fn object_usage(group: &str, plural: &str, obj: &Value) -> ResourceList {
    if group.is_empty() && plural == "pods" {
        return pod_usage(obj);
    }
    let mut out = ResourceList::new();
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    out.insert(count, one());
    if !group.is_empty() || !CORE_COUNTS.contains(&plural) {
        return out;
    }
    out.insert(plural.to_string(), one());
    match plural {
        "persistentvolumeclaims" => {
            let class = obj
                .pointer("/spec/storageClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let storage = obj
                .pointer("/spec/resources/requests/storage")
                .and_then(quantity);
            if !class.is_empty() {
                let prefix = format!("{class}.storageclass.storage.k8s.io/");
                out.insert(format!("{prefix}persistentvolumeclaims"), one());
                if let Some(q) = storage {
                    out.insert(format!("{prefix}requests.storage"), q);
                }
            }
            if let Some(q) = storage {
                out.insert("requests.storage".into(), q);
            }
        }
        "services" => {
            let ty = obj.pointer("/spec/type").and_then(Value::as_str);
            if ty == Some("LoadBalancer") {
                out.insert("services.loadbalancers".into(), one());
            }
            if matches!(ty, Some("NodePort" | "LoadBalancer")) {
                let ports = obj
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let n = i64::try_from(ports).unwrap_or(i64::MAX);
                out.insert(
                    "services.nodeports".into(),
                    Quantity::from_value(n, crate::quantity::Format::DecimalSI),
                );
            }
        }
        _ => {}
    }
    out
}

/// The objects (group, plural) whose usage a quota resource counts: `count/<plural>` and
/// `count/<plural>.<group>`, the core counts, and what pods, claims and Services charge.
pub fn counted_objects(resource: &str) -> (String, String) {
    let core = |p: &str| (String::new(), p.to_string());
    if let Some(what) = resource.strip_prefix("count/") {
        return match what.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => core(what),
        };
    }
    if resource.contains(".storageclass.storage.k8s.io/") || resource == "requests.storage" {
        return core("persistentvolumeclaims");
    }
    if resource.starts_with("services") {
        return core("services");
    }
    if CORE_COUNTS.contains(&resource) {
        return core(resource);
    }
    // Compute resources: cpu, memory, requests.*, limits.*, hugepages, extended ones.
    core("pods")
}

/// A quota's scopes as selector requirements: `spec.scopes` (each an `Exists`) and
/// `spec.scopeSelector.matchExpressions`.
fn scope_requirements(spec: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<(String, String, Vec<String>)> = spec
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), "Exists".to_string(), Vec::new()))
        .collect();
    let exprs = spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array);
    for e in exprs.into_iter().flatten() {
        let s = |f: &str| e.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        out.push((s("scopeName"), s("operator"), values));
    }
    out
}

/// Whether the quota (its spec) has scopes: then it applies to pods alone.
pub fn is_scoped(spec: &Value) -> bool {
    !scope_requirements(spec).is_empty()
}

/// Whether a pod is BestEffort: no CPU or memory request or limit in any container.
fn best_effort(spec: &Value) -> bool {
    let (req, lim) = (pod_amounts(spec, "requests"), pod_amounts(spec, "limits"));
    ["cpu", "memory"].iter().all(|r| {
        req.get(*r).is_none_or(Quantity::is_zero) && lim.get(*r).is_none_or(Quantity::is_zero)
    })
}

/// `usesCrossNamespacePodAffinity`: an affinity or anti-affinity term of the pod names
/// other namespaces or selects them.
fn cross_namespace_affinity(spec: &Value) -> bool {
    let crosses = |t: &Value| {
        let t = t.get("podAffinityTerm").unwrap_or(t);
        t.get("namespaces")
            .and_then(Value::as_array)
            .is_some_and(|n| !n.is_empty())
            || t.get("namespaceSelector").is_some_and(|s| !s.is_null())
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let terms = [
            "requiredDuringSchedulingIgnoredDuringExecution",
            "preferredDuringSchedulingIgnoredDuringExecution",
        ];
        terms.iter().any(|when| {
            spec.pointer(&format!("/affinity/{kind}/{when}"))
                .and_then(Value::as_array)
                .is_some_and(|ts| ts.iter().any(crosses))
        })
    })
}

/// `podMatchesScopeFunc` for every scope of the quota.
pub fn pod_matches_scopes(quota_spec: &Value, pod: &Value) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let terminating = spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|s| s >= 0);
    let class = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    scope_requirements(quota_spec)
        .iter()
        .all(|(scope, op, values)| match scope.as_str() {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort(spec),
            "NotBestEffort" => !best_effort(spec),
            "CrossNamespacePodAffinity" => cross_namespace_affinity(spec),
            "PriorityClass" => match op.as_str() {
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                _ => false,
            },
            _ => false,
        })
}

/// Whether the quota counts `obj` of `plural` in `group` at all; `Some` with the
/// resources of `hard` it may charge.
pub fn matching_resources(
    quota_spec: &Value,
    hard: &ResourceList,
    group: &str,
    plural: &str,
    obj: &Value,
) -> Option<Vec<String>> {
    let is_pod = group.is_empty() && plural == "pods";
    if is_scoped(quota_spec) {
        if !is_pod || !pod_matches_scopes(quota_spec, obj) {
            return None;
        }
        return Some(
            hard.keys()
                .filter(|k| *k == "pods" || MUST_NAME.contains(&k.as_str()))
                .cloned()
                .collect(),
        );
    }
    Some(hard.keys().cloned().collect())
}

/// `must specify limits.cpu for: app; memory for: app,side` when a container of the pod
/// does not set what the quota limits.
pub fn pod_constraints(required: &[String], pod: &Value) -> Result<(), String> {
    let required: Vec<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| MUST_NAME.contains(r))
        .collect();
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let usage = compute_usage(
            &resource_list(c.pointer("/resources/requests")),
            &resource_list(c.pointer("/resources/limits")),
        );
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        for r in &required {
            if !usage.contains_key(*r) {
                let names = missing.entry(r).or_default();
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort_unstable();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect("quantity")
    }

    #[test]
    fn a_pod_charges_the_larger_of_its_containers_and_init_containers() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}}
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m"}}}]
        }});
        let u = pod_usage(&pod);
        assert_eq!(u["pods"], q("1"));
        assert_eq!(u["requests.cpu"], q("500m"));
        assert_eq!(u["cpu"], q("500m"));
        assert_eq!(u["limits.memory"], q("1Gi"));
        assert!(!u.contains_key("requests.memory"));
    }

    #[test]
    fn terminal_pods_keep_only_their_object_count() {
        let pod = json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        let u = pod_usage(&pod);
        assert_eq!(u.keys().collect::<Vec<_>>(), ["count/pods"]);
    }

    #[test]
    fn scopes_select_pods_by_qos_and_deadline() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        let burst = json!({"spec": {"activeDeadlineSeconds": 5, "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        let be = json!({"scopes": ["BestEffort"]});
        assert!(pod_matches_scopes(&be, &best));
        assert!(!pod_matches_scopes(&be, &burst));
        let cross = json!({"spec": {"containers": [], "affinity": {"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                "podAffinityTerm": {"topologyKey": "k", "namespaceSelector": {}}}]}}}});
        let xns = json!({"scopes": ["CrossNamespacePodAffinity"]});
        assert!(pod_matches_scopes(&xns, &cross));
        assert!(!pod_matches_scopes(&xns, &best));
        let term = json!({"scopes": ["NotBestEffort", "Terminating"]});
        assert!(pod_matches_scopes(&term, &burst));
        assert!(!pod_matches_scopes(&term, &best));
        let hard = resource_list(Some(&json!({"pods": "1", "configmaps": "1"})));
        assert_eq!(
            matching_resources(&be, &hard, "", "pods", &best),
            Some(vec!["pods".to_string()])
        );
        assert_eq!(
            matching_resources(&be, &hard, "", "configmaps", &json!({})),
            None
        );
    }

    #[test]
    fn constraints_name_each_missing_resource_and_container() {
        let pod = json!({"spec": {"containers": [
            {"name": "b", "resources": {"requests": {"cpu": "1"}}},
            {"name": "a"}
        ]}});
        let req = vec![
            "requests.cpu".to_string(),
            "limits.memory".to_string(),
            "pods".to_string(),
        ];
        assert_eq!(
            pod_constraints(&req, &pod),
            Err("must specify limits.memory for: a,b; requests.cpu for: a".to_string())
        );
    }

    #[test]
    fn claims_and_services_charge_their_own_names() {
        let pvc = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "5Gi"}}}});
        let u = object_usage("", "persistentvolumeclaims", &pvc);
        assert_eq!(u["requests.storage"], q("5Gi"));
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"],
            q("5Gi")
        );
        assert_eq!(u["persistentvolumeclaims"], q("1"));
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        let u = object_usage("", "services", &svc);
        assert_eq!(u["services.nodeports"], q("2"));
        assert_eq!(
            counted_objects("count/deployments.apps"),
            ("apps".to_string(), "deployments".to_string())
        );
        assert_eq!(
            counted_objects("limits.cpu"),
            (String::new(), "pods".to_string())
        );
        assert_eq!(
            counted_objects("gold.storageclass.storage.k8s.io/requests.storage"),
            (String::new(), "persistentvolumeclaims".to_string())
        );
        let u = object_usage("apps", "deployments", &json!({}));
        assert_eq!(pretty(&u), "count/deployments.apps=1");
    }
}
