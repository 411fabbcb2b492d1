//! ControllerRevisions of the controllers that keep a history of their pod template
//! (DaemonSet, StatefulSet), as kube's `controller/history` package and the two
//! controllers use it: one revision per template, named `<owner>-<hash>`, whose data is
//! the strategic merge patch that restores the template (what `kubectl rollout undo`
//! applies), numbered in the order the templates were last current, and pruned to
//! `revisionHistoryLimit`.

use std::fmt::Debug;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use spindle_meta::selector::Matcher;

use crate::controller_ref::{controller_ref, owner_reference, RefManager};
use crate::deployment::util::{equal_ignore_hash, pod_template_hash};
use crate::runtime::{informer, watch_config, Cache, Queue};

/// The label a DaemonSet's revisions and pods carry with the template's hash, and a
/// StatefulSet's pods with the name of their revision.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The ControllerRevision informer of owners of `kind`: a change to a revision queues
/// its owner (`<ns>/<name>`), and revisions are indexed by owner for [`index`] lookups.
pub fn revisions(
    client: &Client,
    queue: Arc<Queue<String>>,
    kind: &'static str,
) -> Arc<Cache<ControllerRevision>> {
    informer(
        Api::<ControllerRevision>::all(client.clone()),
        watch_config(),
        Some(Box::new(index)),
        move |ch| {
            for r in ch.states() {
                if let Some(o) = controller_ref(&r.metadata).filter(|o| o.kind == kind) {
                    queue.add(format!("{}/{}", r.namespace().unwrap_or_default(), o.name));
                }
            }
        },
    )
}

/// An owner of ControllerRevisions: a pod template under a selector.
pub trait Revisioned:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug
{
    /// The label its revisions carry with their hash (kube's DaemonSet and StatefulSet
    /// controllers use different ones).
    const REVISION_HASH_LABEL: &'static str;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn selector(&self) -> Option<&LabelSelector>;
    fn collision_count(&self) -> Option<i32>;
    fn history_limit(&self) -> Option<i32>;
}

impl Revisioned for DaemonSet {
    const REVISION_HASH_LABEL: &'static str = HASH_LABEL;
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
    fn collision_count(&self) -> Option<i32> {
        self.status.as_ref().and_then(|s| s.collision_count)
    }
    fn history_limit(&self) -> Option<i32> {
        self.spec.as_ref().and_then(|s| s.revision_history_limit)
    }
}

impl Revisioned for StatefulSet {
    const REVISION_HASH_LABEL: &'static str = "controller.kubernetes.io/hash";
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
    fn collision_count(&self) -> Option<i32> {
        self.status.as_ref().and_then(|s| s.collision_count)
    }
    fn history_limit(&self) -> Option<i32> {
        self.spec.as_ref().and_then(|s| s.revision_history_limit)
    }
}

/// The patch a revision stores: the whole template, replacing the owner's.
pub fn patch_of<O: Revisioned>(owner: &O) -> Value {
    let mut t = serde_json::to_value(owner.template()).unwrap_or(Value::Null);
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision restores.
pub fn template_of(r: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = r.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// Whether a revision holds the owner's current template.
fn matches<O: Revisioned>(owner: &O, r: &ControllerRevision) -> bool {
    match (template_of(r), owner.template()) {
        (Some(t), Some(cur)) => equal_ignore_hash(&t, cur),
        _ => false,
    }
}

/// The revisions the owner controls (adopting matching orphans): the one of its current
/// template (created, or renumbered to be the newest when a rollback made an older
/// template current again) and the others.
pub async fn construct<O: Revisioned>(
    client: &Client,
    revisions: &Cache<ControllerRevision>,
    owner: &O,
) -> anyhow::Result<(ControllerRevision, Vec<ControllerRevision>)> {
    let ns = owner.namespace().unwrap_or_default();
    let matcher = Matcher::for_controller(owner.selector());
    let candidates = revisions
        .by_index(&ns)
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()));
    let owned = RefManager::new(client, owner)
        .claim(candidates, |r: &ControllerRevision| {
            matcher.matches(r.labels())
        })
        .await?;
    let (mut cur, old): (Vec<_>, Vec<_>) = owned.into_iter().partition(|r| matches(owner, r));
    let next = old.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    cur.sort_by_key(|r| std::cmp::Reverse(r.revision));
    // Duplicates of the current template (from a lost race) go; the newest stays.
    for dup in cur.iter().skip(1) {
        delete(&api, dup).await?;
    }
    let cur = match cur.into_iter().next() {
        None => snapshot(client, &api, owner, next).await?,
        Some(r) if r.revision < next => {
            let mut r = (*r).clone();
            r.revision = next;
            api.replace(&r.name_any(), &PostParams::default(), &r)
                .await
                .context("renumbering the current revision")?
        }
        Some(r) => (*r).clone(),
    };
    Ok((cur, old.into_iter().map(|r| (*r).clone()).collect()))
}

async fn delete(api: &Api<ControllerRevision>, r: &ControllerRevision) -> anyhow::Result<()> {
    match api.delete(&r.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).context("deleting a revision"),
    }
}

/// Create the revision of the current template. A name taken by another template (a
/// hash collision) bumps `status.collisionCount`, so the next pass hashes differently.
async fn snapshot<O: Revisioned>(
    client: &Client,
    api: &Api<ControllerRevision>,
    owner: &O,
    revision: i64,
) -> anyhow::Result<ControllerRevision> {
    let template = owner
        .template()
        .with_context(|| format!("{} has no spec", O::kind(&())))?;
    let collisions = owner.collision_count();
    let hash = pod_template_hash(template, collisions);
    let name = format!("{}-{hash}", owner.name_any());
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(O::REVISION_HASH_LABEL.into(), hash);
    let r = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: owner.meta().annotations.clone(),
            owner_references: Some(vec![owner_reference(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(patch_of(owner))),
        revision,
    };
    match api.create(&PostParams::default(), &r).await {
        Ok(r) => Ok(r),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api.get(&name).await?;
            if matches(owner, &existing) {
                return Ok(existing);
            }
            let owners: Api<O> =
                Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
            let bumped = collisions.unwrap_or(0) + 1;
            let patch = json!({"status": {"collisionCount": bumped}});
            owners
                .patch_status(
                    &owner.name_any(),
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
            anyhow::bail!("revision {name} holds another template; collisionCount is now {bumped}")
        }
        Err(e) => Err(e).context("creating a revision"),
    }
}

/// Delete the oldest of `old` beyond `revisionHistoryLimit`, sparing the `live` ones
/// (those whose pods still run, or that the owner's status names).
pub async fn cleanup<O: Revisioned>(
    client: &Client,
    owner: &O,
    mut old: Vec<ControllerRevision>,
    live: impl Fn(&ControllerRevision) -> bool,
) -> anyhow::Result<()> {
    let keep = owner.history_limit().unwrap_or(10).max(0) as usize;
    let mut excess = old.len().saturating_sub(keep);
    if excess == 0 {
        return Ok(());
    }
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    old.sort_by_key(|r| r.revision);
    for r in &old {
        if excess == 0 {
            break;
        }
        if live(r) {
            continue;
        }
        delete(&api, r).await?;
        excess -= 1;
    }
    Ok(())
}

/// The hash a revision carries in `label`.
pub fn hash_of(r: &ControllerRevision, label: &str) -> String {
    r.labels()
        .get(label)
        .cloned()
        .unwrap_or_else(|| r.name_any())
}

/// Index of the revision cache: by namespace.
pub fn index(r: &ControllerRevision) -> Vec<String> {
    vec![r.namespace().unwrap_or_default()]
}

/// A controller's cache of revisions, indexed by [`index`].
pub type Revisions = Arc<Cache<ControllerRevision>>;
