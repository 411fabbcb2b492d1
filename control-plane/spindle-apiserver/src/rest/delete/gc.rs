//! Deletion propagation through ownerReferences (background, foreground, orphan).
//!
//! The API server runs this itself for now so that every `propagationPolicy` behaves as
//! on Kubernetes; the garbage-collector controller of the next milestone takes it over.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{delete_one, remove_finalizer, DeleteOpts};
use crate::request::{Query, Target};
use crate::rest::key;
use crate::rest::storage::{decode_stored, load, store_update};
use crate::status::ApiResult;
use crate::AppState;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// Longest a foreground deletion waits for its dependents to go.
const FOREGROUND_WAIT: Duration = Duration::from_secs(600);

pub fn spawn_release(
    st: &AppState,
    owner: &Target,
    ns: Option<String>,
    owner_uid: String,
    mode: &'static str,
) {
    let st = st.clone();
    let owner = Target {
        namespace: ns,
        sub: None,
        ..owner.clone()
    };
    tokio::spawn(async move {
        if let Err(e) = release(&st, &owner, &owner_uid, mode).await {
            tracing::warn!(owner = ?owner.name, mode, error = %e.message, "deletion propagation failed");
        }
    });
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

/// Objects that name `uid` as an owner: in the owner's namespace, or anywhere for a
/// cluster-scoped owner.
async fn dependents(st: &AppState, ns: Option<&str>, uid: &str) -> ApiResult<Vec<Target>> {
    let mut out = Vec::new();
    // Every deletion asks this, and most objects own nothing: parsing every object of the
    // namespace each time made rollouts quadratic (a DaemonSet update over 1,000 nodes
    // spent most of its CPU here). The stored JSON names an owner's uid verbatim (a uid
    // has nothing to escape), so bytes without it cannot name that owner.
    let finder = memchr::memmem::Finder::new(uid.as_bytes());
    for kind in st.reg.kinds() {
        if ns.is_some() && !kind.namespaced {
            continue;
        }
        let (items, _) = st.store.list(&key(kind, ns, None)).await?;
        for kv in items {
            if uid.is_empty() || finder.find(&kv.value).is_none() {
                continue;
            }
            let obj = decode_stored(&kv)?;
            if owned_by(&obj, uid) {
                out.push(Target {
                    kind: kind.clone(),
                    namespace: obj
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    name: obj
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    sub: None,
                });
            }
        }
    }
    Ok(out)
}

/// Remove the owner reference; true when other owners remain.
async fn drop_owner_ref(
    st: &AppState,
    t: &Target,
    uid: &str,
    only_if_others: bool,
) -> ApiResult<bool> {
    for _ in 0..8 {
        let (old, kv) = match load(st, t).await {
            Ok(x) => x,
            Err(e) if e.code == 404 => return Ok(true),
            Err(e) => return Err(e),
        };
        let mut obj = old.clone();
        let Some(refs) = obj
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        else {
            return Ok(false);
        };
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        let others = !refs.is_empty();
        if only_if_others && !others {
            return Ok(false);
        }
        if !others {
            if let Some(m) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.remove("ownerReferences");
            }
        }
        match store_update(st, &t.kind, &kv, Some(&old), obj, &Query::default(), &[]).await {
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(others),
        }
    }
    Ok(true)
}

async fn release(st: &AppState, owner: &Target, uid: &str, mode: &str) -> ApiResult<()> {
    let ns = owner.namespace.as_deref();
    match mode {
        ORPHAN => {
            for dep in dependents(st, ns, uid).await? {
                drop_owner_ref(st, &dep, uid, false).await?;
            }
            remove_finalizer(st, owner, ORPHAN).await
        }
        _ => {
            let child_policy = if mode == FOREGROUND {
                "Foreground"
            } else {
                "Background"
            };
            for dep in dependents(st, ns, uid).await? {
                // A dependent with other live owners only loses this reference.
                if drop_owner_ref(st, &dep, uid, true).await? {
                    continue;
                }
                let opts = DeleteOpts {
                    policy: Some(child_policy.into()),
                    ..Default::default()
                };
                match delete_one(st, &dep, &opts).await {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            if mode == FOREGROUND {
                let deadline = Instant::now() + FOREGROUND_WAIT;
                while !dependents(st, ns, uid).await?.is_empty() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                match remove_finalizer(st, owner, FOREGROUND).await {
                    Err(e) if e.code != 404 => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
    }
}
