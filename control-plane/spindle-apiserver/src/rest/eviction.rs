//! The `eviction` subresource: delete a pod unless that would break its
//! PodDisruptionBudget, spending the budget with a compare-and-swap.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};
use spindle_meta::selector::Matcher;
use spindle_store::{KeyValue, StoreError};

use super::binding::success_status;
use super::delete::{delete_one, DeleteOpts};
use super::storage::{decode_stored, json_response, load, meta_str};
use super::{encode_for_store, key, now_rfc3339, Req};
use crate::request::{content_type, decode_body, Target};
use crate::status::{ApiError, ApiResult};
use crate::AppState;

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True"))
            })
        })
}

/// Kubernetes keeps at most this many evicted-but-not-yet-deleted pods in a budget's
/// status before refusing more evictions.
const MAX_DISRUPTED_PODS: usize = 2000;

/// A 429 refusing an eviction for a budget, with the cause kubectl drain prints.
fn budget_refusal(cause: String, retry_after: Option<u64>) -> ApiError {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if let Some(s) = retry_after {
        details["retryAfterSeconds"] = json!(s);
    }
    ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    )
    .with_details(details)
}

/// The budgets covering a pod: a budget without a selector covers nothing, one with an
/// empty selector (policy/v1) every pod of its namespace.
async fn budgets_of(st: &AppState, pod: &Value, ns: Option<&str>) -> ApiResult<Vec<KeyValue>> {
    let Some(pdb_kind) = st.reg.by_resource("policy", "v1", "poddisruptionbudgets") else {
        return Ok(Vec::new());
    };
    let labels = pod.pointer("/metadata/labels");
    let (pdbs, _) = st.store.list(&key(pdb_kind, ns, None)).await?;
    let mut out = Vec::new();
    for kv in pdbs {
        let pdb = decode_stored(&kv)?;
        // A budget whose selector cannot be read covers nothing, as in kube-apiserver.
        if Matcher::try_from_json(pdb.pointer("/spec/selector"))
            .is_ok_and(|m| m.matches_json(labels))
        {
            out.push(kv);
        }
    }
    Ok(out)
}

/// Admit an eviction against the pod's PodDisruptionBudget, as the eviction subresource
/// does: spend one of the budget's `status.disruptionsAllowed` with a compare-and-swap on
/// the budget, and note the pod in `status.disruptedPods` so the disruption controller
/// counts it as gone until it is deleted. Concurrent evictions (kubectl drain sends one
/// per pod at once) therefore cannot all pass on the same count. Refusals are 429s, which
/// kubectl drain retries.
///
/// Returns the pod revision the deletion must still find when the pod passed without
/// spending the budget for being pending or unready: if it started or turned Ready
/// meanwhile, the deletion fails and the eviction is decided again, rather than taking a
/// healthy pod for free.
async fn admit_eviction(st: &AppState, t: &Target, dry_run: bool) -> ApiResult<Option<u64>> {
    let (pod, pod_kv) = load(st, t).await?;
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed"))
        || pod.pointer("/metadata/deletionTimestamp").is_some()
    {
        // Finished or already going: evicting it disrupts nothing.
        return Ok(None);
    }
    if phase == Some("Pending") {
        // Not started: nothing to disrupt, as long as it has not started by the time it
        // is deleted.
        return Ok(Some(pod_kv.mod_revision));
    }
    let ns = t.namespace.as_deref();
    let pod_name = t.name.as_deref().unwrap_or("");
    let mut budgets = budgets_of(st, &pod, ns).await?;
    if budgets.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some(mut kv) = budgets.pop() else {
        return Ok(None);
    };
    for _ in 0..20 {
        let mut pdb = decode_stored(&kv)?;
        let name = meta_str(&pdb, "name").unwrap_or("").to_string();
        let status = |f: &str| {
            pdb.pointer(&format!("/status/{f}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let (allowed, healthy, desired) = (
            status("disruptionsAllowed"),
            status("currentHealthy"),
            status("desiredHealthy"),
        );
        if !pod_ready(&pod) {
            // An unhealthy pod costs the budget nothing when the policy says so, or (the
            // default, IfHealthyBudget) while the budget is met anyway.
            let policy = pdb
                .pointer("/spec/unhealthyPodEvictionPolicy")
                .and_then(Value::as_str);
            if policy == Some("AlwaysAllow") || (healthy >= desired && desired > 0) {
                return Ok(Some(pod_kv.mod_revision));
            }
        }
        let generation = pdb
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if status("observedGeneration") < generation {
            return Err(budget_refusal(
                format!("The disruption budget {name} is still being processed by the server."),
                Some(10),
            ));
        }
        if allowed < 0 {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudgets.policy \"{name}\" is forbidden: pdb disruptions allowed is negative"
            )));
        }
        let disrupted = pdb
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
            .map_or(0, Map::len);
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudgets.policy \"{name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
            )));
        }
        if allowed == 0 {
            return Err(budget_refusal(
                format!("The disruption budget {name} needs {desired} healthy pods and has {healthy} currently"),
                None,
            ));
        }
        if dry_run {
            return Ok(None);
        }
        let now = now_rfc3339();
        let st_obj = pdb
            .as_object_mut()
            .ok_or_else(|| ApiError::internal("stored PodDisruptionBudget is not an object"))?
            .entry("status")
            .or_insert_with(|| json!({}));
        st_obj["disruptionsAllowed"] = json!(allowed - 1);
        if allowed == 1 {
            // Spent: the condition says so at once, as Kubernetes' eviction handler does.
            if let Some(conds) = st_obj.get_mut("conditions").and_then(Value::as_array_mut) {
                for c in conds.iter_mut() {
                    if c.get("type") == Some(&json!("DisruptionAllowed")) {
                        c["status"] = json!("False");
                        c["reason"] = json!("InsufficientPods");
                        c["lastTransitionTime"] = json!(now);
                    }
                }
            }
        }
        if !st_obj.get("disruptedPods").is_some_and(Value::is_object) {
            st_obj["disruptedPods"] = json!({});
        }
        st_obj["disruptedPods"][pod_name] = json!(now);
        match st
            .store
            .update(&kv.key, encode_for_store(&pdb)?, Some(kv.mod_revision))
            .await
        {
            Ok(_) => return Ok(None),
            Err(StoreError::Conflict { .. }) => {
                // Another eviction or the controller wrote the budget first: decide again
                // on what it wrote.
                match st.store.get(&kv.key).await? {
                    Some(fresh) => kv = fresh,
                    None => return Ok(None),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(budget_refusal(
        "The disruption budget is being updated too often; try again.".into(),
        Some(1),
    ))
}

pub(super) async fn evict(rq: Req<'_>, raw: &Bytes) -> ApiResult<Response> {
    let (st, t, headers) = (rq.st, rq.t, rq.headers);
    crate::admission::check_eviction(
        st,
        rq.user,
        t.namespace.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
    )
    .await?;
    let b = if raw.is_empty() {
        json!({})
    } else {
        decode_body(&content_type(headers), raw)?.value
    };
    let mut opts = DeleteOpts::from_value(b.get("deleteOptions").unwrap_or(&json!({})));
    let caller_rv = opts.rv.is_some();
    let mut tries = 0;
    loop {
        let must_find = admit_eviction(st, t, opts.dry_run).await?;
        if !caller_rv {
            opts.rv = must_find.map(|r| r.to_string());
        }
        match delete_one(st, t, &opts).await {
            // The pod changed before it could be deleted: decide again; if it keeps
            // changing, a 429 (which kubectl drain retries) rather than a 409 (which ends it).
            Err(e) if e.code == 409 && must_find.is_some() && !caller_rv => {
                tries += 1;
                if tries >= 5 {
                    return Err(budget_refusal(
                        "The pod kept changing while it was being evicted; try again.".into(),
                        Some(1),
                    ));
                }
            }
            r => {
                r?;
                break;
            }
        }
    }
    Ok(json_response(StatusCode::CREATED, &success_status(), &[]))
}
