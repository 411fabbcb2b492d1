//! Volume binding, as kube-scheduler's VolumeBinding plugin does it: a pod whose claim
//! is missing, being deleted, or unbound with Immediate binding stays Pending with
//! Kubernetes' message; a pod whose claims are bound goes only where their volumes'
//! node affinity allows; for an unbound WaitForFirstConsumer claim the chosen node is
//! written on the claim (`volume.kubernetes.io/selected-node`) and the pod is bound
//! once the PV binder (and the local-path provisioner) has bound the claim there.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use spindle_meta::storage::SELECTED_NODE;
use tokio::sync::{mpsc, watch};

use crate::model::{SchedPod, Term};

/// How long a pod's binding waits for its delayed claims to be bound on the chosen node
/// before it is tried again (kube-scheduler's --bind-timeout is 600 s; the local-path
/// provisioner needs far less).
const BIND_WAIT: Duration = Duration::from_secs(60);

/// The claims, volumes and classes, as reflector stores the scheduling loop reads.
#[derive(Clone)]
pub struct Volumes {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    /// Ticks after every change of a claim: a binding waiting for its claims looks
    /// again at once, not on a poll.
    claims_changed: watch::Receiver<()>,
}

/// What the volumes say about a pod.
#[derive(Debug, PartialEq)]
pub enum Check {
    /// The pod may be placed: the node affinity its bound volumes require, and the
    /// delayed claims to bind on the node it gets.
    Fits {
        required: Vec<Vec<Term>>,
        delayed: Vec<String>,
    },
    /// It may not, for this reason (kube-scheduler's PreFilter message).
    Unschedulable(String),
}

fn reflect<K>(client: &Client, changed: impl Fn() + Send + 'static) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if ev.is_ok() {
                changed();
            }
        }
    });
    reader
}

impl Volumes {
    /// Start watching; `changed` is called after every change, so pods waiting for a
    /// claim or volume are looked at again.
    pub fn start<M: Send + 'static>(
        client: &Client,
        tx: mpsc::UnboundedSender<M>,
        msg: fn() -> M,
    ) -> Volumes {
        let notify = move |tx: mpsc::UnboundedSender<M>| {
            move || {
                let _ = tx.send(msg());
            }
        };
        let (changed_tx, claims_changed) = watch::channel(());
        let claim_changed = notify(tx.clone());
        Volumes {
            claims: reflect(client, move || {
                changed_tx.send_replace(());
                claim_changed();
            }),
            volumes: reflect(client, notify(tx.clone())),
            classes: reflect(client, notify(tx)),
            claims_changed,
        }
    }

    /// VolumeBinding's PreFilter for `pod`.
    pub fn check(&self, pod: &SchedPod) -> Check {
        let mut required = Vec::new();
        let mut delayed = Vec::new();
        for name in &pod.claims {
            let Some(claim) = self
                .claims
                .get(&ObjectRef::new(name).within(&pod.namespace))
            else {
                return Check::Unschedulable(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Check::Unschedulable(format!(
                    "persistentvolumeclaim \"{name}\" is being deleted"
                ));
            }
            let bound = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .filter(|v| !v.is_empty());
            if let Some(volume) = bound {
                let Some(pv) = self.volumes.get(&ObjectRef::new(volume)) else {
                    return Check::Unschedulable("pvc(s) bound to non-existent pv(s)".into());
                };
                let terms = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_affinity.as_ref())
                    .and_then(|a| a.required.as_ref())
                    .map(|r| r.node_selector_terms.iter().map(Term::from_api).collect());
                if let Some(terms) = terms {
                    required.push(terms);
                }
                continue;
            }
            let class = spindle_meta::storage::claim_class(&claim);
            let wait = self
                .classes
                .get(&ObjectRef::new(class))
                .and_then(|c| c.volume_binding_mode.clone())
                .as_deref()
                == Some("WaitForFirstConsumer");
            if !wait {
                return Check::Unschedulable(
                    "pod has unbound immediate PersistentVolumeClaims".into(),
                );
            }
            delayed.push(name.clone());
        }
        Check::Fits { required, delayed }
    }

    /// PreBind: write the node on each delayed claim, then wait until the binder has
    /// bound them all. False when they are not bound in time (the pod is tried again).
    pub async fn bind_delayed(
        &self,
        client: &Client,
        pod: &SchedPod,
        claims: &[String],
        node: &str,
    ) -> bool {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &pod.namespace);
        for name in claims {
            let patch = serde_json::json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
            if let Err(e) = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(pod = %pod.name, claim = %name, error = %e, "selecting the claim's node failed");
                return false;
            }
        }
        let deadline = tokio::time::Instant::now() + BIND_WAIT;
        let mut changed = self.claims_changed.clone();
        loop {
            // Seen before the look, so a change during it wakes the wait below.
            changed.borrow_and_update();
            let all_bound = claims.iter().all(|name| {
                self.claims
                    .get(&ObjectRef::new(name).within(&pod.namespace))
                    .and_then(|c| c.spec.as_ref().and_then(|s| s.volume_name.clone()))
                    .is_some_and(|v| !v.is_empty())
            });
            if all_bound {
                return true;
            }
            tokio::select! {
                res = changed.changed() => if res.is_err() {
                    return false;
                },
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }
}

/// The pod as one decision sees it: with its bound volumes' node affinity.
pub fn with_volume_affinity(pod: &Arc<SchedPod>, required: Vec<Vec<Term>>) -> Arc<SchedPod> {
    if required.is_empty() {
        return pod.clone();
    }
    let mut p = (**pod).clone();
    p.volume_required = required;
    Arc::new(p)
}
