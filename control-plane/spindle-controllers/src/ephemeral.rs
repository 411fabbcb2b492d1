//! The ephemeral volume controller: a pod's generic ephemeral volume
//! (`ephemeral.volumeClaimTemplate`) gets its PersistentVolumeClaim `<pod>-<volume>`,
//! owned by the pod (so the garbage collector removes it with the pod), as
//! kube-controller-manager's ephemeral-volume controller makes it. The claim is then
//! provisioned and bound like any other; the node agent mounts it once it is bound and
//! refuses a claim of that name the pod does not own.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::{Api, Client};
use spindle_meta::events::{object_ref, EventType, Recorder};

use crate::runtime::{key_of, split_key, Action, Cache, Change, Queue};

/// Concurrent reconciles (kube-controller-manager's --concurrent-ephemeralvolume-syncs).
const WORKERS: usize = 5;
pub const COMPONENT: &str = "ephemeral_volume";

/// Queues pods that have a generic ephemeral volume (from the shared pod informer).
pub fn on_pod_change(q: &Queue<String>, ch: &Change<'_, Pod>) {
    if let Change::Upsert { new, .. } = ch {
        if new.metadata.deletion_timestamp.is_none() && ephemeral_volumes(new).next().is_some() {
            q.add(key_of(new.as_ref()));
        }
    }
}

fn ephemeral_volumes(pod: &Pod) -> impl Iterator<Item = &Volume> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| v.ephemeral.is_some())
}

/// The claim of ephemeral volume `v` of `pod`, as the template describes it.
pub fn claim_for(pod: &Pod, v: &Volume) -> Option<PersistentVolumeClaim> {
    let template = v.ephemeral.as_ref()?.volume_claim_template.as_ref()?;
    let pod_name = pod.metadata.name.as_deref()?;
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod_name.to_string(),
        uid: pod.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let meta = template.metadata.clone().unwrap_or_default();
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(format!("{pod_name}-{}", v.name)),
            namespace: pod.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(template.spec.clone()),
        status: None,
    })
}

struct Ctx {
    client: Client,
    events: Recorder,
    pods: Arc<Cache<Pod>>,
}

async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action, kube::Error> {
    let Some(pod) = ctx.pods.get(&key) else {
        return Ok(Action::Done);
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let (ns, _) = split_key(&key);
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), ns.unwrap_or("default"));
    for v in ephemeral_volumes(&pod) {
        let Some(claim) = claim_for(&pod, v) else {
            continue;
        };
        let name = claim.metadata.name.clone().unwrap_or_default();
        if let Some(existing) = api.get_opt(&name).await? {
            let owned = existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == pod.metadata.uid.as_ref() && o.controller == Some(true));
            if !owned {
                // Left for the user to sort out, as Kubernetes does: the kubelet then
                // refuses to mount a claim the pod does not own.
                let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
                let msg =
                    format!("PVC {name} was not created for pod {pod_name} (pod is not owner)");
                ctx.events
                    .publish(
                        &object_ref(pod.as_ref()),
                        EventType::Warning,
                        "FailedBinding",
                        &msg,
                    )
                    .await;
            }
            continue;
        }
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                tracing::info!(pod = %key, claim = %name, "created the claim of an ephemeral volume")
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::Done)
}

/// Run the controller: pods with ephemeral volumes are looked at once after the first
/// list, then on their changes.
pub async fn run(
    client: Client,
    events: Recorder,
    queue: Arc<Queue<String>>,
    pods: Arc<Cache<Pod>>,
) -> anyhow::Result<()> {
    pods.wait_synced().await;
    for p in pods.list() {
        if ephemeral_volumes(&p).next().is_some() {
            queue.add(key_of(p.as_ref()));
        }
    }
    let ctx = Arc::new(Ctx {
        client,
        events,
        pods,
    });
    queue
        .run(WORKERS, "ephemeral-volume", move |key| {
            reconcile(ctx.clone(), key)
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_is_named_after_pod_and_volume_and_owned_by_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-1"},
            "spec": {"containers": [{"name": "c"}], "volumes": [{
                "name": "scratch",
                "ephemeral": {"volumeClaimTemplate": {
                    "metadata": {"labels": {"type": "scratch"}},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}}}
                }}
            }]}
        }))
        .expect("pod");
        let v = &pod
            .spec
            .as_ref()
            .expect("spec")
            .volumes
            .as_ref()
            .expect("vols")[0];
        let claim = claim_for(&pod, v).expect("a claim");
        let json = serde_json::to_value(&claim).expect("json");
        assert_eq!(json["metadata"]["name"], "web-scratch");
        assert_eq!(json["metadata"]["namespace"], "ns");
        assert_eq!(json["metadata"]["labels"]["type"], "scratch");
        assert_eq!(
            json["metadata"]["ownerReferences"],
            serde_json::json!([{"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u-1",
                                "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(json["spec"]["resources"]["requests"]["storage"], "1Gi");
    }
}
