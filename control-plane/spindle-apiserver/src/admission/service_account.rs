//! ServiceAccount, as kube-apiserver's plugin: a new pod runs as `default` unless it names
//! an account, the account must exist, and unless `automountServiceAccountToken` is false
//! (on the pod, else on the account) every container gets the projected
//! `kube-api-access-<suffix>` volume (a bound token, the cluster CA, the namespace) at
//! `/var/run/secrets/kubernetes.io/serviceaccount`, read-only.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Admission, Attributes, Operation};
use crate::rest::stored_core;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

pub struct ServiceAccount;

pub const DEFAULT_ACCOUNT: &str = "default";
/// Where containers find the account's credentials.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Volume name prefix; a random suffix follows.
const VOLUME_PREFIX: &str = "kube-api-access-";
/// The token's lifetime kube-apiserver asks for (an hour and seven seconds, which the
/// kubelet refreshes at 80%).
const TOKEN_SECONDS: i64 = 3607;
/// How long a pod waits for its namespace's `default` account, which the ServiceAccount
/// controller creates right after the namespace. kube-apiserver refuses such a pod at
/// once; waiting a moment spares clients that create a namespace and a pod in one go.
const DEFAULT_ACCOUNT_WAIT: Duration = Duration::from_secs(3);

/// The projected volume source kube-apiserver's plugin mounts (`TokenVolumeSource`).
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

/// The account, waiting a little for a namespace's `default` one.
async fn account(st: &AppState, ns: &str, name: &str) -> ApiResult<Option<Value>> {
    let deadline = tokio::time::Instant::now() + DEFAULT_ACCOUNT_WAIT;
    loop {
        if let Some(sa) = stored_core(st, "serviceaccounts", Some(ns), name).await? {
            return Ok(Some(sa));
        }
        let live_ns = stored_core(st, "namespaces", None, ns)
            .await?
            .is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_none());
        if name != DEFAULT_ACCOUNT || !live_ns || tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn account_name(pod: &Value) -> String {
    pod.pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_ACCOUNT)
        .to_string()
}

fn is_mirror(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
}

fn applies(a: &Attributes<'_>) -> bool {
    a.is_resource("", "pods") && a.subresource.is_none()
}

#[async_trait]
impl Admission for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    fn handles(&self, op: Operation) -> bool {
        op == Operation::Create
    }

    async fn admit(&self, st: &AppState, a: &Attributes<'_>, pod: &mut Value) -> ApiResult<()> {
        let (true, Some(ns)) = (applies(a), a.namespace) else {
            return Ok(());
        };
        if is_mirror(pod) {
            return Ok(());
        }
        let name = account_name(pod);
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("serviceAccountName".into(), json!(name));
            // The deprecated alias every v1 pod carries alongside.
            spec.insert("serviceAccount".into(), json!(name));
        }
        // A missing account is refused in the validating phase, after NamespaceLifecycle
        // has had its say about the namespace.
        let Some(sa) = account(st, ns, &name).await? else {
            return Ok(());
        };
        let automount = pod
            .pointer("/spec/automountServiceAccountToken")
            .and_then(Value::as_bool)
            .or_else(|| {
                sa.get("automountServiceAccountToken")
                    .and_then(Value::as_bool)
            })
            .unwrap_or(true);
        if automount {
            mount_token(pod);
        }
        Ok(())
    }

    async fn validate(&self, st: &AppState, a: &Attributes<'_>, pod: &Value) -> ApiResult<()> {
        let (true, Some(ns)) = (applies(a), a.namespace) else {
            return Ok(());
        };
        if is_mirror(pod) {
            return Ok(());
        }
        let name = account_name(pod);
        if stored_core(st, "serviceaccounts", Some(ns), &name)
            .await?
            .is_some()
        {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found",
            a.name
        ))
        .with_details(json!({"name": a.name, "kind": "pods"})))
    }
}

/// Mount the token volume in every container and init container that has nothing at
/// the token path yet, adding the volume when one of them needs it (kube-apiserver's
/// `mountServiceAccountToken`).
fn mount_token(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(VOLUME_PREFIX))
                .map(str::to_string)
        });
    let volume = existing
        .clone()
        .unwrap_or_else(|| spindle_meta::names::generate_name(VOLUME_PREFIX));
    let mount = json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for field in ["initContainers", "containers"] {
        for c in spec
            .get_mut(field)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else {
                continue;
            };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if mounts.is_null() {
                *mounts = json!([]);
            }
            let Some(list) = mounts.as_array_mut() else {
                continue;
            };
            let taken = list
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !taken {
                list.push(mount.clone());
                needed = true;
            }
        }
    }
    if existing.is_none() && needed {
        let vols = spec.entry("volumes").or_insert_with(|| json!([]));
        if vols.is_null() {
            *vols = json!([]);
        }
        if let Some(list) = vols.as_array_mut() {
            list.push(json!({"name": volume, "projected": token_volume_source()}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_one_generated_volume() {
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "i"}],
            "containers": [
                {"name": "a", "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
                {"name": "b", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
            "volumes": [{"name": "x", "emptyDir": {}}],
        }});
        mount_token(&mut pod);
        let vols = pod["spec"]["volumes"].as_array().expect("volumes");
        assert_eq!(vols.len(), 2);
        let name = vols[1]["name"].as_str().expect("name");
        assert!(
            name.starts_with("kube-api-access-") && name.len() == 21,
            "{name}"
        );
        assert_eq!(vols[1]["projected"], token_volume_source());
        let want = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(
            pod["spec"]["initContainers"][0]["volumeMounts"],
            json!([want])
        );
        assert_eq!(pod["spec"]["containers"][0]["volumeMounts"][1], want);
        // A container with its own mount at the path keeps it.
        assert_eq!(
            pod["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        // Admitting again (an existing token volume) adds nothing.
        let before = pod.clone();
        mount_token(&mut pod);
        assert_eq!(pod, before);
    }
}
