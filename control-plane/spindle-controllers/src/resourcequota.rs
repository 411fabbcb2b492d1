//! The resourcequota controller (kube-controller-manager's `resourcequota`): keeps each
//! ResourceQuota's `status.hard` equal to its spec and `status.used` equal to what the
//! namespace's objects use, counted as the API server's ResourceQuota admission charges
//! them (`spindle_meta::quota`). Admission charges a new object at once; this controller
//! recomputes from what is stored, which also returns what deleted or finished objects
//! held.
//!
//! The quota comes from the cache, the objects from a fresh list made after it, and the
//! status write carries the cached resourceVersion: a charge admission made meanwhile
//! makes the write conflict and the quota is recomputed, so a stale count never
//! overwrites a newer charge. A recount lower than the charged usage is written only
//! once it has held for [`SETTLE`] at the same resourceVersion, so a create admission
//! charged but has not stored yet is not taken back.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Map, Value};
use spindle_meta::quota::{
    add, counted_objects, matching_resources, object_usage, resource_list, ResourceList,
};
use spindle_meta::Quantity;

use crate::runtime::{informer, key_of, split_key, watch_config, Action, Cache, Change, Queue};

/// Concurrent reconciles (kube-controller-manager's --concurrent-resource-quota-syncs).
const WORKERS: usize = 5;

/// How often quotas of other objects than pods are recomputed, for the objects no
/// informer here watches (the controller's `--resource-quota-sync-period`, shorter than
/// kube's 5 minutes because Spindle has no per-resource monitors to replenish on
/// deletion). Pods are followed by their events alone.
const RESYNC: Duration = Duration::from_secs(15);

fn quota_index(q: &ResourceQuota) -> Vec<String> {
    vec![format!("ns/{}", q.namespace().unwrap_or_default())]
}

/// The quota informer. A quota is recomputed when it is new or its spec changed, not
/// when admission charged it: a recount racing a create that admission has charged but
/// not yet stored would take the charge back (kube's controller does the same).
pub fn quotas(client: &Client, queue: Arc<Queue<String>>) -> Arc<Cache<ResourceQuota>> {
    informer(
        Api::<ResourceQuota>::all(client.clone()),
        watch_config(),
        Some(Box::new(quota_index)),
        move |ch| {
            if let Change::Upsert { new, old } = ch {
                let hard = |q: &ResourceQuota| q.spec.as_ref().and_then(|s| s.hard.clone());
                let status_hard = new.status.as_ref().and_then(|s| s.hard.clone());
                let changed = old.is_none_or(|o| o.spec != new.spec);
                if changed || status_hard != hard(new) {
                    queue.add(key_of(new.as_ref()));
                }
            }
        },
    )
}

/// Whether a pod no longer holds quota: finished, or going.
fn released(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed")) || p.metadata.deletion_timestamp.is_some()
}

/// A pod that goes, finishes or starts terminating returns its share of its
/// namespace's quotas (kube's replenishment); new pods are charged by admission.
pub fn on_pod_change(q: &Queue<String>, quotas: &Cache<ResourceQuota>, ch: &Change<'_, Pod>) {
    if quotas.is_empty() {
        return;
    }
    let pod = match ch {
        Change::Delete(p) => p,
        Change::Upsert { new, old } if released(new) && !old.is_some_and(|o| released(o)) => new,
        Change::Upsert { .. } => return,
    };
    let ns = pod.namespace().unwrap_or_default();
    for quota in quotas.by_index(&format!("ns/{ns}")) {
        q.add(key_of(quota.as_ref()));
    }
}

/// Whether a quota counts objects other than pods, which only a periodic recount sees go.
fn counts_other_objects(q: &ResourceQuota) -> bool {
    let hard = q.spec.as_ref().and_then(|s| s.hard.as_ref());
    hard.into_iter()
        .flatten()
        .any(|(r, _)| counted_objects(r) != (String::new(), "pods".to_string()))
}

pub async fn run(
    client: Client,
    queue: Arc<Queue<String>>,
    quotas: Arc<Cache<ResourceQuota>>,
) -> anyhow::Result<()> {
    quotas.wait_synced().await;
    for quota in quotas.list() {
        queue.add(key_of(quota.as_ref()));
    }
    let settling: Arc<Settling> = Arc::default();
    let (q, cache) = (queue.clone(), quotas.clone());
    let resync = tokio::spawn(async move {
        loop {
            tokio::time::sleep(RESYNC).await;
            for quota in cache.list().iter().filter(|q| counts_other_objects(q)) {
                q.add(key_of(quota.as_ref()));
            }
        }
    });
    queue
        .run(WORKERS, "resourcequota", move |key| {
            reconcile(client.clone(), quotas.clone(), settling.clone(), key)
        })
        .await;
    resync.abort();
    Ok(())
}

/// How long a recount lower than the charged usage must hold before it is written: a
/// create admission has charged is stored within it, so a recount that missed one in
/// flight sees it on its second look (or the quota has changed and the wait restarts).
const SETTLE: Duration = Duration::from_secs(2);

/// Quotas whose recount came out lower than their usage: the resourceVersion it was
/// seen at, and when.
type Settling = Mutex<HashMap<String, (String, Instant)>>;

/// Whether a lower recount of `key` at `rv` has held for [`SETTLE`]; starts the wait
/// when it is new or the quota changed meanwhile.
fn settled(settling: &Settling, key: &str, rv: &str) -> bool {
    let mut pending = settling.lock().unwrap_or_else(|e| e.into_inner());
    match pending.get(key) {
        Some((seen, at)) if seen == rv && at.elapsed() >= SETTLE => {
            pending.remove(key);
            true
        }
        Some((seen, _)) if seen == rv => false,
        _ => {
            pending.insert(key.to_string(), (rv.to_string(), Instant::now()));
            false
        }
    }
}

async fn reconcile(
    client: Client,
    quotas: Arc<Cache<ResourceQuota>>,
    settling: Arc<Settling>,
    key: String,
) -> Result<Action, kube::Error> {
    let Some(quota) = quotas.get(&key) else {
        settling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        return Ok(Action::Done);
    };
    let (ns, name) = split_key(&key);
    let ns = ns.unwrap_or_default();
    let quota = serde_json::to_value(quota.as_ref()).map_err(kube::Error::SerdeError)?;
    let spec = quota.get("spec").cloned().unwrap_or(Value::Null);
    let hard = resource_list(spec.get("hard"));
    let mut used: ResourceList = hard
        .keys()
        .map(|r| (r.clone(), Quantity::default()))
        .collect();
    let kinds: BTreeSet<(String, String)> = hard.keys().map(|r| counted_objects(r)).collect();
    for (group, plural) in kinds {
        for obj in list(&client, ns, &group, &plural).await? {
            let Some(names) = matching_resources(&spec, &hard, &group, &plural, &obj) else {
                continue;
            };
            let usage: ResourceList = object_usage(&group, &plural, &obj)
                .into_iter()
                .filter(|(r, _)| names.contains(r))
                .collect();
            add(&mut used, &usage);
        }
    }
    let list_json = |l: &ResourceList| -> Value {
        Value::Object(
            l.iter()
                .map(|(r, q)| (r.clone(), json!(q.to_string())))
                .collect::<Map<String, Value>>(),
        )
    };
    let status = json!({"hard": list_json(&hard), "used": list_json(&used)});
    let current = quota.get("status").cloned().unwrap_or(Value::Null);
    let same = resource_list(current.get("hard")) == hard
        && resource_list(current.get("used")) == used
        && current.get("hard").and_then(Value::as_object).map(Map::len) == Some(hard.len())
        && current.get("used").and_then(Value::as_object).map(Map::len) == Some(used.len());
    if same {
        settling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        return Ok(Action::Done);
    }
    let charged = resource_list(current.get("used"));
    let lower = used
        .iter()
        .any(|(r, q)| charged.get(r).is_some_and(|c| q < c));
    let rv = quota
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if lower && !settled(&settling, &key, rv) {
        return Ok(Action::RequeueAfter(SETTLE));
    }
    let mut updated = quota;
    updated["status"] = status;
    let updated: ResourceQuota =
        serde_json::from_value(updated).map_err(kube::Error::SerdeError)?;
    let api: Api<ResourceQuota> = Api::namespaced(client, ns);
    match api
        .replace_status(name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::Done),
        // Charged since the cache saw it: a charge does not requeue the quota, so look
        // again once the cache has it.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Action::RequeueAfter(SETTLE)),
        Err(e) => Err(e),
    }
}

/// Every object of `plural` in `group` in the namespace, as JSON, read afresh.
async fn list(
    client: &Client,
    ns: &str,
    group: &str,
    plural: &str,
) -> Result<Vec<Value>, kube::Error> {
    let Some(ar) = resource(client, group, plural).await? else {
        return Ok(Vec::new());
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let objects = api.list(&ListParams::default()).await?;
    objects
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).map_err(kube::Error::SerdeError))
        .collect()
}

/// The served resource a quota names, in its preferred version; None when the API
/// server does not serve it (a quota may name resources that do not exist yet).
async fn resource(
    client: &Client,
    group: &str,
    plural: &str,
) -> Result<Option<ApiResource>, kube::Error> {
    if group.is_empty() {
        let list = client.list_core_api_resources("v1").await?;
        let found = list
            .resources
            .iter()
            .any(|r| r.name == plural && r.namespaced);
        return Ok(found.then(|| ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: String::new(),
            plural: plural.to_string(),
        }));
    }
    match kube::discovery::oneshot::group(client, group).await {
        Ok(g) => Ok(g
            .recommended_resources()
            .into_iter()
            .find(|(ar, caps)| {
                ar.plural == plural && caps.scope == kube::discovery::Scope::Namespaced
            })
            .map(|(ar, _)| ar)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
