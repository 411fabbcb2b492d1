//! Ownership by controller reference, as Kubernetes' ControllerRefManager: a controller
//! owns the objects whose controlling ownerReference carries its uid, and reconciles that
//! with its selector on every pass. It adopts orphans its selector matches, releases the
//! objects it owns but no longer matches (so relabelling a pod out of its ReplicaSet
//! gets it replaced), and leaves alone whatever another controller owns.
//!
//! One implementation for every namespaced owner and owned kind (ReplicaSet and
//! ReplicationController → Pods, Deployment → ReplicaSets): the patches are the same
//! strategic merge patches kube-controller-manager sends, each carrying the object's uid
//! so that it cannot land on a deleted-and-recreated namesake.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::OnceCell;

/// The controlling ownerReference of an object, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The uid of the object's controlling owner, if any.
pub fn controller_uid(meta: &ObjectMeta) -> Option<String> {
    controller_ref(meta).map(|r| r.uid.clone())
}

/// What a claim does with one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Ours and still selected.
    Owned,
    /// An orphan the selector matches: take it.
    Adopt,
    /// Ours but no longer selected: let it go.
    Release,
    /// Someone else's, not selected, or not to be touched while something is deleted.
    Ignore,
}

/// Kubernetes' claim rules. A controller being deleted keeps what it owns and selects
/// (that needs no write) but neither adopts nor releases; an object being deleted is
/// never adopted.
pub fn decide(owner_uid: &str, owner_deleting: bool, obj: &ObjectMeta, selected: bool) -> Claim {
    match controller_ref(obj) {
        Some(r) if r.uid != owner_uid => Claim::Ignore,
        Some(_) if selected => Claim::Owned,
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner_deleting || !selected || obj.deletion_timestamp.is_some() => Claim::Ignore,
        None => Claim::Adopt,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("can't adopt {kind} {namespace}/{name} ({uid}): {reason}")]
    CannotAdopt {
        kind: String,
        namespace: String,
        name: String,
        uid: String,
        reason: String,
    },
    #[error("[{}]", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Aggregate(Vec<ClaimError>),
}

/// Claims objects for one controller during one pass. The fresh read that guards
/// adoption happens at most once per manager, and only if an adoption is attempted.
pub struct RefManager<'a, C> {
    client: &'a Client,
    owner: &'a C,
    can_adopt: OnceCell<Result<(), String>>,
    /// A finalizer the owner keeps on what it owns (the Job's tracking finalizer): put
    /// on with adoption, taken off with release.
    finalizer: Option<&'static str>,
}

impl<'a, C> RefManager<'a, C>
where
    C: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    pub fn new(client: &'a Client, owner: &'a C) -> Self {
        RefManager {
            client,
            owner,
            can_adopt: OnceCell::new(),
            finalizer: None,
        }
    }

    /// Adopt with `finalizer` added, release with it removed.
    pub fn with_finalizer(mut self, finalizer: &'static str) -> Self {
        self.finalizer = Some(finalizer);
        self
    }

    fn owner_uid(&self) -> String {
        self.owner.uid().unwrap_or_default()
    }

    /// The candidates this controller now owns: those it owns and `selects`, plus the
    /// orphans it adopted (as the server returned them). Owned ones it no longer selects
    /// are released. Every candidate is tried; failures come back together, after which
    /// the caller should retry the pass rather than act on a partial claim.
    pub async fn claim<K>(
        &self,
        candidates: impl IntoIterator<Item = Arc<K>>,
        selects: impl Fn(&K) -> bool,
    ) -> Result<Vec<Arc<K>>, ClaimError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let uid = self.owner_uid();
        let deleting = self.owner.meta().deletion_timestamp.is_some();
        let mut claimed = Vec::new();
        let mut errors = Vec::new();
        for obj in candidates {
            let outcome = match decide(&uid, deleting, obj.meta(), selects(&obj)) {
                Claim::Owned => Ok(Some(obj)),
                Claim::Ignore => Ok(None),
                Claim::Adopt => self.adopt(&obj).await,
                Claim::Release => self.release(&*obj).await.map(|()| None),
            };
            match outcome {
                Ok(Some(o)) => claimed.push(o),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(claimed),
            1 => Err(errors.remove(0)),
            _ => Err(ClaimError::Aggregate(errors)),
        }
    }

    fn api<K: Resource<DynamicType = (), Scope = NamespaceResourceScope>>(
        &self,
        obj: &K,
    ) -> Api<K> {
        Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default())
    }

    /// Add our controlling ownerReference. The server refuses it if another controller
    /// got there first (only one controller reference is allowed).
    async fn adopt<K>(&self, obj: &Arc<K>) -> Result<Option<Arc<K>>, ClaimError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        if let Err(reason) = self.can_adopt().await {
            return Err(ClaimError::CannotAdopt {
                kind: K::kind(&()).into_owned(),
                namespace: obj.namespace().unwrap_or_default(),
                name: obj.name_any(),
                uid: obj.uid().unwrap_or_default(),
                reason,
            });
        }
        let owner = self.owner_reference();
        let mut patch = json!({
            "metadata": {
                "ownerReferences": [{
                    "apiVersion": owner.api_version,
                    "kind": owner.kind,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
                "uid": obj.uid(),
            }
        });
        if let Some(f) = self.finalizer {
            patch["metadata"]["finalizers"] = json!([f]);
        }
        match self
            .api(&**obj)
            .patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(adopted) => Ok(Some(Arc::new(adopted))),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove our ownerReference. Gone (404) and invalid (422: no such reference any
    /// more, or the uid belongs to a recreated namesake) both mean there is nothing left
    /// to release.
    async fn release<K>(&self, obj: &K) -> Result<(), ClaimError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        tracing::debug!(
            object = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
            owner = %self.owner.name_any(),
            "releasing: its labels no longer match the owner's selector"
        );
        let mut patch = json!({
            "metadata": {
                "ownerReferences": [{"$patch": "delete", "uid": self.owner_uid()}],
                "uid": obj.uid(),
            }
        });
        if let Some(f) = self.finalizer {
            patch["metadata"]["$deleteFromPrimitiveList/finalizers"] = json!([f]);
        }
        match self
            .api(obj)
            .patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(status_code(&e), Some(404 | 422)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The controlling reference this owner puts on what it adopts or creates.
    pub fn owner_reference(&self) -> OwnerReference {
        owner_reference(self.owner)
    }

    /// Adopt only if the owner, read fresh from the server, is still the object we hold
    /// and is not being deleted: a stale cache must not hand objects to a controller
    /// that is going away, or to a deleted one's namesake.
    async fn can_adopt(&self) -> Result<(), String> {
        self.can_adopt
            .get_or_init(|| async {
                let api: Api<C> = self.api(self.owner);
                let name = self.owner.name_any();
                let ns = self.owner.namespace().unwrap_or_default();
                let fresh = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| format!("can't recheck DeletionTimestamp: {e}"))?;
                let Some(fresh) = fresh else {
                    return Err(format!(
                        "can't recheck DeletionTimestamp: {} {name:?} not found",
                        C::kind(&())
                    ));
                };
                if fresh.uid() != self.owner.uid() {
                    return Err(format!(
                        "original {} {ns}/{name} is gone: got uid {}, wanted {}",
                        C::kind(&()),
                        fresh.uid().unwrap_or_default(),
                        self.owner_uid()
                    ));
                }
                if let Some(t) = fresh.meta().deletion_timestamp.as_ref() {
                    return Err(format!("{ns}/{name} has just been deleted at {}", t.0));
                }
                Ok(())
            })
            .await
            .clone()
    }
}

/// The controlling ownerReference `owner` puts on its dependents.
pub fn owner_reference<C: Resource<DynamicType = ()>>(owner: &C) -> OwnerReference {
    OwnerReference {
        api_version: C::api_version(&()).into_owned(),
        kind: C::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta(owner: Option<(&str, bool)>, deleting: bool) -> ObjectMeta {
        ObjectMeta {
            owner_references: owner.map(|(uid, controller)| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(controller),
                    ..Default::default()
                }]
            }),
            deletion_timestamp: deleting.then(|| Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }
    }

    #[test]
    fn owned_objects_are_kept_while_selected_and_released_after() {
        let ours = meta(Some(("me", true)), false);
        assert_eq!(decide("me", false, &ours, true), Claim::Owned);
        assert_eq!(decide("me", false, &ours, false), Claim::Release);
        // Being deleted: keep what needs no write, release nothing.
        assert_eq!(decide("me", true, &ours, true), Claim::Owned);
        assert_eq!(decide("me", true, &ours, false), Claim::Ignore);
    }

    #[test]
    fn orphans_are_adopted_only_when_selected_and_nobody_is_deleting() {
        let orphan = meta(None, false);
        assert_eq!(decide("me", false, &orphan, true), Claim::Adopt);
        assert_eq!(decide("me", false, &orphan, false), Claim::Ignore);
        assert_eq!(decide("me", true, &orphan, true), Claim::Ignore);
        let dying = meta(None, true);
        assert_eq!(decide("me", false, &dying, true), Claim::Ignore);
        // A non-controlling reference leaves the object an orphan.
        let referenced = meta(Some(("me", false)), false);
        assert_eq!(decide("me", false, &referenced, true), Claim::Adopt);
    }

    #[test]
    fn another_controllers_objects_are_left_alone() {
        let theirs = meta(Some(("them", true)), false);
        assert_eq!(decide("me", false, &theirs, true), Claim::Ignore);
        assert_eq!(decide("me", false, &theirs, false), Claim::Ignore);
    }
}
