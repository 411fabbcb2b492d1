//! A StatefulSet pod's PersistentVolumeClaims: one per volumeClaimTemplate, named
//! `<template>-<set>-<ordinal>`, created before the pod and kept across its restarts,
//! and their owner references as `persistentVolumeClaimRetentionPolicy` asks (kube's
//! `stateful_pod_control.go` and `stateful_set_utils.go`): whenDeleted Delete makes the
//! set own the claims of the pods in range, whenScaled Delete makes a scaled-down pod
//! own its claims, so the garbage collector removes them with their owner. Retain on
//! both leaves them without either reference.
//!
//! Claims are read from the API server rather than a cache: a set without templates
//! costs nothing, and the controller remembers which pods' claims it already brought
//! in line with the policy, so a pass reads only the claims of pods that changed.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use spindle_meta::events::EventType;

use super::control::Params;
use super::identity::{claim_name, ordinal_of};
use super::{publish, Ctx};
use crate::controller_ref::owner_reference;

/// The claims of the pod of `ordinal`, by template name: the template with its name,
/// the set's namespace, and the selector's labels added to the template's.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let template = t.name_any();
            let mut claim = t.clone();
            claim.metadata.name = Some(claim_name(&template, set, ordinal));
            claim.metadata.namespace = set.namespace();
            let labels = claim.metadata.labels.get_or_insert_with(Default::default);
            labels.extend(selector_labels.clone());
            claim.metadata.owner_references = None;
            claim.metadata.resource_version = None;
            claim.metadata.uid = None;
            claim.status = None;
            (template, claim)
        })
        .collect()
}

/// Point the pod's volumes named like the templates at its claims (replacing a volume
/// of the template's name the pod template may have), as kube's updateStorage.
pub fn add_volumes(set: &StatefulSet, pod: &mut Pod, ordinal: i32) {
    let claims = claims_for(set, ordinal);
    if claims.is_empty() {
        return;
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template, claim)| Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.name_any(),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    let taken: Vec<&String> = claims.iter().map(|(t, _)| t).collect();
    volumes.extend(
        spec.volumes
            .take()
            .into_iter()
            .flatten()
            .filter(|v| !taken.contains(&&v.name)),
    );
    spec.volumes = Some(volumes);
}

/// Create the pod's missing claims. A claim being deleted, or one still owned by an
/// earlier pod of the same name (scaled down, not yet collected), holds the pod back.
pub(super) async fn ensure(
    ctx: &Ctx,
    set: &StatefulSet,
    pod: &str,
    ordinal: i32,
) -> anyhow::Result<()> {
    let claims = claims_for(set, ordinal);
    if claims.is_empty() {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    let oref = spindle_meta::events::object_ref(set);
    let mut errors = Vec::new();
    for (_, claim) in claims {
        let name = claim.name_any();
        match api.get_opt(&name).await {
            Ok(None) => {
                let r = api.create(&PostParams::default(), &claim).await;
                match r {
                    Ok(_) => publish(
                        ctx,
                        &oref,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!(
                            "create Claim {name} Pod {pod} in StatefulSet {} success",
                            set.name_any()
                        ),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        publish(
                            ctx,
                            &oref,
                            EventType::Warning,
                            "FailedCreate",
                            format!(
                                "create Claim {name} Pod {pod} in StatefulSet {} failed error: {e}",
                                set.name_any()
                            ),
                        );
                        errors.push(format!("failed to create PVC {name}: {e}"));
                    }
                }
            }
            Ok(Some(c)) if c.metadata.deletion_timestamp.is_some() => {
                errors.push(format!("pvc {name} is being deleted"));
            }
            Ok(Some(c)) if stale_pod_ref(&c, pod) => {
                errors.push(format!(
                    "pvc {name} is still owned by an earlier pod {pod}; waiting for it to be collected"
                ));
            }
            Ok(Some(_)) => {}
            Err(e) => errors.push(format!("failed to retrieve PVC {name}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}

/// A claim owned by a pod of this name that is gone (the new one does not exist yet).
fn stale_pod_ref(claim: &PersistentVolumeClaim, pod: &str) -> bool {
    claim
        .owner_references()
        .iter()
        .any(|r| r.kind == "Pod" && r.api_version == "v1" && r.name == pod)
}

/// Who should own a claim under the set's policy: (the set, the pod).
pub fn wanted_owners(set: &StatefulSet, scaled_down: bool) -> (bool, bool) {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    let when_deleted = delete(policy.and_then(|p| p.when_deleted.as_ref()));
    let when_scaled = delete(policy.and_then(|p| p.when_scaled.as_ref()));
    match (when_scaled, when_deleted) {
        (false, false) => (false, false),
        (false, true) => (true, false),
        (true, false) => (false, scaled_down),
        (true, true) => (!scaled_down, scaled_down),
    }
}

/// The owner references a claim should have: ours scrubbed, then the wanted ones added
/// as controller references, unless another controller owns the claim.
pub fn owner_refs(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &Pod,
    scaled_down: bool,
) -> Vec<OwnerReference> {
    let ours = |r: &OwnerReference| {
        (r.kind == "StatefulSet" && r.name == set.name_any())
            || (r.kind == "Pod" && r.name == pod.name_any())
    };
    let current = claim.owner_references();
    let mut refs: Vec<OwnerReference> = current.iter().filter(|r| !ours(r)).cloned().collect();
    let foreign_controller = refs.iter().any(|r| r.controller == Some(true));
    if foreign_controller {
        return refs;
    }
    let (want_set, want_pod) = wanted_owners(set, scaled_down);
    if want_set {
        refs.push(owner_reference(set));
    }
    if want_pod {
        refs.push(owner_reference(pod));
    }
    refs
}

/// Bring the claims of every pod of the set in line with the retention policy, for the
/// pods whose state (policy, in range or not) changed since the last time.
pub(super) async fn sync_retention(
    ctx: &Ctx,
    set: &StatefulSet,
    pods: &[Arc<Pod>],
    params: &Params<'_>,
) -> anyhow::Result<()> {
    if claims_for(set, 0).is_empty() {
        return Ok(());
    }
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let Some(ord) = ordinal_of(pod) else { continue };
        let in_range = ord >= params.start && ord - params.start < params.replicas;
        sync_pod_retention(ctx, set, pod, !in_range).await?;
    }
    Ok(())
}

/// Bring one pod's claims in line with the policy (a no-op when nothing changed since it
/// was last done).
pub(super) async fn sync_pod_retention(
    ctx: &Ctx,
    set: &StatefulSet,
    pod: &Pod,
    scaled_down: bool,
) -> anyhow::Result<()> {
    let Some(ord) = ordinal_of(pod) else {
        return Ok(());
    };
    let claims = claims_for(set, ord);
    if claims.is_empty() {
        return Ok(());
    }
    let state = format!(
        "{:?}/{}",
        wanted_owners(set, scaled_down),
        set.uid().unwrap_or_default()
    );
    let uid = pod.uid().unwrap_or_default();
    let key = format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any());
    if ctx.retention().get(&key).and_then(|m| m.get(&uid)) == Some(&state) {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    for (_, want) in claims {
        let name = want.name_any();
        // A claim not made yet gets its references on a later pass.
        let Some(claim) = api.get_opt(&name).await? else {
            return Ok(());
        };
        let refs = owner_refs(&claim, set, pod, scaled_down);
        if refs.as_slice() == claim.owner_references() {
            continue;
        }
        let patch = json!({"metadata": {
            "resourceVersion": claim.resource_version(),
            "ownerReferences": refs,
        }});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("updating the owner references of claim {name}"))?;
    }
    ctx.retention().entry(key).or_default().insert(uid, state);
    Ok(())
}

/// What [`sync_pod_retention`] last did, by set key and pod uid.
pub(super) type Synced = HashMap<String, HashMap<String, String>>;
