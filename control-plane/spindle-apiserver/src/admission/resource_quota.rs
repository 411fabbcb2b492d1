//! ResourceQuota: a create (or a claim or Service that grows) that would take a
//! namespace's usage past a quota's hard limits is refused, and one that fits is charged to the quota's `status.used` before
//! it is stored (kube-apiserver's `plugin/pkg/admission/resourcequota`). The
//! resourcequota controller recomputes the usage from what is stored.
//!
//! Checks of one namespace are serialized in this server, and the charge is a
//! compare-and-swap of the quota, so parallel creates cannot both take the last unit.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use serde_json::{json, Value};
use spindle_meta::quota::{
    add, matching_resources, object_usage, pod_constraints, pretty, resource_list, ResourceList,
};
use spindle_meta::Quantity;
use spindle_store::{KeyValue, StoreError};

use super::{Admission, Attributes, Operation};
use crate::authz::attributes::forbidden_error;
use crate::rest::{decode_stored, key};
use crate::status::{ApiError, ApiResult};
use crate::stored::encode_for_store;
use crate::AppState;

pub struct ResourceQuota;

/// How often a charge is evaluated again after another writer changed a quota.
const ATTEMPTS: usize = 5;

type NamespaceLocks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
static LOCKS: LazyLock<NamespaceLocks> = LazyLock::new(Default::default);

fn namespace_lock(ns: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    // Locks nobody holds are dropped now and then, so deleted namespaces leave none.
    if locks.len() > 1024 {
        locks.retain(|_, l| Arc::strong_count(l) > 1);
    }
    locks.entry(ns.to_string()).or_default().clone()
}

#[async_trait]
impl Admission for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    fn handles(&self, _op: Operation) -> bool {
        true
    }

    async fn validate(&self, st: &AppState, a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        let (None, Some(ns), Some(kind)) = (
            a.subresource,
            a.namespace.filter(|_| a.kind.namespaced),
            st.reg.by_resource("", "v1", "resourcequotas"),
        ) else {
            return Ok(());
        };
        let usage = requested(a, obj);
        if usage.values().all(|q| q.is_zero()) {
            return Ok(());
        }
        let prefix = key(kind, Some(ns), None);
        let lock = namespace_lock(ns);
        let _held = lock.lock().await;
        for _ in 0..ATTEMPTS {
            let (kvs, _) = st.store.list(&prefix).await?;
            let charges = evaluate(a, obj, &usage, &kvs)?;
            if a.dry_run || charges.is_empty() {
                return Ok(());
            }
            if charge(st, charges).await? {
                return Ok(());
            }
        }
        Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on resourcequotas: the quotas of namespace {ns} kept changing; try again"
            ),
        ))
    }
}

/// A quota the new object is charged to: its stored revision and its new status.used.
struct Charge {
    key: String,
    revision: u64,
    quota: Value,
}

/// What the write adds to the namespace's usage: a new object's usage; for an update,
/// what grows (a claim's storage, a Service's node ports), as Kubernetes charges only
/// claims and Services on update.
fn requested(a: &Attributes<'_>, obj: &Value) -> ResourceList {
    let (group, plural) = (a.kind.group, a.kind.plural);
    let usage = object_usage(group, plural, obj);
    let Some(old) = a.old else {
        return usage;
    };
    if !group.is_empty() || !matches!(plural, "persistentvolumeclaims" | "services") {
        return ResourceList::new();
    }
    let before = object_usage(group, plural, old);
    usage
        .into_iter()
        .map(|(r, q)| match before.get(&r) {
            Some(b) if *b >= q => (r, Quantity::default()),
            Some(b) => (r, q.saturating_sub(*b)),
            None => (r, q),
        })
        .collect()
}

/// Every quota of the namespace the object fits, with its new usage; the first quota
/// it does not fit refuses it.
fn evaluate(
    a: &Attributes<'_>,
    obj: &Value,
    usage: &ResourceList,
    kvs: &[KeyValue],
) -> ApiResult<Vec<Charge>> {
    let (group, plural) = (a.kind.group, a.kind.plural);
    let refuse = |msg: String| forbidden_error(group, plural, a.name, &msg);
    let mut charges = Vec::new();
    for kv in kvs {
        let mut quota = decode_stored(kv)?;
        let name = quota
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let hard = resource_list(quota.pointer("/status/hard"));
        let spec = quota.get("spec").unwrap_or(&Value::Null);
        let Some(matching) = matching_resources(spec, &hard, group, plural, obj) else {
            continue;
        };
        if matching.is_empty() {
            continue;
        }
        if group.is_empty() && plural == "pods" && a.old.is_none() {
            pod_constraints(&matching, obj)
                .map_err(|e| refuse(format!("failed quota: {name}: {e}")))?;
        }
        let used = resource_list(quota.pointer("/status/used"));
        let unknown: Vec<&str> = matching
            .iter()
            .filter(|r| !used.contains_key(*r))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(refuse(format!(
                "status unknown for quota: {name}, resources: {}",
                unknown.join(",")
            )));
        }
        let requested: ResourceList = usage
            .iter()
            .filter(|(r, _)| matching.contains(r))
            .map(|(r, q)| (r.clone(), *q))
            .collect();
        if requested.values().all(|q| q.is_zero()) {
            continue;
        }
        let mut new_used = used.clone();
        add(&mut new_used, &requested);
        let exceeded: Vec<&String> = requested
            .keys()
            .filter(|r| {
                new_used
                    .get(*r)
                    .zip(hard.get(*r))
                    .is_some_and(|(u, h)| u > h)
            })
            .collect();
        if !exceeded.is_empty() {
            let mask = |l: &ResourceList| -> ResourceList {
                l.iter()
                    .filter(|(r, _)| exceeded.contains(r))
                    .map(|(r, q)| (r.clone(), *q))
                    .collect()
            };
            return Err(refuse(format!(
                "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                pretty(&mask(&requested)),
                pretty(&mask(&used)),
                pretty(&mask(&hard))
            )));
        }
        let used_json: serde_json::Map<String, Value> = new_used
            .iter()
            .map(|(r, q)| (r.clone(), json!(q.to_string())))
            .collect();
        if let Some(status) = quota.get_mut("status").and_then(Value::as_object_mut) {
            status.insert("used".into(), Value::Object(used_json));
        }
        charges.push(Charge {
            key: kv.key.clone(),
            revision: kv.mod_revision,
            quota,
        });
    }
    Ok(charges)
}

/// Write the new usage of each quota, each only if no one changed it since it was read;
/// false when one had changed (the charge is evaluated again; the quotas already written
/// stay charged until the controller recomputes them, as in Kubernetes).
async fn charge(st: &AppState, charges: Vec<Charge>) -> ApiResult<bool> {
    for c in charges {
        let bytes = encode_for_store(&c.quota)?;
        match st.store.update(&c.key, bytes, Some(c.revision)).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}
