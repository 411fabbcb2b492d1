//! `provisionClaim` for a claim no volume matches: every provisioner is external to
//! the binder, as CSI drivers are to kube-controller-manager (the local-path one,
//! `spindle.dev/local-path`, runs in each node's agent). The binder marks the claim for
//! its provisioner (`volume.kubernetes.io/storage-provisioner`) and says it is waiting;
//! the provisioner creates a volume pre-bound to the claim, which the binder then binds.
//! A class that does not exist, or an in-tree plugin (none is built in), is an error
//! event on the claim.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::json;
use spindle_meta::events::EventType;
use spindle_meta::storage::{BETA_STORAGE_PROVISIONER, PROVISIONED_BY, STORAGE_PROVISIONER};

use super::{claim_event, has_annotation, patch_claim, Ctx};

/// Whether an (external) provisioner made this volume: it, not the binder, deletes
/// such a volume once Released under reclaim policy Delete.
pub fn is_provisioned(pv: &PersistentVolume) -> bool {
    has_annotation(&pv.metadata, PROVISIONED_BY)
}

pub(super) async fn provision(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    class_name: &str,
    class: Option<&StorageClass>,
) -> Result<(), kube::Error> {
    let Some(class) = class else {
        let msg = format!("storageclass.storage.k8s.io \"{class_name}\" not found");
        claim_event(ctx, claim, EventType::Warning, "ProvisioningFailed", &msg).await;
        return Ok(());
    };
    let provisioner = class.provisioner.as_str();
    if provisioner.starts_with("kubernetes.io/") {
        // In-tree plugins (kubernetes.io/no-provisioner among them): none is built in.
        let msg = format!("no volume plugin matched name: {provisioner}");
        claim_event(ctx, claim, EventType::Warning, "ProvisioningFailed", &msg).await;
        return Ok(());
    }
    let annotated = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STORAGE_PROVISIONER))
        .is_some_and(|p| p == provisioner);
    if !annotated {
        let ann = json!({"metadata": {"annotations": {
            STORAGE_PROVISIONER: provisioner, BETA_STORAGE_PROVISIONER: provisioner}}});
        patch_claim(ctx, claim, ann, false).await?;
    }
    let msg = format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.");
    claim_event(ctx, claim, EventType::Normal, "ExternalProvisioning", &msg).await;
    Ok(())
}
