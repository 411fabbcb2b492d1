//! LimitRanger: the namespace's LimitRanges give a new pod's containers the default
//! requests and limits they lack, and refuse pods and claims outside their bounds
//! (kube-apiserver's `plugin/pkg/admission/limitranger`).

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use spindle_meta::quota::{pod_resources, resource_list, ResourceList};

use super::{Admission, Attributes, Operation};
use crate::authz::attributes::forbidden_error;
use crate::rest::{decode_stored, key};
use crate::status::ApiResult;
use crate::AppState;

/// The annotation naming what the plugin set on a pod.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

pub struct LimitRanger;

/// The limits (`spec.limits[*]`) of every LimitRange in the namespace.
async fn limits_in(st: &AppState, ns: &str) -> ApiResult<Vec<Value>> {
    let Some(kind) = st.reg.by_resource("", "v1", "limitranges") else {
        return Ok(Vec::new());
    };
    let (kvs, _) = st.store.list(&key(kind, Some(ns), None)).await?;
    let mut out = Vec::new();
    for kv in &kvs {
        let lr = decode_stored(kv)?;
        if let Some(items) = lr.pointer("/spec/limits").and_then(Value::as_array) {
            out.extend(items.iter().cloned());
        }
    }
    Ok(out)
}

fn is(a: &Attributes<'_>, plural: &str) -> bool {
    a.is_resource("", plural) && a.subresource.is_none()
}

#[async_trait]
impl Admission for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    // Containers cannot be added or resized by an update, so creation is all there is
    // to check (as Kubernetes reasons).
    fn handles(&self, op: Operation) -> bool {
        op == Operation::Create
    }

    async fn admit(&self, st: &AppState, a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
        let (true, Some(ns)) = (is(a, "pods"), a.namespace) else {
            return Ok(());
        };
        let limits = limits_in(st, ns).await?;
        let (mut limit_defaults, mut request_defaults) = (Map::new(), Map::new());
        for item in limits.iter().filter(|l| l["type"] == "Container") {
            for (part, into) in [
                ("default", &mut limit_defaults),
                ("defaultRequest", &mut request_defaults),
            ] {
                for (k, v) in item
                    .get(part)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    into.insert(k.clone(), v.clone());
                }
            }
        }
        if limit_defaults.is_empty() && request_defaults.is_empty() {
            return Ok(());
        }
        let mut notes = Vec::new();
        for (field, what) in [
            ("containers", "container"),
            ("initContainers", "init container"),
        ] {
            let containers = obj
                .pointer_mut(&format!("/spec/{field}"))
                .and_then(Value::as_array_mut);
            for c in containers.into_iter().flatten() {
                merge_defaults(c, &request_defaults, &limit_defaults, what, &mut notes);
            }
        }
        if notes.is_empty() {
            return Ok(());
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            let ann = meta.entry("annotations").or_insert_with(|| json!({}));
            if !ann.is_object() {
                *ann = json!({});
            }
            if let Some(ann) = ann.as_object_mut() {
                let note = format!("LimitRanger plugin set: {}", notes.join("; "));
                ann.insert(ANNOTATION.into(), json!(note));
            }
        }
        // Kubernetes computes the QoS class after admission; here the new status was
        // prepared before it, so the defaults just set must be reflected.
        let qos = spindle_api::strategy::qos_class(obj.get("spec").unwrap_or(&Value::Null));
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            status.insert("qosClass".into(), json!(qos));
        }
        Ok(())
    }

    async fn validate(&self, st: &AppState, a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        let claim = is(a, "persistentvolumeclaims");
        let (true, Some(ns)) = (is(a, "pods") || claim, a.namespace) else {
            return Ok(());
        };
        let limits = limits_in(st, ns).await?;
        let errs = if claim {
            claim_errors(&limits, obj)
        } else {
            pod_errors(&limits, obj)
        };
        // Go's aggregate error: one message alone, several in brackets.
        let msg = match errs.len() {
            0 => return Ok(()),
            1 => errs[0].clone(),
            _ => format!("[{}]", errs.join(", ")),
        };
        Err(forbidden_error("", a.kind.plural, a.name, &msg))
    }
}

/// `mergeContainerResources`: the defaults a container lacks, and the note saying so.
fn merge_defaults(
    c: &mut Value,
    requests: &Map<String, Value>,
    limits: &Map<String, Value>,
    what: &str,
    notes: &mut Vec<String>,
) {
    let Some(c) = c.as_object_mut() else {
        return;
    };
    let name = c
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let res = c.entry("resources").or_insert_with(|| json!({}));
    if !res.is_object() {
        *res = json!({});
    }
    let Some(res) = res.as_object_mut() else {
        return;
    };
    for (part, defaults, word) in [
        ("requests", requests, "request"),
        ("limits", limits, "limit"),
    ] {
        let list = res.entry(part).or_insert_with(|| json!({}));
        if !list.is_object() {
            *list = json!({});
        }
        let Some(list) = list.as_object_mut() else {
            continue;
        };
        let mut set: Vec<&str> = Vec::new();
        for (k, v) in defaults {
            if !list.contains_key(k) {
                list.insert(k.clone(), v.clone());
                set.push(k);
            }
        }
        if !set.is_empty() {
            set.sort_unstable();
            notes.push(format!("{} {word} for {what} {name}", set.join(", ")));
        }
    }
    // Lists left empty are omitted, as Go's omitempty leaves them.
    for part in ["requests", "limits"] {
        if res
            .get(part)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            res.remove(part);
        }
    }
}

/// The bounds of one limit type over one set of requests and limits.
fn check(ty: &str, item: &Value, req: &ResourceList, lim: &ResourceList, errs: &mut Vec<String>) {
    for (r, bound) in resource_list(item.get("min")) {
        match (req.get(&r), lim.get(&r)) {
            (None, _) => errs.push(format!(
                "minimum {r} usage per {ty} is {bound}.  No request is specified"
            )),
            (Some(q), _) if *q < bound => errs.push(format!(
                "minimum {r} usage per {ty} is {bound}, but request is {q}"
            )),
            (_, Some(l)) if *l < bound => errs.push(format!(
                "minimum {r} usage per {ty} is {bound}, but limit is {l}"
            )),
            _ => {}
        }
    }
    for (r, bound) in resource_list(item.get("max")) {
        match (req.get(&r), lim.get(&r)) {
            (_, None) => errs.push(format!(
                "maximum {r} usage per {ty} is {bound}.  No limit is specified"
            )),
            (_, Some(l)) if *l > bound => errs.push(format!(
                "maximum {r} usage per {ty} is {bound}, but limit is {l}"
            )),
            (Some(q), _) if *q > bound => errs.push(format!(
                "maximum {r} usage per {ty} is {bound}, but request is {q}"
            )),
            _ => {}
        }
    }
    for (r, ratio) in resource_list(item.get("maxLimitRequestRatio")) {
        let (q, l) = (
            req.get(&r).filter(|q| !q.is_zero()),
            lim.get(&r).filter(|l| !l.is_zero()),
        );
        let Some(q) = q else {
            errs.push(format!("{r} max limit to request ratio per {ty} is {ratio}, but no request is specified or request is 0"));
            continue;
        };
        let Some(l) = l else {
            errs.push(format!("{r} max limit to request ratio per {ty} is {ratio}, but no limit is specified or limit is 0"));
            continue;
        };
        let observed = l.as_nanos() as f64 / q.as_nanos() as f64;
        if observed > ratio.as_nanos() as f64 / 1e9 {
            errs.push(format!("{r} max limit to request ratio per {ty} is {ratio}, but provided ratio is {observed:.6}"));
        }
    }
}

fn amounts(owner: &Value, part: &str) -> ResourceList {
    resource_list(owner.pointer(&format!("/resources/{part}")))
}

/// `PodValidateLimitFunc`: each container against Container limits, the pod's sums
/// against Pod limits.
fn pod_errors(limits: &[Value], pod: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten()
        .collect();
    for item in limits {
        match item.get("type").and_then(Value::as_str) {
            Some("Container") => {
                for c in &containers {
                    check(
                        "Container",
                        item,
                        &amounts(c, "requests"),
                        &amounts(c, "limits"),
                        &mut errs,
                    );
                }
            }
            Some("Pod") => {
                let (req, lim) = (
                    pod_resources(spec, "requests"),
                    pod_resources(spec, "limits"),
                );
                check("Pod", item, &req, &lim, &mut errs);
            }
            _ => {}
        }
    }
    errs
}

/// `PersistentVolumeClaimValidateLimitFunc`: the claim's request against min and max.
fn claim_errors(limits: &[Value], claim: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let req = resource_list(claim.pointer("/spec/resources/requests"));
    let ty = "PersistentVolumeClaim";
    for item in limits.iter().filter(|l| l["type"] == ty) {
        let min_only = json!({"min": item.get("min")});
        check(ty, &min_only, &req, &ResourceList::new(), &mut errs);
        for (r, bound) in resource_list(item.get("max")) {
            match req.get(&r) {
                None => errs.push(format!(
                    "maximum {r} usage per {ty} is {bound}.  No request is specified"
                )),
                Some(q) if *q > bound => errs.push(format!(
                    "maximum {r} usage per {ty} is {bound}, but request is {q}"
                )),
                _ => {}
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(resources: Value) -> Value {
        json!({"spec": {"containers": [{"name": "app", "resources": resources}],
            "initContainers": [{"name": "init"}]}})
    }

    #[test]
    fn defaults_fill_only_what_a_container_lacks_and_are_noted() {
        let mut p = pod(json!({"limits": {"cpu": "1"}}));
        let requests = json!({"cpu": "100m", "memory": "64Mi"});
        let limits = json!({"cpu": "500m", "memory": "128Mi"});
        let (r, l) = (requests.as_object().unwrap(), limits.as_object().unwrap());
        let mut notes = Vec::new();
        for (field, what) in [
            ("containers", "container"),
            ("initContainers", "init container"),
        ] {
            for c in p["spec"][field].as_array_mut().into_iter().flatten() {
                merge_defaults(c, r, l, what, &mut notes);
            }
        }
        assert_eq!(
            p["spec"]["containers"][0]["resources"],
            json!({"limits": {"cpu": "1", "memory": "128Mi"},
                "requests": {"cpu": "100m", "memory": "64Mi"}})
        );
        assert_eq!(
            notes,
            [
                "cpu, memory request for container app",
                "memory limit for container app",
                "cpu, memory request for init container init",
                "cpu, memory limit for init container init",
            ]
        );
    }

    #[test]
    fn containers_and_pods_are_held_to_min_max_and_ratio() {
        let limits = [
            json!({"type": "Container", "min": {"cpu": "100m"}, "max": {"memory": "1Gi"},
                "maxLimitRequestRatio": {"cpu": "2"}}),
            json!({"type": "Pod", "max": {"cpu": "2"}}),
        ];
        let ok = pod(json!({"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "memory": "1Gi"}}));
        let mut ok_init = ok.clone();
        ok_init["spec"]["initContainers"][0]["resources"] =
            ok["spec"]["containers"][0]["resources"].clone();
        assert_eq!(pod_errors(&limits, &ok_init), Vec::<String>::new());
        let bad = pod(json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "3", "memory": "2Gi"}}));
        assert_eq!(
            pod_errors(&limits[..1], &bad),
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum memory usage per Container is 1Gi, but limit is 2Gi",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 60.000000",
                "minimum cpu usage per Container is 100m.  No request is specified",
                "maximum memory usage per Container is 1Gi.  No limit is specified",
                "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0",
            ]
        );
        assert_eq!(
            pod_errors(&limits[1..], &bad),
            ["maximum cpu usage per Pod is 2, but limit is 3"]
        );
    }

    #[test]
    fn claims_are_held_to_their_storage_bounds() {
        let limits = [
            json!({"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"},
            "max": {"storage": "10Gi"}}),
        ];
        let claim = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert_eq!(claim_errors(&limits, &claim("5Gi")), Vec::<String>::new());
        assert_eq!(
            claim_errors(&limits, &claim("20Gi")),
            ["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]
        );
        assert_eq!(
            claim_errors(&limits, &claim("512Mi")),
            ["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 512Mi"]
        );
    }
}
