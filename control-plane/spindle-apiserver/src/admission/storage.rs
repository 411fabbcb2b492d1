//! The storage plugins of kube-apiserver's default chain: DefaultStorageClass (a claim
//! without a class gets the default one), StorageObjectInUseProtection (new claims and
//! volumes carry the protection finalizers the PV binder removes when nothing uses
//! them) and PersistentVolumeClaimResize (a claim grows only when its class allows it).

use async_trait::async_trait;
use serde_json::{json, Value};
use spindle_meta::storage::{self, PVC_PROTECTION, PV_PROTECTION};
use spindle_meta::Quantity;

use super::{Admission, Attributes, Operation};
use crate::rest::{decode_stored, key};
use crate::status::{ApiError, ApiResult};
use crate::AppState;

/// Every stored StorageClass.
async fn storage_classes(st: &AppState) -> ApiResult<Vec<Value>> {
    let Some(kind) = st.reg.by_resource("storage.k8s.io", "v1", "storageclasses") else {
        return Ok(Vec::new());
    };
    let (kvs, _) = st.store.list(&key(kind, None, None)).await?;
    kvs.iter().map(decode_stored).collect()
}

/// `util.GetDefaultClass`: of the classes marked default, the newest (then the first
/// by name), as Kubernetes picks when more than one is marked.
async fn default_class(st: &AppState) -> ApiResult<Option<String>> {
    let mut defaults: Vec<(String, String)> = storage_classes(st)
        .await?
        .iter()
        .filter(|c| storage::is_default_class(c))
        .map(|c| {
            let meta = |f: &str| {
                c.pointer(&format!("/metadata/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            (meta("creationTimestamp"), meta("name"))
        })
        .collect();
    defaults.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(defaults.into_iter().next().map(|(_, name)| name))
}

fn is_claim(a: &Attributes<'_>) -> bool {
    a.is_resource("", "persistentvolumeclaims") && a.subresource.is_none()
}

pub struct DefaultStorageClass;

#[async_trait]
impl Admission for DefaultStorageClass {
    fn name(&self) -> &'static str {
        "DefaultStorageClass"
    }

    fn handles(&self, op: Operation) -> bool {
        op == Operation::Create
    }

    async fn admit(&self, st: &AppState, a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
        if !is_claim(a) {
            return Ok(());
        }
        // `storageClassName: ""` is a class too: "no class", which is not defaulted.
        let has_class = obj
            .pointer("/metadata/annotations")
            .and_then(|m| m.get(storage::BETA_CLASS_ANNOTATION))
            .is_some()
            || obj
                .pointer("/spec/storageClassName")
                .is_some_and(|c| !c.is_null());
        if has_class {
            return Ok(());
        }
        let Some(class) = default_class(st).await? else {
            return Ok(());
        };
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("storageClassName".into(), json!(class));
        }
        Ok(())
    }
}

pub struct StorageObjectInUseProtection;

#[async_trait]
impl Admission for StorageObjectInUseProtection {
    fn name(&self) -> &'static str {
        "StorageObjectInUseProtection"
    }

    fn handles(&self, op: Operation) -> bool {
        op == Operation::Create
    }

    async fn admit(&self, _st: &AppState, a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
        let finalizer = if is_claim(a) {
            PVC_PROTECTION
        } else if a.is_resource("", "persistentvolumes") && a.subresource.is_none() {
            PV_PROTECTION
        } else {
            return Ok(());
        };
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let list = meta.entry("finalizers").or_insert_with(|| json!([]));
        if list.is_null() {
            *list = json!([]);
        }
        if let Some(list) = list.as_array_mut() {
            if !list.iter().any(|f| f == finalizer) {
                list.push(json!(finalizer));
            }
        }
        Ok(())
    }
}

pub struct PersistentVolumeClaimResize;

#[async_trait]
impl Admission for PersistentVolumeClaimResize {
    fn name(&self) -> &'static str {
        "PersistentVolumeClaimResize"
    }

    fn handles(&self, op: Operation) -> bool {
        op == Operation::Update
    }

    async fn validate(&self, st: &AppState, a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        let (true, Some(old)) = (is_claim(a), a.old) else {
            return Ok(());
        };
        let size = |v: &Value| {
            v.pointer("/spec/resources/requests/storage")
                .and_then(Value::as_str)
                .and_then(|s| Quantity::parse(s).ok())
        };
        let (Some(old_size), Some(new_size)) = (size(old), size(obj)) else {
            return Ok(());
        };
        if new_size <= old_size {
            return Ok(());
        }
        let forbidden = |why: &str| {
            ApiError::forbidden(format!(
                "persistentvolumeclaims \"{}\" is forbidden: {why}",
                a.name
            ))
        };
        if old.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") {
            return Err(forbidden(
                "Only bound persistent volume claims can be expanded",
            ));
        }
        let class = storage::class_of(obj);
        let allowed = !class.is_empty()
            && class == storage::class_of(old)
            && storage_classes(st).await?.iter().any(|c| {
                c.pointer("/metadata/name").and_then(Value::as_str) == Some(class)
                    && c.get("allowVolumeExpansion").and_then(Value::as_bool) == Some(true)
            });
        if !allowed {
            return Err(forbidden("only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"));
        }
        Ok(())
    }
}
